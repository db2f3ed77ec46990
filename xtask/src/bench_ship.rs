//! `cargo xtask bench ship`: events/s acked into the collector's SQLite store, with one
//! agent and with several, and bytes per event on the wire. Agents are the agent's own
//! ship stage (spool, TLS session, window) in this process; the collector is the release
//! binary. Events are real extractions of generated traffic, renumbered so every one is
//! distinct.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tapline_agent::capture::file::read_frames;
use tapline_agent::config::AgentConfig;
use tapline_agent::extract::Extractor;
use tapline_agent::pipeline::{Pipeline, PipelineConfig};
use tapline_agent::ship::{ShipConfig, Shipper};
use tapline_wire::Event;
use tapline_wire::bundle::Bundle;

const TOTAL: usize = 1_000_000;
const BATCH: usize = 2000;

fn sample_events(pcap: &Path) -> Result<Vec<Event>> {
    let data = std::fs::File::open(pcap).with_context(|| format!("opening {}", pcap.display()))?;
    let agent = AgentConfig::load(Path::new("traffic/agent.toml"))?;
    let mut x = Extractor::new(agent.extract.clone())?;
    let mut events = Vec::new();
    let mut pipeline = Pipeline::new(PipelineConfig::default());
    read_frames(
        data,
        |f| {
            pipeline.frame(f.linktype, f.ts, f.data, &mut |m, t| {
                if events.len() < 200_000
                    && let Some(e) = x.event(m, &t)
                {
                    events.push(e)
                }
            })
        },
        |_| {},
    )?;
    ensure!(!events.is_empty(), "no events in {}", pcap.display());
    Ok(events)
}

