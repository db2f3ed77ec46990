//! The detector thread of `serve`: tails the store from its checkpoint, feeds the
//! engine, writes alerts and exports them. It reads what the ingest already committed,
//! so it never slows the ingest down and never loses an event: when it falls behind it
//! catches up from the store (`tapline_collector_detect_lag_batches` says how far).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::Engine;
use crate::config::CollectorConfig;
use crate::export::Exporter;
use crate::geo::Geo;
use crate::log;
use crate::metrics::Metrics;
use crate::store::{AlertStore, SqliteAlerts, now_us};

/// Batches read per step.
const STEP_BATCHES: usize = 64;
/// How often the state is saved (and at every stop).
const CHECKPOINT_EVERY: Duration = Duration::from_secs(30);

/// Wakes the detector when the ingest committed something.
#[derive(Default)]
pub struct Wakeup {
    flag: Mutex<bool>,
    cond: Condvar,
}

impl Wakeup {
    pub fn notify(&self) {
        if let Ok(mut f) = self.flag.lock() {
            *f = true;
            self.cond.notify_one();
        }
    }

    fn wait(&self, timeout: Duration) {
        if let Ok(f) = self.flag.lock()
            && let Ok((mut f, _)) = self.cond.wait_timeout_while(f, timeout, |f| !*f)
        {
            *f = false;
        }
    }
}

pub struct Detector {
    stop: Arc<AtomicBool>,
    pub wakeup: Arc<Wakeup>,
    thread: Option<JoinHandle<()>>,
}

