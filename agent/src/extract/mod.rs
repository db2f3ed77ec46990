//! Turns an HTTP transaction into an [`Event`]: who acted (actors, with every secret
//! fingerprinted), on what (endpoint template, business entities, ownership hints), with
//! what result. No I/O; all tables are bounded.

pub mod config;
pub mod fingerprint;
pub mod json_scan;
pub mod jwt;
pub mod redact;
pub mod template;

use std::net::IpAddr;

use base64::Engine;
use tapline_wire::{Actor, ActorKind, Endpoint, Entity, EntitySource, Event, Owner};

pub use config::{ExtractConfig, JwtKey};
pub use fingerprint::Fingerprinter;
use template::Templater;

use crate::http::head::Known;
use crate::http::{Head, Transaction, head};
use crate::reassembly::FlowMeta;

/// Longest clear value kept (user names, entity ids, user agents, hosts).
pub const MAX_VALUE: usize = 256;
/// Most actors kept per event (a request with dozens of cookies is still one caller).
pub const MAX_ACTORS: usize = 8;

/// Counters of the extraction stage.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExtractStats {
    pub events: u64,
    pub jwt_verified: u64,
    pub jwt_unverified: u64,
    pub jwt_bad_signature: u64,
    /// Bearer tokens shaped like JWTs that did not parse (kept as opaque bearers).
    pub jwt_malformed: u64,
    pub json_truncated: u64,
    pub json_too_deep: u64,
    pub json_malformed: u64,
    /// Events that had more entities, owner hints or actors than the caps.
    pub capped: u64,
    /// Paths whose template did not fit the table.
    pub template_overflow: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Key(#[from] fingerprint::BadKey),
    #[error("trusted_proxies: `{0}` is not an address or CIDR block")]
    Proxy(String),
    #[error("openapi file {0}: {1}")]
    OpenApi(String, String),
    #[error("jwks file {0}: {1}")]
    Jwks(String, String),
}

/// An address block (`10.0.0.0/8`, `2001:db8::/32`, or one address).
#[derive(Debug, Clone, Copy)]
struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    fn parse(s: &str) -> Option<Cidr> {
        let (ip, bits) = match s.split_once('/') {
            Some((ip, b)) => (ip.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let ip: IpAddr = s.trim().parse().ok()?;
                (ip, if ip.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if matches!(ip, IpAddr::V4(_)) { 32 } else { 128 };
        (bits <= max).then_some(Cidr { net: ip, bits })
    }

    fn contains(&self, ip: IpAddr) -> bool {
        let (a, b, width) = match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(i)) => {
                (u128::from(u32::from(n)), u128::from(u32::from(i)), 32u32)
            }
            (IpAddr::V6(n), IpAddr::V6(i)) => (u128::from(n), u128::from(i), 128),
            _ => return false,
        };
        let bits = u32::from(self.bits);
        if bits == 0 {
            return true;
        }
        let shift = width - bits;
        (a >> shift) == (b >> shift)
    }
}

