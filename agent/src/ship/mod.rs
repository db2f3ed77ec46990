//! The `ship` stage: events leave the node in batches over mutual TLS, and stay in the
//! spool until the collector acks them.
//!
//! Producers (the capture workers, or `read`) gather events with an [`EventBatcher`]
//! and hand full batches to the [`Shipper`], which numbers them (the agent's sequence,
//! which the collector deduplicates on), encodes them and spools them. One sender
//! thread keeps a session to the first collector that answers, sends up to `window`
//! batches ahead of their acks and, on any failure, reconnects with exponential backoff
//! and jitter and resends everything not acked.

pub mod client;
pub mod coverage;
pub mod spool;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tapline_wire::bundle::Bundle;
use tapline_wire::{Batch, Event};

use spool::{Admission, Spool, SpoolError, SpoolStats};

/// `[ship]` settings (command-line flags win).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShipConfig {
    /// The bundle from `tapline-collector enroll`.
    pub bundle: Option<PathBuf>,
    /// Collectors to use instead of the bundle's list.
    pub collectors: Vec<String>,
    /// Spool directory; without one, unacked batches are held in memory only.
    pub spool_dir: Option<PathBuf>,
    /// Spool bound in MiB (default 256 on disk, 64 in memory).
    pub spool_max_mb: Option<f64>,
    /// A batch is sent at this many events …
    pub batch_events: usize,
    /// … or this many (estimated) bytes …
    pub batch_bytes: usize,
    /// … or when its first event is this old (milliseconds).
    pub batch_ms: u64,
    /// Batches sent ahead of their acks.
    pub window: usize,
    /// How often appends are flushed to disk (milliseconds).
    pub fsync_ms: u64,
}

impl Default for ShipConfig {
    fn default() -> Self {
        ShipConfig {
            bundle: None,
            collectors: Vec::new(),
            spool_dir: None,
            spool_max_mb: None,
            batch_events: 2000,
            batch_bytes: 1 << 20,
            batch_ms: 1000,
            window: 8,
            fsync_ms: 1000,
        }
    }
}

/// The ship stage's metrics (registered by the agent's [`crate::live::Metrics`]).
#[derive(Debug, Clone, Default)]
pub struct ShipMetrics {
    pub events_spooled: Counter,
    pub batches_acked: Counter,
    pub batches_duplicate: Counter,
    pub events_acked: Counter,
    pub dropped_batches: Counter,
    pub dropped_events: Counter,
    pub pending_batches: Gauge,
    pub pending_bytes: Gauge,
    pub connected: Gauge,
    pub connects: Counter,
    pub connect_failures: Counter,
}

/// State shared by the producers and the sender thread.
pub(crate) struct Shared {
    pub(crate) spool: Mutex<Spool>,
    /// Signalled when a batch arrives or is acked.
    pub(crate) changed: Condvar,
    pub(crate) next_seq: AtomicU64,
    pub(crate) stop: AtomicBool,
    /// Set when a collector refused this agent for good (bad certificate, revoked).
    pub(crate) refused: Mutex<Option<String>>,
    pub(crate) metrics: ShipMetrics,
    pub(crate) agent: String,
    pub(crate) fsync: Duration,
    pub(crate) events_acked: AtomicU64,
    pub(crate) duplicates: AtomicU64,
    pub(crate) bytes_queued: AtomicU64,
    /// Where the status's capture coverage comes from (`run`); none for `read`.
    pub(crate) coverage: Mutex<Option<CoverageSource>>,
}

/// A snapshot of the capture's coverage, taken each time a status is sent.
pub type CoverageSource = Arc<dyn Fn() -> tapline_wire::proto::Coverage + Send + Sync>;

impl Shared {
    pub(crate) fn spool(&self) -> std::sync::MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn status(&self) -> tapline_wire::proto::AgentStatus {
        let st = self.spool().stats();
        tapline_wire::proto::AgentStatus {
            agent: self.agent.clone(),
            software: env!("CARGO_PKG_VERSION").to_string(),
            next_seq: self.next_seq.load(Ordering::Relaxed),
            pending_batches: st.pending_batches,
            pending_bytes: st.pending_bytes,
            dropped_batches: st.dropped_batches,
            dropped_events: st.dropped_events,
            coverage: self
                .coverage
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
                .map(|f| f()),
        }
    }

