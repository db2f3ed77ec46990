//! A live agent killed mid-stream with batches in its disk spool, restarted: nothing is
//! lost and nothing is stored twice. Real capture across a veth (needs root), real
//! collector binary. Namespaces and processes are removed even when the test fails.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tapline_e2e::{Collector, Reaped, Scratch, bin, free_port, wait_for};
use tapline_traffic::netlab::{Lab, is_root, sh};

/// A counter from the agent's `/metrics`.
fn metric(addr: &str, name: &str) -> Option<f64> {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "2", &format!("http://{addr}/metrics")])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
}

fn start_agent(dir: &Scratch, iface: &str, bundle: &Path, metrics: &str, run: u32) -> Reaped {
    Reaped(
        Command::new(bin("tapline-agent"))
            .args([
                "run",
                "--iface",
                iface,
                "--filter",
                "tcp port 8080",
                "--ship",
                "--bundle",
            ])
            .arg(bundle)
            .arg("--spool")
            .arg(dir.path("spool"))
            .args(["--metrics", metrics])
            .stderr(std::fs::File::create(dir.path(&format!("agent-{run}.err"))).unwrap())
            .spawn()
            .unwrap(),
    )
}

#[test]
fn a_killed_agent_resends_its_spool_after_restart() {
    if !is_root() || !sh(&["ip", "-V"]) {
        eprintln!("\n*** live shipping test SKIPPED: needs root and iproute2 ***\n");
        return;
    }
    let mut lab = Lab::create();
    let base = lab.serve_http(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/tests/golden/server.py"),
        8080,
    );

    let dir = Scratch::new("live-ship");
    let mut c = Collector::init(&dir.0);
    let bundle = c.enroll("node-live", false);
    let metrics = format!("127.0.0.1:{}", free_port());
    // The collector is down: the agent spools to disk.
    let mut agent = start_agent(&dir, &lab.host_if, &bundle, &metrics, 1);
    wait_for(10, "the agent", || {
        metric(&metrics, "tapline_packets_total").is_some()
            || metric(&metrics, "tapline_events_total").is_some()
    });
    const N: u64 = 40;
    for i in 0..N {
        assert!(sh(&[
            "curl",
            "-s",
            "-o",
            "/dev/null",
            "--max-time",
            "5",
            "-H",
            &format!("X-Api-Key: key-{}", i % 4),
            &format!("{base}/v1/customers/cus_8a7F{i:03}")
        ]));
    }
    wait_for(20, "every event spooled", || {
        metric(&metrics, "tapline_ship_events_spooled_total") == Some(N as f64)
    });
    // No flush, no goodbye.
    let _ = agent.0.kill();
    let _ = agent.0.wait();
    let spooled: u64 = std::fs::read_dir(dir.path("spool"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".spool"))
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(spooled > 0, "the spool holds the batches");

    c.start();
    let mut agent = start_agent(&dir, &lab.host_if, &bundle, &metrics, 2);
    wait_for(30, "the spool delivered", || c.count(&[]) >= N);
    std::thread::sleep(Duration::from_millis(500));
    assert!(sh(&["kill", "-TERM", &agent.0.id().to_string()]));
    let status = agent.0.wait().unwrap();
    assert!(status.success());
    let err = std::fs::read_to_string(dir.path("agent-2.err")).unwrap();
    assert!(err.contains("resending"), "{err}");
    assert_eq!(c.count(&[]), N, "exactly once");
    let listing = tapline_e2e::run_ok(
        Command::new(bin("tapline-collector"))
            .args(["events", "--data"])
            .arg(&c.data),
    );
    assert_eq!(
        c.count(&["--endpoint", "GET /v1/customers/{customer}"]),
        N,
        "{listing}"
    );
}
