//! `tapline-agent run`: live capture feeding the same pipeline as `read`.
//!
//! One capture thread per interface reads frames non-blocking and shards them by a
//! symmetric flow hash (both directions of a connection, even from two interfaces, reach
//! the same worker) to N worker threads over bounded channels. Frame buffers circulate
//! through a pool, so the steady state allocates nothing per packet. A full worker queue
//! drops the frame and counts it; kernel and interface drops come from `pcap_stats`.
//! Workers own a [`Pipeline`] and an [`Extractor`] each and write to one shared output.

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError, bounded};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::capture::ebpf::tls::{SegmentHead, TlsStreams};
use crate::capture::ebpf::{EbpfCapture, EbpfOptions, KernelCounters, record};
use crate::capture::live::{KernelStats, LiveCapture, LiveError, LiveOptions, Next};
use crate::decode::{Decoded, Decoder, Micros};
use crate::extract::redact::Redactor;
use crate::extract::{ExtractConfig, Extractor};
use crate::http::Transaction;
use crate::output::eve::{EveOptions, write_transaction};
use crate::pipeline::{Pipeline, PipelineConfig, PipelineStats};
use crate::reassembly::FlowMeta;

/// What the workers write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Http,
    Events,
    /// No log (the events are shipped).
    None,
}

/// Where live packets come from.
#[derive(Debug, Clone)]
pub enum CaptureSource {
    /// libpcap on `LiveConfig::ifaces`.
    Pcap,
    /// The eBPF programs (interfaces, a cgroup, OpenSSL).
    Ebpf(EbpfOptions),
}

impl CaptureSource {
    pub fn name(&self) -> &'static str {
        match self {
            CaptureSource::Pcap => "pcap",
            CaptureSource::Ebpf(_) => "ebpf",
        }
    }
}

#[derive(Debug, Clone)]
pub struct LiveConfig {
    pub source: CaptureSource,
    pub ifaces: Vec<String>,
    pub options: LiveOptions,
    pub workers: usize,
    /// Frames queued per worker before new ones are dropped.
    pub queue: usize,
    pub pipeline: PipelineConfig,
    pub extract: ExtractConfig,
    /// The node id in events.
    pub agent: String,
    pub log: LogFormat,
    pub redact: bool,
    pub bodies: bool,
    /// Batching rules when events are shipped.
    pub ship: crate::ship::ShipConfig,
}

type Labels = Vec<(String, String)>;

/// The agent's metrics, in Prometheus exposition at `/metrics`.
pub struct Metrics {
    registry: Registry,
    packets: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
    drops: Family<Labels, Counter>,
    queue_depth: Family<Labels, Gauge>,
    flows: Counter,
    flows_midstream: Counter,
    gaps: Counter,
    gap_bytes: Counter,
    undecodable: Family<Labels, Counter>,
    transactions: Counter,
    events: Counter,
    http_parse_errors: Counter,
    truncated: Family<Labels, Counter>,
    source: Family<Labels, Gauge>,
    ebpf_filtered: Counter,
    ebpf_not_tcp: Counter,
    ebpf_bad_records: Counter,
    ebpf_interfaces: Gauge,
    tls_libraries: Gauge,
    tls_connections: Counter,
    tls_unresolved: Counter,
    tls_mirrored: Counter,
    tls_bytes: Counter,
    tls_truncated_bytes: Counter,
    tls_open: Gauge,
    /// The ship stage's counters (zero when not shipping).
    pub ship: crate::ship::ShipMetrics,
}