impl Detector {
    /// Opens the geo databases and the checkpoint, then starts the thread.
    pub fn start(
        db: &Path,
        config: &CollectorConfig,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Detector> {
        use anyhow::Context;
        let d = &config.detect;
        let geo = Geo::open(d.geoip.as_deref(), d.asn_db.as_deref(), &d.networks)
            .context("opening the geolocation databases")?;
        let store = SqliteAlerts::open(db).context("opening the alert store")?;
        let (cursor, engine) = match store.checkpoint()? {
            Some((cursor, state)) => match Engine::restore(d.clone(), geo, &state) {
                Ok(e) => {
                    log!(
                        "detectors resume after batch {cursor}: {} actors, event time {}",
                        e.actors(),
                        fmt_us(e.watermark_us())
                    );
                    (cursor, e)
                }
                Err(err) => {
                    log!("detector state unusable ({err}); learning again from the stored events");
                    let geo = Geo::open(d.geoip.as_deref(), d.asn_db.as_deref(), &d.networks)?;
                    (0, Engine::new(d.clone(), geo))
                }
            },
            None => (0, Engine::new(d.clone(), geo)),
        };
        let exporter = Exporter::open(&config.export, metrics.clone())?;
        let stop = Arc::new(AtomicBool::new(false));
        let wakeup = Arc::new(Wakeup::default());
        let thread = {
            let stop = stop.clone();
            let wakeup = wakeup.clone();
            std::thread::Builder::new()
                .name("detect".into())
                .spawn(move || {
                    run(store, engine, cursor, exporter, &stop, &wakeup, &metrics);
                })?
        };
        Ok(Detector {
            stop,
            wakeup,
            thread: Some(thread),
        })
    }

    /// Reads what is stored, saves the state, and stops.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wakeup.notify();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Runs the detectors over the stored events not read yet (all of them after
/// `reset`), in this thread, and saves alerts and state: `tapline-collector detect`.
pub fn run_once(
    db: &Path,
    config: &CollectorConfig,
    reset: bool,
) -> anyhow::Result<super::EngineStats> {
    use anyhow::Context;
    let d = &config.detect;
    let mut store = SqliteAlerts::open(db).context("opening the alert store")?;
    if reset {
        store.reset_detection()?;
    }
    let open_geo = || {
        Geo::open(d.geoip.as_deref(), d.asn_db.as_deref(), &d.networks)
            .context("opening the geolocation databases")
    };
    let (cursor, mut engine) = match store.checkpoint()? {
        Some((cursor, state)) => (cursor, Engine::restore(d.clone(), open_geo()?, &state)?),
        None => (0, Engine::new(d.clone(), open_geo()?)),
    };
    engine.set_suppressions(store.suppressions(now_us())?);
    let mut cursor = cursor;
    let mut exporter = Exporter::open(&config.export, Arc::new(Metrics::new()))?;
    loop {
        let rows = store.batches_after(cursor, 256)?;
        if rows.is_empty() {
            break;
        }
        for (id, frame) in rows {
            match tapline_wire::decode(&frame) {
                Ok(Some((batch, _))) => batch.events.iter().for_each(|e| engine.observe(e)),
                _ => log!("stored batch {id} does not decode; skipped"),
            }
            cursor = id;
        }
        let alerts = engine.drain_alerts();
        store.save(&alerts, None)?;
        exporter.export(&alerts);
    }
    let alerts = engine.drain_alerts();
    let state = engine.snapshot();
    store.save(&alerts, Some((cursor, &state)))?;
    exporter.export(&alerts);
    exporter.close();
    Ok(engine.stats.clone())
}

fn fmt_us(us: i64) -> String {
    humantime::format_rfc3339_seconds(
        std::time::UNIX_EPOCH + Duration::from_micros(us.max(0) as u64),
    )
    .to_string()
}

fn run(
    mut store: SqliteAlerts,
    mut engine: Engine,
    mut cursor: i64,
    mut exporter: Exporter,
    stop: &AtomicBool,
    wakeup: &Wakeup,
    metrics: &Metrics,
) {
    let mut last_checkpoint = Instant::now();
    let mut last_suppressions: Option<Instant> = None;
    let mut reported = engine.stats.clone();
    loop {
        if last_suppressions.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
            match store.suppressions(now_us()) {
                Ok(s) => engine.set_suppressions(s),
                Err(e) => log!("reading suppressions: {e}"),
            }
            last_suppressions = Some(Instant::now());
        }
        let stopping = stop.load(Ordering::SeqCst);
        let rows = match store.batches_after(cursor, STEP_BATCHES) {
            Ok(r) => r,
            Err(e) => {
                log!("detectors reading the store: {e}");
                if stopping {
                    break;
                }
                wakeup.wait(Duration::from_secs(1));
                continue;
            }
        };
        let read = !rows.is_empty();
        for (id, frame) in rows {
            match tapline_wire::decode(&frame) {
                Ok(Some((batch, _))) => {
                    for e in &batch.events {
                        engine.observe(e);
                    }
                    metrics.detect_events.inc_by(batch.events.len() as u64);
                }
                _ => {
                    metrics.detect_corrupt_batches.inc();
                    log!("stored batch {id} does not decode; the detectors skip it");
                }
            }
            cursor = id;
        }
        let alerts = engine.drain_alerts();
        for a in &alerts {
            if a.count == 1 {
                metrics
                    .alerts
                    .get_or_create(&vec![
                        ("type".to_string(), a.kind.name().to_string()),
                        ("severity".to_string(), a.severity.name().to_string()),
                    ])
                    .inc();
            }
        }
        let due = last_checkpoint.elapsed() >= CHECKPOINT_EVERY || (stopping && !read);
        let state = due.then(|| engine.snapshot());
        if !alerts.is_empty() || state.is_some() {
            match store.save(&alerts, state.as_deref().map(|s| (cursor, s))) {
                Ok(()) => {
                    if due {
                        last_checkpoint = Instant::now();
                    }
                }
                Err(e) => log!("saving alerts: {e}"),
            }
            exporter.export(&alerts);
        }
        let s = &engine.stats;
        metrics
            .detect_suppressed
            .inc_by(s.suppressed - reported.suppressed);
        metrics
            .detect_below_threshold
            .inc_by(s.below_threshold - reported.below_threshold);
        metrics
            .detect_actors_evicted
            .inc_by(s.actors_evicted - reported.actors_evicted);
        reported = s.clone();
        metrics.detect_actors.set(engine.actors() as i64);
        metrics
            .detect_watermark_seconds
            .set(engine.watermark_us() / 1_000_000);
        if let Ok(last) = store.last_batch() {
            metrics.detect_lag_batches.set((last - cursor).max(0));
        }
        if stopping && !read {
            break;
        }
        if !read {
            wakeup.wait(Duration::from_millis(500));
        }
    }
    exporter.close();
}
