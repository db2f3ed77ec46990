//! `cargo xtask gen-traffic`: days of realistic multi-tenant API traffic in a pcap.
//!
//! Three stages, all deterministic for a seed:
//! - [`Population`]: tenants with their customers, invoices and charges, and the humans
//!   and machine clients that use the API, with their credentials;
//! - [`schedule`]: every request of the run, timed (humans keep office hours on
//!   weekdays in their tenant's time zone, machine jobs run on fixed periods);
//! - [`TrafficWriter`]: plays the plan in time order, logging in when credentials are
//!   missing or stale, answering as the API would and writing both directions as the
//!   TCP segments of keep-alive connections.
//!
//! Every credential that goes on the wire is also listed in `<out>.secrets`.

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::fmt::Write as _;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD as BASE64, URL_SAFE_NO_PAD as BASE64URL};
use flate2::Compression;
use flate2::write::GzEncoder;
use hmac::{Hmac, Mac};
use sha2::Sha256;

pub mod eval;
pub mod netlab;
pub mod pcap;
pub mod scenario;

use pcap::{ACK, FIN_ACK, MSS, PSH_ACK, PcapWriter, Rng, SYN};

/// 2026-11-02 00:00:00 UTC, a Monday: the first instant of every run.
const START_UNIX_S: u64 = 1_793_577_600;

// Durations in microseconds, the unit of every time below.
const MS: u64 = 1_000;
const SECOND: u64 = 1_000_000;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;
const DAY: u64 = 24 * HOUR;

const API_SERVER: [u8; 4] = [10, 0, 0, 80];
const API_PORT: u16 = 80;
const API_HOST: &str = "api.example.com";
const APP_ORIGIN: &str = "https://app.example.com";
const JWT_KEY: &[u8] = b"tapline-demo-jwt-key";
const JWT_ISSUER: &str = "https://auth.example.com";

/// The server's keep-alive timeout: idle browser connections are closed after it.
const SERVER_KEEPALIVE: u64 = 60 * SECOND;
/// Requests the server serves on one connection before closing it.
const MAX_REQUESTS_PER_CONNECTION: u32 = 100;
/// Lifetime of a browser session cookie.
const SESSION_LIFETIME: u64 = 8 * HOUR;
/// Lifetime of every JWT.
const TOKEN_LIFETIME: u64 = HOUR;
/// Responses at least this large are compressed when the client accepts gzip.
const GZIP_MIN_LENGTH: usize = 1024;

/// Mean number of visits a human of average activity pays the API on a workday.
const VISITS_PER_WORKDAY: f64 = 1.8;
/// Weekend activity relative to a workday.
const WEEKEND_FACTOR: f64 = 0.12;
/// Share of first visits starting with a mistyped password.
const FAILED_LOGIN_RATE: f64 = 0.06;
/// Relative chance of a human visit starting at each local hour.
const VISIT_START_BY_HOUR: [f64; 24] = [
    0.02, 0.01, 0.01, 0.01, 0.01, 0.03, 0.10, 0.35, 0.80, 1.00, 1.00, 0.90, 0.55, 0.75, 0.95, 0.90,
    0.75, 0.50, 0.30, 0.20, 0.15, 0.10, 0.06, 0.03,
];
/// How often the uptime monitor checks `/health`.
const HEALTH_CHECK_PERIOD: u64 = 5 * MINUTE;

const TENANT_NAMES: [&str; 16] = [
    "acme",
    "globex",
    "initech",
    "umbrella",
    "hooli",
    "stark",
    "wayne",
    "wonka",
    "soylent",
    "tyrell",
    "cyberdyne",
    "vandelay",
    "oscorp",
    "piedpiper",
    "dunder",
    "massive",
];
/// UTC offsets (hours) tenants work in: mostly Europe, some Americas.
const TENANT_UTC_OFFSETS: [i64; 8] = [1, 1, 1, 0, 2, -5, -5, -8];
const CORPORATE_PROXIES: [[u8; 4]; 3] = [[10, 9, 0, 1], [10, 9, 0, 2], [10, 9, 0, 3]];
const FIRST_NAMES: [&str; 50] = [
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "karl",
    "laura", "mallory", "nina", "oscar", "peggy", "quentin", "rupert", "sybil", "trent", "ursula",
    "victor", "wendy", "xavier", "yuki", "zoe", "amir", "bea", "chen", "dmitri", "elena", "farah",
    "gustav", "hana", "ines", "jonas", "kofi", "lena", "mateo", "noor", "olga", "priya", "ravi",
    "sofia", "tomas", "uma", "vera", "wei", "yara", "zeynep",
];
const PASSWORD_WORDS: [&str; 16] = [
    "Maple", "Orbit", "Falcon", "River", "Copper", "Lantern", "Harbor", "Cactus", "Nimbus",
    "Velvet", "Granite", "Saffron", "Tundra", "Mosaic", "Ember", "Quartz",
];
const CUSTOMER_WORDS: [&str; 14] = [
    "Northwind",
    "Contoso",
    "Fabrikam",
    "Tailspin",
    "Litware",
    "Proseware",
    "Wingtip",
    "Lucerne",
    "Alpine",
    "Coho",
    "Blue Yonder",
    "Fourth Coffee",
    "Adatum",
    "Trey",
];
const CUSTOMER_SUFFIXES: [&str; 6] = ["Traders", "Ltd", "GmbH", "Labs", "Group", "Logistics"];
const BROWSERS: [&str; 6] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/130.0.0.0 Safari/537.36 Edg/130.0.0.0",
    "Mozilla/5.0 (X11; Linux x86_64; rv:132.0) Gecko/20100101 Firefox/132.0",
];
const ACCEPT_LANGUAGES: [&str; 5] = [
    "en-GB,en;q=0.9",
    "en-US,en;q=0.9",
    "de-DE,de;q=0.9,en;q=0.8",
    "fr-FR,fr;q=0.9,en;q=0.7",
    "nl-NL,nl;q=0.9,en;q=0.8",
];
const LOCALES: [&str; 5] = ["en-GB", "en-US", "de-DE", "fr-FR", "nl-NL"];

const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
const HEX: &[u8] = b"0123456789abcdef";

/// What `gen_traffic` wrote.
pub struct TrafficSummary {
    pub transactions: u64,
    pub connections: u64,
    pub packets: u64,
    pub bytes: u64,
    pub secrets: usize,
    pub secrets_path: PathBuf,
}

/// Writes `days` days of API traffic to `out` and the secrets it carries to
/// `<out>.secrets`; `scale` multiplies the request rates.
pub fn gen_traffic(out: &Path, seed: u64, days: u32, scale: f64) -> Result<TrafficSummary> {
    ensure!(days > 0, "--days must be at least 1");
    ensure!(scale > 0.0 && scale.is_finite(), "--scale must be positive");
    let mut population = Population::generate(&mut stream(seed, 1));
    let plan = schedule(&population, &mut stream(seed, 2), days, scale);

    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).ok();
    }
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    let pcap = PcapWriter::new(BufWriter::with_capacity(1 << 20, file))?;
    let mut writer = TrafficWriter::new(pcap, stream(seed, 3));
    for planned in &plan {
        writer.play(&mut population, planned)?;
    }
    let (summary, secrets) = writer.finish()?;

    let secrets_path = PathBuf::from(format!("{}.secrets", out.display()));
    let mut text = secrets.join("\n");
    text.push('\n');
    std::fs::write(&secrets_path, text)
        .with_context(|| format!("writing {}", secrets_path.display()))?;
    Ok(TrafficSummary {
        secrets: secrets.len(),
        secrets_path,
        ..summary
    })
}

// ---------------------------------------------------------------------------------------
// Randomness
// ---------------------------------------------------------------------------------------

/// An independent generator for one purpose, so that changing how one stage draws
/// numbers does not change the others.
fn stream(seed: u64, purpose: u64) -> Rng {
    let mut z = seed
        .wrapping_add(purpose.wrapping_mul(0x9e37_79b9_7f4a_7c15))
        .wrapping_add(0x6a09_e667_f3bc_c909);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    Rng((z ^ (z >> 31)) | 1)
}

/// The draws the generator needs beyond [`Rng::below`].
trait Draw {
    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64;
    fn chance(&mut self, p: f64) -> bool;
    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64;
    fn pick<T: Copy>(&mut self, items: &[T]) -> T;
    /// An index drawn with the given relative weights.
    fn weighted(&mut self, weights: &[f64]) -> usize;
    /// Log-uniform in `[lo, hi)`: many short values, a few long ones.
    fn log_uniform(&mut self, lo: f64, hi: f64) -> f64;
    fn poisson(&mut self, mean: f64) -> u64;
    fn chars(&mut self, n: usize, alphabet: &[u8]) -> String;
    fn shuffle<T>(&mut self, items: &mut [T]);
}

impl Draw for Rng {
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
    fn weighted(&mut self, weights: &[f64]) -> usize {
        let mut x = self.unit() * weights.iter().sum::<f64>();
        for (i, w) in weights.iter().enumerate() {
            if x < *w {
                return i;
            }
            x -= w;
        }
        weights.len() - 1
    }
    fn log_uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo * (hi / lo).powf(self.unit())
    }
    fn poisson(&mut self, mut mean: f64) -> u64 {
        let mut total = 0;
        while mean > 0.0 {
            let part = mean.min(20.0);
            mean -= part;
            let limit = (-part).exp();
            let mut p = self.unit();
            while p > limit {
                total += 1;
                p *= self.unit();
            }
        }
        total
    }
    fn chars(&mut self, n: usize, alphabet: &[u8]) -> String {
        (0..n).map(|_| char::from(self.pick(alphabet))).collect()
    }
    fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            items.swap(i, self.below(i as u64 + 1) as usize);
        }
    }
}

fn uuid_v4(rng: &mut Rng) -> String {
    let hex = rng.chars(32, HEX);
    let variant = char::from(rng.pick(b"89ab"));
    format!(
        "{}-{}-4{}-{variant}{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[13..16],
        &hex[17..20],
        &hex[20..]
    )
}

// ---------------------------------------------------------------------------------------
// Population
// ---------------------------------------------------------------------------------------

