//! The session between an agent and a collector over one mutual-TLS connection.
//!
//! ```text
//! agent → collector   Status ("TPLH") first, then batches ("TPLW") and a Status now and then
//! collector → agent   Ack ("TPLA") for each batch once it is durably stored, in order;
//!                     Reject ("TPLX") with the reason, just before the collector closes
//! ```
//!
//! Every message is a frame with the batch frame's header, so one length check guards
//! all of them, and each message type has its own version number.

use serde::{Deserialize, Serialize};

use crate::{Batch, RawFrame, WireError, decode_batch_body, frame_bytes, split_frame};

pub const STATUS_MAGIC: [u8; 4] = *b"TPLH";
pub const ACK_MAGIC: [u8; 4] = *b"TPLA";
pub const REJECT_MAGIC: [u8; 4] = *b"TPLX";
/// Longest reason a Reject carries.
pub const MAX_REASON: usize = 1024;
const STATUS_V1: u16 = 1;
/// V1 and the capture coverage ([`Coverage`]); collectors decode both.
const STATUS_V2: u16 = 2;
const ACK_V1: u16 = 1;
const REJECT_V1: u16 = 1;
/// Largest control message a reader accepts (a batch can be up to [`crate::MAX_FRAME`]).
pub const MAX_CONTROL: usize = 64 << 10;

/// Who the agent is and how its delivery stands: the first message of a session, then
/// repeated so the collector can show lag and drops.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentStatus {
    /// The node name its events carry.
    pub agent: String,
    /// The agent's software version.
    pub software: String,
    /// The sequence number its next batch will get.
    pub next_seq: u64,
    /// Batches waiting for an ack (spooled or in flight) and their bytes.
    pub pending_batches: u64,
    pub pending_bytes: u64,
    /// Batches and events dropped since the spool was created because it was full.
    pub dropped_batches: u64,
    pub dropped_events: u64,
    /// How much of the traffic the agent saw and understood (status version 2); `None`
    /// from agents before it, and from `read`, which has no live capture to report on.
    pub coverage: Option<Coverage>,
}

/// Status version 1 as it is on the wire: what agents before coverage send.
#[derive(Serialize, Deserialize)]
struct StatusV1 {
    agent: String,
    software: String,
    next_seq: u64,
    pending_batches: u64,
    pending_bytes: u64,
    dropped_batches: u64,
    dropped_events: u64,
}

/// Most drop causes a status carries (more are summed into the last).
pub const MAX_DROP_CAUSES: usize = 16;

/// Capture coverage since the agent started: what it saw, lost and could not read, so an
/// operator can tell a quiet network from a blind sensor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coverage {
    /// Where frames come from: `pcap` (libpcap), `ebpf`, `file`.
    pub source: String,
    /// Frames and bytes captured.
    pub packets: u64,
    pub bytes: u64,
    /// Frames lost, per cause (`queue_full`, `kernel`, `interface`, ...), sorted by cause.
    pub drops: Vec<(String, u64)>,
    /// Holes in TCP streams and the bytes lost in them.
    pub stream_gaps: u64,
    pub stream_gap_bytes: u64,
    /// TCP connections tracked.
    pub flows: u64,
    pub http_transactions: u64,
    pub http_parse_errors: u64,
}

impl Coverage {
    /// Frames lost for any cause.
    pub fn dropped(&self) -> u64 {
        self.drops.iter().map(|(_, n)| n).sum()
    }
}

/// What an agent sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientMessage {
    Batch(Batch),
    Status(AgentStatus),
}

/// What a collector sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerMessage {
    /// The batch `seq` is stored (or was already: `duplicate`).
    Ack { seq: u64, duplicate: bool },
    /// The collector ends the session, for this reason.
    Reject { reason: String },
}

/// A status without coverage goes as version 1, which every collector reads; with
/// coverage, as version 2 (collectors from the same release on).
pub fn encode_status(status: &AgentStatus) -> Vec<u8> {
    match &status.coverage {
        None => {
            let v1 = StatusV1 {
                agent: status.agent.clone(),
                software: status.software.clone(),
                next_seq: status.next_seq,
                pending_batches: status.pending_batches,
                pending_bytes: status.pending_bytes,
                dropped_batches: status.dropped_batches,
                dropped_events: status.dropped_events,
            };
            let body = postcard::to_stdvec(&v1).expect("serializing to a Vec cannot fail");
            frame_bytes(STATUS_MAGIC, STATUS_V1, 0, &body)
        }
        Some(_) => {
            let body = postcard::to_stdvec(status).expect("serializing to a Vec cannot fail");
            frame_bytes(STATUS_MAGIC, STATUS_V2, 0, &body)
        }
    }
}

