//! `collector.toml` in the data directory (written by `init`, read by every command).
//! Every key has a default; unknown keys are errors.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CollectorConfig {
    /// Address agents connect to.
    pub listen: SocketAddr,
    /// Addresses written into agent bundles (`host:port`), in failover order.
    pub advertise: Vec<String>,
    /// Prometheus endpoint (`/metrics`), off when absent.
    pub metrics: Option<SocketAddr>,
    pub limits: Limits,
    pub store: StoreConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Agent connections served at once; more wait in the kernel's backlog.
    pub max_connections: usize,
    /// Largest frame accepted from an agent (compressed bytes).
    pub max_frame_bytes: usize,
    /// Batches read from one connection ahead of their acks.
    pub max_inflight_batches: usize,
    /// MiB of batches read but not yet stored, across all connections: reading waits
    /// past it (at least one largest frame).
    pub max_buffered_mb: u64,
    /// Seconds for the TLS handshake and the agent's first message.
    pub handshake_timeout_secs: u64,
    /// Seconds of silence before a connection is closed (agents send a status every 10 s).
    pub idle_timeout_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Days of raw events kept.
    pub retention_days: u32,
    /// Bytes the database may take; the oldest days go first past it.
    pub max_bytes: u64,
    /// `full`: an ack means the batch survives power loss (fsync per commit); `normal`:
    /// it survives a crash of the collector but a power cut may lose the last commits.
    pub sync: SyncMode,
    /// Batches written in one transaction at most (group commit).
    pub max_batches_per_commit: usize,
    /// Batches waiting for the store before connections stop reading.
    pub queue: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncMode {
    Full,
    Normal,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        CollectorConfig {
            listen: "0.0.0.0:4780".parse().expect("valid"),
            advertise: vec!["127.0.0.1:4780".into()],
            metrics: None,
            limits: Limits::default(),
            store: StoreConfig::default(),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_frame_bytes: tapline_wire::MAX_FRAME,
            max_inflight_batches: 8,
            max_buffered_mb: 256,
            handshake_timeout_secs: 10,
            idle_timeout_secs: 120,
        }
    }
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            retention_days: 30,
            max_bytes: 20 << 30,
            sync: SyncMode::Full,
            max_batches_per_commit: 64,
            queue: 256,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("{0}: {1}")]
    Parse(PathBuf, toml::de::Error),
}

impl CollectorConfig {
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| ConfigError::Read(path.to_path_buf(), e))?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse(path.to_path_buf(), e))
    }

    pub fn to_toml(&self) -> String {
        format!(
            "# Tapline collector configuration (see docs/collector.md)\n{}",
            toml::to_string(self).expect("config serializes")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_config_reads_back_and_typos_fail() {
        let c = CollectorConfig::default();
        assert_eq!(toml::from_str::<CollectorConfig>(&c.to_toml()).unwrap(), c);
        assert!(toml::from_str::<CollectorConfig>("[store]\nretention_dayz = 3\n").is_err());
        let p: CollectorConfig = toml::from_str("[store]\nsync = \"normal\"\n").unwrap();
        assert_eq!(p.store.sync, SyncMode::Normal);
    }
}
