//! The embedded default store: one SQLite database in WAL mode, written by one thread
//! in batched transactions (group commit), read by the query commands at the same time.
//!
//! What an ack promises is in the same transaction as the batch: the frame, its
//! (agent, sequence) key and its term index (hashes of the actors, claims and endpoints
//! it holds, which the queries use to find candidate batches). The derived tables
//! (actors, endpoints, entities with first/last seen and counts) are aggregated in
//! memory over many batches and written every few seconds, with the id of the last batch
//! they include: after a crash, opening the store replays the batches past it, so the
//! derived tables catch up and never count a batch twice.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::path::Path;

use rusqlite::{Connection, OptionalExtension, params};
use tapline_wire::{Event, Seen, Summary};

use super::{
    AgentRow, AgentSeen, DAY_US, EndpointOrder, EndpointQuery, EndpointRow, EventQuery, EventStore,
    IncomingBatch, Outcome, Pruned, StoreError, actor_matches, endpoint_matches, now_us,
};

/// How often the derived tables are written, and how many keys they may gather first.
const DERIVED_EVERY: std::time::Duration = std::time::Duration::from_secs(5);
const DERIVED_MAX_KEYS: usize = 200_000;
use crate::config::{StoreConfig, SyncMode};

/// Schema migrations, applied in order; `PRAGMA user_version` counts those applied.
const MIGRATIONS: &[&str] = &[
    // 1: batches and their term index; agents; the derived actors, endpoints, entities.
    "CREATE TABLE agents(
        id INTEGER PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        cert TEXT NOT NULL DEFAULT '',
        address TEXT,
        software TEXT,
        connected INTEGER NOT NULL DEFAULT 0,
        first_seen INTEGER NOT NULL,
        last_seen INTEGER NOT NULL,
        last_seq INTEGER,
        batches INTEGER NOT NULL DEFAULT 0,
        events INTEGER NOT NULL DEFAULT 0,
        duplicates INTEGER NOT NULL DEFAULT 0,
        last_event_us INTEGER,
        pending_batches INTEGER NOT NULL DEFAULT 0,
        pending_bytes INTEGER NOT NULL DEFAULT 0,
        dropped_batches INTEGER NOT NULL DEFAULT 0,
        dropped_events INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE batches(
        id INTEGER PRIMARY KEY,
        agent_id INTEGER NOT NULL,
        seq INTEGER NOT NULL,
        day INTEGER NOT NULL, -- the day it was received: retention counts from there
        ts_min INTEGER NOT NULL,
        ts_max INTEGER NOT NULL,
        events INTEGER NOT NULL,
        received_us INTEGER NOT NULL,
        frame BLOB NOT NULL,
        UNIQUE(agent_id, seq)
    );
    CREATE INDEX batches_ts_min ON batches(ts_min);
    CREATE INDEX batches_ts_max ON batches(ts_max);
    CREATE INDEX batches_day ON batches(day);
    CREATE TABLE actors(
        id INTEGER PRIMARY KEY,
        key TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        claims TEXT,
        first_us INTEGER NOT NULL,
        last_us INTEGER NOT NULL,
        events INTEGER NOT NULL
    );
    CREATE TABLE endpoints(
        id INTEGER PRIMARY KEY,
        method TEXT NOT NULL,
        template TEXT NOT NULL,
        first_us INTEGER NOT NULL,
        last_us INTEGER NOT NULL,
        events INTEGER NOT NULL,
        UNIQUE(method, template)
    );
    CREATE TABLE entities(
        id INTEGER PRIMARY KEY,
        kind TEXT NOT NULL,
        value TEXT NOT NULL,
        first_us INTEGER NOT NULL,
        last_us INTEGER NOT NULL,
        events INTEGER NOT NULL,
        UNIQUE(kind, value)
    );
    CREATE TABLE batch_terms(
        term INTEGER NOT NULL,
        batch_id INTEGER NOT NULL,
        PRIMARY KEY(term, batch_id)
    ) WITHOUT ROWID;
    CREATE TABLE meta(key TEXT PRIMARY KEY, value INTEGER NOT NULL);",
    // 2: alerts, analysts' suppressions, the detectors' checkpoint.
    "CREATE TABLE alerts(
        id TEXT PRIMARY KEY,
        type TEXT NOT NULL,
        severity INTEGER NOT NULL,
        score REAL NOT NULL,
        actor_id TEXT NOT NULL,
        endpoint TEXT,
        first_us INTEGER NOT NULL,
        last_us INTEGER NOT NULL,
        status TEXT NOT NULL DEFAULT 'open',
        body TEXT NOT NULL
    );
    CREATE INDEX alerts_first ON alerts(first_us);
    CREATE INDEX alerts_actor ON alerts(actor_id);
    CREATE TABLE suppressions(
        id INTEGER PRIMARY KEY,
        type TEXT NOT NULL,
        actor_id TEXT NOT NULL,
        endpoint TEXT,
        created_us INTEGER NOT NULL,
        expires_us INTEGER NOT NULL,
        alert_id TEXT NOT NULL,
        reason TEXT NOT NULL
    );
    CREATE TABLE detector(
        id INTEGER PRIMARY KEY CHECK (id = 1),
        cursor INTEGER NOT NULL,
        saved_us INTEGER NOT NULL,
        state BLOB NOT NULL
    );",
    // 3: agents' capture coverage (status version 2), as JSON, and when it was said.
    "ALTER TABLE agents ADD COLUMN coverage TEXT;
    ALTER TABLE agents ADD COLUMN coverage_us INTEGER;",
];

