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
const MAX_BUFFER: usize = 16 << 20;

struct Interface {
    linktype: u32,
    resolution: u64,
    offset: i64,
}

/// Calls `on_frame` for every frame of the capture, and `on_progress` with the number of
/// file bytes consumed so far (about once per megabyte).
pub fn read_frames<R: Read + Send>(
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

/// Reads a capture held in memory (a mapped file). Classic pcap, the common case, is
/// parsed in place without copying; other formats go through [`read_frames`].
pub fn read_frames_in_memory(
    data: &[u8],
    mut on_frame: impl FnMut(Frame<'_>),
    mut on_progress: impl FnMut(u64),
) -> Result<FileSummary, FileError> {
    let Some(magic) = data.get(..4) else {
        return read_frames(data, on_frame, on_progress);
    };
    let (big, nanos) = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] => (false, false),
        [0xa1, 0xb2, 0xc3, 0xd4] => (true, false),
        [0x4d, 0x3c, 0xb2, 0xa1] => (false, true),
        [0xa1, 0xb2, 0x3c, 0x4d] => (true, true),
        _ => return read_frames(data, on_frame, on_progress),
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = data.get(at..at + 4)?.try_into().ok()?;
        Some(if big {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    };
    let linktype = u32_at(20).ok_or(FileError::NotPcap)?;
    let mut summary = FileSummary::default();
    let mut pos = 24;
    let mut last_progress = 0;
    while pos < data.len() {
        let (Some(secs), Some(frac), Some(caplen), Some(origlen)) = (
            u32_at(pos),
            u32_at(pos + 4),
            u32_at(pos + 8),
            u32_at(pos + 12),
        ) else {
            summary.truncated = true;
            break;
        };
        let start = pos + 16;
        let Some(frame) = data.get(start..start.saturating_add(caplen as usize)) else {
            summary.truncated = true;
            break;
        };
        let frac = if nanos {
            i64::from(frac) / 1000
        } else {
            i64::from(frac)
        };
        summary.frames += 1;
        summary.bytes += frame.len() as u64;
        on_frame(Frame {
            linktype,
            ts: i64::from(secs) * 1_000_000 + frac,
            data: frame,
            wire_len: origlen,
        });
        pos = start + frame.len();
        if pos - last_progress >= 1 << 20 {
            last_progress = pos;
            on_progress(pos as u64);
        }
    }
    on_progress(data.len() as u64);
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

    #[test]
    fn in_memory_reader_agrees_with_the_streaming_one() {
        for big in [false, true] {
            let file = pcap(big, &[b"abc", b"", b"hello world"]);
            for cut in [file.len(), file.len() - 4, file.len() - 12, 30] {
                let data = &file[..cut];
                let (a, sa) = collect(|f| read_frames_in_memory(data, f, |_| {}));
                let (b, sb) = collect(|f| read_frames(data, f, |_| {}));
                assert_eq!(a, b, "big={big} cut={cut}");
                assert_eq!((sa.frames, sa.truncated), (sb.frames, sb.truncated));
            }
        }
    }
}
