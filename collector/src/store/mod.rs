//! The `store` stage: where acked events live. One interface, [`EventStore`], so the
//! embedded SQLite store used by default and a distributed engine at scale are
//! interchangeable behind the ingest and the query commands.
//!
//! Events are kept as the batches agents sent (compressed frames, readable by every
//! wire version this build knows), with per-batch indexes of the actors and endpoints
//! they hold and tables of everything seen (agents, actors, endpoints, entities) for
//! the baseline and detection stages.

pub mod alerts;
pub mod sqlite;

use std::net::IpAddr;

use tapline_wire::proto::AgentStatus;
use tapline_wire::{Actor, Event, Summary};

pub use alerts::SqliteAlerts;
pub use sqlite::SqliteStore;

use crate::alert::{Alert, AlertStatus, AlertType, Severity, Suppression};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("stored batch {0} does not decode: {1}")]
    Corrupt(i64, tapline_wire::WireError),
    #[error("database schema version {0} is newer than this build knows ({1})")]
    NewerSchema(i64, i64),
    #[error(
        "database schema version {0} predates alerts (version {1}); run `serve` once to migrate it"
    )]
    OldSchema(i64, i64),
    #[error("stored alert is not valid JSON: {0}")]
    AlertJson(serde_json::Error),
}

/// A batch the ingest checked, with the frame it came in.
#[derive(Debug)]
pub struct IncomingBatch {
    /// The frame as received (compressed), stored as is.
    pub frame: Vec<u8>,
    /// What the store indexes of it.
    pub batch: Summary,
    /// The enrolled certificate name it came with.
    pub cert: String,
}

/// Whether a batch was new or already held (a retry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    Duplicate,
}

/// A connected agent's latest word about itself.
#[derive(Debug, Clone)]
pub struct AgentSeen {
    pub status: AgentStatus,
    pub cert: String,
    pub peer: IpAddr,
}

/// Which events a query wants; every field narrows.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// A fingerprint (16 hex digits), a clear actor value (address, Basic user) or a
    /// claim, `name=value` or just the value.
    pub actor: Option<String>,
    /// An endpoint template (`/v1/invoices/{invoice}`), with or without the method
    /// (`GET /v1/...`).
    pub endpoint: Option<String>,
    /// Event time bounds, microseconds since the epoch: `since <= ts < until`.
    pub since_us: Option<i64>,
    pub until_us: Option<i64>,
    pub agent: Option<String>,
}

/// One row of `tapline-collector agents`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct AgentRow {
    pub name: String,
    pub cert: String,
    pub address: Option<String>,
    pub software: Option<String>,
    pub connected: bool,
    pub first_seen: i64,
    pub last_seen: i64,
    /// Highest batch sequence stored.
    pub last_seq: Option<u64>,
    pub batches: u64,
    pub events: u64,
    pub duplicates: u64,
    /// Newest event time stored (microseconds).
    pub last_event_us: Option<i64>,
    /// Batches the agent still holds (spooled or in flight), as it last said.
    pub pending_batches: u64,
    pub pending_bytes: u64,
    pub dropped_batches: u64,
    pub dropped_events: u64,
    /// Capture coverage as the agent last reported it (agents sending status version 2).
    pub coverage: Option<tapline_wire::proto::Coverage>,
    /// When that coverage was reported (wall clock, microseconds).
    pub coverage_us: Option<i64>,
}

/// One endpoint of the inventory: a template and method, and its traffic.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EndpointRow {
    pub method: String,
    pub template: String,
    /// Event times of its first and last request (microseconds).
    pub first_us: i64,
    pub last_us: i64,
    pub events: u64,
}

/// How the inventory is sorted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum EndpointOrder {
    /// Busiest first.
    #[default]
    Events,
    /// Newest first: what appeared lately.
    FirstSeen,
    Template,
}

/// Which endpoints an inventory page wants.
#[derive(Debug, Clone)]
pub struct EndpointQuery {
    pub method: Option<String>,
    /// Part of the template, any case.
    pub contains: Option<String>,
    pub order: EndpointOrder,
    pub limit: usize,
    pub offset: usize,
}

impl Default for EndpointQuery {
    fn default() -> Self {
        EndpointQuery {
            method: None,
            contains: None,
            order: EndpointOrder::default(),
            limit: 100,
            offset: 0,
        }
    }
}

/// What retention removed.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pruned {
    pub batches: u64,
    pub events: u64,
}