/// The extraction stage of one agent.
#[derive(Debug)]
pub struct Extractor {
    config: ExtractConfig,
    fingerprinter: Fingerprinter,
    templates: Templater,
    proxies: Vec<Cidr>,
    keys: jwt::KeySet,
    /// The node id put in every event.
    agent: String,
    pub stats: ExtractStats,
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn text(b: &[u8]) -> String {
    truncate(&String::from_utf8_lossy(b), MAX_VALUE)
}

/// Decodes `%XX` and `+` of a query or form value.
fn form_decode(v: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        match v[i] {
            b'+' => out.push(b' '),
            b'%' if v.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && v.get(i + 2).is_some_and(u8::is_ascii_hexdigit) =>
            {
                let h = |c: u8| (c as char).to_digit(16).unwrap_or(0) as u8;
                out.push(h(v[i + 1]) << 4 | h(v[i + 2]));
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    out
}

/// `name=value` pairs of a query string or form body.
fn pairs(s: &[u8]) -> impl Iterator<Item = (&[u8], &[u8])> {
    s.split(|&b| b == b'&').filter(|p| !p.is_empty()).map(|p| {
        match p.iter().position(|&b| b == b'=') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, &p[p.len()..]),
        }
    })
}

fn listed(list: &[String], name: &[u8]) -> bool {
    list.iter().any(|l| l.as_bytes().eq_ignore_ascii_case(name))
}

fn is_json(h: Option<&Head>, body: &[u8]) -> bool {
    let ct = h.and_then(|h| h.get(Known::ContentType)).unwrap_or(b"");
    let ct = String::from_utf8_lossy(ct).to_ascii_lowercase();
    ct.contains("json") || matches!(head::trim(body).first(), Some(b'{' | b'['))
}

impl Extractor {
    pub fn new(config: ExtractConfig) -> Result<Self, ConfigError> {
        let fingerprinter = Fingerprinter::new(config.fingerprint_key.as_deref())?;
        let proxies = config
            .trusted_proxies
            .iter()
            .map(|p| Cidr::parse(p).ok_or_else(|| ConfigError::Proxy(p.clone())))
            .collect::<Result<_, _>>()?;
        let mut templates = Templater::new(config.max_templates, config.template_cardinality);
        if let Some(path) = &config.openapi {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::OpenApi(path.clone(), e.to_string()))?;
            templates
                .add_openapi(&text)
                .map_err(|e| ConfigError::OpenApi(path.clone(), e.to_string()))?;
        }
        let mut keys = jwt::KeySet {
            hmac: config.jwt_keys.clone(),
            rsa: Vec::new(),
        };
        if let Some(path) = &config.jwks {
            let text = std::fs::read_to_string(path)
                .map_err(|e| ConfigError::Jwks(path.clone(), e.to_string()))?;
            keys.add_jwks(&text)
                .map_err(|e| ConfigError::Jwks(path.clone(), e.to_string()))?;
        }
        Ok(Extractor {
            config,
            fingerprinter,
            templates,
            proxies,
            keys,
            agent: String::new(),
            stats: ExtractStats::default(),
        })
    }

    /// Names the node in every event from now on.
    pub fn set_agent(&mut self, id: &str) {
        self.agent = id.to_string();
    }

    pub fn fingerprinter(&self) -> &Fingerprinter {
        &self.fingerprinter
    }

    pub fn config(&self) -> &ExtractConfig {
        &self.config
    }

    /// The hint shown for a secret: its last characters, when the secret is long enough
    /// that they reveal little.
    fn hint(&self, secret: &str) -> Option<String> {
        let n = self.config.hint_chars;
        if n == 0 || secret.len() < 4 * n || !secret.is_ascii() {
            return None;
        }
        Some(secret[secret.len() - n..].to_string())
    }

    fn secret_actor(&self, kind: ActorKind, secret: &str) -> Actor {
        Actor {
            kind,
            fingerprint: Some(self.fingerprinter.fingerprint(secret.as_bytes())),
            value: None,
            hint: self.hint(secret),
            claims: Vec::new(),
            verified: None,
        }
    }

    fn bearer(&mut self, token: &str, actors: &mut Vec<Actor>) {
        if jwt::looks_like_jwt(token) {
            match jwt::parse(token, &self.keys) {
                Ok(j) => {
                    match j.verified {
                        Some(true) => self.stats.jwt_verified += 1,
                        Some(false) => self.stats.jwt_bad_signature += 1,
                        None => self.stats.jwt_unverified += 1,
                    }
                    let mut a = self.secret_actor(ActorKind::Jwt, token);
                    a.hint = token.rsplit('.').next().and_then(|sig| self.hint(sig));
                    a.verified = j.verified;
                    for name in &self.config.jwt_claims {
                        if let Some(v) = j.claims.get(name).and_then(jwt::claim_text) {
                            a.claims.push((name.clone(), v));
                        }
                    }
                    actors.push(a);
                    return;
                }
                Err(_) => self.stats.jwt_malformed += 1,
            }
        }
        actors.push(self.secret_actor(ActorKind::Bearer, token));
    }

