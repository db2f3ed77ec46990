//! Batch format version 1. Frozen: once released, this module only changes to fix
//! decoding bugs, so batches of agents that write version 1 stay readable forever.
//!
//! Every string, address, flow and actor is stored once per batch in a table and events
//! refer to it by index; timestamps are deltas from the previous event. The body is
//! postcard (varint integers, length-prefixed sequences).

use foldhash::HashMap;
use std::hash::Hash;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::event::{Actor, ActorKind, Endpoint, Entity, EntitySource, Event, Owner};
use crate::{Batch, MAX_EVENTS, Seen, Summary, WireError};

#[derive(Debug, Serialize, Deserialize)]
struct BodyV1 {
    agent: String,
    seq: u64,
    strings: Vec<String>,
    addrs: Vec<Addr>,
    flows: Vec<FlowV1>,
    actors: Vec<ActorV1>,
    events: Columns,
}

/// The events column by column: values of one field sit together, which compresses far
/// better than event after event.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Columns {
    dt: Vec<i64>,
    flow: Vec<u32>,
    method: Vec<u32>,
    endpoint: Vec<u32>,
    host: Vec<Option<u32>>,
    status: Vec<Option<u16>>,
    request_bytes: Vec<u64>,
    response_bytes: Vec<u64>,
    latency_us: Vec<Option<u64>>,
    actors: Vec<Vec<u32>>,
    entities: Vec<Vec<(u32, u32, u8)>>,
    owners: Vec<Vec<(u32, u32)>>,
    user_agent: Vec<Option<u32>>,
    anomalies: Vec<Vec<u32>>,
}

impl Columns {
    fn push(&mut self, e: EventV1) {
        self.dt.push(e.dt);
        self.flow.push(e.flow);
        self.method.push(e.method);
        self.endpoint.push(e.endpoint);
        self.host.push(e.host);
        self.status.push(e.status);
        self.request_bytes.push(e.request_bytes);
        self.response_bytes.push(e.response_bytes);
        self.latency_us.push(e.latency_us);
        self.actors.push(e.actors);
        self.entities.push(e.entities);
        self.owners.push(e.owners);
        self.user_agent.push(e.user_agent);
        self.anomalies.push(e.anomalies);
    }

