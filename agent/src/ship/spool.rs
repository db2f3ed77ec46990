//! The spool: batches waiting for the collector's ack, in sequence order, bounded in
//! bytes. With a directory it survives agent restarts and crashes: frames are appended
//! to segment files (each record checksummed, a torn tail is cut off on reopening) and
//! the highest acked sequence is kept in `acked`, so a restart resends only what was not
//! acked (and the collector drops what it already holds). Without a directory it lives
//! in memory.
//!
//! When a new batch does not fit, it is dropped and counted: batches already accepted
//! are never thrown away for newer ones.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Record header: frame length, CRC-32 of the frame, sequence, events.
const RECORD_HEADER: usize = 4 + 4 + 8 + 4;
/// A segment is closed for appends past this size.
const SEGMENT_BYTES: u64 = 8 << 20;
/// Frames kept in memory besides the files (the rest is read back when sent).
const MEMORY_CACHE_BYTES: u64 = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool {0}: {1}")]
    Io(PathBuf, io::Error),
}

/// One batch waiting for its ack.
#[derive(Debug, Clone)]
pub struct Pending {
    pub seq: u64,
    pub events: u32,
    pub len: u32,
    /// The frame, when kept in memory.
    frame: Option<Arc<Vec<u8>>>,
    /// Where it is on disk: segment index in `segments` order by first seq, and offset.
    at: Option<(u64, u64)>,
}

struct Segment {
    /// Named after its first sequence.
    first_seq: u64,
    path: PathBuf,
    file: File,
    len: u64,
}

/// Counters a spool reports.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SpoolStats {
    pub pending_batches: u64,
    pub pending_bytes: u64,
    pub dropped_batches: u64,
    pub dropped_events: u64,
    /// Records found damaged (torn writes) and cut off when the spool was reopened.
    pub damaged_records: u64,
}

pub struct Spool {
    dir: Option<PathBuf>,
    max_bytes: u64,
    queue: VecDeque<Pending>,
    segments: VecDeque<Segment>,
    bytes: u64,
    cached: u64,
    acked: Option<u64>,
    acked_written: Option<u64>,
    dirty: bool,
    last_sync: Instant,
    stats: SpoolStats,
}

/// Whether a batch was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Queued,
    /// The spool is full: the batch was dropped and counted.
    Dropped,
}

impl Spool {
    pub fn in_memory(max_bytes: u64) -> Spool {
        Spool {
            dir: None,
            max_bytes,
            queue: VecDeque::new(),
            segments: VecDeque::new(),
            bytes: 0,
            cached: 0,
            acked: None,
            acked_written: None,
            dirty: false,
            last_sync: Instant::now(),
            stats: SpoolStats::default(),
        }
    }

