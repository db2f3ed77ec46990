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

/// Busy and total jiffies of all CPUs (`/proc/stat`).
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = f.iter().sum();
    // idle and iowait
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// One run of wrk with the agent capturing.
struct Measured {
    label: String,
    done: u64,
    rate: f64,
    txs: u64,
    drops: Vec<(String, u64)>,
    truncated: u64,
    agent_cores: f64,
    system_cores: f64,
    rss: f64,
}

fn with_agent(
    label: &str,
    iface: &str,
    url: &str,
    args: &[&str],
    dir: &std::path::Path,
) -> Result<Measured> {
    let log = dir.join(format!("agent-{label}.json"));
    let err = dir.join(format!("agent-{label}.err"));
    let mut agent = Command::new("target/release/tapline-agent")
        .args(["run", "--iface", iface])
        .args(args)
        .args(["--metrics", METRICS, "--rotate-mb", "0", "--out"])
        .arg(&log)
        .stderr(std::fs::File::create(&err)?)
        .spawn()
        .context("starting tapline-agent")?;
    let start = Instant::now();
    while !std::fs::read_to_string(&err).is_ok_and(|s| s.contains("capturing on")) {
        if start.elapsed() > Duration::from_secs(15) || agent.try_wait()?.is_some() {
            let _ = agent.kill();
            bail!(
                "the agent did not start: {}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = scrape();
    let cpu0 = cpu_seconds(agent.id());
    let (busy0, _) = cpu_jiffies();
    let (done, rate) = wrk(url)?;
    let (busy1, _) = cpu_jiffies();
    // Let the agent drain its queue.
    std::thread::sleep(Duration::from_secs(2));
    let cpu = cpu_seconds(agent.id()) - cpu0;
    let rss = peak_rss_mib(agent.id());
    let after = scrape();
    sh(&["kill", "-TERM", &agent.id().to_string()]);
    let _ = agent.wait();
    // Every transaction, flushed at exit (wrk's count leaves out those in flight).
    let txs = std::fs::read_to_string(&log)
        .map(|s| s.lines().count() as u64)
        .unwrap_or(0);
    let errors = std::fs::read_to_string(&err).unwrap_or_default();
    if errors.lines().any(|l| l.contains("rror")) {
        eprintln!("agent ({label}) stderr:\n{errors}");
    }
    let mut drops = Vec::new();
    for cause in ["queue_full", "kernel", "interface", "ring_full"] {
        let pat = format!("cause=\"{cause}\"");
        let n = |t: &str| -> u64 {
            t.lines()
                .filter(|l| l.starts_with("tapline_drops_total") && l.contains(&pat))
                .filter_map(|l| l.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        };
        drops.push((cause.to_string(), n(&after) - n(&before)));
    }
    let truncated =
        metric(&after, "tapline_truncated_total") - metric(&before, "tapline_truncated_total");
    Ok(Measured {
        label: label.to_string(),
        done,
        rate,
        txs,
        drops,
        truncated,
        agent_cores: cpu / SECONDS as f64,
        // jiffies are 1/100 s
        system_cores: (busy1 - busy0) as f64 / 100.0 / SECONDS as f64,
        rss,
    })
}

/// `sources`: which capture sources to compare (`pcap`, `ebpf`), each against a run
/// without the agent, all in this one run.
pub fn run(sources: &[&str]) -> Result<()> {
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
            "worker_processes 1;\nmaster_process off;\ndaemon off;\npid {pid};\nerror_log {err};\nevents {{ worker_connections 1024; }}\nhttp {{\n  access_log off;\n  keepalive_requests 1000000;\n  server {{\n    listen {ip}:8080;\n    location / {{\n      default_type application/json;\n      return 200 '{{\"id\":\"cus_8a7F3k\",\"tenant\":\"t_acme\",\"amount\":1200}}';\n    }}\n  }}\n}}\n",
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

    let (busy0, _) = cpu_jiffies();
    let (base_done, base_rate) = wrk(&url)?;
    let (busy1, _) = cpu_jiffies();
    let base_system = (busy1 - busy0) as f64 / 100.0 / SECONDS as f64;
    let mut runs = Vec::new();
    for source in sources {
        let args: &[&str] = match *source {
            "pcap" => &["--source", "pcap", "--filter", "tcp port 8080"],
            _ => &["--source", "ebpf", "--port", "8080"],
        };
        let label = if *source == "pcap" {
            "libpcap"
        } else {
            "eBPF (tc)"
        };
        runs.push(with_agent(label, &lab.host_if, &url, args, &dir)?);
    }
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);

    println!("wrk -t1 -c32 -d{SECONDS}s against nginx across a veth (server in a namespace)\n");
    println!(
        "{:<26} {:>10} {:>9} {:>8} {:>10} {:>7} {:>9} {:>9} {:>8}",
        "", "requests", "req/s", "app", "captured", "loss", "agent", "system", "RSS"
    );
    println!(
        "{:<26} {base_done:>10} {base_rate:>9.0} {:>8} {:>10} {:>7} {:>9} {:>9.2} {:>8}",
        "without the agent", "", "", "", "", base_system, ""
    );
    for m in &runs {
        let loss = if m.done > 0 {
            100.0 * m.done.saturating_sub(m.txs) as f64 / m.done as f64
        } else {
            0.0
        };
        println!(
            "{:<26} {:>10} {:>9.0} {:>+7.1}% {:>10} {:>6.2}% {:>9.2} {:>9.2} {:>7.1}M",
            format!("with the agent, {}", m.label),
            m.done,
            m.rate,
            100.0 * (m.rate - base_rate) / base_rate,
            m.txs,
            loss,
            m.agent_cores,
            m.system_cores,
            m.rss
        );
    }
    println!(
        "\nagent and system: cores busy during the run (agent: its own threads; system: every CPU, kernel included)"
    );
    for m in &runs {
        let drops: Vec<String> = m
            .drops
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        println!(
            "{}: drops {}; truncated {}; agent {:.3} core per 10k req/s; system {:.3} core per 10k req/s",
            m.label,
            if drops.is_empty() {
                "none".to_string()
            } else {
                drops.join(", ")
            },
            m.truncated,
            m.agent_cores / (m.rate / 10_000.0),
            m.system_cores / (m.rate / 10_000.0),
        );
    }
    Ok(())
}
