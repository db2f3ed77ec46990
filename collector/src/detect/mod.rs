//! The `detect` stage: [`Engine`] reads events in order, updates the baselines and
//! runs every detector on each event, then scores the findings ([`crate::score`]) and
//! turns them into alerts ([`crate::alert`]). No I/O: events in, alerts out, so that
//! replaying a capture gives the same alerts as living through it.
//!
//! State is split the way workers would split it: per actor ([`ActorState`], keyed by
//! the actor id, the bulk of it) and per population ([`Population`]: endpoints,
//! tenants, peer groups, the entity-ownership graph, login failures).
//!
//! [`worker`] runs an engine beside the ingest, tailing the store.

pub mod worker;

use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use tapline_wire::{ActorKind, Event};

use crate::alert::{
    Alert, AlertType, Evidence, Explanation, Factor, MAX_EVIDENCE, MAX_SOURCES, Severity,
    Suppression,
};
use crate::baseline::{
    ActorDisplay, ActorState, BoundedMap, DistinctWindow, Fix, HOUR_US, MINUTE_US,
    PROBE_WINDOW_MIN, RecentNet, WINDOWS_MIN, Window, add_endpoint, has_endpoint, haversine_km,
    hour_of_week, poisson_tail, stable_hash,
};
use crate::config::DetectConfig;
use crate::geo::{Geo, NetKind, Place};
use crate::score::{self, EndpointTraits};

/// Claims that name the tenant an identity belongs to.
const TENANT_CLAIMS: [&str; 5] = ["tenant", "tenant_id", "tid", "org", "org_id"];
/// Owner fields that name the tenant of a returned object.
const TENANT_OWNERS: [&str; 5] = ["tenant", "tenant_id", "org", "org_id", "organization_id"];
/// Claims that name a role: actors sharing one are peers.
const GROUP_CLAIMS: [&str; 4] = ["scope", "scp", "roles", "role"];
/// An entity id several tenants own (per-tenant numbering): it tells nothing.
const AMBIGUOUS: u32 = u32::MAX;
/// Endpoints interned at most; later ones share one id.
const MAX_ENDPOINTS: usize = 20_000;
const MAX_TENANTS: usize = 100_000;
/// Ten-minute windows of login failures.
const LOGIN_WINDOW_MIN: u32 = 10;

/// An endpoint as the population uses it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EndpointInfo {
    pub method: String,
    pub template: String,
    pub first_us: i64,
    pub events: u64,
    pub traits: EndpointTraits,
    /// The endpoint's own rate (all actors), for population-wide shifts.
    pub windows: [Window; 3],
    /// Actors using it per 60 minutes.
    pub actors: DistinctWindow,
}

/// A peer group: actors with the same role claim.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    pub members: u32,
    /// Endpoints members were served successfully (256-bit set of endpoint ids).
    pub used: [u64; 4],
}

/// Login failures in a window, for one source or for everyone.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct LoginWindow {
    pub start_min: u32,
    pub attempts: u32,
    pub failures: u32,
    pub users: DistinctWindow,
    pub sources: DistinctWindow,
    pub fired: bool,
}

impl LoginWindow {
    fn roll(&mut self, minute: u32) {
        let start = minute - minute % LOGIN_WINDOW_MIN;
        if start > self.start_min {
            self.users.roll(minute, LOGIN_WINDOW_MIN);
            self.sources.roll(minute, LOGIN_WINDOW_MIN);
            self.start_min = start;
            self.attempts = 0;
            self.failures = 0;
            self.fired = false;
        }
    }
}

/// What is shared by all actors.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Population {
    pub first_us: Option<i64>,
    pub endpoints: Vec<EndpointInfo>,
    endpoint_index: foldhash::HashMap<String, u32>,
    pub tenants: Vec<String>,
    tenant_index: foldhash::HashMap<String, u32>,
    pub groups: Vec<Group>,
    group_index: foldhash::HashMap<String, u32>,
    /// Entity (kind, id) → owning tenant id.
    pub owners: BoundedMap<u32>,
    /// Session fingerprint → the principal that logged in to get it.
    sessions: BoundedMap<u64>,
    /// Flow → the principal that logged in on it.
    flows: BoundedMap<u64>,
    /// Client address → its login failures.
    sources: BoundedMap<LoginWindow>,
    pub logins: LoginWindow,
}

/// A detector's raw result, before scoring.
struct Finding {
    kind: AlertType,
    strength: f64,
    summary: String,
    observed: f64,
    baseline: f64,
    unit: &'static str,
    window: String,
    context: Vec<Factor>,
    /// Overrides the event's endpoint (population findings name their own).
    endpoint: Option<u32>,
}

/// Counters the worker exports as metrics.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EngineStats {
    pub events: u64,
    pub findings: u64,
    /// Findings dropped by an analyst's suppression.
    pub suppressed: u64,
    /// Findings whose score ended below `low` (context lowered them).
    pub below_threshold: u64,
    /// Actors forgotten to stay under `max_actors`.
    pub actors_evicted: u64,
    pub alerts_by_type: std::collections::BTreeMap<String, u64>,
}

/// Everything an engine persists.
#[derive(Serialize, Deserialize)]
struct Snapshot {
    version: u32,
    watermark_us: i64,
    actors: Vec<(u64, ActorState)>,
    population: Population,
    /// Open alerts as JSON (their optional fields need a self-describing format).
    open: Vec<(u64, String)>,
    stats: EngineStats,
}