    pub(crate) fn reports_coverage(&self) -> bool {
        self.coverage
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    pub(crate) fn publish(&self, st: &SpoolStats) {
        self.metrics.pending_batches.set(st.pending_batches as i64);
        self.metrics.pending_bytes.set(st.pending_bytes as i64);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    #[error(transparent)]
    Spool(#[from] SpoolError),
    #[error("bundle {0}: {1}")]
    Bundle(PathBuf, String),
    #[error("TLS setup: {0}")]
    Tls(String),
}

/// What a finished shipper reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShipReport {
    pub events_acked: u64,
    pub duplicates: u64,
    /// Frame bytes of the batches spooled by this run (what goes on the wire, before TLS).
    pub bytes_queued: u64,
    pub pending_batches: u64,
    pub dropped_batches: u64,
    pub dropped_events: u64,
    /// Why delivery was given up, if it was.
    pub refused: Option<String>,
}

pub struct Shipper {
    shared: Arc<Shared>,
    sender: Option<std::thread::JoinHandle<()>>,
    last_drop_log: Mutex<(Instant, u64)>,
}

impl Shipper {
    /// Opens the spool and starts the sender thread.
    pub fn start(
        agent: &str,
        bundle: &Bundle,
        config: &ShipConfig,
        metrics: ShipMetrics,
    ) -> Result<Shipper, ShipError> {
        let mb = config
            .spool_max_mb
            .unwrap_or(if config.spool_dir.is_some() {
                256.0
            } else {
                64.0
            });
        let max = (mb.max(0.01) * f64::from(1u32 << 20)) as u64;
        let spool = match &config.spool_dir {
            Some(d) => Spool::open(d, max)?,
            None => Spool::in_memory(max),
        };
        let st = spool.stats();
        if st.pending_batches > 0 {
            eprintln!(
                "spool holds {} unacked batches ({} bytes) from an earlier run: resending",
                st.pending_batches, st.pending_bytes
            );
        }
        if st.damaged_records > 0 {
            eprintln!(
                "spool: cut {} damaged record tail(s) left by a crash",
                st.damaged_records
            );
        }
        // Sequences never go back: after the spool's last one, and after the clock in
        // microseconds, so a restart without a spool does not reuse numbers either.
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        let next = spool.last_seq().map_or(now, |s| (s + 1).max(now));
        let collectors = if config.collectors.is_empty() {
            bundle.collectors.clone()
        } else {
            config.collectors.clone()
        };
        let tls = client::tls_config(bundle)?;
        let shared = Arc::new(Shared {
            spool: Mutex::new(spool),
            changed: Condvar::new(),
            next_seq: AtomicU64::new(next),
            stop: AtomicBool::new(false),
            refused: Mutex::new(None),
            metrics,
            agent: agent.to_string(),
            fsync: Duration::from_millis(config.fsync_ms),
            events_acked: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            bytes_queued: AtomicU64::new(0),
            coverage: Mutex::new(None),
        });
        shared.publish(&st);
        let sender = {
            let shared = shared.clone();
            let server_name = bundle.server_name.clone();
            let window = config.window.max(1);
            std::thread::Builder::new()
                .name("ship".into())
                .spawn(move || client::run(shared, tls, server_name, collectors, window))
                .map_err(|e| ShipError::Tls(e.to_string()))?
        };
        Ok(Shipper {
            shared,
            sender: Some(sender),
            last_drop_log: Mutex::new((Instant::now() - Duration::from_secs(60), 0)),
        })
    }

    /// Reports capture coverage in every status from now on (status version 2).
    pub fn set_coverage_source(&self, source: CoverageSource) {
        *self
            .shared
            .coverage
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(source);
    }

    /// Numbers, encodes and spools one batch of events (dropped and counted when the
    /// spool is full).
    pub fn submit(&self, events: Vec<Event>) -> Result<Admission, ShipError> {
        if events.is_empty() {
            return Ok(Admission::Queued);
        }
        let n = events.len() as u32;
        let seq = self.shared.next_seq.fetch_add(1, Ordering::Relaxed);
        let frame = tapline_wire::encode(&Batch {
            agent: self.shared.agent.clone(),
            seq,
            events,
        });
        let bytes = frame.len() as u64;
        let (admission, st) = {
            let mut spool = self.shared.spool();
            let a = spool.push(seq, n, frame)?;
            spool.sync(self.shared.fsync, false)?;
            (a, spool.stats())
        };
        self.shared.publish(&st);
        if admission == Admission::Queued {
            self.shared.bytes_queued.fetch_add(bytes, Ordering::Relaxed);
            self.shared.metrics.events_spooled.inc_by(u64::from(n));
        }
        if admission == Admission::Dropped {
            self.shared.metrics.dropped_batches.inc();
            self.shared.metrics.dropped_events.inc_by(u64::from(n));
            let mut l = self.last_drop_log.lock().unwrap_or_else(|p| p.into_inner());
            if l.0.elapsed() >= Duration::from_secs(10) {
                eprintln!(
                    "spool full ({} bytes): dropping new batches; {} events dropped so far",
                    st.pending_bytes, st.dropped_events
                );
                *l = (Instant::now(), st.dropped_events);
            }
        }
        self.shared.changed.notify_all();
        Ok(admission)
    }

    pub fn stats(&self) -> SpoolStats {
        self.shared.spool().stats()
    }

    /// Events the collector has acked in this run.
    pub fn events_acked(&self) -> u64 {
        self.shared.events_acked.load(Ordering::Relaxed)
    }

    /// Whether a collector refused this agent for good.
    pub fn refused(&self) -> Option<String> {
        self.shared.refused.lock().ok().and_then(|r| r.clone())
    }

    /// Waits until every spooled batch is acked, the collector refused this agent, or
    /// `give_up` returns true; then stops.
    pub fn finish(mut self, give_up: impl Fn() -> bool) -> ShipReport {
        loop {
            let done = {
                let spool = self.shared.spool();
                let (spool, _) = self
                    .shared
                    .changed
                    .wait_timeout(spool, Duration::from_millis(100))
                    .unwrap_or_else(|p| p.into_inner());
                spool.is_empty()
            };
            if done || self.refused().is_some() || give_up() {
                break;
            }
        }
        self.stop()
    }

    /// Stops the sender (unacked batches stay in the spool for the next run).
    pub fn stop(&mut self) -> ShipReport {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.changed.notify_all();
        if let Some(h) = self.sender.take() {
            let _ = h.join();
        }
        let st = {
            let mut spool = self.shared.spool();
            if let Err(e) = spool.sync(Duration::ZERO, true) {
                eprintln!("{e}");
            }
            spool.stats()
        };
        ShipReport {
            events_acked: self.shared.events_acked.load(Ordering::Relaxed),
            duplicates: self.shared.duplicates.load(Ordering::Relaxed),
            bytes_queued: self.shared.bytes_queued.load(Ordering::Relaxed),
            pending_batches: st.pending_batches,
            dropped_batches: st.dropped_batches,
            dropped_events: st.dropped_events,
            refused: self.refused(),
        }
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        if self.sender.is_some() {
            self.stop();
        }
    }
}

/// Gathers events into batches bounded by count, estimated size and age.
pub struct EventBatcher {
    events: Vec<Event>,
    bytes: usize,
    started: Option<Instant>,
    max_events: usize,
    max_bytes: usize,
    max_age: Duration,
}

impl EventBatcher {
    pub fn new(config: &ShipConfig) -> Self {
        EventBatcher {
            events: Vec::new(),
            bytes: 0,
            started: None,
            max_events: config.batch_events.clamp(1, tapline_wire::MAX_EVENTS),
            // Far under the collector's frame bound even if nothing compresses.
            max_bytes: config.batch_bytes.clamp(1024, tapline_wire::MAX_FRAME / 4),
            max_age: Duration::from_millis(config.batch_ms),
        }
    }

    /// Adds an event; returns a batch when this one filled it.
    pub fn push(&mut self, e: Event) -> Option<Vec<Event>> {
        self.bytes += estimate(&e);
        self.started.get_or_insert_with(Instant::now);
        self.events.push(e);
        if self.events.len() >= self.max_events || self.bytes >= self.max_bytes {
            return self.take();
        }
        None
    }

    /// The batch, when its first event has waited long enough.
    pub fn due(&mut self) -> Option<Vec<Event>> {
        if self.started.is_some_and(|t| t.elapsed() >= self.max_age) {
            return self.take();
        }
        None
    }

    pub fn take(&mut self) -> Option<Vec<Event>> {
        self.started = None;
        self.bytes = 0;
        if self.events.is_empty() {
            return None;
        }
        Some(std::mem::take(&mut self.events))
    }
}

/// Bytes an event adds to a batch before compression, roughly.
fn estimate(e: &Event) -> usize {
    48 + e.method.len()
        + e.endpoint.len()
        + e.host.as_ref().map_or(0, |h| h.len())
        + e.user_agent.as_ref().map_or(0, |u| u.len())
        + e.actors
            .iter()
            .map(|a| {
                24 + a.value.as_ref().map_or(0, |v| v.len())
                    + a.claims
                        .iter()
                        .map(|(k, v)| k.len() + v.len())
                        .sum::<usize>()
            })
            .sum::<usize>()
        + e.entities
            .iter()
            .map(|x| 4 + x.kind.len() + x.id.len())
            .sum::<usize>()
        + e.owners
            .iter()
            .map(|x| x.field.len() + x.value.len())
            .sum::<usize>()
        + e.anomalies.iter().map(|a| a.len()).sum::<usize>()
}
