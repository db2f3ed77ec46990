//! The agent's configuration file (TOML). Every setting has a default, so the file only
//! holds what differs; unknown keys are errors, so a typo is not silently ignored.
//!
//! ```toml
//! [agent]
//! id = "node-7"
//!
//! [extract]
//! fingerprint_key = "shared secret of the fleet"
//! trusted_proxies = ["10.9.0.0/24"]
//! jwt_keys = [{ secret = "hs256 secret" }]
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::extract::ExtractConfig;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentConfig {
    pub agent: AgentSection,
    pub capture: CaptureSection,
    pub extract: ExtractConfig,
    pub ship: crate::ship::ShipConfig,
}

/// `[capture]`: live capture settings of `tapline-agent run` (command-line flags win).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CaptureSection {
    pub ifaces: Vec<String>,
    pub filter: Option<String>,
    pub promisc: Option<bool>,
    pub buffer_mb: Option<usize>,
    pub workers: Option<usize>,
    pub queue: Option<usize>,
    /// Address of the Prometheus endpoint (`127.0.0.1:9108`).
    pub metrics: Option<std::net::SocketAddr>,
    /// `pcap`, `ebpf` or `auto`.
    pub source: Option<String>,
    /// eBPF: a cgroup v2 directory to capture.
    pub cgroup: Option<PathBuf>,
    /// eBPF: probe OpenSSL for HTTPS plaintext.
    pub tls: Option<bool>,
    pub snaplen: Option<u32>,
    pub tls_snaplen: Option<u32>,
    /// Only these ports (either end).
    pub ports: Vec<u16>,
    /// eBPF: only these networks (either end).
    pub cidrs: Vec<String>,
    pub ring_mb: Option<u32>,
    /// eBPF: `auto`, `tcx` or `netlink`.
    pub tc_attach: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSection {
    /// The node's name in events (default: the host name).
    pub id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigFileError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Parse(PathBuf, toml::de::Error),
}

impl AgentConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigFileError::Read(path.to_path_buf(), e))?;
        toml::from_str(&text).map_err(|e| ConfigFileError::Parse(path.to_path_buf(), e))
    }

    /// The node id: configured, else `NODE_NAME` (a DaemonSet passes the node's name
    /// there), else the host name.
    pub fn agent_id(&self) -> String {
        self.agent
            .id
            .clone()
            .or_else(|| std::env::var("NODE_NAME").ok().filter(|n| !n.is_empty()))
            .unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|h| h.trim().to_string())
                    .unwrap_or_else(|_| "unknown".to_string())
            })
    }

    /// Applies a bundle: the agent's name (a bundle issued to one node names it; a fleet
    /// bundle leaves it to [`Self::agent_id`]) and, unless configured, the fleet's
    /// fingerprint key.
    pub fn apply_bundle(&mut self, bundle: &tapline_wire::bundle::Bundle) -> Result<(), String> {
        if !bundle.fleet {
            if let Some(id) = &self.agent.id
                && *id != bundle.name
            {
                return Err(format!(
                    "[agent] id is {id:?} but the bundle was issued to {:?} (enroll with --fleet to share a bundle)",
                    bundle.name
                ));
            }
            self.agent.id = Some(bundle.name.clone());
        }
        if self.extract.fingerprint_key.is_none() {
            self.extract.fingerprint_key = Some(bundle.fingerprint_key.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn partial_files_and_typos() {
        let c: AgentConfig =
            toml::from_str("[extract]\nhint_chars = 0\njwt_keys = [{ secret = \"s\" }]\n").unwrap();
        assert_eq!(c.extract.hint_chars, 0);
        assert_eq!(c.extract.jwt_keys.len(), 1);
        assert!(!c.extract.session_cookies.is_empty(), "defaults stay");
        assert!(toml::from_str::<AgentConfig>("[extract]\nhint_chrs = 1\n").is_err());
    }
}
