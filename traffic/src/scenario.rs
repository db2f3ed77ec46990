//! `cargo xtask eval`'s traffic: the ordinary multi-tenant traffic of [`crate::gen_traffic`]
//! with labelled attacks of every detector's kind injected after a learning period, and
//! benign traps that look like attacks to a careless detector (a corporate VPN egressing
//! abroad, a user who really travels, a month-start billing burst, a new endpoint
//! everyone starts using, a mobile user hopping addresses).
//!
//! Besides the capture it writes `<out>.labels.json` (what happened when, and the keys
//! that identify who did it: secrets, JWT subjects, addresses) and a city and an ASN
//! database in MaxMind format placing every address the run uses.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use serde::Serialize;

use crate::pcap::PcapWriter;
use crate::{
    Action, Client, ClientKind, ClientProfile, ClientState, DAY, HOUR, Job, JobRequest, MINUTE,
    MachineAuth, Planned, Population, SECOND, START_UNIX_S, TrafficWriter, schedule, stream,
};

/// Where the run's addresses are: network, country, city, latitude, longitude, AS number,
/// AS organisation.
pub const GEO: [(&str, &str, &str, f64, f64, u32, &str); 12] = [
    (
        "198.51.100.0/25",
        "DE",
        "Frankfurt am Main",
        50.11,
        8.68,
        3320,
        "Deutsche Telekom AG",
    ),
    (
        "198.51.100.128/25",
        "FR",
        "Paris",
        48.86,
        2.35,
        3215,
        "Orange S.A.",
    ),
    (
        "203.0.113.0/25",
        "GB",
        "London",
        51.51,
        -0.13,
        2856,
        "British Telecommunications PLC",
    ),
    (
        "203.0.113.128/25",
        "NL",
        "Amsterdam",
        52.37,
        4.90,
        1136,
        "KPN B.V.",
    ),
    (
        "192.0.2.0/24",
        "DE",
        "Frankfurt am Main",
        50.11,
        8.68,
        64500,
        "Example Cloud Hosting GmbH",
    ),
    (
        "175.16.199.0/24",
        "CN",
        "Changchun",
        43.88,
        125.32,
        4837,
        "China Unicom",
    ),
    (
        "216.160.83.0/24",
        "US",
        "Seattle",
        47.61,
        -122.33,
        209,
        "CenturyLink",
    ),
    (
        "202.196.224.0/24",
        "PH",
        "Manila",
        14.60,
        120.98,
        9299,
        "Philippine Long Distance Telephone",
    ),
    (
        "89.160.20.0/24",
        "SE",
        "Stockholm",
        59.33,
        18.07,
        29518,
        "Bredband2 AB",
    ),
    (
        "216.160.84.0/24",
        "US",
        "New York",
        40.71,
        -74.01,
        64501,
        "Example Corp VPN",
    ),
    (
        "37.120.0.0/16",
        "DE",
        "Berlin",
        52.52,
        13.40,
        64502,
        "Example Mobile GmbH",
    ),
    (
        "45.88.0.0/16",
        "RU",
        "Moscow",
        55.76,
        37.62,
        64503,
        "Example Hosting Ltd",
    ),
];

/// The agent configuration the traffic needs: its JWT signing key and its corporate
/// proxies. No fingerprint key: the collector's bundle brings it.
pub fn agent_config() -> String {
    format!(
        "[extract]\ntrusted_proxies = [\"10.9.0.0/24\"]\njwt_keys = [{{ secret = \"{}\" }}]\n{OWNER_FIELDS}",
        String::from_utf8_lossy(crate::JWT_KEY)
    )
}

/// The default owner fields and the user's role, which the API's profile answers carry.
pub const OWNER_FIELDS: &str = "owner_fields = [\"tenant\", \"tenant_id\", \"org\", \"org_id\", \"organization_id\", \"account_id\", \"owner_id\", \"customer_id\", \"role\"]\n";

