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
    /// The web UI and HTTP API (and `/metrics` too), off when absent. They need the
    /// token in `DATA/api_token`. Plain HTTP: keep it on localhost or put a TLS proxy in
    /// front.
    pub api: Option<SocketAddr>,
    /// Serve `/metrics` on the API address without the token (for Prometheus).
    pub api_open_metrics: bool,
    pub limits: Limits,
    pub store: StoreConfig,
    pub detect: DetectConfig,
    pub export: ExportConfig,
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
            api: None,
            api_open_metrics: true,
            limits: Limits::default(),
            store: StoreConfig::default(),
            detect: DetectConfig::default(),
            export: ExportConfig::default(),
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

/// `[detect]`: the baselines and detectors. Times are event time (packet time).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// Off: events are stored but nothing is learned or alerted.
    pub enabled: bool,
    /// A MaxMind-format city database (GeoLite2/GeoIP2 City, or ip-location-db's).
    pub geoip: Option<PathBuf>,
    /// A MaxMind-format ASN database (GeoLite2-ASN layout).
    pub asn_db: Option<PathBuf>,
    /// Hours an actor is watched before its own baseline may raise alerts (rate, volume,
    /// permissions), and the whole population before the others may.
    pub learning_hours: f64,
    /// Requests an actor makes before its baseline counts.
    pub min_events: u64,
    /// `rate_spike`: times the baseline, and the fewest requests in a one-minute window
    /// (longer windows need more: × (1 + log10 minutes)).
    pub rate_ratio: f64,
    pub rate_min_count: u32,
    /// `rate_spike`: times the actor's usual burst in the same window (its decaying
    /// peak), so that batch jobs and people's bursts are not spikes.
    pub rate_burst_ratio: f64,
    /// `impossible_travel`: speed (km/h) no traveller reaches, and the least distance
    /// (km) that counts (city databases are tens of kilometres off).
    pub travel_speed_kmh: f64,
    pub travel_min_km: f64,
    /// `token_sharing`: networks (/24, /48) in use at once, and returns to a network
    /// while another is in use, within `sharing_window_secs`.
    pub sharing_networks: u32,
    pub sharing_returns: u32,
    pub sharing_window_secs: u32,
    /// `enumeration`: requests to one endpoint within ten minutes, and the share of them
    /// refused as missing or forbidden, or with ids one after another.
    pub enum_min_requests: u32,
    pub enum_missing_ratio: f64,
    pub enum_sequential_ratio: f64,
    /// `credential_stuffing`: distinct user names failing from one source within ten
    /// minutes; across all sources, this many times the usual peak.
    pub stuffing_min_users: u32,
    pub stuffing_ratio: f64,
    /// `data_exfiltration`: times the actor's usual peak, and the least volume.
    pub exfil_ratio: f64,
    pub exfil_min_bytes: u64,
    pub exfil_min_entities: u32,
    /// `permission_violation`: the fewest peers to compare with.
    pub min_peers: u32,
    /// Actors followed at most; the least recently seen are forgotten past it.
    pub max_actors: usize,
    /// Entities whose owner is remembered (the ownership graph).
    pub max_entities: usize,
    /// Minutes within which findings of one kind on one actor and endpoint are one alert.
    pub merge_minutes: u32,
    /// Days a `--false-positive` suppression lasts.
    pub suppress_days: u32,
    /// Endpoint sensitivity overrides, 0 to 1: `"POST /v1/refunds" = 1.0`.
    pub sensitivity: std::collections::BTreeMap<String, f64>,
    /// Networks known better than the databases know them (offices, VPN egress).
    pub networks: Vec<crate::geo::CustomNetwork>,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            enabled: true,
            geoip: None,
            asn_db: None,
            learning_hours: 48.0,
            min_events: 30,
            rate_ratio: 10.0,
            rate_min_count: 12,
            rate_burst_ratio: 3.0,
            travel_speed_kmh: 900.0,
            travel_min_km: 500.0,
            sharing_networks: 3,
            sharing_returns: 3,
            sharing_window_secs: 300,
            enum_min_requests: 30,
            enum_missing_ratio: 0.5,
            enum_sequential_ratio: 0.7,
            stuffing_min_users: 10,
            stuffing_ratio: 5.0,
            exfil_ratio: 5.0,
            exfil_min_bytes: 1_000_000,
            exfil_min_entities: 100,
            min_peers: 3,
            max_actors: 500_000,
            max_entities: 2_000_000,
            merge_minutes: 60,
            suppress_days: 30,
            sensitivity: Default::default(),
            networks: Vec::new(),
        }
    }
}

/// `[export]`: where alerts go besides the store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportConfig {
    /// A JSON-lines file every new or updated alert is appended to.
    pub jsonl: Option<PathBuf>,
    /// An `http://` URL each alert is POSTed to as JSON (SIEM, Slack-style relays).
    pub webhook: Option<String>,
    /// Alerts waiting for the webhook at most; past it the oldest are dropped (counted).
    pub webhook_queue: usize,
    /// Attempts per alert before it is dropped (counted), with backoff between.
    pub webhook_attempts: u32,
    /// Lowest severity exported.
    pub min_severity: crate::alert::Severity,
}

impl Default for ExportConfig {
    fn default() -> Self {
        ExportConfig {
            jsonl: None,
            webhook: None,
            webhook_queue: 1000,
            webhook_attempts: 5,
            min_severity: crate::alert::Severity::Low,
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
