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
        let store = SqliteAlerts::open(db).context("opening the alert store")?;
        let (cursor, engine) = resume(&store, &config.detect)?;
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
    let mut store = SqliteAlerts::open(db).context("opening the alert store")?;
    if reset {
        store.reset_detection()?;
    }
    let (mut cursor, mut engine) = resume(&store, &config.detect)?;
    engine.set_suppressions(store.suppressions(now_us())?);
    let metrics = Arc::new(Metrics::new());
    let mut exporter = Exporter::open(&config.export, metrics.clone())?;
    loop {
        let (next, read) = read_batches(&store, &mut engine, cursor, 256, &metrics)?;
        cursor = next;
        if read == 0 {
            break;
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

/// The engine and the batch it stopped after: from the checkpoint, else (none, or one
/// this build cannot read) from the first stored batch.
fn resume(store: &SqliteAlerts, d: &crate::config::DetectConfig) -> anyhow::Result<(i64, Engine)> {
    use anyhow::Context;
    let geo = Geo::open(d.geoip.as_deref(), d.asn_db.as_deref(), &d.networks)
        .context("opening the geolocation databases")?;
    let mut engine = Engine::new(d.clone(), geo);
    let Some((cursor, state)) = store.checkpoint()? else {
        return Ok((0, engine));
    };
    match engine.load(&state) {
        Ok(()) => {
            log!(
                "detectors resume after batch {cursor}: {} actors, event time {}",
                engine.actors(),
                fmt_us(engine.watermark_us())
            );
            Ok((cursor, engine))
        }
        Err(err) => {
            log!("detector state unusable ({err}); learning again from the stored events");
            Ok((0, engine))
        }
    }
}

/// Feeds up to `limit` stored batches after `cursor` to the engine (a batch that does not
/// decode is skipped, logged and counted); returns the new cursor and the batches read.
fn read_batches(
    store: &SqliteAlerts,
    engine: &mut Engine,
    mut cursor: i64,
    limit: usize,
    metrics: &Metrics,
) -> Result<(i64, usize), crate::store::StoreError> {
    let rows = store.batches_after(cursor, limit)?;
    let n = rows.len();
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
    Ok((cursor, n))
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
        let read = match read_batches(&store, &mut engine, cursor, STEP_BATCHES, metrics) {
            Ok((next, n)) => {
                cursor = next;
                n > 0
            }
            Err(e) => {
                log!("detectors reading the store: {e}");
                if stopping {
                    break;
                }
                wakeup.wait(Duration::from_secs(1));
                continue;
            }
        };
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
