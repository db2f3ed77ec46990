//! The `baseline` stage: what is normal, learned from event time, in bounded state.
//!
//! Per actor ([`ActorState`], a few hundred bytes): request counts per hour of the week,
//! the endpoints it uses most with tumbling windows of 1, 10 and 60 minutes and a
//! decaying peak of each (the actor's usual bursts), response bytes and distinct entities
//! per window, its tenant (claimed or learned from the objects it is served), the places
//! and networks it comes from, and its user agents. Everything is sized up front: a long
//! month of traffic does not grow an actor.
//!
//! Per population ([`Population`]): the endpoint table with first-seen times and learned
//! sensitivity, the entity-ownership graph (a bounded map from entity to tenant), and the
//! peer groups by which actors are compared.

use serde::{Deserialize, Serialize};

/// A stable 64-bit id: FNV-1a of the parts (stable across builds and restarts, unlike
/// the std hasher).
pub fn stable_hash(parts: &[&[u8]]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for p in parts {
        for &b in *p {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
        h = (h ^ 0xff).wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

pub const MINUTE_US: i64 = 60_000_000;
pub const HOUR_US: i64 = 60 * MINUTE_US;
pub const DAY_US: i64 = 24 * HOUR_US;
pub const WEEK_US: i64 = 7 * DAY_US;

/// Hour of the week (0 = Monday 00:00 UTC) of an event time.
pub fn hour_of_week(ts_us: i64) -> usize {
    // 1970-01-01 was a Thursday: shift so that Monday is 0.
    ((ts_us.div_euclid(HOUR_US) + 3 * 24).rem_euclid(168)) as usize
}

/// The lengths of the rate windows, in minutes.
pub const WINDOWS_MIN: [u32; 3] = [1, 10, 60];
/// Half-life of a window's remembered peak.
const PEAK_HALF_LIFE_MIN: f32 = 7.0 * 24.0 * 60.0;

/// A tumbling window of counts with the decaying peak of the closed ones.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Window {
    /// Start of the current window, minutes since the epoch.
    pub start_min: u32,
    pub count: u32,
    /// Largest count of a closed window, decayed with time.
    pub peak: f32,
    /// Closed windows seen (saturating): the peak means little after one.
    pub closed: u16,
    /// The window raised an alert: what an attack did is not learned as normal.
    pub tainted: bool,
}

impl Window {
    /// Moves to the window holding `minute`, closing the current one into the peak.
    pub fn roll(&mut self, minute: u32, len_min: u32) {
        let start = minute - minute % len_min;
        if start <= self.start_min {
            return;
        }
        if self.tainted {
            self.tainted = false;
        } else if self.count > 0 || self.closed > 0 {
            let gap = (start - self.start_min) as f32;
            let decay = 0.5f32.powf(gap / PEAK_HALF_LIFE_MIN);
            self.peak = (self.peak * decay).max(self.count as f32);
            self.closed = self.closed.saturating_add(1);
        }
        self.start_min = start;
        self.count = 0;
    }
}

/// Distinct values in a window, by linear counting over 256 bits: exact for a handful,
/// within a few percent up to several hundred, saturating near 1400.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct DistinctWindow {
    pub start_min: u32,
    pub bits: [u64; 4],
    pub peak: f32,
    pub closed: u16,
    pub tainted: bool,
}

impl DistinctWindow {
    pub fn roll(&mut self, minute: u32, len_min: u32) {
        let start = minute - minute % len_min;
        if start <= self.start_min {
            return;
        }
        let n = self.estimate();
        if self.tainted {
            self.tainted = false;
        } else if n > 0.0 || self.closed > 0 {
            let gap = (start - self.start_min) as f32;
            let decay = 0.5f32.powf(gap / PEAK_HALF_LIFE_MIN);
            self.peak = (self.peak * decay).max(n);
            self.closed = self.closed.saturating_add(1);
        }
        self.start_min = start;
        self.bits = [0; 4];
    }

    pub fn insert(&mut self, h: u64) {
        // A finalizer first: FNV's high bits barely move between short similar keys.
        let mut z = h.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let bit = ((z ^ (z >> 31)) >> 56) as usize;
        self.bits[bit >> 6] |= 1 << (bit & 63);
    }

    pub fn estimate(&self) -> f32 {
        let set: u32 = self.bits.iter().map(|w| w.count_ones()).sum();
        let zero = 256 - set;
        if zero == 0 {
            return 256.0 * 256f32.ln();
        }
        -256.0 * (zero as f32 / 256.0).ln()
    }
}

/// One endpoint an actor uses, with its rate windows and its enumeration tracker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EndpointUse {
    pub endpoint: u32,
    pub total: u32,
    pub windows: [Window; 3],
    pub probe: Probe,
}