fn label(k: &str, v: &str) -> Labels {
    vec![(k.to_string(), v.to_string())]
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tapline");
        let m = Metrics {
            packets: Family::default(),
            bytes: Family::default(),
            drops: Family::default(),
            queue_depth: Family::default(),
            flows: Counter::default(),
            flows_midstream: Counter::default(),
            gaps: Counter::default(),
            gap_bytes: Counter::default(),
            undecodable: Family::default(),
            transactions: Counter::default(),
            events: Counter::default(),
            http_parse_errors: Counter::default(),
            truncated: Family::default(),
            source: Family::default(),
            ebpf_filtered: Counter::default(),
            ebpf_not_tcp: Counter::default(),
            ebpf_bad_records: Counter::default(),
            ebpf_interfaces: Gauge::default(),
            tls_libraries: Gauge::default(),
            tls_connections: Counter::default(),
            tls_unresolved: Counter::default(),
            tls_mirrored: Counter::default(),
            tls_bytes: Counter::default(),
            tls_truncated_bytes: Counter::default(),
            tls_open: Gauge::default(),
            ship: crate::ship::ShipMetrics::default(),
            registry: Registry::default(),
        };
        let s = &m.ship;
        registry.register(
            "ship_events_spooled",
            "Events handed to the spool (to be sent)",
            s.events_spooled.clone(),
        );
        registry.register(
            "ship_batches_acked",
            "Batches the collector acked as newly stored",
            s.batches_acked.clone(),
        );
        registry.register(
            "ship_batches_duplicate",
            "Batches the collector acked as already stored (resent after a failure)",
            s.batches_duplicate.clone(),
        );
        registry.register(
            "ship_dropped_batches",
            "Batches dropped because the spool was full",
            s.dropped_batches.clone(),
        );
        registry.register(
            "ship_dropped_events",
            "Events dropped because the spool was full",
            s.dropped_events.clone(),
        );
        registry.register(
            "ship_pending_batches",
            "Batches waiting for an ack (spooled or in flight)",
            s.pending_batches.clone(),
        );
        registry.register(
            "ship_pending_bytes",
            "Bytes of batches waiting for an ack",
            s.pending_bytes.clone(),
        );
        registry.register(
            "ship_connected",
            "1 while a collector session is up",
            s.connected.clone(),
        );
        registry.register(
            "ship_connects",
            "Collector sessions opened",
            s.connects.clone(),
        );
        registry.register(
            "ship_connect_failures",
            "Collector sessions that failed or ended in error",
            s.connect_failures.clone(),
        );
        registry.register(
            "packets",
            "Frames captured, per interface",
            m.packets.clone(),
        );
        registry.register("bytes", "Bytes captured, per interface", m.bytes.clone());
        registry.register(
            "drops",
            "Frames lost, per interface and cause: queue_full (a worker was behind), kernel (the capture ring was full), interface (the driver dropped them)",
            m.drops.clone(),
        );
        registry.register(
            "queue_depth",
            "Frames waiting, per worker",
            m.queue_depth.clone(),
        );
        registry.register("flows", "TCP connections tracked", m.flows.clone());
        registry.register(
            "flows_midstream",
            "Connections picked up without their handshake",
            m.flows_midstream.clone(),
        );
        registry.register("stream_gaps", "Holes in TCP streams", m.gaps.clone());
        registry.register(
            "stream_gap_bytes",
            "Bytes lost in holes",
            m.gap_bytes.clone(),
        );
        registry.register(
            "undecodable",
            "Frames that did not decode, per reason",
            m.undecodable.clone(),
        );
        registry.register(
            "http_transactions",
            "HTTP transactions",
            m.transactions.clone(),
        );
        registry.register("events", "Events extracted", m.events.clone());
        registry.register(
            "http_parse_errors",
            "HTTP messages that did not parse",
            m.http_parse_errors.clone(),
        );
        registry.register(
            "truncated",
            "Packets (source ebpf) or TLS reads and writes (source tls) cut at the snap length",
            m.truncated.clone(),
        );
        registry.register(
            "capture_source",
            "1 for the capture source in use (pcap or ebpf)",
            m.source.clone(),
        );
        registry.register(
            "ebpf_filtered",
            "Packets the in-kernel port or address filter left out",
            m.ebpf_filtered.clone(),
        );
        registry.register(
            "ebpf_not_tcp",
            "Packets the eBPF programs skipped: not TCP over IPv4/IPv6, IPv6 extension headers, IP fragments",
            m.ebpf_not_tcp.clone(),
        );
        registry.register(
            "ebpf_bad_records",
            "Ring buffer records that did not check out (never expected)",
            m.ebpf_bad_records.clone(),
        );
        registry.register(
            "ebpf_interfaces",
            "Interfaces the tc programs are attached to",
            m.ebpf_interfaces.clone(),
        );
        registry.register(
            "tls_libraries",
            "OpenSSL library files probed",
            m.tls_libraries.clone(),
        );
        registry.register(
            "tls_connections",
            "TLS connections seen through OpenSSL",
            m.tls_connections.clone(),
        );
        registry.register(
            "tls_unresolved",
            "TLS connections whose socket was not found (logged with unspecified addresses)",
            m.tls_unresolved.clone(),
        );
        registry.register(
            "tls_mirrored",
            "TLS connections seen from both ends on this node, logged once",
            m.tls_mirrored.clone(),
        );
        registry.register(
            "tls_bytes",
            "Plaintext bytes read and written through OpenSSL",
            m.tls_bytes.clone(),
        );
        registry.register(
            "tls_truncated_bytes",
            "Plaintext bytes cut at the TLS snap length (holes in the streams)",
            m.tls_truncated_bytes.clone(),
        );
        registry.register(
            "tls_open_connections",
            "TLS connections tracked now",
            m.tls_open.clone(),
        );
        Metrics { registry, ..m }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = encode(&mut s, &self.registry);
        s
    }

    /// What the sensor sees and misses, for `/coverage`: the coverage the agent reports
    /// to its collector, with the eBPF and TLS details beside it.
    pub fn coverage_report(&self) -> serde_json::Value {
        let text = self.render();
        let mut source = "none".to_string();
        let mut sums: std::collections::BTreeMap<&str, u64> = Default::default();
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let value = value.parse::<f64>().unwrap_or(0.0).max(0.0) as u64;
            let name = series.split('{').next().unwrap_or(series);
            if name == "tapline_capture_source" && value > 0 {
                if let Some(s) = series.split('"').nth(1) {
                    source = s.to_string();
                }
                continue;
            }
            let name = name
                .trim_start_matches("tapline_")
                .trim_end_matches("_total");
            *sums.entry(name).or_default() += value;
        }
        let c = crate::ship::coverage::from_metrics_text(&text, &source);
        let get = |n: &str| sums.get(n).copied().unwrap_or(0);
        serde_json::json!({
            "source": c.source,
            "captured": { "packets": c.packets, "bytes": c.bytes },
            "lost": {
                "drops": c.drops.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
                "truncated": get("truncated"),
                "stream_gaps": c.stream_gaps,
                "stream_gap_bytes": c.stream_gap_bytes,
                "undecodable": get("undecodable"),
            },
            "flows": { "seen": c.flows, "midstream": get("flows_midstream") },
            "http": {
                "transactions": c.http_transactions,
                "parse_errors": c.http_parse_errors,
                "events": get("events"),
            },
            "ebpf": {
                "interfaces": get("ebpf_interfaces"),
                "filtered": get("ebpf_filtered"),
                "not_tcp": get("ebpf_not_tcp"),
            },
            "tls": {
                "libraries": get("tls_libraries"),
                "connections": get("tls_connections"),
                "unresolved": get("tls_unresolved"),
                "mirrored": get("tls_mirrored"),
                "bytes": get("tls_bytes"),
                "truncated_bytes": get("tls_truncated_bytes"),
            },
        })
    }

    /// Adds what a worker's counters grew by since `last`.
    fn add_pipeline(
        &self,
        now: &PipelineStats,
        flows: &crate::reassembly::FlowStats,
        last: &mut Snapshot,
    ) {
        let d = |a: u64, b: &mut u64| {
            let v = a.saturating_sub(*b);
            *b = a;
            v
        };
        self.flows.inc_by(d(flows.flows, &mut last.flows));
        self.flows_midstream
            .inc_by(d(flows.midstream_flows, &mut last.midstream));
        self.gaps.inc_by(d(flows.streams.gaps, &mut last.gaps));
        self.gap_bytes
            .inc_by(d(flows.streams.gap_bytes, &mut last.gap_bytes));
        self.transactions
            .inc_by(d(now.transactions, &mut last.transactions));
        self.http_parse_errors
            .inc_by(d(now.http.parse_errors, &mut last.parse_errors));
        for e in crate::decode::DecodeError::ALL {
            let i = e.index();
            let v = d(now.undecodable[i], &mut last.undecodable[i]);
            if v > 0 {
                self.undecodable
                    .get_or_create(&label("reason", e.label()))
                    .inc_by(v);
            }
        }
    }

    /// The capture coverage a shipping agent reports in its status.
    pub fn coverage(&self, source: &str) -> tapline_wire::proto::Coverage {
        crate::ship::coverage::from_metrics_text(&self.render(), source)
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotation_keeps_one_old_file_and_never_touches_devices() {
        let dir = std::env::temp_dir().join(format!("tapline-rotate-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("log.json");
        let mut f = RotatingFile::create(path.clone(), 100).unwrap();
        for _ in 0..25 {
            f.write_all(b"0123456789").unwrap();
        }
        f.flush().unwrap();
        let old = std::fs::read(dir.join("log.json.1")).unwrap();
        let cur = std::fs::read(&path).unwrap();
        assert_eq!((old.len(), cur.len()), (100, 50));
        let _ = std::fs::remove_dir_all(&dir);

        let mut null = RotatingFile::create(PathBuf::from("/dev/null"), 10).unwrap();
        for _ in 0..10 {
            null.write_all(b"0123456789").unwrap();
        }
        null.flush().unwrap();
        let meta = std::fs::metadata("/dev/null").unwrap();
        assert!(!meta.is_file(), "/dev/null is still a device");
        assert!(!std::path::Path::new("/dev/null.1").exists());
    }
}

#[derive(Default)]
struct Snapshot {
    flows: u64,
    midstream: u64,
    gaps: u64,
    gap_bytes: u64,
    transactions: u64,
    parse_errors: u64,
    undecodable: [u64; crate::decode::DecodeError::ALL.len()],
}

/// Serves `/metrics` until `stop` is set.
pub fn serve_metrics(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    stop: Arc<AtomicBool>,
) -> std::io::Result<JoinHandle<()>> {
    let listener = TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut req = [0u8; 1024];
                    let n = std::io::Read::read(&mut conn, &mut req).unwrap_or(0);
                    let (status, kind, body) = if req[..n].starts_with(b"GET /metrics") {
                        (
                            "200 OK",
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            metrics.render(),
                        )
                    } else if req[..n].starts_with(b"GET /coverage") {
                        let mut body = serde_json::to_string_pretty(&metrics.coverage_report())
                            .unwrap_or_default();
                        body.push('\n');
                        ("200 OK", "application/json", body)
                    } else {
                        (
                            "404 Not Found",
                            "text/plain",
                            "see /metrics and /coverage\n".to_string(),
                        )
                    };
                    let _ = write!(
                        conn,
                        "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }))
}

/// The log file, replaced by a fresh one when it reaches its size limit (the full one is
/// kept as `FILE.1`). Only regular files rotate: a device (`/dev/null`), pipe or socket
/// given as the log is written to, never renamed.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    written: u64,
    file: std::io::BufWriter<std::fs::File>,
}

impl RotatingFile {
    pub fn create(path: PathBuf, max_bytes: u64) -> std::io::Result<Self> {
        let file = std::fs::File::create(&path)?;
        let regular = file.metadata()?.is_file();
        Ok(RotatingFile {
            path,
            max_bytes: if regular { max_bytes } else { 0 },
            written: 0,
            file: std::io::BufWriter::new(file),
        })
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.max_bytes > 0
            && self.written + buf.len() as u64 > self.max_bytes
            && self.written > 0
        {
            self.file.flush()?;
            let mut old = self.path.clone().into_os_string();
            old.push(".1");
            std::fs::rename(&self.path, old)?;
            self.file = std::io::BufWriter::new(std::fs::File::create(&self.path)?);
            self.written = 0;
        }
        self.file.write_all(buf)?;
        self.written += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

pub type SharedOutput = Arc<Mutex<Box<dyn Write + Send>>>;

/// What a message to a worker holds.
enum Payload {
    /// A link-layer frame (libpcap).
    Frame { linktype: u32 },
    /// TCP segments whose headers were parsed in the kernel, with the length of each
    /// one's payload in `buf` (one after the other), and whether it is TLS plaintext
    /// (a synthetic segment, kept apart from the ciphertext flow of its connection).
    /// Batched: one message per many packets keeps the queues cheap.
    Segments(SegmentList),
}

/// Segments of a batch: each one's head, payload length and whether it is plaintext.
type SegmentList = Vec<(SegmentHead, u32, bool)>;

/// A frame or segment on its way to a worker.
struct FrameMsg {
    ts: Micros,
    payload: Payload,
    buf: Vec<u8>,
}

/// Running capture: stop it with [`Live::shutdown`].
pub struct Live {
    stop: Arc<AtomicBool>,
    captures: Vec<JoinHandle<Result<(), LiveError>>>,
    workers: Vec<JoinHandle<()>>,
    senders: Vec<Sender<FrameMsg>>,
    /// New extraction rules for the workers (SIGHUP), with a generation number.
    reload: Arc<Mutex<(u64, Option<ExtractConfig>)>>,
    output: SharedOutput,
}

/// Symmetric hash of a frame's connection: the same for both directions.
fn shard_of(decoder: &Decoder, linktype: u32, ts: Micros, data: &[u8], n: usize) -> usize {
    use std::hash::BuildHasher;
    if n <= 1 {
        return 0;
    }
    let state = foldhash::fast::FixedState::with_seed(0x7461_706c);
    let h = match decoder.decode(linktype, ts, data) {
        Ok(Decoded::Tcp(seg)) => {
            return shard_of_pair(
                std::net::SocketAddr::new(seg.src, seg.sport),
                std::net::SocketAddr::new(seg.dst, seg.dport),
                n,
            );
        }
        Ok(Decoded::Fragment(f)) => {
            let (a, b) = (f.key.src, f.key.dst);
            state.hash_one(if a <= b { (a, b) } else { (b, a) })
        }
        _ => 0,
    };
    (h % n as u64) as usize
}

impl Live {
    /// Opens every interface (so a bad name or filter fails before anything runs) and
    /// starts the threads.
    pub fn start(
        config: LiveConfig,
        metrics: Arc<Metrics>,
        output: SharedOutput,
        shipper: Option<Arc<crate::ship::Shipper>>,
    ) -> Result<Live, LiveError> {
        let (captures, ebpf): (Vec<LiveCapture>, _) = match &config.source {
            CaptureSource::Pcap => (
                config
                    .ifaces
                    .iter()
                    .map(|i| LiveCapture::open(i, &config.options))
                    .collect::<Result<_, _>>()?,
                None,
            ),
            CaptureSource::Ebpf(o) => (Vec::new(), Some(EbpfCapture::load(o.clone())?)),
        };
        metrics
            .source
            .get_or_create(&label("source", config.source.name()))
            .set(1);
        let stop = Arc::new(AtomicBool::new(false));
        let workers_n = config.workers.max(1);
        let pool_size = workers_n * config.queue + 256 * captures.len().max(1);
        let (pool_tx, pool_rx) = bounded::<Vec<u8>>(pool_size);
        let reload = Arc::new(Mutex::new((0u64, None)));
        let mut senders = Vec::new();
        let mut workers = Vec::new();
        let mut receivers: Vec<Receiver<FrameMsg>> = Vec::new();
        for _ in 0..workers_n {
            let (tx, rx) = bounded::<FrameMsg>(config.queue.max(1));
            senders.push(tx);
            receivers.push(rx);
        }
        for (i, rx) in receivers.iter().enumerate() {
            let w = Worker {
                index: i,
                rx: rx.clone(),
                pool: pool_tx.clone(),
                config: config.clone(),
                metrics: metrics.clone(),
                output: output.clone(),
                reload: reload.clone(),
                shipper: shipper.clone(),
            };
            workers.push(std::thread::spawn(move || w.run()));
        }
        let mut handles = Vec::new();
        for mut cap in captures {
            let senders = senders.clone();
            let pool_rx = pool_rx.clone();
            let pool_tx = pool_tx.clone();
            let stop = stop.clone();
            let metrics = metrics.clone();
            let decoder = config.pipeline.decoder;
            let receivers = receivers.clone();
            handles.push(std::thread::spawn(move || -> Result<(), LiveError> {
                let iface = label("iface", cap.name());
                let packets = metrics.packets.get_or_create(&iface).clone();
                let bytes = metrics.bytes.get_or_create(&iface).clone();
                let drop_labels = |cause: &str| {
                    let mut l = iface.clone();
                    l.push(("cause".to_string(), cause.to_string()));
                    metrics.drops.get_or_create(&l).clone()
                };
                let queue_full = drop_labels("queue_full");
                let kernel = drop_labels("kernel");
                let interface = drop_labels("interface");
                let mut last_stats = KernelStats::default();
                let mut last_poll = Instant::now();
                while !stop.load(Ordering::Relaxed) {
                    match cap.next_frame()? {
                        Next::Frame { ts, linktype, data } => {
                            packets.inc();
                            bytes.inc_by(data.len() as u64);
                            let shard = shard_of(&decoder, linktype, ts, data, senders.len());
                            let mut buf = pool_rx
                                .try_recv()
                                .unwrap_or_else(|_| Vec::with_capacity(2048));
                            buf.clear();
                            buf.extend_from_slice(data);
                            let msg = FrameMsg {
                                ts,
                                payload: Payload::Frame { linktype },
                                buf,
                            };
                            match senders[shard].try_send(msg) {
                                Ok(()) => {}
                                Err(TrySendError::Full(m) | TrySendError::Disconnected(m)) => {
                                    queue_full.inc();
                                    let _ = pool_tx.try_send(m.buf);
                                }
                            }
                        }
                        Next::Idle => cap.wait(Duration::from_millis(100)),
                    }
                    if last_poll.elapsed() >= Duration::from_millis(500) {
                        last_poll = Instant::now();
                        let s = cap.stats();
                        // libpcap's counters are 32-bit and wrap.
                        let delta =
                            |new: u64, old: u64| u64::from((new as u32).wrapping_sub(old as u32));
                        kernel.inc_by(delta(s.dropped, last_stats.dropped));
                        interface.inc_by(delta(s.if_dropped, last_stats.if_dropped));
                        last_stats = s;
                        for (i, r) in receivers.iter().enumerate() {
                            metrics
                                .queue_depth
                                .get_or_create(&label("worker", &i.to_string()))
                                .set(r.len() as i64);
                        }
                    }
                }
                let s = cap.stats();
                let delta = |new: u64, old: u64| u64::from((new as u32).wrapping_sub(old as u32));
                kernel.inc_by(delta(s.dropped, last_stats.dropped));
                interface.inc_by(delta(s.if_dropped, last_stats.if_dropped));
                Ok(())
            }));
        }
        if let Some(mut cap) = ebpf {
            let (packets, tls) = cap.take_rings()?;
            let reader = EbpfReader {
                senders: senders.clone(),
                pool_rx: pool_rx.clone(),
                pool_tx: pool_tx.clone(),
                metrics: metrics.clone(),
                receivers: receivers.clone(),
            };
            let stop = stop.clone();
            handles.push(std::thread::spawn(move || {
                reader.run(cap, packets, tls, &stop);
                Ok(())
            }));
        }
        Ok(Live {
            stop,
            captures: handles,
            workers,
            senders,
            reload,
            output,
        })
    }

    /// Hands new extraction rules to the workers (they pick them up within a second).
    pub fn reload(&self, extract: ExtractConfig) {
        if let Ok(mut r) = self.reload.lock() {
            r.0 += 1;
            r.1 = Some(extract);
        }
    }

    /// Whether a capture thread ended on its own (an interface went away).
    pub fn capture_failed(&self) -> bool {
        self.captures.iter().any(JoinHandle::is_finished)
    }

    /// Stops capture, lets the workers finish what is queued and every open transaction,
    /// and flushes the output. Returns the first capture error, if any.
    pub fn shutdown(self) -> Result<(), LiveError> {
        self.stop.store(true, Ordering::Relaxed);
        let mut first_err = None;
        for h in self.captures {
            if let Ok(Err(e)) = h.join()
                && first_err.is_none()
            {
                first_err = Some(e);
            }
        }
        drop(self.senders);
        for w in self.workers {
            let _ = w.join();
        }
        if let Ok(mut o) = self.output.lock() {
            let _ = o.flush();
        }
        match first_err {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

/// Hashes a connection the same in both directions.
fn shard_of_pair(a: std::net::SocketAddr, b: std::net::SocketAddr, n: usize) -> usize {
    use std::hash::BuildHasher;
    if n <= 1 {
        return 0;
    }
    let state = foldhash::fast::FixedState::with_seed(0x7461_706c);
    let h = state.hash_one(if a <= b { (a, b) } else { (b, a) });
    (h % n as u64) as usize
}

/// Reads the eBPF ring buffers, turns TLS plaintext into segments and hands both to
/// the workers; picks up new interfaces and libraries and publishes the kernel's
/// counters.
struct EbpfReader {
    senders: Vec<Sender<FrameMsg>>,
    pool_rx: Receiver<Vec<u8>>,
    pool_tx: Sender<Vec<u8>>,
    metrics: Arc<Metrics>,
    receivers: Vec<Receiver<FrameMsg>>,
}

/// Records read from one ring before looking at the other and at the clock.
const RING_BATCH: usize = 4096;
/// Segments per message to a worker at most, and payload bytes.
const SEGMENT_BATCH: usize = 256;
const SEGMENT_BATCH_BYTES: usize = 256 << 10;

/// Segments gathered per worker, sent as one message.
struct SegmentBatches {
    pending: Vec<(SegmentList, Vec<u8>)>,
    senders: Vec<Sender<FrameMsg>>,
    pool_rx: Receiver<Vec<u8>>,
    pool_tx: Sender<Vec<u8>>,
    queue_full: Counter,
}

impl SegmentBatches {
    fn push(&mut self, head: SegmentHead, plaintext: bool, data: &[u8]) {
        let shard = shard_of_pair(head.src, head.dst, self.senders.len());
        let (heads, buf) = &mut self.pending[shard];
        if heads.is_empty() && buf.capacity() == 0 {
            *buf = self.pool_rx.try_recv().unwrap_or_default();
            buf.clear();
        }
        heads.push((head, data.len() as u32, plaintext));
        buf.extend_from_slice(data);
        if heads.len() >= SEGMENT_BATCH || buf.len() >= SEGMENT_BATCH_BYTES {
            self.flush_one(shard);
        }
    }

    fn flush_one(&mut self, shard: usize) {
        let (heads, buf) = std::mem::take(&mut self.pending[shard]);
        if heads.is_empty() {
            self.pending[shard].1 = buf;
            return;
        }
        let n = heads.len() as u64;
        let msg = FrameMsg {
            ts: heads[0].0.ts,
            payload: Payload::Segments(heads),
            buf,
        };
        if let Err(TrySendError::Full(m) | TrySendError::Disconnected(m)) =
            self.senders[shard].try_send(msg)
        {
            self.queue_full.inc_by(n);
            let _ = self.pool_tx.try_send(m.buf);
        }
    }

    fn flush(&mut self) {
        for shard in 0..self.pending.len() {
            self.flush_one(shard);
        }
    }
}
/// A TLS connection silent this long is ended (its process likely freed it).
const TLS_IDLE: Micros = 600_000_000;

impl EbpfReader {
    fn run(
        self,
        mut cap: EbpfCapture,
        mut packets: aya::maps::RingBuf<aya::maps::MapData>,
        mut tls: Option<aya::maps::RingBuf<aya::maps::MapData>>,
        stop: &AtomicBool,
    ) {
        use std::os::fd::AsRawFd;
        let m = &self.metrics;
        let drops = |cause: &str| {
            m.drops
                .get_or_create(&vec![
                    ("iface".to_string(), "ebpf".to_string()),
                    ("cause".to_string(), cause.to_string()),
                ])
                .clone()
        };
        let mut batches = SegmentBatches {
            pending: (0..self.senders.len())
                .map(|_| Default::default())
                .collect(),
            senders: self.senders.clone(),
            pool_rx: self.pool_rx.clone(),
            pool_tx: self.pool_tx.clone(),
            queue_full: drops("queue_full"),
        };
        let ring_full = drops("ring_full");
        let tls_ring_full = drops("tls_ring_full");
        let packets_c = m.packets.get_or_create(&label("iface", "ebpf")).clone();
        let bytes_c = m.bytes.get_or_create(&label("iface", "ebpf")).clone();
        let truncated = m.truncated.get_or_create(&label("source", "ebpf")).clone();
        let tls_truncated = m.truncated.get_or_create(&label("source", "tls")).clone();
        let mut streams = TlsStreams::new(65_536);
        let mut sockets = crate::capture::ebpf::tls::SocketCache::new(65_536);
        let mut last_kernel: KernelCounters = Default::default();
        let mut last_tls = crate::capture::ebpf::tls::TlsStats::default();
        let mut last_refresh = Instant::now();
        let proc = std::path::PathBuf::from("/proc");
        for line in cap.interfaces() {
            eprintln!("ebpf: attached to {line}");
        }
        let mut publish = |cap: &EbpfCapture, streams: &TlsStreams| {
            use tapline_ebpf_common::counter as k;
            let now = cap.counters();
            let d = |i: u32| now[i as usize].saturating_sub(last_kernel[i as usize]);
            packets_c.inc_by(d(k::QUEUED));
            bytes_c.inc_by(d(k::BYTES));
            truncated.inc_by(d(k::TRUNCATED));
            ring_full.inc_by(d(k::RING_FULL));
            m.ebpf_filtered.inc_by(d(k::FILTERED));
            m.ebpf_not_tcp.inc_by(d(k::NOT_TCP));
            tls_truncated.inc_by(d(k::TLS_TRUNCATED));
            tls_ring_full.inc_by(d(k::TLS_RING_FULL) + d(k::TLS_READ_FAILED));
            last_kernel = now;
            let t = streams.stats;
            m.tls_connections
                .inc_by(t.connections.saturating_sub(last_tls.connections));
            m.tls_unresolved
                .inc_by(t.unresolved.saturating_sub(last_tls.unresolved));
            m.tls_bytes.inc_by(t.bytes.saturating_sub(last_tls.bytes));
            m.tls_mirrored
                .inc_by(t.mirrored.saturating_sub(last_tls.mirrored));
            m.tls_truncated_bytes
                .inc_by(t.truncated_bytes.saturating_sub(last_tls.truncated_bytes));
            last_tls = t;
            m.tls_open.set(streams.len() as i64);
            m.ebpf_interfaces.set(cap.interfaces().len() as i64);
            m.tls_libraries.set(cap.libraries() as i64);
            for (i, r) in self.receivers.iter().enumerate() {
                m.queue_depth
                    .get_or_create(&label("worker", &i.to_string()))
                    .set(r.len() as i64);
            }
        };
        while !stop.load(Ordering::Relaxed) {
            let mut fds = [
                libc::pollfd {
                    fd: packets.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: tls.as_ref().map_or(-1, |t| t.as_raw_fd()),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfds (a negative fd is ignored by poll).
            unsafe { libc::poll(fds.as_mut_ptr(), 2, 100) };
            for _ in 0..RING_BATCH {
                let Some(item) = packets.next() else {
                    break;
                };
                match record::packet(&item) {
                    Ok(p) => {
                        let h = p.header;
                        let head = SegmentHead {
                            ts: cap.to_micros(h.ts_ns),
                            src: std::net::SocketAddr::new(p.src, h.sport),
                            dst: std::net::SocketAddr::new(p.dst, h.dport),
                            seq: h.seq,
                            ack: h.ack,
                            flags: h.flags,
                            window: h.window,
                            len: h.payload_len,
                        };
                        batches.push(head, false, p.payload);
                    }
                    Err(_) => {
                        m.ebpf_bad_records.inc();
                    }
                }
            }
            if let Some(ring) = tls.as_mut() {
                use crate::capture::ebpf::procfs::socket_addresses;
                for _ in 0..RING_BATCH {
                    let Some(item) = ring.next() else {
                        break;
                    };
                    if record::tls_ring_kind(&item) == Some(tapline_ebpf_common::KIND_SOCKET) {
                        match record::socket(&item) {
                            Ok((s, peer)) => {
                                let found = socket_addresses(&proc, s.tgid, s.fd);
                                if s.role != tapline_ebpf_common::SOCKET_IN_USE {
                                    let ts = cap.to_micros(
                                        u64::try_from(crate::capture::ebpf::monotonic_ns().max(0))
                                            .unwrap_or(0),
                                    );
                                    streams.socket_opened(s.tgid, s.fd, ts, &mut |head, data| {
                                        batches.push(head, true, data)
                                    });
                                }
                                match (found, peer) {
                                    (Some((l, r)), _) => sockets.insert(s.tgid, s.fd, Some(l), r),
                                    (None, Some(r)) => sockets.insert(s.tgid, s.fd, None, r),
                                    (None, None) => {}
                                }
                            }
                            Err(_) => {
                                m.ebpf_bad_records.inc();
                            }
                        }
                        continue;
                    }
                    match record::tls(&item) {
                        Ok(v) => {
                            let ts = cap.to_micros(v.header.ts_ns);
                            streams.record(
                                &v,
                                ts,
                                &mut |pid, fd| {
                                    sockets
                                        .full(pid, fd)
                                        .or_else(|| socket_addresses(&proc, pid, fd))
                                        .or_else(|| sockets.peer(pid, fd))
                                },
                                &mut |head, data| batches.push(head, true, data),
                            );
                        }
                        Err(_) => {
                            m.ebpf_bad_records.inc();
                        }
                    }
                }
            }
            let now = cap
                .to_micros(u64::try_from(crate::capture::ebpf::monotonic_ns().max(0)).unwrap_or(0));
            streams.release_due(now, &mut |head, data| batches.push(head, true, data));
            if last_refresh.elapsed() >= Duration::from_secs(2) {
                last_refresh = Instant::now();
                for line in cap.refresh() {
                    eprintln!("ebpf: {line}");
                }
                streams.expire(now, TLS_IDLE, &mut |head, data| {
                    batches.push(head, true, data)
                });
                publish(&cap, &streams);
            }
            batches.flush();
        }
        streams.release_due(Micros::MAX, &mut |head, data| {
            batches.push(head, true, data)
        });
        batches.flush();
        publish(&cap, &streams);
        cap.detach();
    }
}

struct Worker {
    index: usize,
    rx: Receiver<FrameMsg>,
    pool: Sender<Vec<u8>>,
    config: LiveConfig,
    metrics: Arc<Metrics>,
    output: SharedOutput,
    reload: Arc<Mutex<(u64, Option<ExtractConfig>)>>,
    shipper: Option<Arc<crate::ship::Shipper>>,
}

/// Bytes of log a worker gathers before taking the output lock.
const WRITE_BATCH: usize = 64 << 10;

/// Where a worker's transactions go: the log buffer and, when shipping, the batcher.
struct WorkerSink {
    index: usize,
    log: LogFormat,
    redact: bool,
    bodies: bool,
    pending: Vec<u8>,
    extractor: Extractor,
    redactor: Redactor,
    batcher: crate::ship::EventBatcher,
    shipper: Option<Arc<crate::ship::Shipper>>,
}

impl WorkerSink {
    fn emit(&mut self, meta: &FlowMeta, tx: Transaction) {
        if self.log == LogFormat::Http {
            let opts = EveOptions {
                bodies: self.bodies,
                redact: self.redact.then_some(&self.redactor),
            };
            write_transaction(&mut self.pending, meta, &tx, &opts);
        }
        if self.log == LogFormat::Events || self.shipper.is_some() {
            let Some(e) = self.extractor.event(meta, &tx) else {
                return;
            };
            if self.log == LogFormat::Events && serde_json::to_writer(&mut self.pending, &e).is_ok()
            {
                self.pending.push(b'\n');
            }
            if self.shipper.is_some() {
                let full = self.batcher.push(e);
                self.submit(full);
            }
        }
    }

    fn submit(&self, batch: Option<Vec<tapline_wire::Event>>) {
        if let (Some(s), Some(b)) = (&self.shipper, batch)
            && let Err(e) = s.submit(b)
        {
            eprintln!("worker {}: {e}", self.index);
        }
    }

    /// Ships the batch being gathered when it is old enough, or now at the end.
    fn flush_batch(&mut self, ended: bool) {
        if self.shipper.is_some() {
            let b = if ended {
                self.batcher.take()
            } else {
                self.batcher.due()
            };
            self.submit(b);
        }
    }
}

impl Worker {
    fn run(self) {
        let mut pipeline = Pipeline::new(self.config.pipeline);
        // TLS plaintext, apart from the ciphertext of the same connections.
        let mut plaintext: Option<Pipeline> = None;
        let mut plain_snapshot = Snapshot::default();
        let extractor = match Extractor::new(self.config.extract.clone()) {
            Ok(mut x) => {
                x.set_agent(&self.config.agent);
                x
            }
            Err(e) => {
                eprintln!("worker {}: {e}", self.index);
                return;
            }
        };
        let mut sink = WorkerSink {
            index: self.index,
            log: self.config.log,
            redact: self.config.redact,
            bodies: self.config.bodies,
            pending: Vec::with_capacity(WRITE_BATCH * 2),
            redactor: Redactor::new(extractor.config(), extractor.fingerprinter().clone()),
            extractor,
            batcher: crate::ship::EventBatcher::new(&self.config.ship),
            shipper: self.shipper.clone(),
        };
        let mut generation = 0u64;
        let mut snapshot = Snapshot::default();
        let mut events_seen = 0u64;
        let mut last_tick = Instant::now();
        loop {
            let msg = self.rx.recv_timeout(Duration::from_millis(200));
            let ended = matches!(msg, Err(crossbeam_channel::RecvTimeoutError::Disconnected));
            if let Ok(m) = msg {
                let mut emit = |meta: &FlowMeta, tx| sink.emit(meta, tx);
                match &m.payload {
                    Payload::Frame { linktype } => {
                        pipeline.frame(*linktype, m.ts, &m.buf, &mut emit)
                    }
                    Payload::Segments(heads) => {
                        let mut at = 0usize;
                        for (h, len, tls) in heads {
                            let data = m.buf.get(at..at + *len as usize).unwrap_or_default();
                            at += *len as usize;
                            let seg = h.segment(data);
                            if *tls {
                                plaintext
                                    .get_or_insert_with(|| Pipeline::new(self.config.pipeline))
                                    .segment(&seg, &mut emit);
                            } else {
                                pipeline.segment(&seg, &mut emit);
                            }
                        }
                    }
                }
                let _ = self.pool.try_send(m.buf);
            }
            sink.flush_batch(ended);
            let idle = last_tick.elapsed() >= Duration::from_secs(1);
            if ended || idle {
                last_tick = Instant::now();
                // Wall-clock time drives the idle timeouts when the link is quiet.
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_micros() as i64)
                    .unwrap_or(0);
                if ended {
                    pipeline.finish(&mut |meta, tx| sink.emit(meta, tx));
                    if let Some(p) = plaintext.as_mut() {
                        p.finish(&mut |meta, tx| sink.emit(meta, tx));
                    }
                    sink.flush_batch(true);
                } else {
                    pipeline.tick(now, &mut |meta, tx| sink.emit(meta, tx));
                    if let Some(p) = plaintext.as_mut() {
                        p.tick(now, &mut |meta, tx| sink.emit(meta, tx));
                    }
                }
                self.metrics
                    .add_pipeline(&pipeline.stats(), &pipeline.flow_stats(), &mut snapshot);
                if let Some(p) = &plaintext {
                    self.metrics
                        .add_pipeline(&p.stats(), &p.flow_stats(), &mut plain_snapshot);
                }
                self.metrics
                    .events
                    .inc_by(sink.extractor.stats.events.saturating_sub(events_seen));
                events_seen = sink.extractor.stats.events;
                if let Ok(r) = self.reload.lock()
                    && r.0 != generation
                    && let Some(cfg) = &r.1
                {
                    generation = r.0;
                    match Extractor::new(cfg.clone()) {
                        Ok(mut x) => {
                            x.set_agent(&self.config.agent);
                            sink.redactor = Redactor::new(x.config(), x.fingerprinter().clone());
                            sink.extractor = x;
                            events_seen = 0;
                        }
                        Err(e) => eprintln!("worker {}: reload refused: {e}", self.index),
                    }
                }
            }
            let pending = &mut sink.pending;
            if pending.len() >= WRITE_BATCH || ((ended || idle) && !pending.is_empty()) {
                if let Ok(mut o) = self.output.lock() {
                    let _ = o.write_all(pending);
                    if ended || idle {
                        let _ = o.flush();
                    }
                }
                pending.clear();
            }
            if ended {
                return;
            }
        }
    }
}