/// Who did it: what the eval compares with an alert's actor and addresses.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Key {
    /// A secret (API key, client secret, login name): its fingerprint is the actor.
    Secret(String),
    /// A JWT subject.
    Sub(String),
    /// A clear actor value (a Basic user name).
    Value(String),
    /// A client address.
    Ip(String),
    /// An endpoint (`POST /v1/auth/login`), for attacks on the population.
    Endpoint(String),
}

/// One labelled attack or benign trap.
#[derive(Debug, Clone, Serialize)]
pub struct Label {
    pub id: String,
    /// The alert type that should find it (`rate_spike`, ...), or the trap's name.
    #[serde(rename = "type")]
    pub kind: String,
    /// A benign trap: no alert of high severity should come of it.
    pub trap: bool,
    /// Event time, microseconds since the epoch.
    pub start_us: i64,
    pub end_us: i64,
    pub keys: Vec<Key>,
    pub note: String,
}

#[derive(Debug, Serialize)]
pub struct Labels {
    pub seed: u64,
    pub days: u32,
    pub start_unix_s: u64,
    pub labels: Vec<Label>,
}

pub struct ScenarioSummary {
    pub transactions: u64,
    pub bytes: u64,
    pub attacks: usize,
    pub traps: usize,
    pub labels_path: PathBuf,
    pub city_db: PathBuf,
    pub asn_db: PathBuf,
}

/// Writes the scenario: the capture, `<out>.labels.json`, `<out>.city.mmdb`,
/// `<out>.asn.mmdb`. Needs four days at least (two of learning, two of attacks).
pub fn gen_scenario(out: &Path, seed: u64, days: u32, scale: f64) -> Result<ScenarioSummary> {
    ensure!(
        days >= 4,
        "a scenario needs at least 4 days (2 learning, 2 attacked)"
    );
    let mut population = Population::generate(&mut stream(seed, 1));
    let mut plan = schedule(&population, &mut stream(seed, 2), days, scale);
    let mut inj = Injector {
        labels: Vec::new(),
        extra: Vec::new(),
        moves: Vec::new(),
        next_ip: 10,
    };
    inj.inject(&mut population, &plan, days);
    plan.append(&mut inj.extra);
    // People who moved take their plans (and what the scenario added to them) along.
    for p in plan.iter_mut() {
        if let Some(&(_, _, to)) = inj
            .moves
            .iter()
            .find(|(from, since, _)| p.client as usize == *from && p.at_us >= *since)
        {
            p.client = to as u32;
        }
    }
    let end = u64::from(days) * DAY;
    plan.retain(|p| p.at_us < end);
    finalize(&mut plan);

    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    let file = std::fs::File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let pcap = PcapWriter::new(std::io::BufWriter::with_capacity(1 << 20, file))?;
    let mut writer = TrafficWriter::new(pcap, stream(seed, 3));
    for planned in &plan {
        writer.play(&mut population, planned)?;
    }
    let (summary, _) = writer.finish()?;

    let labels = Labels {
        seed,
        days,
        start_unix_s: START_UNIX_S,
        labels: inj.labels,
    };
    let labels_path = PathBuf::from(format!("{}.labels.json", out.display()));
    std::fs::write(&labels_path, serde_json::to_string_pretty(&labels)?)
        .with_context(|| format!("writing {}", labels_path.display()))?;
    let city_db = PathBuf::from(format!("{}.city.mmdb", out.display()));
    let asn_db = PathBuf::from(format!("{}.asn.mmdb", out.display()));
    write_geo_dbs(&city_db, &asn_db)?;
    Ok(ScenarioSummary {
        transactions: summary.transactions,
        bytes: summary.bytes,
        attacks: labels.labels.iter().filter(|l| !l.trap).count(),
        traps: labels.labels.iter().filter(|l| l.trap).count(),
        labels_path,
        city_db,
        asn_db,
    })
}

