//! The `ingest` stage: a TLS server that takes batches from many agents, hands them to
//! the store and acks each one only once it is durably stored.
//!
//! Memory stays bounded whatever the agents send: a connection holds one frame being
//! read (at most `max_frame_bytes`) and `max_inflight_batches` batches waiting for the
//! store, and the store queue is bounded, so a slow store stops the reading and the
//! agents spool. Any malformed input ends that connection alone, with a Reject naming
//! the reason and a log line.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_rustls::TlsAcceptor;

use tapline_wire::WireError;
use tapline_wire::proto::{self, AgentStatus, ClientMessage, ServerMessage};

use crate::config::CollectorConfig;
use crate::geo::Geo;
use crate::log;
use crate::metrics::{Metrics, label};
use crate::pki::{DataDir, Registry};
use crate::store::{AgentSeen, EventStore, IncomingBatch, Outcome, SqliteStore, now_us};

/// Work for the store thread.
enum StoreJob {
    Batch(IncomingBatch, oneshot::Sender<Result<Outcome, String>>),
    Status(AgentSeen, bool),
}

/// A batch's fate: its sequence and outcome once stored, or why it was refused.
type BatchResult = Result<(u64, Outcome), (&'static str, String)>;

/// What the connection's writer sends next, in order.
enum Reply {
    Batch(oneshot::Receiver<BatchResult>),
    Reject(String),
}

struct Ctx {
    config: CollectorConfig,
    registry_path: std::path::PathBuf,
    registry: Mutex<(Option<SystemTime>, Registry)>,
    metrics: Arc<Metrics>,
    store: mpsc::Sender<StoreJob>,
    /// Bytes of frames read and not yet stored, across all connections.
    buffered: Arc<Semaphore>,
}

impl Ctx {
    /// The registry as on disk now (reloaded when `enroll` or `revoke` changed it).
    fn registry(&self) -> Registry {
        let mtime = std::fs::metadata(&self.registry_path)
            .and_then(|m| m.modified())
            .ok();
        let mut r = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        if mtime != r.0 {
            match Registry::load(&self.registry_path) {
                Ok(reg) => *r = (mtime, reg),
                Err(e) => log!("registry not reloaded: {e}"),
            }
        }
        r.1.clone()
    }
}

/// A running collector.
pub struct Server {
    pub local_addr: SocketAddr,
    pub metrics_addr: Option<SocketAddr>,
    pub api_addr: Option<SocketAddr>,
    accept: tokio::task::JoinHandle<()>,
    store_thread: std::thread::JoinHandle<()>,
    detector: Option<crate::detect::worker::Detector>,
    ctx: Arc<Ctx>,
}

impl Server {
    /// Opens the store, binds the listeners and starts serving.
    pub async fn start(dir: &DataDir, config: CollectorConfig) -> anyhow::Result<Server> {
        use anyhow::Context;
        let tls = crate::pki::server_tls(dir)?;
        let mut store = SqliteStore::open(&dir.database(), &config.store)
            .with_context(|| format!("opening {}", dir.database().display()))?;
        store.reset_connections()?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("listening on {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let metrics = Arc::new(Metrics::new());
        let metrics_addr = match config.metrics {
            Some(a) => Some(serve_metrics(a, metrics.clone()).await?),
            None => None,
        };
        let detector = if config.detect.enabled {
            Some(crate::detect::worker::Detector::start(
                &dir.database(),
                &config,
                metrics.clone(),
            )?)
        } else {
            None
        };
        let api_addr = match config.api {
            Some(a) => {
                let (token, created) = crate::auth::ApiToken::load_or_create(&dir.api_token())
                    .with_context(|| format!("reading {}", dir.api_token().display()))?;
                if created {
                    log!("wrote a new API token to {}", dir.api_token().display());
                }
                let geo = Geo::open(
                    config.detect.geoip.as_deref(),
                    config.detect.asn_db.as_deref(),
                    &config.detect.networks,
                )
                .unwrap_or_else(|e| {
                    log!("the UI places no addresses: {e}");
                    Geo::none()
                });
                let options = crate::api::ApiOptions {
                    token,
                    config: config.clone(),
                    geo,
                };
                Some(crate::api::serve(a, dir.database(), metrics.clone(), options).await?)
            }
            None => None,
        };
        let (tx, rx) = mpsc::channel(config.store.queue.max(1));
        let store_thread = {
            let metrics = metrics.clone();
            let max = config.store.max_batches_per_commit.max(1);
            let wakeup = detector.as_ref().map(|d| d.wakeup.clone());
            std::thread::Builder::new()
                .name("store".into())
                .spawn(move || store_loop(store, rx, metrics, max, wakeup))?
        };
        let ctx = Arc::new(Ctx {
            registry: Mutex::new((None, Registry::default())),
            registry_path: dir.registry(),
            buffered: Arc::new(Semaphore::new(
                (config.limits.max_buffered_mb.max(1) as usize)
                    .saturating_mul(1 << 20)
                    .max(config.limits.max_frame_bytes + 4),
            )),
            config,
            metrics,
            store: tx,
        });
        ctx.registry();
        let acceptor = TlsAcceptor::from(tls);
        let accept = tokio::spawn(accept_loop(listener, acceptor, ctx.clone()));
        Ok(Server {
            local_addr,
            metrics_addr,
            api_addr,
            accept,
            store_thread,
            detector,
            ctx,
        })
    }

    /// Stops accepting, lets the store finish what it was given, and returns.
    pub async fn shutdown(self) {
        self.accept.abort();
        let _ = self.accept.await;
        drop(self.ctx);
        let store_thread = self.store_thread;
        let detector = self.detector;
        let _ = tokio::task::spawn_blocking(move || {
            let _ = store_thread.join();
            if let Some(d) = detector {
                d.stop();
            }
        })
        .await;
    }
}

async fn accept_loop(listener: TcpListener, acceptor: TlsAcceptor, ctx: Arc<Ctx>) {
    let slots = Arc::new(Semaphore::new(ctx.config.limits.max_connections.max(1)));
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let (sock, peer) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                log!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = sock.set_nodelay(true);
        let acceptor = acceptor.clone();
        let ctx = ctx.clone();
        tokio::spawn(async move {
            ctx.metrics.connections.inc();
            if let Err((reason, msg)) = session(sock, peer, acceptor, &ctx).await {
                ctx.metrics.reject(reason);
                log!("{peer}: {msg}");
            }
            ctx.metrics.connections.dec();
            drop(permit);
        });
    }
}

type SessionError = (&'static str, String);

fn wire_reason(e: &WireError) -> &'static str {
    match e {
        WireError::TooLarge(_) => "too_large",
        WireError::UnsupportedVersion(_) => "version",
        _ => "bad_frame",
    }
}

async fn session(
    sock: TcpStream,
    peer: SocketAddr,
    acceptor: TlsAcceptor,
    ctx: &Ctx,
) -> Result<(), SessionError> {
    let limits = &ctx.config.limits;
    let handshake = Duration::from_secs(limits.handshake_timeout_secs.max(1));
    let tls = match tokio::time::timeout(handshake, acceptor.accept(sock)).await {
        Ok(Ok(t)) => t,
        Ok(Err(e)) => {
            let alert = e
                .get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
                .is_some_and(|t| matches!(t, rustls::Error::AlertReceived(_)));
            let hint = if alert {
                " (the client does not trust this collector's certificate: is its bundle from this collector?)"
            } else {
                ""
            };
            return Err(("tls", format!("TLS handshake failed: {e}{hint}")));
        }
        Err(_) => return Err(("timeout", "TLS handshake timed out".into())),
    };
    let cert = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default();
    let (mut rd, wr) = tokio::io::split(tls);
    let result = serve_session(&mut rd, wr, &cert, peer, ctx).await;
    if result.is_err() {
        // The agent may still be sending: read and drop it for a moment, so closing with
        // unread data (a TCP reset) does not destroy the Reject on its way.
        let mut sink = [0u8; 16 << 10];
        let mut left = 1usize << 20;
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(n) = rd.read(&mut sink).await {
                if n == 0 || n >= left {
                    break;
                }
                left -= n;
            }
        })
        .await;
    }
    result
}

