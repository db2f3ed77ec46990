//! Tapline's wire format: the event schema and the framing of event batches between
//! agents and collectors.
//!
//! Agents and collectors are upgraded at different times, so every batch names its
//! format version and a reader keeps a decoder for every version it ever accepted
//! ([`v1`] today). A batch carries events of one agent with a per-agent sequence number
//! (so the collector sees loss and duplicates), interns every repeated string, address,
//! flow and actor once per batch, and is deflate-compressed.
//!
//! ```text
//! frame   = length:u32le  header  body
//! header  = "TPLW"  version:u16le  flags:u16le
//! body    = (deflate when flags & 1) postcard(BatchV<version>)
//! ```
//!
//! Encoding and decoding do no I/O: bytes in, batches out, `Ok(None)` when a frame is
//! not complete yet.

pub mod bundle;
pub mod event;
pub mod fingerprint;
pub mod proto;
pub mod v1;

pub use event::{Actor, ActorKind, Endpoint, Entity, EntitySource, Event, Owner};

use std::io::Read;

/// Start of every batch header.
pub const MAGIC: [u8; 4] = *b"TPLW";
/// The version this build writes.
pub const CURRENT_VERSION: u16 = 1;
/// Versions this build reads.
pub const READABLE_VERSIONS: &[u16] = &[1];
/// The body is deflate-compressed.
pub const FLAG_DEFLATE: u16 = 1;
/// Largest frame (compressed) and body (decompressed) a reader accepts.
pub const MAX_FRAME: usize = 16 << 20;
pub const MAX_BODY: usize = 64 << 20;
/// Most events in one batch.
pub const MAX_EVENTS: usize = 1 << 20;

const HEADER: usize = 8;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WireError {
    #[error("not a Tapline batch (bad magic)")]
    BadMagic,
    #[error("batch format version {0} is not supported (this build reads {READABLE_VERSIONS:?})")]
    UnsupportedVersion(u16),
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("frame shorter than its header")]
    Truncated,
    #[error("body does not decompress")]
    Decompress,
    #[error("body does not decode: {0}")]
    Decode(String),
    #[error("body refers to a missing table entry")]
    BadIndex,
    #[error("batch holds more than {MAX_EVENTS} events")]
    TooManyEvents,
    #[error("unknown message type {0:?}")]
    UnknownMessage([u8; 4]),
}

/// A batch of one agent's events. Decoded events carry the batch's agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// The agent (node) that produced the events.
    pub agent: String,
    /// Per-agent sequence number, incremented for every batch.
    pub seq: u64,
    pub events: Vec<Event>,
}

/// Encodes a batch as one frame (length prefix included) in the current version.
pub fn encode(batch: &Batch) -> Vec<u8> {
    encode_with(batch, true)
}

/// Encodes a batch, compressed or not (uncompressed frames are for measurement and tests).
pub fn encode_with(batch: &Batch, compress: bool) -> Vec<u8> {
    let body = v1::encode_body(batch);
    let (flags, body) = if compress {
        let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(6));
        std::io::Write::write_all(&mut e, &body).expect("writing to a Vec cannot fail");
        (
            FLAG_DEFLATE,
            e.finish().expect("writing to a Vec cannot fail"),
        )
    } else {
        (0, body)
    };
    frame_bytes(MAGIC, CURRENT_VERSION, flags, &body)
}

/// Decodes the first frame of `buf`: `Ok(None)` while it is incomplete, else the batch and
/// the number of bytes it took.
pub fn decode(buf: &[u8]) -> Result<Option<(Batch, usize)>, WireError> {
    let Some((frame, used)) = split_frame(buf)? else {
        return Ok(None);
    };
    if frame.magic != MAGIC {
        return Err(WireError::BadMagic);
    }
    Ok(Some((decode_batch_body(&frame)?, used)))
}

/// One length-prefixed frame, header split off, body still as sent.
#[derive(Debug, Clone, Copy)]
pub struct RawFrame<'a> {
    pub magic: [u8; 4],
    pub version: u16,
    pub flags: u16,
    pub body: &'a [u8],
}