pub(crate) struct Collector {
    child: Child,
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A fresh data directory and a fleet bundle for it.
fn prepare(bin: &Path, data: &Path, sync: &str, port: u16) -> Result<Bundle> {
    let _ = std::fs::remove_dir_all(data);
    let addr = format!("127.0.0.1:{port}");
    let ok = Command::new(bin)
        .args(["init", "--data"])
        .arg(data)
        .args(["--listen", &addr])
        .stderr(Stdio::null())
        .status()?;
    ensure!(ok.success(), "collector init failed");
    let cfg = data.join("collector.toml");
    let text =
        std::fs::read_to_string(&cfg)?.replace("sync = \"full\"", &format!("sync = \"{sync}\""));
    std::fs::write(&cfg, text)?;
    let bundle_path = data.join("fleet.bundle");
    let ok = Command::new(bin)
        .args(["enroll", "--fleet", "--name", "bench", "--data"])
        .arg(data)
        .arg("--out")
        .arg(&bundle_path)
        .stderr(Stdio::null())
        .status()?;
    ensure!(ok.success(), "collector enroll failed");
    Ok(Bundle::parse(&std::fs::read_to_string(&bundle_path)?)?)
}

fn serve(bin: &Path, data: &Path, port: u16) -> Result<Collector> {
    let addr = format!("127.0.0.1:{port}");
    let child = Command::new(bin)
        .args(["serve", "--data"])
        .arg(data)
        .stderr(Stdio::null())
        .spawn()?;
    let c = Collector { child };
    let start = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        if start.elapsed() > Duration::from_secs(10) {
            bail!("collector did not start");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(c)
}

struct Run {
    seconds: f64,
    wire_bytes: u64,
    /// CPU seconds the collector used, in all.
    collector_cpu: f64,
}

/// `live`: agents encode and submit while the collector runs, timed from the first
/// submit to the last ack. `drain`: everything is spooled first, then the collector
/// starts, timed from the first ack to the last (the collector's own rate).
fn ship(
    bin: &Path,
    data: &Path,
    port: u16,
    agents: usize,
    drain: bool,
    events: &Arc<Vec<Event>>,
    bundle: &Bundle,
) -> Result<(Run, Option<Collector>)> {
    let per_agent = TOTAL / agents;
    let config = ShipConfig {
        spool_max_mb: Some(4096.0),
        ..Default::default()
    };
    let mut collector = if drain {
        None
    } else {
        Some(serve(bin, data, port)?)
    };
    let start = Instant::now();
    let mut shippers = Vec::new();
    let mut handles = Vec::new();
    for a in 0..agents {
        let shipper = Arc::new(Shipper::start(
            &format!("bench-{a}"),
            bundle,
            &config,
            Default::default(),
        )?);
        shippers.push(shipper.clone());
        let events = events.clone();
        handles.push(std::thread::spawn(move || -> Result<()> {
            let mut i = 0usize;
            while i < per_agent {
                let n = BATCH.min(per_agent - i);
                let batch: Vec<Event> = (i..i + n)
                    .map(|k| {
                        let mut e = events[k % events.len()].clone();
                        // Distinct events: a flow id of their own.
                        e.flow_id = (a as u64) << 40 | k as u64;
                        e
                    })
                    .collect();
                shipper.submit(batch)?;
                i += n;
            }
            Ok(())
        }));
    }
    for h in handles {
        h.join()
            .map_err(|_| anyhow::anyhow!("agent thread panicked"))??;
    }
    let total_batches: u64 = shippers.iter().map(|s| s.stats().pending_batches).sum();
    let mut first_ack = start;
    if drain {
        collector = Some(serve(bin, data, port)?);
        loop {
            let pending: u64 = shippers.iter().map(|s| s.stats().pending_batches).sum();
            if pending < total_batches {
                first_ack = Instant::now();
                break;
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    let mut wire_bytes = 0;
    for s in shippers {
        let s = Arc::try_unwrap(s).map_err(|_| anyhow::anyhow!("shipper still shared"))?;
        let r = s.finish(|| false);
        ensure!(
            r.pending_batches == 0 && r.dropped_batches == 0,
            "not delivered: {r:?}"
        );
        wire_bytes += r.bytes_queued;
    }
    let seconds = first_ack.elapsed().as_secs_f64();
    let collector_cpu = collector
        .as_ref()
        .map(|c| crate::bench_live::cpu_seconds(c.child.id()))
        .unwrap_or(0.0);
    Ok((
        Run {
            seconds,
            wire_bytes,
            collector_cpu,
        },
        collector,
    ))
}

fn stored(bin: &Path, data: &Path) -> Result<u64> {
    let out = Command::new(bin)
        .args(["events", "--count", "--data"])
        .arg(data)
        .output()?;
    ensure!(out.status.success(), "events --count failed");
    Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
}

pub fn run() -> Result<()> {
    let st = Command::new(env!("CARGO"))
        .args(["build", "--release", "-p", "tapline-collector"])
        .status()?;
    ensure!(st.success(), "cargo build failed");
    let bin = PathBuf::from("target/release/tapline-collector");
    let pcap = PathBuf::from("target/traffic.pcap");
    if !pcap.exists() {
        tapline_traffic::gen_traffic(&pcap, 1, 7, 1.0)?;
    }
    let events = Arc::new(sample_events(&pcap)?);
    println!(
        "{} events ({} distinct extracted from {}, renumbered), batches of {BATCH}, TLS 1.3 on loopback\n",
        TOTAL,
        events.len(),
        pcap.display()
    );
    println!(
        "{:<6} {:<8} {:<7} {:>9} {:>14} {:>12} {:>14} {:>12}",
        "mode", "agents", "sync", "seconds", "events/s", "bytes/event", "collector CPU", "stored"
    );
    let data = PathBuf::from("target/bench-ship");
    let port = 24780;
    for drain in [false, true] {
        for (agents, sync) in [(1, "full"), (4, "full"), (1, "normal"), (4, "normal")] {
            let bundle = prepare(&bin, &data, sync, port)?;
            let (r, c) = ship(&bin, &data, port, agents, drain, &events, &bundle)?;
            drop(c);
            let n = stored(&bin, &data)?;
            ensure!(n == TOTAL as u64, "stored {n} events, shipped {TOTAL}");
            println!(
                "{:<6} {agents:<8} {sync:<7} {:>9.2} {:>14.0} {:>12.1} {:>13.2}s {:>12}",
                if drain { "drain" } else { "live" },
                r.seconds,
                TOTAL as f64 / r.seconds,
                r.wire_bytes as f64 / TOTAL as f64,
                r.collector_cpu,
                n
            );
        }
    }
    let _ = std::fs::remove_dir_all(&data);
    Ok(())
}
