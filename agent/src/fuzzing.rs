//! Fuzz target bodies, one per parser of network input. The cargo-fuzz targets in
//! `fuzz/` call these, and `tests/fuzz_seeds.rs` replays every seed through them in
//! `cargo test`, so a crash found once stays fixed.
//!
//! Each target checks properties, not only the absence of panics: bounds hold, and the
//! HTTP parser's result does not depend on how the bytes were cut.

use std::net::{IpAddr, Ipv4Addr};

use crate::decode::defrag::{DefragLimits, Defragmenter};
use crate::decode::{Decoded, Decoder, TcpFlags, TcpSegment, VlanIds};
use crate::http::head::Known;
use crate::http::{HttpConfig, HttpConnection, Side, Transaction};
use crate::pipeline::{Pipeline, PipelineConfig};
use crate::reassembly::{FlowLimits, FlowTable, StreamLimits};

/// Link types the decoder knows, picked by the first input byte.
const LINKTYPES: &[u32] = &[1, 0, 101, 113, 276, 228, 229, 12, 14, 104, 9, 108];

/// One frame of any link type through the decoder and the defragmenter.
pub fn decode(data: &[u8]) {
    let Some((&pick, frame)) = data.split_first() else {
        return;
    };
    let linktype = LINKTYPES[usize::from(pick) % LINKTYPES.len()];
    let decoder = Decoder {
        validate_checksums: pick & 0x80 != 0,
    };
    let mut defrag = Defragmenter::new(DefragLimits {
        max_datagrams: 4,
        timeout: 1_000_000,
    });
    // The same frame twice: the second copy completes or duplicates fragments.
    for ts in [0, 1] {
        match decoder.decode(linktype, ts, frame) {
            Ok(Decoded::Tcp(seg)) => assert!(seg.payload.len() <= frame.len()),
            Ok(Decoded::Fragment(frag)) => {
                if let Some(datagram) = defrag.push(ts, &frag) {
                    assert!(datagram.len() <= 65_535 + 40);
                    let k = frag.key;
                    let _ =
                        decoder.decode_ip_payload(ts, k.vlan, k.protocol, k.src, k.dst, &datagram);
                }
            }
            Ok(Decoded::NotTcp) | Err(_) => {}
        }
    }
    defrag.finish();
}

/// A whole capture file (pcap or pcapng) through the offline pipeline; the block reader
/// must see the frames `pcap-parser` sees.
pub fn capture_file(data: &[u8]) {
    use crate::capture::file::{read_frames, read_frames_parsed};
    let mut pipeline = Pipeline::new(PipelineConfig::default());
    let mut txs = 0u64;
    let mut seen = Vec::new();
    let blocks = read_frames(
        data,
        |f| {
            seen.push((f.linktype, f.ts, f.data.len(), f.wire_len));
            pipeline.frame(f.linktype, f.ts, f.data, &mut |_, _| txs += 1);
        },
        |_| {},
    );
    pipeline.finish(&mut |_, _| txs += 1);
    assert_eq!(pipeline.stats().transactions, txs);
    let mut parsed = Vec::new();
    let reference = read_frames_parsed(
        data,
        |f| parsed.push((f.linktype, f.ts, f.data.len(), f.wire_len)),
        |_| {},
    );
    if let Ok(r) = &reference {
        let Ok(a) = &blocks else {
            panic!("pcap-parser reads the file, the block reader fails: {blocks:?}");
        };
        assert_eq!(seen, parsed);
        assert_eq!((a.frames, a.truncated), (r.frames, r.truncated));
    }
}

/// One operation on a connection, read from fuzz input.
#[derive(Debug, Clone)]
enum Op<'a> {
    Data(Side, &'a [u8]),
    Gap(Side, u64),
    Close(Side),
}

/// Reads `[op][len][bytes]` records: op bit 0 picks the side, bits 1-2 the kind
/// (data, gap, close).
fn ops(mut data: &[u8]) -> Vec<Op<'_>> {
    let mut out = Vec::new();
    while let [op, len, rest @ ..] = data {
        let side = if op & 1 == 0 {
            Side::Client
        } else {
            Side::Server
        };
        let n = usize::from(*len).min(rest.len());
        match (op >> 1) & 3 {
            1 => out.push(Op::Gap(side, u64::from(*len) + 1)),
            2 => out.push(Op::Close(side)),
            _ => {
                let n = if op >> 3 == 0x1f { rest.len() } else { n };
                out.push(Op::Data(side, &rest[..n]));
                data = &rest[n..];
                continue;
            }
        }
        data = rest;
    }
    out
}

