use std::net::IpAddr;

use tapline_wire::{Actor, ActorKind, Endpoint, EntitySource, Event, Owner};

use super::*;
use crate::geo::CustomNetwork;

/// 2026-11-02 00:00 UTC (a Monday).
const T0: i64 = 1_793_577_600_000_000;
const MIN: i64 = 60_000_000;

fn api_key_event(ts: i64, key: u64, ip: &str, method: &str, endpoint: &str, status: u16) -> Event {
    let ip: IpAddr = ip.parse().unwrap();
    Event {
        agent: "a".into(),
        ts_us: ts,
        flow_id: ts as u64,
        client: Endpoint { ip, port: 40000 },
        server: Endpoint {
            ip: "10.0.0.80".parse().unwrap(),
            port: 80,
        },
        method: method.into(),
        endpoint: endpoint.into(),
        host: None,
        status: Some(status),
        request_bytes: 300,
        response_bytes: 500,
        latency_us: Some(1000),
        actors: vec![Actor {
            kind: ActorKind::ApiKey,
            fingerprint: Some(key),
            value: None,
            hint: Some("abcd".into()),
            claims: Vec::new(),
            verified: None,
        }],
        entities: Vec::new(),
        owners: Vec::new(),
        user_agent: Some("billing/1.0".into()),
        anomalies: Vec::new(),
    }
}

fn networks() -> Vec<CustomNetwork> {
    let net = |cidr: &str, kind, country: &str, lat, lon| CustomNetwork {
        cidr: cidr.into(),
        kind,
        name: None,
        country: Some(country.into()),
        city: None,
        latitude: Some(lat),
        longitude: Some(lon),
    };
    vec![
        net("198.51.100.0/24", NetKind::Residential, "FR", 48.86, 2.35),
        net("203.0.113.0/24", NetKind::Residential, "JP", 35.68, 139.69),
        net("192.0.2.0/24", NetKind::Vpn, "US", 40.71, -74.0),
    ]
}

fn config() -> DetectConfig {
    DetectConfig {
        learning_hours: 24.0,
        min_events: 10,
        ..DetectConfig::default()
    }
}

fn engine() -> Engine {
    Engine::new(config(), Geo::open(None, None, &networks()).unwrap())
}

/// Forty charges in a minute from `t`.
fn burst(e: &mut Engine, t: i64, key: u64) {
    for k in 0..40 {
        let ev = api_key_event(
            t + k * 1_500_000,
            key,
            "198.51.100.5",
            "POST",
            "/v1/charges",
            201,
        );
        e.observe(&ev);
    }
}

/// A billing client charging every 10 minutes for two days.
fn steady(e: &mut Engine, key: u64, ip: &str) -> i64 {
    let mut t = T0;
    while t < T0 + 2 * 24 * 60 * MIN {
        e.observe(&api_key_event(t, key, ip, "POST", "/v1/charges", 201));
        t += 10 * MIN;
    }
    t
}

#[test]
fn a_burst_ten_times_the_hourly_norm_is_a_rate_spike_with_its_reasons() {
    let mut e = engine();
    let t = steady(&mut e, 7, "198.51.100.5");
    assert!(e.drain_alerts().is_empty(), "steady traffic raises nothing");
    burst(&mut e, t, 7);
    let alerts = e.drain_alerts();
    let spike: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind == AlertType::RateSpike)
        .collect();
    assert_eq!(spike.len(), 1, "{alerts:#?}");
    let a = spike[0];
    assert_eq!(a.actor.kind, "api_key");
    assert_eq!(a.actor.key, format!("{:016x}", 7));
    assert_eq!(a.endpoint.as_deref(), Some("POST /v1/charges"));
    assert!(a.explanation.observed >= 10.0 * a.explanation.baseline);
    assert!(a.first_seen_us - t <= 60_000_000, "found within a minute");
    assert!(a.severity >= Severity::Medium);
    assert!(
        a.explanation
            .factors
            .iter()
            .any(|f| f.name == "sensitivity"),
        "{:?}",
        a.explanation.factors
    );
    assert!(!a.evidence.is_empty());
}

