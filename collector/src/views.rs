//! What the UI's actor page and alert chart show, computed from the stored events: an
//! actor's identities, addresses and countries per day, endpoints, and its activity
//! against a baseline band. Every scan is bounded ([`MAX_SCAN`] events) and says when
//! it was cut short.
//!
//! The band is computed from stored history, not read from the detectors' state: the
//! detectors keep decaying peaks and hour-of-week counts of the actor's whole life, not
//! per-hour history around a past moment, and their checkpoint is one large blob. So
//! for each hour of the day, the band is the mean of the actor's requests in that hour
//! over the [`BASELINE_DAYS`] days before the chart (days before its first event left
//! out) ± 2σ, with σ at least √mean (counts are Poisson-like, so a very regular actor
//! still gets a band of plausible noise).

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;

use serde::Serialize;

use crate::geo::Geo;
use crate::store::{EventQuery, EventStore, StoreError, actor_key};

/// Most events one view reads.
pub const MAX_SCAN: u64 = 200_000;
/// Days of history the baseline band is computed from.
pub const BASELINE_DAYS: i64 = 7;
const MINUTE_US: i64 = 60_000_000;
const HOUR_US: i64 = 60 * MINUTE_US;
const DAY_US: i64 = 24 * HOUR_US;
const MAX_IDENTITIES: usize = 50;
const MAX_ADDRESSES: usize = 100;
const MAX_ENDPOINTS: usize = 100;
const MAX_DAYS: usize = 120;

/// The event query term of an actor key as alerts show it: `sub:alice` (a JWT subject)
/// is the claim `sub=alice`; fingerprints, addresses and clear values are themselves.
pub fn actor_term(key: &str) -> String {
    match key.strip_prefix("sub:") {
        Some(sub) => format!("sub={sub}"),
        None => key.to_string(),
    }
}

/// Most successful logins followed to the session cookies they opened.
const MAX_LOGINS_FOLLOWED: usize = 64;
/// Most session cookies counted as one login's.
const MAX_SESSIONS: usize = 256;
/// How long after a login its connection is searched for the session cookie.
const LOGIN_FOLLOW_US: i64 = 120_000_000;

/// The event terms that make up the actor `key`: its own and, for a login name, the
/// session cookies first used on a connection where it logged in successfully, which
/// the detectors count as the login's requests too (they link them the same way).
pub fn actor_terms(store: &dyn EventStore, key: &str) -> Result<Vec<String>, StoreError> {
    let term = actor_term(key);
    let mut logins: Vec<(i64, u64)> = Vec::new();
    let mut n = 0u64;
    store.query(
        &EventQuery {
            actor: Some(term.clone()),
            ..EventQuery::default()
        },
        &mut |e| {
            n += 1;
            let login = e.actors.iter().any(|a| {
                a.kind == tapline_wire::ActorKind::Login && actor_key(a).as_deref() == Some(&term)
            });
            if login && e.status.is_some_and(|s| (200..400).contains(&s)) {
                logins.push((e.ts_us, e.flow_id));
            }
            n < MAX_SCAN
        },
    )?;
    let mut terms = vec![term];
    // The latest logins; each one's connection for a while after it.
    let from = logins.len().saturating_sub(MAX_LOGINS_FOLLOWED);
    for &(ts, flow) in &logins[from..] {
        store.query(
            &EventQuery {
                since_us: Some(ts),
                until_us: Some(ts + LOGIN_FOLLOW_US),
                ..EventQuery::default()
            },
            &mut |e| {
                if e.flow_id != flow {
                    return true;
                }
                for a in &e.actors {
                    if a.kind == tapline_wire::ActorKind::Session
                        && let Some(k) = actor_key(a)
                        && !terms.contains(&k)
                        && terms.len() <= MAX_SESSIONS
                    {
                        terms.push(k);
                    }
                }
                // The first request with a cookie tells; the rest of the window is not needed.
                !e.actors
                    .iter()
                    .any(|a| a.kind == tapline_wire::ActorKind::Session)
            },
        )?;
    }
    Ok(terms)
}

