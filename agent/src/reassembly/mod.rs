//! TCP reassembly: decoded segments in, ordered byte streams per connection out.
//!
//! [`FlowTable`] tracks connections (bounded, with idle timeouts and eviction), decides
//! which end is the client, and hands each direction's in-order bytes and gaps to a
//! [`StreamHandler`] (the HTTP stage). Flows picked up midstream and one-sided captures
//! are handled; see `docs/reassembly.md` for the overlap and gap policy.

pub mod stream;

use std::net::IpAddr;

use foldhash::HashMap;

use crate::decode::{Micros, TcpSegment, VlanIds};
pub use stream::{Chunk, Stream, StreamLimits, StreamStats};

/// Which end of the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    Client = 0,
    Server = 1,
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Client => Side::Server,
            Side::Server => Side::Client,
        }
    }
}

/// What a connection's bytes are handed to.
pub trait StreamHandler {
    type Output;
    fn data(&mut self, side: Side, data: &[u8], ts: Micros, out: &mut Vec<Self::Output>);
    fn gap(&mut self, side: Side, len: u64, ts: Micros, out: &mut Vec<Self::Output>);
    fn close(&mut self, side: Side, ts: Micros, out: &mut Vec<Self::Output>);
    /// The connection ended; everything still open is emitted.
    fn finish(&mut self, ts: Micros, out: &mut Vec<Self::Output>);
    /// Whether the handler wants no more bytes (e.g. the connection became a tunnel).
    fn is_done(&self) -> bool {
        false
    }
    /// Totals of the handlers' own counters over every connection that ended.
    type Totals: Default;
    /// The connection is leaving the table: its counters join the totals.
    fn retire(&self, totals: &mut Self::Totals);
}

type Endpoint = (IpAddr, u16);

/// A connection's identity, independent of direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowKey {
    vlan: VlanIds,
    lo: Endpoint,
    hi: Endpoint,
}

/// Hashed as a few whole words rather than field by field: the table is probed on every
/// packet.
impl std::hash::Hash for FlowKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        let word = |(ip, port): &Endpoint| match ip {
            IpAddr::V4(a) => u128::from(u32::from(*a)) << 16 | u128::from(*port),
            IpAddr::V6(a) => u128::from(*a) ^ u128::from(*port) << 112 ^ 1,
        };
        h.write_u128(word(&self.lo));
        h.write_u128(word(&self.hi));
        if !self.vlan.as_slice().is_empty() {
            self.vlan.hash(h);
        }
    }
}

impl FlowKey {
    fn of(seg: &TcpSegment<'_>, use_vlan: bool) -> FlowKey {
        let a = (seg.src, seg.sport);
        let b = (seg.dst, seg.dport);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        FlowKey {
            vlan: if use_vlan {
                seg.vlan
            } else {
                VlanIds::default()
            },
            lo,
            hi,
        }
    }
}

/// What the log needs to know about a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowMeta {
    /// Stable id of the connection, below 2^53 so JSON readers keep it exact.
    pub flow_id: u64,
    pub client: Endpoint,
    pub server: Endpoint,
    pub vlan: VlanIds,
    pub first_ts: Micros,
    /// Picked up without seeing the handshake.
    pub midstream: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct FlowLimits {
    pub max_flows: usize,
    /// A connection with no packet for this long is ended.
    pub idle_timeout: Micros,
    /// A closed connection is remembered this long to absorb retransmissions.
    pub closed_timeout: Micros,
    pub stream: StreamLimits,
    /// Tell apart connections that differ only by VLAN id (overlapping address spaces).
    pub use_vlan: bool,
    /// Track connections whose handshake was not seen.
    pub midstream: bool,
}

impl Default for FlowLimits {
    fn default() -> Self {
        FlowLimits {
            max_flows: 65_536,
            idle_timeout: 600_000_000,
            closed_timeout: 30_000_000,
            stream: StreamLimits::default(),
            use_vlan: true,
            midstream: true,
        }
    }
}

/// Counters of the flow table.
#[derive(Debug, Clone, Copy, Default)]
pub struct FlowStats {
    pub flows: u64,
    pub midstream_flows: u64,
    pub evicted: u64,
    pub timed_out: u64,
    pub ignored_midstream: u64,
    pub streams: StreamStats,
}

impl StreamStats {
    fn add(&mut self, o: &StreamStats) {
        self.bytes += o.bytes;
        self.segments += o.segments;
        self.retransmitted_bytes += o.retransmitted_bytes;
        self.overlap_mismatches += o.overlap_mismatches;
        self.gaps += o.gaps;
        self.gap_bytes += o.gap_bytes;
        self.out_of_order += o.out_of_order;
    }
}

