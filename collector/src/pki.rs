//! The collector's private PKI: a CA made by `init`, agent certificates issued by
//! `enroll`, and the registry of issued certificates that `revoke` marks. A client is
//! accepted when its certificate chains to the CA (checked by rustls during the
//! handshake) and its exact certificate is in the registry and not revoked (checked
//! right after), so revoking takes effect on the next connection without a CRL.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use tapline_wire::bundle::Bundle;

use crate::config::CollectorConfig;

/// The name agents check the collector's certificate against, whatever address they dial.
pub const SERVER_NAME: &str = "tapline-collector";
const CA_NAME: &str = "Tapline collector CA";

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("{0} already holds a collector (pass --force to replace its keys)")]
    Exists(PathBuf),
    #[error("{0} is not a collector data directory (run `tapline-collector init --data {0}`)")]
    NotInitialized(PathBuf),
    #[error("certificate generation: {0}")]
    Cert(#[from] rcgen::Error),
    #[error("{0}: {1}")]
    Pem(PathBuf, String),
    #[error("{0}: {1}")]
    Registry(PathBuf, String),
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    #[error("bad agent name {0:?}: use 1-128 letters, digits, '.', '-', '_'")]
    BadName(String),
    #[error("no agent named {0:?} was enrolled")]
    UnknownAgent(String),
}

type Result<T> = std::result::Result<T, PkiError>;

/// The files of a collector data directory.
#[derive(Debug, Clone)]
pub struct DataDir {
    pub root: PathBuf,
}

impl DataDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        DataDir { root: root.into() }
    }
    pub fn ca_cert(&self) -> PathBuf {
        self.root.join("ca.pem")
    }
    pub fn ca_key(&self) -> PathBuf {
        self.root.join("ca.key")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.root.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.root.join("server.key")
    }
    pub fn fingerprint_key(&self) -> PathBuf {
        self.root.join("fingerprint.key")
    }
    pub fn config(&self) -> PathBuf {
        self.root.join("collector.toml")
    }
    pub fn registry(&self) -> PathBuf {
        self.root.join("agents.json")
    }
    pub fn database(&self) -> PathBuf {
        self.root.join("tapline.db")
    }
    /// The token of the web UI and the HTTP API (readable by its owner only).
    pub fn api_token(&self) -> PathBuf {
        self.root.join("api_token")
    }

    pub fn ensure_initialized(&self) -> Result<()> {
        if self.ca_cert().exists() && self.config().exists() {
            Ok(())
        } else {
            Err(PkiError::NotInitialized(self.root.clone()))
        }
    }
}

/// What `init` sets up.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Extra names and addresses the server certificate is valid for.
    pub names: Vec<String>,
    pub config: CollectorConfig,
    pub force: bool,
}

/// Creates the CA, the server certificate, the fleet fingerprint key, the configuration
/// and an empty registry.
pub fn init(dir: &DataDir, opts: &InitOptions) -> Result<()> {
    if dir.ca_cert().exists() && !opts.force {
        return Err(PkiError::Exists(dir.root.clone()));
    }
    std::fs::create_dir_all(&dir.root).map_err(|e| PkiError::Io(dir.root.clone(), e))?;
    let ca_key = KeyPair::generate()?;
    let ca_params = ca_params();
    let ca = ca_params.self_signed(&ca_key)?;
    write_file(&dir.ca_cert(), ca.pem().as_bytes(), false)?;
    write_file(&dir.ca_key(), ca_key.serialize_pem().as_bytes(), true)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut names = vec![SERVER_NAME.to_string(), "localhost".to_string()];
    names.push("127.0.0.1".into());
    names.push("::1".into());
    names.extend(opts.names.iter().cloned());
    for a in &opts.config.advertise {
        if let Some((host, _)) = a.rsplit_once(':') {
            names.push(host.trim_matches(['[', ']']).to_string());
        }
    }
    names.sort();
    names.dedup();
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(SERVER_NAME);
    params.subject_alt_names = names
        .iter()
        .map(|n| match n.parse::<std::net::IpAddr>() {
            Ok(ip) => Ok(SanType::IpAddress(ip)),
            Err(_) => n.clone().try_into().map(SanType::DnsName),
        })
        .collect::<std::result::Result<_, _>>()?;
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut params, 10 * 365);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    write_file(&dir.server_cert(), cert.pem().as_bytes(), false)?;
    write_file(&dir.server_key(), key.serialize_pem().as_bytes(), true)?;

    let mut secret = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut secret).map_err(
        |_| {
            PkiError::Io(
                dir.fingerprint_key(),
                std::io::Error::other("no system randomness"),
            )
        },
    )?;
    write_file(
        &dir.fingerprint_key(),
        format!("hex:{}\n", hex(&secret)).as_bytes(),
        true,
    )?;
    write_file(&dir.config(), opts.config.to_toml().as_bytes(), false)?;
    crate::auth::ApiToken::create(&dir.api_token())
        .map_err(|e| PkiError::Io(dir.api_token(), e))?;
    Registry::default().save(&dir.registry())?;
    Ok(())
}

fn ca_params() -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = dn(CA_NAME);
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    validity(&mut p, 20 * 365);
    p
}

