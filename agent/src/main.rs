//! `tapline-agent`: the Tapline host agent.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};

use tapline_agent::capture::file::{Frame, read_frames};
use tapline_agent::config::AgentConfig;
use tapline_agent::decode::Decoder;
use tapline_agent::extract::Extractor;
use tapline_agent::extract::redact::Redactor;
use tapline_agent::output::eve::{EveOptions, write_transaction};
use tapline_agent::pipeline::{Pipeline, PipelineConfig};

#[derive(Parser)]
#[command(name = "tapline-agent", version, about = "Passive API traffic sensor")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Read pcap/pcapng files (or `-` for stdin) and log their HTTP transactions.
    Read(Box<ReadArgs>),
    /// Capture live traffic from network interfaces (span ports, host interfaces).
    Run(Box<RunArgs>),
}

#[derive(Args)]
struct RunArgs {
    /// Interface to capture on (repeat for several; `any` for all). Default: the
    /// config's `[capture] ifaces`.
    #[arg(long = "iface")]
    ifaces: Vec<String>,
    /// Capture filter, tcpdump syntax (e.g. 'tcp port 80 or tcp port 8080').
    #[arg(long)]
    filter: Option<String>,
    /// Put the interfaces in promiscuous mode (span ports).
    #[arg(long)]
    promisc: bool,
    /// Capture source: `pcap` (libpcap), `ebpf` (tc/cgroup programs, OpenSSL uprobes), or
    /// `auto` (eBPF where it loads, else libpcap, saying why) [default: pcap].
    #[arg(long, value_parser = ["pcap", "ebpf", "auto"])]
    source: Option<String>,
    /// eBPF: capture the traffic of this cgroup v2 subtree (a pod, a slice) with
    /// cgroup_skb programs.
    #[arg(long)]
    cgroup: Option<PathBuf>,
    /// eBPF: read HTTPS in clear through uprobes on OpenSSL (libssl.so.3).
    #[arg(long)]
    tls: bool,
    /// eBPF: payload bytes kept per packet, at most 16384 [default: 16384].
    #[arg(long)]
    snaplen: Option<u32>,
    /// eBPF: plaintext bytes kept per TLS read or write, at most 16384 [default: 16384].
    #[arg(long)]
    tls_snaplen: Option<u32>,
    /// Only connections with this port at either end (repeat); filtered in the kernel
    /// with eBPF, turned into a capture filter with libpcap.
    #[arg(long = "port")]
    ports: Vec<u16>,
    /// eBPF: only connections with an address in this network at either end (repeat).
    #[arg(long = "cidr")]
    cidrs: Vec<String>,
    /// eBPF: ring buffer for packets, in MiB [default: 32].
    #[arg(long)]
    ring_mb: Option<u32>,
    /// eBPF: how tc programs attach: `tcx` links (Linux 6.6+), `netlink` filters on a
    /// clsact qdisc, or `auto` [default: auto].
    #[arg(long, value_parser = ["auto", "tcx", "netlink"])]
    tc_attach: Option<String>,
    /// Kernel capture buffer per interface, in MiB [default: 32].
    #[arg(long)]
    buffer_mb: Option<usize>,
    /// Worker threads; connections are spread over them by a symmetric flow hash
    /// [default: 1].
    #[arg(long)]
    workers: Option<usize>,
    /// Frames queued per worker before new ones are dropped and counted [default: 8192].
    #[arg(long)]
    queue: Option<usize>,
    /// What to write: `http` (the EVE transaction log, the default unless shipping) or
    /// `events` (the events, as JSON lines).
    #[arg(long, value_enum)]
    log: Option<LogKind>,
    #[command(flatten)]
    ship: ShipArgs,
    /// Write the log here (rotated at --rotate-mb) instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Size at which --out is rotated (FILE becomes FILE.1), in MiB; 0 never.
    #[arg(long, default_value_t = 256)]
    rotate_mb: u64,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    #[arg(long)]
    config: Option<PathBuf>,
    #[arg(long)]
    no_redact: bool,
    #[arg(long)]
    bodies: bool,
    #[command(flatten)]
    tuning: Tuning,
}

