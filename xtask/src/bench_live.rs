//! `cargo xtask bench live`: wrk against nginx across a veth, once without the agent and
//! once with it capturing on the veth; prints the application's throughput both ways, the
//! transactions captured, loss, the agent's CPU and peak memory.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use tapline_traffic::netlab::{Lab, is_root, sh};

const SECONDS: u64 = 8;
const METRICS: &str = "127.0.0.1:19108";

fn wrk(url: &str) -> Result<(u64, f64)> {
    let out = Command::new("wrk")
        .args(["-t1", "-c32", &format!("-d{SECONDS}s"), url])
        .output()
        .context("running wrk (apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let done = text
        .lines()
        .find(|l| l.contains("requests in"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .context("wrk printed no request count")?;
    let rate = text
        .lines()
        .find(|l| l.starts_with("Requests/sec:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .context("wrk printed no rate")?;
    Ok((done, rate))
}

/// CPU seconds (user + system) a process has used.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

fn peak_rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .unwrap_or(0.0)
        / 1024.0
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(name))
        .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
        .sum()
}

fn scrape() -> String {
    Command::new("curl")
        .args(["-s", &format!("http://{METRICS}/metrics")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

pub fn run() -> Result<()> {
    ensure!(
        is_root(),
        "bench live needs root (network namespaces, capture)"
    );
    crate::cargo_build()?;
    let dir = std::env::temp_dir().join(format!("tapline-bench-live-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut lab = Lab::create();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "worker_processes 1;\ndaemon off;\npid {pid};\nerror_log {err};\nevents {{ worker_connections 1024; }}\nhttp {{\n  access_log off;\n  keepalive_requests 1000000;\n  server {{\n    listen {ip}:8080;\n    location / {{\n      default_type application/json;\n      return 200 '{{\"id\":\"cus_8a7F3k\",\"tenant\":\"t_acme\",\"amount\":1200}}';\n    }}\n  }}\n}}\n",
            pid = dir.join("nginx.pid").display(),
            err = dir.join("error.log").display(),
            ip = lab.server_ip
        ),
    )?;
    let conf_s = conf.to_string_lossy().into_owned();
    lab.spawn_in_ns(&["nginx", "-c", &conf_s]);
    let url = format!("http://{}:8080/v1/customers/cus_8a7F3k", lab.server_ip);
    let start = Instant::now();
    while !sh(&["curl", "-s", "-o", "/dev/null", "--max-time", "1", &url]) {
        if start.elapsed() > Duration::from_secs(10) {
            bail!(
                "nginx did not start (see {})",
                dir.join("error.log").display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    let (base_done, base_rate) = wrk(&url)?;

    let log = dir.join("agent.json");
    let mut agent = Command::new("target/release/tapline-agent")
        .args(["run", "--iface", &lab.host_if, "--filter", "tcp port 8080"])
        .args(["--metrics", METRICS, "--rotate-mb", "0", "--out"])
        .arg(&log)
        .stderr(std::fs::File::create(dir.join("agent.err"))?)
        .spawn()
        .context("starting tapline-agent")?;
    std::thread::sleep(Duration::from_secs(1));
    let before = scrape();
    let cpu0 = cpu_seconds(agent.id());
    let (done, rate) = wrk(&url)?;
    // Let the agent drain its queue.
    std::thread::sleep(Duration::from_secs(2));
    let cpu = cpu_seconds(agent.id()) - cpu0;
    let rss = peak_rss_mib(agent.id());
    let after = scrape();
    sh(&["kill", "-TERM", &agent.id().to_string()]);
    let _ = agent.wait();
    drop(lab);
    // Every transaction, flushed at exit (wrk's count leaves out those in flight).
    let txs = std::fs::read_to_string(&log)
        .map(|s| s.lines().count() as u64)
        .unwrap_or(0);
    let errors = std::fs::read_to_string(dir.join("agent.err")).unwrap_or_default();
    if errors.lines().count() > 1 {
        eprintln!("agent stderr:\n{errors}");
    }
    let _ = std::fs::remove_dir_all(&dir);

    let drops = metric(&after, "tapline_drops_total") - metric(&before, "tapline_drops_total");
    let loss = if done > 0 {
        100.0 * (done.saturating_sub(txs)) as f64 / done as f64
    } else {
        0.0
    };
    let cores = cpu / SECONDS as f64;
    for cause in ["queue_full", "kernel", "interface"] {
        let pat = format!("cause=\"{cause}\"");
        let n = |t: &str| -> u64 {
            t.lines()
                .filter(|l| l.starts_with("tapline_drops_total") && l.contains(&pat))
                .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        };
        println!("drops ({cause}): {}", n(&after) - n(&before));
    }
    println!("wrk -t1 -c32 -d{SECONDS}s against nginx across a veth (server in a namespace)\n");
    println!("{:<34} {:>12} {:>12}", "", "requests", "req/s");
    println!(
        "{:<34} {base_done:>12} {base_rate:>12.0}",
        "without the agent"
    );
    println!("{:<34} {done:>12} {rate:>12.0}", "with the agent capturing");
    println!(
        "\nagent: {txs} transactions captured, loss {loss:.2} % ({drops} frames dropped), {cores:.2} cores \
         ({:.3} core per 10k req/s), peak RSS {rss:.1} MiB; app throughput {:+.1} %",
        cores / (rate / 10_000.0),
        100.0 * (rate - base_rate) / base_rate
    );
    Ok(())
}
