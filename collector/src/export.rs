//! Alerts out of the collector: appended to a JSON-lines file, and POSTed to a webhook
//! (a SIEM collector, a Slack-style relay) from a bounded queue with retries. Neither
//! ever holds the detectors up: a full queue or a failing endpoint drops alerts, counted
//! in `tapline_collector_export_dropped_total{sink,reason}` and logged, and the alerts
//! stay in the store either way.

use std::io::Write;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

use crate::alert::{Alert, Severity};
use crate::config::ExportConfig;
use crate::log;
use crate::metrics::{Labels, Metrics};

fn labels(sink: &str, reason: Option<&str>) -> Labels {
    let mut l = vec![("sink".to_string(), sink.to_string())];
    if let Some(r) = reason {
        l.push(("reason".to_string(), r.to_string()));
    }
    l
}

pub struct Exporter {
    jsonl: Option<(std::path::PathBuf, std::io::BufWriter<std::fs::File>)>,
    webhook: Option<(SyncSender<String>, JoinHandle<()>)>,
    min_severity: Severity,
    metrics: Arc<Metrics>,
}

impl Exporter {
    pub fn open(cfg: &ExportConfig, metrics: Arc<Metrics>) -> anyhow::Result<Exporter> {
        let jsonl = match &cfg.jsonl {
            Some(p) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("opening the alert export {}", p.display()))?;
                Some((p.clone(), std::io::BufWriter::new(f)))
            }
            None => None,
        };
        let webhook = match &cfg.webhook {
            Some(url) => {
                anyhow::ensure!(
                    url.starts_with("http://") || url.starts_with("https://"),
                    "export.webhook `{url}` is not an http:// or https:// URL"
                );
                let (tx, rx) = sync_channel(cfg.webhook_queue.max(1));
                let url = url.clone();
                let attempts = cfg.webhook_attempts.max(1);
                let m = metrics.clone();
                let thread = std::thread::Builder::new()
                    .name("webhook".into())
                    .spawn(move || webhook_loop(&url, attempts, rx, &m))?;
                Some((tx, thread))
            }
            None => None,
        };
        Ok(Exporter {
            jsonl,
            webhook,
            min_severity: cfg.min_severity,
            metrics,
        })
    }

    /// Hands alerts to the sinks; never waits on a webhook.
    pub fn export(&mut self, alerts: &[Alert]) {
        for a in alerts.iter().filter(|a| a.severity >= self.min_severity) {
            let line = match serde_json::to_string(a) {
                Ok(l) => l,
                Err(_) => continue,
            };
            if let Some((path, w)) = &mut self.jsonl {
                match writeln!(w, "{line}") {
                    Ok(()) => {
                        self.metrics
                            .export_sent
                            .get_or_create(&labels("jsonl", None))
                            .inc();
                    }
                    Err(e) => {
                        log!("writing the alert export {}: {e}", path.display());
                        self.metrics
                            .export_dropped
                            .get_or_create(&labels("jsonl", Some("failed")))
                            .inc();
                    }
                }
            }
            if let Some((tx, _)) = &self.webhook {
                match tx.try_send(line) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) => {
                        self.metrics
                            .export_dropped
                            .get_or_create(&labels("webhook", Some("queue_full")))
                            .inc();
                    }
                    Err(TrySendError::Disconnected(_)) => {}
                }
            }
        }
        if let Some((path, w)) = &mut self.jsonl
            && let Err(e) = w.flush()
        {
            log!("writing the alert export {}: {e}", path.display());
        }
    }

    /// Flushes the file and gives the webhook what it holds a few seconds to go out.
    pub fn close(mut self) {
        if let Some((_, w)) = &mut self.jsonl {
            let _ = w.flush();
        }
        if let Some((tx, thread)) = self.webhook.take() {
            drop(tx);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while !thread.is_finished() && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn webhook_loop(url: &str, attempts: u32, rx: Receiver<String>, metrics: &Metrics) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .http_status_as_error(true)
        .build()
        .into();
    let mut failing = false;
    while let Ok(body) = rx.recv() {
        let mut sent = false;
        for attempt in 0..attempts {
            match agent
                .post(url)
                .header("content-type", "application/json")
                .send(body.as_bytes())
            {
                Ok(_) => {
                    sent = true;
                    if failing {
                        log!("webhook {url} accepts alerts again");
                        failing = false;
                    }
                    break;
                }
                Err(e) => {
                    if !failing {
                        log!("webhook {url}: {e} (retrying)");
                        failing = true;
                    }
                    if attempt + 1 < attempts {
                        std::thread::sleep(Duration::from_millis(200 << attempt.min(6)));
                    }
                }
            }
        }
        if sent {
            metrics
                .export_sent
                .get_or_create(&labels("webhook", None))
                .inc();
        } else {
            metrics
                .export_dropped
                .get_or_create(&labels("webhook", Some("failed")))
                .inc();
        }
    }
}