/// Runs `f` on each event of any of `terms` once (an event holding two of them is seen
/// once), until it returns false or [`MAX_SCAN`] events were read; true when cut short.
fn scan_terms(
    store: &dyn EventStore,
    terms: &[String],
    since_us: Option<i64>,
    until_us: Option<i64>,
    f: &mut dyn FnMut(&tapline_wire::Event),
) -> Result<(u64, bool), StoreError> {
    let mut seen: HashSet<(i64, u64)> = HashSet::new();
    let mut n = 0u64;
    let mut truncated = false;
    for (i, term) in terms.iter().enumerate() {
        let q = EventQuery {
            actor: Some(term.clone()),
            since_us,
            until_us,
            ..EventQuery::default()
        };
        store.query(&q, &mut |e| {
            if n >= MAX_SCAN {
                truncated = true;
                return false;
            }
            // Only events that an earlier term could also have matched need the check.
            if terms.len() > 1 {
                let key = (e.ts_us, e.flow_id);
                if i > 0 && seen.contains(&key) {
                    return true;
                }
                if seen.len() < 4 * MAX_SCAN as usize {
                    seen.insert(key);
                }
            }
            n += 1;
            f(&e);
            true
        })?;
        if truncated {
            break;
        }
    }
    Ok((n, truncated))
}

