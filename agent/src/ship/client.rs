//! The sender thread: one mutual-TLS session at a time to the first collector that
//! answers, batches sent ahead of their acks up to a window, reconnection with
//! exponential backoff and jitter.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tapline_wire::bundle::Bundle;
use tapline_wire::proto::{self, ServerMessage};

use super::{Shared, ShipError};

/// TLS 1.3 with the bundle's client certificate, trusting only the bundle's CA.
pub fn tls_config(bundle: &Bundle) -> Result<Arc<rustls::ClientConfig>, ShipError> {
    let bad = |what: &str, e: &dyn std::fmt::Display| ShipError::Tls(format!("{what}: {e}"));
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(bundle.ca.as_bytes()) {
        let c = c.map_err(|e| bad("bundle CA", &e))?;
        roots.add(c).map_err(|e| bad("bundle CA", &e))?;
    }
    let chain = CertificateDer::pem_slice_iter(bundle.cert.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("bundle certificate", &e))?;
    let key =
        PrivateKeyDer::from_pem_slice(bundle.key.as_bytes()).map_err(|e| bad("bundle key", &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|e| bad("TLS", &e))?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .map_err(|e| bad("bundle certificate", &e))?;
    Ok(Arc::new(config))
}

/// Why a session ended.
enum End {
    /// Try again later (network, collector restart, store failure).
    Transient(String),
    /// The collector will not take this agent as it is (certificate, identity).
    Refused(String),
    /// Asked to stop.
    Stopped,
}

const STATUS_EVERY: Duration = Duration::from_secs(10);
const BACKOFF_MIN: Duration = Duration::from_millis(200);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

pub(crate) fn run(
    shared: Arc<Shared>,
    tls: Arc<rustls::ClientConfig>,
    server_name: String,
    collectors: Vec<String>,
    window: usize,
) {
    let mut backoff = BACKOFF_MIN;
    let mut rng = seed();
    let mut which = 0usize;
    let mut last_error: Option<(String, Instant)> = None;
    while !shared.stop.load(Ordering::Relaxed) {
        if shared.spool().is_empty() && !shared.reports_coverage() {
            // Nothing to send: connect when there is. A capturing agent connects anyway,
            // so the collector hears about its coverage while the network is quiet.
            let spool = shared.spool();
            let _ = shared
                .changed
                .wait_timeout(spool, Duration::from_millis(200));
            if shared.spool().is_empty() {
                continue;
            }
        }
        let addr = &collectors[which % collectors.len().max(1)];
        let started = Instant::now();
        match session(&shared, &tls, &server_name, addr, window) {
            End::Stopped => return,
            End::Refused(why) => {
                eprintln!("collector {addr} refused this agent: {why}");
                shared.metrics.connect_failures.inc();
                if let Ok(mut r) = shared.refused.lock() {
                    *r = Some(why);
                }
                shared.changed.notify_all();
                backoff = BACKOFF_MAX;
            }
            End::Transient(why) => {
                shared.metrics.connect_failures.inc();
                // One line per distinct error, and again every minute it lasts.
                let repeat = last_error
                    .as_ref()
                    .is_some_and(|(w, t)| *w == why && t.elapsed() < Duration::from_secs(60));
                if !repeat {
                    eprintln!("collector {addr}: {why}; retrying");
                    last_error = Some((why, Instant::now()));
                }
                if started.elapsed() > Duration::from_secs(10) {
                    backoff = BACKOFF_MIN;
                }
            }
        }
        shared.metrics.connected.set(0);
        which += 1;
        // Full jitter: between half and all of the current backoff.
        let half = backoff.as_millis() as u64 / 2;
        let wait = Duration::from_millis(half + next(&mut rng) % (half + 1));
        let until = Instant::now() + wait;
        while Instant::now() < until && !shared.stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20).min(until - Instant::now()));
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(1);
    (t ^ u64::from(std::process::id()).rotate_left(32)) | 1
}