/// What a transaction says, for comparing two runs.
type Summary = (
    u64,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Option<u16>,
    u64,
    u64,
    Vec<u8>,
    u64,
);

fn summarize(t: &Transaction) -> Summary {
    // On a broken compressed stream, how much output a decoder had produced when it
    // noticed (or whether it noticed before the body ended) depends on how its input was
    // cut (flate2's and brotli's streaming writers buffer differently): for content-coded
    // bodies the failure flag, decoded sizes and content are not compared. Framing,
    // pairing, transferred sizes and every other flag are.
    use crate::http::Anomaly;
    let coded = [&t.request, &t.response]
        .into_iter()
        .flatten()
        .any(|h| h.get(Known::ContentEncoding).is_some());
    let failed = t.anomalies.contains(Anomaly::DECOMPRESSION_FAILED) || coded;
    let anomalies = if failed {
        t.anomalies - Anomaly::DECOMPRESSION_FAILED
    } else {
        t.anomalies
    };
    (
        t.tx_id,
        t.method().map(<[u8]>::to_vec),
        t.uri().map(<[u8]>::to_vec),
        t.status(),
        if failed {
            t.request_body.transferred
        } else {
            t.request_body.decoded
        },
        if failed {
            t.response_body.transferred
        } else {
            t.response_body.decoded
        },
        if failed {
            Vec::new()
        } else {
            t.response_body.captured.clone()
        },
        anomalies.bits(),
    )
}

fn run_http(ops: &[Op<'_>], cut: usize, config: HttpConfig) -> Vec<Summary> {
    let mut c = HttpConnection::new(config);
    let mut out = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let ts = i as i64;
        match *op {
            Op::Data(side, bytes) => {
                if cut > 0 {
                    for piece in bytes.chunks(cut) {
                        c.data(side, piece, ts, &mut out);
                    }
                } else {
                    c.data(side, bytes, ts, &mut out);
                }
            }
            Op::Gap(side, n) => c.gap(side, n, ts, &mut out),
            Op::Close(side) => c.close(side, ts, &mut out),
        }
    }
    c.finish(ops.len() as i64, &mut out);
    for t in &out {
        assert!(t.response_body.captured.len() <= config.body.capture_limit);
        assert!(t.request_body.captured.len() <= config.body.capture_limit);
        for h in [&t.request, &t.response].into_iter().flatten() {
            // Folded values are rebuilt after the head's bytes: at most twice the limit.
            assert!(h.buf.len() <= 2 * config.max_head_bytes);
        }
    }
    out.iter().map(summarize).collect()
}

/// Both directions of one connection, with gaps and closes, through the HTTP parser;
/// the same input cut into pieces of every small size must give the same transactions.
pub fn http(data: &[u8]) {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let ops = ops(rest);
    let config = HttpConfig {
        max_head_bytes: 4096,
        max_fields: 32,
        body: crate::http::BodyLimits {
            capture_limit: 512,
            max_decoded: 1 << 20,
        },
        max_open_transactions: 8,
        ..HttpConfig::default()
    };
    for op in &ops {
        if let Op::Data(_, bytes) = op {
            same_head_either_way(bytes);
        }
    }
    let whole = run_http(&ops, 0, config);
    let pieces = run_http(&ops, usize::from(cut % 7) + 1, config);
    if whole != pieces {
        let i = whole
            .iter()
            .zip(&pieces)
            .position(|(a, b)| a != b)
            .unwrap_or(whole.len().min(pieces.len()));
        panic!(
            "result depends on how the bytes were cut: {} vs {} transactions, first difference at {i}:\nwhole:  {:?}\npieces: {:?}",
            whole.len(),
            pieces.len(),
            whole.get(i),
            pieces.get(i)
        );
    }
}