/// Ten minutes of id access on one endpoint: how many ids, how many missing, how many
/// one after another.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Probe {
    pub start_min: u32,
    pub requests: u16,
    pub missing: u16,
    pub sequential: u16,
    pub last_id: u64,
    pub ids: DistinctWindow,
    pub fired: bool,
}

pub const PROBE_WINDOW_MIN: u32 = 10;

impl Probe {
    pub fn roll(&mut self, minute: u32) {
        let start = minute - minute % PROBE_WINDOW_MIN;
        if start > self.start_min {
            *self = Probe {
                start_min: start,
                ..Probe::default()
            };
            self.ids.start_min = start;
        }
    }
}

/// A geolocated fix of an actor.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Fix {
    pub lat: f32,
    pub lon: f32,
    pub at_s: u32,
    pub country: [u8; 2],
    pub ip: u32,
    /// Network kind code ([`crate::geo::NetKind`]).
    pub net: u8,
}

/// A network an actor used recently (for concurrent use from several).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct RecentNet {
    pub net: u32,
    pub last_s: u32,
}

/// How many endpoints an actor's state follows closely.
pub const TRACKED_ENDPOINTS: usize = 6;

/// Everything known of one actor. Sized up front; see the module docs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ActorState {
    pub kind: u8,
    pub first_us: i64,
    pub last_us: i64,
    pub events: u64,
    /// Requests per hour of the week (UTC), saturating.
    pub how: Vec<u16>,
    pub endpoints: Vec<EndpointUse>,
    /// Endpoints answered with success, as a 256-bit set of endpoint ids.
    pub used: [u64; 4],
    /// Response bytes per 10 and 60 minutes.
    pub bytes: [Window; 2],
    /// Distinct entities per 10 and 60 minutes.
    pub entities: [DistinctWindow; 2],
    /// The tenant (interned) it acts for: claimed, or learned from what it is served.
    pub tenant: u32,
    pub tenant_claimed: bool,
    pub tenant_votes: u16,
    pub tenant_against: u16,
    /// The peer group (interned `scope` claim), 0 when it has none.
    pub group: u32,
    pub fix: Option<Fix>,
    /// Countries it was seen in (up to four), for people who travel.
    pub countries: Vec<[u8; 2]>,
    pub nets: [RecentNet; 6],
    /// Networks it came back to while another was in use (concurrent use).
    pub returns: u16,
    pub returns_start_s: u32,
    /// User agents seen (hashes of the last four).
    pub agents: [u32; 4],
    /// Accumulated detector evidence and when it was last decayed.
    pub risk: f32,
    pub risk_at_s: u32,
    /// How the analyst sees it: kind, key, hint, clear claims.
    pub display: ActorDisplay,
}

/// What an alert shows of an actor: never a secret, only its fingerprint.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ActorDisplay {
    pub kind: String,
    /// The fingerprint (16 hex digits), or the clear value of a non-secret identity.
    pub key: String,
    /// The last characters of the secret, when the agent keeps them.
    pub hint: Option<String>,
    /// Clear claims (JWT `sub`, `tenant`, `scope`…).
    pub claims: Vec<(String, String)>,
}

impl ActorState {
    pub fn new(kind: u8, ts_us: i64, display: ActorDisplay) -> ActorState {
        ActorState {
            kind,
            first_us: ts_us,
            last_us: ts_us,
            how: vec![0; 168],
            display,
            ..ActorState::default()
        }
    }

    /// The tracked endpoint slot of `endpoint`, taking the least used slot when all are
    /// taken (its history goes; the new endpoint starts from nothing).
    pub fn endpoint_mut(&mut self, endpoint: u32) -> &mut EndpointUse {
        if let Some(i) = self.endpoints.iter().position(|e| e.endpoint == endpoint) {
            return &mut self.endpoints[i];
        }
        if self.endpoints.len() < TRACKED_ENDPOINTS {
            self.endpoints.push(EndpointUse {
                endpoint,
                ..EndpointUse::default()
            });
            return self.endpoints.last_mut().expect("pushed");
        }
        let i = self
            .endpoints
            .iter()
            .enumerate()
            .min_by_key(|(_, e)| e.total)
            .map(|(i, _)| i)
            .unwrap_or(0);
        self.endpoints[i] = EndpointUse {
            endpoint,
            ..EndpointUse::default()
        };
        &mut self.endpoints[i]
    }

