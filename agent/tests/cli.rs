//! Drives the real `tapline-agent` binary.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_tapline-agent"))
}

fn corpus_pcap() -> Option<PathBuf> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/corpus/zeek/http-pipelining/pipelined-requests.pcap");
    p.exists().then_some(p)
}

#[test]
fn reads_a_file_and_stdin_alike() {
    let Some(pcap) = corpus_pcap() else {
        eprintln!("*** corpus absent: cli test skipped ***");
        return;
    };
    let out = agent()
        .arg("read")
        .arg("--no-redact")
        .arg("--stats")
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(out.status.success());
    let log = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 5);
    assert_eq!(lines[0]["event_type"], "http");
    assert_eq!(lines[0]["http"]["url"], "/style/enhanced.css");
    assert_eq!(lines[4]["tx_id"], 4);
    let stats = String::from_utf8(out.stderr).unwrap();
    assert!(
        stats
            .lines()
            .any(|l| l.starts_with("http_transactions") && l.ends_with(" 5")),
        "{stats}"
    );

    let mut child = agent()
        .args(["read", "--no-redact", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&std::fs::read(&pcap).unwrap())
        .unwrap();
    let piped = child.wait_with_output().unwrap();
    assert!(piped.status.success());
    assert_eq!(String::from_utf8(piped.stdout).unwrap(), log);
}

#[test]
fn a_reader_that_stops_early_ends_read_quietly() {
    use std::io::BufRead;
    let Some(pcap) = corpus_pcap() else {
        eprintln!("*** corpus absent: cli test skipped ***");
        return;
    };
    // The same capture 40 times: a log larger than the pipe and the agent's 64 KiB blocks.
    let mut child = agent()
        .arg("read")
        .args(std::iter::repeat_n(&pcap, 40))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("\"event_type\":\"http\""), "{first}");
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

#[test]
fn garbage_input_is_a_clear_error() {
    let dir = std::env::temp_dir().join(format!("tapline-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("garbage.pcap");
    std::fs::write(&f, b"this is not a capture file at all, not even close....").unwrap();
    let out = agent().arg("read").arg(&f).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("garbage.pcap") && err.contains("not a pcap"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn truncated_file_keeps_what_came_before() {
    let Some(pcap) = corpus_pcap() else {
        return;
    };
    let data = std::fs::read(&pcap).unwrap();
    let dir = std::env::temp_dir().join(format!("tapline-cli-t-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("cut.pcap");
    std::fs::write(&f, &data[..data.len() - 7]).unwrap();
    let out = agent().arg("read").arg(&f).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ends inside a packet record"));
    assert!(String::from_utf8_lossy(&out.stdout).lines().count() >= 4);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn run_explains_bad_settings_in_one_line() {
    let err = |args: &[&str]| {
        let out = agent().arg("run").args(args).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8(out.stderr).unwrap()
    };
    assert!(err(&[]).contains("no interface to capture on"));
    let e = err(&["--iface", "tapline-nonexistent0"]);
    assert!(
        e.contains("no such interface") || e.contains("permission denied"),
        "{e}"
    );
    if e.contains("no such interface") {
        // With the rights to capture, a bad filter is named as such.
        let e = err(&["--iface", "lo", "--filter", "tcp port"]);
        assert!(e.contains("bad capture filter `tcp port`"), "{e}");
    }
}

#[test]
fn ship_settings_are_checked_before_reading() {
    let golden = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/lo-curl.pcapng");
    let err = |args: &[&str]| {
        let out = agent().args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let g = golden.to_str().unwrap();
    assert!(err(&["read", g, "--ship"]).contains("--ship needs a bundle"));
    let dir = std::env::temp_dir().join(format!("tapline-cli-ship-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("nope.bundle");
    assert!(
        err(&["read", g, "--ship", "--bundle", missing.to_str().unwrap()])
            .contains("reading the bundle")
    );
    let garbage = dir.join("garbage.bundle");
    std::fs::write(&garbage, "name = 1\n").unwrap();
    assert!(
        err(&["read", g, "--ship", "--bundle", garbage.to_str().unwrap()])
            .contains("not a Tapline agent bundle")
    );
    // A node bundle names the agent: a different [agent] id is refused.
    let bundle = tapline_wire::bundle::Bundle {
        name: "node-1".into(),
        fleet: false,
        collectors: vec!["127.0.0.1:9".into()],
        server_name: "tapline-collector".into(),
        fingerprint_key: "k".into(),
        ca: String::new(),
        cert: String::new(),
        key: String::new(),
    };
    let b = dir.join("node-1.bundle");
    std::fs::write(&b, bundle.to_toml()).unwrap();
    let cfg = dir.join("agent.toml");
    std::fs::write(&cfg, "[agent]\nid = \"node-2\"\n").unwrap();
    let e = err(&[
        "read",
        g,
        "--ship",
        "--bundle",
        b.to_str().unwrap(),
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert!(e.contains("issued to \"node-1\""), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