/// Every tenant and every client of the API.
struct Population {
    tenants: Vec<Tenant>,
    clients: Vec<Client>,
}

/// A customer organisation of the API with its own data.
struct Tenant {
    /// `t_acme`.
    id: String,
    /// `acme.example`, the domain of its users' emails.
    domain: String,
    utc_offset_h: i64,
    currency: &'static str,
    customers: Vec<Customer>,
    /// Charges made so far (some historical, then those the traffic creates).
    charges: Vec<Charge>,
}

struct Customer {
    id: String,
    name: String,
    email: String,
    created_unix_s: u64,
    invoices: Vec<Invoice>,
}

struct Invoice {
    id: String,
    /// The tenant's sequential invoice number (`1042`).
    number: u32,
    amount: u64,
    status: &'static str,
    /// Days after the start of the run.
    due_day: i64,
}

struct Charge {
    id: String,
    customer: usize,
    invoice: usize,
    amount: u64,
    created_unix_s: u64,
}

/// One user agent of the API with what it keeps between requests.
struct Client {
    profile: ClientProfile,
    state: ClientState,
}

/// What does not change about a client.
#[derive(Clone)]
struct ClientProfile {
    /// Index in [`Population::tenants`]; `None` for the uptime monitor.
    tenant: Option<usize>,
    kind: ClientKind,
    /// The address its connections come from (its corporate proxy's, if any).
    ip: [u8; 4],
    /// The real address a corporate proxy reports in `X-Forwarded-For`.
    forwarded_for: Option<[u8; 4]>,
    /// Round-trip time between the client (or its proxy) and the server.
    rtt_us: u64,
    user_agent: &'static str,
    accept_encoding: Option<&'static str>,
    accept_language: Option<&'static str>,
    /// A mobile client's addresses: each connection comes from the next one.
    hop_ips: Vec<[u8; 4]>,
}

#[derive(Clone)]
enum ClientKind {
    Human(Human),
    Machine(Machine),
    /// An uptime monitor polling `/health`, outside every tenant.
    Monitor,
    /// Someone outside every tenant trying other people's passwords.
    Attacker,
}

#[derive(Clone)]
struct Human {
    user_id: String,
    /// Also the login name.
    email: String,
    display_name: String,
    password: String,
    admin: bool,
    auth: HumanAuth,
    /// Logs in with an urlencoded form rather than JSON.
    form_login: bool,
    theme: &'static str,
    locale: &'static str,
    /// Relative number of visits per day.
    activity: f64,
}

#[derive(Clone, Copy, PartialEq)]
enum HumanAuth {
    /// The web app: `Set-Cookie: session=...` at login, then `Cookie`.
    SessionCookie,
    /// A single-page app keeping the JWT from the login response.
    BearerJwt,
}

#[derive(Clone)]
struct Machine {
    /// `svc_billing_acme`.
    client_id: String,
    job: Job,
    /// Time between two runs of its job.
    period: u64,
    auth: MachineAuth,
}

#[derive(Clone)]
enum MachineAuth {
    /// OAuth client credentials exchanged for a JWT at `/v1/oauth/token`.
    ClientCredentials { secret: String },
    /// `X-Api-Key: sk_live_...`.
    ApiKeyHeader(String),
    /// `?api_key=sk_live_...`.
    ApiKeyQuery(String),
    /// `Authorization: Basic base64(client_id:password)`.
    Basic { password: String, encoded: String },
}

/// The periodic work of a machine client.
#[derive(Clone, Copy, PartialEq)]
enum Job {
    /// Charges due invoices every 10 minutes.
    Billing,
    /// Mirrors the customer list into a CRM every two hours.
    CustomerSync,
    /// Exports customers' invoices every hour.
    InvoiceExport,
    /// Looks at recent charges and refunds some, every 20 minutes.
    RefundWorker,
    /// Reads the day's invoices at 02:00 local time.
    LedgerExport,
}

impl Job {
    const ALL: [Job; 5] = [
        Job::Billing,
        Job::CustomerSync,
        Job::InvoiceExport,
        Job::RefundWorker,
        Job::LedgerExport,
    ];

    fn name(self) -> &'static str {
        match self {
            Job::Billing => "billing",
            Job::CustomerSync => "crmsync",
            Job::InvoiceExport => "invoices",
            Job::RefundWorker => "refunds",
            Job::LedgerExport => "ledger",
        }
    }

    fn user_agent(self) -> &'static str {
        match self {
            Job::Billing => "billing-sync/3.2 (go-http-client/1.1)",
            Job::CustomerSync => "crm-sync/1.8 python-requests/2.32.3",
            Job::InvoiceExport => "invoice-exporter/2.4.1 okhttp/4.12.0",
            Job::RefundWorker => "refund-worker/0.9.3 node-fetch/3.3.2",
            Job::LedgerExport => "ledger-export/1.0 Java-http-client/21.0.4",
        }
    }

    fn accept_encoding(self) -> Option<&'static str> {
        match self {
            Job::Billing | Job::InvoiceExport => Some("gzip"),
            Job::CustomerSync => Some("gzip, deflate"),
            Job::RefundWorker => Some("gzip,deflate,br"),
            Job::LedgerExport => None,
        }
    }

    fn scope(self) -> &'static str {
        match self {
            Job::Billing => "charges:write customers:read invoices:read",
            Job::CustomerSync => "customers:read",
            Job::InvoiceExport => "customers:read invoices:read",
            Job::RefundWorker => "charges:read refunds:write",
            Job::LedgerExport => "invoices:read",
        }
    }

    /// The usual time between two runs (some clients run less often).
    fn period(self) -> u64 {
        match self {
            Job::Billing => 10 * MINUTE,
            Job::CustomerSync => 2 * HOUR,
            Job::InvoiceExport => HOUR,
            Job::RefundWorker => 20 * MINUTE,
            Job::LedgerExport => DAY,
        }
    }
}

/// What a client remembers between requests.
#[derive(Default)]
struct ClientState {
    conn: Option<Connection>,
    session: Option<Session>,
    token: Option<Token>,
    /// The next of [`ClientProfile::hop_ips`].
    hop: usize,
}

struct Session {
    cookie: String,
    /// The public id of the session (`ses_...`), used to log out.
    id: String,
    expires_us: u64,
}

struct Token {
    jwt: String,
    expires_us: u64,
}

impl Population {
    fn generate(rng: &mut Rng) -> Population {
        let mut names = TENANT_NAMES;
        rng.shuffle(&mut names);
        let tenant_count = rng.range(11, 13) as usize;
        let mut tenants = Vec::new();
        let mut clients = Vec::new();
        let mut used_ips = HashSet::new();
        let mut next_machine_ip = 10u8;
        for (t, name) in names[..tenant_count].iter().enumerate() {
            let tenant = Tenant::generate(rng, name);
            let proxy = rng.chance(0.25).then(|| rng.pick(&CORPORATE_PROXIES));
            let mut first_names = FIRST_NAMES;
            rng.shuffle(&mut first_names);
            for first in &first_names[..rng.range(3, 15) as usize] {
                let human = Human::generate(rng, first, &tenant);
                let own_ip = if proxy.is_some() {
                    [172, 20, t as u8, rng.range(10, 250) as u8]
                } else {
                    loop {
                        let prefix: [u8; 3] = rng.pick(&[[198, 51, 100], [203, 0, 113]]);
                        let ip = [prefix[0], prefix[1], prefix[2], rng.range(1, 254) as u8];
                        if used_ips.insert(ip) {
                            break ip;
                        }
                    }
                };
                clients.push(Client {
                    profile: ClientProfile {
                        tenant: Some(t),
                        ip: proxy.unwrap_or(own_ip),
                        forwarded_for: proxy.map(|_| own_ip),
                        rtt_us: if proxy.is_some() {
                            rng.range(8, 30) * MS
                        } else {
                            rng.range(20, 150) * MS
                        },
                        user_agent: rng.pick(&BROWSERS),
                        accept_encoding: Some("gzip, deflate, br, zstd"),
                        accept_language: Some(rng.pick(&ACCEPT_LANGUAGES)),
                        hop_ips: Vec::new(),
                        kind: ClientKind::Human(human),
                    },
                    state: ClientState::default(),
                });
            }
            let mut jobs = Job::ALL;
            rng.shuffle(&mut jobs);
            // Most tenants bill through the API; the first one always does.
            if (t == 0 || rng.chance(0.15))
                && let Some(billing) = jobs.iter().position(|j| *j == Job::Billing)
            {
                jobs.swap(0, billing);
            }
            for job in &jobs[..rng.range(1, 3) as usize] {
                let client_id = format!("svc_{}_{name}", job.name());
                let auth = match rng.weighted(&[0.5, 0.35, 0.15]) {
                    0 => MachineAuth::ClientCredentials {
                        secret: format!("cs_{}", rng.chars(40, ALNUM)),
                    },
                    1 => MachineAuth::ApiKeyHeader(format!("sk_live_{}", rng.chars(24, ALNUM))),
                    _ => MachineAuth::ApiKeyQuery(format!("sk_live_{}", rng.chars(24, ALNUM))),
                };
                next_machine_ip += 1;
                clients.push(Client {
                    profile: ClientProfile {
                        tenant: Some(t),
                        ip: [192, 0, 2, next_machine_ip],
                        forwarded_for: None,
                        rtt_us: rng.range(1, 15) * MS,
                        user_agent: job.user_agent(),
                        accept_encoding: job.accept_encoding(),
                        accept_language: None,
                        hop_ips: Vec::new(),
                        kind: ClientKind::Machine(Machine {
                            client_id,
                            job: *job,
                            period: match job {
                                Job::LedgerExport => DAY,
                                _ => job.period() * rng.pick(&[1, 1, 2, 3]),
                            },
                            auth,
                        }),
                    },
                    state: ClientState::default(),
                });
            }
            tenants.push(tenant);
        }
        // One or two legacy integrations still use HTTP Basic authentication.
        let mut machines: Vec<usize> = (0..clients.len())
            .filter(|&c| matches!(clients[c].profile.kind, ClientKind::Machine(_)))
            .collect();
        rng.shuffle(&mut machines);
        for &c in &machines[..rng.range(1, 2) as usize] {
            if let ClientKind::Machine(m) = &mut clients[c].profile.kind {
                let password = rng.chars(20, ALNUM);
                let encoded = BASE64.encode(format!("{}:{password}", m.client_id));
                m.auth = MachineAuth::Basic { password, encoded };
            }
        }
        clients.push(Client {
            profile: ClientProfile {
                tenant: None,
                kind: ClientKind::Monitor,
                ip: [192, 0, 2, 200],
                forwarded_for: None,
                rtt_us: rng.range(40, 90) * MS,
                user_agent: "Mozilla/5.0+(compatible; UptimeRobot/2.0; http://www.uptimerobot.com/)",
                accept_encoding: None,
                accept_language: None,
                hop_ips: Vec::new(),
            },
            state: ClientState::default(),
        });
        Population { tenants, clients }
    }
}