#[test]
fn two_continents_in_minutes_is_impossible_travel_unless_through_a_vpn() {
    let mut e = engine();
    let t = steady(&mut e, 9, "198.51.100.5");
    e.observe(&api_key_event(
        t + 5 * MIN,
        9,
        "203.0.113.9",
        "POST",
        "/v1/charges",
        201,
    ));
    let alerts = e.drain_alerts();
    let travel: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind == AlertType::ImpossibleTravel)
        .collect();
    assert_eq!(travel.len(), 1, "{alerts:#?}");
    assert!(
        travel[0].explanation.summary.contains("FR"),
        "{}",
        travel[0].explanation.summary
    );
    assert_eq!(travel[0].source_ips, vec!["203.0.113.9".to_string()]);

    // The same hop through a known VPN egress is explained away.
    let mut e = engine();
    let t = steady(&mut e, 9, "198.51.100.5");
    e.observe(&api_key_event(
        t + 5 * MIN,
        9,
        "192.0.2.7",
        "POST",
        "/v1/charges",
        201,
    ));
    assert!(
        e.drain_alerts()
            .iter()
            .all(|a| a.kind != AlertType::ImpossibleTravel)
    );
    assert!(e.stats.below_threshold >= 1);
}

#[test]
fn another_tenants_object_served_is_bola() {
    let mut e = engine();
    let tenant_event = |ts: i64, owner: &str| {
        let mut ev = api_key_event(ts, 3, "198.51.100.8", "GET", "/v1/invoices/{invoice}", 200);
        ev.actors[0].kind = ActorKind::Jwt;
        ev.actors[0].claims = vec![("sub".into(), "u1".into()), ("tenant".into(), "t_a".into())];
        ev.entities = vec![tapline_wire::Entity {
            kind: "invoice".into(),
            id: format!("inv_{ts}"),
            source: EntitySource::Path,
        }];
        ev.owners = vec![Owner {
            field: "tenant".into(),
            value: owner.into(),
        }];
        ev
    };
    let mut t = T0;
    while t < T0 + 30 * 60 * MIN {
        e.observe(&tenant_event(t, "t_a"));
        t += 30 * MIN;
    }
    assert!(e.drain_alerts().iter().all(|a| a.kind != AlertType::Bola));
    e.observe(&tenant_event(t, "t_b"));
    let alerts = e.drain_alerts();
    let bola: Vec<_> = alerts
        .iter()
        .filter(|a| a.kind == AlertType::Bola)
        .collect();
    assert_eq!(bola.len(), 1, "{alerts:#?}");
    assert_eq!(bola[0].actor.key, "sub:u1");
    assert!(bola[0].explanation.summary.contains("t_b"));
}

#[test]
fn suppressions_drop_findings_and_count_them() {
    let mut e = engine();
    let t = steady(&mut e, 7, "198.51.100.5");
    let actor = format!(
        "{:016x}",
        stable_hash(&[b"api_key", format!("{:016x}", 7).as_bytes()])
    );
    e.set_suppressions(vec![Suppression {
        id: 1,
        kind: AlertType::RateSpike,
        actor_id: actor,
        endpoint: Some("POST /v1/charges".into()),
        created_us: 0,
        expires_us: i64::MAX,
        alert_id: "x".into(),
        reason: "load test".into(),
    }]);
    burst(&mut e, t, 7);
    assert!(
        e.drain_alerts()
            .iter()
            .all(|a| a.kind != AlertType::RateSpike)
    );
    assert!(e.stats.suppressed >= 1);
}

#[test]
fn a_restored_engine_continues_where_the_saved_one_stopped() {
    let events: Vec<Event> = {
        let mut v = Vec::new();
        let mut t = T0;
        while t < T0 + 2 * 24 * 60 * MIN {
            v.push(api_key_event(
                t,
                5,
                "198.51.100.5",
                "POST",
                "/v1/charges",
                201,
            ));
            t += 10 * MIN;
        }
        for k in 0..40 {
            v.push(api_key_event(
                t + k * 1_500_000,
                5,
                "198.51.100.5",
                "POST",
                "/v1/charges",
                201,
            ));
        }
        v.push(api_key_event(
            t + 50 * MIN,
            5,
            "203.0.113.9",
            "POST",
            "/v1/charges",
            201,
        ));
        v
    };
    let mut whole = engine();
    let mut straight = Vec::new();
    for ev in &events {
        whole.observe(ev);
        straight.extend(whole.drain_alerts());
    }
    let mut first = engine();
    let mut resumed = Vec::new();
    let half = events.len() - 30;
    for ev in &events[..half] {
        first.observe(ev);
        resumed.extend(first.drain_alerts());
    }
    let saved = first.snapshot();
    drop(first);
    let mut second = engine();
    second.load(&saved).unwrap();
    for ev in &events[half..] {
        second.observe(ev);
        resumed.extend(second.drain_alerts());
    }
    let ids = |v: &[Alert]| v.iter().map(|a| a.id.clone()).collect::<Vec<_>>();
    assert!(!straight.is_empty());
    assert_eq!(ids(&straight), ids(&resumed));
    let mut third = engine();
    assert!(third.load(b"garbage").is_err());
    assert_eq!(
        third.actors(),
        0,
        "a failed load leaves the engine as it was"
    );
}

