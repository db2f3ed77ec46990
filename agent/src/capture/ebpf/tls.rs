//! OpenSSL plaintext turned into TCP segments, so it flows through the same reassembly
//! and HTTP parser as captured packets. Each connection (process, `SSL *`) becomes a
//! synthetic stream between its socket's real addresses: a handshake when it is first
//! seen, then the bytes in order with their own sequence numbers. A read or write cut at
//! the snap length leaves a hole of the missing length, which the HTTP parser treats
//! like a capture gap. No I/O here: the socket lookup is passed in.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use tapline_ebpf_common::{TLS_READ, TLS_WRITE};

use super::record::TlsView;
use crate::decode::{Micros, TcpFlags, TcpSegment, VlanIds};

/// A segment to hand to the data path; its payload is the record's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHead {
    pub ts: Micros,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub seq: u32,
    pub ack: u32,
    pub flags: u8,
    pub window: u16,
    /// Payload length in sequence space (more than the data carried when truncated).
    pub len: u32,
}

impl SegmentHead {
    /// The segment for the reassembly, carrying `payload`.
    pub fn segment<'a>(&self, payload: &'a [u8]) -> TcpSegment<'a> {
        TcpSegment {
            ts: self.ts,
            vlan: VlanIds::default(),
            src: self.src.ip(),
            dst: self.dst.ip(),
            sport: self.src.port(),
            dport: self.dst.port(),
            seq: self.seq,
            ack: self.ack,
            flags: TcpFlags(self.flags),
            window: self.window,
            payload,
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
pub struct TlsStats {
    pub connections: u64,
    /// Connections whose socket could not be found (shown with unspecified addresses).
    pub unresolved: u64,
    /// Connections forgotten because the table was full.
    pub evicted: u64,
    pub bytes: u64,
    /// Bytes cut at the snap length (holes in the streams).
    pub truncated_bytes: u64,
    /// Connections seen from both ends on this node (client and server both use
    /// OpenSSL): the second view is not logged again.
    pub mirrored: u64,
}

struct Connection {
    fd: i32,
    client: SocketAddr,
    server: SocketAddr,
    /// The process is the client (it wrote first).
    local_is_client: bool,
    /// Next sequence number of the client's and the server's stream.
    next: [u32; 2],
    last_seen: Micros,
    /// The other end of a connection already tracked: its records are dropped.
    mirror: bool,
    /// Hash of the client's first bytes, to recognise the other end's view.
    first: Option<u64>,
    /// Segments held back while this connection's addresses are incomplete: the other
    /// end's view, with full addresses, may show up and make this one a mirror.
    held: Option<Held>,
}

struct Held {
    since: Micros,
    bytes: usize,
    segments: Vec<(SegmentHead, Vec<u8>)>,
}

type Key = (u32, u64);

/// How long a view with incomplete addresses waits for the other end's.
pub const HOLD: Micros = 300_000;
/// Bytes held per connection at most (then it is released at once).
const HOLD_BYTES: usize = 256 << 10;
/// Connections held at once at most.
const HOLD_CONNECTIONS: usize = 1024;

/// The connections seen through OpenSSL, bounded.
pub struct TlsStreams {
    conns: HashMap<Key, Connection>,
    /// Which connection logs each (client, server) pair.
    by_pair: HashMap<(SocketAddr, SocketAddr), Key>,
    /// The connection using each (process, descriptor).
    by_fd: HashMap<(u32, i32), Key>,
    /// Client first-bytes hashes of recent complete views, and when.
    recent_first: HashMap<u64, Micros>,
    held: usize,
    /// Held connections in the order their hold began (entries of connections released
    /// or gone since are skipped), so releasing looks only at those due.
    held_order: std::collections::VecDeque<(Micros, Key)>,
    /// Held connections by the hash of their client's first bytes.
    held_first: HashMap<u64, Key>,
    max: usize,
    pub stats: TlsStats,
}

const CLIENT_ISN: u32 = 1_000;
const SERVER_ISN: u32 = 5_000;

fn first_hash(data: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::with_seed(0x746c_7331).hash_one(&data[..data.len().min(512)])
}

impl TlsStreams {
    pub fn new(max: usize) -> Self {
        TlsStreams {
            conns: HashMap::new(),
            by_pair: HashMap::new(),
            by_fd: HashMap::new(),
            recent_first: HashMap::new(),
            held: 0,
            held_order: std::collections::VecDeque::new(),
            held_first: HashMap::new(),
            max: max.max(1),
            stats: TlsStats::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Takes one read or write. `resolve(pid, fd)` gives the socket's (local, remote)
    /// addresses (the local one unspecified when only the peer is known); `out`
    /// receives the segments (with the payload they carry).
    pub fn record(
        &mut self,
        rec: &TlsView<'_>,
        ts: Micros,
        resolve: &mut impl FnMut(u32, i32) -> Option<(SocketAddr, SocketAddr)>,
        out: &mut impl FnMut(SegmentHead, &[u8]),
    ) {
        let h = &rec.header;
        if h.direction != TLS_READ && h.direction != TLS_WRITE {
            return;
        }
        let key = (h.tgid, h.ssl);
        // The same `SSL *` on another socket: the old connection ended and its memory
        // was reused.
        let stale = self
            .conns
            .get(&key)
            .is_some_and(|c| h.fd >= 0 && c.fd >= 0 && c.fd != h.fd);
        if stale {
            self.remove(key, ts, out);
        }
        if !self.conns.contains_key(&key) {
            if self.conns.len() >= self.max {
                self.evict_oldest(ts, out);
            }
            let resolved = (h.fd >= 0).then(|| resolve(h.tgid, h.fd)).flatten();
            let complete =
                resolved.is_some_and(|(l, r)| !l.ip().is_unspecified() && !r.ip().is_unspecified());
            let (local, remote) = match resolved {
                Some(pair) => pair,
                None => {
                    self.stats.unresolved += 1;
                    let none = IpAddr::V4(Ipv4Addr::UNSPECIFIED);
                    (
                        SocketAddr::new(none, (h.ssl >> 4) as u16 | 1),
                        SocketAddr::new(none, h.tgid as u16),
                    )
                }
            };
            // HTTP clients speak first: the side that writes first is the client.
            let local_is_client = h.direction == TLS_WRITE;
            let (client, server) = if local_is_client {
                (local, remote)
            } else {
                (remote, local)
            };
            // Only complete addresses say two views are one connection.
            let mirror = complete && self.by_pair.contains_key(&(client, server));
            let mut conn = Connection {
                fd: h.fd,
                client,
                server,
                local_is_client,
                next: [CLIENT_ISN, SERVER_ISN],
                last_seen: ts,
                mirror,
                first: None,
                held: None,
            };
            if mirror {
                self.stats.mirrored += 1;
            } else {
                if complete {
                    self.by_pair.insert((client, server), key);
                } else if self.held < HOLD_CONNECTIONS
                    && self.held_order.len() < 4 * HOLD_CONNECTIONS
                {
                    self.held += 1;
                    self.held_order.push_back((ts, key));
                    conn.held = Some(Held {
                        since: ts,
                        bytes: 0,
                        segments: Vec::new(),
                    });
                }
                self.stats.connections += 1;
                Self::open(&mut conn, ts, out);
            }
            if h.fd >= 0 {
                self.by_fd.insert((h.tgid, h.fd), key);
            }
            self.conns.insert(key, conn);
        }
        let c = self.conns.get_mut(&key).expect("inserted above");
        c.last_seen = ts;
        if c.mirror {
            return;
        }
        if c.fd < 0 && h.fd >= 0 {
            c.fd = h.fd;
            self.by_fd.insert((h.tgid, h.fd), key);
        }
        let from_client = (h.direction == TLS_WRITE) == c.local_is_client;
        let (src, dst, i) = if from_client {
            (c.client, c.server, 0)
        } else {
            (c.server, c.client, 1)
        };
        let seq = c.next[i];
        let ack = c.next[1 - i];
        c.next[i] = seq.wrapping_add(h.len);
        self.stats.bytes += u64::from(h.len);
        self.stats.truncated_bytes += u64::from(h.len).saturating_sub(rec.data.len() as u64);
        let mut became_mirror = false;
        if from_client && c.first.is_none() && !rec.data.is_empty() {
            let f = first_hash(rec.data);
            c.first = Some(f);
            if c.held.is_some() {
                // The other end's complete view came first.
                became_mirror = self
                    .recent_first
                    .get(&f)
                    .is_some_and(|t| ts.saturating_sub(*t) <= HOLD);
                if !became_mirror && self.held_first.len() < 4 * HOLD_CONNECTIONS {
                    self.held_first.insert(f, key);
                }
            } else {
                if self.recent_first.len() >= 4096 {
                    let horizon = ts.saturating_sub(HOLD);
                    self.recent_first.retain(|_, t| *t >= horizon);
                    if self.recent_first.len() >= 4096 {
                        self.recent_first.clear();
                    }
                }
                self.recent_first.insert(f, ts);
                // A held view of the same exchange: drop it.
                if let Some(k) = self.held_first.remove(&f)
                    && let Some(other) = self.conns.get_mut(&k)
                    && other.first == Some(f)
                    && other.held.is_some()
                    && !other.mirror
                    && ts.saturating_sub(other.last_seen) <= HOLD
                {
                    other.mirror = true;
                    other.held = None;
                    self.held -= 1;
                    self.stats.mirrored += 1;
                    self.stats.connections -= 1;
                }
            }
        }
        let c = self.conns.get_mut(&key).expect("present");
        if became_mirror {
            c.mirror = true;
            c.held = None;
            self.held -= 1;
            self.stats.mirrored += 1;
            self.stats.connections -= 1;
            return;
        }
        let seg = SegmentHead {
            ts,
            src,
            dst,
            seq,
            ack,
            flags: TcpFlags::ACK | TcpFlags::PSH,
            window: 65535,
            len: h.len,
        };
        Self::emit(c, seg, rec.data, out);
        if c.held.as_ref().is_some_and(|hd| hd.bytes > HOLD_BYTES) {
            Self::release(c, out);
            self.held -= 1;
        }
    }

    fn emit(
        c: &mut Connection,
        seg: SegmentHead,
        data: &[u8],
        out: &mut impl FnMut(SegmentHead, &[u8]),
    ) {
        match c.held.as_mut() {
            Some(hd) => {
                hd.bytes += data.len();
                hd.segments.push((seg, data.to_vec()));
            }
            None => out(seg, data),
        }
    }

    fn release(c: &mut Connection, out: &mut impl FnMut(SegmentHead, &[u8])) {
        if let Some(hd) = c.held.take() {
            for (seg, data) in hd.segments {
                out(seg, &data);
            }
        }
    }

    /// Lets held views go once no other end showed up in time.
    pub fn release_due(&mut self, now: Micros, out: &mut impl FnMut(SegmentHead, &[u8])) {
        while let Some(&(since, key)) = self.held_order.front() {
            if now.saturating_sub(since) < HOLD {
                break;
            }
            self.held_order.pop_front();
            if let Some(c) = self.conns.get_mut(&key)
                && c.held.as_ref().is_some_and(|hd| hd.since == since)
            {
                if let Some(f) = c.first
                    && self.held_first.get(&f) == Some(&key)
                {
                    self.held_first.remove(&f);
                }
                Self::release(c, out);
                self.held -= 1;
            }
        }
        if self.held == 0 {
            self.held_order.clear();
            self.held_first.clear();
        }
    }

    /// The handshake of a new synthetic stream.
    fn open(c: &mut Connection, ts: Micros, out: &mut impl FnMut(SegmentHead, &[u8])) {
        let syn = SegmentHead {
            ts,
            src: c.client,
            dst: c.server,
            seq: CLIENT_ISN - 1,
            ack: 0,
            flags: TcpFlags::SYN,
            window: 65535,
            len: 0,
        };
        Self::emit(c, syn, &[], out);
        let syn_ack = SegmentHead {
            src: c.server,
            dst: c.client,
            seq: SERVER_ISN - 1,
            ack: CLIENT_ISN,
            flags: TcpFlags::SYN | TcpFlags::ACK,
            ..syn
        };
        Self::emit(c, syn_ack, &[], out);
    }

    /// A process accepted or connected a socket on descriptor `fd`: whatever connection
    /// used that descriptor before has ended (servers reuse both descriptors and
    /// `SSL` objects from one connection to the next).
    pub fn socket_opened(
        &mut self,
        pid: u32,
        fd: i32,
        ts: Micros,
        out: &mut impl FnMut(SegmentHead, &[u8]),
    ) {
        if let Some(key) = self.by_fd.get(&(pid, fd)).copied() {
            self.remove(key, ts, out);
        }
    }

    fn remove(&mut self, key: Key, ts: Micros, out: &mut impl FnMut(SegmentHead, &[u8])) {
        let Some(mut c) = self.conns.remove(&key) else {
            return;
        };
        if c.fd >= 0 && self.by_fd.get(&(key.0, c.fd)) == Some(&key) {
            self.by_fd.remove(&(key.0, c.fd));
        }
        if !c.mirror {
            if c.held.is_some() {
                self.held -= 1;
                Self::release(&mut c, out);
            }
            if self.by_pair.get(&(c.client, c.server)) == Some(&key) {
                self.by_pair.remove(&(c.client, c.server));
            }
            Self::close(&c, ts, out);
        }
    }

    /// Ends connections idle for `idle` (their process likely freed them).
    pub fn expire(&mut self, now: Micros, idle: Micros, out: &mut impl FnMut(SegmentHead, &[u8])) {
        let idle_keys: Vec<Key> = self
            .conns
            .iter()
            .filter(|(_, c)| now.saturating_sub(c.last_seen) >= idle)
            .map(|(k, _)| *k)
            .collect();
        for k in idle_keys {
            self.remove(k, now, out);
        }
        let horizon = now.saturating_sub(HOLD);
        self.recent_first.retain(|_, t| *t >= horizon);
    }

    /// The table is full: the least recently active eighth goes at once, so a flood of
    /// new connections costs a sort per eighth of the table, not a scan per connection.
    fn evict_oldest(&mut self, ts: Micros, out: &mut impl FnMut(SegmentHead, &[u8])) {
        let mut by_age: Vec<(Micros, Key)> =
            self.conns.iter().map(|(k, c)| (c.last_seen, *k)).collect();
        let n = (self.max / 8).max(1).min(by_age.len());
        if n == 0 {
            return;
        }
        by_age.select_nth_unstable(n - 1);
        for (_, key) in by_age.into_iter().take(n) {
            self.stats.evicted += 1;
            self.remove(key, ts, out);
        }
    }

    fn close(c: &Connection, ts: Micros, out: &mut impl FnMut(SegmentHead, &[u8])) {
        for (i, (src, dst)) in [(c.client, c.server), (c.server, c.client)]
            .into_iter()
            .enumerate()
        {
            out(
                SegmentHead {
                    ts,
                    src,
                    dst,
                    seq: c.next[i],
                    ack: c.next[1 - i],
                    flags: TcpFlags::FIN | TcpFlags::ACK,
                    window: 65535,
                    len: 0,
                },
                &[],
            );
        }
    }
}

/// What is known of a process's socket from the moment it was accepted or connected:
/// the addresses looked up then (a short exchange may be over before its plaintext is
/// read), or at least the peer's address the syscall gave. Bounded; oldest go first.
pub struct SocketCache {
    map: HashMap<(u32, i32), (Option<SocketAddr>, SocketAddr)>,
    order: std::collections::VecDeque<(u32, i32)>,
    max: usize,
}

impl SocketCache {
    pub fn new(max: usize) -> Self {
        SocketCache {
            map: HashMap::new(),
            order: std::collections::VecDeque::new(),
            max: max.max(1),
        }
    }

    /// Records a socket: its (local, remote) addresses when known, else the peer's.
    pub fn insert(&mut self, pid: u32, fd: i32, local: Option<SocketAddr>, remote: SocketAddr) {
        while self.map.len() >= self.max {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.map.remove(&old);
        }
        if self.map.insert((pid, fd), (local, remote)).is_none() {
            self.order.push_back((pid, fd));
        }
    }

    /// Both addresses, when they were looked up in time.
    pub fn full(&self, pid: u32, fd: i32) -> Option<(SocketAddr, SocketAddr)> {
        match self.map.get(&(pid, fd)) {
            Some((Some(l), r)) => Some((*l, *r)),
            _ => None,
        }
    }

    /// The peer's address alone (the local one shown unspecified).
    pub fn peer(&self, pid: u32, fd: i32) -> Option<(SocketAddr, SocketAddr)> {
        self.map.get(&(pid, fd)).map(|(l, r)| {
            (
                l.unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0)),
                *r,
            )
        })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Pipeline, PipelineConfig};
    use tapline_ebpf_common::{KIND_TLS, TlsRecord};

    fn view(tgid: u32, ssl: u64, fd: i32, direction: u8, data: &[u8], len: u32) -> TlsView<'_> {
        TlsView {
            header: TlsRecord {
                kind: KIND_TLS,
                direction,
                fd,
                tgid,
                ssl,
                len,
                captured: data.len() as u32,
                ..TlsRecord::default()
            },
            data,
        }
    }

    /// Runs records through the streams and the real pipeline; returns (method, url,
    /// status, client address) per transaction.
    fn run(records: &[TlsView<'_>]) -> (Vec<(String, String, u16, SocketAddr)>, TlsStats) {
        let mut streams = TlsStreams::new(8);
        let mut pipeline = Pipeline::new(PipelineConfig::default());
        let mut txs = Vec::new();
        let local: SocketAddr = "10.1.0.2:443".parse().unwrap();
        let remote: SocketAddr = "10.1.0.9:51000".parse().unwrap();
        let mut resolve = |_, fd| (fd == 7).then_some((local, remote));
        let mut sink = |meta: &crate::reassembly::FlowMeta, tx: crate::http::Transaction| {
            txs.push((
                String::from_utf8_lossy(tx.method().unwrap_or_default()).into_owned(),
                String::from_utf8_lossy(tx.uri().unwrap_or_default()).into_owned(),
                tx.status().unwrap_or(0),
                SocketAddr::new(meta.client.0, meta.client.1),
            ));
        };
        for (i, r) in records.iter().enumerate() {
            streams.record(r, i as i64 * 1000, &mut resolve, &mut |h, payload| {
                let seg = h.segment(payload);
                pipeline.segment(&seg, &mut sink);
            });
        }
        streams.release_due(i64::MAX, &mut |h, payload| {
            pipeline.segment(&h.segment(payload), &mut sink)
        });
        pipeline.finish(&mut sink);
        (txs, streams.stats)
    }

    #[test]
    fn a_server_process_reads_requests_and_writes_responses() {
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let (txs, stats) = run(&[
            view(
                10,
                0xa0,
                7,
                TLS_READ,
                b"GET /v1/a HTTP/1.1\r\nHost: x\r\n\r\n",
                31,
            ),
            view(10, 0xa0, 7, TLS_WRITE, resp, resp.len() as u32),
            view(
                10,
                0xa0,
                -1,
                TLS_READ,
                b"GET /v1/b HTTP/1.1\r\nHost: x\r\n\r\n",
                31,
            ),
            view(10, 0xa0, 7, TLS_WRITE, resp, resp.len() as u32),
        ]);
        let remote: SocketAddr = "10.1.0.9:51000".parse().unwrap();
        assert_eq!(
            txs,
            vec![
                ("GET".into(), "/v1/a".into(), 200, remote),
                ("GET".into(), "/v1/b".into(), 200, remote),
            ]
        );
        assert_eq!((stats.connections, stats.unresolved), (1, 0));
    }

    #[test]
    fn a_client_process_writes_first_and_truncation_leaves_a_hole() {
        let body = vec![b'x'; 100];
        let mut resp = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n".to_vec();
        let head_len = resp.len();
        resp.extend_from_slice(&body);
        let (txs, stats) = run(&[
            view(
                11,
                0xb0,
                7,
                TLS_WRITE,
                b"GET /c HTTP/1.1\r\nHost: x\r\n\r\n",
                28,
            ),
            // Only the head of the response was kept.
            view(11, 0xb0, 7, TLS_READ, &resp[..head_len], resp.len() as u32),
            view(
                11,
                0xb0,
                7,
                TLS_WRITE,
                b"GET /d HTTP/1.1\r\nHost: x\r\n\r\n",
                28,
            ),
            view(11, 0xb0, 7, TLS_READ, &resp, resp.len() as u32),
        ]);
        let local: SocketAddr = "10.1.0.2:443".parse().unwrap();
        assert_eq!(txs.len(), 2, "{txs:?}");
        assert_eq!(txs[1], ("GET".into(), "/d".into(), 200, local));
        assert_eq!(stats.truncated_bytes, 100);
    }

    #[test]
    fn a_connection_seen_from_both_ends_is_logged_once() {
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let req = b"GET /both HTTP/1.1\r\nHost: x\r\n\r\n";
        // The server (pid 10) resolves local 10.1.0.2:443; the client (pid 20) sees the
        // same pair from the other side.
        let mut streams = TlsStreams::new(8);
        let server: SocketAddr = "10.1.0.2:443".parse().unwrap();
        let client: SocketAddr = "10.1.0.9:51000".parse().unwrap();
        let mut resolve = |pid, _| {
            Some(if pid == 10 {
                (server, client)
            } else {
                (client, server)
            })
        };
        let mut segs = Vec::new();
        for r in [
            view(20, 0x1, 3, TLS_WRITE, req, req.len() as u32),
            view(10, 0x2, 7, TLS_READ, req, req.len() as u32),
            view(10, 0x2, 7, TLS_WRITE, resp, resp.len() as u32),
            view(20, 0x1, 3, TLS_READ, resp, resp.len() as u32),
        ] {
            streams.record(&r, 0, &mut resolve, &mut |h, d| segs.push((h, d.len())));
        }
        assert_eq!(streams.stats.connections, 1);
        assert_eq!(streams.stats.mirrored, 1);
        // SYN, SYN-ACK, the request and the response: once each.
        assert_eq!(segs.len(), 4, "{segs:?}");
        assert_eq!(segs[2].0.src, client);
        assert_eq!(segs[3].0.src, server);
    }

    #[test]
    fn a_view_with_incomplete_addresses_waits_for_the_other_end() {
        let req = b"GET /held HTTP/1.1\r\nHost: x\r\n\r\n";
        let server: SocketAddr = "10.1.0.2:443".parse().unwrap();
        let client: SocketAddr = "10.1.0.9:51000".parse().unwrap();
        let none: SocketAddr = "0.0.0.0:0".parse().unwrap();
        // The client (pid 20) exited before its socket was looked up: only the peer is
        // known. The server (pid 10) resolves fully a moment later.
        let mut resolve = |pid, _| {
            Some(if pid == 10 {
                (server, client)
            } else {
                (none, server)
            })
        };
        let mut streams = TlsStreams::new(8);
        let mut segs = Vec::new();
        streams.record(
            &view(20, 0x1, 3, TLS_WRITE, req, req.len() as u32),
            0,
            &mut resolve,
            &mut |h, _| segs.push(h),
        );
        assert!(segs.is_empty(), "held");
        streams.record(
            &view(10, 0x2, 7, TLS_READ, req, req.len() as u32),
            1_000,
            &mut resolve,
            &mut |h, _| segs.push(h),
        );
        streams.release_due(10_000_000, &mut |h, _| segs.push(h));
        assert_eq!(streams.stats.mirrored, 1);
        assert_eq!(streams.stats.connections, 1);
        assert!(
            segs.iter().all(|h| h.src == client || h.src == server),
            "{segs:?}"
        );
        // Alone, a held view is let go after the hold.
        let mut streams = TlsStreams::new(8);
        let mut segs = Vec::new();
        streams.record(
            &view(20, 0x1, 3, TLS_WRITE, req, req.len() as u32),
            0,
            &mut resolve,
            &mut |h, _| segs.push(h),
        );
        streams.release_due(HOLD - 1, &mut |h, _| segs.push(h));
        assert!(segs.is_empty());
        streams.release_due(HOLD, &mut |h, _| segs.push(h));
        assert_eq!(segs.len(), 3);
        assert_eq!(segs[2].dst, server);
    }

    #[test]
    fn the_socket_cache_is_bounded_and_prefers_full_lookups() {
        let mut c = SocketCache::new(2);
        let a: SocketAddr = "10.0.0.1:443".parse().unwrap();
        let b: SocketAddr = "10.0.0.2:5000".parse().unwrap();
        c.insert(1, 3, Some(a), b);
        c.insert(1, 4, None, b);
        assert_eq!(c.full(1, 3), Some((a, b)));
        assert_eq!(c.full(1, 4), None);
        assert_eq!(c.peer(1, 4).unwrap().1, b);
        c.insert(1, 5, None, b);
        assert_eq!(c.len(), 2);
        assert_eq!(c.peer(1, 3), None);
    }

    #[test]
    fn reused_ssl_pointers_on_new_sockets_are_new_connections_and_the_table_is_bounded() {
        let mut streams = TlsStreams::new(2);
        let mut resolve = |_, _| None;
        let mut segs = Vec::new();
        for i in 0..5u64 {
            let req = b"GET / HTTP/1.1\r\n\r\n";
            streams.record(
                &view(1, 0x10 * i, 3, TLS_WRITE, req, req.len() as u32),
                0,
                &mut resolve,
                &mut |h, _| segs.push(h),
            );
        }
        assert_eq!(streams.len(), 2);
        assert_eq!(streams.stats.evicted, 3);
        assert_eq!(streams.stats.unresolved, 5);
        let req = b"GET / HTTP/1.1\r\n\r\n";
        streams.record(
            &view(1, 0x40, 4, TLS_WRITE, req, req.len() as u32),
            1,
            &mut resolve,
            &mut |h, _| segs.push(h),
        );
        assert_eq!(streams.stats.connections, 6);
        streams.expire(10_000_000_000, 1_000_000, &mut |h, _| segs.push(h));
        assert!(streams.is_empty());
    }
}
