//! The event in its decoded form: what the agent produces and the collector stores.
//! Every secret has already been replaced by a keyed fingerprint.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// One API call: who acted, on what, with what result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The agent (node) that saw the call. On the wire it is the batch's, once.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub agent: String,
    /// Packet time of the request (microseconds since the Unix epoch).
    pub ts_us: i64,
    pub flow_id: u64,
    pub client: Endpoint,
    pub server: Endpoint,
    pub method: String,
    /// The endpoint template (`/v1/customers/{customer}`), not the raw path.
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    /// From the request's first packet to the response's first packet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub actors: Vec<Actor>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entities: Vec<Entity>,
    /// Ownership hints from the response (`tenant`, `customer_id`, … of the returned
    /// objects): the collector's broken-object-level-authorization model compares them
    /// with the actor's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub owners: Vec<Owner>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_agent: Option<String>,
    /// HTTP anomaly names of the transaction.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub anomalies: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
}

/// How an identity was presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ActorKind {
    /// An API key (header or query parameter).
    ApiKey,
    /// An opaque bearer token.
    Bearer,
    /// A JSON Web Token (bearer); its configured claims travel in clear.
    Jwt,
    /// HTTP Basic authentication: the user name in clear, never the password.
    Basic,
    /// A session cookie.
    Session,
    /// The user name submitted to a login endpoint (fingerprinted).
    Login,
    /// The client address (after trusted proxies).
    ClientIp,
}

impl ActorKind {
    pub const ALL: [ActorKind; 7] = [
        ActorKind::ApiKey,
        ActorKind::Bearer,
        ActorKind::Jwt,
        ActorKind::Basic,
        ActorKind::Session,
        ActorKind::Login,
        ActorKind::ClientIp,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(c: u8) -> Option<ActorKind> {
        ActorKind::ALL.get(usize::from(c)).copied()
    }
}

/// One identity a request carried.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Actor {
    pub kind: ActorKind,
    /// Keyed fingerprint of the secret (64 bits); absent for identities that are not
    /// secret (client address, Basic user name).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "hex_fingerprint"
    )]
    pub fingerprint: Option<u64>,
    /// A clear value that is not a secret: the client address, a Basic user name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// A short display hint (the last characters of a key) for analysts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// Configured claims of a JWT, in clear.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claims: Vec<(String, String)>,
    /// For a JWT: whether its signature was checked against a configured key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verified: Option<bool>,
}

/// Where an entity id was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntitySource {
    Path,
    Query,
    RequestBody,
    ResponseBody,
}

impl EntitySource {
    pub const ALL: [EntitySource; 4] = [
        EntitySource::Path,
        EntitySource::Query,
        EntitySource::RequestBody,
        EntitySource::ResponseBody,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(c: u8) -> Option<EntitySource> {
        EntitySource::ALL.get(usize::from(c)).copied()
    }
}

/// A business entity the call touched: `customer` `cus_8a7F3k`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entity {
    pub kind: String,
    pub id: String,
    pub source: EntitySource,
}

/// An ownership hint: a field of the returned object and its value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    pub field: String,
    pub value: String,
}

/// Fingerprints are shown as 16 hex digits in JSON.
mod hex_fingerprint {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(f) => s.serialize_str(&format!("{f:016x}")),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        s.map(|s| u64::from_str_radix(&s, 16).map_err(serde::de::Error::custom))
            .transpose()
    }
}