fn dn(cn: &str) -> DistinguishedName {
    let mut d = DistinguishedName::new();
    d.push(DnType::OrganizationName, "Tapline");
    d.push(DnType::CommonName, cn);
    d
}

fn validity(p: &mut CertificateParams, days: u64) {
    let now = SystemTime::now();
    p.not_before = (now - Duration::from_secs(3600)).into();
    p.not_after = (now + Duration::from_secs(days * 86_400)).into();
}

/// Issues a certificate for agent `name` and writes its bundle to `out`.
pub fn enroll(dir: &DataDir, name: &str, fleet: bool, out: &Path) -> Result<Enrolled> {
    dir.ensure_initialized()?;
    if name.is_empty()
        || name.len() > 128
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
    {
        return Err(PkiError::BadName(name.to_string()));
    }
    let config = CollectorConfig::load(&dir.config()).map_err(PkiError::Config)?;
    let ca_pem = read(&dir.ca_cert())?;
    let ca_key = KeyPair::from_pem(&read(&dir.ca_key())?)
        .map_err(|e| PkiError::Pem(dir.ca_key(), e.to_string()))?;
    let issuer = Issuer::new(ca_params(), ca_key);
    let mut params = CertificateParams::default();
    params.distinguished_name = dn(name);
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    validity(&mut params, 5 * 365);
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &issuer)?;
    let entry = Enrolled {
        name: name.to_string(),
        fleet,
        cert_sha256: sha256_hex(cert.der()),
        issued_at: now_secs(),
        revoked: false,
    };
    let bundle = Bundle {
        name: name.to_string(),
        fleet,
        collectors: config.advertise.clone(),
        server_name: SERVER_NAME.to_string(),
        fingerprint_key: read(&dir.fingerprint_key())?.trim().to_string(),
        ca: ca_pem,
        cert: cert.pem(),
        key: key.serialize_pem(),
    };
    let mut reg = Registry::load(&dir.registry())?;
    reg.agents.push(entry.clone());
    write_file(out, bundle.to_toml().as_bytes(), true)?;
    reg.save(&dir.registry())?;
    Ok(entry)
}

/// Marks every certificate issued to `name` revoked; returns how many.
pub fn revoke(dir: &DataDir, name: &str) -> Result<usize> {
    dir.ensure_initialized()?;
    let mut reg = Registry::load(&dir.registry())?;
    let mut n = 0;
    for a in reg
        .agents
        .iter_mut()
        .filter(|a| a.name == name && !a.revoked)
    {
        a.revoked = true;
        n += 1;
    }
    if n == 0 && !reg.agents.iter().any(|a| a.name == name) {
        return Err(PkiError::UnknownAgent(name.to_string()));
    }
    reg.save(&dir.registry())?;
    Ok(n)
}

/// One issued certificate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Enrolled {
    pub name: String,
    #[serde(default)]
    pub fleet: bool,
    /// SHA-256 of the certificate (DER), hex: how a connection is matched to its entry.
    pub cert_sha256: String,
    pub issued_at: u64,
    #[serde(default)]
    pub revoked: bool,
}

/// Every certificate `enroll` issued (`agents.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Registry {
    pub agents: Vec<Enrolled>,
}

impl Registry {
    pub fn load(path: &Path) -> Result<Registry> {
        let text = read(path)?;
        serde_json::from_str(&text)
            .map_err(|e| PkiError::Registry(path.to_path_buf(), e.to_string()))
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_string_pretty(self).expect("registry serializes");
        write_file(path, text.as_bytes(), true)
    }

    /// The entry of a presented certificate (DER).
    pub fn find(&self, cert: &[u8]) -> Option<&Enrolled> {
        let h = sha256_hex(cert);
        self.agents.iter().find(|a| a.cert_sha256 == h)
    }
}

/// The server's TLS settings: TLS 1.3 only, a client certificate from the CA required.
pub fn server_tls(dir: &DataDir) -> Result<Arc<rustls::ServerConfig>> {
    dir.ensure_initialized()?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(&dir.ca_cert())? {
        roots.add(c)?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| PkiError::Pem(dir.ca_cert(), e.to_string()))?;
    let key = PrivateKeyDer::from_pem_file(dir.server_key())
        .map_err(|e| PkiError::Pem(dir.server_key(), e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(&dir.server_cert())?, key)?;
    Ok(Arc::new(config))
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<std::result::Result<Vec<_>, _>>())
        .map_err(|e| PkiError::Pem(path.to_path_buf(), e.to_string()))
}

fn read(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| PkiError::Io(path.to_path_buf(), e))
}

/// Writes through a temporary file and a rename, so a crash leaves the old or the new
/// file, never half of one; `private` files are readable by their owner only.
pub fn write_file(path: &Path, data: &[u8], private: bool) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let io = |e| PkiError::Io(path.to_path_buf(), e);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(&tmp)
        .map_err(io)?;
    f.write_all(data).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(ring::digest::digest(&ring::digest::SHA256, data).as_ref())
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter()
        .fold(String::with_capacity(b.len() * 2), |mut s, x| {
            let _ = write!(s, "{x:02x}");
            s
        })
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