/// The fast path for well-formed heads must read a head exactly as the lenient parser
/// does.
fn same_head_either_way(bytes: &[u8]) {
    use crate::http::head::{HeadLimits, parse, parse_lenient};
    let limits = HeadLimits { max_fields: 32 };
    let (mut a, mut b) = (crate::http::Anomaly::empty(), crate::http::Anomaly::empty());
    let fast = parse(bytes.to_vec(), &limits, &mut a);
    let lenient = parse_lenient(bytes.to_vec(), &limits, &mut b);
    assert_eq!((fast, a), (lenient, b), "the two head parsers disagree");
}

/// A sequence of TCP segments between two endpoints through the flow table and the HTTP
/// stage: each record is `[flags][direction and seq delta][len][payload]`.
pub fn reassembly(mut data: &[u8]) {
    let limits = FlowLimits {
        max_flows: 4,
        idle_timeout: 50,
        closed_timeout: 10,
        stream: StreamLimits {
            max_pending_bytes: 4096,
            max_pending_segments: 16,
        },
        use_vlan: true,
        midstream: true,
    };
    let mut table: FlowTable<HttpConnection> = FlowTable::new(limits);
    let mut out = Vec::new();
    let client = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let server = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    let mut seq = [1000u32, 9_000_000u32];
    let mut ts = 0i64;
    while let [flags, ctl, len, rest @ ..] = data {
        let n = usize::from(*len).min(rest.len());
        let payload = &rest[..n];
        data = &rest[n..];
        let dir = usize::from(ctl & 1);
        // Segments jump back, repeat or skip ahead, as reordering and loss do.
        let delta = i32::from(ctl >> 1) - 32;
        let s = seq[dir].wrapping_add_signed(delta * 8);
        let (src, dst, sport, dport) = if dir == 0 {
            (client, server, 40_000 + u16::from(ctl >> 7), 80)
        } else {
            (server, client, 80, 40_000 + u16::from(ctl >> 7))
        };
        ts += i64::from(flags >> 6);
        let seg = TcpSegment {
            ts,
            vlan: VlanIds::default(),
            src,
            dst,
            sport,
            dport,
            seq: s,
            ack: seq[1 - dir],
            flags: TcpFlags(*flags & 0x3f),
            window: 1024,
            payload,
        };
        table.segment(
            &seg,
            || HttpConnection::new(HttpConfig::default()),
            &mut out,
        );
        seq[dir] = s.wrapping_add(n as u32);
        assert!(table.len() <= limits.max_flows);
    }
    table.finish(&mut out);
    assert!(table.is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_target_accepts_a_plain_exchange() {
        let mut input = vec![3u8];
        let req = b"GET / HTTP/1.1\r\n\r\n";
        let resp = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        input.extend_from_slice(&[0, req.len() as u8]);
        input.extend_from_slice(req);
        input.extend_from_slice(&[1, resp.len() as u8]);
        input.extend_from_slice(resp);
        let ops = ops(&input[1..]);
        assert_eq!(ops.len(), 2);
        let got = run_http(&ops, 1, HttpConfig::default());
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].3, Some(200));
        http(&input);
    }
}

/// Fuzz inputs derived from a real capture, one list per target.
#[derive(Debug, Default)]
pub struct Seeds {
    pub decode: Vec<Vec<u8>>,
    pub reassembly: Vec<Vec<u8>>,
    pub http: Vec<Vec<u8>>,
}

/// Records what reassembly hands the HTTP stage, in the `http` target's format.
#[derive(Default)]
struct Recorder {
    ops: Vec<u8>,
}

impl Recorder {
    fn push(&mut self, op: u8, bytes: &[u8]) {
        for piece in bytes.chunks(255) {
            if self.ops.len() > 1 << 16 {
                return;
            }
            self.ops.push(op);
            self.ops.push(piece.len() as u8);
            self.ops.extend_from_slice(piece);
        }
    }
}

