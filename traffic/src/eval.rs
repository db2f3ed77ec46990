//! The detection evaluation: a labelled scenario ([`crate::scenario`]) run through the
//! real binaries (agent → mutual TLS → collector with its detectors), and the alerts it
//! raised scored against the labels: recall per attack type, precision, false alerts per
//! 1000 actor-days, high-severity alerts on benign traps, and detection latency.
//!
//! An alert matches a label when it was raised within the label's time (from 10 minutes
//! before to an hour after) and its actor is one of the label's keys (a secret's
//! fingerprint, a JWT subject, a clear value, an endpoint) or one of its addresses is.
//! An attack is found when an alert *of its type* matches it; an alert is true when it
//! matches any attack. `new_endpoint` alerts are informational and not counted.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde::Serialize;

use crate::scenario::{Key, Label, gen_scenario};

pub const ATTACK_TYPES: [&str; 8] = [
    "rate_spike",
    "impossible_travel",
    "token_sharing",
    "bola",
    "permission_violation",
    "enumeration",
    "credential_stuffing",
    "data_exfiltration",
];

pub struct EvalOptions {
    /// Where `tapline-agent` and `tapline-collector` are.
    pub bin_dir: PathBuf,
    /// Scratch directory (emptied first).
    pub work: PathBuf,
    pub seed: u64,
    pub days: u32,
    pub scale: f64,
    /// Keep the scenario and the stored events of the last run; only detect again.
    pub rescore: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct TypeScore {
    pub attacks: usize,
    pub found: usize,
    /// Seconds of event time from the attack's start to the first alert of its type.
    pub latencies_s: Vec<f64>,
    pub missed: Vec<String>,
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub events: u64,
    pub actor_days: u64,
    pub per_type: BTreeMap<String, TypeScore>,
    /// Alerts counted (all but informational).
    pub alerts: usize,
    pub true_alerts: usize,
    /// Alerts matching no attack: type, severity, summary.
    pub false_alerts: Vec<String>,
    /// High or critical alerts on benign traps.
    pub trap_high: Vec<String>,
    /// All alerts on benign traps, by trap.
    pub trap_alerts: BTreeMap<String, usize>,
    pub info_alerts: usize,
}

impl Report {
    pub fn recall(&self, t: &str) -> f64 {
        self.per_type
            .get(t)
            .map_or(0.0, |s| s.found as f64 / s.attacks.max(1) as f64)
    }

    pub fn min_recall(&self) -> f64 {
        ATTACK_TYPES
            .iter()
            .map(|t| self.recall(t))
            .fold(1.0, f64::min)
    }

    pub fn precision(&self) -> f64 {
        if self.alerts == 0 {
            return 1.0;
        }
        self.true_alerts as f64 / self.alerts as f64
    }

    pub fn false_per_1000_actor_days(&self) -> f64 {
        self.false_alerts.len() as f64 * 1000.0 / self.actor_days.max(1) as f64
    }