/// A city database (GeoIP2 City layout) and an ASN database (GeoLite2-ASN layout) for
/// [`GEO`].
pub fn write_geo_dbs(city: &Path, asn: &Path) -> Result<()> {
    #[derive(Serialize)]
    struct Names {
        en: String,
    }
    #[derive(Serialize)]
    struct Named {
        names: Names,
    }
    #[derive(Serialize)]
    struct Country {
        iso_code: String,
        names: Names,
    }
    #[derive(Serialize)]
    struct Location {
        latitude: f64,
        longitude: f64,
        accuracy_radius: u16,
    }
    #[derive(Serialize)]
    struct City {
        city: Named,
        country: Country,
        location: Location,
    }
    #[derive(Serialize)]
    struct Asn {
        autonomous_system_number: u32,
        autonomous_system_organization: String,
    }
    let mut c = mmdb_writer::Writer::new("GeoLite2-City");
    let mut a = mmdb_writer::Writer::new("GeoLite2-ASN");
    for (net, cc, name, lat, lon, asn, org) in GEO {
        let net: ipnet::IpNet = net.parse()?;
        c.insert(
            net,
            &City {
                city: Named {
                    names: Names { en: name.into() },
                },
                country: Country {
                    iso_code: cc.into(),
                    names: Names { en: cc.into() },
                },
                location: Location {
                    latitude: lat,
                    longitude: lon,
                    accuracy_radius: 20,
                },
            },
        )?;
        a.insert(
            net,
            &Asn {
                autonomous_system_number: asn,
                autonomous_system_organization: org.into(),
            },
        )?;
    }
    std::fs::write(city, c.to_bytes()?).with_context(|| format!("writing {}", city.display()))?;
    std::fs::write(asn, a.to_bytes()?).with_context(|| format!("writing {}", asn.display()))?;
    Ok(())
}

/// Sorts the plan and recomputes each client's idle time after each request.
fn finalize(plan: &mut [Planned]) {
    plan.sort_by_key(|p| (p.at_us, p.client));
    let mut next: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
    for p in plan.iter_mut().rev() {
        p.idle_after_us = next.get(&p.client).map(|n| n - p.at_us);
        next.insert(p.client, p.at_us);
    }
}

struct Injector {
    labels: Vec<Label>,
    extra: Vec<Planned>,
    /// (client, from time, new client): the client's own plan from then on is the new
    /// client's (a person who travelled, a person on a phone).
    moves: Vec<(usize, u64, usize)>,
    /// Host part of the next attacker address in a range.
    next_ip: u8,
}

fn ip_str(ip: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3])
}

impl Injector {
    fn push(&mut self, client: usize, at_us: u64, action: Action) {
        self.extra.push(Planned {
            at_us,
            client: client as u32,
            action,
            idle_after_us: None,
        });
    }

    /// `n` requests of `action` every `every` from `start`; returns the end.
    fn burst(
        &mut self,
        client: usize,
        start: u64,
        n: u32,
        every: u64,
        action: impl Fn(u32) -> Action,
    ) -> u64 {
        for k in 0..n {
            self.push(client, start + u64::from(k) * every, action(k));
        }
        start + u64::from(n) * every
    }

    fn label(
        &mut self,
        kind: &str,
        trap: bool,
        start: u64,
        end: u64,
        keys: Vec<Key>,
        note: String,
    ) {
        let id = format!(
            "{}{:02}",
            if trap { "t" } else { "a" },
            self.labels.len() + 1
        );
        self.labels.push(Label {
            id,
            kind: kind.into(),
            trap,
            start_us: ((START_UNIX_S * SECOND + start) as i64),
            end_us: ((START_UNIX_S * SECOND + end) as i64),
            keys,
            note,
        });
    }

    fn fresh_ip(&mut self, prefix: [u8; 3]) -> [u8; 4] {
        self.next_ip = self.next_ip.wrapping_add(1).max(10);
        [prefix[0], prefix[1], prefix[2], self.next_ip]
    }