impl Tenant {
    fn generate(rng: &mut Rng, name: &str) -> Tenant {
        let utc_offset_h = rng.pick(&TENANT_UTC_OFFSETS);
        let currency = match utc_offset_h {
            0 => "gbp",
            o if o < 0 => "usd",
            _ => "eur",
        };
        let mut next_invoice = rng.range(1001, 1400) as u32;
        let customers: Vec<Customer> = (0..rng.range(30, 220))
            .map(|_| {
                let name = format!(
                    "{} {}",
                    rng.pick(&CUSTOMER_WORDS),
                    rng.pick(&CUSTOMER_SUFFIXES)
                );
                let slug = name.to_lowercase().replace(' ', "-");
                let invoices = (0..rng.range(1, 10))
                    .map(|_| {
                        next_invoice += 1;
                        Invoice {
                            id: format!("inv_{}", rng.chars(8, HEX)),
                            number: next_invoice,
                            amount: rng.range(5, 4000) * 100 + rng.below(100),
                            status: rng.pick(&["paid", "paid", "paid", "open", "open", "void"]),
                            due_day: rng.range(0, 60) as i64 - 30,
                        }
                    })
                    .collect();
                Customer {
                    id: format!("cus_{}", rng.chars(6, ALNUM)),
                    email: format!("ap@{slug}.example"),
                    name,
                    created_unix_s: START_UNIX_S - rng.range(DAY, 900 * DAY) / SECOND,
                    invoices,
                }
            })
            .collect();
        let mut tenant = Tenant {
            id: format!("t_{name}"),
            domain: format!("{name}.example"),
            utc_offset_h,
            currency,
            customers,
            charges: Vec::new(),
        };
        for _ in 0..20 {
            let created = START_UNIX_S - rng.range(HOUR, 30 * DAY) / SECOND;
            tenant.new_charge(rng, created);
        }
        tenant
    }

    /// Records a charge of a random invoice and returns its index.
    fn new_charge(&mut self, rng: &mut Rng, created_unix_s: u64) -> usize {
        let customer = rng.below(self.customers.len() as u64) as usize;
        let invoice = rng.below(self.customers[customer].invoices.len() as u64) as usize;
        self.charges.push(Charge {
            id: format!("ch_{}", uuid_v4(rng)),
            customer,
            invoice,
            amount: self.customers[customer].invoices[invoice].amount,
            created_unix_s,
        });
        self.charges.len() - 1
    }

    /// A customer, mostly one of the few everybody works with.
    fn popular_customer(&self, rng: &mut Rng) -> usize {
        let skewed = rng.unit().powi(3);
        (skewed * self.customers.len() as f64) as usize
    }

    /// A recent charge, or any one now and then.
    fn recent_charge(&self, rng: &mut Rng) -> usize {
        let n = self.charges.len() as u64;
        if rng.chance(0.8) {
            (n - 1 - rng.below(n.min(30))) as usize
        } else {
            rng.below(n) as usize
        }
    }

    fn customer_json(&self, c: usize) -> String {
        let cus = &self.customers[c];
        format!(
            r#"{{"id":"{}","object":"customer","tenant":"{}","name":"{}","email":"{}","currency":"{}","created":{},"invoice_count":{}}}"#,
            cus.id,
            self.id,
            cus.name,
            cus.email,
            self.currency,
            cus.created_unix_s,
            cus.invoices.len()
        )
    }

    fn invoice_json(&self, c: usize, i: usize) -> String {
        let cus = &self.customers[c];
        let inv = &cus.invoices[i];
        let (y, m, d) = civil_date(((START_UNIX_S / 86_400) as i64 + inv.due_day) as u64);
        format!(
            r#"{{"id":"{}","object":"invoice","tenant":"{}","customer_id":"{}","number":{},"amount":{},"currency":"{}","status":"{}","due_date":"{y}-{m:02}-{d:02}"}}"#,
            inv.id, self.id, cus.id, inv.number, inv.amount, self.currency, inv.status
        )
    }

    fn charge_json(&self, k: usize) -> String {
        let ch = &self.charges[k];
        let cus = &self.customers[ch.customer];
        format!(
            r#"{{"id":"{}","object":"charge","tenant":"{}","customer_id":"{}","invoice_id":"{}","amount":{},"currency":"{}","status":"succeeded","created":{}}}"#,
            ch.id,
            self.id,
            cus.id,
            cus.invoices[ch.invoice].id,
            ch.amount,
            self.currency,
            ch.created_unix_s
        )
    }
}

impl Human {
    fn generate(rng: &mut Rng, first_name: &str, tenant: &Tenant) -> Human {
        let mut display_name = first_name.to_string();
        display_name[..1].make_ascii_uppercase();
        display_name.push(' ');
        display_name.push(char::from(rng.pick(b"ABCDEFGHKLMNPRSTW")));
        display_name.push('.');
        let password = if rng.chance(0.5) {
            format!(
                "{}-{}-{}{}",
                rng.pick(&PASSWORD_WORDS),
                rng.pick(&PASSWORD_WORDS),
                rng.range(10, 9999),
                rng.chars(2, ALNUM)
            )
        } else {
            let length = rng.range(14, 20) as usize;
            rng.chars(length, ALNUM)
        };
        Human {
            user_id: format!("usr_{}", rng.chars(6, ALNUM)),
            email: format!("{first_name}@{}", tenant.domain),
            display_name,
            password,
            admin: rng.chance(0.3),
            auth: if rng.chance(0.3) {
                HumanAuth::BearerJwt
            } else {
                HumanAuth::SessionCookie
            },
            form_login: rng.chance(0.2),
            theme: rng.pick(&["dark", "light", "dark"]),
            locale: rng.pick(&LOCALES),
            activity: rng.log_uniform(0.4, 2.5),
        }
    }

    fn scope(&self) -> &'static str {
        if self.admin {
            "customers:read customers:write invoices:read charges:read charges:write refunds:write"
        } else {
            "customers:read invoices:read charges:read"
        }
    }

    /// The password as mistyped once.
    fn mistyped_password(&self, rng: &mut Rng) -> String {
        let mut wrong = self.password.clone();
        let last = wrong.pop().unwrap_or('x');
        loop {
            let c = char::from(rng.pick(ALNUM));
            if c != last {
                wrong.push(c);
                return wrong;
            }
        }
    }

    fn user_json(&self, tenant: &Tenant) -> String {
        format!(
            r#"{{"id":"{}","object":"user","tenant":"{}","email":"{}","name":"{}","role":"{}","locale":"{}"}}"#,
            self.user_id,
            tenant.id,
            self.email,
            self.display_name,
            if self.admin { "admin" } else { "viewer" },
            self.locale
        )
    }
}

// ---------------------------------------------------------------------------------------
// Schedule
// ---------------------------------------------------------------------------------------

/// One planned request of one client.
struct Planned {
    /// Time since the start of the run.
    at_us: u64,
    client: u32,
    action: Action,
    /// Time until the client's next planned request; `None` after its last one.
    idle_after_us: Option<u64>,
}

#[derive(Clone, Copy)]
enum Action {
    /// A human's next step in the app; what it asks for is drawn when it is written.
    Browse,
    /// A human's login with a mistyped password.
    FailedLogin,
    /// A human's explicit logout (`DELETE /v1/sessions/{id}`).
    Logout,
    /// One request of a machine job's run.
    Job(JobRequest),
    /// `GET /health` from the uptime monitor.
    HealthCheck,
    /// The same customer read again and again (a scraping script).
    Scrape,
    /// A read of another tenant's invoice that the API fails to refuse.
    Foreign,
    /// A refund by a client whose role does not allow it, which the API fails to refuse.
    Escalate,
    /// Invoice number `n` (counted from the tenant's first) of the tenant's first
    /// customer: mostly not that customer's.
    Probe(u32),
    /// A read of a guessed customer id.
    Guess,
    /// Step `n` of downloading every customer and every customer's invoices.
    Dump(u32),
    /// The monthly report page, an endpoint released during the run.
    Report,
    /// A login as user `n` of an attacker's list, with a wrong password.
    Stuff(u32),
}

#[derive(Clone, Copy)]
enum JobRequest {
    CreateCharge,
    ReadCharge,
    ListCustomers { page: u32 },
    ListCustomerInvoices,
    ReadInvoice,
    CreateRefund,
}

/// Plans every request of the run, sorted by time.
fn schedule(population: &Population, rng: &mut Rng, days: u32, scale: f64) -> Vec<Planned> {
    let end = u64::from(days) * DAY;
    let mut plan = Vec::new();
    let mut own = Vec::new();
    for (c, client) in population.clients.iter().enumerate() {
        own.clear();
        let tenant = client.profile.tenant.map(|t| &population.tenants[t]);
        match (&client.profile.kind, tenant) {
            (ClientKind::Human(human), Some(tenant)) => {
                plan_human(rng, human, tenant.utc_offset_h, days, scale, &mut own);
            }
            (ClientKind::Machine(machine), Some(tenant)) => {
                plan_machine(rng, machine, tenant, end, scale, &mut own);
            }
            _ => {
                let period = ((HEALTH_CHECK_PERIOD as f64 / scale) as u64).max(SECOND);
                let mut t = rng.below(period);
                while t < end {
                    own.push((t + rng.below(2 * SECOND), Action::HealthCheck));
                    t += period;
                }
            }
        }
        own.sort_by_key(|(at, _)| *at);
        own.retain(|(at, _)| *at < end);
        for (k, &(at_us, action)) in own.iter().enumerate() {
            plan.push(Planned {
                at_us,
                client: c as u32,
                action,
                idle_after_us: own.get(k + 1).map(|(next, _)| next - at_us),
            });
        }
    }
    plan.sort_by_key(|p| (p.at_us, p.client));
    plan
}