impl crate::reassembly::StreamHandler for Recorder {
    type Output = Vec<u8>;
    type Totals = ();
    fn data(&mut self, side: Side, data: &[u8], _: i64, _: &mut Vec<Vec<u8>>) {
        self.push(side as u8, data);
    }
    fn gap(&mut self, side: Side, len: u64, _: i64, _: &mut Vec<Vec<u8>>) {
        self.ops
            .extend_from_slice(&[2 | side as u8, len.min(255) as u8]);
    }
    fn close(&mut self, side: Side, _: i64, _: &mut Vec<Vec<u8>>) {
        self.ops.extend_from_slice(&[4 | side as u8, 0]);
    }
    fn finish(&mut self, _: i64, out: &mut Vec<Vec<u8>>) {
        let mut input = vec![0u8];
        input.append(&mut self.ops);
        out.push(input);
    }
    fn retire(&self, _: &mut ()) {}
}

/// Derives seeds from a pcap or pcapng file: every distinct frame for `decode`, every
/// connection's byte streams for `http`, and its segments for `reassembly`.
pub fn seeds_from_capture(file: &[u8], max_per_target: usize) -> Seeds {
    let mut seeds = Seeds::default();
    let decoder = Decoder::default();
    let mut table: FlowTable<Recorder> = FlowTable::new(FlowLimits {
        midstream: true,
        ..FlowLimits::default()
    });
    let mut streams: Vec<(IpAddr, Vec<u8>)> = Vec::new();
    let mut out = Vec::new();
    let _ = crate::capture::file::read_frames(
        file,
        |f| {
            let Some(pick) = LINKTYPES.iter().position(|&l| l == f.linktype) else {
                return;
            };
            if seeds.decode.len() < max_per_target {
                let mut s = vec![pick as u8];
                s.extend_from_slice(f.data);
                seeds.decode.push(s);
            }
            if let Ok(Decoded::Tcp(seg)) = decoder.decode(f.linktype, f.ts, f.data) {
                table.segment(&seg, Recorder::default, &mut out);
                // One reassembly seed per client address, segments in capture order.
                let i = match streams
                    .iter()
                    .position(|(a, _)| *a == seg.src || *a == seg.dst)
                {
                    Some(i) => i,
                    None => {
                        streams.push((seg.src, Vec::new()));
                        streams.len() - 1
                    }
                };
                let (client, rec) = &mut streams[i];
                let dir = u8::from(seg.src != *client);
                let n = seg.payload.len().min(255);
                if rec.len() < 1 << 16 {
                    rec.extend_from_slice(&[seg.flags.0 & 0x3f, dir | 64, n as u8]);
                    rec.extend_from_slice(&seg.payload[..n]);
                }
            }
        },
        |_| {},
    );
    table.finish(&mut out);
    seeds.http = out
        .into_iter()
        .map(|(_, s)| s)
        .filter(|s| s.len() > 1)
        .take(max_per_target)
        .collect();
    seeds.reassembly = streams
        .into_iter()
        .map(|(_, s)| s)
        .take(max_per_target)
        .collect();
    seeds
}

/// A bearer token through the JWT reader, with and without a verification key.
pub fn jwt(data: &[u8]) {
    let token = String::from_utf8_lossy(data);
    let mut keys = crate::extract::jwt::KeySet::default();
    keys.hmac.push(crate::extract::JwtKey {
        kid: None,
        secret: "k".into(),
    });
    let _ = keys.add_jwks(include_str!("extract/testdata/jwks.json"));
    for keys in [&keys, &crate::extract::jwt::KeySet::default()] {
        if let Ok(j) = crate::extract::jwt::parse(&token, keys) {
            for v in j.claims.values() {
                if let Some(t) = crate::extract::jwt::claim_text(v) {
                    assert!(t.len() <= crate::extract::jwt::MAX_CLAIM);
                }
            }
        }
    }
}

/// A body through the JSON field scan: every reported key and value lies inside the
/// input, in order.
pub fn json_scan(data: &[u8]) {
    let range = data.as_ptr_range();
    let mut last = data.as_ptr();
    crate::extract::json_scan::scan(data, |k, v| {
        for part in [k, v] {
            let r = part.as_ptr_range();
            assert!(range.start <= r.start && r.end <= range.end);
        }
        assert!(k.as_ptr() >= last);
        last = v.as_ptr();
        true
    });
}