fn decode_status(version: u16, body: &[u8]) -> Result<AgentStatus, WireError> {
    let bad = |e: postcard::Error| WireError::Decode(e.to_string());
    match version {
        STATUS_V1 => {
            let v: StatusV1 = postcard::from_bytes(body).map_err(bad)?;
            Ok(AgentStatus {
                agent: v.agent,
                software: v.software,
                next_seq: v.next_seq,
                pending_batches: v.pending_batches,
                pending_bytes: v.pending_bytes,
                dropped_batches: v.dropped_batches,
                dropped_events: v.dropped_events,
                coverage: None,
            })
        }
        STATUS_V2 => {
            let mut s: AgentStatus = postcard::from_bytes(body).map_err(bad)?;
            if let Some(c) = &mut s.coverage
                && c.drops.len() > MAX_DROP_CAUSES
            {
                let rest: u64 = c.drops[MAX_DROP_CAUSES - 1..].iter().map(|(_, n)| n).sum();
                c.drops.truncate(MAX_DROP_CAUSES - 1);
                c.drops.push(("other".into(), rest));
            }
            Ok(s)
        }
        v => Err(WireError::UnsupportedVersion(v)),
    }
}

pub fn encode_server(msg: &ServerMessage) -> Vec<u8> {
    match msg {
        ServerMessage::Ack { seq, duplicate } => {
            let body = postcard::to_stdvec(&(seq, duplicate)).expect("Vec");
            frame_bytes(ACK_MAGIC, ACK_V1, 0, &body)
        }
        ServerMessage::Reject { reason } => {
            let mut r = reason.as_str();
            if r.len() > MAX_REASON {
                let mut end = MAX_REASON;
                while !r.is_char_boundary(end) {
                    end -= 1;
                }
                r = &r[..end];
            }
            let body = postcard::to_stdvec(r).expect("Vec");
            frame_bytes(REJECT_MAGIC, REJECT_V1, 0, &body)
        }
    }
}

/// Decodes the first message an agent sent: `Ok(None)` while incomplete.
pub fn decode_client(buf: &[u8]) -> Result<Option<(ClientMessage, usize)>, WireError> {
    let Some((frame, used)) = split_frame(buf)? else {
        return Ok(None);
    };
    Ok(Some((decode_client_frame(&frame)?, used)))
}

/// Decodes one split agent frame.
pub fn decode_client_frame(frame: &RawFrame<'_>) -> Result<ClientMessage, WireError> {
    match frame.magic {
        crate::MAGIC => Ok(ClientMessage::Batch(decode_batch_body(frame)?)),
        STATUS_MAGIC => {
            control_len(frame)?;
            decode_status(frame.version, frame.body).map(ClientMessage::Status)
        }
        m if m[..3] == *b"TPL" => Err(WireError::UnknownMessage(m)),
        _ => Err(WireError::BadMagic),
    }
}

/// Decodes the first message a collector sent: `Ok(None)` while incomplete.
pub fn decode_server(buf: &[u8]) -> Result<Option<(ServerMessage, usize)>, WireError> {
    let Some((frame, used)) = split_frame(buf)? else {
        return Ok(None);
    };
    control_len(&frame)?;
    let bad = |e: postcard::Error| WireError::Decode(e.to_string());
    let msg = match (frame.magic, frame.version) {
        (ACK_MAGIC, ACK_V1) => {
            let (seq, duplicate): (u64, bool) = postcard::from_bytes(frame.body).map_err(bad)?;
            ServerMessage::Ack { seq, duplicate }
        }
        (REJECT_MAGIC, REJECT_V1) => ServerMessage::Reject {
            reason: postcard::from_bytes::<String>(frame.body).map_err(bad)?,
        },
        (ACK_MAGIC | REJECT_MAGIC, v) => return Err(WireError::UnsupportedVersion(v)),
        (m, _) if m[..3] == *b"TPL" => return Err(WireError::UnknownMessage(m)),
        _ => return Err(WireError::BadMagic),
    };
    Ok(Some((msg, used)))
}

