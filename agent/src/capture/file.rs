//! Reading pcap and pcapng files (or a pipe) as a stream of frames.

use std::io::Read;

use pcap_parser::pcapng::Block;
use pcap_parser::{PcapBlockOwned, PcapError, create_reader};

use crate::decode::Micros;

/// One captured frame, borrowed from the reader's buffer.
#[derive(Debug, Clone, Copy)]
pub struct Frame<'a> {
    pub linktype: u32,
    pub ts: Micros,
    pub data: &'a [u8],
    /// Length of the frame on the wire (larger than `data` when the snap length cut it).
    pub wire_len: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("not a pcap or pcapng file")]
    NotPcap,
    #[error("file is empty")]
    Empty,
    #[error("read failed")]
    Read,
    #[error("a record larger than {0} bytes")]
    RecordTooLarge(usize),
    #[error("malformed record at byte {0}")]
    Malformed(u64),
}

/// End-of-file facts about a capture file.
#[derive(Debug, Clone, Copy, Default)]
pub struct FileSummary {
    pub frames: u64,
    pub bytes: u64,
    /// The file ended inside a record (a capture cut short); what came before is kept.
    pub truncated: bool,
}

const BUFFER: usize = 1 << 20;
/// What is read before `pcap-parser` gets a stream that is not classic pcap.
const PREFIX: usize = 64 << 10;
const MAX_BUFFER: usize = 16 << 20;

struct Interface {
    linktype: u32,
    resolution: u64,
    offset: i64,
}

/// Calls `on_frame` for every frame of the capture, and `on_progress` with the number of
/// file bytes consumed so far (about once per megabyte).
///
/// Classic pcap, the common case, is read in large blocks and its records parsed in
/// place; pcapng and anything else go through `pcap-parser`.
pub fn read_frames<R: Read + Send>(
    mut input: R,
    mut on_frame: impl FnMut(Frame<'_>),
    mut on_progress: impl FnMut(u64),
) -> Result<FileSummary, FileError> {
    let mut header = [0u8; 24];
    let got = read_up_to(&mut input, &mut header)?;
    let classic = (got == header.len())
        .then(|| Classic::from_header(&header))
        .flatten();
    let Some(classic) = classic else {
        // Not classic pcap (or too short to tell). `pcap-parser` decides the format from
        // its first read, which must hold the first blocks whatever size of reads the
        // input gives (a pipe): it gets the first 64 KiB at once.
        let mut prefix = header[..got].to_vec();
        if got == header.len() {
            prefix.resize(PREFIX, 0);
            let more = read_up_to(&mut input, &mut prefix[got..])?;
            prefix.truncate(got + more);
        }
        let input = Prefixed {
            prefix,
            at: 0,
            inner: input,
        };
        return read_frames_parsed(input, on_frame, on_progress);
    };
    let mut summary = FileSummary::default();
    let mut consumed = header.len() as u64;
    let mut buf = vec![0u8; BUFFER];
    let mut filled = 0;
    loop {
        let n = read_once(&mut input, &mut buf[filled..])?;
        filled += n;
        let used = classic.records(&buf[..filled], &mut summary, &mut on_frame);
        if used > 0 {
            // The start of a record cut by the read moves to the front (no copy while a
            // large record arrives in small reads: that would be quadratic).
            buf.copy_within(used..filled, 0);
            filled -= used;
        }
        consumed += used as u64;
        on_progress(consumed);
        if n == 0 {
            summary.truncated = filled > 0;
            return Ok(summary);
        }
        if filled == buf.len() {
            // One record larger than the buffer.
            if buf.len() >= MAX_BUFFER {
                return Err(FileError::RecordTooLarge(buf.len()));
            }
            buf.resize(buf.len() * 2, 0);
        }
    }
}

/// Bytes already read from `inner`, then the rest of it.
struct Prefixed<R> {
    prefix: Vec<u8>,
    at: usize,
    inner: R,
}

impl<R: Read> Read for Prefixed<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (self.prefix.len() - self.at).min(buf.len());
        buf[..n].copy_from_slice(&self.prefix[self.at..self.at + n]);
        self.at += n;
        if n == buf.len() {
            return Ok(n);
        }
        match self.inner.read(&mut buf[n..]) {
            Ok(m) => Ok(n + m),
            Err(_) if n > 0 => Ok(n),
            Err(e) => Err(e),
        }
    }
}

/// One read, retried when a signal interrupts it; 0 at the end of the input.
fn read_once(input: &mut impl Read, buf: &mut [u8]) -> Result<usize, FileError> {
    loop {
        match input.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return Err(FileError::Read),
        }
    }
}

/// Reads until `buf` is full or the input ends; the number of bytes read.
fn read_up_to(input: &mut impl Read, buf: &mut [u8]) -> Result<usize, FileError> {
    let mut got = 0;
    while got < buf.len() {
        match read_once(input, &mut buf[got..])? {
            0 => break,
            n => got += n,
        }
    }
    Ok(got)
}

/// What the global header of a classic pcap file says.
#[derive(Debug, Clone, Copy)]
struct Classic {
    big: bool,
    nanos: bool,
    linktype: u32,
}

