//! Agent status versions against the real collector: an agent from before capture
//! coverage (status version 1) keeps working with this collector, and a new one's
//! coverage (version 2) reaches `agents --json` and the API.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use tapline_e2e::{Collector, Scratch, bin, free_port, http_get_auth, run_ok, wait_for};
use tapline_wire::bundle::Bundle;
use tapline_wire::proto::{self, AgentStatus, Coverage, ServerMessage};
use tapline_wire::{Batch, Endpoint, Event};

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

fn event(agent: &str) -> Event {
    let ep = |ip: &str, port| Endpoint {
        ip: ip.parse().unwrap(),
        port,
    };
    Event {
        agent: agent.into(),
        ts_us: 1_790_000_000_000_000,
        flow_id: 1,
        client: ep("10.0.0.1", 40_000),
        server: ep("10.0.0.2", 80),
        method: "GET".into(),
        endpoint: "/v1/ping".into(),
        host: None,
        status: Some(200),
        request_bytes: 0,
        response_bytes: 2,
        latency_us: None,
        actors: vec![],
        entities: vec![],
        owners: vec![],
        user_agent: None,
        anomalies: vec![],
    }
}

/// One session: `status_frame` first, then a batch, which must be acked.
fn session(c: &Collector, b: &Bundle, agent: &str, status_frame: &[u8], seq: u64) {
    let mut s = tls_session(c, b);
    s.write_all(status_frame).unwrap();
    s.write_all(&tapline_wire::encode(&Batch {
        agent: agent.into(),
        seq,
        events: vec![event(agent)],
    }))
    .unwrap();
    s.flush().unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Ok(Some((m, _))) = proto::decode_server(&buf) {
            assert_eq!(
                m,
                ServerMessage::Ack {
                    seq,
                    duplicate: false
                },
                "{}",
                c.log_text()
            );
            break;
        }
        let n = s.read(&mut chunk).expect("an answer");
        assert!(n > 0, "closed without an ack: {}", c.log_text());
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn agents(c: &Collector) -> Vec<serde_json::Value> {
    run_ok(
        Command::new(bin("tapline-collector"))
            .args(["agents", "--json", "--data"])
            .arg(&c.data),
    )
    .lines()
    .map(|l| serde_json::from_str(l).unwrap())
    .collect()
}

#[test]
fn old_agents_status_v1_and_new_agents_coverage_v2_both_work() {
    let scratch = Scratch::new("status");
    let mut c = Collector::init(&scratch.0);
    let old =
        Bundle::parse(&std::fs::read_to_string(c.enroll("old-agent", false)).unwrap()).unwrap();
    let new =
        Bundle::parse(&std::fs::read_to_string(c.enroll("new-agent", false)).unwrap()).unwrap();
    let api = format!("127.0.0.1:{}", free_port());
    c.start_with(&["--api".as_ref(), api.as_ref()]);

    // Version 1, byte for byte as agents before coverage sent it.
    let v1 = AgentStatus {
        agent: "old-agent".into(),
        software: "0.0.9".into(),
        next_seq: 2,
        pending_batches: 1,
        dropped_events: 7,
        ..Default::default()
    };
    let frame = proto::encode_status(&v1);
    assert_eq!(u16::from_le_bytes([frame[8], frame[9]]), 1);
    session(&c, &old, "old-agent", &frame, 1);

    let coverage = Coverage {
        source: "pcap".into(),
        packets: 12_345,
        bytes: 9_876_543,
        drops: vec![("kernel".into(), 11), ("queue_full".into(), 2)],
        stream_gaps: 3,
        stream_gap_bytes: 4380,
        flows: 77,
        http_transactions: 500,
        http_parse_errors: 4,
    };
    let v2 = AgentStatus {
        agent: "new-agent".into(),
        software: env!("CARGO_PKG_VERSION").into(),
        next_seq: 2,
        coverage: Some(coverage.clone()),
        ..Default::default()
    };
    let frame = proto::encode_status(&v2);
    assert_eq!(u16::from_le_bytes([frame[8], frame[9]]), 2);
    session(&c, &new, "new-agent", &frame, 1);

    wait_for(20, "both agents listed", || {
        let a = agents(&c);
        a.len() == 2 && a.iter().all(|r| r["events"] == 1)
    });
    let list = agents(&c);
    let by = |n: &str| list.iter().find(|r| r["name"] == n).unwrap().clone();
    let o = by("old-agent");
    assert!(o["coverage"].is_null(), "{o}");
    assert_eq!(o["dropped_events"], 7);
    assert_eq!(o["software"], "0.0.9");
    let n = by("new-agent");
    assert_eq!(n["coverage"]["source"], "pcap", "{n}");
    assert_eq!(n["coverage"]["packets"], 12_345);
    assert_eq!(n["coverage"]["drops"][0], serde_json::json!(["kernel", 11]));
    assert_eq!(n["coverage"]["stream_gap_bytes"], 4380);

    // The API shows the same, with the frames lost in all.
    let (status, body) = http_get_auth(&api, "/api/agents", &c.api_token());
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let n = v["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "new-agent")
        .unwrap();
    assert_eq!(n["dropped_frames"], 13);
    assert_eq!(n["coverage"]["http_parse_errors"], 4);
    c.stop();
}
