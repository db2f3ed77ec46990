//! Delivery end to end: the agent's ship stage and the real collector binary over mutual
//! TLS on loopback, with the collector killed, the spool overflowing, and hostile
//! clients.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use tapline_agent::ship::{ShipConfig, Shipper};
use tapline_e2e::{Collector, Reaped, Scratch, bin, run_ok, wait_for};
use tapline_wire::bundle::Bundle;
use tapline_wire::proto::{self, AgentStatus, ServerMessage};
use tapline_wire::{Actor, ActorKind, Batch, Endpoint, Entity, EntitySource, Event};

fn event(i: u64) -> Event {
    Event {
        agent: String::new(),
        ts_us: 1_790_000_000_000_000 + i as i64 * 1000,
        flow_id: i,
        client: Endpoint {
            ip: IpAddr::V4(Ipv4Addr::new(10, 0, (i >> 8) as u8 % 16, i as u8)),
            port: 40_000 + (i % 20_000) as u16,
        },
        server: Endpoint {
            ip: IpAddr::V4(Ipv4Addr::new(10, 9, 0, 1)),
            port: 443,
        },
        method: if i.is_multiple_of(7) { "POST" } else { "GET" }.into(),
        endpoint: "/v1/customers/{customer}/invoices/{invoice}".into(),
        host: Some("api.example.com".into()),
        status: Some(200),
        request_bytes: 300 + i % 50,
        response_bytes: 1200 + i % 700,
        latency_us: Some(900 + i % 400),
        actors: vec![
            Actor {
                kind: ActorKind::Jwt,
                fingerprint: Some(0x9e37_79b9_7f4a_7c15 ^ (i % 300)),
                value: None,
                hint: Some("x9Qa".into()),
                claims: vec![
                    ("sub".into(), format!("user-{}", i % 300)),
                    ("tenant".into(), format!("t{}", i % 12)),
                ],
                verified: Some(true),
            },
            Actor {
                kind: ActorKind::ClientIp,
                fingerprint: None,
                value: Some(format!("10.0.{}.{}", (i >> 8) % 16, i % 256)),
                hint: None,
                claims: vec![],
                verified: None,
            },
        ],
        entities: vec![
            Entity {
                kind: "customer".into(),
                id: format!("cus_{}", i % 900),
                source: EntitySource::Path,
            },
            Entity {
                kind: "invoice".into(),
                id: format!("inv_{i}"),
                source: EntitySource::Path,
            },
        ],
        owners: vec![],
        user_agent: Some("billing-sync/2.3".into()),
        anomalies: vec![],
    }
}

