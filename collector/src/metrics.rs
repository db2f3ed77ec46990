//! The collector's Prometheus metrics (`/metrics`).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

pub type Labels = Vec<(String, String)>;

pub fn label(k: &str, v: &str) -> Labels {
    vec![(k.to_string(), v.to_string())]
}

pub struct Metrics {
    registry: Registry,
    pub connections: Gauge,
    pub sessions: Counter,
    pub batches: Family<Labels, Counter>,
    pub events: Counter,
    pub bytes: Counter,
    pub rejects: Family<Labels, Counter>,
    pub store_commit_seconds: Histogram,
    pub store_queue: Gauge,
    pub pruned_events: Counter,
    pub agent_pending_batches: Family<Labels, Gauge>,
    pub agent_dropped_events: Family<Labels, Gauge>,
    pub agent_lag_seconds: Family<Labels, Gauge>,
    pub detect_events: Counter,
    pub detect_lag_batches: Gauge,
    pub detect_watermark_seconds: Gauge,
    pub detect_actors: Gauge,
    pub detect_corrupt_batches: Counter,
    pub detect_suppressed: Counter,
    pub detect_below_threshold: Counter,
    pub detect_actors_evicted: Counter,
    pub alerts: Family<Labels, Counter>,
    pub export_sent: Family<Labels, Counter>,
    pub export_dropped: Family<Labels, Counter>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut r = Registry::with_prefix("tapline_collector");
        let m = Metrics {
            registry: Registry::default(),
            connections: Gauge::default(),
            sessions: Counter::default(),
            batches: Family::default(),
            events: Counter::default(),
            bytes: Counter::default(),
            rejects: Family::default(),
            store_commit_seconds: Histogram::new([
                0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
            ]),
            store_queue: Gauge::default(),
            pruned_events: Counter::default(),
            agent_pending_batches: Family::default(),
            agent_dropped_events: Family::default(),
            agent_lag_seconds: Family::default(),
            detect_events: Counter::default(),
            detect_lag_batches: Gauge::default(),
            detect_watermark_seconds: Gauge::default(),
            detect_actors: Gauge::default(),
            detect_corrupt_batches: Counter::default(),
            detect_suppressed: Counter::default(),
            detect_below_threshold: Counter::default(),
            detect_actors_evicted: Counter::default(),
            alerts: Family::default(),
            export_sent: Family::default(),
            export_dropped: Family::default(),
        };
        r.register(
            "connections",
            "Agent connections open",
            m.connections.clone(),
        );
        r.register("sessions", "Agent sessions accepted", m.sessions.clone());
        r.register(
            "batches",
            "Batches received, by outcome: stored, duplicate (a retry of a stored batch)",
            m.batches.clone(),
        );
        r.register("events", "Events stored", m.events.clone());
        r.register(
            "bytes",
            "Batch bytes received (as sent, compressed)",
            m.bytes.clone(),
        );
        r.register(
            "rejects",
            "Connections refused or closed, by reason: tls, unknown_cert, revoked, identity, protocol, bad_frame, too_large, version, timeout, store",
            m.rejects.clone(),
        );
        r.register(
            "store_commit_seconds",
            "Time to store one group of batches durably",
            m.store_commit_seconds.clone(),
        );
        r.register(
            "store_queue",
            "Batches waiting for the store",
            m.store_queue.clone(),
        );
        r.register(
            "pruned_events",
            "Events removed by retention",
            m.pruned_events.clone(),
        );
        r.register(
            "agent_pending_batches",
            "Batches an agent holds unacked (spooled or in flight), as it last reported",
            m.agent_pending_batches.clone(),
        );
        r.register(
            "agent_dropped_events",
            "Events an agent dropped because its spool was full, as it last reported",
            m.agent_dropped_events.clone(),
        );
        r.register(
            "agent_lag_seconds",
            "Age of the newest stored event of an agent when it was stored",
            m.agent_lag_seconds.clone(),
        );
        r.register(
            "detect_events",
            "Events the detectors have read",
            m.detect_events.clone(),
        );
        r.register(
            "detect_lag_batches",
            "Stored batches the detectors have not read yet",
            m.detect_lag_batches.clone(),
        );
        r.register(
            "detect_watermark_seconds",
            "Event time (Unix seconds) the detectors have reached",
            m.detect_watermark_seconds.clone(),
        );
        r.register(
            "detect_actors",
            "Actors the baselines follow",
            m.detect_actors.clone(),
        );
        r.register(
            "detect_corrupt_batches",
            "Stored batches the detectors could not decode (skipped)",
            m.detect_corrupt_batches.clone(),
        );
        r.register(
            "detect_suppressed",
            "Findings dropped by an analyst's false-positive suppression",
            m.detect_suppressed.clone(),
        );
        r.register(
            "detect_below_threshold",
            "Findings whose score context lowered below `low` (not raised)",
            m.detect_below_threshold.clone(),
        );
        r.register(
            "detect_actors_evicted",
            "Actors forgotten to stay within detect.max_actors",
            m.detect_actors_evicted.clone(),
        );
        r.register(
            "alerts",
            "Alerts raised, by type and severity",
            m.alerts.clone(),
        );
        r.register(
            "export_sent",
            "Alerts exported, by sink: jsonl, webhook",
            m.export_sent.clone(),
        );
        r.register(
            "export_dropped",
            "Alerts not exported, by sink and reason: queue_full, failed",
            m.export_dropped.clone(),
        );
        Metrics { registry: r, ..m }
    }

    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = encode(&mut s, &self.registry);
        s
    }

    pub fn reject(&self, reason: &str) {
        self.rejects.get_or_create(&label("reason", reason)).inc();
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
