//! `cargo xtask bench detect`: the detection engine with every detector on, on one core:
//! events/s on a labelled scenario's events (beside decoding the same events from wire
//! batches, the detector thread's other cost, in the same run), and memory per actor
//! with many actors.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use tapline_agent::capture::file::read_frames;
use tapline_agent::config::AgentConfig;
use tapline_agent::extract::Extractor;
use tapline_agent::pipeline::{Pipeline, PipelineConfig};
use tapline_collector::config::DetectConfig;
use tapline_collector::detect::Engine;
use tapline_collector::geo::Geo;
use tapline_wire::{Batch, Event};

fn rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |pages| pages * 4096)
}

pub fn run() -> Result<()> {
    let dir = PathBuf::from("target/bench-detect");
    std::fs::create_dir_all(&dir)?;
    let pcap = dir.join("scenario.pcap");
    let s = tapline_traffic::scenario::gen_scenario(&pcap, 7, 7, 2.0)?;
    let config_path = dir.join("agent.toml");
    std::fs::write(&config_path, tapline_traffic::scenario::agent_config())?;
    let mut agent = AgentConfig::load(&config_path)?;
    agent.extract.fingerprint_key = Some("bench".into());
    let data = std::fs::File::open(&pcap)?;
    let mut extractor = Extractor::new(agent.extract.clone())?;
    let mut events: Vec<Event> = Vec::new();
    let mut pipeline = Pipeline::new(PipelineConfig::default());
    read_frames(
        data,
        |f| {
            pipeline.frame(f.linktype, f.ts, f.data, &mut |m, t| {
                events.extend(extractor.event(m, &t))
            })
        },
        |_| {},
    )?;
    pipeline.finish(&mut |m, t| events.extend(extractor.event(m, &t)));
    let n = events.len();
    println!(
        "scenario: 7 days, {} transactions, {n} events ({} attacks, {} traps)\n",
        s.transactions, s.attacks, s.traps
    );

    // Reference: decoding the same events from wire batches (what the detector thread
    // does before the engine sees them).
    let frames: Vec<Vec<u8>> = events
        .chunks(2000)
        .enumerate()
        .map(|(i, c)| {
            tapline_wire::encode(&Batch {
                agent: "bench".into(),
                seq: i as u64,
                events: c.to_vec(),
            })
        })
        .collect();
    let mut decode_best = f64::MAX;
    for _ in 0..3 {
        let start = Instant::now();
        let mut k = 0;
        for f in &frames {
            if let Ok(Some((b, _))) = tapline_wire::decode(f) {
                k += b.events.len();
            }
        }
        assert_eq!(k, n);
        decode_best = decode_best.min(start.elapsed().as_secs_f64());
    }

    let mut detect_best = f64::MAX;
    let mut alerts = 0;
    let mut actors = 0;
    for _ in 0..3 {
        let geo = Geo::open(Some(&s.city_db), Some(&s.asn_db), &[])?;
        let mut engine = Engine::new(DetectConfig::default(), geo);
        let start = Instant::now();
        alerts = 0;
        for e in &events {
            engine.observe(e);
        }
        alerts += engine.drain_alerts().len();
        detect_best = detect_best.min(start.elapsed().as_secs_f64());
        actors = engine.actors();
    }
    println!("| stage (one core) | events/s |\n|---|---:|");
    println!(
        "| wire decode (reference) | {:.0} |",
        n as f64 / decode_best
    );
    println!(
        "| detection engine, all detectors | {:.0} |",
        n as f64 / detect_best
    );
    println!(
        "| decode + detect | {:.0} |",
        n as f64 / (decode_best + detect_best)
    );
    println!("\n{alerts} alerts, {actors} actors\n");

    // Memory per actor: many actors, a few events each, all detectors on.
    let template = events
        .iter()
        .find(|e| {
            e.actors
                .iter()
                .any(|a| a.kind == tapline_wire::ActorKind::ApiKey)
        })
        .cloned()
        .unwrap_or_else(|| events[0].clone());
    let many = 200_000u64;
    let cfg = DetectConfig {
        max_actors: many as usize + 1,
        ..DetectConfig::default()
    };
    let mut engine = Engine::new(cfg, Geo::open(Some(&s.city_db), Some(&s.asn_db), &[])?);
    let before = rss_bytes();
    let start = Instant::now();
    let mut e = template;
    for k in 0..many * 5 {
        let actor = k % many;
        e.ts_us = 1_793_577_600_000_000 + k as i64 * 2_000;
        for a in e.actors.iter_mut() {
            if a.kind == tapline_wire::ActorKind::ApiKey {
                a.fingerprint = Some(actor.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            }
        }
        engine.observe(&e);
    }
    let secs = start.elapsed().as_secs_f64();
    let after = rss_bytes();
    let snapshot = engine.snapshot().len();
    println!(
        "{} actors: {:.0} bytes of memory per actor (RSS {:.1} → {:.1} MiB), {:.0} bytes per actor in the saved state; {:.0} events/s",
        engine.actors(),
        (after.saturating_sub(before)) as f64 / engine.actors() as f64,
        before as f64 / (1 << 20) as f64,
        after as f64 / (1 << 20) as f64,
        snapshot as f64 / engine.actors() as f64,
        (many * 5) as f64 / secs
    );
    Ok(())
}