    /// Opens (or creates) a spool directory and loads what it holds.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, SpoolError> {
        let err = |p: &Path, e| SpoolError::Io(p.to_path_buf(), e);
        std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
        let mut s = Spool::in_memory(max_bytes);
        s.dir = Some(dir.to_path_buf());
        let acked_path = dir.join("acked");
        s.acked = match std::fs::read_to_string(&acked_path) {
            Ok(t) => t.trim().parse().ok(),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(err(&acked_path, e)),
        };
        s.acked_written = s.acked;
        let mut names: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
            .map_err(|e| err(dir, e))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let first = name
                    .strip_prefix("seg-")?
                    .strip_suffix(".spool")?
                    .parse()
                    .ok()?;
                Some((first, e.path()))
            })
            .collect();
        names.sort();
        for (first_seq, path) in names {
            let mut file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| err(&path, e))?;
            let mut data = Vec::new();
            file.read_to_end(&mut data).map_err(|e| err(&path, e))?;
            let mut off = 0usize;
            let mut kept = Vec::new();
            while off + RECORD_HEADER <= data.len() {
                let h = &data[off..off + RECORD_HEADER];
                let len = u32::from_le_bytes(h[0..4].try_into().expect("4")) as usize;
                let crc = u32::from_le_bytes(h[4..8].try_into().expect("4"));
                let seq = u64::from_le_bytes(h[8..16].try_into().expect("8"));
                let events = u32::from_le_bytes(h[16..20].try_into().expect("4"));
                let Some(frame) = data.get(off + RECORD_HEADER..off + RECORD_HEADER + len) else {
                    break;
                };
                if crc32fast::hash(frame) != crc {
                    break;
                }
                kept.push(Pending {
                    seq,
                    events,
                    len: len as u32,
                    frame: None,
                    at: Some((first_seq, (off + RECORD_HEADER) as u64)),
                });
                off += RECORD_HEADER + len;
            }
            if off < data.len() {
                // A torn or damaged tail: cut it, the records before it stand.
                s.stats.damaged_records += 1;
                file.set_len(off as u64).map_err(|e| err(&path, e))?;
            }
            file.seek(SeekFrom::End(0)).map_err(|e| err(&path, e))?;
            let unacked: Vec<Pending> = kept
                .into_iter()
                .filter(|p| s.acked.is_none_or(|a| p.seq > a))
                .collect();
            if unacked.is_empty() {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            for p in unacked {
                s.bytes += u64::from(p.len);
                s.queue.push_back(p);
            }
            s.segments.push_back(Segment {
                first_seq,
                path,
                file,
                len: off as u64,
            });
        }
        Ok(s)
    }

    /// The highest sequence this spool has seen (acked or waiting), to start after.
    pub fn last_seq(&self) -> Option<u64> {
        self.queue.back().map(|p| p.seq).max(self.acked)
    }

    /// Takes a batch's frame, or drops it when it does not fit.
    pub fn push(&mut self, seq: u64, events: u32, frame: Vec<u8>) -> Result<Admission, SpoolError> {
        let len = frame.len() as u64;
        if self.bytes + len > self.max_bytes {
            self.stats.dropped_batches += 1;
            self.stats.dropped_events += u64::from(events);
            return Ok(Admission::Dropped);
        }
        let mut p = Pending {
            seq,
            events,
            len: len as u32,
            frame: None,
            at: None,
        };
        if let Some(dir) = self.dir.clone() {
            let need_new = self.segments.back().is_none_or(|s| s.len >= SEGMENT_BYTES);
            if need_new {
                let path = dir.join(format!("seg-{seq:020}.spool"));
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .read(true)
                    .open(&path)
                    .map_err(|e| SpoolError::Io(path.clone(), e))?;
                if let Some(prev) = self.segments.back() {
                    let _ = prev.file.sync_data();
                }
                self.segments.push_back(Segment {
                    first_seq: seq,
                    path,
                    file,
                    len: 0,
                });
            }
            let seg = self.segments.back_mut().expect("just ensured");
            let mut rec = Vec::with_capacity(RECORD_HEADER + frame.len());
            rec.extend_from_slice(&(frame.len() as u32).to_le_bytes());
            rec.extend_from_slice(&crc32fast::hash(&frame).to_le_bytes());
            rec.extend_from_slice(&seq.to_le_bytes());
            rec.extend_from_slice(&events.to_le_bytes());
            rec.extend_from_slice(&frame);
            seg.file
                .write_all(&rec)
                .map_err(|e| SpoolError::Io(seg.path.clone(), e))?;
            p.at = Some((seg.first_seq, seg.len + RECORD_HEADER as u64));
            seg.len += rec.len() as u64;
            self.dirty = true;
            if self.cached + len <= MEMORY_CACHE_BYTES {
                self.cached += len;
                p.frame = Some(Arc::new(frame));
            }
        } else {
            p.frame = Some(Arc::new(frame));
        }
        self.bytes += len;
        self.queue.push_back(p);
        Ok(Admission::Queued)
    }

    /// Batches waiting, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &Pending> {
        self.queue.iter()
    }

    /// The first waiting batch with a sequence above `after`.
    pub fn next_after(&self, after: Option<u64>) -> Option<Pending> {
        let i = match after {
            None => 0,
            Some(a) => self.queue.partition_point(|p| p.seq <= a),
        };
        self.queue.get(i).cloned()
    }

    /// The bytes of a waiting batch's frame.
    pub fn frame(&self, p: &Pending) -> Result<Arc<Vec<u8>>, SpoolError> {
        if let Some(f) = &p.frame {
            return Ok(f.clone());
        }
        let (first, off) = p.at.expect("a batch is in memory or on disk");
        let seg = self
            .segments
            .iter()
            .find(|s| s.first_seq == first)
            .expect("a waiting batch's segment exists");
        let mut buf = vec![0u8; p.len as usize];
        seg.file
            .read_exact_at(&mut buf, off)
            .map_err(|e| SpoolError::Io(seg.path.clone(), e))?;
        Ok(Arc::new(buf))
    }

    /// The collector stored every batch up to `seq`; returns the events they held.
    pub fn ack(&mut self, seq: u64) -> u64 {
        let mut events = 0;
        while let Some(p) = self.queue.front() {
            if p.seq > seq {
                break;
            }
            let p = self.queue.pop_front().expect("peeked");
            events += u64::from(p.events);
            self.bytes -= u64::from(p.len);
            if p.frame.is_some() && self.dir.is_some() {
                self.cached -= u64::from(p.len);
            }
        }
        self.acked = Some(self.acked.map_or(seq, |a| a.max(seq)));
        // Segments wholly acked go, except the one being appended to.
        while self.segments.len() > 1 {
            let next_first = self.segments[1].first_seq;
            if self.queue.front().is_some_and(|p| p.seq < next_first) {
                break;
            }
            let s = self.segments.pop_front().expect("len > 1");
            let _ = std::fs::remove_file(&s.path);
        }
        if self.queue.is_empty()
            && let Some(s) = self.segments.back()
            && s.len >= SEGMENT_BYTES
        {
            let s = self.segments.pop_back().expect("checked");
            let _ = std::fs::remove_file(&s.path);
        }
        events
    }

    /// Flushes appends to disk and records the acked sequence, at most once per
    /// `interval` unless `force`.
    pub fn sync(&mut self, interval: Duration, force: bool) -> Result<(), SpoolError> {
        let Some(dir) = &self.dir else { return Ok(()) };
        if !force && self.last_sync.elapsed() < interval {
            return Ok(());
        }
        self.last_sync = Instant::now();
        if self.dirty {
            if let Some(s) = self.segments.back() {
                s.file
                    .sync_data()
                    .map_err(|e| SpoolError::Io(s.path.clone(), e))?;
            }
            self.dirty = false;
        }
        if self.acked != self.acked_written
            && let Some(a) = self.acked
        {
            let path = dir.join("acked");
            let tmp = dir.join("acked.tmp");
            std::fs::write(&tmp, format!("{a}\n"))
                .and_then(|_| File::open(&tmp)?.sync_all())
                .and_then(|_| std::fs::rename(&tmp, &path))
                .map_err(|e| SpoolError::Io(path.clone(), e))?;
            self.acked_written = self.acked;
        }
        Ok(())
    }

    pub fn stats(&self) -> SpoolStats {
        SpoolStats {
            pending_batches: self.queue.len() as u64,
            pending_bytes: self.bytes,
            ..self.stats
        }
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("tapline-spool-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn survives_reopen_and_resends_only_unacked() {
        let d = tmpdir("reopen");
        {
            let mut s = Spool::open(&d, 1 << 20).unwrap();
            for seq in 10..15 {
                s.push(seq, 3, vec![seq as u8; 100]).unwrap();
            }
            s.ack(11);
            s.sync(Duration::ZERO, true).unwrap();
        }
        let s = Spool::open(&d, 1 << 20).unwrap();
        let seqs: Vec<u64> = s.pending().map(|p| p.seq).collect();
        assert_eq!(seqs, vec![12, 13, 14]);
        let p = s.next_after(Some(12)).unwrap();
        assert_eq!(p.seq, 13);
        assert_eq!(*s.frame(&p).unwrap(), vec![13u8; 100]);
        assert_eq!(s.last_seq(), Some(14));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn torn_tail_is_cut_and_earlier_records_stand() {
        let d = tmpdir("torn");
        {
            let mut s = Spool::open(&d, 1 << 20).unwrap();
            s.push(1, 1, vec![1; 50]).unwrap();
            s.push(2, 1, vec![2; 50]).unwrap();
            s.sync(Duration::ZERO, true).unwrap();
        }
        let seg = d.join(format!("seg-{:020}.spool", 1));
        let len = std::fs::metadata(&seg).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(len - 7)
            .unwrap();
        let mut s = Spool::open(&d, 1 << 20).unwrap();
        assert_eq!(s.pending().map(|p| p.seq).collect::<Vec<_>>(), vec![1]);
        assert_eq!(s.stats().damaged_records, 1);
        s.push(3, 1, vec![3; 50]).unwrap();
        drop(s);
        let s = Spool::open(&d, 1 << 20).unwrap();
        assert_eq!(s.pending().map(|p| p.seq).collect::<Vec<_>>(), vec![1, 3]);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn full_spool_drops_new_batches_and_counts_them() {
        let mut s = Spool::in_memory(250);
        assert_eq!(s.push(1, 10, vec![0; 100]).unwrap(), Admission::Queued);
        assert_eq!(s.push(2, 10, vec![0; 100]).unwrap(), Admission::Queued);
        assert_eq!(s.push(3, 7, vec![0; 100]).unwrap(), Admission::Dropped);
        assert_eq!(s.ack(1), 10, "the acked batch's events");
        assert_eq!(s.push(4, 10, vec![0; 100]).unwrap(), Admission::Queued);
        let st = s.stats();
        assert_eq!((st.dropped_batches, st.dropped_events), (1, 7));
        assert_eq!((st.pending_batches, st.pending_bytes), (2, 200));
    }

    #[test]
    fn acked_segments_are_deleted() {
        let d = tmpdir("segments");
        let mut s = Spool::open(&d, 64 << 20).unwrap();
        let big = vec![7u8; (SEGMENT_BYTES / 2) as usize];
        for seq in 0..6 {
            s.push(seq, 1, big.clone()).unwrap();
        }
        let files = || std::fs::read_dir(&d).unwrap().count();
        assert_eq!(files(), 3);
        s.ack(3);
        assert_eq!(files(), 1);
        s.ack(5);
        assert_eq!(files(), 0);
        assert!(s.is_empty());
        let _ = std::fs::remove_dir_all(&d);
    }
}