    /// The table `cargo xtask eval` prints and docs/detection.md records.
    pub fn table(&self) -> String {
        let mut s = String::from(
            "| type | attacks | found | recall | latency (event time, max) |\n|---|---:|---:|---:|---:|\n",
        );
        for t in ATTACK_TYPES {
            let d = self.per_type.get(t);
            let (a, f) = d.map_or((0, 0), |d| (d.attacks, d.found));
            let lat = d
                .and_then(|d| d.latencies_s.iter().copied().reduce(f64::max))
                .map_or("-".to_string(), |l| format!("{l:.0} s"));
            s.push_str(&format!(
                "| {t} | {a} | {f} | {:.2} | {lat} |\n",
                self.recall(t)
            ));
        }
        s.push_str(&format!(
            "\nalerts {} (true {}, false {}), precision {:.3}; false alerts per 1000 actor-days {:.2} ({} actor-days, {} events); informational {}; high-severity alerts on benign traps: {}\n",
            self.alerts,
            self.true_alerts,
            self.false_alerts.len(),
            self.precision(),
            self.false_per_1000_actor_days(),
            self.actor_days,
            self.events,
            self.info_alerts,
            self.trap_high.len()
        ));
        s
    }
}

/// Kills the collector if the evaluation stops early.
struct Serving(Option<Child>);

impl Drop for Serving {
    fn drop(&mut self) {
        if let Some(c) = &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("running {:?}", cmd.get_program()))?;
    if !out.status.success() {
        bail!("{:?} failed: {}", cmd, String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Generates the scenario, runs it through the binaries and scores the alerts.
pub fn evaluate(o: &EvalOptions) -> Result<Report> {
    let pcap = o.work.join("scenario.pcap");
    let collector = o.bin_dir.join("tapline-collector");
    let data = o.work.join("collector");
    let labels_path = PathBuf::from(format!("{}.labels.json", pcap.display()));
    if o.rescore && data.exists() {
        run(Command::new(&collector)
            .args(["detect", "--reset", "--data"])
            .arg(&data)
            .arg("--geoip")
            .arg(format!("{}.city.mmdb", pcap.display()))
            .arg("--asn-db")
            .arg(format!("{}.asn.mmdb", pcap.display())))?;
    } else {
        ship(o, &pcap)?;
    }
    score_dir(&collector, &data, &labels_path)
}

fn ship(o: &EvalOptions, pcap: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(&o.work);
    std::fs::create_dir_all(&o.work)?;
    let scenario = gen_scenario(pcap, o.seed, o.days, o.scale)?;
    let agent_config = o.work.join("agent.toml");
    std::fs::write(&agent_config, crate::scenario::agent_config())?;
    let collector = o.bin_dir.join("tapline-collector");
    let agent = o.bin_dir.join("tapline-agent");
    let data = o.work.join("collector");
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let addr = format!("127.0.0.1:{port}");
    run(Command::new(&collector)
        .args(["init", "--data"])
        .arg(&data)
        .args(["--listen", &addr]))?;
    let bundle = o.work.join("eval.bundle");
    run(Command::new(&collector)
        .args(["enroll", "--fleet", "--name", "eval", "--data"])
        .arg(&data)
        .arg("--out")
        .arg(&bundle))?;
    let log_path = o.work.join("collector.log");
    let log = std::fs::File::create(&log_path)?;
    let mut serving = Serving(Some(
        Command::new(&collector)
            .args(["serve", "--data"])
            .arg(&data)
            .arg("--geoip")
            .arg(&scenario.city_db)
            .arg("--asn-db")
            .arg(&scenario.asn_db)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting the collector")?,
    ));
    let start = Instant::now();
    while std::net::TcpStream::connect(&addr).is_err() {
        ensure!(
            start.elapsed() < Duration::from_secs(30),
            "the collector did not start: {}",
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    run(Command::new(&agent)
        .arg("read")
        .arg(pcap)
        .arg("--config")
        .arg(&agent_config)
        .arg("--ship")
        .arg("--bundle")
        .arg(&bundle))?;
    // SIGTERM: the detectors read every stored batch before the collector exits.
    if let Some(mut c) = serving.0.take() {
        run(Command::new("kill").args(["-TERM", &c.id().to_string()]))?;
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            if c.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                bail!("the collector did not stop");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    Ok(())
}

fn score_dir(collector: &Path, data: &Path, labels_path: &Path) -> Result<Report> {
    let alerts_json = run(Command::new(collector)
        .args([
            "alerts",
            "--json",
            "--severity",
            "info",
            "--limit",
            "10000",
            "--data",
        ])
        .arg(data))?;
    let alerts: Vec<serde_json::Value> = alerts_json
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("alerts JSON")?;
    // Actor-days from the stored events.
    let mut events = 0u64;
    let mut actor_days: HashSet<(i64, String)> = HashSet::new();
    let mut child = Command::new(collector)
        .args(["events", "--json", "--data"])
        .arg(data)
        .stdout(Stdio::piped())
        .spawn()?;
    let mut text = String::new();
    child
        .stdout
        .take()
        .context("events output")?
        .read_to_string(&mut text)?;
    child.wait()?;
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line)?;
        events += 1;
        let day = v["ts_us"].as_i64().unwrap_or(0) / 86_400_000_000;
        // The actor as the detectors see it: a JWT by its subject, else the first
        // credential, else the address.
        let who = v["actors"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|x| x["kind"] != "client_ip")
                    .or(a.first())
                    .map(|x| {
                        let sub = x["claims"].as_array().and_then(|c| {
                            c.iter()
                                .find(|kv| kv[0] == "sub")
                                .and_then(|kv| kv[1].as_str())
                        });
                        match sub {
                            Some(s) => format!("sub:{s}"),
                            None => x["fingerprint"]
                                .as_str()
                                .or(x["value"].as_str())
                                .unwrap_or("")
                                .to_string(),
                        }
                    })
            })
            .unwrap_or_default();
        actor_days.insert((day, who));
    }
    let key_text = std::fs::read_to_string(data.join("fingerprint.key"))?;
    let key = tapline_wire::fingerprint::key_from_config(key_text.trim())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let labels: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(labels_path)?)?;
    let labels: Vec<Label> = labels["labels"]
        .as_array()
        .context("labels")?
        .iter()
        .map(label_from_json)
        .collect::<Result<_>>()?;
    let mut report = score(&labels, &alerts, &key);
    report.events = events;
    report.actor_days = actor_days.len() as u64;
    Ok(report)
}

fn label_from_json(v: &serde_json::Value) -> Result<Label> {
    let keys = v["keys"]
        .as_array()
        .context("keys")?
        .iter()
        .filter_map(|k| {
            let (kind, val) = k.as_object()?.iter().next()?;
            let val = val.as_str()?.to_string();
            Some(match kind.as_str() {
                "secret" => Key::Secret(val),
                "sub" => Key::Sub(val),
                "value" => Key::Value(val),
                "ip" => Key::Ip(val),
                _ => Key::Endpoint(val),
            })
        })
        .collect();
    Ok(Label {
        id: v["id"].as_str().unwrap_or("").into(),
        kind: v["type"].as_str().unwrap_or("").into(),
        trap: v["trap"].as_bool().unwrap_or(false),
        start_us: v["start_us"].as_i64().unwrap_or(0),
        end_us: v["end_us"].as_i64().unwrap_or(0),
        keys,
        note: v["note"].as_str().unwrap_or("").into(),
    })
}

fn matches(label: &Label, alert: &serde_json::Value, key: &[u8; 32]) -> bool {
    let first = alert["first_seen_us"].as_i64().unwrap_or(0);
    let last = alert["last_seen_us"].as_i64().unwrap_or(first);
    if last < label.start_us - 600_000_000 || first > label.end_us + 3_600_000_000 {
        return false;
    }
    let actor_key = alert["actor"]["key"].as_str().unwrap_or("");
    let ips: BTreeSet<&str> = alert["source_ips"]
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    label.keys.iter().any(|k| match k {
        Key::Secret(s) => {
            actor_key
                == format!(
                    "{:016x}",
                    tapline_wire::fingerprint::fingerprint(key, s.as_bytes())
                )
        }
        Key::Sub(s) => actor_key == format!("sub:{s}"),
        Key::Value(v) => actor_key == v,
        Key::Endpoint(e) => actor_key == e,
        Key::Ip(ip) => match ip.split_once('/') {
            Some((net, _)) => {
                let prefix: String = net.split('.').take(2).collect::<Vec<_>>().join(".") + ".";
                ips.iter().any(|i| i.starts_with(&prefix)) || actor_key.starts_with(&prefix)
            }
            None => ips.contains(ip.as_str()) || actor_key == ip,
        },
    })
}

/// Scores alerts (as `tapline-collector alerts --json` prints them) against labels.
pub fn score(labels: &[Label], alerts: &[serde_json::Value], key: &[u8; 32]) -> Report {
    let mut r = Report::default();
    for t in ATTACK_TYPES {
        r.per_type.insert(t.to_string(), TypeScore::default());
    }
    for l in labels.iter().filter(|l| !l.trap) {
        let s = r.per_type.entry(l.kind.clone()).or_default();
        s.attacks += 1;
        let hits: Vec<i64> = alerts
            .iter()
            .filter(|a| a["type"] == l.kind.as_str() && matches(l, a, key))
            .map(|a| a["first_seen_us"].as_i64().unwrap_or(0))
            .collect();
        match hits.iter().min() {
            Some(first) => {
                s.found += 1;
                s.latencies_s
                    .push(((first - l.start_us).max(0)) as f64 / 1e6);
            }
            None => s.missed.push(format!("{} ({})", l.id, l.note)),
        }
    }
    for a in alerts {
        let severity = a["severity"].as_str().unwrap_or("");
        if severity == "info" {
            r.info_alerts += 1;
            continue;
        }
        r.alerts += 1;
        let describe = || {
            format!(
                "{} {} {} {}: {}",
                a["type"].as_str().unwrap_or(""),
                severity,
                a["actor"]["key"].as_str().unwrap_or(""),
                a["endpoint"].as_str().unwrap_or(""),
                a["explanation"]["summary"].as_str().unwrap_or("")
            )
        };
        let attack = labels.iter().any(|l| !l.trap && matches(l, a, key));
        if attack {
            r.true_alerts += 1;
        } else {
            r.false_alerts.push(describe());
        }
        for l in labels.iter().filter(|l| l.trap && matches(l, a, key)) {
            *r.trap_alerts.entry(l.kind.clone()).or_default() += 1;
            if !attack && matches!(severity, "high" | "critical") {
                r.trap_high.push(format!("{}: {}", l.kind, describe()));
            }
        }
    }
    r
}
