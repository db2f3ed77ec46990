//! One direction of a TCP connection: segments in, in-order bytes and gaps out.
//!
//! Bytes that arrive in order are handed on straight from the packet, without a copy;
//! only out-of-order segments are buffered, in a bounded map. Overlap policy: the bytes
//! that arrived first win (what was already delivered cannot be taken back, and buffered
//! bytes are not overwritten); overlaps that disagree with buffered bytes are counted.
//! A hole is given up on, and reported as a gap of so many bytes, when the peer has
//! acknowledged past it, when the buffer limit is reached, or when the stream ends.

use std::collections::BTreeMap;

/// What the stream hands on, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk<'a> {
    Data(&'a [u8]),
    /// This many bytes were never seen.
    Gap(u64),
}

#[derive(Debug, Clone, Copy)]
pub struct StreamLimits {
    /// Out-of-order bytes buffered per direction before the first hole is given up on.
    pub max_pending_bytes: usize,
    /// Out-of-order segments buffered per direction.
    pub max_pending_segments: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        StreamLimits {
            max_pending_bytes: 1 << 20,
            max_pending_segments: 2048,
        }
    }
}

/// Counters for one direction; summed into the run's statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    pub bytes: u64,
    pub segments: u64,
    pub retransmitted_bytes: u64,
    pub overlap_mismatches: u64,
    pub gaps: u64,
    pub gap_bytes: u64,
    pub out_of_order: u64,
}

#[derive(Debug, Default)]
pub struct Stream {
    /// Sequence number of the next byte to deliver; valid once `started`.
    next_seq: u32,
    /// Offset of `next_seq` from the first byte of the stream.
    next_off: u64,
    started: bool,
    pending: BTreeMap<u64, Vec<u8>>,
    pending_bytes: usize,
    fin_off: Option<u64>,
    pub stats: StreamStats,
}

impl Stream {
    /// Sets the sequence number of the first data byte (ISN + 1 after a SYN, or the first
    /// seen segment's sequence for a stream picked up midstream).
    pub fn start(&mut self, seq: u32) {
        if !self.started {
            self.started = true;
            self.next_seq = seq;
        }
    }

    /// Moves the start of a stream that has not carried data yet: a retransmitted SYN
    /// with a new initial sequence number, or a SYN-ACK acknowledging one.
    pub fn restart(&mut self, seq: u32) {
        if self.next_off == 0 && self.pending.is_empty() {
            self.started = true;
            self.next_seq = seq;
        }
    }

    pub fn is_started(&self) -> bool {
        self.started
    }

    /// Sequence number of the next byte to deliver (meaningful once started).
    pub fn next_seq(&self) -> u32 {
        self.next_seq
    }

    /// Offset of the next byte to deliver: the number of bytes delivered or skipped.
    pub fn offset(&self) -> u64 {
        self.next_off
    }

    /// Whether every byte up to the FIN has been handed on.
    pub fn is_finished(&self) -> bool {
        self.fin_off.is_some_and(|f| self.next_off >= f)
    }

    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    fn offset_of(&self, seq: u32) -> i64 {
        self.next_off as i64 + i64::from(seq.wrapping_sub(self.next_seq) as i32)
    }

    /// Records a FIN at `seq` (the sequence number just after the segment's data).
    pub fn fin(&mut self, seq: u32) {
        if self.started {
            let off = self.offset_of(seq);
            if off >= 0 {
                self.fin_off = Some(off as u64);
            }
        }
    }