/// Data of one side held back until the other side's bytes it acknowledges have been
/// delivered. Captures (span ports, two mirrored directions) often carry a response
/// before the request it answers; the ACK number tells the true order.
struct Held {
    side: Side,
    /// The other side's sequence number that must be reached before release.
    wait_for: u32,
    since: Micros,
    bytes: usize,
    items: std::collections::VecDeque<HeldItem>,
}

enum HeldItem {
    Data(Vec<u8>),
    Gap(u64),
    Close,
}

/// Most bytes held per connection, and for how long (packet time), before they are
/// delivered anyway (the acknowledged bytes were lost from the capture).
const MAX_HELD_BYTES: usize = 256 << 10;
const MAX_HOLD: Micros = 1_000_000;
/// An ACK further ahead than this is not trusted to order anything.
const MAX_ACK_LEAD: u32 = 1 << 24;

/// Routes a side's chunks to the handler, or into the hold when that side is held.
struct Router<'a, A: StreamHandler> {
    handler: &'a mut A,
    held: &'a mut Option<Held>,
    ts: Micros,
    out: &'a mut Vec<A::Output>,
}

impl<A: StreamHandler> Router<'_, A> {
    fn chunk(&mut self, side: Side, c: Chunk<'_>) {
        if let Some(h) = self.held.as_mut()
            && h.side == side
        {
            match c {
                Chunk::Data(d) => {
                    h.bytes += d.len();
                    h.items.push_back(HeldItem::Data(d.to_vec()));
                }
                Chunk::Gap(n) => h.items.push_back(HeldItem::Gap(n)),
            }
            return;
        }
        match c {
            Chunk::Data(d) => self.handler.data(side, d, self.ts, self.out),
            Chunk::Gap(n) => self.handler.gap(side, n, self.ts, self.out),
        }
    }

    fn close(&mut self, side: Side) {
        if let Some(h) = self.held.as_mut()
            && h.side == side
        {
            h.items.push_back(HeldItem::Close);
        } else {
            self.handler.close(side, self.ts, self.out);
        }
    }

    /// Delivers everything held, in order.
    fn release(&mut self) {
        let Some(h) = self.held.take() else {
            return;
        };
        for item in h.items {
            match item {
                HeldItem::Data(d) => self.handler.data(h.side, &d, self.ts, self.out),
                HeldItem::Gap(n) => self.handler.gap(h.side, n, self.ts, self.out),
                HeldItem::Close => self.handler.close(h.side, self.ts, self.out),
            }
        }
    }
}

/// `side` delivered more: held data of the other side that waited for it goes on.
fn flow_delivered<A: StreamHandler>(r: &mut Router<'_, A>, streams: &[Stream; 2], side: Side) {
    if let Some(h) = r.held.as_ref()
        && h.side != side
        && !seq_ahead(h.wait_for, streams[side as usize].next_seq())
    {
        r.release();
    }
}

/// Whether `a` is after `b` in sequence space, by a plausible amount.
fn seq_ahead(a: u32, b: u32) -> bool {
    let d = a.wrapping_sub(b);
    d != 0 && d < MAX_ACK_LEAD
}

struct Flow<A> {
    meta: FlowMeta,
    streams: [Stream; 2],
    handler: A,
    held: Option<Held>,
    last_ts: Micros,
    closed: bool,
    rst: bool,
    /// Data has been handed on; sides can no longer be swapped.
    delivered: bool,
    syn_seen: bool,
}

const HTTP_PORTS: &[u16] = &[
    80, 8080, 8000, 8008, 8888, 3128, 443, 8443, 5000, 3000, 9000,
];

fn looks_like_response(p: &[u8]) -> bool {
    p.len() >= 5 && p[..5].eq_ignore_ascii_case(b"HTTP/")
}

/// Guesses the server end of a connection picked up midstream.
fn guess_server(seg: &TcpSegment<'_>) -> Side {
    if !seg.payload.is_empty() {
        if looks_like_response(seg.payload) {
            return Side::Client; // the sender is the server, so the receiver is client
        }
        return Side::Server;
    }
    let s_known = HTTP_PORTS.contains(&seg.sport);
    let d_known = HTTP_PORTS.contains(&seg.dport);
    if s_known && !d_known {
        Side::Client
    } else {
        Side::Server
    }
}

pub struct FlowTable<A: StreamHandler> {
    limits: FlowLimits,
    flows: HashMap<FlowKey, Flow<A>>,
    last_sweep: Micros,
    pub stats: FlowStats,
    /// The handlers' counters, summed as connections end.
    pub handler_totals: A::Totals,
    /// Outputs of the segment being handled, kept to reuse its allocation.
    scratch: Vec<A::Output>,
}