#[derive(Args)]
struct ReadArgs {
    /// Capture files; `-` reads standard input.
    #[arg(required = true)]
    files: Vec<PathBuf>,
    /// Write the log here instead of standard output.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Add decoded request/response bodies (base64, bounded by --body-limit).
    #[arg(long)]
    bodies: bool,
    /// Print end-of-run counters to standard error.
    #[arg(long)]
    stats: bool,
    /// What to write: `http` (the EVE transaction log, the default unless shipping) or
    /// `events` (the events the agent ships, as JSON lines).
    #[arg(long, value_enum)]
    log: Option<LogKind>,
    #[command(flatten)]
    ship: ShipArgs,
    /// Agent configuration (TOML): extraction rules, fingerprint key, trusted proxies.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Log credentials (authorization, cookies, API keys, secret parameters) as sent
    /// instead of as fingerprints. For forensics on the node only.
    #[arg(long)]
    no_redact: bool,
    #[command(flatten)]
    tuning: Tuning,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogKind {
    Http,
    Events,
}

/// Shipping to a collector.
#[derive(Args, Clone)]
struct ShipArgs {
    /// Ship events to the collector(s) named in the bundle.
    #[arg(long)]
    ship: bool,
    /// Agent bundle from `tapline-collector enroll` [default: the config's [ship] bundle].
    #[arg(long)]
    bundle: Option<PathBuf>,
    /// Spool directory: unacked batches survive restarts there [default: [ship] spool_dir,
    /// else memory].
    #[arg(long)]
    spool: Option<PathBuf>,
    /// Spool bound in MiB; batches past it are dropped and counted [default: 256 with
    /// --spool, 64 in memory].
    #[arg(long)]
    spool_max_mb: Option<f64>,
    /// Collector address (`host:port`) instead of the bundle's list; repeat for failover.
    #[arg(long = "collector")]
    collectors: Vec<String>,
}

impl ShipArgs {
    /// Loads the bundle and applies it to the configuration (agent name, fingerprint
    /// key); returns it with the effective ship settings.
    fn prepare(
        &self,
        config: &mut AgentConfig,
    ) -> Result<
        Option<(
            tapline_wire::bundle::Bundle,
            tapline_agent::ship::ShipConfig,
        )>,
    > {
        if !self.ship {
            return Ok(None);
        }
        let mut ship = config.ship.clone();
        if let Some(b) = &self.bundle {
            ship.bundle = Some(b.clone());
        }
        if let Some(d) = &self.spool {
            ship.spool_dir = Some(d.clone());
        }
        if let Some(m) = self.spool_max_mb {
            ship.spool_max_mb = Some(m);
        }
        if !self.collectors.is_empty() {
            ship.collectors = self.collectors.clone();
        }
        let path = ship.bundle.clone().context(
            "--ship needs a bundle: pass --bundle FILE (from `tapline-collector enroll`)",
        )?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading the bundle {}", path.display()))?;
        let bundle = tapline_wire::bundle::Bundle::parse(&text)
            .with_context(|| format!("in the bundle {}", path.display()))?;
        config
            .apply_bundle(&bundle)
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("with the bundle {}", path.display()))?;
        Ok(Some((bundle, ship)))
    }
}

fn start_shipper(
    agent: &str,
    prepared: &(
        tapline_wire::bundle::Bundle,
        tapline_agent::ship::ShipConfig,
    ),
    metrics: tapline_agent::ship::ShipMetrics,
) -> Result<tapline_agent::ship::Shipper> {
    let (bundle, ship) = prepared;
    tapline_agent::ship::Shipper::start(agent, bundle, ship, metrics)
        .context("starting the shipper")
}

/// Data-path settings shared by every capture source.
#[derive(Args, Clone, Copy)]
struct Tuning {
    /// Bytes of each decoded body kept for later stages and --bodies.
    #[arg(long, default_value_t = 64 * 1024)]
    body_limit: usize,
    /// Drop TCP segments with a bad checksum (off: offload makes them common).
    #[arg(long)]
    validate_checksums: bool,
    /// Ignore connections whose handshake was not captured.
    #[arg(long)]
    no_midstream: bool,
    /// Whether VLAN ids separate connections (false when the two directions of a
    /// mirrored link arrive on different VLANs).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    vlan_tracking: bool,
    /// Concurrent connections tracked before the least active are evicted.
    #[arg(long, default_value_t = 65_536)]
    max_flows: usize,
    /// Seconds without a packet before a connection is ended.
    #[arg(long, default_value_t = 600)]
    flow_timeout: u64,
    /// Out-of-order bytes buffered per direction before a hole is given up on.
    #[arg(long, default_value_t = 1 << 20)]
    max_pending_bytes: usize,
}