    /// A copy of a client (same credentials) at another address.
    fn clone_client(
        pop: &mut Population,
        victim: usize,
        ip: [u8; 4],
        user_agent: Option<&'static str>,
    ) -> usize {
        let mut profile: ClientProfile = pop.clients[victim].profile.clone();
        profile.ip = ip;
        profile.forwarded_for = None;
        if let Some(ua) = user_agent {
            profile.user_agent = ua;
        }
        pop.clients.push(Client {
            profile,
            state: ClientState::default(),
        });
        pop.clients.len() - 1
    }

    fn inject(&mut self, pop: &mut Population, plan: &[Planned], days: u32) {
        // Clients by what they are.
        // People with a history: the detectors compare them with themselves.
        let mut learned = std::collections::HashMap::<usize, u32>::new();
        let mut first_day = std::collections::HashSet::<usize>::new();
        for p in plan.iter().filter(|p| p.at_us < 2 * DAY) {
            *learned.entry(p.client as usize).or_default() += 1;
            if p.at_us < DAY {
                first_day.insert(p.client as usize);
            }
        }
        let humans_at = |pred: &dyn Fn(&crate::Human, &ClientProfile) -> bool| -> Vec<usize> {
            pop.clients
                .iter()
                .enumerate()
                .filter_map(|(i, c)| match &c.profile.kind {
                    ClientKind::Human(h)
                        if pred(h, &c.profile)
                            && first_day.contains(&i)
                            && learned.get(&i).is_some_and(|n| *n >= 40) =>
                    {
                        Some(i)
                    }
                    _ => None,
                })
                .collect()
        };
        let own_ip = |p: &ClientProfile| p.forwarded_for.is_none();
        let jwt_humans = humans_at(&|h, p| h.auth == crate::HumanAuth::BearerJwt && own_ip(p));
        let jwt_viewers =
            humans_at(&|h, p| h.auth == crate::HumanAuth::BearerJwt && !h.admin && own_ip(p));
        let cookie_humans =
            humans_at(&|h, p| h.auth == crate::HumanAuth::SessionCookie && own_ip(p));
        let cookie_viewers =
            humans_at(&|h, p| h.auth == crate::HumanAuth::SessionCookie && !h.admin && own_ip(p));
        let machines: Vec<(usize, Job, u8)> = pop
            .clients
            .iter()
            .enumerate()
            .filter_map(|(i, c)| match &c.profile.kind {
                ClientKind::Machine(m) => Some((
                    i,
                    m.job,
                    match m.auth {
                        MachineAuth::ClientCredentials { .. } => 0,
                        MachineAuth::ApiKeyHeader(_) | MachineAuth::ApiKeyQuery(_) => 1,
                        MachineAuth::Basic { .. } => 2,
                    },
                )),
                _ => None,
            })
            .collect();
        let keys_of = |pop: &Population, c: usize| -> Vec<Key> {
            let p = &pop.clients[c].profile;
            let mut keys = vec![Key::Ip(ip_str(p.forwarded_for.unwrap_or(p.ip)))];
            match &p.kind {
                ClientKind::Human(h) => {
                    keys.push(Key::Secret(h.email.clone()));
                    keys.push(Key::Sub(h.user_id.clone()));
                }
                ClientKind::Machine(m) => match &m.auth {
                    MachineAuth::ClientCredentials { .. } => {
                        keys.push(Key::Sub(m.client_id.clone()))
                    }
                    MachineAuth::ApiKeyHeader(k) | MachineAuth::ApiKeyQuery(k) => {
                        keys.push(Key::Secret(k.clone()))
                    }
                    MachineAuth::Basic { .. } => keys.push(Key::Value(m.client_id.clone())),
                },
                _ => {}
            }
            keys
        };
        // The last and next planned request of a client around a time.
        let last_before = |c: usize, t: u64| -> Option<u64> {
            plan.iter()
                .filter(|p| p.client as usize == c && p.at_us < t)
                .map(|p| p.at_us)
                .max()
        };
        let next_after = |c: usize, t: u64| -> Option<u64> {
            plan.iter()
                .filter(|p| p.client as usize == c && p.at_us >= t)
                .map(|p| p.at_us)
                .min()
        };
        // Attack slots: from the third day, every 70 minutes.
        let mut slot = 2 * DAY + 7 * HOUR;
        let mut next_slot = || {
            let s = slot;
            slot += 70 * MINUTE;
            s
        };
        // Each person is the victim (or the trap) of one scenario only.
        let used = std::cell::RefCell::new(std::collections::HashSet::new());
        let pick = |v: &[usize], k: usize| -> Option<usize> {
            let mut u = used.borrow_mut();
            let n = v.len();
            let c = (0..n).map(|i| v[(k + i) % n]).find(|c| !u.contains(c))?;
            u.insert(c);
            Some(c)
        };
        let machine_of = |auth: u8, not_job: &[Job]| -> Option<usize> {
            machines
                .iter()
                .find(|(_, j, a)| *a == auth && !not_job.contains(j))
                .or_else(|| machines.iter().find(|(_, j, _)| !not_job.contains(j)))
                .map(|m| m.0)
        };
        let quiet = [Job::Billing, Job::LedgerExport];

        // rate_spike: a billing client charging every 5 s; another client 10× its job;
        // a human's script reading one endpoint over and over.
        if let Some(&(m, _, _)) = machines.iter().find(|(_, j, _)| *j == Job::Billing) {
            let s = next_slot();
            let e = self.burst(m, s, 96, 5 * SECOND, |_| {
                Action::Job(JobRequest::CreateCharge)
            });
            let keys = keys_of(pop, m);
            self.label(
                "rate_spike",
                false,
                s,
                e,
                keys,
                "a billing client charges every 5 s for 8 min".into(),
            );
        }
        if let Some(&(m, job, _)) = machines.iter().find(|(_, j, _)| {
            matches!(
                j,
                Job::RefundWorker | Job::CustomerSync | Job::InvoiceExport
            )
        }) {
            let s = next_slot();
            let req = match job {
                Job::RefundWorker => JobRequest::ReadCharge,
                Job::CustomerSync => JobRequest::ListCustomers { page: 0 },
                _ => JobRequest::ListCustomerInvoices,
            };
            let e = self.burst(m, s, 100, 3 * SECOND, move |_| Action::Job(req));
            let keys = keys_of(pop, m);
            self.label(
                "rate_spike",
                false,
                s,
                e,
                keys,
                format!("a {} client runs its job every 3 s", job.name()),
            );
        }
        if let Some(h) = pick(&jwt_humans, 0) {
            let t = next_slot();
            let s = next_after(h, t).filter(|x| x - t < 12 * HOUR).unwrap_or(t);
            let e = self.burst(h, s, 120, 2 * SECOND, |_| Action::Scrape);
            let keys = keys_of(pop, h);
            self.label(
                "rate_spike",
                false,
                s,
                e,
                keys,
                "a user's token drives a scraping script".into(),
            );
        }

        // impossible_travel: a stolen API key used from China; a user's password and a
        // user's account used from another continent shortly after the user.
        if let Some(m) = machine_of(1, &[]) {
            let s = next_slot();
            let ip = self.fresh_ip([175, 16, 199]);
            let c = Self::clone_client(pop, m, ip, Some("python-requests/2.31.0"));
            let req = first_job_request(pop, m);
            let e = self.burst(c, s, 15, 20 * SECOND, move |_| Action::Job(req));
            let mut keys = keys_of(pop, m);
            keys.push(Key::Ip(ip_str(ip)));
            self.label(
                "impossible_travel",
                false,
                s,
                e,
                keys,
                "a machine's API key used from China".into(),
            );
        }
        for (k, list) in [&cookie_humans, &jwt_humans].into_iter().enumerate() {
            let Some(h) = pick(list, 3 + k) else { continue };
            let t = next_slot();
            let Some(last) = last_before(h, t)
                .filter(|l| t - l < 6 * HOUR)
                .or_else(|| next_after(h, t))
            else {
                continue;
            };
            let s = last + 25 * MINUTE;
            let ip = self.fresh_ip(if k == 0 {
                [216, 160, 83]
            } else {
                [202, 196, 224]
            });
            let c = Self::clone_client(pop, h, ip, None);
            let e = self.burst(c, s, 10, 40 * SECOND, |_| Action::Browse);
            let mut keys = keys_of(pop, h);
            keys.push(Key::Ip(ip_str(ip)));
            self.label(
                "impossible_travel",
                false,
                s,
                e,
                keys,
                "a user's account used from another continent 25 min after the user".into(),
            );
        }

        // token_sharing: an API key and a client secret used from several networks at once.
        for (k, auth) in [1u8, 0].into_iter().enumerate() {
            let Some(m) = machine_of(auth, &quiet) else {
                continue;
            };
            let s = next_slot();
            let req = first_job_request(pop, m);
            let mut keys = keys_of(pop, m);
            let mut e = s;
            for j in 0..4u8 {
                let net: [u8; 3] = match j {
                    0 => [89, 160, 20],
                    1 => [216, 160, 83],
                    2 => [45, 88, 10 + k as u8],
                    _ => [45, 88, 20 + k as u8],
                };
                let ip = self.fresh_ip(net);
                let c = Self::clone_client(pop, m, ip, None);
                let offset = u64::from(j) * 7 * SECOND;
                e = e.max(self.burst(c, s + offset, 20, 30 * SECOND, move |_| Action::Job(req)));
                keys.push(Key::Ip(ip_str(ip)));
            }
            self.label(
                "token_sharing",
                false,
                s,
                e,
                keys,
                "one credential used from four networks at once".into(),
            );
        }

        // bola: users and a machine served other tenants' invoices.
        let bola_actors = [
            pick(&cookie_humans, 1),
            pick(&jwt_humans, 1),
            machine_of(1, &quiet),
        ];
        for c in bola_actors.into_iter().flatten() {
            let t = next_slot();
            let s = next_after(c, t).filter(|x| x - t < 12 * HOUR).unwrap_or(t);
            let mut at = s;
            for k in 0..16 {
                let action = if k % 2 == 0 {
                    match pop.clients[c].profile.kind {
                        ClientKind::Machine(_) => Action::Job(first_job_request(pop, c)),
                        _ => Action::Browse,
                    }
                } else {
                    Action::Foreign
                };
                self.push(c, at, action);
                at += 25 * SECOND;
            }
            let keys = keys_of(pop, c);
            self.label(
                "bola",
                false,
                s,
                at,
                keys,
                "served invoices of another tenant".into(),
            );
        }

        // permission_violation: viewers and a read-only machine refunding.
        let escalators = [
            pick(&jwt_viewers, 0),
            pick(&cookie_viewers, 2),
            machine_of(1, &[Job::RefundWorker]),
        ];
        for c in escalators.into_iter().flatten() {
            let t = next_slot();
            let s = next_after(c, t).filter(|x| x - t < 12 * HOUR).unwrap_or(t);
            self.push(
                c,
                s,
                match pop.clients[c].profile.kind {
                    ClientKind::Machine(_) => Action::Job(first_job_request(pop, c)),
                    _ => Action::Browse,
                },
            );
            let e = self.burst(c, s + 20 * SECOND, 3, 40 * SECOND, |_| Action::Escalate);
            let keys = keys_of(pop, c);
            self.label(
                "permission_violation",
                false,
                s,
                e,
                keys,
                "a refund by a client whose role never refunds".into(),
            );
        }

        // enumeration: invoice numbers one after another; guessed customer ids.
        if let Some(h) = pick(&jwt_humans, 2) {
            let t = next_slot();
            let s = next_after(h, t).filter(|x| x - t < 12 * HOUR).unwrap_or(t);
            self.push(h, s, Action::Browse);
            let e = self.burst(h, s + 10 * SECOND, 70, 5 * SECOND, Action::Probe);
            let keys = keys_of(pop, h);
            self.label(
                "enumeration",
                false,
                s,
                e,
                keys,
                "invoice numbers walked one by one".into(),
            );
        }
        if let Some(m) = machine_of(1, &[]) {
            let s = next_slot();
            let e = self.burst(m, s, 60, 5 * SECOND, |_| Action::Guess);
            let keys = keys_of(pop, m);
            self.label(
                "enumeration",
                false,
                s,
                e,
                keys,
                "customer ids guessed".into(),
            );
        }

        // credential_stuffing: one address, then many.
        {
            let s = next_slot();
            let ip = self.fresh_ip([202, 196, 224]);
            let c = add_attacker(pop, vec![ip], ip);
            let e = self.burst(c, s, 45, 10 * SECOND, Action::Stuff);
            self.label(
                "credential_stuffing",
                false,
                s,
                e,
                vec![Key::Ip(ip_str(ip))],
                "45 user names tried from one address".into(),
            );
        }
        {
            let s = next_slot();
            let mut keys = vec![Key::Endpoint("POST /v1/auth/login".into())];
            let mut e = s;
            for j in 0..40u8 {
                let ip = [45, 88, 100 + j, 7 + j];
                let c = add_attacker(pop, vec![ip], ip);
                let start = s + u64::from(j) * 12 * SECOND;
                e = e.max(self.burst(c, start, 2, 90 * SECOND, move |k| {
                    Action::Stuff(1000 + u32::from(j) * 2 + k)
                }));
                keys.push(Key::Ip(ip_str(ip)));
            }
            self.label(
                "credential_stuffing",
                false,
                s,
                e,
                keys,
                "80 user names tried from 40 addresses".into(),
            );
        }

        // data_exfiltration: a user and a machine download everything.
        let dumpers = [
            pick(&cookie_humans, 4),
            machine_of(0, &[Job::CustomerSync]).or(machine_of(1, &[Job::CustomerSync])),
        ];
        for c in dumpers.into_iter().flatten() {
            let t = next_slot();
            let s = next_after(c, t).filter(|x| x - t < 12 * HOUR).unwrap_or(t);
            let e = self.burst(c, s, 240, 3 * SECOND, Action::Dump);
            let keys = keys_of(pop, c);
            self.label(
                "data_exfiltration",
                false,
                s,
                e,
                keys,
                "every customer and every invoice downloaded".into(),
            );
        }

        // Traps.
        // A corporate VPN egressing in New York, used by a user in Europe now and then.
        if let Some(h) = pick(&cookie_humans, 5) {
            let ip = self.fresh_ip([216, 160, 84]);
            let c = Self::clone_client(pop, h, ip, None);
            let mut first = None;
            let mut last = 0;
            for d in [2u64, 3] {
                if let Some(t) = next_after(h, d * DAY + 8 * HOUR) {
                    let s = t + 30 * MINUTE;
                    first.get_or_insert(s);
                    last = self.burst(c, s, 8, 45 * SECOND, |_| Action::Browse);
                }
            }
            if let Some(s) = first {
                let mut keys = keys_of(pop, h);
                keys.push(Key::Ip(ip_str(ip)));
                self.label(
                    "vpn_egress",
                    true,
                    s,
                    last,
                    keys,
                    "a user's corporate VPN egresses in New York".into(),
                );
            }
        }
        // A user who flies to Stockholm and works from there.
        if let Some(h) = pick(&jwt_humans, 4) {
            let ip = self.fresh_ip([89, 160, 20]);
            let c = Self::clone_client(pop, h, ip, None);
            let s = 3 * DAY + 9 * HOUR;
            self.moves.push((h, 3 * DAY, c));
            let mut e = s;
            for d in 0..u64::from(days.saturating_sub(3)) {
                e = self.burst(c, s + d * DAY, 12, 50 * SECOND, |_| Action::Browse);
            }
            let mut keys = keys_of(pop, h);
            keys.push(Key::Ip(ip_str(ip)));
            self.label(
                "traveller",
                true,
                s,
                e,
                keys,
                "a user works from Stockholm after a flight".into(),
            );
        }
        // The month-start billing run: every billing client charges ten times as often.
        {
            let s = 3 * DAY;
            let mut keys = Vec::new();
            let mut e = s;
            for &(m, job, _) in &machines {
                if job == Job::Billing {
                    e = e.max(self.burst(
                        m,
                        s + u64::from(m as u32 % 7) * SECOND,
                        60,
                        MINUTE,
                        |_| Action::Job(JobRequest::CreateCharge),
                    ));
                    keys.extend(keys_of(pop, m));
                }
            }
            if !keys.is_empty() {
                self.label(
                    "billing_run",
                    true,
                    s,
                    e,
                    keys,
                    "the month-start billing run".into(),
                );
            }
        }
        // A report page released on day 2 at noon that users start opening.
        {
            let release = 2 * DAY + 12 * HOUR;
            let keys = vec![Key::Endpoint("GET /v1/reports/summary".into())];
            let mut e = release;
            for (k, p) in plan.iter().enumerate() {
                if p.at_us >= release && matches!(p.action, Action::Browse) && k % 9 == 0 {
                    self.push(p.client as usize, p.at_us + 500 * crate::MS, Action::Report);
                    e = e.max(p.at_us);
                }
            }
            self.label(
                "new_endpoint_rollout",
                true,
                release,
                e,
                keys,
                "a report page everyone starts opening".into(),
            );
        }
        // A mobile user whose address changes with every connection.
        if let Some(h) = pick(&cookie_humans, 6) {
            let hops: Vec<[u8; 4]> = (0..200u32)
                .map(|k| [37, 120, (k % 200) as u8, (10 + k % 37) as u8])
                .collect();
            let c = Self::clone_client(
                pop,
                h,
                hops[0],
                Some(
                    "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1",
                ),
            );
            pop.clients[c].profile.hop_ips = hops;
            self.moves.push((h, 0, c));
            let mut s0 = None;
            let mut e = 0;
            for d in 0..u64::from(days) {
                let s = d * DAY + 7 * HOUR + u64::from(d as u32) * 17 * MINUTE;
                s0.get_or_insert(s);
                e = self.burst(c, s, 15, 40 * SECOND, |_| Action::Browse);
            }
            let mut keys = keys_of(pop, h);
            keys.push(Key::Ip("37.120.0.0/16".into()));
            self.label(
                "mobile_hopping",
                true,
                2 * DAY,
                e,
                keys,
                format!(
                    "a phone on a mobile network changing address with each connection (from {})",
                    s0.unwrap_or(0) / DAY
                ),
            );
        }
    }
}

/// A machine's ordinary request.
fn first_job_request(pop: &Population, c: usize) -> JobRequest {
    match &pop.clients[c].profile.kind {
        ClientKind::Machine(m) => match m.job {
            Job::Billing => JobRequest::CreateCharge,
            Job::CustomerSync => JobRequest::ListCustomers { page: 0 },
            Job::InvoiceExport => JobRequest::ListCustomerInvoices,
            Job::RefundWorker => JobRequest::ReadCharge,
            Job::LedgerExport => JobRequest::ReadInvoice,
        },
        _ => JobRequest::ReadCharge,
    }
}

fn add_attacker(pop: &mut Population, hop_ips: Vec<[u8; 4]>, ip: [u8; 4]) -> usize {
    pop.clients.push(Client {
        profile: ClientProfile {
            tenant: None,
            kind: ClientKind::Attacker,
            ip,
            forwarded_for: None,
            rtt_us: 120 * crate::MS,
            user_agent: "python-requests/2.31.0",
            accept_encoding: Some("gzip, deflate"),
            accept_language: None,
            hop_ips: if hop_ips.len() > 1 {
                hop_ips
            } else {
                Vec::new()
            },
        },
        state: ClientState::default(),
    });
    pop.clients.len() - 1
}