const SNAPSHOT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("detector state does not decode: {0}")]
    Snapshot(#[from] postcard::Error),
    #[error("detector state holds a bad alert: {0}")]
    Alert(#[from] serde_json::Error),
    #[error("detector state has version {0}; this build knows {SNAPSHOT_VERSION}")]
    Version(u32),
}

/// The detection engine. See the module docs.
pub struct Engine {
    cfg: std::sync::Arc<DetectConfig>,
    geo: Geo,
    actors: foldhash::HashMap<u64, ActorState>,
    pop: Population,
    /// Alerts still open to merging, by (type, actor, endpoint).
    open: foldhash::HashMap<u64, Alert>,
    /// Keys of open alerts changed since the last drain.
    dirty: Vec<u64>,
    /// Alerts closed (replaced by a newer one of the same key) since the last drain.
    closed: Vec<Alert>,
    suppressions: Vec<Suppression>,
    watermark_us: i64,
    pub stats: EngineStats,
    key_buf: String,
}

/// An event's principal: who acted, in the most stable form available.
struct Principal {
    id: u64,
    kind: ActorKind,
    display: ActorDisplay,
    /// The credential itself is secret (token, key, cookie), not an address.
    credential: bool,
}

impl Engine {
    pub fn new(cfg: DetectConfig, geo: Geo) -> Engine {
        let pop = Population {
            first_us: None,
            endpoints: Vec::new(),
            endpoint_index: Default::default(),
            tenants: vec![String::new()],
            tenant_index: Default::default(),
            groups: vec![Group::default()],
            group_index: Default::default(),
            owners: BoundedMap::new(cfg.max_entities),
            sessions: BoundedMap::new(200_000),
            flows: BoundedMap::new(100_000),
            sources: BoundedMap::new(100_000),
            logins: LoginWindow::default(),
        };
        Engine {
            cfg: std::sync::Arc::new(cfg),
            geo,
            actors: Default::default(),
            pop,
            open: Default::default(),
            dirty: Vec::new(),
            closed: Vec::new(),
            suppressions: Vec::new(),
            watermark_us: 0,
            stats: EngineStats::default(),
            key_buf: String::new(),
        }
    }

    /// Takes the state saved by [`Engine::snapshot`]; on error the engine is unchanged.
    pub fn load(&mut self, bytes: &[u8]) -> Result<(), EngineError> {
        let s: Snapshot = postcard::from_bytes(bytes)?;
        if s.version != SNAPSHOT_VERSION {
            return Err(EngineError::Version(s.version));
        }
        let mut open = foldhash::HashMap::default();
        for (k, json) in s.open {
            open.insert(k, serde_json::from_str(&json)?);
        }
        self.watermark_us = s.watermark_us;
        self.actors = s.actors.into_iter().collect();
        self.pop = s.population;
        self.open = open;
        self.stats = s.stats;
        Ok(())
    }

    pub fn snapshot(&self) -> Vec<u8> {
        let mut actors: Vec<(u64, ActorState)> =
            self.actors.iter().map(|(k, v)| (*k, v.clone())).collect();
        actors.sort_by_key(|(k, _)| *k);
        let mut open: Vec<(u64, String)> = self
            .open
            .iter()
            .map(|(k, v)| (*k, serde_json::to_string(v).expect("alerts serialize")))
            .collect();
        open.sort_by_key(|(k, _)| *k);
        postcard::to_stdvec(&Snapshot {
            version: SNAPSHOT_VERSION,
            watermark_us: self.watermark_us,
            actors,
            population: self.pop.clone(),
            open,
            stats: self.stats.clone(),
        })
        .expect("the state serializes")
    }

    pub fn set_suppressions(&mut self, s: Vec<Suppression>) {
        self.suppressions = s;
    }

    pub fn actors(&self) -> usize {
        self.actors.len()
    }

    pub fn watermark_us(&self) -> i64 {
        self.watermark_us
    }

    pub fn geo(&self) -> &Geo {
        &self.geo
    }

    /// Alerts created or changed since the last call; alerts past their merge window
    /// are closed (a later finding opens a new one).
    pub fn drain_alerts(&mut self) -> Vec<Alert> {
        let mut out = std::mem::take(&mut self.closed);
        self.dirty.sort_unstable();
        self.dirty.dedup();
        for k in self.dirty.drain(..) {
            if let Some(a) = self.open.get(&k) {
                out.push(a.clone());
            }
        }
        let horizon = self.watermark_us - 2 * i64::from(self.cfg.merge_minutes) * MINUTE_US;
        self.open.retain(|_, a| a.last_seen_us >= horizon);
        out.sort_by(|a, b| (a.first_seen_us, &a.id).cmp(&(b.first_seen_us, &b.id)));
        out
    }

    /// Reads one event: baselines learn from it, detectors look at it.
    pub fn observe(&mut self, e: &Event) {
        self.stats.events += 1;
        let ts = event_time(e);
        self.watermark_us = self.watermark_us.max(ts);
        let minute = (ts.max(0) / MINUTE_US) as u32;
        let at_s = (ts.max(0) / 1_000_000) as u32;
        let pop_first = *self.pop.first_us.get_or_insert(ts);
        let learning_us = (self.cfg.learning_hours * HOUR_US as f64) as i64;
        let pop_ready = ts - pop_first >= learning_us;
        let mut findings: Vec<Finding> = Vec::new();

        // Endpoint.
        let eid = self.endpoint_id(&e.method, &e.endpoint, ts, pop_ready, &mut findings);
        let ok = e.status.is_some_and(|s| (200..300).contains(&s));
        let ip = client_ip(e);
        let place = self.geo.lookup(ip);
        {
            let info = &mut self.pop.endpoints[eid as usize];
            info.events += 1;
            info.traits.events = info.traits.events.saturating_add(1);
            if e.entities
                .iter()
                .any(|x| matches!(x.kind.as_str(), "user" | "customer" | "email" | "account"))
            {
                info.traits.personal = info.traits.personal.saturating_add(1);
            }
            for (w, len) in info.windows.iter_mut().zip(WINDOWS_MIN) {
                w.roll(minute, len);
                w.count += 1;
            }
            info.actors.roll(minute, 60);
        }

        let p = self.principal(e, ip);
        self.pop.endpoints[eid as usize]
            .actors
            .insert(p.id.rotate_left(8));

        // Logins: who logged in on which flow, failures per source and overall.
        let login = e.actors.iter().find(|a| a.kind == ActorKind::Login);
        if let Some(user) = login {
            let user_h = user
                .fingerprint
                .unwrap_or_else(|| stable_hash(&[user.value.as_deref().unwrap_or("").as_bytes()]));
            if ok {
                self.pop.flows.insert(e.flow_id, p.id);
            }
            let failed = matches!(e.status, Some(400 | 401 | 403 | 422 | 429));
            self.login_attempt(ip, user_h, failed, minute, pop_ready, eid, &mut findings);
        }

        // The actor.
        let new_actor = !self.actors.contains_key(&p.id);
        if new_actor {
            if self.actors.len() >= self.cfg.max_actors {
                self.evict_actors();
            }
            let mut st = ActorState::new(p.kind.code(), ts, p.display.clone());
            st.group = self.group_of(e);
            if st.group != 0 {
                self.pop.groups[st.group as usize].members += 1;
            }
            self.actors.insert(p.id, st);
        }
        let tenant_claim = claim(e, &TENANT_CLAIMS).map(|t| self.intern_tenant(t));
        let owner_tenant = e
            .owners
            .iter()
            .find(|o| TENANT_OWNERS.contains(&o.field.as_str()))
            .map(|o| self.intern_tenant(&o.value));
        // Path entities are keyed under the ones before them (`/customers/{c}/invoices/7`
        // is invoice 7 *of customer c*: numbering is often per parent or per tenant).
        let mut parent = 0u64;
        let entity_hashes: Vec<(u64, bool, &str)> = e
            .entities
            .iter()
            .map(|x| {
                let requested = matches!(
                    x.source,
                    tapline_wire::EntitySource::Path | tapline_wire::EntitySource::Query
                );
                let h = if x.source == tapline_wire::EntitySource::Path {
                    parent =
                        stable_hash(&[&parent.to_le_bytes(), x.kind.as_bytes(), x.id.as_bytes()]);
                    parent
                } else {
                    stable_hash(&[&0u64.to_le_bytes(), x.kind.as_bytes(), x.id.as_bytes()])
                };
                (h, requested, x.id.as_str())
            })
            .collect();
        let known_owners: Vec<(u32, &str)> = entity_hashes
            .iter()
            .filter(|(_, requested, _)| *requested)
            .filter_map(|(h, _, id)| self.pop.owners.get(*h).map(|t| (*t, *id)))
            .filter(|(t, _)| *t != AMBIGUOUS)
            .collect();

        let cfg = self.cfg.clone();
        let cfg = &*cfg;
        let a = self.actors.get_mut(&p.id).expect("inserted above");
        a.last_us = a.last_us.max(ts);
        a.events += 1;
        let slot = hour_of_week(ts);
        a.how[slot] = a.how[slot].saturating_add(1);
        let actor_ready = ts - a.first_us >= learning_us && a.events > cfg.min_events;

        // Tenant: claimed, else learned from what the actor is served.
        if let Some(t) = tenant_claim {
            a.tenant = t;
            a.tenant_claimed = true;
        } else if let (true, Some(t)) = (ok, owner_tenant) {
            if a.tenant == 0 {
                a.tenant = t;
                a.tenant_votes = 1;
            } else if a.tenant == t {
                a.tenant_votes = a.tenant_votes.saturating_add(1);
            } else {
                a.tenant_against = a.tenant_against.saturating_add(1);
            }
        }
        // A role the actor's own profile names (`GET /v1/users/me` → `"role":"viewer"`).
        let own_profile = {
            let t = &self.pop.endpoints[eid as usize].template;
            t.ends_with("/me") || t.ends_with("/users/{user}")
        };
        let learned_role = (ok && own_profile && a.group == 0)
            .then(|| {
                e.owners
                    .iter()
                    .find(|o| matches!(o.field.as_str(), "role" | "roles"))
                    .map(|o| format!("role={}", o.value))
            })
            .flatten();
        let tenant_known = a.tenant != 0
            && (a.tenant_claimed
                || (a.tenant_votes >= 3 && a.tenant_votes >= 4 * a.tenant_against));

        // bola: an object of another tenant served to this actor.
        if ok && tenant_known && pop_ready && p.kind != ActorKind::ClientIp {
            let served_other = owner_tenant.filter(|t| *t != a.tenant);
            let known_other = known_owners.iter().find(|(t, _)| *t != a.tenant);
            if served_other.is_some() || known_other.is_some() {
                let other = served_other.or(known_other.map(|k| k.0)).unwrap_or(0);
                let own = self.pop.tenants[a.tenant as usize].clone();
                let theirs = self.pop.tenants[other as usize].clone();
                let how = match known_other {
                    Some((_, id)) => format!("entity {id} belongs to tenant {theirs}"),
                    None => format!("the answer names tenant {theirs}"),
                };
                findings.push(Finding {
                    kind: AlertType::Bola,
                    strength: 0.9,
                    summary: format!(
                        "{} of tenant {own} was served another tenant's object: {how}",
                        p.display.kind
                    ),
                    observed: 1.0,
                    baseline: 0.0,
                    unit: "objects of another tenant",
                    window: "per request".into(),
                    context: vec![Factor {
                        name: if a.tenant_claimed {
                            "tenant_claimed"
                        } else {
                            "tenant_learned"
                        }
                        .into(),
                        weight: if a.tenant_claimed { 1.1 } else { 1.0 },
                        detail: if a.tenant_claimed {
                            "the actor's tenant is a claim of its token".into()
                        } else {
                            format!(
                                "the actor's tenant was learned from {} answers",
                                a.tenant_votes
                            )
                        },
                    }],
                    endpoint: None,
                });
            }
        }
        // The ownership graph learns from answers that name their tenant.
        if ok && let Some(t) = owner_tenant {
            for (h, _, _) in &entity_hashes {
                match self.pop.owners.get_mut(*h) {
                    None => self.pop.owners.insert(*h, t),
                    Some(o) if *o != t => *o = AMBIGUOUS,
                    Some(_) => {}
                }
            }
        }

        if let Some(role) = learned_role {
            let g = self.intern_group(&role);
            if g != 0 {
                self.pop.groups[g as usize].members += 1;
                if let Some(a) = self.actors.get_mut(&p.id) {
                    a.group = g;
                }
            }
        }
        let a = self.actors.get_mut(&p.id).expect("present");
        // Rate per endpoint, with the hour-of-week baseline and the usual bursts.
        let hourly = a.hourly_rate(slot, ts);
        let actor_events = a.events;
        let new_device = e
            .user_agent
            .as_deref()
            .map(|ua| a.note_agent(stable_hash(&[ua.as_bytes()]) as u32 | 1))
            .unwrap_or(false)
            && a.events > 1;
        let endpoint_windows = self.pop.endpoints[eid as usize].windows;
        let endpoint_actors = self.pop.endpoints[eid as usize].actors.estimate();
        let use_ = a.endpoint_mut(eid);
        use_.total = use_.total.saturating_add(1);
        let share = f64::from(use_.total) / actor_events.max(1) as f64;
        for (wi, len) in WINDOWS_MIN.into_iter().enumerate() {
            let w = &mut use_.windows[wi];
            w.roll(minute, len);
            w.count += 1;
            // Longer windows need more requests: a person's busy hour is not a spike.
            let min_count = f64::from(cfg.rate_min_count) * (1.0 + f64::from(len).log10());
            if !actor_ready || w.tainted || f64::from(w.count) < min_count {
                continue;
            }
            // The baseline is the rate this actor keeps at this hour of the week; its
            // usual bursts (the decaying peak of the window) guard against alerting on
            // a batch job's or a person's ordinary burst.
            let expected = (hourly * share * f64::from(len) / 60.0).max(0.05);
            let peak = if w.closed >= 1 {
                f64::from(w.peak)
            } else {
                0.0
            };
            let baseline = expected;
            let observed = f64::from(w.count);
            let p_value = poisson_tail(w.count as u64, expected.max(peak / 2.0));
            if observed >= cfg.rate_ratio * baseline
                && observed >= cfg.rate_burst_ratio * peak
                && p_value <= 1e-4
            {
                w.tainted = true;
                let ratio = observed / baseline;
                let mut context = Vec::new();
                // A population-wide shift: the endpoint as a whole is busier too and
                // this actor is a small part of it.
                let ew = endpoint_windows[wi];
                let endpoint_peak = if ew.closed >= 1 {
                    f64::from(ew.peak)
                } else {
                    0.0
                };
                if endpoint_actors >= 3.0
                    && f64::from(ew.count) >= 3.0 * endpoint_peak.max(1.0)
                    && observed < 0.5 * f64::from(ew.count)
                {
                    context.push(Factor {
                        name: "population_shift".into(),
                        weight: 0.15,
                        detail: format!(
                            "the endpoint as a whole is at {} requests against a usual peak of {:.0}, from ~{:.0} actors",
                            ew.count, endpoint_peak, endpoint_actors
                        ),
                    });
                }
                if new_device {
                    context.push(new_device_factor());
                }
                findings.push(Finding {
                    kind: AlertType::RateSpike,
                    strength: (0.55 + 0.1 * (ratio / cfg.rate_ratio).log2()).clamp(0.5, 0.9),
                    summary: format!(
                        "{} requests in {len} min against {baseline:.1} expected at this hour of the week ({ratio:.0}×) and a usual burst of {peak:.0} (p={p_value:.1e})",
                        w.count
                    ),
                    observed,
                    baseline,
                    unit: "requests",
                    window: format!("{len} min"),
                    context,
                    endpoint: None,
                });
                break;
            }
        }

        // Enumeration: many ids, mostly missing or one after another.
        if let Some(path_id) = e
            .entities
            .iter()
            .rev()
            .find(|x| x.source == tapline_wire::EntitySource::Path)
        {
            let probe = &mut use_.probe;
            probe.roll(minute);
            probe.requests = probe.requests.saturating_add(1);
            if matches!(e.status, Some(403 | 404 | 410)) {
                probe.missing = probe.missing.saturating_add(1);
            }
            let n = numeric_id(&path_id.id);
            if let Some(n) = n {
                if probe.last_id != 0 && n.abs_diff(probe.last_id) <= 2 && n != probe.last_id {
                    probe.sequential = probe.sequential.saturating_add(1);
                }
                probe.last_id = n;
            }
            probe.ids.insert(stable_hash(&[path_id.id.as_bytes()]));
            let r = f64::from(probe.requests);
            let missing = f64::from(probe.missing) / r;
            let sequential = f64::from(probe.sequential) / r;
            let distinct = f64::from(probe.ids.estimate());
            if pop_ready
                && !probe.fired
                && u32::from(probe.requests) >= cfg.enum_min_requests
                && distinct >= 0.6 * r
                && (missing >= cfg.enum_missing_ratio || sequential >= cfg.enum_sequential_ratio)
            {
                probe.fired = true;
                let what = if sequential >= cfg.enum_sequential_ratio {
                    format!("{:.0}% one after another", sequential * 100.0)
                } else {
                    format!("{:.0}% missing or forbidden", missing * 100.0)
                };
                findings.push(Finding {
                    kind: AlertType::Enumeration,
                    strength: (0.5 + 0.3 * missing.max(sequential)).min(0.85),
                    summary: format!(
                        "{} requests for ~{distinct:.0} distinct ids in {PROBE_WINDOW_MIN} min, {what}",
                        probe.requests
                    ),
                    observed: distinct,
                    baseline: 0.0,
                    unit: "distinct ids",
                    window: format!("{PROBE_WINDOW_MIN} min"),
                    context: Vec::new(),
                    endpoint: None,
                });
            }
        }

        // Volume read: response bytes and distinct entities of reads (what writes create
        // is not taken away) against the usual peaks.
        let read = matches!(e.method.as_str(), "GET" | "HEAD");
        for (wi, len) in [10u32, 60].into_iter().enumerate().filter(|_| read) {
            let w = &mut a.bytes[wi];
            w.roll(minute, len);
            w.count = w
                .count
                .saturating_add(e.response_bytes.min(u64::from(u32::MAX)) as u32);
            let d = &mut a.entities[wi];
            d.roll(minute, len);
            for (h, _, _) in &entity_hashes {
                d.insert(*h);
            }
            if !actor_ready {
                continue;
            }
            let bytes = f64::from(w.count);
            let bytes_peak = if w.closed >= 1 {
                f64::from(w.peak)
            } else {
                0.0
            };
            let ents = f64::from(d.estimate());
            let ents_peak = if d.closed >= 1 {
                f64::from(d.peak)
            } else {
                0.0
            };
            let by_bytes = !w.tainted
                && bytes >= cfg.exfil_min_bytes as f64
                && bytes >= cfg.exfil_ratio * bytes_peak.max(1.0);
            let by_entities = !d.tainted
                && ents >= f64::from(cfg.exfil_min_entities)
                && ents >= cfg.exfil_ratio * ents_peak.max(1.0);
            if by_bytes || by_entities {
                w.tainted = true;
                d.tainted = true;
                let (observed, baseline, unit) = if by_bytes {
                    (bytes, bytes_peak, "response bytes")
                } else {
                    (ents, ents_peak, "distinct entities")
                };
                let mut context = Vec::new();
                if new_device {
                    context.push(new_device_factor());
                }
                findings.push(Finding {
                    kind: AlertType::DataExfiltration,
                    strength: 0.7,
                    summary: format!(
                        "{observed:.0} {unit} in {len} min against a usual peak of {baseline:.0}"
                    ),
                    observed,
                    baseline,
                    unit,
                    window: format!("{len} min"),
                    context,
                    endpoint: None,
                });
                break;
            }
        }

        // Permissions: a first success on an endpoint the actor's peers never use.
        let write = !matches!(e.method.as_str(), "GET" | "HEAD" | "OPTIONS");
        let first_use = ok && write && !a.used(eid);
        let group = a.group;
        let kind = a.kind;
        let used_bits = a.used;
        if ok {
            a.mark_used(eid);
        }
        // Judged by the peers, not by the actor's own history: a new actor counts too.
        if first_use && pop_ready && p.kind != ActorKind::ClientIp {
            if let Some(mut f) = self.permission_check(p.id, group, kind, used_bits, eid) {
                let info = &self.pop.endpoints[eid as usize];
                if info.first_us - pop_first >= learning_us && ts - info.first_us < 7 * 24 * HOUR_US
                {
                    f.context.push(Factor {
                        name: "new_endpoint".into(),
                        weight: 0.3,
                        detail: "the endpoint appeared after learning: a release others adopt too"
                            .into(),
                    });
                }
                findings.push(f);
            } else if group != 0 {
                add_endpoint(&mut self.pop.groups[group as usize].used, eid);
            }
        } else if ok && group != 0 {
            add_endpoint(&mut self.pop.groups[group as usize].used, eid);
        }

        // Places: impossible travel and concurrent networks, for credentials only.
        if p.credential {
            let a = self.actors.get_mut(&p.id).expect("present");
            if let Some(loc) = place.location {
                let fix = Fix {
                    lat: loc.0,
                    lon: loc.1,
                    at_s,
                    country: place.country.unwrap_or(*b"??"),
                    ip: ip_bits(ip),
                    net: place.kind as u8,
                };
                if let Some(prev) = a.fix
                    && prev.ip != fix.ip
                    && pop_ready
                {
                    let km = haversine_km((prev.lat, prev.lon), (fix.lat, fix.lon));
                    let hours = f64::from(at_s.saturating_sub(prev.at_s).max(60)) / 3600.0;
                    let speed = km / hours;
                    if km >= cfg.travel_min_km && speed > cfg.travel_speed_kmh {
                        let mut context = Vec::new();
                        let prev_kind = NetKind::from_code(prev.net);
                        if place.kind.is_relay() || prev_kind.is_relay() {
                            context.push(Factor {
                                name: "relay_network".into(),
                                weight: 0.2,
                                detail: format!(
                                    "one end is a {} network (egress far from the person)",
                                    if place.kind.is_relay() {
                                        place.kind
                                    } else {
                                        prev_kind
                                    }
                                    .name()
                                ),
                            });
                        }
                        if a.countries.first() == Some(&fix.country) {
                            context.push(Factor {
                                name: "home_country".into(),
                                weight: 0.25,
                                detail: format!(
                                    "back in {}, where the actor was first seen",
                                    String::from_utf8_lossy(&fix.country)
                                ),
                            });
                        } else if a.countries.contains(&fix.country) {
                            context.push(Factor {
                                name: "known_country".into(),
                                weight: 0.4,
                                detail: format!(
                                    "the actor was seen in {} before",
                                    String::from_utf8_lossy(&fix.country)
                                ),
                            });
                        }
                        if place.kind == NetKind::Mobile {
                            context.push(Factor {
                                name: "mobile_network".into(),
                                weight: 0.7,
                                detail: "mobile carriers geolocate loosely".into(),
                            });
                        }
                        if new_device {
                            context.push(new_device_factor());
                        }
                        findings.push(Finding {
                            kind: AlertType::ImpossibleTravel,
                            strength: 0.85,
                            summary: format!(
                                "{km:.0} km from {} to {} in {:.0} min ({speed:.0} km/h)",
                                String::from_utf8_lossy(&prev.country),
                                place.describe(),
                                hours * 60.0
                            ),
                            observed: speed,
                            baseline: cfg.travel_speed_kmh,
                            unit: "km/h",
                            window: format!("{:.0} min", hours * 60.0),
                            context,
                            endpoint: None,
                        });
                    }
                }
                a.fix = Some(fix);
                if !a.countries.contains(&fix.country) {
                    if a.countries.len() >= 4 {
                        a.countries.remove(0);
                    }
                    a.countries.push(fix.country);
                }
            }
            // Concurrent networks.
            let net = net_bits(ip);
            let window = cfg.sharing_window_secs;
            if at_s.saturating_sub(a.returns_start_s) > window {
                a.returns = 0;
                a.returns_start_s = at_s;
            }
            let newest = a.nets.iter().map(|n| n.last_s).max().unwrap_or(0);
            match a.nets.iter().position(|n| n.net == net && n.last_s != 0) {
                Some(i) => {
                    let was = a.nets[i].last_s;
                    let others_since = a
                        .nets
                        .iter()
                        .any(|n| n.net != net && n.last_s > was && n.last_s != 0);
                    if others_since && at_s.saturating_sub(was) <= window && newest != was {
                        a.returns = a.returns.saturating_add(1);
                    }
                    a.nets[i].last_s = at_s;
                }
                None => {
                    let oldest = a
                        .nets
                        .iter()
                        .enumerate()
                        .min_by_key(|(_, n)| n.last_s)
                        .map(|(i, _)| i)
                        .unwrap_or(0);
                    a.nets[oldest] = RecentNet { net, last_s: at_s };
                }
            }
            let active = a
                .nets
                .iter()
                .filter(|n| n.last_s != 0 && at_s.saturating_sub(n.last_s) <= window)
                .count() as u32;
            if active >= cfg.sharing_networks && u32::from(a.returns) >= cfg.sharing_returns {
                a.returns = 0;
                a.returns_start_s = at_s;
                let mut context = Vec::new();
                if place.kind == NetKind::Mobile {
                    context.push(Factor {
                        name: "mobile_network".into(),
                        weight: 0.6,
                        detail: "mobile carriers move clients between addresses".into(),
                    });
                }
                findings.push(Finding {
                    kind: AlertType::TokenSharing,
                    strength: 0.75,
                    summary: format!(
                        "used from {active} networks at once within {} s, going back and forth",
                        window
                    ),
                    observed: f64::from(active),
                    baseline: 1.0,
                    unit: "networks at once",
                    window: format!("{} s", window),
                    context,
                    endpoint: None,
                });
            }
        }

        for f in findings {
            self.raise(f, &p, e, eid, ip, &place, at_s);
        }
    }

    /// Tracks a login attempt; raises credential stuffing from one source or many.
    #[allow(clippy::too_many_arguments)]
    fn login_attempt(
        &mut self,
        ip: IpAddr,
        user: u64,
        failed: bool,
        minute: u32,
        pop_ready: bool,
        eid: u32,
        findings: &mut Vec<Finding>,
    ) {
        let cfg = &self.cfg;
        let key = ip_key(ip);
        if self.pop.sources.get(key).is_none() {
            self.pop.sources.insert(key, LoginWindow::default());
        }
        let src = self.pop.sources.get_mut(key).expect("inserted");
        src.roll(minute);
        src.attempts += 1;
        if failed {
            src.failures += 1;
            src.users.insert(user);
        }
        let src_users = src.users.estimate();
        let concentrated =
            pop_ready && failed && !src.fired && src_users >= cfg.stuffing_min_users as f32;
        if concentrated {
            src.fired = true;
            findings.push(Finding {
                kind: AlertType::CredentialStuffing,
                strength: 0.8,
                summary: format!(
                    "{} failed logins for ~{src_users:.0} distinct user names from one address in {LOGIN_WINDOW_MIN} min",
                    src.failures
                ),
                observed: f64::from(src_users),
                baseline: f64::from(cfg.stuffing_min_users),
                unit: "user names failing",
                window: format!("{LOGIN_WINDOW_MIN} min"),
                context: Vec::new(),
                endpoint: Some(eid),
            });
        }
        let all = &mut self.pop.logins;
        all.roll(minute);
        if concentrated {
            // An attack is not the population's normal: its window is not learned.
            all.users.tainted = true;
        }
        all.attempts += 1;
        if failed {
            all.failures += 1;
            all.users.insert(user);
            all.sources.insert(key);
        }
        let users = f64::from(all.users.estimate());
        let peak = if all.users.closed >= 3 {
            f64::from(all.users.peak)
        } else {
            f64::INFINITY
        };
        let sources = f64::from(all.sources.estimate());
        let failure_ratio = f64::from(all.failures) / f64::from(all.attempts.max(1));
        if pop_ready
            && failed
            && !all.fired
            && users >= 2.0 * f64::from(cfg.stuffing_min_users)
            && users >= cfg.stuffing_ratio * peak.max(1.0)
            && sources >= 3.0
            && failure_ratio >= 0.5
        {
            all.fired = true;
            all.users.tainted = true;
            findings.push(Finding {
                kind: AlertType::CredentialStuffing,
                strength: 0.8,
                summary: format!(
                    "{} failed logins for ~{users:.0} distinct user names from ~{sources:.0} addresses in {LOGIN_WINDOW_MIN} min ({:.0}% failing; usual peak {peak:.0} names)",
                    all.failures,
                    failure_ratio * 100.0
                ),
                observed: users,
                baseline: peak,
                unit: "user names failing",
                window: format!("{LOGIN_WINDOW_MIN} min"),
                context: vec![Factor {
                    name: "distributed".into(),
                    weight: 1.0,
                    detail: format!("~{sources:.0} source addresses"),
                }],
                endpoint: Some(eid),
            });
        }
    }

    /// A first success on `eid`: do the actor's peers use it? Peers are the actors with
    /// the same role claim, else its nearest neighbours by the endpoints they use.
    fn permission_check(
        &self,
        id: u64,
        group: u32,
        kind: u8,
        used: [u64; 4],
        eid: u32,
    ) -> Option<Finding> {
        let bit = |set: &[u64; 4]| has_endpoint(set, eid);
        let info = &self.pop.endpoints[eid as usize];
        let name = format!("{} {}", info.method, info.template);
        if group != 0 {
            let g = &self.pop.groups[group as usize];
            if g.members > self.cfg.min_peers && !bit(&g.used) {
                return Some(Finding {
                    kind: AlertType::PermissionViolation,
                    strength: 0.75,
                    summary: format!(
                        "{name} succeeded, which none of the {} other actors with role `{}` ever uses",
                        g.members - 1,
                        g.name
                    ),
                    observed: 1.0,
                    baseline: 0.0,
                    unit: "peers using it",
                    window: "since learning".into(),
                    context: vec![Factor {
                        name: "peer_group".into(),
                        weight: 1.0,
                        detail: format!("role `{}`, {} members", g.name, g.members),
                    }],
                    endpoint: None,
                });
            }
            return None;
        }
        // Nearest neighbours (any credential kind) by Jaccard similarity of the sets of
        // endpoints they were served.
        let ones = |s: &[u64; 4]| s.iter().map(|w| w.count_ones()).sum::<u32>();
        let mut best: Vec<(f64, bool)> = Vec::new();
        // People (a session, a login) are judged by their role only: admins and viewers
        // browse alike, so resemblance says little about what they may do.
        if kind == ActorKind::Session.code() || kind == ActorKind::Login.code() {
            return None;
        }
        let own = self.actors.get(&id).map_or(0, |a| a.events);
        if own <= self.cfg.min_events {
            // Too little of its own use to find who it resembles.
            return None;
        }
        for (other_id, o) in &self.actors {
            if *other_id == id || o.events <= self.cfg.min_events {
                continue;
            }
            let inter: u32 = (0..4).map(|i| (o.used[i] & used[i]).count_ones()).sum();
            let union = ones(&o.used) + ones(&used) - inter;
            if union == 0 {
                continue;
            }
            let j = f64::from(inter) / f64::from(union);
            if j >= 0.5 {
                best.push((j, bit(&o.used)));
            }
        }
        best.sort_by(|a, b| b.0.total_cmp(&a.0));
        best.truncate(10);
        if (best.len() as u32) < self.cfg.min_peers {
            // Too few look alike: every actor presenting the same kind of credential.
            let same_kind: Vec<bool> = self
                .actors
                .iter()
                .filter(|(o, a)| **o != id && a.kind == kind && a.events > self.cfg.min_events)
                .map(|(_, a)| bit(&a.used))
                .collect();
            let n = same_kind.len() as u32;
            return (n >= self.cfg.min_peers && !same_kind.iter().any(|u| *u)).then(|| Finding {
                kind: AlertType::PermissionViolation,
                strength: 0.65,
                summary: format!(
                    "{name} succeeded, which none of the {n} other actors with this kind of credential ever uses"
                ),
                observed: 1.0,
                baseline: 0.0,
                unit: "peers using it",
                window: "since learning".into(),
                context: vec![Factor {
                    name: "peer_group".into(),
                    weight: 1.0,
                    detail: format!("{n} actors of the same credential kind"),
                }],
                endpoint: None,
            });
        }
        let peers = best.len() as u32;
        let using = best.iter().filter(|(_, u)| *u).count();
        (using == 0).then(|| Finding {
            kind: AlertType::PermissionViolation,
            strength: 0.7,
            summary: format!(
                "{name} succeeded, which none of its {peers} nearest peers (by the endpoints they use) ever uses"
            ),
            observed: 1.0,
            baseline: 0.0,
            unit: "peers using it",
            window: "since learning".into(),
            context: vec![Factor {
                name: "peer_group".into(),
                weight: 1.0,
                detail: format!(
                    "{peers} nearest actors, similarity {:.2}–{:.2}",
                    best.last().map_or(0.0, |b| b.0),
                    best.first().map_or(0.0, |b| b.0)
                ),
            }],
            endpoint: None,
        })
    }

    /// Scores a finding and merges it into an open alert or opens a new one.
    #[allow(clippy::too_many_arguments)]
    fn raise(
        &mut self,
        f: Finding,
        p: &Principal,
        e: &Event,
        eid: u32,
        ip: IpAddr,
        place: &Place,
        at_s: u32,
    ) {
        self.stats.findings += 1;
        let eid = f.endpoint.unwrap_or(eid);
        let info = &self.pop.endpoints[eid as usize];
        let endpoint = format!("{} {}", info.method, info.template);
        // Population-level stuffing is about the endpoint, not the attempt's actor.
        let distributed = f.kind == AlertType::CredentialStuffing
            && f.context.iter().any(|c| c.name == "distributed");
        let (actor_id, display) = if distributed {
            (
                stable_hash(&[b"endpoint", endpoint.as_bytes()]),
                ActorDisplay {
                    kind: "endpoint".into(),
                    key: endpoint.clone(),
                    hint: None,
                    claims: Vec::new(),
                },
            )
        } else if f.kind == AlertType::CredentialStuffing {
            (
                stable_hash(&[b"ip", ip.to_string().as_bytes()]),
                ActorDisplay {
                    kind: "client_ip".into(),
                    key: ip.to_string(),
                    hint: None,
                    claims: Vec::new(),
                },
            )
        } else {
            (p.id, p.display.clone())
        };
        let actor_hex = format!("{actor_id:016x}");
        if self
            .suppressions
            .iter()
            .any(|s| s.matches(f.kind, &actor_hex, Some(&endpoint)))
        {
            self.stats.suppressed += 1;
            return;
        }
        let (sens, _) = score::sensitivity(
            &info.method,
            &info.template,
            &info.traits,
            &self.cfg.sensitivity,
        );
        let risk = self
            .actors
            .get(&p.id)
            .map_or(0.0, |a| f64::from(a.decayed_risk(at_s)));
        let (score, factors) = score::score(f.strength, sens, &f.context, risk);
        let mut severity = score::severity(score);
        if f.kind == AlertType::NewEndpoint {
            severity = Severity::Info;
        } else if severity < Severity::Low {
            self.stats.below_threshold += 1;
            return;
        }
        if let Some(a) = self.actors.get_mut(&p.id) {
            a.risk = a.decayed_risk(at_s) + score as f32;
            a.risk_at_s = at_s;
        }
        let evidence = Evidence {
            ts_us: event_time(e),
            method: e.method.clone(),
            endpoint: e.endpoint.clone(),
            status: e.status,
            client_ip: ip.to_string(),
            entity: e
                .entities
                .iter()
                .find(|x| x.source == tapline_wire::EntitySource::Path)
                .or(e.entities.first())
                .map(|x| format!("{} {}", x.kind, x.id)),
            place: (place.location.is_some() || place.kind != NetKind::Unknown)
                .then(|| place.describe()),
            response_bytes: e.response_bytes,
        };
        let type_endpoint = match f.kind {
            // Travel and sharing are about the credential, wherever it is used.
            AlertType::ImpossibleTravel | AlertType::TokenSharing => 0,
            _ => eid + 1,
        };
        let key = stable_hash(&[
            f.kind.name().as_bytes(),
            &actor_id.to_le_bytes(),
            &type_endpoint.to_le_bytes(),
        ]);
        let merge_us = i64::from(self.cfg.merge_minutes) * MINUTE_US;
        let tenant = self
            .actors
            .get(&p.id)
            .filter(|a| a.tenant != 0 && !distributed)
            .map(|a| self.pop.tenants[a.tenant as usize].clone());
        self.dirty.push(key);
        if let Some(open) = self.open.get_mut(&key)
            && event_time(e) - open.last_seen_us <= merge_us
        {
            open.count += 1;
            open.last_seen_us = open.last_seen_us.max(event_time(e));
            if score > open.score {
                open.score = score;
                open.severity = open.severity.max(severity);
                open.explanation = Explanation {
                    summary: f.summary,
                    observed: f.observed,
                    baseline: f.baseline,
                    unit: f.unit.into(),
                    window: f.window,
                    factors,
                };
            }
            let ip_s = ip.to_string();
            if !open.source_ips.contains(&ip_s) && open.source_ips.len() < MAX_SOURCES {
                open.source_ips.push(ip_s);
            }
            if open.evidence.len() < MAX_EVIDENCE {
                open.evidence.push(evidence);
            }
            return;
        }
        let id = format!(
            "{:016x}",
            stable_hash(&[&key.to_le_bytes(), &event_time(e).to_le_bytes()])
        );
        *self
            .stats
            .alerts_by_type
            .entry(f.kind.name().to_string())
            .or_default() += 1;
        if let Some(old) = self.open.remove(&key) {
            self.closed.push(old);
        }
        self.open.insert(
            key,
            Alert {
                id,
                kind: f.kind,
                severity,
                score,
                actor_id: actor_hex,
                actor: display,
                tenant,
                source_ips: vec![ip.to_string()],
                endpoint: Some(endpoint),
                first_seen_us: event_time(e),
                last_seen_us: event_time(e),
                count: 1,
                explanation: Explanation {
                    summary: f.summary,
                    observed: f.observed,
                    baseline: f.baseline,
                    unit: f.unit.into(),
                    window: f.window,
                    factors,
                },
                evidence: vec![evidence],
                status: Default::default(),
            },
        );
    }

    fn endpoint_id(
        &mut self,
        method: &str,
        template: &str,
        ts: i64,
        pop_ready: bool,
        findings: &mut Vec<Finding>,
    ) -> u32 {
        // Every event looks its endpoint up: the key is built in a reused buffer.
        self.key_buf.clear();
        self.key_buf.push_str(method);
        self.key_buf.push(' ');
        self.key_buf.push_str(template);
        if let Some(id) = self.pop.endpoint_index.get(self.key_buf.as_str()) {
            return *id;
        }
        let key = self.key_buf.clone();
        if self.pop.endpoints.len() >= MAX_ENDPOINTS {
            // The last slot stands for every endpoint past the bound.
            let last = self.pop.endpoints.len() as u32 - 1;
            self.pop.endpoints[last as usize].template = "(other endpoints)".into();
            return last;
        }
        let id = self.pop.endpoints.len() as u32;
        self.pop.endpoints.push(EndpointInfo {
            method: method.to_string(),
            template: template.to_string(),
            first_us: ts,
            ..EndpointInfo::default()
        });
        self.pop.endpoint_index.insert(key, id);
        if pop_ready {
            findings.push(Finding {
                kind: AlertType::NewEndpoint,
                strength: 0.1,
                summary: format!("{method} {template} was called for the first time"),
                observed: 1.0,
                baseline: 0.0,
                unit: "calls",
                window: "since learning".into(),
                context: Vec::new(),
                endpoint: Some(id),
            });
        }
        id
    }

    fn intern_tenant(&mut self, t: &str) -> u32 {
        let pop = &mut self.pop;
        intern(&mut pop.tenants, &mut pop.tenant_index, t, |name| {
            name.to_string()
        })
    }

    fn group_of(&mut self, e: &Event) -> u32 {
        match claim(e, &GROUP_CLAIMS) {
            Some(role) => self.intern_group(role),
            None => 0,
        }
    }

    fn intern_group(&mut self, role: &str) -> u32 {
        let pop = &mut self.pop;
        intern(&mut pop.groups, &mut pop.group_index, role, |name| Group {
            name: name.to_string(),
            ..Group::default()
        })
    }

    /// The principal of an event: a JWT's subject, an API key, a Basic user, a bearer
    /// token, the login behind a session cookie (when the login was seen on the same
    /// connection), a login name, else the client address.
    fn principal(&mut self, e: &Event, ip: IpAddr) -> Principal {
        let rank = |k: ActorKind| match k {
            ActorKind::Jwt => 0,
            ActorKind::ApiKey => 1,
            ActorKind::Basic => 2,
            ActorKind::Bearer => 3,
            ActorKind::Session => 4,
            ActorKind::Login => 5,
            ActorKind::ClientIp => 6,
        };
        let best = e.actors.iter().min_by_key(|a| rank(a.kind));
        let Some(a) = best.filter(|a| a.kind != ActorKind::ClientIp) else {
            let key = ip.to_string();
            return Principal {
                id: stable_hash(&[b"ip", key.as_bytes()]),
                kind: ActorKind::ClientIp,
                display: ActorDisplay {
                    kind: "client_ip".into(),
                    key,
                    hint: None,
                    claims: Vec::new(),
                },
                credential: false,
            };
        };
        let claims: Vec<(String, String)> = a
            .claims
            .iter()
            .filter(|(k, _)| !matches!(k.as_str(), "exp" | "iat" | "nbf" | "jti"))
            .cloned()
            .collect();
        let fp = a.fingerprint.map(|f| format!("{f:016x}"));
        let key = fp.clone().or_else(|| a.value.clone()).unwrap_or_default();
        let kind_name = actor_kind_name(a.kind);
        let mut display = ActorDisplay {
            kind: kind_name.into(),
            key: key.clone(),
            hint: a.hint.clone(),
            claims,
        };
        let id = match a.kind {
            ActorKind::Jwt => match a.claims.iter().find(|(k, _)| k == "sub") {
                Some((_, sub)) => {
                    let iss = a
                        .claims
                        .iter()
                        .find(|(k, _)| k == "iss")
                        .map_or("", |(_, v)| v.as_str());
                    display.key = format!("sub:{sub}");
                    stable_hash(&[b"jwt-sub", iss.as_bytes(), sub.as_bytes()])
                }
                None => stable_hash(&[b"jwt", key.as_bytes()]),
            },
            ActorKind::Session => {
                let sid = stable_hash(&[b"session", key.as_bytes()]);
                if let Some(owner) = self.pop.sessions.get(sid) {
                    *owner
                } else if let Some(owner) = self.pop.flows.get(e.flow_id).copied() {
                    self.pop.sessions.insert(sid, owner);
                    owner
                } else {
                    sid
                }
            }
            ActorKind::Login => stable_hash(&[b"login", key.as_bytes()]),
            k => stable_hash(&[actor_kind_name(k).as_bytes(), key.as_bytes()]),
        };
        // A session linked to its login shows as the login.
        if a.kind == ActorKind::Session
            && let Some(st) = self.actors.get(&id)
            && st.display.kind == "login"
        {
            display = st.display.clone();
        }
        Principal {
            id,
            kind: a.kind,
            display,
            credential: true,
        }
    }

    /// Forgets the least recently seen tenth of the actors.
    fn evict_actors(&mut self) {
        let mut last: Vec<i64> = self.actors.values().map(|a| a.last_us).collect();
        let k = (last.len() / 10).max(1);
        let (_, cut, _) = last.select_nth_unstable(k);
        let cut = *cut;
        let before = self.actors.len();
        self.actors.retain(|_, a| a.last_us > cut);
        self.stats.actors_evicted += (before - self.actors.len()) as u64;
    }
}

/// The id of `key` in a bounded table (0, the table's first entry, once it is full).
fn intern<T>(
    list: &mut Vec<T>,
    index: &mut foldhash::HashMap<String, u32>,
    key: &str,
    make: impl FnOnce(&str) -> T,
) -> u32 {
    if let Some(id) = index.get(key) {
        return *id;
    }
    if list.len() >= MAX_TENANTS {
        return 0;
    }
    let id = list.len() as u32;
    list.push(make(key));
    index.insert(key.to_string(), id);
    id
}

/// An event's time, held to 1970–2106: the windows count in 32-bit minutes and seconds,
/// and a hostile or broken clock must not wrap them.
fn event_time(e: &Event) -> i64 {
    e.ts_us.clamp(0, i64::from(u32::MAX) * 1_000_000)
}

fn new_device_factor() -> Factor {
    Factor {
        name: "new_device".into(),
        weight: 1.25,
        detail: "a user agent this actor never used before".into(),
    }
}

fn actor_kind_name(k: ActorKind) -> &'static str {
    match k {
        ActorKind::ApiKey => "api_key",
        ActorKind::Bearer => "bearer",
        ActorKind::Jwt => "jwt",
        ActorKind::Basic => "basic",
        ActorKind::Session => "session",
        ActorKind::Login => "login",
        ActorKind::ClientIp => "client_ip",
    }
}

