//! Replays every fuzz seed through its target: the committed seeds in `fuzz/seeds/`
//! (hand-made inputs and past crashes) and inputs derived from every capture of
//! `../shared/corpus`. `cargo fuzz run <target>` starts from the same inputs
//! (`cargo xtask fuzz-seeds` writes them to `fuzz/corpus/`).

mod common;

use std::fs;
use std::path::Path;

use tapline_agent::fuzzing;

type Target = fn(&[u8]);

const TARGETS: &[(&str, Target)] = &[
    ("decode", fuzzing::decode),
    ("reassembly", fuzzing::reassembly),
    ("http", fuzzing::http),
    ("capture_file", fuzzing::capture_file),
    ("jwt", fuzzing::jwt),
    ("json_scan", fuzzing::json_scan),
    ("template", fuzzing::template),
    ("wire", fuzzing::wire),
    ("ebpf_records", fuzzing::ebpf_records),
];

#[test]
fn committed_seeds() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let mut n = 0;
    for (name, target) in TARGETS {
        let mut files: Vec<_> = fs::read_dir(root.join(name))
            .unwrap_or_else(|e| panic!("fuzz/seeds/{name}: {e}"))
            .flatten()
            .map(|e| e.path())
            .collect();
        files.sort();
        for f in files {
            let data = fs::read(&f).unwrap();
            eprintln!("{}", f.display());
            target(&data);
            n += 1;
        }
    }
    assert!(n >= TARGETS.len(), "every target has committed seeds");
}

#[test]
fn corpus_derived_seeds() {
    let Some(corpus) = common::corpus_dir() else {
        eprintln!("\n*** fuzz seeds from ../shared/corpus SKIPPED: corpus not found ***\n");
        return;
    };
    let files = common::capture_files(&corpus);
    assert!(!files.is_empty());
    let (mut frames, mut streams) = (0, 0);
    for f in &files {
        let data = fs::read(f).unwrap();
        if data.len() <= 256 << 10 {
            fuzzing::capture_file(&data);
        }
        let seeds = fuzzing::seeds_from_capture(&data, 64);
        for s in &seeds.decode {
            fuzzing::decode(s);
        }
        for s in &seeds.reassembly {
            fuzzing::reassembly(s);
        }
        for s in &seeds.http {
            fuzzing::http(s);
        }
        frames += seeds.decode.len();
        streams += seeds.http.len();
    }
    eprintln!(
        "fuzz seeds: {} captures, {frames} frames, {streams} connections",
        files.len()
    );
}
