//! The `score` stage: models on the detectors' findings, because false positives are
//! the enemy. A finding's strength is weighed by how sensitive the endpoint is (learned
//! from traffic: writes, money movement, personal data in answers; overridable), by
//! context factors the detectors attach (a VPN egress, a country the actor was seen in,
//! a new device, a population-wide shift), and by the actor's accumulated risk. The
//! score gives the severity; findings that end below `low` are dropped and counted.

use serde::{Deserialize, Serialize};

use crate::alert::{Factor, Severity};

/// What the population teaches about an endpoint's sensitivity.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EndpointTraits {
    pub events: u32,
    /// Answers naming people or customers (user, customer, email entities or owners).
    pub personal: u32,
}

const MONEY_WORDS: [&str; 8] = [
    "charge", "refund", "payment", "payout", "transfer", "invoice", "billing", "withdraw",
];
const ADMIN_WORDS: [&str; 6] = ["admin", "role", "permission", "users", "keys", "settings"];

/// Sensitivity in [0.1, 1] of `method template`, and the reasons.
pub fn sensitivity(
    method: &str,
    template: &str,
    traits: &EndpointTraits,
    overrides: &std::collections::BTreeMap<String, f64>,
) -> (f64, Vec<&'static str>) {
    if let Some(v) = overrides.get(&format!("{method} {template}")) {
        return (v.clamp(0.0, 1.0), vec!["configured"]);
    }
    let mut s: f64 = 0.2;
    let mut why = Vec::new();
    let lower = template.to_ascii_lowercase();
    if !matches!(method, "GET" | "HEAD" | "OPTIONS") {
        s += 0.25;
        why.push("write");
    }
    if method == "DELETE" {
        s += 0.15;
        why.push("delete");
    }
    if MONEY_WORDS.iter().any(|w| lower.contains(w)) {
        s += if method == "GET" { 0.1 } else { 0.3 };
        why.push("money");
    }
    if ADMIN_WORDS.iter().any(|w| lower.contains(w)) {
        s += 0.1;
        why.push("account");
    }
    if traits.events >= 10 && traits.personal * 5 >= traits.events {
        s += 0.15;
        why.push("personal data");
    }
    (s.clamp(0.1, 1.0), why)
}

/// Severity of a score.
pub fn severity(score: f64) -> Severity {
    match score {
        s if s >= 1.0 => Severity::Critical,
        s if s >= 0.7 => Severity::High,
        s if s >= 0.45 => Severity::Medium,
        s if s >= 0.25 => Severity::Low,
        _ => Severity::Info,
    }
}

/// The score of a finding: strength × (0.5 + sensitivity) × context, plus a share of
/// the actor's risk unless context lowered the finding by half or more. Returns the score and the factors, sensitivity and risk included.
pub fn score(strength: f64, sensitivity: f64, context: &[Factor], risk: f64) -> (f64, Vec<Factor>) {
    let mut factors = vec![Factor {
        name: "sensitivity".into(),
        weight: 0.5 + sensitivity,
        detail: format!("endpoint sensitivity {sensitivity:.2}"),
    }];
    let mut s = strength * (0.5 + sensitivity);
    let mut context_weight = 1.0;
    for f in context {
        context_weight *= f.weight;
        factors.push(f.clone());
    }
    s *= context_weight;
    // Risk raises findings that stand on their own, not those context explains away.
    let from_risk = if context_weight >= 0.5 {
        0.1 * risk.min(3.0)
    } else {
        0.0
    };
    if from_risk >= 0.01 {
        factors.push(Factor {
            name: "actor_risk".into(),
            weight: 1.0 + from_risk / s.max(0.01),
            detail: format!("accumulated risk {risk:.2} adds {from_risk:.2}"),
        });
        s += from_risk;
    }
    (s, factors)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_and_money_are_more_sensitive_than_reads() {
        let none = Default::default();
        let t = EndpointTraits::default();
        let (read, _) = sensitivity("GET", "/v1/customers/{customer}", &t, &none);
        let (refund, why) = sensitivity("POST", "/v1/refunds", &t, &none);
        assert!(refund > read + 0.3, "{refund} {read}");
        assert!(why.contains(&"money"));
        let mut o = std::collections::BTreeMap::new();
        o.insert("GET /health".to_string(), 0.0);
        assert_eq!(sensitivity("GET", "/health", &t, &o).0, 0.0);
    }

    #[test]
    fn context_lowers_and_risk_raises() {
        let (plain, _) = score(0.8, 0.4, &[], 0.0);
        let vpn = Factor {
            name: "relay".into(),
            weight: 0.3,
            detail: String::new(),
        };
        let (lowered, factors) = score(0.8, 0.4, &[vpn], 0.0);
        assert!(lowered < plain);
        assert_eq!(factors.len(), 2);
        let (risky, _) = score(0.8, 0.4, &[], 2.0);
        assert!(risky > plain);
        assert_eq!(severity(plain), Severity::High);
        assert_eq!(severity(lowered), Severity::Info);
    }
}