fn next(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn connect(addr: &str) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::NotFound, "address resolves to nothing");
    for a in addr.to_socket_addrs()? {
        match TcpStream::connect_timeout(&a, Duration::from_secs(5)) {
            Ok(s) => return Ok(s),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// TLS alerts and certificate errors are this agent's credentials being refused.
fn classify(e: &io::Error) -> End {
    let text = e.to_string();
    let refused = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .is_some_and(|t| {
            matches!(
                t,
                rustls::Error::AlertReceived(_) | rustls::Error::InvalidCertificate(_)
            )
        });
    let server_cert = e
        .get_ref()
        .and_then(|i| i.downcast_ref::<rustls::Error>())
        .is_some_and(|t| matches!(t, rustls::Error::InvalidCertificate(_)));
    if server_cert {
        End::Refused(format!(
            "TLS: the collector's certificate does not verify against the bundle's CA ({text}): is the bundle from this collector?"
        ))
    } else if refused {
        End::Refused(format!("TLS: {text}"))
    } else {
        End::Transient(text)
    }
}

fn session(
    shared: &Shared,
    tls: &Arc<rustls::ClientConfig>,
    server_name: &str,
    addr: &str,
    window: usize,
) -> End {
    let sock = match connect(addr) {
        Ok(s) => s,
        Err(e) => return End::Transient(format!("connect: {e}")),
    };
    let _ = sock.set_nodelay(true);
    let _ = sock.set_write_timeout(Some(Duration::from_secs(60)));
    let _ = sock.set_read_timeout(Some(Duration::from_secs(10)));
    let name = match ServerName::try_from(server_name.to_string()) {
        Ok(n) => n,
        Err(e) => return End::Refused(format!("bad server name {server_name:?}: {e}")),
    };
    let conn = match rustls::ClientConnection::new(tls.clone(), name) {
        Ok(c) => c,
        Err(e) => return End::Refused(format!("TLS: {e}")),
    };
    let mut tls = rustls::StreamOwned::new(conn, sock);
    let status = proto::encode_status(&shared.status());
    if let Err(e) = tls.write_all(&status).and_then(|_| tls.flush()) {
        return classify(&e);
    }
    // A refused certificate shows as an alert on the first read after the handshake:
    // short reads from here on, so acks are picked up while batches go out.
    let _ = tls.sock.set_read_timeout(Some(Duration::from_millis(50)));
    shared.metrics.connects.inc();
    shared.metrics.connected.set(1);
    let mut inflight: std::collections::VecDeque<u64> = std::collections::VecDeque::new();
    let mut sent_upto: Option<u64> = None;
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let mut last_status = Instant::now();
    let mut last_heard = Instant::now();
    let mut greeted = false;
    let mut reported_idle = true;
    loop {
        if shared.stop.load(Ordering::Relaxed) {
            let _ = tls.write_all(&proto::encode_status(&shared.status()));
            tls.conn.send_close_notify();
            let _ = tls.flush();
            return End::Stopped;
        }
        // Send while the window has room.
        while inflight.len() < window {
            let (p, frame) = {
                let spool = shared.spool();
                let Some(p) = spool.next_after(sent_upto) else {
                    break;
                };
                match spool.frame(&p) {
                    Ok(f) => (p, f),
                    Err(e) => return End::Transient(e.to_string()),
                }
            };
            if let Err(e) = tls.write_all(&frame) {
                return classify(&e);
            }
            sent_upto = Some(p.seq);
            inflight.push_back(p.seq);
        }
        if let Err(e) = tls.flush() {
            return classify(&e);
        }
        if last_status.elapsed() >= STATUS_EVERY {
            last_status = Instant::now();
            if let Err(e) = tls.write_all(&proto::encode_status(&shared.status())) {
                return classify(&e);
            }
        }
        match tls.read(&mut chunk) {
            Ok(0) => return End::Transient("collector closed the connection".into()),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                last_heard = Instant::now();
                greeted = true;
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(e) => {
                return if greeted {
                    End::Transient(e.to_string())
                } else {
                    classify(&e)
                };
            }
        }
        loop {
            match proto::decode_server(&buf) {
                Ok(None) => break,
                Ok(Some((msg, used))) => {
                    buf.drain(..used);
                    match msg {
                        ServerMessage::Ack { seq, duplicate } => {
                            if inflight.front() != Some(&seq) {
                                return End::Transient(format!(
                                    "ack for batch {seq}, expected {:?}",
                                    inflight.front()
                                ));
                            }
                            inflight.pop_front();
                            let st = {
                                let mut spool = shared.spool();
                                let events = spool.ack(seq);
                                if let Err(e) = spool.sync(shared.fsync, false) {
                                    eprintln!("{e}");
                                }
                                shared.events_acked.fetch_add(events, Ordering::Relaxed);
                                spool.stats()
                            };
                            if duplicate {
                                shared.duplicates.fetch_add(1, Ordering::Relaxed);
                                shared.metrics.batches_duplicate.inc();
                            } else {
                                shared.metrics.batches_acked.inc();
                            }
                            shared.publish(&st);
                            shared.changed.notify_all();
                        }
                        ServerMessage::Reject { reason } => {
                            return if reason.starts_with("store failure") {
                                End::Transient(format!("collector: {reason}"))
                            } else {
                                End::Refused(reason)
                            };
                        }
                    }
                }
                Err(e) => return End::Transient(format!("bad reply from the collector: {e}")),
            }
        }
        if inflight.is_empty() && !reported_idle {
            // Caught up: say so now rather than at the next periodic status.
            reported_idle = true;
            if let Err(e) = tls.write_all(&proto::encode_status(&shared.status())) {
                return classify(&e);
            }
        } else if !inflight.is_empty() {
            reported_idle = false;
        }
        if inflight.is_empty() {
            let spool = shared.spool();
            if spool.next_after(sent_upto).is_none() {
                let _ = shared
                    .changed
                    .wait_timeout(spool, Duration::from_millis(50));
            }
        } else if last_heard.elapsed() > Duration::from_secs(120) {
            return End::Transient("no ack for 120 s".into());
        }
    }
}