async fn serve_session<R, W>(
    rd: &mut R,
    mut wr: W,
    cert: &[u8],
    peer: SocketAddr,
    ctx: &Ctx,
) -> Result<(), SessionError>
where
    R: tokio::io::AsyncRead + Unpin,
    W: tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let limits = &ctx.config.limits;
    let handshake = Duration::from_secs(limits.handshake_timeout_secs.max(1));
    let idle = Duration::from_secs(limits.idle_timeout_secs.max(1));
    let reject = |reason: String| proto::encode_server(&ServerMessage::Reject { reason });
    let registry = ctx.registry();
    let Some(enrolled) = registry.find(cert).cloned() else {
        let msg =
            "certificate is signed by this collector's CA but is not in its registry".to_string();
        let _ = wr.write_all(&reject(msg.clone())).await;
        let _ = wr.shutdown().await;
        return Err(("unknown_cert", msg));
    };
    if enrolled.revoked {
        let msg = format!("certificate of `{}` is revoked", enrolled.name);
        let _ = wr.write_all(&reject(msg.clone())).await;
        let _ = wr.shutdown().await;
        return Err(("revoked", msg));
    }
    // The first message says who the agent is.
    let first = read_frame(rd, proto::MAX_CONTROL + 12, handshake, None).await;
    let status = match first.map(|f| f.map(|(f, _)| proto::decode_client(&f))) {
        Ok(Some(Ok(Some((ClientMessage::Status(s), _))))) => s,
        Ok(Some(Ok(_))) => {
            let msg = "the first message must be the agent's status".to_string();
            let _ = wr.write_all(&reject(msg.clone())).await;
            let _ = wr.shutdown().await;
            return Err(("protocol", msg));
        }
        Ok(Some(Err(e))) => {
            let msg = format!("bad first frame from `{}`: {e}", enrolled.name);
            let _ = wr.write_all(&reject(msg.clone())).await;
            let _ = wr.shutdown().await;
            return Err((wire_reason(&e), msg));
        }
        Ok(None) => {
            return Err((
                "protocol",
                format!("`{}` closed before saying who it is", enrolled.name),
            ));
        }
        Err(e) => {
            let (reason, msg) = e.describe();
            let _ = wr.write_all(&reject(msg.clone())).await;
            let _ = wr.shutdown().await;
            return Err((reason, format!("`{}`: {msg}", enrolled.name)));
        }
    };
    if !enrolled.fleet && status.agent != enrolled.name {
        let msg = format!(
            "certificate of `{}` cannot speak for agent `{}` (enroll it with --fleet to share it)",
            enrolled.name, status.agent
        );
        let _ = wr.write_all(&reject(msg.clone())).await;
        let _ = wr.shutdown().await;
        return Err(("identity", msg));
    }
    if status.agent.is_empty() || status.agent.len() > 256 {
        let msg = "agent name must be 1-256 bytes".to_string();
        let _ = wr.write_all(&reject(msg.clone())).await;
        let _ = wr.shutdown().await;
        return Err(("identity", msg));
    }
    let agent = status.agent.clone();
    ctx.metrics.sessions.inc();
    log!(
        "{peer}: agent `{agent}` connected (certificate `{}`)",
        enrolled.name
    );
    let seen = |s: AgentStatus| AgentSeen {
        status: s,
        cert: enrolled.name.clone(),
        peer: peer.ip(),
    };
    report_status(ctx, &seen(status.clone()), true).await;

    let (reply_tx, reply_rx) = mpsc::channel::<Reply>(limits.max_inflight_batches.max(1));
    let writer = tokio::spawn(write_replies(wr, reply_rx));
    let mut last_status = status;
    // Batches are summarized in parallel but queued for the store in the order they
    // came, so that the store (and the detectors reading it) see an agent's events in
    // order: each batch waits for the one before it to be queued.
    let mut previous_queued: Option<oneshot::Receiver<()>> = None;
    let result: Result<(), SessionError> = loop {
        let read = read_frame(rd, limits.max_frame_bytes, idle, Some(&ctx.buffered)).await;
        let (frame, permit) = match read {
            Ok(Some(f)) => f,
            Ok(None) => break Ok(()),
            Err(e) => {
                let (reason, msg) = e.describe();
                let _ = reply_tx.send(Reply::Reject(msg.clone())).await;
                break Err((reason, format!("`{agent}`: {msg}")));
            }
        };
        if frame.get(4..8) == Some(&proto::STATUS_MAGIC[..]) {
            match proto::decode_client(&frame) {
                Ok(Some((ClientMessage::Status(s), _))) if s.agent == agent => {
                    report_status(ctx, &seen(s.clone()), true).await;
                    last_status = s;
                    continue;
                }
                Ok(Some((ClientMessage::Status(s), _))) => {
                    let msg = format!("status of agent `{}` in the session of `{agent}`", s.agent);
                    let _ = reply_tx.send(Reply::Reject(msg.clone())).await;
                    break Err(("identity", msg));
                }
                Ok(_) => unreachable!("a whole status frame"),
                Err(e) => {
                    let msg = format!("bad frame: {e}");
                    let _ = reply_tx.send(Reply::Reject(msg.clone())).await;
                    break Err((wire_reason(&e), format!("`{agent}`: {msg}")));
                }
            }
        }
        // A batch: its reply slot first (it bounds the batches read ahead of their
        // acks), then decoding and storing run while the next frame is read; the writer
        // still acks in the order the batches came.
        let Ok(slot) = reply_tx.reserve().await else {
            break Ok(());
        };
        if writer.is_finished() {
            break Ok(());
        }
        let (done_tx, done_rx) = oneshot::channel();
        slot.send(Reply::Batch(done_rx));
        ctx.metrics.bytes.inc_by(frame.len() as u64);
        let store = ctx.store.clone();
        let agent = agent.clone();
        let cert = enrolled.name.clone();
        let (queued_tx, queued_rx) = oneshot::channel::<()>();
        let turn = previous_queued.replace(queued_rx);
        tokio::spawn(async move {
            // The frame's share of the buffered-bytes budget is held until it is stored.
            let _permit = permit;
            // Checked and summarized, not decoded: the store keeps the frame as sent.
            let summarized =
                tokio::task::spawn_blocking(move || (tapline_wire::summarize(&frame), frame)).await;
            let result = match summarized {
                Ok((Ok(Some((batch, _))), frame)) if batch.agent == agent => {
                    let seq = batch.seq;
                    let (stored_tx, stored_rx) = oneshot::channel();
                    let job = StoreJob::Batch(IncomingBatch { frame, batch, cert }, stored_tx);
                    if let Some(turn) = turn {
                        // Sent, or dropped when the one before failed: either way, go.
                        let _ = turn.await;
                    }
                    let sent = store.send(job).await;
                    drop(queued_tx);
                    if sent.is_err() {
                        Err(("store", "the store has stopped".to_string()))
                    } else {
                        match stored_rx.await {
                            Ok(Ok(o)) => Ok((seq, o)),
                            Ok(Err(e)) => Err(("store", format!("store failure: {e}"))),
                            Err(_) => Err(("store", "store failure: the store has stopped".into())),
                        }
                    }
                }
                Ok((Ok(Some((batch, _))), _)) => Err((
                    "identity",
                    format!(
                        "batch of agent `{}` in the session of `{agent}`",
                        batch.agent
                    ),
                )),
                Ok((Ok(None), _)) => Err(("bad_frame", "frame ends early".into())),
                Ok((Err(e), _)) => Err((wire_reason(&e), format!("bad frame: {e}"))),
                Err(_) => Err(("bad_frame", "decoder failed".into())),
            };
            let _ = done_tx.send(result);
        });
    };
    drop(reply_tx);
    let written = writer.await.unwrap_or(Ok(()));
    report_status(ctx, &seen(last_status), false).await;
    let result = result.and(written.map_err(|(r, m)| (r, format!("`{agent}`: {m}"))));
    if result.is_ok() {
        log!("{peer}: agent `{agent}` disconnected");
    }
    result
}

