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
    /// List alerts, show one, resolve one (`--false-positive` suppresses similar ones).
    Alerts(AlertsArgs),
    /// Run the detectors over stored events now (with `serve` stopped): those not read
    /// yet, or all of them again with --reset (after changing `[detect]`).
    Detect(DetectArgs),
    /// Print the token of the web UI and the HTTP API (`DATA/api_token`), with how to
    /// use it.
    Token(TokenArgs),
    /// Print the fingerprint events carry for a secret (an API key, a token, a cookie),
    /// to look for a leaked one with `events --actor` or `alerts --actor`.
    Fingerprint(FingerprintArgs),
}

#[derive(Args)]
struct AlertsArgs {
    #[arg(long, global = true)]
    data: Option<PathBuf>,
    #[command(subcommand)]
    action: Option<AlertAction>,
    /// Alerts active since: RFC 3339, a duration ago (`2h`, `7d`) or Unix seconds.
    #[arg(long)]
    since: Option<String>,
    /// Lowest severity: info, low, medium, high, critical.
    #[arg(long)]
    severity: Option<String>,
    /// One alert type (`rate_spike`, `bola`, ...).
    #[arg(long = "type")]
    kind: Option<String>,
    /// open, resolved or false_positive.
    #[arg(long)]
    status: Option<String>,
    /// An actor id (16 hex digits, as alerts show it).
    #[arg(long)]
    actor: Option<String>,
    #[arg(long, default_value_t = 100)]
    limit: usize,
    #[arg(long, default_value_t = 0)]
    offset: usize,
    /// JSON lines (the alert format of docs/detection.md) instead of a table.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Subcommand)]
enum AlertAction {
    /// One alert, whole: explanation, factors, evidence.
    Show { id: String },
    /// Close an alert; with --false-positive, also suppress this type of alert for this
    /// actor and endpoint for `detect.suppress_days` (or --days).
    Resolve {
        id: String,
        #[arg(long)]
        false_positive: bool,
        #[arg(long)]
        reason: Option<String>,
        #[arg(long)]
        days: Option<u32>,
    },
    /// Suppressions in force.
    Suppressions,
}

#[derive(Args)]
struct DetectArgs {
    #[arg(long)]
    data: PathBuf,
    /// Forget the detectors' state and open alerts, and start from the first event.
    #[arg(long)]
    reset: bool,
    #[arg(long)]
    geoip: Option<PathBuf>,
    #[arg(long)]
    asn_db: Option<PathBuf>,
}

#[derive(Args)]
struct TokenArgs {
    #[arg(long)]
    data: PathBuf,
}

#[derive(Args)]
struct FingerprintArgs {
    #[arg(long)]
    data: PathBuf,
    /// The secret as the client sends it (API key, bearer token, cookie value, login).
    secret: String,
    /// The key of agents configured with their own `[extract] fingerprint_key` (`hex:…`
    /// or a passphrase) instead of the fleet's.
    #[arg(long)]
    key: Option<String>,
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
    /// Serve the web UI and the HTTP API (`/`, `/api/...`, `/metrics`) on this address;
    /// a port alone means 127.0.0.1:PORT. They need the token of `DATA/api_token`.
    #[arg(long, value_parser = parse_api_addr)]
    api: Option<std::net::SocketAddr>,
    /// A MaxMind-format city database (GeoLite2 City) for the detectors.
    #[arg(long)]
    geoip: Option<PathBuf>,
    /// A MaxMind-format ASN database (GeoLite2 ASN).
    #[arg(long)]
    asn_db: Option<PathBuf>,
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
        Command::Alerts(a) => alerts(a),
        Command::Detect(a) => {
            let dir = DataDir::new(&a.data);
            dir.ensure_initialized()?;
            let mut config = CollectorConfig::load(&dir.config())?;
            if a.geoip.is_some() {
                config.detect.geoip = a.geoip.clone();
            }
            if a.asn_db.is_some() {
                config.detect.asn_db = a.asn_db.clone();
            }
            let started = std::time::Instant::now();
            let s = tapline_collector::detect::worker::run_once(&dir.database(), &config, a.reset)?;
            eprintln!(
                "read {} events in {:.1} s: {} findings, {} alerts ({}), {} suppressed, {} below threshold",
                s.events,
                started.elapsed().as_secs_f64(),
                s.findings,
                s.alerts_by_type.values().sum::<u64>(),
                s.alerts_by_type
                    .iter()
                    .map(|(k, v)| format!("{k} {v}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                s.suppressed,
                s.below_threshold
            );
            Ok(())
        }
        Command::Token(a) => {
            let dir = DataDir::new(&a.data);
            dir.ensure_initialized()?;
            let (token, created) =
                tapline_collector::auth::ApiToken::load_or_create(&dir.api_token())
                    .with_context(|| format!("reading {}", dir.api_token().display()))?;
            if created {
                eprintln!("wrote a new token to {}", dir.api_token().display());
            }
            drop(token);
            let text = std::fs::read_to_string(dir.api_token())?;
            println!("{}", text.trim());
            let config = CollectorConfig::load(&dir.config())?;
            match config.api {
                Some(addr) => eprintln!(
                    "open http://{addr}/ and paste it, or: curl -H 'Authorization: Bearer TOKEN' http://{addr}/api/alerts"
                ),
                None => eprintln!(
                    "start `tapline-collector serve --api 127.0.0.1:9110` and open http://127.0.0.1:9110/"
                ),
            }
            Ok(())
        }
        Command::Fingerprint(a) => {
            let key = match &a.key {
                Some(k) => k.clone(),
                None => {
                    let dir = DataDir::new(&a.data);
                    dir.ensure_initialized()?;
                    std::fs::read_to_string(dir.fingerprint_key())
                        .with_context(|| format!("reading {}", dir.fingerprint_key().display()))?
                }
            };
            let key = tapline_wire::fingerprint::key_from_config(key.trim())?;
            println!(
                "{:016x}",
                tapline_wire::fingerprint::fingerprint(&key, a.secret.as_bytes())
            );
            Ok(())
        }
    }
}

fn alerts(a: AlertsArgs) -> Result<()> {
    use tapline_collector::store::{AlertStore, SqliteAlerts};
    let Some(data) = a.data.clone() else {
        bail!("--data DIR is required");
    };
    let dir = DataDir::new(&data);
    let db = existing_database(&data)?;
    let mut store = SqliteAlerts::open(&db).with_context(|| format!("opening {}", db.display()))?;
    let mut out = io::stdout().lock();
    match a.action {
        Some(AlertAction::Show { id }) => {
            let alert = store
                .alert(&id)?
                .with_context(|| format!("no alert {id}"))?;
            if a.json {
                serde_json::to_writer(&mut out, &alert)?;
            } else {
                serde_json::to_writer_pretty(&mut out, &alert)?;
            }
            writeln!(out)?;
        }
        Some(AlertAction::Resolve {
            id,
            false_positive,
            reason,
            days,
        }) => {
            let config = CollectorConfig::load(&dir.config())?;
            let feedback = tapline_collector::alert::Feedback {
                false_positive,
                reason,
                days,
            };
            let (_, suppression) = tapline_collector::alert::resolve(
                &mut store,
                &id,
                &feedback,
                config.detect.suppress_days,
                tapline_collector::store::now_us(),
            )?
            .with_context(|| format!("no alert {id}"))?;
            match suppression {
                Some(s) => eprintln!(
                    "alert {id} marked false positive; {} alerts on actor {} at {} are suppressed for {} days",
                    s.kind.name(),
                    s.actor_id,
                    s.endpoint.as_deref().unwrap_or("any endpoint"),
                    (s.expires_us - s.created_us) / 86_400_000_000
                ),
                None => eprintln!("alert {id} resolved"),
            }
        }
        Some(AlertAction::Suppressions) => {
            for s in store.suppressions(tapline_collector::store::now_us())? {
                if a.json {
                    serde_json::to_writer(&mut out, &s)?;
                    writeln!(out)?;
                } else {
                    writeln!(
                        out,
                        "{} {} actor {} at {} until {} (from alert {}: {})",
                        s.id,
                        s.kind.name(),
                        s.actor_id,
                        s.endpoint.as_deref().unwrap_or("any endpoint"),
                        humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH
                                + std::time::Duration::from_micros(s.expires_us.max(0) as u64)
                        ),
                        s.alert_id,
                        s.reason
                    )?;
                }
            }
        }
        None => {
            let params = tapline_collector::api::AlertParams {
                since: a.since.clone(),
                severity: a.severity.clone(),
                kind: a.kind.clone(),
                status: a.status.clone(),
                actor: a.actor.clone(),
                limit: Some(a.limit),
                offset: Some(a.offset),
            };
            let q = params.query().map_err(anyhow::Error::msg)?;
            let (list, total) = store.alerts(&q)?;
            for alert in &list {
                if a.json {
                    serde_json::to_writer(&mut out, alert)?;
                    writeln!(out)?;
                } else {
                    writeln!(out, "{}", alert.line())?;
                }
            }
            if !a.json && (list.len() as u64) < total {
                eprintln!(
                    "{} of {total} alerts (--offset, --limit for more)",
                    list.len()
                );
            }
        }
    }
    Ok(())
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
        "initialized {}: enroll agents with `tapline-collector enroll --data {} --name NODE --out NODE.bundle`; \
         the web UI's token is in {}",
        a.data.display(),
        a.data.display(),
        dir.api_token().display()
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
    if a.api.is_some() {
        config.api = a.api;
    }
    if a.geoip.is_some() {
        config.detect.geoip = a.geoip.clone();
    }
    if a.asn_db.is_some() {
        config.detect.asn_db = a.asn_db.clone();
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
                + &server
                    .api_addr
                    .map(|m| format!(
                        ", UI and API on http://{m}/ (token: `tapline-collector token --data {}`)",
                        a.data.display()
                    ))
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

/// `PORT` (on localhost) or `ADDRESS:PORT`.
fn parse_api_addr(s: &str) -> std::result::Result<std::net::SocketAddr, String> {
    if let Ok(port) = s.parse::<u16>() {
        return Ok(std::net::SocketAddr::from(([127, 0, 0, 1], port)));
    }
    s.parse()
        .map_err(|_| format!("{s:?} is not PORT or ADDRESS:PORT (127.0.0.1:9110)"))
}

fn parse_time(s: &str) -> Result<i64> {
    tapline_collector::api::parse_time(s).map_err(anyhow::Error::msg)
}

/// The store of an initialized data directory, which `serve` has created.
fn existing_database(data: &std::path::Path) -> Result<PathBuf> {
    let dir = DataDir::new(data);
    dir.ensure_initialized()?;
    let db = dir.database();
    if !db.exists() {
        bail!(
            "{} holds no events yet (start `tapline-collector serve`)",
            data.display()
        );
    }
    Ok(db)
}

fn open_for_reading(data: &std::path::Path) -> Result<SqliteStore> {
    let db = existing_database(data)?;
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