    /// Requests per hour this actor usually makes at hour-of-week `slot`, from the weeks
    /// it has been seen at that hour; before a full week, the same hour of other days;
    /// before a day, its mean.
    pub fn hourly_rate(&self, slot: usize, now_us: i64) -> f64 {
        let seen_us = (now_us - self.first_us).max(HOUR_US);
        let weeks = occurrences(self.first_us, now_us, slot, 168);
        if weeks >= 1 {
            return f64::from(self.how[slot]) / weeks as f64;
        }
        let hour = slot % 24;
        let days: i64 = (0..7)
            .map(|d| occurrences(self.first_us, now_us, d * 24 + hour, 168))
            .sum();
        if days >= 1 {
            let n: u32 = (0..7).map(|d| u32::from(self.how[d * 24 + hour])).sum();
            return f64::from(n) / days as f64;
        }
        self.events as f64 / (seen_us as f64 / HOUR_US as f64)
    }

    pub fn used(&self, endpoint: u32) -> bool {
        has_endpoint(&self.used, endpoint)
    }

    pub fn mark_used(&mut self, endpoint: u32) {
        add_endpoint(&mut self.used, endpoint);
    }

    /// Notes a user agent; returns whether it is new for this actor.
    pub fn note_agent(&mut self, h: u32) -> bool {
        if h == 0 || self.agents.contains(&h) {
            return false;
        }
        self.agents.rotate_right(1);
        self.agents[0] = h;
        true
    }

    /// Decays the risk to `at_s` (half-life one day of event time).
    pub fn decayed_risk(&self, at_s: u32) -> f32 {
        let dt = at_s.saturating_sub(self.risk_at_s) as f32;
        self.risk * 0.5f32.powf(dt / 86_400.0)
    }
}

/// A set of endpoint ids in 256 bits (ids past 255 share bits: approximate, bounded).
pub fn has_endpoint(set: &[u64; 4], endpoint: u32) -> bool {
    let b = (endpoint & 255) as usize;
    set[b >> 6] & (1 << (b & 63)) != 0
}

pub fn add_endpoint(set: &mut [u64; 4], endpoint: u32) {
    let b = (endpoint & 255) as usize;
    set[b >> 6] |= 1 << (b & 63);
}

/// Whole occurrences of hour `slot` (of a cycle of `cycle` hours) completed in
/// `[from_us, to_us)`.
fn occurrences(from_us: i64, to_us: i64, slot: usize, cycle: i64) -> i64 {
    let from_h = from_us.div_euclid(HOUR_US);
    let to_h = to_us.div_euclid(HOUR_US);
    // Hours h in [from_h, to_h) with hour_of_week(h) == slot.
    let offset = 3 * 24;
    let count_below = |h: i64| -> i64 {
        // Number of hours x in [0, h) (shifted) with (x + offset) % cycle == slot.
        let first = (slot as i64 - offset).rem_euclid(cycle);
        if h <= first {
            0
        } else {
            (h - first - 1).div_euclid(cycle) + 1
        }
    };
    (count_below(to_h) - count_below(from_h)).max(0)
}

/// A bounded map that forgets its oldest entries (by insertion) when full: for links
/// that only matter for a while (flows, sessions) and the entity-ownership graph.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BoundedMap<V> {
    map: foldhash::HashMap<u64, V>,
    order: std::collections::VecDeque<u64>,
    cap: usize,
    pub evicted: u64,
}

impl<V> BoundedMap<V> {
    pub fn new(cap: usize) -> Self {
        BoundedMap {
            map: foldhash::HashMap::default(),
            order: std::collections::VecDeque::new(),
            cap: cap.max(1),
            evicted: 0,
        }
    }

    pub fn get(&self, k: u64) -> Option<&V> {
        self.map.get(&k)
    }

    pub fn get_mut(&mut self, k: u64) -> Option<&mut V> {
        self.map.get_mut(&k)
    }