async fn report_status(ctx: &Ctx, seen: &AgentSeen, connected: bool) {
    let s = &seen.status;
    let l = label("agent", &s.agent);
    ctx.metrics
        .agent_pending_batches
        .get_or_create(&l)
        .set(s.pending_batches as i64);
    ctx.metrics
        .agent_dropped_events
        .get_or_create(&l)
        .set(s.dropped_events as i64);
    let _ = ctx
        .store
        .send(StoreJob::Status(seen.clone(), connected))
        .await;
}

/// Writes acks in batch order as the store finishes them; a Reject ends the session,
/// and a batch that failed is rejected with its reason, which is returned.
async fn write_replies<W: tokio::io::AsyncWrite + Unpin>(
    mut wr: W,
    mut rx: mpsc::Receiver<Reply>,
) -> Result<(), SessionError> {
    let mut outcome = Ok(());
    while let Some(r) = rx.recv().await {
        let (bytes, last) = match r {
            Reply::Batch(done) => match done.await {
                Ok(Ok((seq, o))) => (
                    proto::encode_server(&ServerMessage::Ack {
                        seq,
                        duplicate: o == Outcome::Duplicate,
                    }),
                    false,
                ),
                Ok(Err((kind, reason))) => {
                    let bytes = proto::encode_server(&ServerMessage::Reject {
                        reason: reason.clone(),
                    });
                    outcome = Err((kind, reason));
                    (bytes, true)
                }
                Err(_) => break,
            },
            Reply::Reject(reason) => (
                proto::encode_server(&ServerMessage::Reject { reason }),
                true,
            ),
        };
        if wr.write_all(&bytes).await.is_err() || wr.flush().await.is_err() || last {
            break;
        }
    }
    let _ = wr.shutdown().await;
    outcome
}