    fn into_events(self) -> Result<Vec<EventV1>, WireError> {
        let n = self.dt.len();
        let lens = [
            self.flow.len(),
            self.method.len(),
            self.endpoint.len(),
            self.host.len(),
            self.status.len(),
            self.request_bytes.len(),
            self.response_bytes.len(),
            self.latency_us.len(),
            self.actors.len(),
            self.entities.len(),
            self.owners.len(),
            self.user_agent.len(),
            self.anomalies.len(),
        ];
        if lens.iter().any(|&l| l != n) {
            return Err(WireError::Decode("columns of different lengths".into()));
        }
        if n > MAX_EVENTS {
            return Err(WireError::TooManyEvents);
        }
        let mut cols = (
            self.flow.into_iter(),
            self.method.into_iter(),
            self.endpoint.into_iter(),
            self.host.into_iter(),
            self.status.into_iter(),
            self.request_bytes.into_iter(),
            self.response_bytes.into_iter(),
            self.latency_us.into_iter(),
            self.actors.into_iter(),
            self.entities.into_iter(),
            self.owners.into_iter(),
            self.user_agent.into_iter(),
            self.anomalies.into_iter(),
        );
        let mut out = Vec::with_capacity(n);
        for dt in self.dt {
            // Lengths were checked: every column has a value here.
            let (
                Some(flow),
                Some(method),
                Some(endpoint),
                Some(host),
                Some(status),
                Some(request_bytes),
                Some(response_bytes),
                Some(latency_us),
                Some(actors),
                Some(entities),
                Some(owners),
                Some(user_agent),
                Some(anomalies),
            ) = (
                cols.0.next(),
                cols.1.next(),
                cols.2.next(),
                cols.3.next(),
                cols.4.next(),
                cols.5.next(),
                cols.6.next(),
                cols.7.next(),
                cols.8.next(),
                cols.9.next(),
                cols.10.next(),
                cols.11.next(),
                cols.12.next(),
            )
            else {
                return Err(WireError::Decode("short column".into()));
            };
            out.push(EventV1 {
                dt,
                flow,
                method,
                endpoint,
                host,
                status,
                request_bytes,
                response_bytes,
                latency_us,
                actors,
                entities,
                owners,
                user_agent,
                anomalies,
            });
        }
        Ok(out)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
enum Addr {
    V4([u8; 4]),
    V6([u8; 16]),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct FlowV1 {
    id: u64,
    client: u32,
    client_port: u16,
    server: u32,
    server_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
struct ActorV1 {
    kind: u8,
    fingerprint: Option<[u8; 8]>,
    value: Option<u32>,
    hint: Option<u32>,
    claims: Vec<(u32, u32)>,
    verified: Option<bool>,
}

/// One event's values, indices into the batch tables.
#[derive(Debug)]
struct EventV1 {
    /// Microseconds since the previous event (the first: since the epoch).
    dt: i64,
    flow: u32,
    method: u32,
    endpoint: u32,
    host: Option<u32>,
    status: Option<u16>,
    request_bytes: u64,
    response_bytes: u64,
    latency_us: Option<u64>,
    actors: Vec<u32>,
    entities: Vec<(u32, u32, u8)>,
    owners: Vec<(u32, u32)>,
    user_agent: Option<u32>,
    anomalies: Vec<u32>,
}

/// Assigns each distinct value an index, in first-seen order.
struct Table<T> {
    index: HashMap<T, u32>,
    items: Vec<T>,
}

impl<T: Clone + Eq + Hash> Table<T> {
    fn new() -> Self {
        Table {
            index: HashMap::default(),
            items: Vec::new(),
        }
    }

    fn id(&mut self, v: &T) -> u32 {
        if let Some(&i) = self.index.get(v) {
            return i;
        }
        let i = self.items.len() as u32;
        self.index.insert(v.clone(), i);
        self.items.push(v.clone());
        i
    }
}

impl Table<String> {
    fn str(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        self.id(&s.to_string())
    }
}

fn addr(ip: IpAddr) -> Addr {
    match ip {
        IpAddr::V4(v4) => Addr::V4(v4.octets()),
        IpAddr::V6(v6) => Addr::V6(v6.octets()),
    }
}

pub(crate) fn encode_body(batch: &Batch) -> Vec<u8> {
    let mut strings: Table<String> = Table::new();
    let mut addrs: Table<Addr> = Table::new();
    let mut flows: Table<FlowV1> = Table::new();
    let mut actors: Table<ActorV1> = Table::new();
    let mut events = Columns::default();
    let mut prev_ts = 0i64;
    for e in &batch.events {
        let flow = FlowV1 {
            id: e.flow_id,
            client: addrs.id(&addr(e.client.ip)),
            client_port: e.client.port,
            server: addrs.id(&addr(e.server.ip)),
            server_port: e.server.port,
        };
        let actor_ids = e
            .actors
            .iter()
            .map(|a| {
                let v = ActorV1 {
                    kind: a.kind.code(),
                    fingerprint: a.fingerprint.map(u64::to_le_bytes),
                    value: a.value.as_deref().map(|s| strings.str(s)),
                    hint: a.hint.as_deref().map(|s| strings.str(s)),
                    claims: a
                        .claims
                        .iter()
                        .map(|(k, v)| (strings.str(k), strings.str(v)))
                        .collect(),
                    verified: a.verified,
                };
                actors.id(&v)
            })
            .collect();
        events.push(EventV1 {
            dt: e.ts_us.wrapping_sub(prev_ts),
            flow: flows.id(&flow),
            method: strings.str(&e.method),
            endpoint: strings.str(&e.endpoint),
            host: e.host.as_deref().map(|s| strings.str(s)),
            status: e.status,
            request_bytes: e.request_bytes,
            response_bytes: e.response_bytes,
            latency_us: e.latency_us,
            actors: actor_ids,
            entities: e
                .entities
                .iter()
                .map(|en| (strings.str(&en.kind), strings.str(&en.id), en.source.code()))
                .collect(),
            owners: e
                .owners
                .iter()
                .map(|o| (strings.str(&o.field), strings.str(&o.value)))
                .collect(),
            user_agent: e.user_agent.as_deref().map(|s| strings.str(s)),
            anomalies: e.anomalies.iter().map(|a| strings.str(a)).collect(),
        });
        prev_ts = e.ts_us;
    }
    let body = BodyV1 {
        agent: batch.agent.clone(),
        seq: batch.seq,
        strings: strings.items,
        addrs: addrs.items,
        flows: flows.items,
        actors: actors.items,
        events,
    };
    postcard::to_stdvec(&body).expect("serializing to a Vec cannot fail")
}

fn get<T>(items: &[T], i: u32) -> Result<&T, WireError> {
    items.get(i as usize).ok_or(WireError::BadIndex)
}

/// The batch's actor table, every index checked.
fn decode_actors(b: &BodyV1) -> Result<Vec<Actor>, WireError> {
    let s = |i: u32| get(&b.strings, i).cloned();
    b.actors
        .iter()
        .map(|a| {
            Ok(Actor {
                kind: ActorKind::from_code(a.kind).ok_or(WireError::BadIndex)?,
                fingerprint: a.fingerprint.map(u64::from_le_bytes),
                value: a.value.map(s).transpose()?,
                hint: a.hint.map(s).transpose()?,
                claims: a
                    .claims
                    .iter()
                    .map(|&(k, v)| Ok((s(k)?, s(v)?)))
                    .collect::<Result<_, WireError>>()?,
                verified: a.verified,
            })
        })
        .collect()
}

pub(crate) fn decode_body(body: &[u8]) -> Result<Batch, WireError> {
    let mut b: BodyV1 = postcard::from_bytes(body).map_err(|e| WireError::Decode(e.to_string()))?;
    let columns = std::mem::take(&mut b.events);
    let rows = columns.into_events()?;
    let s = |i: u32| get(&b.strings, i).cloned();
    let ip = |i: u32| -> Result<IpAddr, WireError> {
        Ok(match *get(&b.addrs, i)? {
            Addr::V4(o) => IpAddr::from(o),
            Addr::V6(o) => IpAddr::from(o),
        })
    };
    let actors = decode_actors(&b)?;
    let mut ts = 0i64;
    let mut events = Vec::with_capacity(rows.len());
    for e in &rows {
        ts = ts.wrapping_add(e.dt);
        let f = get(&b.flows, e.flow)?;
        events.push(Event {
            agent: b.agent.clone(),
            ts_us: ts,
            flow_id: f.id,
            client: Endpoint {
                ip: ip(f.client)?,
                port: f.client_port,
            },
            server: Endpoint {
                ip: ip(f.server)?,
                port: f.server_port,
            },
            method: s(e.method)?,
            endpoint: s(e.endpoint)?,
            host: e.host.map(s).transpose()?,
            status: e.status,
            request_bytes: e.request_bytes,
            response_bytes: e.response_bytes,
            latency_us: e.latency_us,
            actors: e
                .actors
                .iter()
                .map(|&i| get(&actors, i).cloned())
                .collect::<Result<_, _>>()?,
            entities: e
                .entities
                .iter()
                .map(|&(k, id, src)| {
                    Ok(Entity {
                        kind: s(k)?,
                        id: s(id)?,
                        source: EntitySource::from_code(src).ok_or(WireError::BadIndex)?,
                    })
                })
                .collect::<Result<_, WireError>>()?,
            owners: e
                .owners
                .iter()
                .map(|&(f, v)| {
                    Ok(Owner {
                        field: s(f)?,
                        value: s(v)?,
                    })
                })
                .collect::<Result<_, WireError>>()?,
            user_agent: e.user_agent.map(s).transpose()?,
            anomalies: e
                .anomalies
                .iter()
                .map(|&a| s(a))
                .collect::<Result<_, _>>()?,
        });
    }
    Ok(Batch {
        agent: b.agent,
        seq: b.seq,
        events,
    })
}

/// A batch's summary without building its events: every index is still checked, so a
/// batch that summarizes also decodes.
pub(crate) fn summarize_body(body: &[u8]) -> Result<Summary, WireError> {
    let b: BodyV1 = postcard::from_bytes(body).map_err(|e| WireError::Decode(e.to_string()))?;
    let c = &b.events;
    let n = c.dt.len();
    let lens = [
        c.flow.len(),
        c.method.len(),
        c.endpoint.len(),
        c.host.len(),
        c.status.len(),
        c.request_bytes.len(),
        c.response_bytes.len(),
        c.latency_us.len(),
        c.actors.len(),
        c.entities.len(),
        c.owners.len(),
        c.user_agent.len(),
        c.anomalies.len(),
    ];
    if lens.iter().any(|&l| l != n) {
        return Err(WireError::Decode("columns of different lengths".into()));
    }
    if n > MAX_EVENTS {
        return Err(WireError::TooManyEvents);
    }
    let strings = b.strings.len();
    let str_ok = |i: u32| {
        if (i as usize) < strings {
            Ok(())
        } else {
            Err(WireError::BadIndex)
        }
    };
    for f in &b.flows {
        get(&b.addrs, f.client)?;
        get(&b.addrs, f.server)?;
    }
    let actors = decode_actors(&b)?;
    let mut actor_seen: Vec<Option<Seen>> = vec![None; actors.len()];
    let mut endpoints: HashMap<(u32, u32), Seen> = HashMap::default();
    let mut entities: HashMap<(u32, u32), Seen> = HashMap::default();
    let (mut ts, mut ts_min, mut ts_max) = (0i64, i64::MAX, i64::MIN);
    for k in 0..n {
        ts = ts.wrapping_add(c.dt[k]);
        ts_min = ts_min.min(ts);
        ts_max = ts_max.max(ts);
        get(&b.flows, c.flow[k])?;
        str_ok(c.method[k])?;
        str_ok(c.endpoint[k])?;
        c.host[k].map(str_ok).transpose()?;
        c.user_agent[k].map(str_ok).transpose()?;
        for &a in &c.actors[k] {
            let slot = actor_seen.get_mut(a as usize).ok_or(WireError::BadIndex)?;
            match slot {
                Some(s) => s.add(ts),
                None => *slot = Some(Seen::at(ts)),
            }
        }
        endpoints
            .entry((c.method[k], c.endpoint[k]))
            .and_modify(|s| s.add(ts))
            .or_insert(Seen::at(ts));
        for &(kind, id, src) in &c.entities[k] {
            str_ok(kind)?;
            str_ok(id)?;
            EntitySource::from_code(src).ok_or(WireError::BadIndex)?;
            entities
                .entry((kind, id))
                .and_modify(|s| s.add(ts))
                .or_insert(Seen::at(ts));
        }
        for &(f, v) in &c.owners[k] {
            str_ok(f)?;
            str_ok(v)?;
        }
        for &a in &c.anomalies[k] {
            str_ok(a)?;
        }
    }
    let s = |i: u32| b.strings[i as usize].clone();
    Ok(Summary {
        events: n,
        ts_min: if n == 0 { 0 } else { ts_min },
        ts_max: if n == 0 { 0 } else { ts_max },
        actors: actors
            .into_iter()
            .zip(actor_seen)
            .filter_map(|(a, s)| Some((a, s?)))
            .collect(),
        endpoints: endpoints
            .into_iter()
            .map(|((m, e), seen)| (s(m), s(e), seen))
            .collect(),
        entities: entities
            .into_iter()
            .map(|((k, id), seen)| (s(k), s(id), seen))
            .collect(),
        agent: b.agent,
        seq: b.seq,
    })
}