    pub fn insert(&mut self, k: u64, v: V) {
        if self.map.insert(k, v).is_none() {
            self.order.push_back(k);
            while self.map.len() > self.cap {
                if let Some(old) = self.order.pop_front() {
                    self.map.remove(&old);
                    self.evicted += 1;
                }
            }
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

/// Great-circle distance in kilometres.
pub fn haversine_km(a: (f32, f32), b: (f32, f32)) -> f64 {
    let (lat1, lon1) = (f64::from(a.0).to_radians(), f64::from(a.1).to_radians());
    let (lat2, lon2) = (f64::from(b.0).to_radians(), f64::from(b.1).to_radians());
    let h = ((lat2 - lat1) / 2.0).sin().powi(2)
        + lat1.cos() * lat2.cos() * ((lon2 - lon1) / 2.0).sin().powi(2);
    2.0 * 6371.0 * h.sqrt().min(1.0).asin()
}

/// Upper tail of the Poisson distribution, `P(X >= k)` for mean `lambda`: how
/// surprising a count is for a baseline (the guard for low counts).
pub fn poisson_tail(k: u64, lambda: f64) -> f64 {
    if k == 0 {
        return 1.0;
    }
    let lambda = lambda.max(1e-9);
    // P(X >= k) = 1 - sum_{i<k} e^-l l^i / i!, summed in log space for large k.
    let mut term = (-lambda).exp();
    let mut below = 0.0;
    for i in 0..k.min(10_000) {
        below += term;
        term *= lambda / (i + 1) as f64;
        if term < 1e-300 && i as f64 > lambda {
            break;
        }
    }
    (1.0 - below).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hour_of_week_starts_on_monday() {
        // 2026-11-02 was a Monday.
        let monday = 1_793_577_600i64 * 1_000_000;
        assert_eq!(hour_of_week(monday), 0);
        assert_eq!(hour_of_week(monday + 25 * HOUR_US), 25);
        assert_eq!(hour_of_week(monday + WEEK_US - 1), 167);
    }

    #[test]
    fn occurrences_counts_completed_hours() {
        let monday = 1_793_577_600i64 * 1_000_000;
        assert_eq!(occurrences(monday, monday + HOUR_US, 0, 168), 1);
        assert_eq!(occurrences(monday, monday + WEEK_US, 5, 168), 1);
        assert_eq!(occurrences(monday, monday + 2 * WEEK_US, 5, 168), 2);
        assert_eq!(occurrences(monday + HOUR_US, monday + WEEK_US, 0, 168), 0);
        assert_eq!(occurrences(monday, monday + 3 * DAY_US, 10, 24), 3);
    }

    #[test]
    fn hourly_rate_follows_the_week_once_there_is_one() {
        let monday = 1_793_577_600i64 * 1_000_000;
        let mut a = ActorState::new(0, monday, ActorDisplay::default());
        a.how[9] = 20;
        a.events = 20;
        // A day in: the same hour of other days.
        assert_eq!(a.hourly_rate(9, monday + DAY_US), 20.0);
        // Two weeks in: per week.
        a.how[9] = 40;
        assert_eq!(a.hourly_rate(9, monday + 2 * WEEK_US), 20.0);
    }

    #[test]
    fn windows_remember_decaying_peaks() {
        let mut w = Window::default();
        w.roll(100, 10);
        w.count = 7;
        w.roll(110, 10);
        assert_eq!(w.peak, 7.0);
        assert_eq!(w.count, 0);
        w.count = 3;
        // A week later the peak of 7 is worth half.
        w.roll(110 + 7 * 24 * 60, 10);
        assert!((w.peak - 3.5).abs() < 0.1, "{}", w.peak);
    }

    #[test]
    fn linear_counting_spreads_similar_short_keys() {
        let mut d = DistinctWindow::default();
        for i in 1000..1070u64 {
            d.insert(stable_hash(&[i.to_string().as_bytes()]));
        }
        let n = d.estimate();
        assert!((60.0..80.0).contains(&n), "{n}");
    }

    #[test]
    fn linear_counting_estimates_distinct_values() {
        let mut d = DistinctWindow::default();
        for i in 0..200u64 {
            d.insert(stable_hash(&[&i.to_le_bytes()]));
        }
        let n = d.estimate();
        assert!((170.0..230.0).contains(&n), "{n}");
    }

    #[test]
    fn poisson_tail_matches_known_values() {
        assert!((poisson_tail(1, 1.0) - (1.0 - (-1.0f64).exp())).abs() < 1e-12);
        assert!(poisson_tail(20, 2.0) < 1e-10);
        assert!(poisson_tail(3, 3.0) > 0.5);
    }

    #[test]
    fn bounded_map_forgets_the_oldest() {
        let mut m = BoundedMap::new(2);
        m.insert(1, 'a');
        m.insert(2, 'b');
        m.insert(3, 'c');
        assert!(m.get(1).is_none());
        assert_eq!(m.get(3), Some(&'c'));
        assert_eq!(m.evicted, 1);
    }
}