#[derive(Debug)]
enum FrameError {
    Wire(WireError),
    TooLarge(usize),
    Eof { got: usize, want: usize },
    Io(std::io::Error),
    Timeout(u64),
}

impl FrameError {
    fn describe(&self) -> (&'static str, String) {
        match self {
            FrameError::Wire(e) => (wire_reason(e), format!("bad frame: {e}")),
            FrameError::TooLarge(n) => {
                ("too_large", format!("frame of {n} bytes exceeds the limit"))
            }
            FrameError::Eof { got, want } => (
                "bad_frame",
                format!("connection closed inside a frame ({got} of {want} bytes)"),
            ),
            FrameError::Io(e) => ("protocol", format!("read failed: {e}")),
            FrameError::Timeout(secs) => ("timeout", format!("no message for {secs} s")),
        }
    }
}

/// Reads one whole frame (length prefix included); `Ok(None)` on a clean end between
/// frames. The length is checked before the body is read, so a hostile length costs
/// nothing, and with a `budget` the frame's bytes are taken from it before they are read
/// (waiting while other frames hold it). `idle` bounds each wait for the peer, not for the
/// budget.
async fn read_frame<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
    max: usize,
    idle: Duration,
    budget: Option<&Arc<Semaphore>>,
) -> Result<Option<(Vec<u8>, Option<OwnedSemaphorePermit>)>, FrameError> {
    let timeout = FrameError::Timeout(idle.as_secs());
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let r = tokio::time::timeout(idle, rd.read(&mut prefix[got..])).await;
        match r {
            Err(_) => return Err(timeout),
            Ok(Ok(0)) if got == 0 => return Ok(None),
            Ok(Ok(0)) => return Err(FrameError::Eof { got, want: 4 }),
            Ok(Ok(n)) => got += n,
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof && got == 0 => {
                return Ok(None);
            }
            Ok(Err(e)) => return Err(FrameError::Io(e)),
        }
    }
    let len = match tapline_wire::frame_len(&prefix) {
        Ok(Some(l)) => l,
        Ok(None) => unreachable!("four bytes are a prefix"),
        Err(e) => return Err(FrameError::Wire(e)),
    };
    if len > max {
        return Err(FrameError::TooLarge(len));
    }
    let permit = match budget {
        Some(b) => Some(
            b.clone()
                .acquire_many_owned((4 + len) as u32)
                .await
                .map_err(|_| FrameError::Io(std::io::Error::other("shutting down")))?,
        ),
        None => None,
    };
    let mut frame = vec![0u8; 4 + len];
    frame[..4].copy_from_slice(&prefix);
    let mut at = 4;
    while at < frame.len() {
        match tokio::time::timeout(idle, rd.read(&mut frame[at..])).await {
            Err(_) => return Err(timeout),
            Ok(Ok(0)) => {
                return Err(FrameError::Eof {
                    got: at - 4,
                    want: len,
                });
            }
            Ok(Ok(n)) => at += n,
            Ok(Err(e)) => return Err(FrameError::Io(e)),
        }
    }
    Ok(Some((frame, permit)))
}