    fn authorization(&mut self, value: &[u8], actors: &mut Vec<Actor>) {
        let v = String::from_utf8_lossy(head::trim(value)).into_owned();
        let (scheme, cred) = match v.split_once(' ') {
            Some((s, c)) => (s, c.trim()),
            None => ("", v.as_str()),
        };
        if scheme.eq_ignore_ascii_case("bearer") {
            self.bearer(cred, actors);
        } else if scheme.eq_ignore_ascii_case("basic") {
            let user = base64::engine::general_purpose::STANDARD
                .decode(cred)
                .ok()
                .map(|d| {
                    let s = String::from_utf8_lossy(&d).into_owned();
                    s.split_once(':').map_or(s.clone(), |(u, _)| u.to_string())
                });
            actors.push(Actor {
                kind: ActorKind::Basic,
                fingerprint: None,
                value: user.map(|u| truncate(&u, MAX_VALUE)),
                hint: None,
                claims: Vec::new(),
                verified: None,
            });
        } else if scheme.is_empty() || listed(&self.config.api_key_schemes, scheme.as_bytes()) {
            actors.push(self.secret_actor(ActorKind::ApiKey, cred));
        } else {
            // Another scheme (Digest, AWS4-HMAC-SHA256, …): the credential as a whole.
            actors.push(self.secret_actor(ActorKind::Bearer, &v));
        }
    }

    fn client_address(&self, meta: &FlowMeta, req: &Head) -> IpAddr {
        let peer = meta.client.0;
        if !self.proxies.iter().any(|p| p.contains(peer)) {
            return peer;
        }
        // The right-most address a trusted proxy did not add is the client.
        let mut hops: Vec<IpAddr> = Vec::new();
        for v in req.get_all(Known::XForwardedFor) {
            for part in String::from_utf8_lossy(v).split(',') {
                if let Ok(ip) = part.trim().parse() {
                    hops.push(ip);
                }
            }
        }
        if hops.is_empty() {
            for v in req.get_all(Known::Forwarded) {
                for part in String::from_utf8_lossy(v).split([',', ';']) {
                    let part = part.trim();
                    if let Some(f) = part.get(..4).filter(|p| p.eq_ignore_ascii_case("for="))
                        && !f.is_empty()
                    {
                        let addr = part[4..].trim_matches('"');
                        let addr = addr
                            .strip_prefix('[')
                            .and_then(|a| a.split(']').next())
                            .unwrap_or_else(|| addr.split(':').next().unwrap_or(addr));
                        if let Ok(ip) = addr.parse() {
                            hops.push(ip);
                        }
                    }
                }
            }
        }
        hops.iter()
            .rev()
            .find(|ip| !self.proxies.iter().any(|p| p.contains(**ip)))
            .copied()
            .unwrap_or(peer)
    }

    fn login_user(&self, req: &Head, query: &[u8], body: &[u8]) -> Option<String> {
        let fields = &self.config.login_user_fields;
        let mut found = None;
        if is_json(Some(req), body) {
            json_scan::scan(body, |k, v| {
                if listed(fields, k) {
                    found = Some(String::from_utf8_lossy(v).into_owned());
                    return false;
                }
                true
            });
        } else {
            found = pairs(body)
                .chain(pairs(query))
                .find(|(k, _)| listed(fields, &form_decode(k)))
                .map(|(_, v)| String::from_utf8_lossy(&form_decode(v)).into_owned());
        }
        found
            .map(|u| u.trim().to_lowercase())
            .filter(|u| !u.is_empty())
    }