    /// Takes one segment's payload.
    pub fn segment(
        &mut self,
        seq: u32,
        data: &[u8],
        limits: &StreamLimits,
        out: &mut impl FnMut(Chunk<'_>),
    ) {
        if data.is_empty() {
            return;
        }
        self.start(seq);
        self.stats.segments += 1;
        let start = self.offset_of(seq);
        let end = start + data.len() as i64;
        let next = self.next_off as i64;
        if end <= next {
            self.stats.retransmitted_bytes += data.len() as u64;
            return;
        }
        if start <= next {
            let skip = (next - start) as usize;
            self.stats.retransmitted_bytes += skip as u64;
            self.deliver(&data[skip..], out);
            self.drain(out);
            return;
        }
        self.stats.out_of_order += 1;
        self.buffer(start as u64, data);
        if self.pending_bytes > limits.max_pending_bytes
            || self.pending.len() > limits.max_pending_segments
        {
            self.skip_to_first_pending(out);
        }
    }

    /// The peer acknowledged everything before `ack`: a hole before that point will not
    /// be retransmitted, so whatever is buffered behind it can go on.
    pub fn acked(&mut self, ack: u32, out: &mut impl FnMut(Chunk<'_>)) {
        if !self.started || self.pending.is_empty() {
            return;
        }
        let ack_off = self.offset_of(ack);
        while let Some((&first, _)) = self.pending.iter().next() {
            if (first as i64) >= ack_off || first <= self.next_off {
                break;
            }
            self.skip_to_first_pending(out);
        }
    }

    /// End of the stream (FIN, RST, flow timeout or end of input): every hole becomes a
    /// gap and all buffered bytes are delivered.
    pub fn flush(&mut self, out: &mut impl FnMut(Chunk<'_>)) {
        while !self.pending.is_empty() {
            self.skip_to_first_pending(out);
        }
    }

    fn deliver(&mut self, data: &[u8], out: &mut impl FnMut(Chunk<'_>)) {
        self.next_off += data.len() as u64;
        self.next_seq = self.next_seq.wrapping_add(data.len() as u32);
        self.stats.bytes += data.len() as u64;
        out(Chunk::Data(data));
    }

    fn skip_to_first_pending(&mut self, out: &mut impl FnMut(Chunk<'_>)) {
        let Some((&first, _)) = self.pending.iter().next() else {
            return;
        };
        if first > self.next_off {
            let gap = first - self.next_off;
            self.stats.gaps += 1;
            self.stats.gap_bytes += gap;
            self.next_off = first;
            self.next_seq = self.next_seq.wrapping_add(gap as u32);
            out(Chunk::Gap(gap));
        }
        self.drain(out);
    }

    /// Delivers buffered segments that are now in order.
    fn drain(&mut self, out: &mut impl FnMut(Chunk<'_>)) {
        while let Some(entry) = self.pending.first_entry() {
            let off = *entry.key();
            if off > self.next_off {
                break;
            }
            let buf = entry.remove();
            self.pending_bytes -= buf.len();
            let end = off + buf.len() as u64;
            if end > self.next_off {
                let skip = (self.next_off - off) as usize;
                self.deliver(&buf[skip..], out);
            }
        }
    }

    /// Buffers `data` at `start`, keeping bytes that are already buffered (first wins).
    fn buffer(&mut self, start: u64, data: &[u8]) {
        let end = start + data.len() as u64;
        let mut pos = start;
        let mut pieces: Vec<(u64, u64)> = Vec::new();
        // Buffered segments never overlap each other, so the ones that can overlap
        // [start, end) are the one starting before `start` and those starting inside.
        let before = self
            .pending
            .range(..start)
            .next_back()
            .map(|(&o, b)| (o, b));
        let mut existing: Vec<(u64, &Vec<u8>)> = before.into_iter().collect();
        existing.extend(self.pending.range(start..end).map(|(&o, b)| (o, b)));
        for (o, b) in existing {
            let e = o + b.len() as u64;
            if e <= pos {
                continue;
            }
            if o > pos {
                pieces.push((pos, o.min(end)));
            }
            // Compare the overlapping part.
            let (ov_s, ov_e) = (pos.max(o), e.min(end));
            if ov_s < ov_e {
                let new = &data[(ov_s - start) as usize..(ov_e - start) as usize];
                let old = &b[(ov_s - o) as usize..(ov_e - o) as usize];
                if new != old {
                    self.stats.overlap_mismatches += 1;
                }
                self.stats.retransmitted_bytes += ov_e - ov_s;
            }
            pos = pos.max(e);
            if pos >= end {
                break;
            }
        }
        if pos < end {
            pieces.push((pos, end));
        }
        for (s, e) in pieces {
            let bytes = data[(s - start) as usize..(e - start) as usize].to_vec();
            self.pending_bytes += bytes.len();
            self.pending.insert(s, bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn collect(s: &mut Stream, segs: &[(u32, &[u8])], limits: &StreamLimits) -> Vec<u8> {
        let mut out = Vec::new();
        let mut sink = |c: Chunk<'_>| match c {
            Chunk::Data(d) => out.extend_from_slice(d),
            Chunk::Gap(n) => out.extend(std::iter::repeat_n(b'?', n as usize)),
        };
        for (seq, d) in segs {
            s.segment(*seq, d, limits, &mut sink);
        }
        s.flush(&mut sink);
        out
    }

    #[test]
    fn in_order_out_of_order_and_retransmission() {
        let mut s = Stream::default();
        s.start(1000);
        let out = collect(
            &mut s,
            &[
                (1000, b"abc"),
                (1006, b"ghi"),
                (1003, b"def"),
                (1003, b"def"),
            ],
            &StreamLimits::default(),
        );
        assert_eq!(out, b"abcdefghi");
        assert_eq!(s.stats.retransmitted_bytes, 3);
    }

    #[test]
    fn hole_becomes_gap_on_flush_and_on_ack() {
        let mut s = Stream::default();
        s.start(0);
        assert_eq!(
            collect(&mut s, &[(0, b"ab"), (4, b"ef")], &StreamLimits::default()),
            b"ab??ef"
        );
        assert_eq!(s.stats.gap_bytes, 2);

        let mut s = Stream::default();
        s.start(0);
        let mut got = Vec::new();
        let mut sink = |c: Chunk<'_>| got.push(format!("{c:?}"));
        s.segment(0, b"ab", &StreamLimits::default(), &mut sink);
        s.segment(4, b"ef", &StreamLimits::default(), &mut sink);
        s.acked(6, &mut sink);
        assert_eq!(got, ["Data([97, 98])", "Gap(2)", "Data([101, 102])"]);
    }

    #[test]
    fn sequence_wraps_around() {
        let mut s = Stream::default();
        s.start(u32::MAX - 1);
        let out = collect(
            &mut s,
            &[(0, b"cd"), (u32::MAX - 1, b"ab"), (2, b"e")],
            &StreamLimits::default(),
        );
        assert_eq!(out, b"abcde");
    }

    #[test]
    fn buffer_is_bounded() {
        let limits = StreamLimits {
            max_pending_bytes: 10,
            max_pending_segments: 4,
        };
        let mut s = Stream::default();
        s.start(0);
        let mut out = 0u64;
        let mut sink = |c: Chunk<'_>| {
            if let Chunk::Data(d) = c {
                out += d.len() as u64
            }
        };
        for i in 1..1000u32 {
            s.segment(i * 10, b"0123456789", &limits, &mut sink);
            assert!(s.pending_bytes() <= 20);
        }
        assert!(out > 9000);
    }

    proptest! {
        /// Against the trivial model "the byte at offset i is data[i]": however the
        /// stream is cut, reordered, duplicated or partly lost, what comes out is the
        /// original bytes with lost ranges reported as gaps of exactly their length.
        #[test]
        fn matches_model(
            data in proptest::collection::vec(any::<u8>(), 1..600),
            cuts in proptest::collection::vec(1usize..80, 1..40),
            order_seed in any::<u64>(),
            dup_mask in any::<u64>(),
            loss_mask in any::<u64>(),
            isn in any::<u32>(),
            small_limits in any::<bool>(),
        ) {
            let mut segs = Vec::new();
            let mut pos = 0;
            let mut i = 0;
            while pos < data.len() {
                let len = cuts[i % cuts.len()].min(data.len() - pos);
                // Overlapping retransmission: extend some segments over the next one.
                let ext = if dup_mask >> (i % 64) & 1 == 1 { len / 2 } else { 0 };
                let end = (pos + len + ext).min(data.len());
                segs.push((pos, end));
                pos += len;
                i += 1;
            }
            let lost: Vec<bool> = (0..segs.len())
                .map(|k| k > 0 && loss_mask >> (k % 64) & 1 == 1 && k % 3 == 0)
                .collect();
            let mut order: Vec<usize> = (0..segs.len()).collect();
            // Deterministic shuffle from the seed.
            let mut x = order_seed | 1;
            for k in (1..order.len()).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                order.swap(k, (x % (k as u64 + 1)) as usize);
            }
            let limits = if small_limits {
                StreamLimits { max_pending_bytes: 64, max_pending_segments: 3 }
            } else {
                StreamLimits::default()
            };
            let mut s = Stream::default();
            s.start(isn);
            let mut got: Vec<Option<u8>> = Vec::new();
            let mut sink = |c: Chunk<'_>| match c {
                Chunk::Data(d) => got.extend(d.iter().map(|b| Some(*b))),
                Chunk::Gap(n) => got.extend(std::iter::repeat_n(None, n as usize)),
            };
            for &k in &order {
                if lost[k] { continue; }
                let (a, b) = segs[k];
                s.segment(isn.wrapping_add(a as u32), &data[a..b], &limits, &mut sink);
            }
            s.flush(&mut sink);
            // Every delivered byte is the original byte at that offset.
            prop_assert!(got.len() <= data.len());
            for (off, b) in got.iter().enumerate() {
                if let Some(b) = b {
                    prop_assert_eq!(*b, data[off]);
                }
            }
            // With no loss and ample buffers, everything arrives and nothing is a gap.
            if !small_limits && lost.iter().all(|l| !l) {
                prop_assert_eq!(got.len(), data.len());
                prop_assert!(got.iter().all(|b| b.is_some()));
            }
            // Bytes covered by some received segment were delivered unless the bounded
            // buffer gave them up; with ample buffers nothing received is reported lost.
            if !small_limits {
                let mut covered = vec![false; data.len()];
                for (k, &(a, b)) in segs.iter().enumerate() {
                    if !lost[k] { covered[a..b].iter_mut().for_each(|c| *c = true); }
                }
                let last = covered.iter().rposition(|c| *c).map_or(0, |p| p + 1);
                prop_assert_eq!(got.len(), last);
                for off in 0..last {
                    prop_assert_eq!(got[off].is_some(), covered[off]);
                }
            }
        }
    }
}