impl Tuning {
    fn config(&self) -> PipelineConfig {
        let mut c = PipelineConfig {
            decoder: Decoder {
                validate_checksums: self.validate_checksums,
            },
            ..Default::default()
        };
        c.http.body.capture_limit = self.body_limit;
        c.flows.midstream = !self.no_midstream;
        c.flows.use_vlan = self.vlan_tracking;
        c.flows.max_flows = self.max_flows.max(1);
        c.flows.idle_timeout = (self.flow_timeout as i64).saturating_mul(1_000_000);
        c.flows.stream.max_pending_bytes = self.max_pending_bytes;
        c
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Read(args) => read(*args),
        Command::Run(args) => run(*args),
    }
}

fn read(args: ReadArgs) -> Result<()> {
    let mut out: Box<dyn Write> = match &args.out {
        Some(p) => Box::new(File::create(p).with_context(|| format!("creating {}", p.display()))?),
        None => Box::new(io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(1 << 16, &mut out);
    let mut agent_config = match &args.config {
        Some(p) => AgentConfig::load(p)?,
        None => AgentConfig::default(),
    };
    let ship = args.ship.prepare(&mut agent_config)?;
    let log = args.log.or(if ship.is_some() {
        None
    } else {
        Some(LogKind::Http)
    });
    let shipper = match &ship {
        Some(p) => Some(start_shipper(
            &agent_config.agent_id(),
            p,
            Default::default(),
        )?),
        None => None,
    };
    let mut batcher = ship
        .as_ref()
        .map(|(_, c)| tapline_agent::ship::EventBatcher::new(c));
    let mut submit_err: Option<anyhow::Error> = None;
    let mut extractor =
        Extractor::new(agent_config.extract.clone()).context("in the [extract] configuration")?;
    extractor.set_agent(&agent_config.agent_id());
    if extractor.fingerprinter().ephemeral && log == Some(LogKind::Events) {
        eprintln!(
            "note: no [extract] fingerprint_key configured: fingerprints are keyed with a random key and differ between runs and nodes"
        );
    }
    let redactor = Redactor::new(extractor.config(), extractor.fingerprinter().clone());
    let mut config = args.tuning.config();
    if !args.bodies && log == Some(LogKind::Http) && ship.is_none() {
        // The HTTP log shows no body content: none is kept (sizes are still counted).
        config.http.body.capture_limit = 0;
    }
    let mut pipeline = Pipeline::new(config);
    let opts = EveOptions {
        bodies: args.bodies,
        redact: (!args.no_redact).then_some(&redactor),
    };
    // Log lines are gathered here and written in large blocks, bypassing the writer's
    // buffer (one copy of the log fewer).
    const LOG_BLOCK: usize = 1 << 16;
    let mut line = Vec::with_capacity(LOG_BLOCK + 8192);
    let mut write_err: Option<io::Error> = None;
    let mut sink = |meta: &_, tx: _| {
        if log == Some(LogKind::Http) {
            write_transaction(&mut line, meta, &tx, &opts);
        }
        if log == Some(LogKind::Events) || shipper.is_some() {
            let Some(event) = extractor.event(meta, &tx) else {
                return;
            };
            if log == Some(LogKind::Events) && serde_json::to_writer(&mut line, &event).is_ok() {
                line.push(b'\n');
            }
            if let (Some(s), Some(b)) = (&shipper, &mut batcher)
                && let Some(batch) = b.push(event)
                && let Err(e) = s.submit(batch)
                && submit_err.is_none()
            {
                submit_err = Some(e.into());
            }
        }
        if line.len() >= LOG_BLOCK {
            write_log(&mut out, &line, &mut write_err, shipper.is_some());
            line.clear();
        }
    };
    let mut truncated_files = 0;
    let show_progress = io::stderr().is_terminal();
    for path in &args.files {
        // Read in large blocks, front to back; stdin the same way.
        let (file, size) = if path.as_os_str() == "-" {
            (None, 0)
        } else {
            let f = File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            (Some(f), size)
        };
        let bar = if show_progress && size > 0 {
            let b = ProgressBar::new(size);
            b.set_style(
                ProgressStyle::with_template(
                    "{msg} {bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            b.set_message(path.display().to_string());
            Some(b)
        } else {
            None
        };
        let on_frame = |f: Frame<'_>| pipeline.frame(f.linktype, f.ts, f.data, &mut sink);
        let on_progress = |done| {
            if let Some(b) = &bar {
                b.set_position(done)
            }
        };
        let summary = match file {
            Some(f) => read_frames(f, on_frame, on_progress),
            None => read_frames(io::stdin(), on_frame, on_progress),
        }
        .with_context(|| format!("reading {}", path.display()))?;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        if summary.truncated {
            truncated_files += 1;
            eprintln!(
                "warning: {} ends inside a packet record; the partial record was skipped",
                path.display()
            );
        }
    }
    pipeline.finish(&mut sink);
    write_log(&mut out, &line, &mut write_err, shipper.is_some());
    if let Some(e) = write_err {
        return Err(e).context("writing the log");
    }
    if let (Some(s), Some(b)) = (&shipper, &mut batcher)
        && let Some(batch) = b.take()
        && let Err(e) = s.submit(batch)
    {
        submit_err.get_or_insert(e.into());
    }
    if let Some(e) = submit_err {
        return Err(e).context("spooling events");
    }
    let ship_report = shipper.map(|s| {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            let _ = signal_hook::flag::register(sig, stop.clone());
        }
        s.finish(|| stop.load(std::sync::atomic::Ordering::Relaxed))
    });
    if args.stats {
        eprint!(
            "{}",
            tapline_agent::stats::render(
                &pipeline.stats(),
                &pipeline.flow_stats(),
                truncated_files
            )
        );
        if log == Some(LogKind::Events) || ship_report.is_some() {
            eprint!("{}", tapline_agent::stats::render_extract(&extractor.stats));
        }
    }
    if let Some(r) = ship_report {
        eprintln!(
            "shipped: {} events acked ({} batches were already stored), {} batches not acked, {} events in {} batches dropped (spool full)",
            r.events_acked, r.duplicates, r.pending_batches, r.dropped_events, r.dropped_batches
        );
        if let Some(why) = r.refused {
            anyhow::bail!("the collector refused this agent: {why}");
        }
        anyhow::ensure!(
            r.pending_batches == 0 && r.dropped_batches == 0,
            "not every event was delivered: {} batches not acked (kept in the spool), {} events dropped",
            r.pending_batches,
            r.dropped_events
        );
    }
    Ok(())
}

/// Writes (and flushes) a block of the HTTP or event log; the first error is kept in
/// `err` and later blocks are dropped. A reader that went away (`| head`) wants nothing
/// more: `read` then ends at once and quietly, unless events are still to be shipped.
fn write_log(out: &mut impl Write, block: &[u8], err: &mut Option<io::Error>, shipping: bool) {
    if err.is_none()
        && let Err(e) = out.write_all(block).and_then(|()| out.flush())
    {
        if e.kind() == io::ErrorKind::BrokenPipe && !shipping {
            std::process::exit(0);
        }
        *err = Some(e);
    }
}

/// `10.0.0.0/8`, `2001:db8::/32`, or an address alone (a host).
fn parse_cidr(s: &str) -> Result<(std::net::IpAddr, u8)> {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (ip, Some(len)),
        None => (s, None),
    };
    let ip: std::net::IpAddr = ip
        .parse()
        .with_context(|| format!("--cidr {s}: not an address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .with_context(|| format!("--cidr {s}: prefix length must be 0 to {max}"))?,
        None => max,
    };
    Ok((ip, len))
}

/// Interface patterns (`veth*`) as the names present now, for libpcap (which opens
/// names, not patterns).
fn expand_patterns(ifaces: &[String]) -> Vec<String> {
    let present: Vec<String> = std::fs::read_dir("/sys/class/net")
        .map(|d| {
            let mut v: Vec<String> = d
                .flatten()
                .filter_map(|e| e.file_name().into_string().ok())
                .collect();
            v.sort();
            v
        })
        .unwrap_or_default();
    let mut out = Vec::new();
    for i in ifaces {
        if i.contains(['*', '?']) {
            out.extend(
                present
                    .iter()
                    .filter(|n| tapline_agent::capture::ebpf::matches(i, n))
                    .cloned(),
            );
        } else {
            out.push(i.clone());
        }
    }
    out.dedup();
    out
}

fn run(args: RunArgs) -> Result<()> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use tapline_agent::live::{Live, LiveConfig, LogFormat, Metrics, RotatingFile, SharedOutput};

    let load = |path: &Option<PathBuf>| -> Result<AgentConfig> {
        let c = match path {
            Some(p) => AgentConfig::load(p)?,
            None => AgentConfig::default(),
        };
        // Validate now, so a bad rule is one clear line before anything starts.
        Extractor::new(c.extract.clone()).context("in the [extract] configuration")?;
        Ok(c)
    };
    let mut agent_config = load(&args.config)?;
    let ship = args.ship.prepare(&mut agent_config)?;
    Extractor::new(agent_config.extract.clone()).context("in the [extract] configuration")?;
    let log = args.log.or(if ship.is_some() {
        None
    } else {
        Some(LogKind::Http)
    });
    let cap = &agent_config.capture;
    let ifaces = if args.ifaces.is_empty() {
        cap.ifaces.clone()
    } else {
        args.ifaces.clone()
    };
    let source = args
        .source
        .clone()
        .or(cap.source.clone())
        .unwrap_or_else(|| "pcap".to_string());
    let ebpf_options = || -> Result<tapline_agent::capture::ebpf::EbpfOptions> {
        use tapline_agent::capture::ebpf::{EbpfOptions, TcAttach};
        let d = EbpfOptions::default();
        let cidrs = args
            .cidrs
            .iter()
            .chain(cap.cidrs.iter())
            .map(|c| parse_cidr(c))
            .collect::<Result<Vec<_>>>()?;
        Ok(EbpfOptions {
            ifaces: ifaces.clone(),
            cgroup: args.cgroup.clone().or(cap.cgroup.clone()),
            tls: args.tls || cap.tls.unwrap_or(false),
            snaplen: args.snaplen.or(cap.snaplen).unwrap_or(d.snaplen),
            tls_snaplen: args
                .tls_snaplen
                .or(cap.tls_snaplen)
                .unwrap_or(d.tls_snaplen),
            ports: args.ports.iter().chain(cap.ports.iter()).copied().collect(),
            cidrs,
            ring_bytes: args
                .ring_mb
                .or(cap.ring_mb)
                .map_or(d.ring_bytes, |m| m << 20),
            tls_ring_bytes: d.tls_ring_bytes,
            attach: match args.tc_attach.as_deref().or(cap.tc_attach.as_deref()) {
                Some("tcx") => TcAttach::Tcx,
                Some("netlink") => TcAttach::Netlink,
                None | Some("auto") => TcAttach::Auto,
                Some(other) => anyhow::bail!("tc_attach `{other}`: expected auto, tcx or netlink"),
            },
            proc: d.proc,
        })
    };
    let mut capture_source = match source.as_str() {
        "pcap" => tapline_agent::live::CaptureSource::Pcap,
        "ebpf" | "auto" => tapline_agent::live::CaptureSource::Ebpf(ebpf_options()?),
        other => anyhow::bail!("capture source `{other}`: expected pcap, ebpf or auto"),
    };
    let uses_pcap = matches!(capture_source, tapline_agent::live::CaptureSource::Pcap);
    anyhow::ensure!(
        !ifaces.is_empty() || !uses_pcap,
        "no interface to capture on: pass --iface IF (or set [capture] ifaces in --config)"
    );
    let pcap_filter = |filter: Option<String>| -> String {
        let ports: Vec<u16> = args.ports.iter().chain(cap.ports.iter()).copied().collect();
        match filter {
            Some(f) => f,
            None if !ports.is_empty() => ports
                .iter()
                .map(|p| format!("tcp port {p}"))
                .collect::<Vec<_>>()
                .join(" or "),
            None => String::new(),
        }
    };
    let workers = args.workers.or(cap.workers).unwrap_or(1).max(1);
    let mut pipeline = args.tuning.config();
    if !args.bodies && log == Some(LogKind::Http) && ship.is_none() {
        pipeline.http.body.capture_limit = 0;
    }
    let mut config = LiveConfig {
        source: capture_source.clone(),
        ifaces: expand_patterns(&ifaces),
        options: tapline_agent::capture::live::LiveOptions {
            promisc: args.promisc || cap.promisc.unwrap_or(false),
            filter: pcap_filter(args.filter.clone().or(cap.filter.clone())),
            buffer_bytes: args.buffer_mb.or(cap.buffer_mb).unwrap_or(32) << 20,
            snaplen: 65_535,
        },
        workers,
        queue: args.queue.or(cap.queue).unwrap_or(8192).max(1),
        pipeline,
        extract: agent_config.extract.clone(),
        agent: agent_config.agent_id(),
        log: match log {
            Some(LogKind::Http) => LogFormat::Http,
            Some(LogKind::Events) => LogFormat::Events,
            None => LogFormat::None,
        },
        redact: !args.no_redact,
        bodies: args.bodies,
        ship: ship.as_ref().map(|(_, c)| c.clone()).unwrap_or_default(),
    };
    let output: SharedOutput = Arc::new(Mutex::new(match &args.out {
        Some(p) => Box::new(
            RotatingFile::create(p.clone(), args.rotate_mb << 20)
                .with_context(|| format!("creating {}", p.display()))?,
        ),
        None => Box::new(io::stdout()),
    }));
    let metrics = Arc::new(Metrics::new());
    let stop = Arc::new(AtomicBool::new(false));
    let hup = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone())
        .context("installing signal handlers")?;
    let metrics_server = match args.metrics.or(cap.metrics) {
        Some(addr) => Some(
            tapline_agent::live::serve_metrics(addr, metrics.clone(), stop.clone())
                .with_context(|| format!("serving metrics on {addr}"))?,
        ),
        None => None,
    };
    let shipper = match &ship {
        Some(p) => Some(Arc::new(start_shipper(
            &agent_config.agent_id(),
            p,
            metrics.ship.clone(),
        )?)),
        None => None,
    };
    if !uses_pcap && (args.filter.is_some() || cap.filter.is_some()) {
        anyhow::bail!(
            "--filter (tcpdump syntax) applies to libpcap; with eBPF use --port and --cidr"
        );
    }
    let coverage_metrics = metrics.clone();
    let live = match Live::start(
        config.clone(),
        metrics.clone(),
        output.clone(),
        shipper.clone(),
    ) {
        Ok(live) => live,
        Err(e) if source == "auto" && !config.ifaces.is_empty() => {
            eprintln!(
                "eBPF capture unavailable ({e}); falling back to libpcap on {}",
                config.ifaces.join(", ")
            );
            capture_source = tapline_agent::live::CaptureSource::Pcap;
            config.source = capture_source.clone();
            Live::start(config.clone(), metrics, output, shipper.clone())?
        }
        Err(e) => return Err(e.into()),
    };
    let what = match &capture_source {
        tapline_agent::live::CaptureSource::Pcap => {
            format!("{} (libpcap)", config.ifaces.join(", "))
        }
        tapline_agent::live::CaptureSource::Ebpf(o) => {
            let mut parts = Vec::new();
            if !o.ifaces.is_empty() {
                parts.push(format!("interfaces {}", o.ifaces.join(", ")));
            }
            if let Some(c) = &o.cgroup {
                parts.push(format!("cgroup {}", c.display()));
            }
            if o.tls {
                parts.push("OpenSSL".to_string());
            }
            format!("{} (eBPF)", parts.join(", "))
        }
    };
    if let Some(s) = &shipper {
        let name = capture_source.name();
        s.set_coverage_source(Arc::new(move || coverage_metrics.coverage(name)));
    }
    eprintln!(
        "capturing on {what} ({workers} worker{})",
        if workers > 1 { "s" } else { "" }
    );
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(std::time::Duration::from_millis(100));
        if hup.swap(false, Ordering::Relaxed) {
            // Extraction rules reload; capture settings need a restart.
            let reloaded = load(&args.config).and_then(|mut c| {
                if let Some((b, _)) = &ship {
                    c.apply_bundle(b).map_err(anyhow::Error::msg)?;
                }
                Ok(c)
            });
            match reloaded {
                Ok(c) => {
                    live.reload(c.extract);
                    eprintln!("configuration reloaded (extraction rules)");
                }
                Err(e) => eprintln!("configuration not reloaded: {e:#}"),
            }
        }
        if live.capture_failed() {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let result = live.shutdown();
    if let Some(s) = shipper {
        // The workers are gone: this is the last reference. The last batches get a few
        // seconds to be acked (a second signal cuts it short); the rest stays spooled.
        if let Ok(s) = Arc::try_unwrap(s) {
            stop.store(false, Ordering::Relaxed);
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            let r =
                s.finish(|| stop.load(Ordering::Relaxed) || std::time::Instant::now() >= deadline);
            eprintln!(
                "shipping stopped: {} events acked this run, {} batches not acked{}, {} events dropped (spool full)",
                r.events_acked,
                r.pending_batches,
                if r.pending_batches > 0 {
                    " (kept in the spool when it is on disk)"
                } else {
                    ""
                },
                r.dropped_events
            );
        }
    }
    if let Some(h) = metrics_server {
        let _ = h.join();
    }
    result?;
    Ok(())
}