/// The store interface: SQLite embedded by default, a distributed engine at scale.
pub trait EventStore: Send {
    /// Stores batches in one durable step, deduplicated by (agent, sequence); a batch
    /// already held is reported [`Outcome::Duplicate`] and not stored again.
    fn append(&mut self, batches: &[IncomingBatch]) -> Result<Vec<Outcome>, StoreError>;
    /// Records an agent's status (and that it is connected or not).
    fn agent_status(&mut self, seen: &AgentSeen, connected: bool) -> Result<(), StoreError>;
    /// Events matching `q` in time order; `f` returns false to stop.
    fn query(&self, q: &EventQuery, f: &mut dyn FnMut(Event) -> bool) -> Result<(), StoreError>;
    /// How many events match `q`.
    fn count(&self, q: &EventQuery) -> Result<u64, StoreError>;
    fn agents(&self) -> Result<Vec<AgentRow>, StoreError>;
    /// The endpoint inventory (as of the last write of the derived tables, every few
    /// seconds), one page, and how many endpoints match in all.
    fn endpoints(&self, q: &EndpointQuery) -> Result<(Vec<EndpointRow>, u64), StoreError>;
    /// Drops events past the retention and, oldest day first, past the size bound.
    fn prune(&mut self, now_us: i64) -> Result<Pruned, StoreError>;
    /// Writes what is held in memory (derived tables) before the process ends.
    fn close(&mut self) -> Result<(), StoreError>;
}

/// Which alerts a listing wants; every field narrows.
#[derive(Debug, Clone)]
pub struct AlertQuery {
    /// Alerts active at or after this event time (microseconds).
    pub since_us: Option<i64>,
    pub min_severity: Option<Severity>,
    pub kind: Option<AlertType>,
    /// The actor's id, or the key alerts show for it (`actor.key`: a fingerprint,
    /// `sub:alice`, an address).
    pub actor_id: Option<String>,
    pub status: Option<AlertStatus>,
    pub limit: usize,
    pub offset: usize,
}

impl Default for AlertQuery {
    fn default() -> Self {
        AlertQuery {
            since_us: None,
            min_severity: None,
            kind: None,
            actor_id: None,
            status: None,
            limit: 100,
            offset: 0,
        }
    }
}

/// Where the detectors read events and keep alerts: the same engine as the events
/// (SQLite by default), behind its own interface so a distributed engine can hold them.
pub trait AlertStore: Send {
    /// Stored batches after `cursor` (a batch id), in storage order.
    fn batches_after(&self, cursor: i64, limit: usize) -> Result<Vec<(i64, Vec<u8>)>, StoreError>;
    /// The id of the newest stored batch.
    fn last_batch(&self) -> Result<i64, StoreError>;
    /// Writes new and updated alerts and, with them, the detectors' checkpoint: the last
    /// batch read and the state after it. After a crash the detectors resume from the
    /// checkpoint; alerts written since are written again with the same ids.
    fn save(
        &mut self,
        alerts: &[Alert],
        checkpoint: Option<(i64, &[u8])>,
    ) -> Result<(), StoreError>;
    fn checkpoint(&self) -> Result<Option<(i64, Vec<u8>)>, StoreError>;
    /// Alerts matching `q`, newest first, and how many match in all.
    fn alerts(&self, q: &AlertQuery) -> Result<(Vec<Alert>, u64), StoreError>;
    fn alert(&self, id: &str) -> Result<Option<Alert>, StoreError>;
    /// Records an analyst's decision, with the suppression it implies; false when no
    /// alert has that id.
    fn set_status(
        &mut self,
        id: &str,
        status: AlertStatus,
        suppression: Option<&Suppression>,
    ) -> Result<bool, StoreError>;
    /// Suppressions not expired at `now_us` (wall clock).
    fn suppressions(&self, now_us: i64) -> Result<Vec<Suppression>, StoreError>;
    /// Forgets the detectors' state and the alerts no analyst has decided on, to
    /// detect again from the first stored event.
    fn reset_detection(&mut self) -> Result<(), StoreError>;
}

/// The key an actor is indexed by: its fingerprint, else its clear value.
pub fn actor_key(a: &Actor) -> Option<String> {
    match (a.fingerprint, &a.value) {
        (Some(f), _) => Some(format!("{f:016x}")),
        (None, Some(v)) => Some(v.clone()),
        (None, None) => None,
    }
}

/// Whether an actor answers to a `--actor` term.
pub fn actor_matches(a: &Actor, term: &str) -> bool {
    if actor_key(a).as_deref() == Some(term) {
        return true;
    }
    match term.split_once('=') {
        Some((k, v)) => a.claims.iter().any(|(ck, cv)| ck == k && cv == v),
        None => a.claims.iter().any(|(_, cv)| cv == term),
    }
}

/// Whether an event's endpoint answers to an `--endpoint` term.
pub fn endpoint_matches(e: &Event, term: &str) -> bool {
    match term.split_once(' ') {
        Some((m, t)) => e.method.eq_ignore_ascii_case(m) && e.endpoint == t,
        None => e.endpoint == term,
    }
}

pub const DAY_US: i64 = 86_400_000_000;

/// Wall-clock time in microseconds since the epoch, the unit of event times.
pub fn now_us() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}
