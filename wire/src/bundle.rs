//! The agent bundle: everything an agent needs to ship to a collector, issued by
//! `tapline-collector enroll` and read by `tapline-agent --bundle`. It holds a private key:
//! it is written readable by its owner only.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// The name the certificate was issued to.
    pub name: String,
    /// A fleet bundle is shared by many nodes (a DaemonSet): each names itself (from
    /// `NODE_NAME`, else the host name). Otherwise the agent is `name`.
    #[serde(default)]
    pub fleet: bool,
    /// Collector addresses (`host:port`), tried in order, the next one on failure.
    pub collectors: Vec<String>,
    /// The name the collectors' certificate is checked against.
    pub server_name: String,
    /// The fleet's fingerprint key, so every node fingerprints a secret the same way.
    pub fingerprint_key: String,
    /// PEM: the collector CA, the agent's certificate and its private key.
    pub ca: String,
    pub cert: String,
    pub key: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("not a Tapline agent bundle: {0}")]
    Parse(#[from] toml::de::Error),
    #[error("the bundle names no collector")]
    NoCollector,
}

impl Bundle {
    pub fn parse(text: &str) -> Result<Bundle, BundleError> {
        let b: Bundle = toml::from_str(text)?;
        if b.collectors.is_empty() {
            return Err(BundleError::NoCollector);
        }
        Ok(b)
    }

    pub fn to_toml(&self) -> String {
        format!(
            "# Tapline agent bundle for `{}`. It holds a private key: keep it secret.\n{}",
            self.name,
            toml::to_string(self).expect("a bundle always serializes")
        )
    }
}