    fn is_login_path(&self, path: &str) -> bool {
        let p = path.to_ascii_lowercase();
        self.config
            .login_paths
            .iter()
            .any(|l| p.contains(&l.to_ascii_lowercase()))
    }

    /// The event of a transaction; `None` when it has no request (a response alone).
    pub fn event(&mut self, meta: &FlowMeta, tx: &Transaction) -> Option<Event> {
        let req = tx.request.as_ref()?;
        let method = std::str::from_utf8(tx.method()?).ok()?.to_string();
        let target = req.part(1);
        // An absolute-form target: the path starts after the authority.
        let target = target
            .strip_prefix(b"http://")
            .or_else(|| target.strip_prefix(b"https://"))
            .map(|rest| &rest[rest.iter().position(|&b| b == b'/').unwrap_or(rest.len())..])
            .unwrap_or(target);
        let (path, query) = match target.iter().position(|&b| b == b'?') {
            Some(i) => (&target[..i], &target[i + 1..]),
            None => (target, &target[target.len()..]),
        };
        let path = String::from_utf8_lossy(path).into_owned();
        let templated = self.templates.template(&path);
        self.stats.template_overflow = self.templates.overflow;

        let mut actors = Vec::new();
        for v in req.get_all(Known::Authorization) {
            self.authorization(v, &mut actors);
        }
        for (name, value) in req.iter() {
            if listed(&self.config.api_key_headers, name) {
                let key = String::from_utf8_lossy(head::trim(value)).into_owned();
                actors.push(self.secret_actor(ActorKind::ApiKey, &key));
            }
        }
        let mut entities = Vec::new();
        for (k, v) in pairs(query) {
            let k = form_decode(k);
            let v = String::from_utf8_lossy(&form_decode(v)).into_owned();
            if listed(&self.config.api_key_params, &k) {
                actors.push(self.secret_actor(ActorKind::ApiKey, &v));
            } else if listed(&self.config.token_params, &k) {
                self.bearer(&v, &mut actors);
            } else if listed(&self.config.entity_params, &k) {
                entities.push(Entity {
                    kind: text(&k),
                    id: truncate(&v, MAX_VALUE),
                    source: EntitySource::Query,
                });
            }
        }
        for v in req.get_all(Known::Cookie) {
            for c in v.split(|&b| b == b';') {
                let c = head::trim(c);
                let Some(eq) = c.iter().position(|&b| b == b'=') else {
                    continue;
                };
                if listed(&self.config.session_cookies, head::trim(&c[..eq])) {
                    let value = String::from_utf8_lossy(head::trim(&c[eq + 1..])).into_owned();
                    actors.push(self.secret_actor(ActorKind::Session, &value));
                }
            }
        }
        let req_body = &tx.request_body.captured;
        if self.is_login_path(&path)
            && let Some(user) = self.login_user(req, query, req_body)
        {
            actors.push(Actor {
                kind: ActorKind::Login,
                fingerprint: Some(self.fingerprinter.fingerprint(user.as_bytes())),
                value: None,
                hint: None,
                claims: Vec::new(),
                verified: None,
            });
        }
        let client_ip = self.client_address(meta, req);
        actors.push(Actor {
            kind: ActorKind::ClientIp,
            fingerprint: None,
            value: Some(client_ip.to_string()),
            hint: None,
            claims: Vec::new(),
            verified: None,
        });
        if actors.len() > MAX_ACTORS {
            // The client address (last) always stays.
            let ip = actors.pop();
            actors.truncate(MAX_ACTORS - 1);
            actors.extend(ip);
            self.stats.capped += 1;
        }

        for (kind, id) in &templated.params {
            entities.push(Entity {
                kind: kind.clone(),
                id: truncate(id, MAX_VALUE),
                source: EntitySource::Path,
            });
        }
        // The kind of a bare `id` field: the resource the endpoint names.
        let resource = templated
            .template
            .rsplit('/')
            .find(|s| !s.is_empty() && !s.starts_with('{'))
            .map(template::singular)
            .unwrap_or_else(|| "object".to_string());
        let mut owners = Vec::new();
        let mut capped = false;
        if is_json(Some(req), req_body) && !req_body.is_empty() {
            self.scan_body(
                req_body,
                &resource,
                EntitySource::RequestBody,
                &mut entities,
                None,
                &mut capped,
            );
        }
        let resp_body = &tx.response_body.captured;
        if !resp_body.is_empty() && is_json(tx.response.as_ref(), resp_body) {
            self.scan_body(
                resp_body,
                &resource,
                EntitySource::ResponseBody,
                &mut entities,
                Some(&mut owners),
                &mut capped,
            );
        }
        if capped {
            self.stats.capped += 1;
        }

        let ts = tx.request_ts.or(tx.response_ts).unwrap_or(meta.first_ts);
        let latency = match (tx.request_ts, tx.response_ts) {
            (Some(a), Some(b)) if b >= a => Some((b - a) as u64),
            _ => None,
        };
        let host = crate::output::eve::host_port(req)
            .map(|(h, _)| text(&h))
            .filter(|h| !h.is_empty());
        self.stats.events += 1;
        Some(Event {
            agent: self.agent.clone(),
            ts_us: ts,
            flow_id: meta.flow_id,
            client: Endpoint {
                ip: meta.client.0,
                port: meta.client.1,
            },
            server: Endpoint {
                ip: meta.server.0,
                port: meta.server.1,
            },
            method: truncate(&method, 32),
            endpoint: templated.template,
            host,
            status: tx.status(),
            request_bytes: req.buf.len() as u64 + tx.request_body.transferred,
            response_bytes: tx.response.as_ref().map_or(0, |h| h.buf.len() as u64)
                + tx.response_body.transferred,
            latency_us: latency,
            actors,
            entities,
            owners,
            user_agent: req.get(Known::UserAgent).map(text),
            anomalies: tx.anomalies.names().map(str::to_string).collect(),
        })
    }

