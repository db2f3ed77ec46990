//! Golden tests: the real binary on captures made for the cases the corpus lacks
//! (`tests/golden/make.sh` records them: pcapng from curl against a real server on
//! loopback, IPv4 and IPv6; VXLAN with reordered and retransmitted segments; Linux SLL
//! with IPv4 fragments delivered last-first). Each capture's log must equal its
//! `.jsonl`; `UPDATE_GOLDEN=1` rewrites them.

mod common;

use std::path::{Path, PathBuf};

use serde_json::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn read(capture: &Path) -> String {
    run(capture, &["--bodies"])
}

fn run(capture: &Path, args: &[&str]) -> String {
    common::read_with(capture, &dir().join("agent.toml"), args).0
}

/// The `http` objects of a log, which do not depend on encapsulation or timing.
fn http_objects(log: &str) -> Vec<Value> {
    log.lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["http"].clone())
        .collect()
}

#[test]
fn captures_match_their_golden_logs() {
    let mut n = 0;
    for name in [
        "lo-curl.pcapng",
        "vxlan-reordered.pcap",
        "fragmented-sll.pcap",
    ] {
        let capture = dir().join(name);
        let golden = dir().join(format!("{name}.jsonl"));
        let got = read(&capture);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&golden, &got).unwrap();
        }
        let want = std::fs::read_to_string(&golden)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", golden.display()));
        assert_eq!(got, want, "{name} differs from its golden log");
        n += got.lines().count();
    }
    assert!(n > 0);
}

#[test]
fn encapsulation_reordering_and_fragments_change_nothing() {
    let plain = http_objects(&read(&dir().join("lo-curl.pcapng")));
    let urls: Vec<&str> = plain.iter().filter_map(|h| h["url"].as_str()).collect();
    assert_eq!(
        urls,
        [
            "/chunked-gzip",
            "/v1/customers/cus_8a7F3k/invoices/1042?expand=lines",
            "/v1/charges",
            "/v1/customers/cus_1",
            "/not-modified",
            "/close",
            "/v6/path?q=1",
        ],
        "every exchange of make.sh is logged, in order"
    );
    let vxlan = http_objects(&read(&dir().join("vxlan-reordered.pcap")));
    assert_eq!(vxlan, plain);
    // The SLL variant holds the IPv4 traffic only.
    let v4: Vec<Value> = plain
        .iter()
        .filter(|h| !h["url"].as_str().unwrap_or("").starts_with("/v6"))
        .cloned()
        .collect();
    assert_eq!(http_objects(&read(&dir().join("fragmented-sll.pcap"))), v4);
}

/// The events of the loopback capture: templates, the JWT's claims, entities, and no
/// credential in clear.
#[test]
fn events_match_their_golden_log() {
    let capture = dir().join("lo-curl.pcapng");
    let golden = dir().join("lo-curl.pcapng.events.jsonl");
    let got = run(&capture, &["--log", "events"]);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, &got).unwrap();
    }
    assert_eq!(got, std::fs::read_to_string(&golden).unwrap());
    let events: Vec<Value> = got
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(events.len(), 7);
    assert_eq!(
        events[1]["endpoint"],
        "/v1/customers/{customer}/invoices/{invoice}"
    );
    assert_eq!(events[1]["actors"][0]["kind"], "jwt");
    assert_eq!(events[1]["actors"][0]["claims"][0][1], "user-42");
    assert!(
        !got.contains("eyJhbGciOiJub25lIn0"),
        "the token never appears"
    );
}