impl Classic {
    fn from_header(h: &[u8]) -> Option<Classic> {
        let (big, nanos) = match h.get(..4)? {
            [0xd4, 0xc3, 0xb2, 0xa1] => (false, false),
            [0xa1, 0xb2, 0xc3, 0xd4] => (true, false),
            [0x4d, 0x3c, 0xb2, 0xa1] => (false, true),
            [0xa1, 0xb2, 0x3c, 0x4d] => (true, true),
            _ => return None,
        };
        let mut c = Classic {
            big,
            nanos,
            linktype: 0,
        };
        c.linktype = c.u32_at(h, 20)?;
        Some(c)
    }

    fn u32_at(&self, data: &[u8], at: usize) -> Option<u32> {
        let b: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        Some(if self.big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    /// Passes on the whole records at the start of `data`; returns the bytes they take.
    /// A record cut by the end of `data` is left.
    fn records(
        &self,
        data: &[u8],
        summary: &mut FileSummary,
        on_frame: &mut impl FnMut(Frame<'_>),
    ) -> usize {
        let mut pos = 0;
        while let (Some(secs), Some(frac), Some(caplen), Some(origlen)) = (
            self.u32_at(data, pos),
            self.u32_at(data, pos + 4),
            self.u32_at(data, pos + 8),
            self.u32_at(data, pos + 12),
        ) {
            let start = pos + 16;
            let Some(frame) = data.get(start..start.saturating_add(caplen as usize)) else {
                break;
            };
            let frac = if self.nanos {
                i64::from(frac) / 1000
            } else {
                i64::from(frac)
            };
            summary.frames += 1;
            summary.bytes += frame.len() as u64;
            on_frame(Frame {
                linktype: self.linktype,
                ts: i64::from(secs) * 1_000_000 + frac,
                data: frame,
                wire_len: origlen,
            });
            pos = start + frame.len();
        }
        pos
    }
}

/// [`read_frames`] through `pcap-parser`: pcapng, and classic pcap it is given (the
/// tests' reference for the block reader).
pub(crate) fn read_frames_parsed<R: Read + Send>(
    input: R,
    mut on_frame: impl FnMut(Frame<'_>),
    mut on_progress: impl FnMut(u64),
) -> Result<FileSummary, FileError> {
    let mut reader = match create_reader(BUFFER, input) {
        Ok(r) => r,
        Err(PcapError::Eof) => return Err(FileError::Empty),
        Err(PcapError::ReadError) => return Err(FileError::Read),
        Err(_) => return Err(FileError::NotPcap),
    };
    let mut summary = FileSummary::default();
    let mut legacy_linktype = 1u32;
    let mut legacy_nanos = false;
    let mut interfaces: Vec<Interface> = Vec::new();
    let mut consumed: u64 = 0;
    let mut last_progress: u64 = 0;
    let mut buffer = BUFFER;
    loop {
        match reader.next() {
            Ok((offset, block)) => {
                match block {
                    PcapBlockOwned::LegacyHeader(h) => {
                        legacy_linktype = h.network.0 as u32;
                        legacy_nanos = h.is_nanosecond_precision();
                    }
                    PcapBlockOwned::Legacy(b) => {
                        let frac = if legacy_nanos {
                            i64::from(b.ts_usec) / 1000
                        } else {
                            i64::from(b.ts_usec)
                        };
                        let len = (b.caplen as usize).min(b.data.len());
                        summary.frames += 1;
                        summary.bytes += len as u64;
                        on_frame(Frame {
                            linktype: legacy_linktype,
                            ts: i64::from(b.ts_sec) * 1_000_000 + frac,
                            data: &b.data[..len],
                            wire_len: b.origlen,
                        });
                    }
                    PcapBlockOwned::NG(Block::SectionHeader(_)) => interfaces.clear(),
                    PcapBlockOwned::NG(Block::InterfaceDescription(idb)) => {
                        interfaces.push(Interface {
                            linktype: idb.linktype.0 as u32,
                            resolution: idb.ts_resolution().unwrap_or(1_000_000),
                            offset: idb.ts_offset(),
                        });
                    }
                    PcapBlockOwned::NG(Block::EnhancedPacket(epb)) => {
                        if let Some(i) = interfaces.get(epb.if_id as usize) {
                            let (secs, frac) = epb.decode_ts(0, i.resolution);
                            let micros =
                                u128::from(frac) * 1_000_000 / u128::from(i.resolution.max(1));
                            let len = (epb.caplen as usize).min(epb.data.len());
                            summary.frames += 1;
                            summary.bytes += len as u64;
                            on_frame(Frame {
                                linktype: i.linktype,
                                ts: (i64::from(secs) + i.offset) * 1_000_000 + micros as i64,
                                data: &epb.data[..len],
                                wire_len: epb.origlen,
                            });
                        }
                    }
                    PcapBlockOwned::NG(Block::SimplePacket(spb)) => {
                        if let Some(i) = interfaces.first() {
                            let len = (spb.origlen as usize).min(spb.data.len());
                            summary.frames += 1;
                            summary.bytes += len as u64;
                            on_frame(Frame {
                                linktype: i.linktype,
                                ts: 0,
                                data: &spb.data[..len],
                                wire_len: spb.origlen,
                            });
                        }
                    }
                    PcapBlockOwned::NG(_) => {}
                }
                consumed += offset as u64;
                reader.consume(offset);
                if consumed - last_progress >= 1 << 20 {
                    last_progress = consumed;
                    on_progress(consumed);
                }
            }
            Err(PcapError::Eof) => break,
            Err(PcapError::Incomplete(_)) => {
                if reader.reader_exhausted() {
                    summary.truncated = true;
                    break;
                }
                if reader.refill().is_err() {
                    return Err(FileError::Read);
                }
            }
            Err(PcapError::BufferTooSmall) => {
                if buffer >= MAX_BUFFER {
                    return Err(FileError::RecordTooLarge(buffer));
                }
                buffer *= 2;
                reader.grow(buffer);
                if reader.refill().is_err() {
                    return Err(FileError::Read);
                }
            }
            Err(PcapError::UnexpectedEof) => {
                summary.truncated = true;
                break;
            }
            Err(PcapError::ReadError) => return Err(FileError::Read),
            Err(_) => return Err(FileError::Malformed(consumed)),
        }
    }
    on_progress(consumed);
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pcap(big: bool, frames: &[&[u8]]) -> Vec<u8> {
        let w = |v: u32| {
            if big {
                v.to_be_bytes()
            } else {
                v.to_le_bytes()
            }
        };
        let mut f = Vec::new();
        f.extend_from_slice(&w(0xa1b2_c3d4));
        f.extend_from_slice(
            &(if big {
                2u16.to_be_bytes()
            } else {
                2u16.to_le_bytes()
            }),
        );
        f.extend_from_slice(
            &(if big {
                4u16.to_be_bytes()
            } else {
                4u16.to_le_bytes()
            }),
        );
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&w(65535));
        f.extend_from_slice(&w(1));
        for (i, fr) in frames.iter().enumerate() {
            f.extend_from_slice(&w(100 + i as u32));
            f.extend_from_slice(&w(7));
            f.extend_from_slice(&w(fr.len() as u32));
            f.extend_from_slice(&w(fr.len() as u32 + 3));
            f.extend_from_slice(fr);
        }
        f
    }

    type Frames = Vec<(u32, i64, Vec<u8>, u32)>;

    fn collect(
        r: impl FnOnce(&mut dyn FnMut(Frame<'_>)) -> Result<FileSummary, FileError>,
    ) -> (Frames, FileSummary) {
        let mut v = Vec::new();
        let s =
            r(&mut |f: Frame<'_>| v.push((f.linktype, f.ts, f.data.to_vec(), f.wire_len))).unwrap();
        (v, s)
    }

    /// Hands out at most `step` bytes per read, as a pipe does.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// The frames every reader finds in `data`, with `pcap-parser` as the reference.
    fn check_readers(data: &[u8], step: usize) {
        let (want, sw) = collect(|f| read_frames_parsed(data, f, |_| {}));
        let (a, sa) = collect(|f| read_frames(data, f, |_| {}));
        let (b, sb) = collect(|f| read_frames(Trickle { data, step }, f, |_| {}));
        assert_eq!(a, want, "whole reads");
        assert_eq!(b, want, "blocks of {step}");
        for s in [sa, sb] {
            assert_eq!(
                (s.frames, s.bytes, s.truncated),
                (sw.frames, sw.bytes, sw.truncated)
            );
        }
    }

    #[test]
    fn readers_agree_on_cut_files() {
        for big in [false, true] {
            let file = pcap(big, &[b"abc", b"", b"hello world"]);
            for cut in [file.len(), file.len() - 4, file.len() - 12, 30, 24] {
                for step in [1, 7, 4096] {
                    check_readers(&file[..cut], step);
                }
            }
        }
    }

    #[test]
    fn pcapng_goes_through_pcap_parser_whatever_the_reads() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/lo-curl.pcapng");
        let file = std::fs::read(path).unwrap();
        let (frames, _) = collect(|f| read_frames(file.as_slice(), f, |_| {}));
        assert!(!frames.is_empty());
        for step in [1, 7, 30, 4096] {
            check_readers(&file, step);
        }
    }

    #[test]
    fn a_record_larger_than_the_buffer_grows_it() {
        let big = vec![7u8; BUFFER + BUFFER / 2];
        let file = pcap(false, &[b"a", &big, b"b"]);
        check_readers(&file, 1 << 16);
    }

    proptest::proptest! {
        #[test]
        fn block_reader_matches_pcap_parser(
            big: bool,
            frames in proptest::collection::vec(proptest::collection::vec(proptest::prelude::any::<u8>(), 0..3000), 0..20),
            cut in proptest::prelude::any::<proptest::sample::Index>(),
            step in 1usize..5000,
        ) {
            let refs: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
            let file = pcap(big, &refs);
            let cut = 24 + cut.index(file.len() - 23);
            check_readers(&file[..cut.min(file.len())], step);
        }
    }
}