    fn scan_body(
        &mut self,
        body: &[u8],
        resource: &str,
        source: EntitySource,
        entities: &mut Vec<Entity>,
        mut owners: Option<&mut Vec<Owner>>,
        capped: &mut bool,
    ) {
        let max_entities = self.config.max_entities;
        let max_owners = self.config.max_owners;
        let config = &self.config;
        let end = json_scan::scan(body, |k, v| {
            if v.contains(&b'\\') || v.len() > MAX_VALUE {
                return true;
            }
            if let Some(o) = owners.as_deref_mut()
                && listed(&config.owner_fields, k)
            {
                let owner = Owner {
                    field: text(k),
                    value: text(v),
                };
                if o.len() >= max_owners {
                    *capped = true;
                } else if !o.contains(&owner) {
                    o.push(owner);
                }
            }
            let kind = if k == b"id" {
                Some(resource.to_string())
            } else if let Some(stem) = k.strip_suffix(b"_id").filter(|s| !s.is_empty()) {
                Some(text(stem))
            } else if listed(&config.entity_fields, k) {
                Some(text(k))
            } else {
                None
            };
            if let Some(kind) = kind {
                let e = Entity {
                    kind,
                    id: text(v),
                    source,
                };
                if entities.len() >= max_entities {
                    *capped = true;
                    return owners.is_some();
                }
                // One entity once per event, with the first place it was seen.
                if !entities.iter().any(|x| x.kind == e.kind && x.id == e.id) {
                    entities.push(e);
                }
            }
            true
        });
        match end {
            json_scan::ScanEnd::Complete => {}
            json_scan::ScanEnd::Truncated => self.stats.json_truncated += 1,
            json_scan::ScanEnd::TooDeep => self.stats.json_too_deep += 1,
            json_scan::ScanEnd::Malformed => self.stats.json_malformed += 1,
        }
    }
}

#[cfg(test)]
mod tests;
