//! `tapline-collector`: enrollment, the ingest server and the query commands.

use std::io::{self, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use tapline_collector::config::CollectorConfig;
use tapline_collector::log;
use tapline_collector::pki::{self, DataDir, InitOptions};
use tapline_collector::store::{EventQuery, EventStore, SqliteStore};

/// Decoding batches allocates many small strings: mimalloc makes ingest ~1.5× faster
/// than the system allocator (`cargo xtask bench ship`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "tapline-collector", version, about = "Tapline collector")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a data directory: CA, server certificate, fingerprint key, configuration.
    Init(InitArgs),
    /// Issue an agent bundle (certificate, CA, collector addresses, fingerprint key).
    Enroll(EnrollArgs),
    /// Revoke every certificate issued to an agent name; it is refused from its next
    /// connection on.
    Revoke(RevokeArgs),
    /// Receive and store agents' events.
    Serve(ServeArgs),
    /// Query stored events.
    Events(EventsArgs),
    /// List agents: connection, last sequence, lag, drops.
    Agents(AgentsArgs),
}

#[derive(Args)]
struct InitArgs {
    #[arg(long)]
    data: PathBuf,
    /// Address to listen on [default: 0.0.0.0:4780].
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Address agents dial (`host:port`), written into bundles; repeat for failover
    /// [default: 127.0.0.1:<listen port>].
    #[arg(long)]
    advertise: Vec<String>,
    /// Extra DNS names or addresses for the server certificate.
    #[arg(long = "name")]
    names: Vec<String>,
    /// Serve Prometheus metrics on this address.
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
    /// Replace the keys of an existing data directory (every bundle must be reissued).
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
struct EnrollArgs {
    #[arg(long)]
    data: PathBuf,
    /// The agent's name (its node name), or the fleet's name with --fleet.
    #[arg(long)]
    name: String,
    /// Where to write the bundle (readable by its owner only).
    #[arg(long)]
    out: PathBuf,
    /// One bundle shared by many nodes (a DaemonSet): each agent names itself from
    /// NODE_NAME or its host name.
    #[arg(long)]
    fleet: bool,
}

#[derive(Args)]
struct RevokeArgs {
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    name: String,
}

#[derive(Args)]
struct ServeArgs {
    #[arg(long)]
    data: PathBuf,
    /// Configuration file [default: DATA/collector.toml].
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override the configured listen address.
    #[arg(long)]
    listen: Option<std::net::SocketAddr>,
    /// Override the configured metrics address.
    #[arg(long)]
    metrics: Option<std::net::SocketAddr>,
}

#[derive(Args)]
struct EventsArgs {
    #[arg(long)]
    data: PathBuf,
    /// An actor: fingerprint (16 hex digits), client address, Basic user, or a JWT claim
    /// (`sub=alice`, or just `alice`).
    #[arg(long)]
    actor: Option<String>,
    /// An endpoint template, optionally with its method: `GET /v1/invoices/{invoice}`.
    #[arg(long)]
    endpoint: Option<String>,
    /// Only this agent's events.
    #[arg(long)]
    agent: Option<String>,
    /// From this time: RFC 3339 (`2026-11-25T10:00:00Z`), a duration ago (`2h`, `7d`) or
    /// Unix seconds.
    #[arg(long)]
    since: Option<String>,
    /// Up to (not including) this time, same forms.
    #[arg(long)]
    until: Option<String>,
    /// JSON lines (the event format of docs/events.md) instead of a table.
    #[arg(long)]
    json: bool,
    /// Print only the number of matching events.
    #[arg(long)]
    count: bool,
    /// At most this many events.
    #[arg(long)]
    limit: Option<u64>,
}

#[derive(Args)]
struct AgentsArgs {
    #[arg(long)]
    data: PathBuf,
    #[arg(long)]
    json: bool,
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Init(a) => init(a),
        Command::Enroll(a) => {
            let dir = DataDir::new(&a.data);
            let e = pki::enroll(&dir, &a.name, a.fleet, &a.out)?;
            eprintln!(
                "issued {}certificate `{}` (sha256 {}) → {}",
                if e.fleet { "fleet " } else { "" },
                e.name,
                &e.cert_sha256[..16],
                a.out.display()
            );
            Ok(())
        }
        Command::Revoke(a) => {
            let n = pki::revoke(&DataDir::new(&a.data), &a.name)?;
            eprintln!("revoked {n} certificate(s) of `{}`", a.name);
            Ok(())
        }
        Command::Serve(a) => serve(a),
        Command::Events(a) => events(a),
        Command::Agents(a) => agents(a),
    }
}

fn init(a: InitArgs) -> Result<()> {
    let mut config = CollectorConfig::default();
    if let Some(l) = a.listen {
        config.listen = l;
    }
    config.advertise = if a.advertise.is_empty() {
        vec![format!("127.0.0.1:{}", config.listen.port())]
    } else {
        a.advertise.clone()
    };
    config.metrics = a.metrics;
    let dir = DataDir::new(&a.data);
    pki::init(
        &dir,
        &InitOptions {
            names: a.names,
            config,
            force: a.force,
        },
    )?;
    eprintln!(
        "initialized {}: enroll agents with `tapline-collector enroll --data {} --name NODE --out NODE.bundle`",
        a.data.display(),
        a.data.display()
    );
    Ok(())
}