fn control_len(frame: &RawFrame<'_>) -> Result<(), WireError> {
    if frame.body.len() > MAX_CONTROL {
        return Err(WireError::TooLarge(frame.body.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let st = AgentStatus {
            agent: "node-1".into(),
            software: "0.1.0".into(),
            next_seq: 7,
            pending_batches: 2,
            pending_bytes: 300,
            dropped_batches: 1,
            dropped_events: 1000,
            coverage: None,
        };
        let f = encode_status(&st);
        assert_eq!(
            decode_client(&f).unwrap(),
            Some((ClientMessage::Status(st), f.len()))
        );
        assert_eq!(decode_client(&f[..f.len() - 1]).unwrap(), None);
        for m in [
            ServerMessage::Ack {
                seq: u64::MAX,
                duplicate: true,
            },
            ServerMessage::Reject {
                reason: "revoked".into(),
            },
        ] {
            let f = encode_server(&m);
            assert_eq!(decode_server(&f).unwrap(), Some((m, f.len())));
        }
        let long = encode_server(&ServerMessage::Reject {
            reason: "é".repeat(MAX_REASON),
        });
        match decode_server(&long).unwrap().unwrap().0 {
            ServerMessage::Reject { reason } => assert!(reason.len() <= MAX_REASON),
            m => panic!("{m:?}"),
        }
    }

    #[test]
    fn status_without_coverage_is_v1_with_it_v2_and_both_decode() {
        let old = AgentStatus {
            agent: "node-1".into(),
            software: "0.1.0".into(),
            next_seq: 7,
            pending_batches: 2,
            pending_bytes: 300,
            dropped_batches: 1,
            dropped_events: 1000,
            coverage: None,
        };
        let f = encode_status(&old);
        assert_eq!(u16::from_le_bytes([f[8], f[9]]), 1);
        // The bytes an agent before version 2 sends: the same fields, nothing after.
        let v1_body =
            postcard::to_stdvec(&("node-1", "0.1.0", 7u64, 2u64, 300u64, 1u64, 1000u64)).unwrap();
        assert_eq!(f, frame_bytes(STATUS_MAGIC, 1, 0, &v1_body));
        assert_eq!(
            decode_client(&f).unwrap().unwrap().0,
            ClientMessage::Status(old.clone())
        );

        let mut new = old.clone();
        new.coverage = Some(Coverage {
            source: "pcap".into(),
            packets: 10,
            bytes: 9000,
            drops: vec![("kernel".into(), 3), ("queue_full".into(), 1)],
            stream_gaps: 1,
            stream_gap_bytes: 1460,
            flows: 4,
            http_transactions: 5,
            http_parse_errors: 1,
        });
        let f = encode_status(&new);
        assert_eq!(u16::from_le_bytes([f[8], f[9]]), 2);
        assert_eq!(
            decode_client(&f).unwrap().unwrap().0,
            ClientMessage::Status(new.clone())
        );

        // Many causes are folded, not refused.
        let mut many = new.clone();
        many.coverage.as_mut().unwrap().drops = (0..40).map(|i| (format!("c{i:02}"), 1)).collect();
        let f = encode_status(&many);
        match decode_client(&f).unwrap().unwrap().0 {
            ClientMessage::Status(s) => {
                let c = s.coverage.unwrap();
                assert_eq!(c.drops.len(), MAX_DROP_CAUSES);
                assert_eq!(c.dropped(), 40);
            }
            m => panic!("{m:?}"),
        }
    }

    #[test]
    fn foreign_and_future_frames_are_errors() {
        let mut f = encode_status(&AgentStatus::default());
        f[8] = 9; // version 9
        assert_eq!(decode_client(&f), Err(WireError::UnsupportedVersion(9)));
        f[4..8].copy_from_slice(b"TPLZ");
        assert_eq!(decode_client(&f), Err(WireError::UnknownMessage(*b"TPLZ")));
        f[4..8].copy_from_slice(b"GET ");
        assert_eq!(decode_client(&f), Err(WireError::BadMagic));
        assert_eq!(
            decode_server(b"GET / HTTP/1.1\r\n"),
            Err(WireError::TooLarge(u32::from_le_bytes(*b"GET ") as usize))
        );
    }
}
