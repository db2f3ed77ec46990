//! Tapline collector: receives events from many agents over mutual TLS, stores them,
//! learns baselines and runs detectors on them out of band, and serves the alerts.
//!
//! Stages, in data-path order: [`ingest`] → [`store`] → [`baseline`] → [`detect`] →
//! [`score`] → [`alert`] (→ [`export`]). [`pki`] makes and checks the certificates agents
//! connect with; [`geo`] places addresses.

pub mod alert;
pub mod api;
pub mod auth;
pub mod baseline;
pub mod config;
pub mod detect;
pub mod export;
pub mod geo;
pub mod ingest;
pub mod metrics;
pub mod pki;
pub mod score;
pub mod store;
pub mod ui;
pub mod views;

/// A log line on standard error, with its time.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {
        eprintln!(
            "{} {}",
            humantime::format_rfc3339_seconds(std::time::SystemTime::now()),
            format_args!($($arg)*)
        )
    };
}