/// Plans a human's visits: weekdays in office hours of the tenant's time zone.
fn plan_human(
    rng: &mut Rng,
    human: &Human,
    utc_offset_h: i64,
    days: u32,
    scale: f64,
    out: &mut Vec<(u64, Action)>,
) {
    let end = i64::from(days) * DAY as i64;
    for local_day in -1..=i64::from(days) {
        // The run starts on a Monday: days 5 and 6 of each week are the weekend.
        let weekend = local_day.rem_euclid(7) >= 5;
        let factor = if weekend { WEEKEND_FACTOR } else { 1.0 };
        for _ in 0..rng.poisson(human.activity * VISITS_PER_WORKDAY * scale * factor) {
            let hour = rng.weighted(&VISIT_START_BY_HOUR) as i64;
            let local = local_day * DAY as i64 + hour * HOUR as i64 + rng.below(HOUR) as i64;
            let start = local - utc_offset_h * HOUR as i64;
            if (0..end).contains(&start) {
                plan_visit(rng, human, start as u64, out);
            }
        }
    }
}

/// Plans one visit: pages of one to three requests separated by reading time.
fn plan_visit(rng: &mut Rng, human: &Human, start: u64, out: &mut Vec<(u64, Action)>) {
    let mut t = start;
    if rng.chance(FAILED_LOGIN_RATE) {
        out.push((t, Action::FailedLogin));
        t += rng.range(4, 20) * SECOND;
    }
    for _ in 0..rng.range(2, 10) {
        for _ in 0..rng.range(1, 3) {
            out.push((t, Action::Browse));
            t += rng.range(40, 400) * MS;
        }
        t += (rng.log_uniform(2.0, 150.0) * SECOND as f64) as u64;
    }
    if human.auth == HumanAuth::SessionCookie && rng.chance(0.3) {
        out.push((t, Action::Logout));
    }
}

/// Plans a machine job's runs: fixed periods around the clock.
fn plan_machine(
    rng: &mut Rng,
    machine: &Machine,
    tenant: &Tenant,
    end: u64,
    scale: f64,
    out: &mut Vec<(u64, Action)>,
) {
    let job = machine.job;
    let (period, first) = if job == Job::LedgerExport {
        let two_am_local = (2 - tenant.utc_offset_h).rem_euclid(24) as u64 * HOUR;
        (DAY, two_am_local + rng.below(10 * MINUTE))
    } else {
        let period = ((machine.period as f64 / scale) as u64).max(SECOND);
        (period, rng.below(period))
    };
    let mut run = first;
    while run < end {
        let mut t = run + rng.below(3 * SECOND);
        let mut request = |at: &mut u64, req, rng: &mut Rng| {
            out.push((*at, Action::Job(req)));
            *at += rng.range(5, 80) * MS;
        };
        match job {
            Job::Billing => {
                request(&mut t, JobRequest::CreateCharge, rng);
                if rng.chance(0.25) {
                    request(&mut t, JobRequest::CreateCharge, rng);
                }
                if rng.chance(0.2) {
                    request(&mut t, JobRequest::ReadCharge, rng);
                }
            }
            Job::CustomerSync => {
                for page in 0..tenant.customers.len().div_ceil(100) {
                    request(&mut t, JobRequest::ListCustomers { page: page as u32 }, rng);
                }
            }
            Job::InvoiceExport => {
                for _ in 0..rng.range(1, 4) {
                    request(&mut t, JobRequest::ListCustomerInvoices, rng);
                }
            }
            Job::RefundWorker => {
                request(&mut t, JobRequest::ReadCharge, rng);
                if rng.chance(0.3) {
                    request(&mut t, JobRequest::CreateRefund, rng);
                }
            }
            Job::LedgerExport => {
                for _ in 0..rng.range(30, 80) {
                    request(&mut t, JobRequest::ReadInvoice, rng);
                }
            }
        }
        run += period;
    }
}

// ---------------------------------------------------------------------------------------
// The API: requests and their answers
// ---------------------------------------------------------------------------------------

