//! `cargo xtask bench events`: extraction speed (events/s) and event size on the wire
//! (bytes/event) for generated traffic, with the candidate encodings side by side.

use std::path::Path;
use std::time::Instant;

use anyhow::{Context, Result};
use tapline_agent::capture::file::read_frames;
use tapline_agent::config::AgentConfig;
use tapline_agent::extract::Extractor;
use tapline_agent::http::Transaction;
use tapline_agent::pipeline::{Pipeline, PipelineConfig};
use tapline_agent::reassembly::FlowMeta;
use tapline_wire::{Batch, Event};

/// Events per batch: the agent ships batches of up to 2000 events (or one second).
const BATCH: usize = 2000;

pub fn run(pcap: &Path, config: Option<&Path>) -> Result<()> {
    let data = std::fs::File::open(pcap).with_context(|| format!("opening {}", pcap.display()))?;
    let size = data.metadata()?.len();
    let agent = match config {
        Some(p) => AgentConfig::load(p)?,
        None => AgentConfig::default(),
    };

    // The transactions, collected once so extraction is timed alone.
    let mut txs: Vec<(FlowMeta, Transaction)> = Vec::new();
    let mut pipeline = Pipeline::new(PipelineConfig::default());
    let start = Instant::now();
    read_frames(
        data,
        |f| pipeline.frame(f.linktype, f.ts, f.data, &mut |m, t| txs.push((*m, t))),
        |_| {},
    )?;
    pipeline.finish(&mut |m, t| txs.push((*m, t)));
    let t_parse = start.elapsed().as_secs_f64();

    let mut best = f64::MAX;
    let mut events: Vec<Event> = Vec::new();
    for _ in 0..3 {
        let mut x = Extractor::new(agent.extract.clone())?;
        let start = Instant::now();
        let got: Vec<Event> = txs.iter().filter_map(|(m, t)| x.event(m, t)).collect();
        best = best.min(start.elapsed().as_secs_f64());
        events = got;
    }
    let n = events.len().max(1) as f64;

    let batches: Vec<Batch> = events
        .chunks(BATCH)
        .enumerate()
        .map(|(i, c)| Batch {
            agent: agent.agent_id(),
            seq: i as u64,
            events: c.to_vec(),
        })
        .collect();
    let json: usize = events
        .iter()
        .map(|e| serde_json::to_vec(e).map(|v| v.len() + 1).unwrap_or(0))
        .sum();
    let postcard: usize = events
        .iter()
        .map(|e| postcard::to_stdvec(e).map(|v| v.len()).unwrap_or(0))
        .sum();
    let plain: usize = batches
        .iter()
        .map(|b| tapline_wire::encode_with(b, false).len())
        .sum();
    let start = Instant::now();
    let framed: Vec<Vec<u8>> = batches.iter().map(tapline_wire::encode).collect();
    let t_encode = start.elapsed().as_secs_f64();
    let deflate: usize = framed.iter().map(Vec::len).sum();
    let start = Instant::now();
    let mut decoded = 0usize;
    for f in &framed {
        if let Some((b, _)) = tapline_wire::decode(f)? {
            decoded += b.events.len();
        }
    }
    let t_decode = start.elapsed().as_secs_f64();
    anyhow::ensure!(
        decoded == events.len(),
        "decoded {decoded} of {} events",
        events.len()
    );

    println!(
        "file: {} ({:.1} MB, {} transactions, parsed in {t_parse:.2} s)",
        pcap.display(),
        size as f64 / 1e6,
        txs.len()
    );
    println!(
        "extraction: {} events in {best:.3} s = {:.0} events/s (one core, best of 3)",
        events.len(),
        n / best
    );
    println!("\n{:<44} {:>14} {:>12}", "encoding", "bytes", "bytes/event");
    for (name, bytes) in [
        ("JSON lines (--log events)", json),
        ("postcard per event, no interning", postcard),
        ("wire v1, interned, uncompressed", plain),
        ("wire v1, interned, deflate (shipped)", deflate),
    ] {
        println!("{name:<44} {bytes:>14} {:>12.1}", bytes as f64 / n);
    }
    println!(
        "\nwire v1 batches of {BATCH}: encode {:.0} events/s, decode {:.0} events/s",
        n / t_encode,
        n / t_decode
    );
    println!("\nbatch size (events)   wire v1 deflate bytes/event");
    for size in [250, 500, 1000, 2000, 5000] {
        let bytes: usize = events
            .chunks(size)
            .map(|c| {
                tapline_wire::encode(&Batch {
                    agent: agent.agent_id(),
                    seq: 0,
                    events: c.to_vec(),
                })
                .len()
            })
            .sum();
        println!("{size:>19}   {:>10.1}", bytes as f64 / n);
    }
    Ok(())
}