/// The client's address: the agent's (after trusted proxies), else the packet's.
pub fn client_ip(e: &Event) -> IpAddr {
    e.actors
        .iter()
        .find(|a| a.kind == ActorKind::ClientIp)
        .and_then(|a| a.value.as_deref())
        .and_then(|v| v.parse().ok())
        .unwrap_or(e.client.ip)
}

fn claim<'e>(e: &'e Event, names: &[&str]) -> Option<&'e str> {
    e.actors.iter().find_map(|a| {
        a.claims
            .iter()
            .find(|(k, _)| names.contains(&k.as_str()))
            .map(|(_, v)| v.as_str())
    })
}

/// The number in an id (`1042`, `inv_1042`), for telling ids one after another.
fn numeric_id(id: &str) -> Option<u64> {
    let digits = id.rsplit(|c: char| !c.is_ascii_digit()).next()?;
    if digits.is_empty() || digits.len() > 18 || digits.len() * 2 < id.len() {
        return None;
    }
    digits.parse().ok()
}

/// A stable key of an address (no allocation).
fn ip_key(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v) => stable_hash(&[&v.octets()]),
        IpAddr::V6(v) => stable_hash(&[&v.octets()]),
    }
}

fn ip_bits(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(v) => u32::from(v),
        IpAddr::V6(v) => stable_hash(&[&v.octets()]) as u32,
    }
}

/// The /24 (IPv4) or /48 (IPv6) an address is in.
fn net_bits(ip: IpAddr) -> u32 {
    match ip {
        IpAddr::V4(v) => (u32::from(v) >> 8) | 1 << 31,
        IpAddr::V6(v) => stable_hash(&[&v.octets()[..6]]) as u32 & !(1 << 31),
    }
}

#[cfg(test)]
mod tests;
