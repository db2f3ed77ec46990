//! The `alert` stage: what an analyst reads. Each alert says who (the actor, its
//! fingerprint and clear claims, its addresses), what (type, endpoint, severity, score),
//! when (first and last event time), and why: what was observed against which baseline
//! over which window, the factors that raised or lowered it with their weights, and a
//! sample of the events behind it.

use serde::{Deserialize, Serialize};

use crate::baseline::ActorDisplay;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum AlertType {
    RateSpike,
    ImpossibleTravel,
    TokenSharing,
    Bola,
    PermissionViolation,
    Enumeration,
    CredentialStuffing,
    DataExfiltration,
    NewEndpoint,
}

impl AlertType {
    pub const ALL: [AlertType; 9] = [
        AlertType::RateSpike,
        AlertType::ImpossibleTravel,
        AlertType::TokenSharing,
        AlertType::Bola,
        AlertType::PermissionViolation,
        AlertType::Enumeration,
        AlertType::CredentialStuffing,
        AlertType::DataExfiltration,
        AlertType::NewEndpoint,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AlertType::RateSpike => "rate_spike",
            AlertType::ImpossibleTravel => "impossible_travel",
            AlertType::TokenSharing => "token_sharing",
            AlertType::Bola => "bola",
            AlertType::PermissionViolation => "permission_violation",
            AlertType::Enumeration => "enumeration",
            AlertType::CredentialStuffing => "credential_stuffing",
            AlertType::DataExfiltration => "data_exfiltration",
            AlertType::NewEndpoint => "new_endpoint",
        }
    }

    pub fn parse(s: &str) -> Option<AlertType> {
        AlertType::ALL.into_iter().find(|t| t.name() == s)
    }
}

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    #[default]
    Info,
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub const ALL: [Severity; 5] = [
        Severity::Info,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    pub fn parse(s: &str) -> Option<Severity> {
        Severity::ALL.into_iter().find(|v| v.name() == s)
    }

    pub fn code(self) -> i64 {
        self as i64
    }

    pub fn from_code(c: i64) -> Severity {
        Severity::ALL
            .get(c.clamp(0, 4) as usize)
            .copied()
            .unwrap_or_default()
    }
}

/// What an analyst decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AlertStatus {
    #[default]
    Open,
    Resolved,
    FalsePositive,
}

impl AlertStatus {
    pub fn name(self) -> &'static str {
        match self {
            AlertStatus::Open => "open",
            AlertStatus::Resolved => "resolved",
            AlertStatus::FalsePositive => "false_positive",
        }
    }

    pub fn parse(s: &str) -> AlertStatus {
        match s {
            "resolved" => AlertStatus::Resolved,
            "false_positive" => AlertStatus::FalsePositive,
            _ => AlertStatus::Open,
        }
    }
}

/// One thing that raised or lowered an alert, with how much.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Factor {
    pub name: String,
    /// Multiplies the score (above 1 raises, below 1 lowers).
    pub weight: f64,
    pub detail: String,
}

/// Why: observed against baseline over a window, and the factors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Explanation {
    pub summary: String,
    pub observed: f64,
    pub baseline: f64,
    pub unit: String,
    pub window: String,
    pub factors: Vec<Factor>,
}

/// One event behind an alert, as the analyst needs it (no secrets).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub ts_us: i64,
    pub method: String,
    pub endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    pub client_ip: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub place: Option<String>,
    pub response_bytes: u64,
}

/// Evidence events kept per alert.
pub const MAX_EVIDENCE: usize = 8;
/// Source addresses kept per alert.
pub const MAX_SOURCES: usize = 16;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable for the same findings: replaying the same events gives the same ids.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: AlertType,
    pub severity: Severity,
    pub score: f64,
    /// Stable id of the actor (16 hex digits), for filtering and suppression.
    pub actor_id: String,
    pub actor: ActorDisplay,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    pub source_ips: Vec<String>,
    /// `POST /v1/refunds`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    pub first_seen_us: i64,
    pub last_seen_us: i64,
    /// Findings merged into this alert.
    pub count: u64,
    pub explanation: Explanation,
    pub evidence: Vec<Evidence>,
    #[serde(default)]
    pub status: AlertStatus,
}

impl Alert {
    /// One line for a terminal.
    pub fn line(&self) -> String {
        let who = match self.actor.claims.iter().find(|(k, _)| k == "sub") {
            Some((_, sub)) => format!("{} {} (sub={sub})", self.actor.kind, self.actor.key),
            None => format!("{} {}", self.actor.kind, self.actor.key),
        };
        format!(
            "{} {:<8} {:<20} {:>5.2} {} {} {}: {}",
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH
                    + std::time::Duration::from_micros(self.first_seen_us.max(0) as u64)
            ),
            self.severity.name(),
            self.kind.name(),
            self.score,
            self.id,
            who,
            self.endpoint.as_deref().unwrap_or("-"),
            self.explanation.summary
        )
    }
}

/// An analyst's "not again": findings of this type on this actor (and endpoint) are
/// dropped until it expires; each drop is counted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Suppression {
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: AlertType,
    pub actor_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Wall-clock microseconds.
    pub created_us: i64,
    pub expires_us: i64,
    /// The alert it came from.
    pub alert_id: String,
    pub reason: String,
}

impl Suppression {
    pub fn matches(&self, kind: AlertType, actor_id: &str, endpoint: Option<&str>) -> bool {
        self.kind == kind
            && self.actor_id == actor_id
            && (self.endpoint.is_none() || self.endpoint.as_deref() == endpoint)
    }
}

/// An analyst's decision on an alert, as the CLI (`alerts resolve`) and the API
/// (`POST /api/alerts/{id}/resolve`) take it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feedback {
    /// Not an attack: also suppress this type of alert for this actor and endpoint.
    #[serde(default)]
    pub false_positive: bool,
    /// Why, kept with the suppression [default: "false positive"].
    #[serde(default)]
    pub reason: Option<String>,
    /// Days the suppression lasts [default: `detect.suppress_days`].
    #[serde(default)]
    pub days: Option<u32>,
}

/// Longest reason kept with a suppression.
pub const MAX_REASON: usize = 500;
/// Longest suppression, in days.
pub const MAX_SUPPRESS_DAYS: u32 = 3650;

/// Records `feedback` on alert `id`: resolved, or false positive with the suppression
/// it implies. `None` when no alert has that id; the alert as it now stands otherwise.
pub fn resolve(
    store: &mut dyn crate::store::AlertStore,
    id: &str,
    feedback: &Feedback,
    default_days: u32,
    now_us: i64,
) -> Result<Option<(Alert, Option<Suppression>)>, crate::store::StoreError> {
    let Some(mut alert) = store.alert(id)? else {
        return Ok(None);
    };
    let days = feedback.days.unwrap_or(default_days).min(MAX_SUPPRESS_DAYS);
    let reason: String = feedback
        .reason
        .as_deref()
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .unwrap_or("false positive")
        .chars()
        .take(MAX_REASON)
        .collect();
    let suppression = feedback.false_positive.then(|| Suppression {
        id: 0,
        kind: alert.kind,
        actor_id: alert.actor_id.clone(),
        endpoint: alert.endpoint.clone(),
        created_us: now_us,
        expires_us: now_us + i64::from(days) * 86_400_000_000,
        alert_id: alert.id.clone(),
        reason,
    });
    let status = if feedback.false_positive {
        AlertStatus::FalsePositive
    } else {
        AlertStatus::Resolved
    };
    if !store.set_status(id, status, suppression.as_ref())? {
        return Ok(None);
    }
    alert.status = status;
    Ok(Some((alert, suppression)))
}