pub struct SqliteStore {
    conn: Connection,
    config: StoreConfig,
    agent_ids: HashMap<String, i64>,
    derived: Derived,
}

type Map<K, V> = foldhash::HashMap<K, V>;
type NestedSeen = Map<String, Map<String, Option<Seen>>>;

/// What the actors table keeps of an actor besides its times and count.
struct ActorInfo {
    kind: &'static str,
    claims: Option<String>,
    seen: Option<Seen>,
}

/// Derived-table updates not yet written, and the last batch they include. Keyed so
/// that an already-seen key is found without allocating.
struct Derived {
    /// Fingerprinted actors by fingerprint; others by their clear value.
    actors_fp: Map<u64, ActorInfo>,
    actors_value: Map<String, ActorInfo>,
    /// method → template → seen.
    endpoints: NestedSeen,
    /// kind → id → seen.
    entities: NestedSeen,
    keys: usize,
    upto: i64,
    since: std::time::Instant,
}

fn nested<'m>(map: &'m mut NestedSeen, a: &str, b: &str, keys: &mut usize) -> &'m mut Option<Seen> {
    if !map.contains_key(a) {
        map.insert(a.to_string(), Map::default());
    }
    let inner = map.get_mut(a).expect("just ensured");
    if !inner.contains_key(b) {
        *keys += 1;
        inner.insert(b.to_string(), None);
    }
    inner.get_mut(b).expect("just ensured")
}

fn merge(slot: &mut Option<Seen>, seen: &Seen) {
    match slot {
        Some(s) => s.merge(seen),
        None => *slot = Some(*seen),
    }
}

impl Derived {
    fn new(upto: i64) -> Self {
        Derived {
            actors_fp: Map::default(),
            actors_value: Map::default(),
            endpoints: Map::default(),
            entities: Map::default(),
            keys: 0,
            upto,
            since: std::time::Instant::now(),
        }
    }

    fn add(&mut self, batch_id: i64, sum: &Summary) {
        for (a, seen) in &sum.actors {
            let info = || ActorInfo {
                kind: kind_name(a.kind),
                claims: (!a.claims.is_empty())
                    .then(|| serde_json::to_string(&a.claims).unwrap_or_default()),
                seen: None,
            };
            let slot = match (a.fingerprint, &a.value) {
                (Some(f), _) => self.actors_fp.entry(f).or_insert_with(|| {
                    self.keys += 1;
                    info()
                }),
                (None, Some(v)) => {
                    if !self.actors_value.contains_key(v.as_str()) {
                        self.keys += 1;
                        self.actors_value.insert(v.clone(), info());
                    }
                    self.actors_value.get_mut(v.as_str()).expect("just ensured")
                }
                (None, None) => continue,
            };
            merge(&mut slot.seen, seen);
        }
        for (m, t, seen) in &sum.endpoints {
            merge(nested(&mut self.endpoints, m, t, &mut self.keys), seen);
        }
        for (k, id, seen) in &sum.entities {
            merge(nested(&mut self.entities, k, id, &mut self.keys), seen);
        }
        self.upto = self.upto.max(batch_id);
    }

    fn keys(&self) -> usize {
        self.keys
    }
}

/// Stable 64-bit FNV-1a: index terms must hash the same in every build.
fn term_hash(prefix: u8, parts: &[&[u8]]) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |b: u8| {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    };
    eat(prefix);
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            eat(0);
        }
        p.iter().for_each(|b| eat(*b));
    }
    h as i64
}

/// 16 lower-case hex digits, as fingerprints are shown.
fn hex16(f: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    for (i, o) in out.iter_mut().enumerate() {
        *o = b"0123456789abcdef"[((f >> (60 - 4 * i)) & 0xf) as usize];
    }
    out
}