fn serve(a: ServeArgs) -> Result<()> {
    let dir = DataDir::new(&a.data);
    dir.ensure_initialized()?;
    let path = a.config.clone().unwrap_or_else(|| dir.config());
    let mut config = CollectorConfig::load(&path)?;
    if let Some(l) = a.listen {
        config.listen = l;
    }
    if a.metrics.is_some() {
        config.metrics = a.metrics;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    rt.block_on(async move {
        let server = tapline_collector::ingest::Server::start(&dir, config).await?;
        log!(
            "listening on {}{}",
            server.local_addr,
            server
                .metrics_addr
                .map(|m| format!(", metrics on http://{m}/metrics"))
                .unwrap_or_default()
        );
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        log!("stopping");
        server.shutdown().await;
        Ok(())
    })
}

fn parse_time(s: &str) -> Result<i64> {
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs.saturating_mul(1_000_000));
    }
    if let Ok(t) = humantime::parse_rfc3339_weak(s) {
        let d = t
            .duration_since(std::time::UNIX_EPOCH)
            .context("time before 1970")?;
        return Ok(d.as_micros() as i64);
    }
    if let Ok(d) = humantime::parse_duration(s) {
        return Ok(tapline_collector::store::now_us() - d.as_micros() as i64);
    }
    bail!("{s:?} is not a time: use RFC 3339, a duration ago (2h, 7d) or Unix seconds")
}

fn open_for_reading(data: &std::path::Path) -> Result<SqliteStore> {
    let dir = DataDir::new(data);
    dir.ensure_initialized()?;
    let db = dir.database();
    if !db.exists() {
        bail!(
            "{} holds no events yet (start `tapline-collector serve`)",
            data.display()
        );
    }
    SqliteStore::open_read_only(&db).with_context(|| format!("opening {}", db.display()))
}

fn events(a: EventsArgs) -> Result<()> {
    let store = open_for_reading(&a.data)?;
    let q = EventQuery {
        actor: a.actor.clone(),
        endpoint: a.endpoint.clone(),
        since_us: a.since.as_deref().map(parse_time).transpose()?,
        until_us: a.until.as_deref().map(parse_time).transpose()?,
        agent: a.agent.clone(),
    };
    if a.count {
        let n = store.count(&q)?;
        println!("{}", n.min(a.limit.unwrap_or(u64::MAX)));
        return Ok(());
    }
    let limit = a.limit.unwrap_or(u64::MAX);
    let mut n = 0u64;
    let stdout = io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut err = None;
    store.query(&q, &mut |e| {
        n += 1;
        {
            let r = if a.json {
                serde_json::to_writer(&mut out, &e)
                    .map_err(io::Error::from)
                    .and_then(|_| out.write_all(b"\n"))
            } else {
                writeln!(out, "{}", table_row(&e))
            };
            if let Err(e) = r {
                err = Some(e);
                return false;
            }
        }
        n < limit
    })?;
    if let Some(e) = err
        && e.kind() != io::ErrorKind::BrokenPipe
    {
        return Err(e).context("writing events");
    }
    let _ = out.flush();
    Ok(())
}

fn table_row(e: &tapline_wire::Event) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_micros(e.ts_us.max(0) as u64);
    let actors: Vec<String> = e
        .actors
        .iter()
        .map(|a| {
            let kind = serde_json::to_value(a.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default();
            let id = tapline_collector::store::actor_key(a).unwrap_or_default();
            let sub = a
                .claims
                .iter()
                .find(|(k, _)| k == "sub")
                .map(|(_, v)| format!("(sub={v})"))
                .unwrap_or_default();
            format!("{kind}:{id}{sub}")
        })
        .collect();
    format!(
        "{} {} {} {} {} {} {}",
        humantime::format_rfc3339_millis(t),
        e.agent,
        e.client.ip,
        e.method,
        e.endpoint,
        e.status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "-".into()),
        actors.join(",")
    )
}

fn agents(a: AgentsArgs) -> Result<()> {
    let store = open_for_reading(&a.data)?;
    let rows = store.agents()?;
    let mut out = io::stdout().lock();
    if a.json {
        for r in &rows {
            serde_json::to_writer(&mut out, r)?;
            writeln!(out)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<24} {:<9} {:>10} {:>12} {:>9} {:>8} {:>10} {:>12}  SEEN",
        "AGENT", "STATE", "LAST SEQ", "EVENTS", "LAG", "PENDING", "DUPLICATES", "DROPPED EV",
    )?;
    let now = tapline_collector::store::now_us();
    for r in rows {
        let lag = r
            .last_event_us
            .map(|t| format!("{}s", ((now - t) / 1_000_000).max(0)))
            .unwrap_or_else(|| "-".into());
        let seen =
            std::time::UNIX_EPOCH + std::time::Duration::from_micros(r.last_seen.max(0) as u64);
        writeln!(
            out,
            "{:<24} {:<9} {:>10} {:>12} {:>9} {:>8} {:>10} {:>12}  {}",
            r.name,
            if r.connected { "connected" } else { "away" },
            r.last_seq
                .map(|s| s.to_string())
                .unwrap_or_else(|| "-".into()),
            r.events,
            lag,
            r.pending_batches,
            r.duplicates,
            r.dropped_events,
            humantime::format_rfc3339_seconds(seen)
        )?;
    }
    Ok(())
}