/// Another identity seen in the same requests (a token of the same subject, the
/// session cookie, the client address).
#[derive(Debug, Clone, Serialize)]
pub struct Identity {
    pub kind: String,
    pub key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    pub claims: Vec<(String, String)>,
    pub events: u64,
    pub first_us: i64,
    pub last_us: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct AddressUse {
    pub ip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// City, country and network as the GeoIP databases tell.
    pub place: String,
    pub events: u64,
    pub first_us: i64,
    pub last_us: i64,
}

/// One UTC day of the actor's requests.
#[derive(Debug, Clone, Serialize)]
pub struct DayUse {
    pub day_us: i64,
    pub events: u64,
    pub addresses: u64,
    pub countries: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EndpointUse {
    pub method: String,
    pub endpoint: String,
    pub events: u64,
    /// Answers with status 400 and above.
    pub errors: u64,
    pub first_us: i64,
    pub last_us: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ActorView {
    pub key: String,
    /// The event queries the view was read with (see [`actor_terms`]).
    pub terms: Vec<String>,
    pub events: u64,
    /// More events matched than [`MAX_SCAN`]: the view covers the first ones.
    pub truncated: bool,
    pub first_us: i64,
    pub last_us: i64,
    pub identities: Vec<Identity>,
    pub addresses: Vec<AddressUse>,
    pub days: Vec<DayUse>,
    pub endpoints: Vec<EndpointUse>,
}

fn kind_name(k: tapline_wire::ActorKind) -> String {
    serde_json::to_value(k)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Events, first and last event time.
type Seen = (u64, i64, i64);

fn bump(slot: &mut Seen, ts: i64) {
    if slot.0 == 0 {
        *slot = (1, ts, ts);
    } else {
        slot.0 += 1;
        slot.1 = slot.1.min(ts);
        slot.2 = slot.2.max(ts);
    }
}

/// The actor `key` over `[since, until)`, or `None` when no event matches.
pub fn actor_view(
    store: &dyn EventStore,
    geo: &mut Geo,
    key: &str,
    since_us: Option<i64>,
    until_us: Option<i64>,
) -> Result<Option<ActorView>, StoreError> {
    let terms = actor_terms(store, key)?;
    let (mut first, mut last) = (i64::MAX, i64::MIN);
    type Ident = (String, String, Option<String>, Vec<(String, String)>);
    let mut identities: HashMap<String, (Ident, (u64, i64, i64))> = HashMap::new();
    let mut addresses: HashMap<IpAddr, (u64, i64, i64)> = HashMap::new();
    let mut days: HashMap<i64, (u64, HashSet<IpAddr>)> = HashMap::new();
    // (method, template) → seen, errors.
    let mut endpoints: HashMap<(String, String), (Seen, u64)> = HashMap::new();
    let (n, truncated) = scan_terms(store, &terms, since_us, until_us, &mut |e| {
        let ts = e.ts_us;
        first = first.min(ts);
        last = last.max(ts);
        for a in &e.actors {
            let Some(k) = actor_key(a) else { continue };
            let kind = kind_name(a.kind);
            let id = format!("{kind}\0{k}");
            if !identities.contains_key(&id) && identities.len() >= 10 * MAX_IDENTITIES {
                continue;
            }
            let slot = identities.entry(id).or_insert_with(|| {
                let claims = a
                    .claims
                    .iter()
                    .filter(|(c, _)| !matches!(c.as_str(), "exp" | "iat" | "nbf" | "jti"))
                    .cloned()
                    .collect();
                ((kind, k, a.hint.clone(), claims), (0, 0, 0))
            });
            bump(&mut slot.1, ts);
        }
        let ip = e.client.ip;
        bump(addresses.entry(ip).or_insert((0, 0, 0)), ts);
        if days.len() < MAX_DAYS * 4 || days.contains_key(&ts.div_euclid(DAY_US)) {
            let d = days.entry(ts.div_euclid(DAY_US)).or_default();
            d.0 += 1;
            if d.1.len() < 1000 {
                d.1.insert(ip);
            }
        }
        let ep = (e.method.clone(), e.endpoint.clone());
        if endpoints.contains_key(&ep) || endpoints.len() < 10 * MAX_ENDPOINTS {
            let slot = endpoints.entry(ep).or_insert(((0, 0, 0), 0));
            bump(&mut slot.0, ts);
            if e.status.is_some_and(|s| s >= 400) {
                slot.1 += 1;
            }
        }
    })?;
    if n == 0 {
        return Ok(None);
    }
    let mut identities: Vec<Identity> = identities
        .into_values()
        .map(|((kind, key, hint, claims), (events, f, l))| Identity {
            kind,
            key,
            hint,
            claims,
            events,
            first_us: f,
            last_us: l,
        })
        .collect();
    identities.sort_by(|a, b| b.events.cmp(&a.events).then(a.key.cmp(&b.key)));
    identities.truncate(MAX_IDENTITIES);
    let mut countries_of: HashMap<IpAddr, Option<String>> = HashMap::new();
    let mut addrs: Vec<(IpAddr, (u64, i64, i64))> = addresses.into_iter().collect();
    addrs.sort_by(|a, b| b.1.0.cmp(&a.1.0).then(a.0.cmp(&b.0)));
    let mut address_rows = Vec::new();
    for (i, (ip, (events, f, l))) in addrs.iter().enumerate() {
        // Countries for the day table too, for the busiest few thousand addresses.
        if i >= 5000 {
            break;
        }
        let place = geo.lookup(*ip);
        let country = place.country_str().map(str::to_string);
        countries_of.insert(*ip, country.clone());
        if address_rows.len() < MAX_ADDRESSES {
            address_rows.push(AddressUse {
                ip: ip.to_string(),
                country,
                place: place.describe(),
                events: *events,
                first_us: *f,
                last_us: *l,
            });
        }
    }
    let mut day_rows: Vec<DayUse> = days
        .into_iter()
        .map(|(day, (events, ips))| {
            let mut countries: Vec<String> = ips
                .iter()
                .filter_map(|ip| countries_of.get(ip).cloned().flatten())
                .collect();
            countries.sort();
            countries.dedup();
            DayUse {
                day_us: day * DAY_US,
                events,
                addresses: ips.len() as u64,
                countries,
            }
        })
        .collect();
    day_rows.sort_by_key(|d| d.day_us);
    if day_rows.len() > MAX_DAYS {
        day_rows.drain(..day_rows.len() - MAX_DAYS);
    }
    let mut endpoint_rows: Vec<EndpointUse> = endpoints
        .into_iter()
        .map(
            |((method, endpoint), ((events, f, l), errors))| EndpointUse {
                method,
                endpoint,
                events,
                errors,
                first_us: f,
                last_us: l,
            },
        )
        .collect();
    endpoint_rows.sort_by(|a, b| b.events.cmp(&a.events).then(a.endpoint.cmp(&b.endpoint)));
    endpoint_rows.truncate(MAX_ENDPOINTS);
    Ok(Some(ActorView {
        key: key.to_string(),
        terms,
        events: n,
        truncated,
        first_us: first,
        last_us: last,
        identities,
        addresses: address_rows,
        days: day_rows,
        endpoints: endpoint_rows,
    }))
}

/// The chart's resolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Step {
    Hour,
    Minute,
}

impl Step {
    pub fn parse(s: &str) -> Option<Step> {
        match s {
            "hour" => Some(Step::Hour),
            "minute" => Some(Step::Minute),
            _ => None,
        }
    }

    fn us(self) -> i64 {
        match self {
            Step::Hour => HOUR_US,
            Step::Minute => MINUTE_US,
        }
    }

    /// Longest chart, in hours.
    pub fn max_hours(self) -> u32 {
        match self {
            Step::Hour => 14 * 24,
            Step::Minute => 6,
        }
    }
}

/// One bucket of the chart: the actor's requests, and the band its history expects.
#[derive(Debug, Clone, Serialize)]
pub struct ActivityPoint {
    pub t_us: i64,
    pub count: u64,
    /// Expected requests in this bucket (absent without history).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub low: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub high: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Activity {
    pub key: String,
    pub terms: Vec<String>,
    pub step: Step,
    pub step_s: i64,
    pub from_us: i64,
    pub to_us: i64,
    /// Days of history the band was computed from (0: no band).
    pub baseline_days: u32,
    /// How the band is made, in words.
    pub baseline: String,
    pub truncated: bool,
    pub points: Vec<ActivityPoint>,
}

/// The actor's requests per `step` over `hours` centred on `around_us`, with the band.
pub fn activity(
    store: &dyn EventStore,
    key: &str,
    around_us: i64,
    hours: u32,
    step: Step,
) -> Result<Activity, StoreError> {
    let hours = hours.clamp(1, step.max_hours());
    let step_us = step.us();
    let span = i64::from(hours) * HOUR_US;
    let from = (around_us - span / 2).div_euclid(step_us) * step_us;
    let to = from + span;
    let buckets = (span / step_us) as usize;
    let hist_from = from.div_euclid(HOUR_US) * HOUR_US - BASELINE_DAYS * DAY_US;
    let terms = actor_terms(store, key)?;
    let mut counts = vec![0u64; buckets];
    // History: requests per hour since `hist_from`.
    let hist_hours = ((from - hist_from) / HOUR_US).max(0) as usize;
    let mut history = vec![0u64; hist_hours];
    let mut first_seen: Option<i64> = None;
    let (_, truncated) = scan_terms(store, &terms, Some(hist_from), Some(to), &mut |e| {
        let t = e.ts_us;
        first_seen = Some(first_seen.map_or(t, |f: i64| f.min(t)));
        if t >= from {
            let i = ((t - from) / step_us) as usize;
            if let Some(c) = counts.get_mut(i) {
                *c += 1;
            }
        } else if t >= hist_from {
            let i = ((t - hist_from) / HOUR_US) as usize;
            if let Some(c) = history.get_mut(i) {
                *c += 1;
            }
        }
    })?;
    // Whole days of history from the actor's first day on.
    let first_day_hour = first_seen
        .map(|f| ((f.div_euclid(DAY_US) * DAY_US - hist_from) / HOUR_US).max(0) as usize)
        .unwrap_or(hist_hours);
    let mut band: Vec<Option<(f64, f64)>> = vec![None; 24];
    let mut baseline_days = 0u32;
    for (hod, slot) in band.iter_mut().enumerate() {
        let samples: Vec<f64> = history
            .iter()
            .enumerate()
            .filter(|(i, _)| *i >= first_day_hour)
            .filter(|(i, _)| ((hist_from / HOUR_US + *i as i64).rem_euclid(24)) as usize == hod)
            .map(|(_, c)| *c as f64)
            .collect();
        if samples.is_empty() {
            continue;
        }
        baseline_days = baseline_days.max(samples.len() as u32);
        let mean = samples.iter().sum::<f64>() / samples.len() as f64;
        let var = samples.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / samples.len() as f64;
        *slot = Some((mean, var.max(mean).sqrt()));
    }
    let per_bucket = (step_us as f64) / (HOUR_US as f64);
    let points = counts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let t = from + i as i64 * step_us;
            let hod = (t.div_euclid(HOUR_US)).rem_euclid(24) as usize;
            let b = band[hod].map(|(mean, sd)| {
                // A minute holds 1/60 of the hour's mean, and √(1/60) of its spread.
                let m = mean * per_bucket;
                let s = sd * per_bucket.sqrt();
                (m, (m - 2.0 * s).max(0.0), m + 2.0 * s)
            });
            ActivityPoint {
                t_us: t,
                count: *c,
                mean: b.map(|b| round2(b.0)),
                low: b.map(|b| round2(b.1)),
                high: b.map(|b| round2(b.2)),
            }
        })
        .collect();
    Ok(Activity {
        key: key.to_string(),
        terms,
        step,
        step_s: step_us / 1_000_000,
        from_us: from,
        to_us: to,
        baseline_days,
        baseline: format!(
            "requests per {} expected from the same hour of the day over the {BASELINE_DAYS} days before the chart: mean ± 2σ (σ at least √mean)",
            match step {
                Step::Hour => "hour",
                Step::Minute => "minute",
            }
        ),
        truncated,
        points,
    })
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::StoreConfig;
    use crate::store::{IncomingBatch, SqliteStore};
    use tapline_wire::{Actor, ActorKind, Batch, Endpoint};