/// The index terms of an actor: its key, and each claim as `name=value` and as value.
fn actor_terms(a: &tapline_wire::Actor, out: &mut Vec<i64>) {
    match (a.fingerprint, &a.value) {
        (Some(f), _) => out.push(term_hash(b'a', &[&hex16(f)])),
        (None, Some(v)) => out.push(term_hash(b'a', &[v.as_bytes()])),
        (None, None) => {}
    }
    for (k, v) in &a.claims {
        out.push(term_hash(b'c', &[k.as_bytes(), v.as_bytes()]));
        out.push(term_hash(b'a', &[v.as_bytes()]));
    }
}

/// The terms an `--actor` query looks up.
fn actor_query_terms(term: &str) -> Vec<i64> {
    match term.split_once('=') {
        Some((k, v)) => vec![
            term_hash(b'c', &[k.as_bytes(), v.as_bytes()]),
            term_hash(b'a', &[term.as_bytes()]),
        ],
        None => vec![term_hash(b'a', &[term.as_bytes()])],
    }
}

fn endpoint_terms(method: &str, endpoint: &str, out: &mut Vec<i64>) {
    out.push(term_hash(b'e', &[endpoint.as_bytes()]));
    out.push(term_hash(
        b'm',
        &[method.to_ascii_uppercase().as_bytes(), endpoint.as_bytes()],
    ));
}

fn endpoint_query_terms(term: &str) -> Vec<i64> {
    match term.split_once(' ') {
        Some((m, t)) => vec![term_hash(
            b'm',
            &[m.to_ascii_uppercase().as_bytes(), t.as_bytes()],
        )],
        None => vec![term_hash(b'e', &[term.as_bytes()])],
    }
}

