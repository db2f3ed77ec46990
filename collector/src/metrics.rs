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
