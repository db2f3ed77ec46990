//! The wire format: round trips, golden bytes of every version, and hostile frames.

use std::net::IpAddr;

use tapline_wire::{
    Actor, ActorKind, Batch, Endpoint, Entity, EntitySource, Event, Owner, WireError, decode,
    encode, encode_with,
};

fn ep(ip: &str, port: u16) -> Endpoint {
    Endpoint {
        ip: ip.parse::<IpAddr>().unwrap(),
        port,
    }
}

/// A fixed batch; its encoding in each version is recorded under `tests/golden/`.
fn sample() -> Batch {
    let jwt = Actor {
        kind: ActorKind::Jwt,
        fingerprint: Some(0x1234_5678_9abc_def0),
        value: None,
        hint: Some("x9Qz".into()),
        claims: vec![
            ("sub".into(), "usr_8a7F3k".into()),
            ("tenant".into(), "t_acme".into()),
        ],
        verified: Some(true),
    };
    let ip = Actor {
        kind: ActorKind::ClientIp,
        fingerprint: None,
        value: Some("198.51.100.7".into()),
        hint: None,
        claims: vec![],
        verified: None,
    };
    let first = Event {
        agent: "node-a".into(),
        ts_us: 1_762_041_600_123_456,
        flow_id: 0x0007_aaaa_bbbb_cccc,
        client: ep("198.51.100.7", 40_000),
        server: ep("10.0.0.80", 80),
        method: "GET".into(),
        endpoint: "/v1/customers/{customer}/invoices/{invoice}".into(),
        host: Some("api.example.com".into()),
        status: Some(200),
        request_bytes: 0,
        response_bytes: 1234,
        latency_us: Some(3_200),
        actors: vec![jwt.clone(), ip.clone()],
        entities: vec![
            Entity {
                kind: "customer".into(),
                id: "cus_8a7F3k".into(),
                source: EntitySource::Path,
            },
            Entity {
                kind: "invoice".into(),
                id: "1042".into(),
                source: EntitySource::Path,
            },
        ],
        owners: vec![Owner {
            field: "tenant".into(),
            value: "t_acme".into(),
        }],
        user_agent: Some("client-sdk/2.1".into()),
        anomalies: vec![],
    };
    let mut second = first.clone();
    second.ts_us += 250_000;
    second.method = "POST".into();
    second.endpoint = "/v1/charges".into();
    second.status = Some(201);
    second.request_bytes = 57;
    second.entities = vec![Entity {
        kind: "customer_id".into(),
        id: "cus_8a7F3k".into(),
        source: EntitySource::RequestBody,
    }];
    second.anomalies = vec!["chunk_extension".into()];
    second.client = ep("2001:db8::7", 50_123);
    second.latency_us = None;
    Batch {
        agent: "node-a".into(),
        seq: 42,
        events: vec![first, second],
    }
}

#[test]
fn round_trip_compressed_and_plain() {
    let b = sample();
    for compress in [true, false] {
        let frame = encode_with(&b, compress);
        let (got, used) = decode(&frame).unwrap().unwrap();
        assert_eq!(used, frame.len());
        assert_eq!(got, b);
    }
}

#[test]
fn frames_are_read_one_at_a_time_and_only_when_complete() {
    let mut stream = encode(&sample());
    let first_len = stream.len();
    let mut second = sample();
    second.seq = 43;
    stream.extend_from_slice(&encode(&second));
    for cut in 0..first_len {
        assert_eq!(decode(&stream[..cut]).unwrap(), None, "cut at {cut}");
    }
    let (a, used) = decode(&stream).unwrap().unwrap();
    assert_eq!((a.seq, used), (42, first_len));
    let (b, _) = decode(&stream[used..]).unwrap().unwrap();
    assert_eq!(b.seq, 43);
}

fn golden(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name)
}

/// Version 1 writes exactly the recorded bytes (uncompressed; deflate output may change
/// with the compressor's version), and the recorded compressed batch of an old agent
/// still decodes. `UPDATE_GOLDEN=1` records them, only ever for a new version.
#[test]
fn version_1_golden_bytes() {
    let plain = encode_with(&sample(), false);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(golden("v1-plain.bin"), &plain).unwrap();
        std::fs::write(golden("v1-deflate.bin"), encode(&sample())).unwrap();
    }
    assert_eq!(plain, std::fs::read(golden("v1-plain.bin")).unwrap());
    for file in ["v1-plain.bin", "v1-deflate.bin"] {
        let bytes = std::fs::read(golden(file)).unwrap();
        let (b, _) = decode(&bytes).unwrap().unwrap();
        assert_eq!(b, sample(), "{file}");
    }
}