    fn event(ts_us: i64, sub: &str, ip: &str) -> tapline_wire::Event {
        let ep = |ip: &str| Endpoint {
            ip: ip.parse().unwrap(),
            port: 80,
        };
        tapline_wire::Event {
            agent: "n1".into(),
            ts_us,
            flow_id: ts_us as u64,
            client: ep(ip),
            server: ep("10.0.0.1"),
            method: "GET".into(),
            endpoint: "/v1/things/{thing}".into(),
            host: None,
            status: Some(200),
            request_bytes: 0,
            response_bytes: 10,
            latency_us: None,
            actors: vec![Actor {
                kind: ActorKind::Jwt,
                fingerprint: Some(ts_us as u64 % 3 + 1),
                value: None,
                hint: None,
                claims: vec![("sub".into(), sub.into())],
                verified: None,
            }],
            entities: vec![],
            owners: vec![],
            user_agent: None,
            anomalies: vec![],
        }
    }

    /// Eight days of 6 requests an hour from alice, then 600 in the hour after; bob
    /// alongside. The chart holds the spike above a band learned from her history.
    #[test]
    fn activity_counts_the_actor_against_the_band_of_its_history() {
        let path = std::env::temp_dir().join(format!("tapline-views-{}.db", std::process::id()));
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
        }
        let mut store = SqliteStore::open(&path, &StoreConfig::default()).unwrap();
        let t0 = 1_790_000_000_000_000i64.div_euclid(DAY_US) * DAY_US;
        let mut events = Vec::new();
        for h in 0..8 * 24 {
            for m in 0..6 {
                let t = t0 + h * HOUR_US + m * 10 * MINUTE_US;
                events.push(event(t, "alice", "192.0.2.1"));
                events.push(event(t + 1, "bob", "192.0.2.2"));
            }
        }
        let spike = t0 + 8 * DAY_US;
        for i in 0..600 {
            events.push(event(spike + i * 5_000_000, "alice", "198.51.100.9"));
        }
        for (seq, chunk) in events.chunks(2000).enumerate() {
            let frame = tapline_wire::encode(&Batch {
                agent: "n1".into(),
                seq: seq as u64,
                events: chunk.to_vec(),
            });
            let (batch, _) = tapline_wire::summarize(&frame).unwrap().unwrap();
            store
                .append(&[IncomingBatch {
                    frame,
                    batch,
                    cert: "n1".into(),
                }])
                .unwrap();
        }
        let a = activity(&store, "sub:alice", spike, 24, Step::Hour).unwrap();
        assert_eq!(a.terms, vec!["sub=alice".to_string()]);
        assert_eq!(a.points.len(), 24);
        assert_eq!(a.baseline_days, 7);
        let at = a.points.iter().find(|p| p.t_us == spike).unwrap();
        assert_eq!(at.count, 600);
        assert!(at.high.unwrap() < 20.0, "{at:?}");
        let before = a.points.iter().find(|p| p.t_us == spike - HOUR_US).unwrap();
        assert_eq!(before.count, 6);
        assert!(
            before.low.unwrap() <= 6.0 && before.high.unwrap() >= 6.0,
            "{before:?}"
        );
        assert_eq!(before.mean, Some(6.0));