/// Paths (one per line) through one endpoint templater with a small table: the table
/// stays bounded and a template never grows past its path.
pub fn template(data: &[u8]) {
    let mut t = crate::extract::template::Templater::new(16, 4);
    for line in data.split(|&b| b == b'\n') {
        let path = String::from_utf8_lossy(line);
        let got = t.template(&path);
        assert!(got.template.starts_with('/'));
        assert!(t.len() <= 16);
        assert!(got.params.len() <= crate::extract::template::MAX_SEGMENTS);
    }
}

/// Ring buffer records as the eBPF programs would write them, each prefixed by a
/// little-endian `u16` length: packet records go through the checks and the data path,
/// TLS records through the plaintext streams (sockets looked up from the descriptor) and
/// their own pipeline, socket records through the cache and the streams. Nothing panics,
/// the tables stay within their bounds.
pub fn ebpf_records(mut data: &[u8]) {
    use crate::capture::ebpf::record;
    use crate::capture::ebpf::tls::{SocketCache, TlsStreams};
    use std::net::SocketAddr;
    let config = PipelineConfig {
        flows: FlowLimits {
            max_flows: 64,
            ..FlowLimits::default()
        },
        ..PipelineConfig::default()
    };
    let mut packets = Pipeline::new(config);
    let mut plaintext = Pipeline::new(config);
    let mut streams = TlsStreams::new(8);
    let mut sockets = SocketCache::new(8);
    let mut ts = 0i64;
    let mut sink = |_: &crate::reassembly::FlowMeta, _: Transaction| {};
    while data.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([data[0], data[1]])).min(data.len() - 2);
        let rec = &data[2..2 + len];
        data = &data[2 + len..];
        ts += 1000;
        match record::tls_ring_kind(rec) {
            Some(tapline_ebpf_common::KIND_SOCKET) => {
                if let Ok((s, Some(peer))) = record::socket(rec) {
                    sockets.insert(s.tgid, s.fd, None, peer);
                    streams.socket_opened(s.tgid, s.fd, ts, &mut |h, d| {
                        plaintext.segment(&h.segment(d), &mut sink)
                    });
                }
            }
            Some(tapline_ebpf_common::KIND_TLS) => {
                if let Ok(v) = record::tls(rec) {
                    let mut resolve = |pid: u32, fd: i32| {
                        sockets.peer(pid, fd).or_else(|| {
                            (fd % 3 == 0).then(|| {
                                let a = IpAddr::V4(Ipv4Addr::from(pid));
                                (
                                    SocketAddr::new(a, fd as u16),
                                    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 443),
                                )
                            })
                        })
                    };
                    streams.record(&v, ts, &mut resolve, &mut |h, d| {
                        plaintext.segment(&h.segment(d), &mut sink)
                    });
                }
            }
            _ => {
                if let Ok(p) = record::packet(rec) {
                    let h = p.header;
                    let seg = TcpSegment {
                        ts,
                        vlan: VlanIds::default(),
                        src: p.src,
                        dst: p.dst,
                        sport: h.sport,
                        dport: h.dport,
                        seq: h.seq,
                        ack: h.ack,
                        flags: TcpFlags(h.flags),
                        window: h.window,
                        payload: p.payload,
                    };
                    packets.segment(&seg, &mut sink);
                }
            }
        }
        streams.release_due(ts, &mut |h, d| plaintext.segment(&h.segment(d), &mut sink));
        assert!(streams.len() <= 8);
        assert!(sockets.len() <= 8);
    }
    streams.expire(i64::MAX, 1, &mut |h, d| {
        plaintext.segment(&h.segment(d), &mut sink)
    });
    packets.finish(&mut sink);
    plaintext.finish(&mut sink);
}

/// Frames a collector or an agent receives from the network: nothing panics, and a
/// batch that summarizes (what the collector checks before storing it) also decodes
/// (what queries do later).
pub fn wire(data: &[u8]) {
    let _ = tapline_wire::proto::decode_server(data);
    let _ = tapline_wire::proto::decode_client(data);
    if let Ok(Some((s, used))) = tapline_wire::summarize(data) {
        match tapline_wire::decode(data) {
            Ok(Some((b, u))) => {
                assert_eq!(u, used);
                assert_eq!(b.events.len(), s.events);
            }
            other => panic!("summarized but did not decode: {other:?}"),
        }
    }
}