/// The store thread: group commits whatever batches are waiting, acks them, and prunes
/// old data now and then.
fn store_loop(
    mut store: SqliteStore,
    mut rx: mpsc::Receiver<StoreJob>,
    metrics: Arc<Metrics>,
    max_per_commit: usize,
    wakeup: Option<Arc<crate::detect::worker::Wakeup>>,
) {
    let mut last_prune: Option<Instant> = None;
    let mut group: Vec<(IncomingBatch, oneshot::Sender<Result<Outcome, String>>)> = Vec::new();
    loop {
        if last_prune.is_none_or(|t| t.elapsed() > Duration::from_secs(600)) {
            last_prune = Some(Instant::now());
            match store.prune(now_us()) {
                Ok(p) if p.events > 0 => {
                    metrics.pruned_events.inc_by(p.events);
                    log!(
                        "retention removed {} events in {} batches",
                        p.events,
                        p.batches
                    );
                }
                Ok(_) => {}
                Err(e) => log!("retention failed: {e}"),
            }
        }
        let job = if store.derived_pending() {
            // When traffic stops, the derived tables (the UI's endpoint inventory) are
            // written within a few seconds anyway rather than at the next batch.
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                match rx.try_recv() {
                    Ok(j) => break Some(j),
                    Err(mpsc::error::TryRecvError::Disconnected) => break None,
                    Err(mpsc::error::TryRecvError::Empty) if Instant::now() >= deadline => {
                        if let Err(e) = store.flush_derived() {
                            log!("writing the derived tables: {e}");
                        }
                        break rx.blocking_recv();
                    }
                    Err(mpsc::error::TryRecvError::Empty) => {
                        std::thread::sleep(Duration::from_millis(50))
                    }
                }
            }
        } else {
            rx.blocking_recv()
        };
        let Some(job) = job else {
            if let Err(e) = store.close() {
                log!("closing the store: {e}");
            }
            return;
        };
        let mut next = Some(job);
        while let Some(job) = next.take() {
            match job {
                StoreJob::Batch(b, done) => group.push((b, done)),
                StoreJob::Status(seen, connected) => {
                    if let Err(e) = store.agent_status(&seen, connected) {
                        log!("storing the status of `{}`: {e}", seen.status.agent);
                    }
                }
            }
            if group.len() < max_per_commit {
                next = rx.try_recv().ok();
            }
        }
        metrics.store_queue.set(rx.len() as i64);
        if group.is_empty() {
            continue;
        }
        let started = Instant::now();
        let batches: Vec<IncomingBatch>;
        let dones: Vec<_>;
        (batches, dones) = group.drain(..).unzip();
        match store.append(&batches) {
            Ok(outcomes) => {
                metrics
                    .store_commit_seconds
                    .observe(started.elapsed().as_secs_f64());
                let now = now_us();
                for ((b, o), done) in batches.iter().zip(&outcomes).zip(dones) {
                    match o {
                        Outcome::Stored => {
                            metrics
                                .batches
                                .get_or_create(&label("outcome", "stored"))
                                .inc();
                            metrics.events.inc_by(b.batch.events as u64);
                            if b.batch.events > 0 {
                                metrics
                                    .agent_lag_seconds
                                    .get_or_create(&label("agent", &b.batch.agent))
                                    .set((now - b.batch.ts_max) / 1_000_000);
                            }
                        }
                        Outcome::Duplicate => {
                            metrics
                                .batches
                                .get_or_create(&label("outcome", "duplicate"))
                                .inc();
                        }
                    }
                    let _ = done.send(Ok(*o));
                }
                if let Some(w) = &wakeup {
                    w.notify();
                }
            }
            Err(e) => {
                log!("store failure, {} batches not acked: {e}", batches.len());
                metrics.reject("store");
                for done in dones {
                    let _ = done.send(Err(e.to_string()));
                }
            }
        }
    }
}

/// Serves `/metrics` (plain HTTP; bind it to a private address).
async fn serve_metrics(addr: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<SocketAddr> {
    use anyhow::Context;
    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("serving metrics on {addr}"))?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                continue;
            };
            let metrics = metrics.clone();
            tokio::spawn(async move {
                let mut req = [0u8; 2048];
                let n =
                    match tokio::time::timeout(Duration::from_secs(5), sock.read(&mut req)).await {
                        Ok(Ok(n)) => n,
                        _ => return,
                    };
                let (status, body) = if req[..n].starts_with(b"GET /metrics") {
                    ("200 OK", metrics.render())
                } else {
                    ("404 Not Found", "try /metrics\n".to_string())
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(body.as_bytes()).await;
            });
        }
    });
    Ok(local)
}
