//! Real live capture: a server in a network namespace behind a veth pair, curl and wrk
//! on the host side, the agent capturing on the host end of the veth. Namespaces, links
//! and processes are removed even when the test fails (a guard's `Drop`). Needs root;
//! without it the test says so loudly and does nothing.

use std::path::{Path, PathBuf};
mod common;

use std::process::Command;

use common::{Reaped, TempDir, wait_for};

use std::time::{Duration, Instant};
use tapline_traffic::netlab::{Lab, is_root, sh};

use serde_json::Value;

fn curl(args: &[&str]) {
    assert!(
        sh(&[&["curl", "-s", "-o", "/dev/null", "--max-time", "5"], args].concat()),
        "curl {args:?}"
    );
}

#[test]
fn captures_exact_transactions_across_a_veth() {
    capture_across_a_veth(&["--source", "pcap", "--filter", "tcp port 8080"]);
}

/// The same, with the tc programs (TCX links) filtering the port in the kernel.
#[test]
fn ebpf_captures_exact_transactions_across_a_veth() {
    capture_across_a_veth(&["--source", "ebpf", "--port", "8080"]);
}

/// The same, with netlink filters on a clsact qdisc; nothing of ours is left after.
#[test]
fn ebpf_netlink_attach_captures_and_cleans_up() {
    capture_across_a_veth(&[
        "--source",
        "ebpf",
        "--port",
        "8080",
        "--tc-attach",
        "netlink",
    ]);
}

/// One capture at a time: the checks that nothing is left behind look at the whole
/// machine's programs.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// With only the capabilities docs/capture.md lists for tc capture (root's others taken
/// out of the bounding set, as a DaemonSet without `privileged` has them).
#[test]
fn ebpf_capture_needs_only_bpf_perfmon_and_net_admin() {
    let Some(stderr) = capture_with_capabilities(
        "+bpf,+perfmon,+net_admin",
        &["--source", "ebpf", "--port", "8080"],
    ) else {
        return;
    };
    assert!(stderr.contains("(eBPF)"), "{stderr}");
}

/// `--source auto` without CAP_BPF: one line says why, and libpcap does the work.
#[test]
fn auto_falls_back_to_libpcap_when_ebpf_cannot_load() {
    let Some(stderr) = capture_with_capabilities(
        "+net_raw,+net_admin",
        &["--source", "auto", "--port", "8080"],
    ) else {
        return;
    };
    let reasons: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("falling back to libpcap"))
        .collect();
    assert_eq!(reasons.len(), 1, "{stderr}");
    assert!(reasons[0].contains("CAP_BPF"), "{stderr}");
    assert!(stderr.contains("(libpcap)"), "{stderr}");
}

/// The capture test with only `caps` in the agent's bounding set (root's others taken
/// out); None, loudly, without setpriv.
fn capture_with_capabilities(caps: &str, source: &[&str]) -> Option<String> {
    if !sh(&["setpriv", "--version"]) {
        eprintln!("\n*** capability test SKIPPED: needs setpriv (util-linux) ***\n");
        return None;
    }
    let set = format!("-all,{caps}");
    Some(capture_across_a_veth_as(
        &["setpriv", "--bounding-set", &set, "--"],
        source,
    ))
}

fn capture_across_a_veth(source: &[&str]) {
    capture_across_a_veth_as(&[], source);
}