/// One HTTP request and the API's answer, before credentials and framing are added.
#[derive(Clone)]
struct Exchange {
    method: &'static str,
    /// Path and query.
    target: String,
    /// Request headers of this call (`If-None-Match`, `Idempotency-Key`, ...).
    headers: Vec<(&'static str, String)>,
    /// Content type and text of the request body.
    body: Option<(&'static str, String)>,
    /// Whether the client's credentials go with it (not for logins and health checks).
    authenticated: bool,
    status: u16,
    /// Response headers of this call (`Set-Cookie`, `ETag`, `Location`, ...).
    response_headers: Vec<(&'static str, String)>,
    response_body: String,
    /// A list, which the server may stream (chunked).
    is_list: bool,
    /// Work beyond the usual, such as hashing a password.
    extra_server_us: u64,
}

impl Exchange {
    fn new(method: &'static str, target: impl Into<String>) -> Exchange {
        Exchange {
            method,
            target: target.into(),
            headers: Vec::new(),
            body: None,
            authenticated: true,
            status: 200,
            response_headers: Vec::new(),
            response_body: String::new(),
            is_list: false,
            extra_server_us: 0,
        }
    }

    fn json_body(mut self, json: String) -> Exchange {
        self.body = Some(("application/json", json));
        self
    }

    fn answer(mut self, status: u16, body: String) -> Exchange {
        self.status = status;
        self.response_body = body;
        self
    }

    fn list(mut self) -> Exchange {
        self.is_list = true;
        self
    }

    /// The same request refused: bad credentials, missing scope, rate limit, ...
    fn refused(mut self, status: u16, error: &str, message: &str) -> Exchange {
        self.response_headers.clear();
        self.is_list = false;
        self.answer(
            status,
            format!(r#"{{"error":"{error}","message":"{message}"}}"#),
        )
    }

    /// Makes an entity read conditional, as browsers do for what they have cached.
    fn not_modified(mut self) -> Exchange {
        self.headers
            .push(("If-None-Match", etag(&self.response_body)));
        self.answer(304, String::new())
    }

    /// An entity read, with its validator.
    fn entity(mut self, json: String) -> Exchange {
        self.response_headers.push(("ETag", etag(&json)));
        self.answer(200, json)
    }
}

fn etag(body: &str) -> String {
    let hash = body.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("W/\"{hash:016x}\"")
}

fn list_json(url: &str, items: impl Iterator<Item = String>, has_more: bool) -> String {
    let data: Vec<String> = items.collect();
    format!(
        r#"{{"object":"list","url":"{url}","has_more":{has_more},"data":[{}]}}"#,
        data.join(",")
    )
}

fn list_customers(tenant: &Tenant, limit: usize, after: Option<usize>) -> Exchange {
    let from = after.map_or(0, |a| a + 1).min(tenant.customers.len());
    let to = (from + limit).min(tenant.customers.len());
    let mut target = format!("/v1/customers?limit={limit}");
    if let Some(a) = after {
        let _ = write!(target, "&starting_after={}", tenant.customers[a].id);
    }
    let body = list_json(
        "/v1/customers",
        (from..to).map(|c| tenant.customer_json(c)),
        to < tenant.customers.len(),
    );
    Exchange::new("GET", target).list().answer(200, body)
}

fn get_customer(tenant: &Tenant, c: usize) -> Exchange {
    Exchange::new("GET", format!("/v1/customers/{}", tenant.customers[c].id))
        .entity(tenant.customer_json(c))
}

fn customer_invoices(tenant: &Tenant, c: usize) -> Exchange {
    let cus = &tenant.customers[c];
    let url = format!("/v1/customers/{}/invoices", cus.id);
    let body = list_json(
        &url,
        (0..cus.invoices.len()).map(|i| tenant.invoice_json(c, i)),
        false,
    );
    Exchange::new("GET", url).list().answer(200, body)
}

fn customer_invoice(tenant: &Tenant, c: usize, i: usize) -> Exchange {
    let cus = &tenant.customers[c];
    Exchange::new(
        "GET",
        format!(
            "/v1/customers/{}/invoices/{}",
            cus.id, cus.invoices[i].number
        ),
    )
    .entity(tenant.invoice_json(c, i))
}

fn get_invoice(tenant: &Tenant, c: usize, i: usize) -> Exchange {
    Exchange::new(
        "GET",
        format!("/v1/invoices/{}", tenant.customers[c].invoices[i].id),
    )
    .entity(tenant.invoice_json(c, i))
}

fn get_charge(tenant: &Tenant, k: usize) -> Exchange {
    Exchange::new("GET", format!("/v1/charges/{}", tenant.charges[k].id))
        .entity(tenant.charge_json(k))
}

/// A read of something that does not exist (a stale link, a typo).
fn not_found(rng: &mut Rng) -> Exchange {
    let (target, what) = match rng.below(3) {
        0 => {
            let id = format!("cus_{}", rng.chars(6, ALNUM));
            (
                format!("/v1/customers/{id}"),
                format!("No such customer: {id}"),
            )
        }
        1 => {
            let id = format!("inv_{}", rng.chars(8, HEX));
            (
                format!("/v1/invoices/{id}"),
                format!("No such invoice: {id}"),
            )
        }
        _ => {
            let id = format!("ch_{}", uuid_v4(rng));
            (format!("/v1/charges/{id}"), format!("No such charge: {id}"))
        }
    };
    Exchange::new("GET", target).refused(404, "resource_missing", &what)
}

fn create_charge(rng: &mut Rng, tenant: &mut Tenant, now_us: u64) -> Exchange {
    let k = tenant.new_charge(rng, START_UNIX_S + now_us / SECOND);
    let ch = &tenant.charges[k];
    let cus = &tenant.customers[ch.customer];
    let body = format!(
        r#"{{"customer_id":"{}","invoice_id":"{}","amount":{},"currency":"{}","description":"Invoice {}"}}"#,
        cus.id,
        cus.invoices[ch.invoice].id,
        ch.amount,
        tenant.currency,
        cus.invoices[ch.invoice].number
    );
    let mut ex = Exchange::new("POST", "/v1/charges")
        .json_body(body)
        .answer(201, tenant.charge_json(k));
    ex.headers.push(("Idempotency-Key", uuid_v4(rng)));
    ex.response_headers
        .push(("Location", format!("/v1/charges/{}", ch.id)));
    ex
}

fn create_refund(rng: &mut Rng, tenant: &Tenant, k: usize) -> Exchange {
    let ch = &tenant.charges[k];
    let amount = if rng.chance(0.6) {
        ch.amount
    } else {
        ch.amount / 2
    };
    let reason = rng.pick(&["requested_by_customer", "duplicate", "fraudulent"]);
    let body = format!(
        r#"{{"charge_id":"{}","amount":{amount},"reason":"{reason}"}}"#,
        ch.id
    );
    let answer = format!(
        r#"{{"id":"re_{}","object":"refund","tenant":"{}","charge_id":"{}","customer_id":"{}","amount":{amount},"currency":"{}","status":"pending"}}"#,
        rng.chars(14, ALNUM),
        tenant.id,
        ch.id,
        tenant.customers[ch.customer].id,
        tenant.currency
    );
    Exchange::new("POST", "/v1/refunds")
        .json_body(body)
        .answer(201, answer)
}

fn users_me(tenant: &Tenant, human: &Human) -> Exchange {
    Exchange::new("GET", "/v1/users/me").entity(human.user_json(tenant))
}

fn patch_user(rng: &mut Rng, tenant: &Tenant, human: &Human) -> Exchange {
    let body = match rng.below(3) {
        0 => format!(r#"{{"locale":"{}"}}"#, human.locale),
        1 => format!(r#"{{"name":"{}"}}"#, human.display_name),
        _ => format!(r#"{{"preferences":{{"theme":"{}"}}}}"#, human.theme),
    };
    Exchange::new("PATCH", format!("/v1/users/{}", human.user_id))
        .json_body(body)
        .answer(200, human.user_json(tenant))
}

/// Chooses what a human asks for next while browsing.
fn browse(rng: &mut Rng, tenants: &mut [Tenant], t: usize, human: &Human, now_us: u64) -> Exchange {
    /// Relative frequencies of the app's requests, in the order of the match below.
    const WEIGHTS: [f64; 12] = [
        16.0, 20.0, 13.0, 8.0, 13.0, 6.0, 8.0, 1.5, 2.5, 1.5, 1.2, 0.4,
    ];
    let choice = rng.weighted(&WEIGHTS);
    if choice == 11 {
        // Someone pasting another tenant's customer id: the API must refuse it.
        let other = (t + 1 + rng.below(tenants.len() as u64 - 1) as usize) % tenants.len();
        let c = tenants[other].popular_customer(rng);
        let id = &tenants[other].customers[c].id;
        return Exchange::new("GET", format!("/v1/customers/{id}")).refused(
            403,
            "forbidden",
            "This resource belongs to another tenant",
        );
    }
    let tenant = &mut tenants[t];
    let c = tenant.popular_customer(rng);
    let i = rng.below(tenant.customers[c].invoices.len() as u64) as usize;
    let ex = match choice {
        0 => {
            let after = rng
                .chance(0.3)
                .then(|| 19 + 20 * rng.below(3) as usize)
                .filter(|&a| a < tenant.customers.len());
            list_customers(tenant, 20, after)
        }
        1 => get_customer(tenant, c),
        2 => customer_invoices(tenant, c),
        3 => customer_invoice(tenant, c, i),
        4 => get_invoice(tenant, c, i),
        5 => get_charge(tenant, tenant.recent_charge(rng)),
        6 => users_me(tenant, human),
        7 => patch_user(rng, tenant, human),
        8 if human.admin => create_charge(rng, tenant, now_us),
        // The app hides what viewers may not do; now and then one tries anyway.
        8 | 9 if !human.admin && rng.chance(0.7) => get_customer(tenant, c),
        8 => Exchange::new("POST", "/v1/charges")
            .json_body(format!(
                r#"{{"customer_id":"{}","amount":{},"currency":"{}"}}"#,
                tenant.customers[c].id, tenant.customers[c].invoices[i].amount, tenant.currency
            ))
            .refused(403, "insufficient_scope", "Requires scope charges:write"),
        9 => {
            let k = tenant.recent_charge(rng);
            let refund = create_refund(rng, tenant, k);
            if human.admin {
                refund
            } else {
                refund.refused(403, "insufficient_scope", "Requires scope refunds:write")
            }
        }
        _ => not_found(rng),
    };
    // Browsers revalidate what they have cached.
    if ex.status == 200 && !ex.is_list && ex.method == "GET" && rng.chance(0.25) {
        ex.not_modified()
    } else {
        ex
    }
}

/// Builds a machine job's request.
fn job_request(rng: &mut Rng, tenant: &mut Tenant, req: JobRequest, now_us: u64) -> Exchange {
    match req {
        JobRequest::CreateCharge => create_charge(rng, tenant, now_us),
        JobRequest::ReadCharge => get_charge(tenant, tenant.recent_charge(rng)),
        JobRequest::ListCustomers { page } => {
            let after = (page > 0).then(|| page as usize * 100 - 1);
            list_customers(tenant, 100, after)
        }
        JobRequest::ListCustomerInvoices => {
            let c = rng.below(tenant.customers.len() as u64) as usize;
            customer_invoices(tenant, c)
        }
        JobRequest::ReadInvoice => {
            let c = rng.below(tenant.customers.len() as u64) as usize;
            let i = rng.below(tenant.customers[c].invoices.len() as u64) as usize;
            get_invoice(tenant, c, i)
        }
        JobRequest::CreateRefund => {
            let k = tenant.recent_charge(rng);
            create_refund(rng, tenant, k)
        }
    }
}

/// The calls of the labelled scenarios ([`scenario`]); `None` for ordinary actions.
fn special_call(
    rng: &mut Rng,
    tenants: &mut [Tenant],
    t: usize,
    action: Action,
    now_us: u64,
) -> Option<Exchange> {
    let n = tenants.len();
    let tenant = &mut tenants[t];
    Some(match action {
        Action::Scrape => {
            let c = tenant.popular_customer(rng);
            get_customer(tenant, c)
        }
        Action::Foreign => {
            let other = &tenants[(t + 1) % n];
            let c = other.popular_customer(rng);
            let i = rng.below(other.customers[c].invoices.len() as u64) as usize;
            get_invoice(other, c, i)
        }
        Action::Escalate => {
            let k = tenant.recent_charge(rng);
            create_refund(rng, tenant, k)
        }
        Action::Probe(k) => {
            let first = tenant.customers[0].invoices[0].number;
            let number = first + k;
            let cus = &tenant.customers[0];
            match cus.invoices.iter().position(|inv| inv.number == number) {
                Some(i) => customer_invoice(tenant, 0, i),
                None => Exchange::new("GET", format!("/v1/customers/{}/invoices/{number}", cus.id))
                    .refused(
                        404,
                        "resource_missing",
                        &format!("No such invoice: {number}"),
                    ),
            }
        }
        Action::Guess => {
            let id = format!("cus_{}", rng.chars(6, ALNUM));
            Exchange::new("GET", format!("/v1/customers/{id}")).refused(
                404,
                "resource_missing",
                &format!("No such customer: {id}"),
            )
        }
        Action::Dump(k) => {
            let pages = tenant.customers.len().div_ceil(100) as u32;
            if k < pages {
                list_customers(tenant, 100, (k > 0).then(|| k as usize * 100 - 1))
            } else {
                customer_invoices(tenant, (k - pages) as usize % tenant.customers.len())
            }
        }
        Action::Report => {
            let month: u64 = tenant.charges.iter().map(|c| c.amount).sum();
            let body = format!(
                r#"{{"object":"report","tenant":"{}","period":"{}","charges":{},"amount":{month},"currency":"{}"}}"#,
                tenant.id,
                &http_date(now_us)[8..16],
                tenant.charges.len(),
                tenant.currency
            );
            Exchange::new("GET", "/v1/reports/summary").entity(body)
        }
        _ => return None,
    })
}

/// A login attempt from an attacker's list of user names: a real user's now and then,
/// mostly made-up ones, always with a wrong password.
fn stuffing_login(rng: &mut Rng, tenants: &[Tenant], n: u32) -> Exchange {
    let tenant = &tenants[n as usize % tenants.len()];
    let first = FIRST_NAMES[(n as usize / tenants.len()) % FIRST_NAMES.len()];
    let user = format!("{first}.{}@{}", n % 97, tenant.domain);
    let password = format!("{}{}", rng.pick(&PASSWORD_WORDS), rng.range(1, 9999));
    let mut ex = Exchange::new("POST", "/v1/auth/login");
    ex.authenticated = false;
    ex.extra_server_us = rng.range(60, 180) * MS;
    ex.body = Some((
        "application/json",
        format!(r#"{{"username":"{user}","password":"{password}"}}"#),
    ));
    ex.response_headers
        .push(("Cache-Control", "no-store".to_string()));
    ex.refused(401, "invalid_credentials", "Invalid username or password")
}

/// A login, with the password right or mistyped. A successful one returns the session
/// or token it issues.
fn login(
    rng: &mut Rng,
    tenant: &Tenant,
    human: &Human,
    password: &str,
    now_us: u64,
) -> (Exchange, Option<Session>, Option<Token>) {
    let mut ex = Exchange::new("POST", "/v1/auth/login");
    ex.authenticated = false;
    ex.extra_server_us = rng.range(60, 180) * MS;
    ex.body = Some(if human.form_login {
        (
            "application/x-www-form-urlencoded",
            format!(
                "username={}&password={password}",
                human.email.replace('@', "%40")
            ),
        )
    } else {
        (
            "application/json",
            format!(
                r#"{{"username":"{}","password":"{password}"}}"#,
                human.email
            ),
        )
    });
    ex.response_headers
        .push(("Cache-Control", "no-store".to_string()));
    if password != human.password {
        let ex = ex.refused(401, "invalid_credentials", "Invalid username or password");
        return (ex, None, None);
    }
    match human.auth {
        HumanAuth::SessionCookie => {
            let session = Session {
                cookie: rng.chars(32, ALNUM),
                id: format!("ses_{}", rng.chars(12, HEX)),
                expires_us: now_us + SESSION_LIFETIME,
            };
            ex.response_headers.push((
                "Set-Cookie",
                format!("session={}; Path=/; HttpOnly; SameSite=Lax", session.cookie),
            ));
            let body = format!(
                r#"{{"user_id":"{}","tenant":"{}","session_id":"{}","expires_in":{}}}"#,
                human.user_id,
                tenant.id,
                session.id,
                SESSION_LIFETIME / SECOND
            );
            (ex.answer(200, body), Some(session), None)
        }
        HumanAuth::BearerJwt => {
            let token = issue_token(rng, &human.user_id, &tenant.id, human.scope(), None, now_us);
            let body = format!(
                r#"{{"access_token":"{}","token_type":"Bearer","expires_in":{},"user_id":"{}","tenant":"{}"}}"#,
                token.jwt,
                TOKEN_LIFETIME / SECOND,
                human.user_id,
                tenant.id
            );
            (ex.answer(200, body), None, Some(token))
        }
    }
}

fn logout(session: &Session) -> Exchange {
    let mut ex = Exchange::new("DELETE", format!("/v1/sessions/{}", session.id));
    ex.response_headers.push((
        "Set-Cookie",
        "session=; Path=/; Max-Age=0; HttpOnly".to_string(),
    ));
    ex.answer(204, String::new())
}

/// The OAuth client-credentials grant of a machine client.
fn oauth_token(
    rng: &mut Rng,
    tenant: &Tenant,
    machine: &Machine,
    secret: &str,
    now_us: u64,
) -> (Exchange, Token) {
    let scope = machine.job.scope();
    let token = issue_token(
        rng,
        &machine.client_id,
        &tenant.id,
        scope,
        Some(&machine.client_id),
        now_us,
    );
    let mut ex = Exchange::new("POST", "/v1/oauth/token");
    ex.authenticated = false;
    ex.body = Some((
        "application/x-www-form-urlencoded",
        format!(
            "grant_type=client_credentials&client_id={}&client_secret={secret}&scope={}",
            machine.client_id,
            scope.replace(':', "%3A").replace(' ', "+")
        ),
    ));
    ex.response_headers
        .push(("Cache-Control", "no-store".to_string()));
    let body = format!(
        r#"{{"access_token":"{}","token_type":"Bearer","expires_in":{},"scope":"{scope}"}}"#,
        token.jwt,
        TOKEN_LIFETIME / SECOND
    );
    (ex.answer(200, body), token)
}

/// Signs a JWT (HS256 with [`JWT_KEY`]) issued now.
fn issue_token(
    rng: &mut Rng,
    subject: &str,
    tenant: &str,
    scope: &str,
    client_id: Option<&str>,
    now_us: u64,
) -> Token {
    let iat = START_UNIX_S + now_us / SECOND;
    let exp = iat + TOKEN_LIFETIME / SECOND;
    let client = client_id
        .map(|id| format!(r#","client_id":"{id}""#))
        .unwrap_or_default();
    let claims = format!(
        r#"{{"iss":"{JWT_ISSUER}","sub":"{subject}","aud":"https://{API_HOST}","tenant":"{tenant}","scope":"{scope}"{client},"iat":{iat},"exp":{exp},"jti":"{}"}}"#,
        rng.chars(16, HEX)
    );
    let signing_input = format!(
        "{}.{}",
        BASE64URL.encode(r#"{"alg":"HS256","typ":"JWT"}"#),
        BASE64URL.encode(claims)
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(JWT_KEY).expect("HMAC takes keys of any size");
    mac.update(signing_input.as_bytes());
    let signature = BASE64URL.encode(mac.finalize().into_bytes());
    Token {
        jwt: format!("{signing_input}.{signature}"),
        expires_us: now_us + TOKEN_LIFETIME,
    }
}

/// The credential a request carries.
enum Credential<'a> {
    None,
    SessionCookie { session: &'a str, theme: &'a str },
    Bearer(&'a str),
    ApiKeyHeader(&'a str),
    ApiKeyQuery(&'a str),
    Basic(&'a str),
}

/// What the client presents with an authenticated request, as it stands now.
fn credential<'a>(profile: &'a ClientProfile, state: &'a ClientState) -> Credential<'a> {
    match &profile.kind {
        ClientKind::Human(human) => match (&state.session, &state.token) {
            (Some(s), _) => Credential::SessionCookie {
                session: &s.cookie,
                theme: human.theme,
            },
            (_, Some(t)) => Credential::Bearer(&t.jwt),
            _ => Credential::None,
        },
        ClientKind::Machine(machine) => match &machine.auth {
            MachineAuth::ClientCredentials { .. } => state
                .token
                .as_ref()
                .map_or(Credential::None, |t| Credential::Bearer(&t.jwt)),
            MachineAuth::ApiKeyHeader(key) => Credential::ApiKeyHeader(key),
            MachineAuth::ApiKeyQuery(key) => Credential::ApiKeyQuery(key),
            MachineAuth::Basic { encoded, .. } => Credential::Basic(encoded),
        },
        ClientKind::Monitor | ClientKind::Attacker => Credential::None,
    }
}

/// The page of the web app a request is made from.
fn referer(target: &str) -> String {
    let page = target
        .trim_start_matches("/v1/")
        .split(['/', '?'])
        .next()
        .unwrap_or("");
    match page {
        "users" | "sessions" | "auth" => format!("{APP_ORIGIN}/settings"),
        _ => format!("{APP_ORIGIN}/{page}"),
    }
}

fn render_request(ex: &Exchange, profile: &ClientProfile, credential: &Credential) -> Vec<u8> {
    let mut target = ex.target.clone();
    if let Credential::ApiKeyQuery(key) = credential {
        target.push(if target.contains('?') { '&' } else { '?' });
        target.push_str("api_key=");
        target.push_str(key);
    }
    let mut h = String::with_capacity(1024);
    let _ = write!(h, "{} {target} HTTP/1.1\r\nHost: {API_HOST}\r\n", ex.method);
    let browser = matches!(profile.kind, ClientKind::Human(_));
    if browser {
        h.push_str("Connection: keep-alive\r\n");
    }
    if let Some((_, body)) = &ex.body {
        let _ = write!(h, "Content-Length: {}\r\n", body.len());
    }
    h.push_str(if browser {
        "Accept: application/json, text/plain, */*\r\n"
    } else {
        "Accept: application/json\r\n"
    });
    match credential {
        Credential::Bearer(jwt) => {
            let _ = write!(h, "Authorization: Bearer {jwt}\r\n");
        }
        Credential::Basic(encoded) => {
            let _ = write!(h, "Authorization: Basic {encoded}\r\n");
        }
        Credential::ApiKeyHeader(key) => {
            let _ = write!(h, "X-Api-Key: {key}\r\n");
        }
        _ => {}
    }
    let _ = write!(h, "User-Agent: {}\r\n", profile.user_agent);
    if let Some((content_type, _)) = &ex.body {
        let _ = write!(h, "Content-Type: {content_type}\r\n");
    }
    if browser {
        if ex.method != "GET" {
            let _ = write!(h, "Origin: {APP_ORIGIN}\r\n");
        }
        let _ = write!(h, "Referer: {}\r\n", referer(&ex.target));
    }
    if let Some(encodings) = profile.accept_encoding {
        let _ = write!(h, "Accept-Encoding: {encodings}\r\n");
    }
    if let Some(languages) = profile.accept_language {
        let _ = write!(h, "Accept-Language: {languages}\r\n");
    }
    match (credential, &profile.kind) {
        (Credential::SessionCookie { session, theme }, _) => {
            let _ = write!(h, "Cookie: session={session}; theme={theme}\r\n");
        }
        (Credential::None, ClientKind::Human(human)) if human.auth == HumanAuth::SessionCookie => {
            let _ = write!(h, "Cookie: theme={}\r\n", human.theme);
        }
        _ => {}
    }
    for (name, value) in &ex.headers {
        let _ = write!(h, "{name}: {value}\r\n");
    }
    if let Some(ip) = profile.forwarded_for {
        let [a, b, c, d] = ip;
        let _ = write!(
            h,
            "Via: 1.1 proxy.corp.example\r\nX-Forwarded-For: {a}.{b}.{c}.{d}\r\n"
        );
    }
    h.push_str("\r\n");
    if let Some((_, body)) = &ex.body {
        h.push_str(body);
    }
    h.into_bytes()
}

fn reason_phrase(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        304 => "Not Modified",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        _ => "Unknown",
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(data.len() / 3), Compression::new(5));
    encoder
        .write_all(data)
        .and_then(|()| encoder.finish())
        .expect("writing to memory does not fail")
}

/// The response on the wire: head, then the body compressed and chunked or not.
fn render_response(
    rng: &mut Rng,
    ex: &Exchange,
    profile: &ClientProfile,
    now_us: u64,
    closing: bool,
) -> Vec<u8> {
    let mut h = String::with_capacity(512);
    let _ = write!(
        h,
        "HTTP/1.1 {} {}\r\nServer: nginx\r\nDate: {}\r\n",
        ex.status,
        reason_phrase(ex.status),
        http_date(now_us)
    );
    let has_body = !matches!(ex.status, 204 | 304);
    if has_body {
        h.push_str("Content-Type: application/json; charset=utf-8\r\n");
    }
    h.push_str(if closing {
        "Connection: close\r\n"
    } else {
        "Connection: keep-alive\r\n"
    });
    for (name, value) in &ex.response_headers {
        let _ = write!(h, "{name}: {value}\r\n");
    }
    if ex.status == 401
        && ex.authenticated
        && let ClientKind::Human(human) = &profile.kind
        && human.auth == HumanAuth::BearerJwt
    {
        h.push_str("WWW-Authenticate: Bearer realm=\"api\", error=\"invalid_token\"\r\n");
    }
    if ex.status == 429 {
        let _ = write!(h, "Retry-After: {}\r\n", rng.range(1, 60));
    }
    if ex.authenticated && matches!(profile.kind, ClientKind::Machine(_)) {
        let _ = write!(
            h,
            "X-RateLimit-Limit: 600\r\nX-RateLimit-Remaining: {}\r\n",
            if ex.status == 429 {
                0
            } else {
                rng.range(1, 599)
            }
        );
    }
    let _ = write!(h, "X-Request-Id: req_{}\r\n", rng.chars(16, HEX));
    if !has_body {
        h.push_str("\r\n");
        return h.into_bytes();
    }
    let accepts_gzip = profile.accept_encoding.is_some_and(|e| e.contains("gzip"));
    let compressed = accepts_gzip && ex.response_body.len() >= GZIP_MIN_LENGTH;
    let body = if compressed {
        h.push_str("Content-Encoding: gzip\r\n");
        gzip(ex.response_body.as_bytes())
    } else {
        ex.response_body.clone().into_bytes()
    };
    if accepts_gzip {
        h.push_str("Vary: Accept-Encoding\r\n");
    }
    let chunked = (ex.is_list && rng.chance(0.6)) || (compressed && rng.chance(0.5));
    let mut out = Vec::with_capacity(h.len() + body.len() + 64);
    if chunked {
        h.push_str("Transfer-Encoding: chunked\r\n\r\n");
        out.extend_from_slice(h.as_bytes());
        let chunk_size = rng.pick(&[1024, 2048, 4096, 8192]);
        for chunk in body.chunks(chunk_size) {
            let _ = write!(out, "{:x}\r\n", chunk.len());
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"0\r\n\r\n");
    } else {
        let _ = write!(h, "Content-Length: {}\r\n\r\n", body.len());
        out.extend_from_slice(h.as_bytes());
        out.extend_from_slice(&body);
    }
    out
}

/// `Mon, 02 Nov 2026 09:14:03 GMT` for a time of the run.
fn http_date(now_us: u64) -> String {
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let secs = START_UNIX_S + now_us / SECOND;
    let days = secs / 86_400;
    let (y, m, d) = civil_date(days);
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[(days % 7) as usize],
        MONTHS[m as usize - 1],
        secs / 3600 % 24,
        secs / 60 % 60,
        secs % 60
    )
}

/// Year, month and day of a day counted from 1970-01-01 (H. Hinnant's algorithm).
fn civil_date(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + u64::from(m <= 2), m, d)
}

// ---------------------------------------------------------------------------------------
// The wire: TCP connections and the capture
// ---------------------------------------------------------------------------------------

/// One captured frame, waiting for its turn.
struct Packet {
    ts_us: u64,
    /// Order of creation, which keeps the frames of a connection in order on ties.
    order: u64,
    from_client: bool,
    client_ip: [u8; 4],
    client_port: u16,
    seq: u32,
    ack: u32,
    flags: u8,
    payload: Vec<u8>,
}

impl PartialEq for Packet {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Packet {}
impl PartialOrd for Packet {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Packet {
    /// Reversed, so that the max-heap yields the earliest packet.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.ts_us, other.order).cmp(&(self.ts_us, self.order))
    }
}

/// Packets of overlapping connections, released to the capture in time order.
struct PacketQueue {
    heap: BinaryHeap<Packet>,
    created: u64,
}

impl PacketQueue {
    /// Writes every packet earlier than `ts_us`: nothing added later can precede them.
    fn release_before<W: Write>(&mut self, ts_us: u64, pcap: &mut PcapWriter<W>) -> Result<()> {
        while let Some(p) = self.heap.peek()
            && p.ts_us < ts_us
        {
            let p = self.heap.pop().expect("peeked");
            let (src, dst, sport, dport) = if p.from_client {
                (p.client_ip, API_SERVER, p.client_port, API_PORT)
            } else {
                (API_SERVER, p.client_ip, API_PORT, p.client_port)
            };
            pcap.tcp(
                START_UNIX_S * SECOND + p.ts_us,
                src,
                dst,
                sport,
                dport,
                p.seq,
                p.ack,
                p.flags,
                &p.payload,
            )?;
        }
        Ok(())
    }
}

/// A TCP connection between a client and the API server, seen at the server.
struct Connection {
    client_ip: [u8; 4],
    client_port: u16,
    /// Next sequence number of each side.
    client_seq: u32,
    server_seq: u32,
    rtt_us: u64,
    /// Time of its latest packet: whatever comes next goes after it.
    last_us: u64,
    /// Requests answered so far.
    requests: u32,
    /// Segments the server sends before waiting for acknowledgements.
    cwnd: usize,
}

/// Gap between back-to-back segments.
const SEGMENT_GAP_US: u64 = 12;

impl Connection {
    /// Captures the three-way handshake starting at `at_us`.
    fn open(
        queue: &mut PacketQueue,
        rng: &mut Rng,
        client_ip: [u8; 4],
        client_port: u16,
        rtt_us: u64,
        at_us: u64,
    ) -> Connection {
        let mut conn = Connection {
            client_ip,
            client_port,
            client_seq: rng.next_u64() as u32,
            server_seq: rng.next_u64() as u32,
            rtt_us,
            last_us: at_us,
            requests: 0,
            cwnd: 10,
        };
        let server_isn = conn.server_seq;
        conn.server_seq = 0;
        conn.client_sends(queue, at_us, SYN, &[]);
        conn.client_seq = conn.client_seq.wrapping_add(1);
        conn.server_seq = server_isn;
        conn.server_sends(queue, at_us + 30, SYN | ACK, &[]);
        conn.server_seq = conn.server_seq.wrapping_add(1);
        conn.client_sends(queue, at_us + 30 + rtt_us, ACK, &[]);
        conn
    }

    fn client_sends(&mut self, queue: &mut PacketQueue, ts_us: u64, flags: u8, payload: &[u8]) {
        self.push(queue, true, ts_us, flags, payload);
        self.client_seq = self.client_seq.wrapping_add(payload.len() as u32);
    }

    fn server_sends(&mut self, queue: &mut PacketQueue, ts_us: u64, flags: u8, payload: &[u8]) {
        self.push(queue, false, ts_us, flags, payload);
        self.server_seq = self.server_seq.wrapping_add(payload.len() as u32);
    }

    fn push(
        &mut self,
        queue: &mut PacketQueue,
        from_client: bool,
        ts_us: u64,
        flags: u8,
        payload: &[u8],
    ) {
        let (seq, ack) = if from_client {
            (self.client_seq, self.server_seq)
        } else {
            (self.server_seq, self.client_seq)
        };
        queue.created += 1;
        queue.heap.push(Packet {
            ts_us,
            order: queue.created,
            from_client,
            client_ip: self.client_ip,
            client_port: self.client_port,
            seq,
            ack,
            flags,
            payload: payload.to_vec(),
        });
        self.last_us = self.last_us.max(ts_us);
    }

    /// Captures a request sent at `at_us`, answered after `server_us`: segments of at most
    /// [`MSS`] bytes, the response in flights growing as TCP's congestion window does, and
    /// acknowledgements of every second segment.
    fn exchange(
        &mut self,
        queue: &mut PacketQueue,
        at_us: u64,
        request: &[u8],
        server_us: u64,
        response: &[u8],
    ) {
        let mut t = at_us.max(self.last_us + 1);
        let segments = request.len().div_ceil(MSS);
        for (i, segment) in request.chunks(MSS).enumerate() {
            let last = i + 1 == segments;
            self.client_sends(queue, t, if last { PSH_ACK } else { ACK }, segment);
            if i % 2 == 1 && !last {
                self.server_sends(queue, t + 20, ACK, &[]);
            }
            t += SEGMENT_GAP_US;
        }
        if server_us > 40 * MS {
            // Delayed acknowledgement of the request while the server works.
            self.server_sends(queue, t + 40 * MS, ACK, &[]);
        }
        t += server_us;
        let segments: Vec<&[u8]> = response.chunks(MSS).collect();
        let mut sent = 0;
        while sent < segments.len() {
            let flight_start = t;
            let flight = self.cwnd.min(segments.len() - sent);
            for k in 0..flight {
                let last = sent + k + 1 == segments.len();
                self.server_sends(
                    queue,
                    t,
                    if last { PSH_ACK } else { ACK },
                    segments[sent + k],
                );
                if k % 2 == 1 || last {
                    self.client_sends(queue, t + self.rtt_us, ACK, &[]);
                }
                t += SEGMENT_GAP_US;
            }
            sent += flight;
            self.cwnd = (self.cwnd * 2).min(64);
            t = t.max(flight_start + self.rtt_us + SEGMENT_GAP_US);
        }
        self.requests += 1;
    }

    /// Captures the close begun by the server (idle or request limit) at `at_us`.
    fn close_by_server(mut self, queue: &mut PacketQueue, at_us: u64) {
        let at = at_us.max(self.last_us + 1);
        self.server_sends(queue, at, FIN_ACK, &[]);
        self.server_seq = self.server_seq.wrapping_add(1);
        self.client_sends(queue, at + self.rtt_us, FIN_ACK, &[]);
        self.client_seq = self.client_seq.wrapping_add(1);
        self.server_sends(queue, at + self.rtt_us + 30, ACK, &[]);
    }

    /// Captures the close begun by the client at `at_us`.
    fn close_by_client(mut self, queue: &mut PacketQueue, at_us: u64) {
        let at = at_us.max(self.last_us + 1);
        self.client_sends(queue, at, FIN_ACK, &[]);
        self.client_seq = self.client_seq.wrapping_add(1);
        self.server_sends(queue, at + 30, FIN_ACK, &[]);
        self.server_seq = self.server_seq.wrapping_add(1);
        self.client_sends(queue, at + 30 + self.rtt_us, ACK, &[]);
    }
}

/// Every secret sent, once each, in the order they first appear.
#[derive(Default)]
struct SecretLog {
    secrets: Vec<String>,
    seen: HashSet<String>,
}

impl SecretLog {
    fn note(&mut self, secret: &str) {
        if !self.seen.contains(secret) {
            self.seen.insert(secret.to_string());
            self.secrets.push(secret.to_string());
        }
    }
}

/// Plays the plan: builds each request and its answer and captures them on the
/// client's connection.
struct TrafficWriter<W: Write> {
    pcap: PcapWriter<W>,
    queue: PacketQueue,
    rng: Rng,
    secrets: SecretLog,
    /// The last ephemeral port each client address used.
    ports: HashMap<[u8; 4], u16>,
    transactions: u64,
    connections: u64,
}

impl<W: Write> TrafficWriter<W> {
    fn new(pcap: PcapWriter<W>, rng: Rng) -> Self {
        TrafficWriter {
            pcap,
            queue: PacketQueue {
                heap: BinaryHeap::new(),
                created: 0,
            },
            rng,
            secrets: SecretLog::default(),
            ports: HashMap::new(),
            transactions: 0,
            connections: 0,
        }
    }

    /// Writes one planned request, with the logins it needs first.
    fn play(&mut self, population: &mut Population, planned: &Planned) -> Result<()> {
        self.queue.release_before(planned.at_us, &mut self.pcap)?;
        let Population { tenants, clients } = population;
        let Client { profile, state } = &mut clients[planned.client as usize];
        let at = planned.at_us;
        match (&profile.kind, profile.tenant) {
            (ClientKind::Human(human), Some(t)) => {
                self.play_human(tenants, t, profile, human, state, planned.action, at);
            }
            (ClientKind::Machine(machine), Some(t)) => {
                self.play_machine(tenants, t, profile, machine, state, planned.action, at);
            }
            (ClientKind::Attacker, _) => {
                if let Action::Stuff(n) = planned.action {
                    let ex = stuffing_login(&mut self.rng, tenants, n);
                    self.transact(profile, state, ex, at);
                }
            }
            _ => {
                let mut health = Exchange::new("GET", "/health")
                    .answer(200, r#"{"status":"ok","version":"2026.11.1"}"#.to_string());
                health.authenticated = false;
                self.transact(profile, state, health, at);
            }
        }
        // Keep the connection for the next request, or close it.
        if let Some(conn) = state.conn.take() {
            let idle_after = planned.idle_after_us;
            match profile.kind {
                // Mobile clients lose their connection (and address) between requests.
                _ if !profile.hop_ips.is_empty() => {
                    let done = conn.last_us + self.rng.range(1, 5) * MS;
                    conn.close_by_client(&mut self.queue, done);
                }
                ClientKind::Human(_) => {
                    if idle_after.is_none_or(|gap| gap > SERVER_KEEPALIVE) {
                        let idle_until = conn.last_us + SERVER_KEEPALIVE;
                        conn.close_by_server(&mut self.queue, idle_until);
                    } else {
                        state.conn = Some(conn);
                    }
                }
                _ => {
                    if idle_after.is_none_or(|gap| gap > 30 * SECOND) {
                        let done = conn.last_us + self.rng.range(1, 5) * MS;
                        conn.close_by_client(&mut self.queue, done);
                    } else {
                        state.conn = Some(conn);
                    }
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn play_human(
        &mut self,
        tenants: &mut [Tenant],
        t: usize,
        profile: &ClientProfile,
        human: &Human,
        state: &mut ClientState,
        action: Action,
        at: u64,
    ) {
        let now = state.conn.as_ref().map_or(at, |c| c.last_us.max(at));
        match action {
            Action::FailedLogin => {
                let wrong = human.mistyped_password(&mut self.rng);
                self.secrets.note(&wrong);
                let (ex, _, _) = login(&mut self.rng, &tenants[t], human, &wrong, now);
                self.transact(profile, state, ex, at);
                return;
            }
            Action::Logout => {
                if let Some(session) = state.session.take_if(|s| s.expires_us > now) {
                    self.transact(profile, state, logout(&session), at);
                    return;
                }
            }
            _ => {}
        }
        let call = match action {
            Action::Browse | Action::FailedLogin | Action::Logout => {
                browse(&mut self.rng, tenants, t, human, now)
            }
            other => special_call(&mut self.rng, tenants, t, other, now)
                .unwrap_or_else(|| browse(&mut self.rng, tenants, t, human, now)),
        };
        // The app finds out that its session or token expired when it is refused.
        let expired = state.session.as_ref().is_some_and(|s| s.expires_us <= now)
            || state.token.as_ref().is_some_and(|t| t.expires_us <= now);
        if expired {
            let message = "Session expired, please log in again";
            let refused = call.clone().refused(401, "unauthorized", message);
            self.transact(profile, state, refused, at);
            state.session = None;
            state.token = None;
        }
        if state.session.is_none() && state.token.is_none() {
            self.secrets.note(&human.password);
            let (ex, session, token) =
                login(&mut self.rng, &tenants[t], human, &human.password, now);
            if let Some(s) = &session {
                self.secrets.note(&s.cookie);
            }
            if let Some(token) = &token {
                self.secrets.note(&token.jwt);
            }
            state.session = session;
            state.token = token;
            self.transact(profile, state, ex, at);
        }
        self.transact(profile, state, call, at);
    }

    #[allow(clippy::too_many_arguments)]
    fn play_machine(
        &mut self,
        tenants: &mut [Tenant],
        t: usize,
        profile: &ClientProfile,
        machine: &Machine,
        state: &mut ClientState,
        action: Action,
        at: u64,
    ) {
        let now = state.conn.as_ref().map_or(at, |c| c.last_us.max(at));
        if let MachineAuth::ClientCredentials { secret } = &machine.auth
            && state
                .token
                .as_ref()
                .is_none_or(|t| t.expires_us < now + 5 * MINUTE)
        {
            self.secrets.note(secret);
            let (ex, token) = oauth_token(&mut self.rng, &tenants[t], machine, secret, now);
            self.secrets.note(&token.jwt);
            state.token = Some(token);
            self.transact(profile, state, ex, at);
        }
        let mut call = match action {
            Action::Job(req) => job_request(&mut self.rng, &mut tenants[t], req, now),
            other => match special_call(&mut self.rng, tenants, t, other, now) {
                Some(call) => call,
                None => return,
            },
        };
        if matches!(action, Action::Job(_)) && self.rng.chance(0.005) {
            call = call.refused(429, "rate_limited", "Too many requests, slow down");
        }
        self.transact(profile, state, call, at);
    }

    /// Captures one request and its response on the client's connection, opening one
    /// if needed.
    fn transact(
        &mut self,
        profile: &ClientProfile,
        state: &mut ClientState,
        mut ex: Exchange,
        at: u64,
    ) {
        let rng = &mut self.rng;
        if ex.status < 300 && ex.authenticated && rng.chance(0.003) {
            ex = ex.refused(500, "internal_error", "An unexpected error occurred");
            ex.extra_server_us += rng.range(200, 2000) * MS;
        }
        let credential = if ex.authenticated {
            credential(profile, state)
        } else {
            Credential::None
        };
        match credential {
            Credential::SessionCookie { session: s, .. } => self.secrets.note(s),
            Credential::Bearer(s) | Credential::ApiKeyHeader(s) | Credential::ApiKeyQuery(s) => {
                self.secrets.note(s)
            }
            Credential::Basic(encoded) => {
                self.secrets.note(encoded);
                if let ClientKind::Machine(Machine {
                    auth: MachineAuth::Basic { password, .. },
                    ..
                }) = &profile.kind
                {
                    self.secrets.note(password);
                }
            }
            Credential::None => {}
        }
        let request = render_request(&ex, profile, &credential);
        let conn = match state.conn.take() {
            Some(conn) => conn,
            None => {
                let ip = if profile.hop_ips.is_empty() {
                    profile.ip
                } else {
                    state.hop += 1;
                    profile.hop_ips[(state.hop - 1) % profile.hop_ips.len()]
                };
                let port = self.ephemeral_port(ip);
                self.connections += 1;
                Connection::open(&mut self.queue, &mut self.rng, ip, port, profile.rtt_us, at)
            }
        };
        let rng = &mut self.rng;
        let mut server_us = rng.log_uniform(2.0, 40.0) as u64 * MS + ex.extra_server_us;
        if ex.is_list {
            server_us += rng.range(5, 60) * MS;
        }
        if ex.method != "GET" {
            server_us += rng.range(10, 80) * MS;
        }
        let closing = conn.requests + 1 >= MAX_REQUESTS_PER_CONNECTION;
        let sent_at = at.max(conn.last_us + 1);
        let response = render_response(rng, &ex, profile, sent_at + server_us, closing);
        let mut conn = conn;
        conn.exchange(&mut self.queue, sent_at, &request, server_us, &response);
        self.transactions += 1;
        if closing {
            let at = conn.last_us + 100;
            conn.close_by_server(&mut self.queue, at);
        } else {
            state.conn = Some(conn);
        }
    }

    /// The next ephemeral port of a client address.
    fn ephemeral_port(&mut self, ip: [u8; 4]) -> u16 {
        let rng = &mut self.rng;
        let port = self
            .ports
            .entry(ip)
            .or_insert_with(|| 49_152 + rng.below(16_000) as u16);
        *port = if *port >= 65_530 { 49_152 } else { *port + 1 };
        *port
    }

    /// Writes what is left and returns the totals and the secrets.
    fn finish(mut self) -> Result<(TrafficSummary, Vec<String>)> {
        self.queue.release_before(u64::MAX, &mut self.pcap)?;
        self.pcap.w.flush()?;
        let summary = TrafficSummary {
            transactions: self.transactions,
            connections: self.connections,
            packets: self.queue.created,
            bytes: self.pcap.bytes,
            secrets: 0,
            secrets_path: PathBuf::new(),
        };
        Ok((summary, self.secrets.secrets))
    }
}