#[test]
fn hostile_frames_are_refused_not_panicked_on() {
    let good = encode(&sample());
    let mut bad_magic = good.clone();
    bad_magic[4] = b'X';
    assert_eq!(decode(&bad_magic), Err(WireError::BadMagic));
    let mut future = good.clone();
    future[8..10].copy_from_slice(&99u16.to_le_bytes());
    assert_eq!(decode(&future), Err(WireError::UnsupportedVersion(99)));
    let huge = (u32::MAX).to_le_bytes();
    assert!(matches!(decode(&huge), Err(WireError::TooLarge(_))));
    // Every truncation of the body and every single-byte corruption: an error or a
    // batch, never a panic.
    let plain = encode_with(&sample(), false);
    for i in 12..plain.len() {
        for flip in [0x01u8, 0x80, 0xff] {
            let mut f = plain.clone();
            f[i] ^= flip;
            // A corrupted batch that summarizes must decode (the store keeps it after a
            // summary and decodes it for queries).
            let d = decode(&f);
            if let Ok(Some(_)) = tapline_wire::summarize(&f) {
                assert!(
                    matches!(d, Ok(Some(_))),
                    "summarized but does not decode: {d:?}"
                );
            }
        }
        let mut cut = plain[..i].to_vec();
        let len = (cut.len() - 4) as u32;
        cut[..4].copy_from_slice(&len.to_le_bytes());
        let _ = decode(&cut);
    }
    // A decompression bomb is cut at the body limit.
    let zeros = vec![0u8; 80 << 20];
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::best());
    std::io::Write::write_all(&mut e, &zeros).unwrap();
    let body = e.finish().unwrap();
    let mut bomb = ((8 + body.len()) as u32).to_le_bytes().to_vec();
    bomb.extend_from_slice(b"TPLW");
    bomb.extend_from_slice(&1u16.to_le_bytes());
    bomb.extend_from_slice(&1u16.to_le_bytes());
    bomb.extend_from_slice(&body);
    assert!(matches!(decode(&bomb), Err(WireError::TooLarge(_))));
}

#[test]
fn summary_agrees_with_the_decoded_events() {
    use std::collections::HashMap;
    let b = sample();
    let frame = encode(&b);
    let (sum, used) = tapline_wire::summarize(&frame).unwrap().unwrap();
    assert_eq!(used, frame.len());
    assert_eq!(
        (sum.agent.as_str(), sum.seq, sum.events),
        (b.agent.as_str(), b.seq, b.events.len())
    );
    assert_eq!(sum.ts_min, b.events.iter().map(|e| e.ts_us).min().unwrap());
    assert_eq!(sum.ts_max, b.events.iter().map(|e| e.ts_us).max().unwrap());
    let mut endpoints: HashMap<(String, String), (i64, i64, u64)> = HashMap::new();
    let mut actors: HashMap<String, u64> = HashMap::new();
    for e in &b.events {
        let s = endpoints
            .entry((e.method.clone(), e.endpoint.clone()))
            .or_insert((i64::MAX, i64::MIN, 0));
        *s = (s.0.min(e.ts_us), s.1.max(e.ts_us), s.2 + 1);
        for a in &e.actors {
            *actors.entry(format!("{a:?}")).or_default() += 1;
        }
    }
    assert_eq!(sum.endpoints.len(), endpoints.len());
    for (m, t, seen) in &sum.endpoints {
        let want = endpoints[&(m.clone(), t.clone())];
        assert_eq!((seen.first, seen.last, seen.events), want);
    }
    assert_eq!(sum.actors.len(), actors.len());
    for (a, seen) in &sum.actors {
        assert_eq!(seen.events, actors[&format!("{a:?}")]);
    }
    let entities: usize = b.events.iter().map(|e| e.entities.len()).sum();
    assert_eq!(
        sum.entities
            .iter()
            .map(|e| e.2.events as usize)
            .sum::<usize>(),
        entities
    );
}

#[test]
fn json_form_shows_fingerprints_as_hex() {
    let e = &sample().events[0];
    let j = serde_json::to_value(e).unwrap();
    assert_eq!(j["actors"][0]["fingerprint"], "123456789abcdef0");
    let back: Event = serde_json::from_value(j).unwrap();
    assert_eq!(&back, e);
}
