//! No secret leaves the node: over generated traffic that carries thousands of known
//! credentials (bearer JWTs, API keys, session cookies, passwords, Basic credentials,
//! OAuth client secrets), none appears in any output of the agent — the HTTP log, the
//! events, the wire batches, the counters.

mod common;

use std::path::Path;

fn agent(args: &[&str], capture: &Path, config: &Path) -> (String, String) {
    let mut all = vec!["--stats"];
    all.extend_from_slice(args);
    common::read_with(capture, config, &all)
}

#[test]
fn no_secret_in_any_output() {
    let dir = std::env::temp_dir().join(format!("tapline-redaction-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let capture = dir.join("traffic.pcap");
    let summary = tapline_traffic::gen_traffic(&capture, 7, 1, 0.5).unwrap();
    let secrets: Vec<String> = std::fs::read_to_string(&summary.secrets_path)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    assert!(secrets.len() > 100, "the traffic carries many secrets");
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../traffic/agent.toml");

    let (http, http_stats) = agent(&[], &capture, &config);
    let (events, event_stats) = agent(&["--log", "events"], &capture, &config);
    assert!(http.lines().count() as u64 >= summary.transactions);
    assert_eq!(events.lines().count() as u64, summary.transactions);

    // The events as the agent ships them: wire batches, inspected uncompressed.
    let decoded: Vec<tapline_wire::Event> = events
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let batch = tapline_wire::Batch {
        agent: "test".into(),
        seq: 1,
        events: decoded,
    };
    let wire = tapline_wire::encode_with(&batch, false);
    let wire = String::from_utf8_lossy(&wire);

    // The check must be able to fail: without redaction the secrets are there.
    let (raw, _) = agent(&["--no-redact"], &capture, &config);
    let found_raw = secrets.iter().filter(|s| raw.contains(s.as_str())).count();
    assert!(
        found_raw * 2 > secrets.len(),
        "only {found_raw} secrets in the raw log"
    );

    for (name, output) in [
        ("http log", &http),
        ("http stats", &http_stats),
        ("events", &events),
        ("event stats", &event_stats),
        ("wire batch", &wire.to_string()),
    ] {
        for s in &secrets {
            assert!(
                !output.contains(s.as_str()),
                "{name} contains the secret {s:?}"
            );
        }
    }
    // Events carry fingerprints where the secrets were.
    assert!(events.contains("\"kind\":\"jwt\"") && events.contains("\"fingerprint\""));
    assert!(events.contains("\"kind\":\"session\"") && events.contains("\"kind\":\"api_key\""));
    let _ = std::fs::remove_dir_all(&dir);
}