impl<A: StreamHandler> FlowTable<A> {
    pub fn new(limits: FlowLimits) -> Self {
        FlowTable {
            limits,
            flows: HashMap::default(),
            last_sweep: i64::MIN,
            stats: FlowStats::default(),
            handler_totals: A::Totals::default(),
            scratch: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    fn flow_id(key: &FlowKey, ts: Micros) -> u64 {
        use std::hash::BuildHasher;
        // Field by field, as the key was hashed before the table's compact hash: the ids
        // stay what earlier versions logged.
        let h = foldhash::fast::FixedState::with_seed(0x0074_6170_6c69_6e65)
            .hash_one(((key.vlan, key.lo, key.hi), ts));
        h & ((1 << 51) - 1)
    }

    /// Takes one segment. Finished outputs are appended to `out` with their flow.
    pub fn segment(
        &mut self,
        seg: &TcpSegment<'_>,
        make: impl FnOnce() -> A,
        out: &mut Vec<(FlowMeta, A::Output)>,
    ) {
        let ts = seg.ts;
        if ts >= self.last_sweep.saturating_add(1_000_000) {
            self.last_sweep = ts;
            self.expire(ts, out);
        }
        let key = FlowKey::of(seg, self.limits.use_vlan);
        let syn_only = seg.flags.syn() && !seg.flags.ack();
        // A new SYN on a finished connection (port reuse) starts a new one.
        if syn_only
            && let Some(f) = self.flows.get(&key)
            && (f.closed || f.streams[Side::Client as usize].is_started() && f.delivered)
        {
            let f = self.flows.remove(&key).expect("present");
            self.end_flow(f, ts, out);
        }
        if !self.flows.contains_key(&key) {
            if !seg.flags.syn() && !self.limits.midstream {
                self.stats.ignored_midstream += 1;
                return;
            }
            if seg.flags.rst() || (seg.payload.is_empty() && seg.flags.fin()) {
                return;
            }
            if self.flows.len() >= self.limits.max_flows {
                self.evict(out);
            }
            let (client, server) = if seg.flags.syn() {
                if seg.flags.ack() {
                    ((seg.dst, seg.dport), (seg.src, seg.sport))
                } else {
                    ((seg.src, seg.sport), (seg.dst, seg.dport))
                }
            } else {
                match guess_server(seg) {
                    Side::Server => ((seg.src, seg.sport), (seg.dst, seg.dport)),
                    Side::Client => ((seg.dst, seg.dport), (seg.src, seg.sport)),
                }
            };
            let midstream = !seg.flags.syn();
            self.stats.flows += 1;
            if midstream {
                self.stats.midstream_flows += 1;
            }
            self.flows.insert(
                key,
                Flow {
                    meta: FlowMeta {
                        flow_id: Self::flow_id(&key, ts),
                        client,
                        server,
                        vlan: seg.vlan,
                        first_ts: ts,
                        midstream,
                    },
                    streams: [Stream::default(), Stream::default()],
                    handler: make(),
                    held: None,
                    last_ts: ts,
                    closed: false,
                    rst: false,
                    delivered: false,
                    syn_seen: seg.flags.syn(),
                },
            );
        }
        let limits = self.limits.stream;
        let flow = self.flows.get_mut(&key).expect("inserted above");
        flow.last_ts = ts;
        if flow.closed {
            return;
        }
        let mut side = if (seg.src, seg.sport) == flow.meta.client {
            Side::Client
        } else {
            Side::Server
        };
        // Midstream pickup guessed wrong: the "client" sends a status line first.
        if !flow.delivered
            && !flow.syn_seen
            && side == Side::Client
            && looks_like_response(seg.payload)
        {
            std::mem::swap(&mut flow.meta.client, &mut flow.meta.server);
            flow.streams.swap(0, 1);
            side = Side::Server;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        Self::apply(flow, side, seg, &limits, &mut scratch);
        let meta = flow.meta;
        out.extend(scratch.drain(..).map(|o| (meta, o)));
        self.scratch = scratch;
    }

    fn apply(
        flow: &mut Flow<A>,
        side: Side,
        seg: &TcpSegment<'_>,
        limits: &StreamLimits,
        out: &mut Vec<A::Output>,
    ) {
        let ts = seg.ts;
        let s = side as usize;
        let o = side.other() as usize;
        let Flow {
            streams,
            handler,
            held,
            ..
        } = flow;
        let mut r = Router {
            handler,
            held,
            ts,
            out,
        };
        if r.held
            .as_ref()
            .is_some_and(|h| ts - h.since > MAX_HOLD || h.bytes > MAX_HELD_BYTES)
        {
            r.release();
        }
        let mut seq = seg.seq;
        if seg.flags.syn() {
            seq = seq.wrapping_add(1);
            streams[s].restart(seq);
            if seg.flags.ack() {
                // The SYN-ACK names the client's ISN that the server accepted.
                streams[o].restart(seg.ack);
            }
        }
        if !seg.payload.is_empty() && !r.handler.is_done() {
            // This side's data acknowledges bytes of the other side not delivered yet:
            // those come first, so this waits for them.
            if r.held.is_none()
                && seg.flags.ack()
                && streams[o].is_started()
                && seq_ahead(seg.ack, streams[o].next_seq())
            {
                *r.held = Some(Held {
                    side,
                    wait_for: seg.ack,
                    since: ts,
                    bytes: 0,
                    items: Default::default(),
                });
            }
            streams[s].segment(seq, seg.payload, limits, &mut |c| r.chunk(side, c));
            flow_delivered(&mut r, streams, side);
        }
        if seg.flags.ack() && streams[o].pending_bytes() > 0 {
            let side_o = side.other();
            streams[o].acked(seg.ack, &mut |c| r.chunk(side_o, c));
            flow_delivered(&mut r, streams, side_o);
        }
        if seg.flags.fin() {
            streams[s].start(seq);
            streams[s].fin(seq.wrapping_add(seg.payload.len() as u32));
            if streams[s].is_finished() {
                r.close(side);
            }
        }
        if seg.flags.rst() {
            // Not final: an RST the receiver drops (bad checksum, out of window) is a
            // known evasion, so data after it is still read. The flow now expires on
            // the short closed timeout.
            r.release();
            for side in [Side::Client, Side::Server] {
                streams[side as usize].flush(&mut |c| r.chunk(side, c));
            }
            flow.rst = true;
        } else if streams[0].is_finished() && streams[1].is_finished() {
            r.release();
            flow.closed = true;
            flow.handler.finish(ts, out);
        }
        if !seg.payload.is_empty() {
            flow.delivered = true;
        }
    }

    fn flush(
        streams: &mut [Stream; 2],
        handler: &mut A,
        held: &mut Option<Held>,
        ts: Micros,
        out: &mut Vec<A::Output>,
    ) {
        let mut r = Router {
            handler,
            held,
            ts,
            out,
        };
        r.release();
        for side in [Side::Client, Side::Server] {
            streams[side as usize].flush(&mut |c| r.chunk(side, c));
        }
    }

    fn end_flow(&mut self, mut f: Flow<A>, ts: Micros, out: &mut Vec<(FlowMeta, A::Output)>) {
        let mut scratch = Vec::new();
        if !f.closed {
            Self::flush(
                &mut f.streams,
                &mut f.handler,
                &mut f.held,
                ts,
                &mut scratch,
            );
            f.handler.close(Side::Client, ts, &mut scratch);
            f.handler.close(Side::Server, ts, &mut scratch);
            f.handler.finish(ts, &mut scratch);
        }
        for s in &f.streams {
            self.stats.streams.add(&s.stats);
        }
        f.handler.retire(&mut self.handler_totals);
        out.extend(scratch.into_iter().map(|o| (f.meta, o)));
    }

    /// Ends connections idle past their timeout (packet time).
    pub fn expire(&mut self, now: Micros, out: &mut Vec<(FlowMeta, A::Output)>) {
        let (idle, closed) = (self.limits.idle_timeout, self.limits.closed_timeout);
        let expired: Vec<FlowKey> = self
            .flows
            .iter()
            .filter(|(_, f)| now - f.last_ts > if f.closed || f.rst { closed } else { idle })
            .map(|(k, _)| *k)
            .collect();
        for k in expired {
            if let Some(f) = self.flows.remove(&k) {
                if !f.closed {
                    self.stats.timed_out += 1;
                }
                self.end_flow(f, now, out);
            }
        }
    }

    /// The table is full: the least recently active sixteenth of it is ended, so the
    /// cost of eviction stays constant per new flow.
    fn evict(&mut self, out: &mut Vec<(FlowMeta, A::Output)>) {
        let n = (self.flows.len() / 16).max(1);
        let mut oldest: Vec<(Micros, FlowKey)> =
            self.flows.iter().map(|(k, f)| (f.last_ts, *k)).collect();
        oldest.select_nth_unstable_by_key(n - 1, |(t, _)| *t);
        for (_, k) in oldest.into_iter().take(n) {
            if let Some(f) = self.flows.remove(&k) {
                self.stats.evicted += 1;
                let ts = f.last_ts;
                self.end_flow(f, ts, out);
            }
        }
    }

    /// End of input: every connection is ended and its outputs emitted.
    pub fn finish(&mut self, out: &mut Vec<(FlowMeta, A::Output)>) {
        let mut all: Vec<(FlowKey, Flow<A>)> = self.flows.drain().collect();
        all.sort_by_key(|(_, f)| f.meta.first_ts);
        for (_, f) in all {
            let ts = f.last_ts;
            self.end_flow(f, ts, out);
        }
    }
}