fn bundle(path: &std::path::Path) -> Bundle {
    Bundle::parse(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every event id stored, decoded from the stored batches (and the batch count).
fn stored_flow_ids(c: &Collector) -> (Vec<u64>, u64) {
    let db = rusqlite::Connection::open(c.database()).unwrap();
    let mut stmt = db.prepare("SELECT frame FROM batches").unwrap();
    let mut rows = stmt.query([]).unwrap();
    let mut ids = Vec::new();
    let mut batches = 0;
    while let Some(r) = rows.next().unwrap() {
        let frame: Vec<u8> = r.get(0).unwrap();
        let (b, _) = tapline_wire::decode(&frame).unwrap().unwrap();
        ids.extend(b.events.iter().map(|e| e.flow_id));
        batches += 1;
    }
    (ids, batches)
}

#[test]
fn a_million_events_survive_collector_sigkills_exactly_once() {
    const TOTAL: u64 = 1_000_000;
    const BATCH: u64 = 2000;
    let dir = Scratch::new("million");
    let mut c = Collector::init(&dir.0);
    let b = bundle(&c.enroll("node-a", false));
    c.start();
    let config = ShipConfig {
        spool_dir: Some(dir.path("spool")),
        spool_max_mb: Some(2048.0),
        ..Default::default()
    };
    let shipper =
        std::sync::Arc::new(Shipper::start("node-a", &b, &config, Default::default()).unwrap());
    let producer = {
        let s = shipper.clone();
        std::thread::spawn(move || {
            for start in (0..TOTAL).step_by(BATCH as usize) {
                let batch: Vec<Event> = (start..start + BATCH).map(event).collect();
                s.submit(batch).unwrap();
            }
        })
    };
    // Kill the collector four times, at 15 %, 35 %, 55 % and 75 % of the acks.
    let mut kills = 0;
    for pct in [15, 35, 55, 75] {
        let target = TOTAL * pct / 100;
        wait_for(600, "acks", || shipper.events_acked() >= target);
        c.kill9();
        kills += 1;
        std::thread::sleep(Duration::from_millis(300));
        c.start();
    }
    producer.join().unwrap();
    let shipper = std::sync::Arc::try_unwrap(shipper).ok().unwrap();
    let report = shipper.finish(|| false);
    assert_eq!(report.pending_batches, 0, "{report:?}");
    assert_eq!(report.dropped_events, 0, "{report:?}");
    c.stop();
    assert_eq!(kills, 4);
    assert_eq!(c.count(&[]), TOTAL, "{}", c.log_text());
    let (ids, batches) = stored_flow_ids(&c);
    assert_eq!(batches, TOTAL / BATCH);
    assert_eq!(ids.len() as u64, TOTAL, "events stored twice or lost");
    let distinct: HashSet<u64> = ids.into_iter().collect();
    assert_eq!(distinct.len() as u64, TOTAL);
    assert!(distinct.iter().all(|i| *i < TOTAL));
    // Queries see the same events: one subject's share, one endpoint's.
    assert_eq!(c.count(&["--actor", "sub=user-7"]), TOTAL / 300 + 1);
    assert_eq!(
        c.count(&[
            "--endpoint",
            "POST /v1/customers/{customer}/invoices/{invoice}"
        ]),
        TOTAL.div_ceil(7)
    );
    let agents = run_ok(
        Command::new(bin("tapline-collector"))
            .args(["agents", "--json", "--data"])
            .arg(&c.data),
    );
    assert!(agents.contains("\"name\":\"node-a\""), "{agents}");
    assert!(agents.contains(&format!("\"events\":{TOTAL}")), "{agents}");
}

/// `read --ship` output's summary line: (acked, not acked batches, dropped events).
fn shipped_line(stderr: &str) -> (u64, u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("shipped: "))
        .unwrap_or_else(|| panic!("no summary in {stderr}"));
    let nums: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    (nums[0], nums[2], nums[3])
}

#[test]
fn a_full_spool_drops_exactly_what_it_reports_and_delivers_the_rest() {
    let dir = Scratch::new("overflow");
    let pcap = dir.path("traffic.pcap");
    tapline_traffic::gen_traffic(&pcap, 3, 1, 1.0).unwrap();
    let total = run_ok(
        Command::new(bin("tapline-agent"))
            .args(["read", "--log", "events"])
            .arg(&pcap),
    )
    .lines()
    .count() as u64;
    let mut c = Collector::init(&dir.0);
    let bundle_path = c.enroll("node-c", false);
    let config = dir.path("agent.toml");
    std::fs::write(&config, "[ship]\nbatch_events = 50\nspool_max_mb = 0.05\n").unwrap();
    let err_path = dir.path("agent.err");
    let mut agent = Reaped(
        Command::new(bin("tapline-agent"))
            .arg("read")
            .arg(&pcap)
            .args(["--ship", "--bundle"])
            .arg(&bundle_path)
            .arg("--config")
            .arg(&config)
            .stderr(std::fs::File::create(&err_path).unwrap())
            .spawn()
            .unwrap(),
    );
    // The collector is down: the spool fills and the rest is dropped.
    wait_for(120, "the spool to fill", || {
        std::fs::read_to_string(&err_path)
            .unwrap_or_default()
            .contains("spool full")
    });
    std::thread::sleep(Duration::from_millis(300));
    c.start();
    let status = agent.0.wait().unwrap();
    let stderr = std::fs::read_to_string(&err_path).unwrap();
    assert!(!status.success(), "drops make the run fail: {stderr}");
    let (acked, unacked, dropped) = shipped_line(&stderr);
    assert_eq!(unacked, 0, "{stderr}");
    assert!(dropped > 0 && acked > 0, "{stderr}");
    assert_eq!(
        acked + dropped,
        total,
        "every event is delivered or counted: {stderr}"
    );
    assert_eq!(c.count(&[]), acked);
    let agents = run_ok(
        Command::new(bin("tapline-collector"))
            .args(["agents", "--json", "--data"])
            .arg(&c.data),
    );
    assert!(
        agents.contains(&format!("\"dropped_events\":{dropped}")),
        "the agent reports its drops: {agents}"
    );
}

/// A TLS session with a bundle's certificate, for speaking the protocol by hand.
fn tls_session(
    c: &Collector,
    b: &Bundle,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let config = tapline_agent::ship::client::tls_config(b).unwrap();
    let name = rustls::pki_types::ServerName::try_from(b.server_name.clone()).unwrap();
    let conn = rustls::ClientConnection::new(config, name).unwrap();
    let sock = TcpStream::connect(c.addr()).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    rustls::StreamOwned::new(conn, sock)
}

/// Sends `bytes` after the status and returns what the collector answered.
fn answer_to(c: &Collector, b: &Bundle, agent: &str, bytes: &[u8]) -> Vec<ServerMessage> {
    let mut s = tls_session(c, b);
    let status = AgentStatus {
        agent: agent.into(),
        ..Default::default()
    };
    // The collector may refuse and close before all is written: its answer is read anyway.
    let _ = s.write_all(&proto::encode_status(&status));
    let _ = s.write_all(bytes);
    // Then end our side: a frame cut short is seen as such, not waited for.
    s.conn.send_close_notify();
    let _ = s.flush();
    let _ = s.sock.shutdown(std::net::Shutdown::Write);
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let mut out = Vec::new();
    let mut at = 0;
    while let Ok(Some((m, used))) = proto::decode_server(&buf[at..]) {
        out.push(m);
        at += used;
    }
    out
}

fn reject_reason(msgs: &[ServerMessage]) -> String {
    match msgs.last() {
        Some(ServerMessage::Reject { reason }) => reason.clone(),
        m => panic!("expected a reject, got {m:?}"),
    }
}

#[test]
fn hostile_and_wrong_clients_are_refused_and_the_collector_stays_up() {
    let dir = Scratch::new("hostile");
    let mut c = Collector::init(&dir.0);
    let good = bundle(&c.enroll("node-h", false));
    let fleet = bundle(&c.enroll("fleet-h", true));
    let revoked = bundle(&c.enroll("node-r", false));
    c.start();
    let batch = |agent: &str, seq| {
        tapline_wire::encode(&Batch {
            agent: agent.into(),
            seq,
            events: (0..10).map(event).collect(),
        })
    };

    // A certificate from another collector's CA: the handshake fails.
    let other = Collector::init(&dir.path("other"));
    let stranger = bundle(&other.enroll("node-h", false));
    let mut s = tls_session(&c, &stranger);
    let r = s
        .write_all(&proto::encode_status(&AgentStatus::default()))
        .and_then(|_| s.flush())
        .and_then(|_| s.read(&mut [0u8; 64]));
    assert!(r.is_err(), "a foreign certificate must not get a session");

    // Plain TCP, not TLS.
    let mut plain = TcpStream::connect(c.addr()).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    let n = plain.read(&mut buf).unwrap_or(0);
    assert!(
        !buf[..n].starts_with(b"HTTP"),
        "no HTTP answer on the ingest port"
    );

    // Garbage, a foreign version, an oversized length, a truncated frame.
    let reason = reject_reason(&answer_to(
        &c,
        &good,
        "node-h",
        b"\x10\0\0\0GARBAGE!GARBAGE!",
    ));
    assert!(reason.contains("not a Tapline batch"), "{reason}");
    let mut old = batch("node-h", 1);
    old[8..10].copy_from_slice(&0u16.to_le_bytes());
    let reason = reject_reason(&answer_to(&c, &good, "node-h", &old));
    assert!(reason.contains("version 0 is not supported"), "{reason}");
    let reason = reject_reason(&answer_to(
        &c,
        &good,
        "node-h",
        &(64u32 << 20).to_le_bytes(),
    ));
    assert!(reason.contains("exceeds the limit"), "{reason}");
    let full = batch("node-h", 2);
    let reason = reject_reason(&answer_to(&c, &good, "node-h", &full[..full.len() / 2]));
    assert!(reason.contains("closed inside a frame"), "{reason}");

    // Identity: a node certificate speaks for its node only; a fleet one for any.
    let reason = reject_reason(&answer_to(&c, &good, "node-x", &batch("node-x", 1)));
    assert!(
        reason.contains("cannot speak for agent `node-x`"),
        "{reason}"
    );
    let reason = reject_reason(&answer_to(&c, &good, "node-h", &batch("node-z", 1)));
    assert!(reason.contains("batch of agent `node-z`"), "{reason}");
    let ok = answer_to(&c, &fleet, "k8s-node-3", &batch("k8s-node-3", 7));
    assert_eq!(
        ok,
        vec![ServerMessage::Ack {
            seq: 7,
            duplicate: false
        }]
    );
    let again = answer_to(&c, &fleet, "k8s-node-3", &batch("k8s-node-3", 7));
    assert_eq!(
        again,
        vec![ServerMessage::Ack {
            seq: 7,
            duplicate: true
        }]
    );

    // Revocation takes effect on the next connection.
    run_ok(
        Command::new(bin("tapline-collector"))
            .args(["revoke", "--name", "node-r", "--data"])
            .arg(&c.data),
    );
    let reason = reject_reason(&answer_to(&c, &revoked, "node-r", &batch("node-r", 1)));
    assert!(
        reason.contains("certificate of `node-r` is revoked"),
        "{reason}"
    );

    // Through all that the collector stayed up and still takes a real agent's batches.
    assert!(c.alive(), "{}", c.log_text());
    let pcap = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../agent/tests/golden/lo-curl.pcapng");
    let bundle_path = c.data.join("node-h.bundle");
    let out = Command::new(bin("tapline-agent"))
        .arg("read")
        .arg(&pcap)
        .args(["--ship", "--bundle"])
        .arg(&bundle_path)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let (acked, _, _) = shipped_line(&stderr);
    assert!(acked > 0);
    assert_eq!(c.count(&["--agent", "node-h"]), acked);

    // The refused agent says why, and exits.
    let revoked_path = c.data.join("node-r.bundle");
    let out = Command::new(bin("tapline-agent"))
        .arg("read")
        .arg(&pcap)
        .args(["--ship", "--bundle"])
        .arg(&revoked_path)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("revoked"), "{stderr}");

    let log = c.log_text();
    for expected in [
        "TLS handshake failed",
        "not a Tapline batch",
        "version 0 is not supported",
        "exceeds the limit",
        "closed inside a frame",
        "is revoked",
    ] {
        assert!(
            log.contains(expected),
            "collector log lacks {expected:?}:\n{log}"
        );
    }
    assert!(c.alive());
}
