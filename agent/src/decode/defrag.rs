//! Bounded IP fragment reassembly. Fragmented TCP is rare on real networks but common in
//! evasion attempts, so it is reassembled rather than ignored, within hard limits: a table
//! of at most `max_datagrams` partial datagrams, each at most 64 KiB, expired after
//! `timeout`. Every datagram given up on is counted.

use foldhash::HashMap;

use super::{Fragment, FragmentKey, Micros};

const MAX_DATAGRAM: u32 = 65_535;
const MAX_FRAGMENTS_PER_DATAGRAM: usize = 64;

#[derive(Debug, Clone, Copy)]
pub struct DefragLimits {
    pub max_datagrams: usize,
    pub timeout: Micros,
}

impl Default for DefragLimits {
    fn default() -> Self {
        DefragLimits {
            max_datagrams: 4096,
            timeout: 30_000_000,
        }
    }
}

/// Counters of the defragmenter.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefragStats {
    pub fragments: u64,
    pub reassembled: u64,
    /// Partial datagrams dropped because the table was full, they timed out, or they
    /// were malformed (too large, too many pieces).
    pub dropped: u64,
}

struct Partial {
    first_seen: Micros,
    data: Vec<u8>,
    /// Received byte ranges, unsorted; small by construction.
    ranges: Vec<(u32, u32)>,
    total: Option<u32>,
}

impl Partial {
    fn complete(&self) -> bool {
        let Some(total) = self.total else {
            return false;
        };
        let mut ranges = self.ranges.clone();
        ranges.sort_unstable();
        let mut covered = 0;
        for (s, e) in ranges {
            if s > covered {
                return false;
            }
            covered = covered.max(e);
        }
        covered >= total
    }
}

#[derive(Default)]
pub struct Defragmenter {
    limits: DefragLimits,
    table: HashMap<FragmentKey, Partial>,
    pub stats: DefragStats,
}

impl Defragmenter {
    pub fn new(limits: DefragLimits) -> Self {
        Defragmenter {
            limits,
            table: HashMap::default(),
            stats: DefragStats::default(),
        }
    }

    /// Adds a fragment; returns the whole transport payload once every piece is in.
    /// Overlapping pieces keep the bytes that arrived first.
    pub fn push(&mut self, ts: Micros, frag: &Fragment<'_>) -> Option<Vec<u8>> {
        self.stats.fragments += 1;
        let start = frag.offset;
        let end = start.saturating_add(frag.payload.len() as u32);
        if end > MAX_DATAGRAM {
            self.stats.dropped += 1;
            self.table.remove(&frag.key);
            return None;
        }
        if !self.table.contains_key(&frag.key) {
            if self.table.len() >= self.limits.max_datagrams {
                self.expire(ts);
            }
            if self.table.len() >= self.limits.max_datagrams {
                self.stats.dropped += 1;
                return None;
            }
            self.table.insert(
                frag.key,
                Partial {
                    first_seen: ts,
                    data: Vec::new(),
                    ranges: Vec::new(),
                    total: None,
                },
            );
        }
        let p = self.table.get_mut(&frag.key)?;
        if p.ranges.len() >= MAX_FRAGMENTS_PER_DATAGRAM {
            self.stats.dropped += 1;
            self.table.remove(&frag.key);
            return None;
        }
        if p.data.len() < end as usize {
            p.data.resize(end as usize, 0);
        }
        // First arrival wins: only fill bytes no earlier fragment covered.
        let mut pos = start;
        while pos < end {
            let covering = p.ranges.iter().find(|(s, e)| *s <= pos && pos < *e);
            match covering {
                Some(&(_, e)) => pos = e.min(end),
                None => {
                    let next_start = p
                        .ranges
                        .iter()
                        .filter(|(s, _)| *s > pos)
                        .map(|(s, _)| *s)
                        .min()
                        .unwrap_or(end)
                        .min(end);
                    let (a, b) = ((pos - start) as usize, (next_start - start) as usize);
                    p.data[pos as usize..next_start as usize].copy_from_slice(&frag.payload[a..b]);
                    pos = next_start;
                }
            }
        }
        p.ranges.push((start, end));
        if !frag.more {
            p.total = Some(end);
        }
        if p.complete() {
            let mut p = self.table.remove(&frag.key)?;
            p.data.truncate(p.total.unwrap_or(0) as usize);
            self.stats.reassembled += 1;
            return Some(p.data);
        }
        None
    }

    /// Drops partial datagrams older than the timeout.
    pub fn expire(&mut self, now: Micros) {
        let timeout = self.limits.timeout;
        let before = self.table.len();
        self.table.retain(|_, p| now - p.first_seen < timeout);
        self.stats.dropped += (before - self.table.len()) as u64;
    }

    /// Partial datagrams left at the end of input are counted as dropped.
    pub fn finish(&mut self) {
        self.stats.dropped += self.table.len() as u64;
        self.table.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::VlanIds;

    fn key() -> FragmentKey {
        FragmentKey {
            src: "1.1.1.1".parse().unwrap(),
            dst: "2.2.2.2".parse().unwrap(),
            id: 7,
            protocol: 6,
            vlan: VlanIds::default(),
        }
    }

    #[test]
    fn out_of_order_and_overlapping_fragments() {
        let mut d = Defragmenter::new(DefragLimits::default());
        let data: Vec<u8> = (0..48u8).collect();
        let f = |o: usize, e: usize, more| Fragment {
            key: key(),
            offset: o as u32,
            more,
            payload: &data[o..e],
        };
        assert!(d.push(0, &f(32, 48, false)).is_none());
        assert!(d.push(0, &f(0, 16, true)).is_none());
        let out = d.push(0, &f(8, 40, true)).unwrap();
        assert_eq!(out, data);
        assert_eq!(d.stats.reassembled, 1);
    }

    #[test]
    fn table_is_bounded() {
        let mut d = Defragmenter::new(DefragLimits {
            max_datagrams: 2,
            timeout: 1_000,
        });
        for id in 0..10 {
            let mut k = key();
            k.id = id;
            d.push(
                0,
                &Fragment {
                    key: k,
                    offset: 0,
                    more: true,
                    payload: b"abcdefgh",
                },
            );
        }
        assert_eq!(d.table.len(), 2);
        assert_eq!(d.stats.dropped, 8);
    }
}