/// Runs the scripted requests and the wrk load through the agent (started through
/// `wrapper`, if any) and checks what it logged; returns its standard error.
fn capture_across_a_veth_as(wrapper: &[&str], source: &[&str]) -> String {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !is_root() || !sh(&["ip", "-V"]) {
        eprintln!("\n*** live capture test SKIPPED: needs root and iproute2 ***\n");
        return String::new();
    }
    let mut lab = Lab::create();
    let base = lab.serve_http(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/server.py"),
        8080,
    );

    let dir = std::env::temp_dir().join(format!("tapline-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = TempDir(dir.clone());
    let log: PathBuf = dir.join("http.json");
    let err = dir.join("agent.err");
    let agent = Reaped(
        Command::new(
            wrapper
                .first()
                .copied()
                .unwrap_or(env!("CARGO_BIN_EXE_tapline-agent")),
        )
        .args(wrapper.iter().skip(1))
        .args(wrapper.first().map(|_| env!("CARGO_BIN_EXE_tapline-agent")))
        .args(["run", "--iface", &lab.host_if])
        .args(source)
        .args(["--workers", "2", "--out"])
        .arg(&log)
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap(),
    );
    wait_for(10, "the agent", || {
        std::fs::read_to_string(&err).is_ok_and(|s| s.contains("capturing on"))
    });

    curl(&["--compressed", &format!("{base}/chunked-gzip")]);
    curl(&[&format!(
        "{base}/v1/customers/cus_8a7F3k/invoices/1042?expand=lines"
    )]);
    curl(&[
        "-X",
        "POST",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        &"x".repeat(3000),
        &format!("{base}/v1/charges"),
    ]);
    curl(&["-I", &format!("{base}/v1/customers/cus_1")]);
    curl(&[
        "-H",
        "If-None-Match: \"v1\"",
        &format!("{base}/not-modified"),
    ]);
    curl(&["--http1.0", &format!("{base}/close")]);

    // Load: wrk's completed requests must all be captured.
    let wrk = Command::new("wrk")
        .args([
            "-t1",
            "-c4",
            "-d2s",
            &format!("{base}/v1/customers/cus_wrk"),
        ])
        .output();
    let wrk_done: Option<u64> = wrk.ok().and_then(|o| {
        let text = String::from_utf8_lossy(&o.stdout).into_owned();
        text.lines()
            .find(|l| l.contains("requests in"))
            .and_then(|l| l.split_whitespace().next()?.parse().ok())
    });

    // SIGTERM: capture stops, open transactions are flushed, exit 0.
    std::thread::sleep(Duration::from_millis(500));
    assert!(sh(&["kill", "-TERM", &agent.0.id().to_string()]));
    let mut agent = agent;
    let status = agent.0.wait().unwrap();
    assert!(
        status.success(),
        "agent exit: {status}: {}",
        std::fs::read_to_string(&err).unwrap_or_default()
    );
    // Nothing of ours stays attached to the interface.
    for dir in ["ingress", "egress"] {
        let out = Command::new("tc")
            .args(["filter", "show", "dev", &lab.host_if, dir])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(!text.contains("tapline"), "tc filter {dir} left: {text}");
    }
    // Programs and links go with the process (bpftool comes with .ci/setup); the kernel
    // frees them after an RCU grace period, so give it a moment.
    for what in [
        &["net", "show", "dev", &lab.host_if][..],
        &["prog", "show"],
        &["link", "show"],
    ] {
        let start = Instant::now();
        loop {
            let Ok(out) = Command::new("bpftool").args(what).output() else {
                break;
            };
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if !text.contains("tapline") {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "bpftool {what:?} still shows: {text}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    let txs: Vec<Value> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let scripted: Vec<(String, String, u64, u64)> = txs
        .iter()
        .map(|t| &t["http"])
        .filter(|h| h["url"].as_str() != Some("/v1/customers/cus_wrk"))
        .map(|h| {
            (
                h["http_method"].as_str().unwrap_or("").to_string(),
                h["url"].as_str().unwrap_or("").to_string(),
                h["status"].as_u64().unwrap_or(0),
                h["response_body_len"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let mut want = vec![
        ("GET", "/chunked-gzip", 200),
        (
            "GET",
            "/v1/customers/cus_8a7F3k/invoices/1042?expand=lines",
            200,
        ),
        ("POST", "/v1/charges", 201),
        ("HEAD", "/v1/customers/cus_1", 200),
        ("GET", "/not-modified", 304),
        ("GET", "/close", 200),
    ];
    let mut got: Vec<(&str, &str, u64)> = scripted
        .iter()
        .map(|(m, u, s, _)| (m.as_str(), u.as_str(), *s))
        .collect();
    got.sort();
    want.sort();
    assert_eq!(got, want, "scripted transactions");
    let body = |url: &str| scripted.iter().find(|t| t.1 == url).map(|t| t.3);
    assert_eq!(
        body("/chunked-gzip"),
        Some(2104),
        "chunked gzip body decoded"
    );
    assert_eq!(body("/close"), Some(850), "HTTP/1.0 body read until close");
    assert_eq!(body("/v1/customers/cus_1"), Some(0), "HEAD has no body");

    let captured = txs.len() - scripted.len();
    match wrk_done {
        Some(done) => {
            eprintln!("wrk completed {done} requests, the agent logged {captured}");
            assert!(done > 0);
            // wrk does not count requests still in flight when it stops; the agent does.
            assert!(
                captured as u64 >= done && captured as u64 <= done + 4,
                "{captured} vs {done}"
            );
        }
        None => eprintln!("*** wrk not installed: load part skipped ***"),
    }
    std::fs::read_to_string(&err).unwrap_or_default()
}

fn tapline_filters(iface: &str) -> usize {
    ["ingress", "egress"]
        .iter()
        .map(|dir| {
            let out = Command::new("tc")
                .args(["filter", "show", "dev", iface, dir])
                .output()
                .unwrap();
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains("tapline"))
                .count()
        })
        .sum()
}

/// Netlink filters outlive a crashed agent; the next start removes them before
/// attaching its own, and its exit leaves nothing.
#[test]
fn a_crashed_runs_netlink_filters_are_removed_at_the_next_start() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    if !is_root() || !sh(&["ip", "-V"]) {
        eprintln!("\n*** crash cleanup test SKIPPED: needs root and iproute2 ***\n");
        return;
    }
    let lab = Lab::create();
    let dir = std::env::temp_dir().join(format!("tapline-crash-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = TempDir(dir.clone());
    let start = |name: &str| {
        let err = dir.join(name);
        let agent = Reaped(
            Command::new(env!("CARGO_BIN_EXE_tapline-agent"))
                .args(["run", "--iface", &lab.host_if, "--source", "ebpf"])
                .args(["--tc-attach", "netlink", "--out", "/dev/null"])
                .stderr(std::fs::File::create(&err).unwrap())
                .spawn()
                .unwrap(),
        );
        wait_for(10, "the agent", || {
            std::fs::read_to_string(&err).is_ok_and(|s| s.contains("capturing on"))
        });
        agent
    };
    let mut first = start("first.err");
    assert_eq!(tapline_filters(&lab.host_if), 2);
    assert!(sh(&["kill", "-KILL", &first.0.id().to_string()]));
    let _ = first.0.wait();
    assert_eq!(
        tapline_filters(&lab.host_if),
        2,
        "a crash leaves its filters"
    );
    let mut second = start("second.err");
    assert_eq!(tapline_filters(&lab.host_if), 2, "replaced, not doubled");
    assert!(sh(&["kill", "-TERM", &second.0.id().to_string()]));
    assert!(second.0.wait().unwrap().success());
    assert_eq!(tapline_filters(&lab.host_if), 0);
}

/// The cgroup v2 hierarchy's mount point.
fn cgroup2_root() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&"cgroup2"))
        .map(|f| PathBuf::from(f[1]))
}

/// A cgroup made for the test and removed after (its processes are gone by then).
struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// cgroup_skb programs capture the traffic of one cgroup's processes and nothing else.
#[test]
fn ebpf_cgroup_capture_sees_only_that_cgroups_traffic() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let root = match cgroup2_root() {
        Some(r) if is_root() && sh(&["ip", "-V"]) => r,
        _ => {
            eprintln!(
                "\n*** cgroup capture test SKIPPED: needs root, iproute2 and cgroup v2 ***\n"
            );
            return;
        }
    };
    let mut lab = Lab::create();
    let base = lab.serve_http(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/server.py"),
        8080,
    );
    let group = Cgroup(root.join(format!("tapline-test-{}", std::process::id())));
    std::fs::create_dir_all(&group.0).unwrap();
    let dir = std::env::temp_dir().join(format!("tapline-cgroup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let _cleanup = TempDir(dir.clone());
    let log = dir.join("http.json");
    let err = dir.join("agent.err");
    let mut agent = Reaped(
        Command::new(env!("CARGO_BIN_EXE_tapline-agent"))
            .args(["run", "--source", "ebpf", "--cgroup"])
            .arg(&group.0)
            .arg("--out")
            .arg(&log)
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap(),
    );
    wait_for(10, "the agent", || {
        std::fs::read_to_string(&err).is_ok_and(|s| s.contains("capturing on"))
    });
    // One request from inside the cgroup, one from outside.
    let procs = group.0.join("cgroup.procs");
    let inside = format!(
        "echo $$ > {} && exec curl -s -o /dev/null --max-time 5 {base}/v1/customers/cus_inside",
        procs.display()
    );
    assert!(sh(&["sh", "-c", &inside]));
    curl(&[&format!("{base}/v1/customers/cus_outside")]);
    std::thread::sleep(Duration::from_millis(500));
    assert!(sh(&["kill", "-TERM", &agent.0.id().to_string()]));
    assert!(agent.0.wait().unwrap().success());
    let urls: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["http"]["url"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    // Egress and ingress of the same packets are both seen: logged once.
    assert_eq!(urls, ["/v1/customers/cus_inside"]);
}