impl SqliteStore {
    /// Opens (creating or migrating) the database for writing, and brings the derived
    /// tables up to date with every stored batch.
    pub fn open(path: &Path, config: &StoreConfig) -> Result<SqliteStore, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(
            None,
            "synchronous",
            match config.sync {
                SyncMode::Full => "FULL",
                SyncMode::Normal => "NORMAL",
            },
        )?;
        conn.pragma_update(None, "cache_size", -65_536)?;
        migrate(&mut conn)?;
        let upto: i64 = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'derived_upto'",
                [],
                |r| r.get(0),
            )
            .optional()?
            .unwrap_or(0);
        let mut store = SqliteStore {
            conn,
            config: config.clone(),
            agent_ids: HashMap::new(),
            derived: Derived::new(upto),
        };
        store.catch_up()?;
        Ok(store)
    }

    /// Replays the batches the derived tables do not include yet (after a crash).
    fn catch_up(&mut self) -> Result<(), StoreError> {
        let mut from = self.derived.upto;
        loop {
            let rows: Vec<(i64, Vec<u8>)> = {
                let mut stmt = self
                    .conn
                    .prepare("SELECT id, frame FROM batches WHERE id > ?1 ORDER BY id LIMIT 256")?;
                stmt.query_map([from], |r| Ok((r.get(0)?, r.get(1)?)))?
                    .collect::<Result<_, _>>()?
            };
            let Some(last) = rows.last().map(|r| r.0) else {
                break;
            };
            for (id, frame) in rows {
                let sum = stored_frame(id, tapline_wire::summarize(&frame))?;
                self.derived.add(id, &sum);
            }
            from = last;
            if self.derived.keys() > DERIVED_MAX_KEYS {
                self.flush_derived()?;
            }
        }
        self.flush_derived()
    }

    /// Writes the gathered derived-table updates, with the last batch they include.
    pub fn flush_derived(&mut self) -> Result<(), StoreError> {
        let upto = self.derived.upto;
        let d = std::mem::replace(&mut self.derived, Derived::new(upto));
        let r = Self::write_derived(&mut self.conn, &d);
        if r.is_err() {
            // Kept for the next attempt; the stored watermark did not move.
            self.derived = d;
        }
        r
    }

    fn write_derived(conn: &mut Connection, d: &Derived) -> Result<(), StoreError> {
        let tx = conn.transaction()?;
        {
            let mut up_actor = tx.prepare_cached(
                "INSERT INTO actors(key, kind, claims, first_us, last_us, events) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT(key) DO UPDATE SET first_us = min(first_us, excluded.first_us),
                    last_us = max(last_us, excluded.last_us), events = events + excluded.events,
                    claims = coalesce(excluded.claims, claims)",
            )?;
            let fp: Vec<(String, &ActorInfo)> = d
                .actors_fp
                .iter()
                .map(|(f, i)| (format!("{f:016x}"), i))
                .collect();
            let by_value = d.actors_value.iter().map(|(k, i)| (k.clone(), i));
            for (k, i) in fp.into_iter().chain(by_value) {
                let s = i.seen.expect("counted");
                up_actor.execute(params![
                    k,
                    i.kind,
                    i.claims,
                    s.first,
                    s.last,
                    s.events as i64
                ])?;
            }
            let upsert = |table: &str, a: &str, b: &str, nested: &NestedSeen| {
                let mut stmt = tx.prepare_cached(&format!(
                    "INSERT INTO {table}({a}, {b}, first_us, last_us, events) VALUES (?1, ?2, ?3, ?4, ?5)
                     ON CONFLICT({a}, {b}) DO UPDATE SET first_us = min(first_us, excluded.first_us),
                        last_us = max(last_us, excluded.last_us), events = events + excluded.events"
                ))?;
                for (x, ys) in nested {
                    for (y, s) in ys {
                        let s = s.expect("counted");
                        stmt.execute(params![x, y, s.first, s.last, s.events as i64])?;
                    }
                }
                Ok::<(), StoreError>(())
            };
            upsert("endpoints", "method", "template", &d.endpoints)?;
            upsert("entities", "kind", "value", &d.entities)?;
            tx.execute(
                "INSERT INTO meta(key, value) VALUES ('derived_upto', ?1)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                [d.upto],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Whether derived-table updates wait to be written.
    pub fn derived_pending(&self) -> bool {
        self.derived.keys() > 0
    }

    /// Opens for reading only (the query commands, while `serve` writes).
    pub fn open_read_only(path: &Path) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open_with_flags(
            path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if v > MIGRATIONS.len() as i64 {
            return Err(StoreError::NewerSchema(v, MIGRATIONS.len() as i64));
        }
        Ok(SqliteStore {
            conn,
            config: StoreConfig::default(),
            agent_ids: HashMap::new(),
            derived: Derived::new(0),
        })
    }

    /// After a restart no agent is connected until it says so.
    pub fn reset_connections(&mut self) -> Result<(), StoreError> {
        self.conn.execute("UPDATE agents SET connected = 0", [])?;
        Ok(())
    }

    /// Bytes in use (pages not on the free list).
    pub fn used_bytes(&self) -> Result<u64, StoreError> {
        let q = |p: &str| -> Result<i64, StoreError> {
            Ok(self.conn.pragma_query_value(None, p, |r| r.get(0))?)
        };
        let used = (q("page_count")? - q("freelist_count")?) * q("page_size")?;
        Ok(used.max(0) as u64)
    }

    /// Events stored (the sum over batches).
    pub fn event_count(&self) -> Result<u64, StoreError> {
        let n: i64 =
            self.conn
                .query_row("SELECT coalesce(sum(events), 0) FROM batches", [], |r| {
                    r.get(0)
                })?;
        Ok(n as u64)
    }

    fn agent_id(
        tx: &rusqlite::Transaction<'_>,
        cache: &mut HashMap<String, i64>,
        name: &str,
        cert: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        if let Some(id) = cache.get(name) {
            return Ok(*id);
        }
        let id: i64 = tx.query_row(
            "INSERT INTO agents(name, cert, first_seen, last_seen) VALUES (?1, ?2, ?3, ?3)
             ON CONFLICT(name) DO UPDATE SET cert = excluded.cert RETURNING id",
            params![name, cert, now],
            |r| r.get(0),
        )?;
        cache.insert(name.to_string(), id);
        Ok(id)
    }
}

/// What decoding (or summarizing) a stored frame gave: a stored frame is whole, so
/// anything but a value is corruption of batch `id`.
fn stored_frame<T>(
    id: i64,
    r: Result<Option<(T, usize)>, tapline_wire::WireError>,
) -> Result<T, StoreError> {
    match r {
        Ok(Some((v, _))) => Ok(v),
        Ok(None) => Err(StoreError::Corrupt(id, tapline_wire::WireError::Truncated)),
        Err(e) => Err(StoreError::Corrupt(id, e)),
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let v: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if v > MIGRATIONS.len() as i64 {
        return Err(StoreError::NewerSchema(v, MIGRATIONS.len() as i64));
    }
    for (i, m) in MIGRATIONS.iter().enumerate().skip(v as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(m)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

impl EventStore for SqliteStore {
    fn append(&mut self, batches: &[IncomingBatch]) -> Result<Vec<Outcome>, StoreError> {
        let now = now_us();
        let tx = self.conn.transaction()?;
        let mut out = Vec::with_capacity(batches.len());
        let mut stored: Vec<(i64, usize)> = Vec::new();
        {
            let mut ins_batch = tx.prepare_cached(
                "INSERT OR IGNORE INTO batches(agent_id, seq, day, ts_min, ts_max, events, received_us, frame)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?;
            let mut dup = tx.prepare_cached(
                "UPDATE agents SET duplicates = duplicates + 1, last_seen = ?2 WHERE id = ?1",
            )?;
            let mut upd_agent = tx.prepare_cached(
                "UPDATE agents SET batches = batches + 1, events = events + ?2,
                    last_seq = max(coalesce(last_seq, ?3), ?3),
                    last_event_us = max(coalesce(last_event_us, ?4), ?4), last_seen = ?5
                 WHERE id = ?1",
            )?;
            let mut ins_term = tx.prepare_cached(
                "INSERT OR IGNORE INTO batch_terms(term, batch_id) VALUES (?1, ?2)",
            )?;
            let mut terms: Vec<i64> = Vec::new();
            for (i, b) in batches.iter().enumerate() {
                let agent = Self::agent_id(&tx, &mut self.agent_ids, &b.batch.agent, &b.cert, now)?;
                let sum = &b.batch;
                let (ts_min, ts_max) = if sum.events == 0 {
                    (now, now)
                } else {
                    (sum.ts_min, sum.ts_max)
                };
                let inserted = ins_batch.execute(params![
                    agent,
                    b.batch.seq as i64,
                    now.div_euclid(DAY_US),
                    ts_min,
                    ts_max,
                    sum.events as i64,
                    now,
                    &b.frame
                ])?;
                if inserted == 0 {
                    dup.execute(params![agent, now])?;
                    out.push(Outcome::Duplicate);
                    continue;
                }
                let batch_id = tx.last_insert_rowid();
                terms.clear();
                for (a, _) in &sum.actors {
                    actor_terms(a, &mut terms);
                }
                for (m, t, _) in &sum.endpoints {
                    endpoint_terms(m, t, &mut terms);
                }
                terms.sort_unstable();
                terms.dedup();
                for t in &terms {
                    ins_term.execute(params![t, batch_id])?;
                }
                upd_agent.execute(params![
                    agent,
                    sum.events as i64,
                    b.batch.seq as i64,
                    ts_max,
                    now
                ])?;
                stored.push((batch_id, i));
                out.push(Outcome::Stored);
            }
        }
        tx.commit()?;
        for (id, i) in stored {
            self.derived.add(id, &batches[i].batch);
        }
        if self.derived.since.elapsed() >= DERIVED_EVERY || self.derived.keys() > DERIVED_MAX_KEYS {
            self.flush_derived()?;
        }
        Ok(out)
    }

    fn agent_status(&mut self, seen: &AgentSeen, connected: bool) -> Result<(), StoreError> {
        let s = &seen.status;
        let now = now_us();
        let coverage = s
            .coverage
            .as_ref()
            .and_then(|c| serde_json::to_string(c).ok());
        self.conn.execute(
            "INSERT INTO agents(name, cert, address, software, connected, first_seen, last_seen,
                pending_batches, pending_bytes, dropped_batches, dropped_events, coverage, coverage_us)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10, ?11, ?12)
             ON CONFLICT(name) DO UPDATE SET cert = excluded.cert, address = excluded.address,
                software = excluded.software, connected = excluded.connected,
                last_seen = excluded.last_seen, pending_batches = excluded.pending_batches,
                pending_bytes = excluded.pending_bytes, dropped_batches = excluded.dropped_batches,
                dropped_events = excluded.dropped_events, coverage = excluded.coverage,
                coverage_us = excluded.coverage_us",
            params![
                s.agent,
                seen.cert,
                seen.peer.to_string(),
                s.software,
                connected,
                now,
                s.pending_batches as i64,
                s.pending_bytes as i64,
                s.dropped_batches as i64,
                s.dropped_events as i64,
                coverage,
                s.coverage.as_ref().map(|_| now)
            ],
        )?;
        Ok(())
    }

    fn query(&self, q: &EventQuery, f: &mut dyn FnMut(Event) -> bool) -> Result<(), StoreError> {
        let mut sql = String::from("SELECT b.id, b.ts_min, b.frame FROM batches b WHERE 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(s) = q.since_us {
            sql.push_str(" AND b.ts_max >= ?");
            args.push(s.into());
        }
        if let Some(u) = q.until_us {
            sql.push_str(" AND b.ts_min < ?");
            args.push(u.into());
        }
        if let Some(a) = &q.agent {
            sql.push_str(" AND b.agent_id = (SELECT id FROM agents WHERE name = ?)");
            args.push(a.clone().into());
        }
        for terms in [
            q.actor.as_deref().map(actor_query_terms),
            q.endpoint.as_deref().map(endpoint_query_terms),
        ]
        .into_iter()
        .flatten()
        {
            let list = terms
                .iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",");
            sql.push_str(&format!(
                " AND b.id IN (SELECT batch_id FROM batch_terms WHERE term IN ({list}))"
            ));
        }
        sql.push_str(" ORDER BY b.ts_min, b.id");
        let mut stmt = self.conn.prepare(&sql)?;
        let mut rows = stmt.query(rusqlite::params_from_iter(args))?;
        // Batches come in order of their first event; an event is released once no later
        // batch can hold an earlier one.
        let mut heap: BinaryHeap<Reverse<(i64, u64, HeapEvent)>> = BinaryHeap::new();
        let mut order = 0u64;
        let keep = |e: &Event| {
            q.since_us.is_none_or(|s| e.ts_us >= s)
                && q.until_us.is_none_or(|u| e.ts_us < u)
                && q.actor
                    .as_deref()
                    .is_none_or(|t| e.actors.iter().any(|a| actor_matches(a, t)))
                && q.endpoint.as_deref().is_none_or(|t| endpoint_matches(e, t))
        };
        while let Some(row) = rows.next()? {
            let id: i64 = row.get(0)?;
            let ts_min: i64 = row.get(1)?;
            while let Some(Reverse((ts, _, _))) = heap.peek() {
                if *ts >= ts_min {
                    break;
                }
                let Reverse((_, _, HeapEvent(e))) = heap.pop().expect("peeked");
                if !f(e) {
                    return Ok(());
                }
            }
            let frame: Vec<u8> = row.get(2)?;
            let batch = stored_frame(id, tapline_wire::decode(&frame))?;
            for e in batch.events.into_iter().filter(|e| keep(e)) {
                order += 1;
                heap.push(Reverse((e.ts_us, order, HeapEvent(e))));
            }
        }
        while let Some(Reverse((_, _, HeapEvent(e)))) = heap.pop() {
            if !f(e) {
                break;
            }
        }
        Ok(())
    }

    fn count(&self, q: &EventQuery) -> Result<u64, StoreError> {
        if q.actor.is_none() && q.endpoint.is_none() && q.since_us.is_none() && q.until_us.is_none()
        {
            // Whole batches: their event counts say it.
            let n: i64 = match &q.agent {
                Some(a) => self.conn.query_row(
                    "SELECT coalesce(sum(events), 0) FROM batches
                     WHERE agent_id = (SELECT id FROM agents WHERE name = ?1)",
                    [a],
                    |r| r.get(0),
                )?,
                None => self.conn.query_row(
                    "SELECT coalesce(sum(events), 0) FROM batches",
                    [],
                    |r| r.get(0),
                )?,
            };
            return Ok(n as u64);
        }
        let mut n = 0;
        self.query(q, &mut |_| {
            n += 1;
            true
        })?;
        Ok(n)
    }

    fn agents(&self) -> Result<Vec<AgentRow>, StoreError> {
        let mut stmt = self.conn.prepare(
            "SELECT name, cert, address, software, connected, first_seen, last_seen, last_seq,
                batches, events, duplicates, last_event_us, pending_batches, pending_bytes,
                dropped_batches, dropped_events, coverage, coverage_us FROM agents ORDER BY name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(AgentRow {
                name: r.get(0)?,
                cert: r.get(1)?,
                address: r.get(2)?,
                software: r.get(3)?,
                connected: r.get(4)?,
                first_seen: r.get(5)?,
                last_seen: r.get(6)?,
                last_seq: r.get::<_, Option<i64>>(7)?.map(|v| v as u64),
                batches: r.get::<_, i64>(8)? as u64,
                events: r.get::<_, i64>(9)? as u64,
                duplicates: r.get::<_, i64>(10)? as u64,
                last_event_us: r.get(11)?,
                pending_batches: r.get::<_, i64>(12)? as u64,
                pending_bytes: r.get::<_, i64>(13)? as u64,
                dropped_batches: r.get::<_, i64>(14)? as u64,
                dropped_events: r.get::<_, i64>(15)? as u64,
                coverage: r
                    .get::<_, Option<String>>(16)?
                    .and_then(|j| serde_json::from_str(&j).ok()),
                coverage_us: r.get(17)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn endpoints(&self, q: &EndpointQuery) -> Result<(Vec<EndpointRow>, u64), StoreError> {
        let mut filter = String::from(" FROM endpoints WHERE 1");
        let mut args: Vec<rusqlite::types::Value> = Vec::new();
        if let Some(m) = &q.method {
            filter.push_str(" AND method = ?");
            args.push(m.to_ascii_uppercase().into());
        }
        if let Some(t) = &q.contains {
            filter.push_str(" AND instr(lower(template), lower(?)) > 0");
            args.push(t.clone().into());
        }
        let total: i64 = self.conn.query_row(
            &format!("SELECT count(*){filter}"),
            rusqlite::params_from_iter(args.iter()),
            |r| r.get(0),
        )?;
        let order = match q.order {
            EndpointOrder::Events => "events DESC, template, method",
            EndpointOrder::FirstSeen => "first_us DESC, template, method",
            EndpointOrder::Template => "template, method",
        };
        let mut stmt = self.conn.prepare(&format!(
            "SELECT method, template, first_us, last_us, events{filter} ORDER BY {order} LIMIT {} OFFSET {}",
            q.limit.min(10_000),
            q.offset
        ))?;
        let rows = stmt
            .query_map(rusqlite::params_from_iter(args.iter()), |r| {
                Ok(EndpointRow {
                    method: r.get(0)?,
                    template: r.get(1)?,
                    first_us: r.get(2)?,
                    last_us: r.get(3)?,
                    events: r.get::<_, i64>(4)?.max(0) as u64,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok((rows, total.max(0) as u64))
    }

    fn prune(&mut self, now_us: i64) -> Result<Pruned, StoreError> {
        let today = now_us.div_euclid(DAY_US);
        let cutoff = today - i64::from(self.config.retention_days);
        let mut pruned = Pruned::default();
        let mut drop_days_before = |store: &mut SqliteStore, day: i64| -> Result<(), StoreError> {
            let tx = store.conn.transaction()?;
            let (b, e): (i64, i64) = tx.query_row(
                "SELECT count(*), coalesce(sum(events), 0) FROM batches WHERE day < ?1",
                [day],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )?;
            if b > 0 {
                tx.execute("DELETE FROM batches WHERE day < ?1", [day])?;
                tx.execute(
                    "DELETE FROM batch_terms WHERE batch_id NOT IN (SELECT id FROM batches)",
                    [],
                )?;
            }
            tx.commit()?;
            pruned.batches += b as u64;
            pruned.events += e as u64;
            Ok(())
        };
        drop_days_before(self, cutoff)?;
        while self.used_bytes()? > self.config.max_bytes {
            let oldest: Option<i64> = self
                .conn
                .query_row("SELECT min(day) FROM batches", [], |r| r.get(0))
                .optional()?
                .flatten();
            match oldest {
                Some(d) if d < today => drop_days_before(self, d + 1)?,
                _ => break,
            }
        }
        Ok(pruned)
    }

    fn close(&mut self) -> Result<(), StoreError> {
        self.flush_derived()
    }
}

fn kind_name(k: tapline_wire::ActorKind) -> &'static str {
    use tapline_wire::ActorKind::*;
    match k {
        ApiKey => "api_key",
        Bearer => "bearer",
        Jwt => "jwt",
        Basic => "basic",
        Session => "session",
        Login => "login",
        ClientIp => "client_ip",
    }
}

/// Events ordered by the heap only through their (time, arrival) key.
struct HeapEvent(Event);

impl PartialEq for HeapEvent {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for HeapEvent {}
impl PartialOrd for HeapEvent {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for HeapEvent {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AgentSeen;
    use std::net::{IpAddr, Ipv4Addr};
    use tapline_wire::{Actor, ActorKind, Batch, Endpoint, Entity, EntitySource};

    fn event(i: i64, sub: &str, endpoint: &str) -> Event {
        let ep = Endpoint {
            ip: IpAddr::V4(Ipv4Addr::LOCALHOST),
            port: 80,
        };
        Event {
            agent: String::new(),
            ts_us: 1_700_000_000_000_000 + i * 1_000_000,
            flow_id: i as u64,
            client: ep,
            server: ep,
            method: "GET".into(),
            endpoint: endpoint.into(),
            host: None,
            status: Some(200),
            request_bytes: 1,
            response_bytes: 2,
            latency_us: None,
            actors: vec![Actor {
                kind: ActorKind::Jwt,
                fingerprint: Some(0xabc),
                value: None,
                hint: None,
                claims: vec![("sub".into(), sub.into())],
                verified: None,
            }],
            entities: vec![Entity {
                kind: "invoice".into(),
                id: format!("inv_{i}"),
                source: EntitySource::Path,
            }],
            owners: vec![],
            user_agent: None,
            anomalies: vec![],
        }
    }

    fn incoming(agent: &str, seq: u64, events: Vec<Event>) -> IncomingBatch {
        let frame = tapline_wire::encode(&Batch {
            agent: agent.into(),
            seq,
            events,
        });
        let (batch, _) = tapline_wire::summarize(&frame).unwrap().unwrap();
        IncomingBatch {
            frame,
            batch,
            cert: agent.into(),
        }
    }

    /// A database file and its WAL files, removed when the test ends (after the store
    /// declared later is dropped), even when it fails.
    struct TempDb(std::path::PathBuf);

    impl TempDb {
        fn remove(&self) {
            for ext in ["", "-wal", "-shm"] {
                let _ = std::fs::remove_file(format!("{}{ext}", self.0.display()));
            }
        }
    }

    impl Drop for TempDb {
        fn drop(&mut self) {
            self.remove();
        }
    }

    impl std::ops::Deref for TempDb {
        type Target = std::path::Path;
        fn deref(&self) -> &std::path::Path {
            &self.0
        }
    }

    fn temp_db(name: &str) -> TempDb {
        let db = TempDb(
            std::env::temp_dir().join(format!("tapline-store-{name}-{}.db", std::process::id())),
        );
        db.remove();
        db
    }

    #[test]
    fn duplicates_are_acked_not_stored_and_queries_filter() {
        let path = temp_db("dedupe");
        let mut s = SqliteStore::open(&path, &StoreConfig::default()).unwrap();
        let a = incoming(
            "n1",
            5,
            (0..10).map(|i| event(i, "alice", "/a/{id}")).collect(),
        );
        let b = incoming("n1", 6, (10..15).map(|i| event(i, "bob", "/b")).collect());
        let again = incoming(
            "n1",
            5,
            (0..10).map(|i| event(i, "alice", "/a/{id}")).collect(),
        );
        let other = incoming("n2", 5, (20..22).map(|i| event(i, "bob", "/b")).collect());
        assert_eq!(
            s.append(&[a, b, again, other]).unwrap(),
            vec![
                Outcome::Stored,
                Outcome::Stored,
                Outcome::Duplicate,
                Outcome::Stored
            ]
        );
        let q = |q: EventQuery| s.count(&q).unwrap();
        assert_eq!(q(EventQuery::default()), 17);
        let actor = |t: &str| EventQuery {
            actor: Some(t.into()),
            ..Default::default()
        };
        assert_eq!(q(actor("sub=alice")), 10);
        assert_eq!(q(actor("bob")), 7);
        assert_eq!(q(actor("0000000000000abc")), 17);
        assert_eq!(q(actor("sub=carol")), 0);
        assert_eq!(
            q(EventQuery {
                endpoint: Some("GET /b".into()),
                agent: Some("n2".into()),
                ..Default::default()
            }),
            2
        );
        let since = EventQuery {
            since_us: Some(1_700_000_000_000_000 + 12 * 1_000_000),
            until_us: Some(1_700_000_000_000_000 + 21 * 1_000_000),
            ..Default::default()
        };
        assert_eq!(q(since.clone()), 4);
        // Time order across batches and agents.
        let mut ts = Vec::new();
        s.query(&EventQuery::default(), &mut |e| {
            ts.push(e.ts_us);
            true
        })
        .unwrap();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]));
        let agents = s.agents().unwrap();
        assert_eq!(agents[0].duplicates, 1);
        assert_eq!(agents[0].last_seq, Some(6));
    }

    #[test]
    fn derived_tables_catch_up_after_a_crash_without_double_counting() {
        let path = temp_db("catchup");
        {
            let mut s = SqliteStore::open(&path, &StoreConfig::default()).unwrap();
            s.append(&[incoming(
                "n1",
                1,
                (0..4).map(|i| event(i, "alice", "/a")).collect(),
            )])
            .unwrap();
            s.flush_derived().unwrap();
            s.append(&[incoming(
                "n1",
                2,
                (4..10).map(|i| event(i, "alice", "/a")).collect(),
            )])
            .unwrap();
            // Dropped without close: the second batch's derived rows were never written.
        }
        let s = SqliteStore::open(&path, &StoreConfig::default()).unwrap();
        let n: i64 = s
            .conn
            .query_row(
                "SELECT events FROM endpoints WHERE template = '/a'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(n, 10);
        let n: i64 = s
            .conn
            .query_row("SELECT count(*) FROM entities", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 10);
    }

    #[test]
    fn retention_removes_old_days_and_their_index() {
        let path = temp_db("prune");
        let mut s = SqliteStore::open(&path, &StoreConfig::default()).unwrap();
        s.append(&[
            incoming("n1", 1, (0..3).map(|i| event(i, "a", "/a")).collect()),
            incoming("n1", 2, (3..5).map(|i| event(i, "a", "/a")).collect()),
        ])
        .unwrap();
        s.agent_status(
            &AgentSeen {
                status: Default::default(),
                cert: "n1".into(),
                peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
            },
            false,
        )
        .unwrap();
        s.conn
            .execute("UPDATE batches SET day = day - 40 WHERE seq = 1", [])
            .unwrap();
        let p = s.prune(now_us()).unwrap();
        assert_eq!((p.batches, p.events), (1, 3));
        assert_eq!(s.count(&EventQuery::default()).unwrap(), 2);
        let orphans: i64 = s
            .conn
            .query_row(
                "SELECT count(*) FROM batch_terms WHERE batch_id NOT IN (SELECT id FROM batches)",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(orphans, 0);
    }
}