        let m = activity(&store, "sub:alice", spike, 2, Step::Minute).unwrap();
        assert_eq!(m.points.len(), 120);
        assert_eq!(
            m.points.iter().map(|p| p.count).sum::<u64>(),
            6 + 600 // the hour before, and the whole spike (600 in 50 min)
        );

        let mut geo = Geo::none();
        let v = actor_view(&store, &mut geo, "sub:alice", None, None)
            .unwrap()
            .unwrap();
        assert_eq!(v.events, 8 * 24 * 6 + 600);
        assert_eq!(v.addresses.len(), 2);
        assert_eq!(v.days.len(), 9);
        assert_eq!(v.endpoints[0].events, v.events);
        assert!(
            v.identities
                .iter()
                .all(|i| i.claims.contains(&("sub".into(), "alice".into())))
        );
        assert!(
            actor_view(&store, &mut geo, "sub:carol", None, None)
                .unwrap()
                .is_none()
        );
        for ext in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{ext}", path.display()));
        }
    }

    #[test]
    fn jwt_subjects_are_queried_by_their_claim() {
        assert_eq!(actor_term("sub:alice"), "sub=alice");
        assert_eq!(actor_term("00000000000000ab"), "00000000000000ab");
        assert_eq!(actor_term("203.0.113.9"), "203.0.113.9");
    }
}