/// Splits the first frame off `buf` without looking into its body: `Ok(None)` while
/// incomplete. Refuses lengths past [`MAX_FRAME`] before any of the frame has arrived.
pub fn split_frame(buf: &[u8]) -> Result<Option<(RawFrame<'_>, usize)>, WireError> {
    let Some(len) = frame_len(buf)? else {
        return Ok(None);
    };
    let Some(frame) = buf.get(4..4 + len) else {
        return Ok(None);
    };
    Ok(Some((
        RawFrame {
            magic: [frame[0], frame[1], frame[2], frame[3]],
            version: u16::from_le_bytes([frame[4], frame[5]]),
            flags: u16::from_le_bytes([frame[6], frame[7]]),
            body: &frame[HEADER..],
        },
        4 + len,
    )))
}

/// The length the first frame of `buf` declares (after its 4-byte prefix), checked
/// against the bounds; `Ok(None)` while the prefix is incomplete.
pub fn frame_len(buf: &[u8]) -> Result<Option<usize>, WireError> {
    let Some(len) = buf.get(..4) else {
        return Ok(None);
    };
    let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
    if len > MAX_FRAME {
        return Err(WireError::TooLarge(len));
    }
    if len < HEADER {
        return Err(WireError::Truncated);
    }
    Ok(Some(len))
}

/// Decodes the body of a batch frame (magic already checked).
pub fn decode_batch_body(frame: &RawFrame<'_>) -> Result<Batch, WireError> {
    match frame.version {
        1 => v1::decode_body(&batch_body(frame)?),
        v => Err(WireError::UnsupportedVersion(v)),
    }
}

/// A batch frame's body, inflated when it is compressed.
fn batch_body<'a>(frame: &RawFrame<'a>) -> Result<std::borrow::Cow<'a, [u8]>, WireError> {
    if frame.flags & FLAG_DEFLATE != 0 {
        Ok(std::borrow::Cow::Owned(inflate(frame.body)?))
    } else {
        Ok(std::borrow::Cow::Borrowed(frame.body))
    }
}

/// When a key was first and last seen in a batch, and in how many events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    pub first: i64,
    pub last: i64,
    pub events: u64,
}

impl Seen {
    pub fn at(ts: i64) -> Seen {
        Seen {
            first: ts,
            last: ts,
            events: 1,
        }
    }

    pub fn add(&mut self, ts: i64) {
        self.first = self.first.min(ts);
        self.last = self.last.max(ts);
        self.events += 1;
    }

    pub fn merge(&mut self, o: &Seen) {
        self.first = self.first.min(o.first);
        self.last = self.last.max(o.last);
        self.events += o.events;
    }
}

/// What a store indexes of a batch, read without building its events (several times
/// cheaper than [`decode`]); a batch that summarizes also decodes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub agent: String,
    pub seq: u64,
    pub events: usize,
    pub ts_min: i64,
    pub ts_max: i64,
    /// The distinct actors of the batch.
    pub actors: Vec<(Actor, Seen)>,
    /// (method, endpoint template).
    pub endpoints: Vec<(String, String, Seen)>,
    /// (kind, id).
    pub entities: Vec<(String, String, Seen)>,
}

/// Summarizes the first frame of `buf` (a batch frame), like [`decode`].
pub fn summarize(buf: &[u8]) -> Result<Option<(Summary, usize)>, WireError> {
    let Some((frame, used)) = split_frame(buf)? else {
        return Ok(None);
    };
    if frame.magic != MAGIC {
        return Err(WireError::BadMagic);
    }
    match frame.version {
        1 => Ok(Some((v1::summarize_body(&batch_body(&frame)?)?, used))),
        v => Err(WireError::UnsupportedVersion(v)),
    }
}

fn inflate(raw: &[u8]) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    flate2::read::DeflateDecoder::new(raw)
        .take(MAX_BODY as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|_| WireError::Decompress)?;
    if out.len() > MAX_BODY {
        return Err(WireError::TooLarge(out.len()));
    }
    Ok(out)
}

pub(crate) fn frame_bytes(magic: [u8; 4], version: u16, flags: u16, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + HEADER + body.len());
    out.extend_from_slice(&((HEADER + body.len()) as u32).to_le_bytes());
    out.extend_from_slice(&magic);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
    out.extend_from_slice(body);
    out
}