#[test]
fn the_actor_table_stays_within_its_bound() {
    let cfg = DetectConfig {
        max_actors: 100,
        ..DetectConfig::default()
    };
    let mut e = Engine::new(cfg, Geo::none());
    for k in 0..1000u64 {
        e.observe(&api_key_event(
            T0 + k as i64 * MIN,
            k,
            "198.51.100.5",
            "GET",
            "/v1/x",
            200,
        ));
    }
    assert!(e.actors() <= 100, "{}", e.actors());
    assert!(e.stats.actors_evicted >= 900);
}

#[test]
fn numeric_ids_are_told_from_opaque_ones() {
    assert_eq!(numeric_id("1042"), Some(1042));
    assert_eq!(numeric_id("inv_1042"), Some(1042));
    assert_eq!(numeric_id("cus_8a7F3k"), None);
}

mod hostile {
    use proptest::prelude::*;

    use super::*;

    fn kind() -> impl Strategy<Value = ActorKind> {
        (0u8..7).prop_map(|c| ActorKind::from_code(c).expect("a kind"))
    }

    fn event() -> impl Strategy<Value = Event> {
        (
            prop_oneof![
                Just(i64::MIN),
                Just(i64::MAX),
                Just(0i64),
                any::<i64>(),
                T0..T0 + 10 * 24 * 60 * MIN
            ],
            kind(),
            any::<u64>(),
            prop_oneof![Just("GET"), Just("POST"), Just("DELETE"), Just("")],
            prop_oneof![
                Just("/v1/x/{id}".to_string()),
                Just("/v1/users/me".to_string()),
                ".{0,40}"
            ],
            proptest::option::of(any::<u16>()),
            any::<[u8; 4]>(),
            proptest::collection::vec(("[a-z_]{0,8}", ".{0,12}"), 0..4),
            proptest::collection::vec(("[a-z]{0,6}", "[0-9a-z_]{0,10}", 0u8..4), 0..5),
            proptest::collection::vec(
                (
                    prop_oneof![
                        Just("tenant".to_string()),
                        Just("role".to_string()),
                        "[a-z]{0,6}"
                    ],
                    "[a-z_]{0,8}",
                ),
                0..3,
            ),
            any::<u64>(),
        )
            .prop_map(
                |(ts, kind, fp, method, endpoint, status, ip, claims, entities, owners, bytes)| {
                    let ip = std::net::IpAddr::from(ip);
                    let mut e = api_key_event(ts, fp % 8, "198.51.100.1", method, &endpoint, 200);
                    e.status = status;
                    e.client.ip = ip;
                    e.response_bytes = bytes;
                    e.actors[0].kind = kind;
                    e.actors[0].claims = claims;
                    if kind == ActorKind::ClientIp {
                        e.actors[0].value = Some(ip.to_string());
                    }
                    e.entities = entities
                        .into_iter()
                        .map(|(k, id, s)| tapline_wire::Entity {
                            kind: k,
                            id,
                            source: EntitySource::from_code(s).expect("a source"),
                        })
                        .collect();
                    e.owners = owners
                        .into_iter()
                        .map(|(field, value)| Owner { field, value })
                        .collect();
                    e
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Any events, in any order, with any times: no panic, bounded actors, and a
        /// state that saves and restores.
        #[test]
        fn any_events_in_any_order(events in proptest::collection::vec(event(), 1..200)) {
            let cfg = DetectConfig { max_actors: 16, learning_hours: 0.0, min_events: 0, ..DetectConfig::default() };
            let mut e = Engine::new(cfg.clone(), Geo::open(None, None, &networks()).unwrap());
            for ev in &events {
                e.observe(ev);
                let _ = e.drain_alerts();
            }
            prop_assert!(e.actors() <= 16);
            let saved = e.snapshot();
            let mut back = Engine::new(cfg, Geo::none());
            back.load(&saved).unwrap();
            back.observe(&events[0]);
        }
    }
}
