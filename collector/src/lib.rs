//! Tapline collector: receives events from many agents over mutual TLS, stores them and
//! (in later stages) runs baselines and detectors on them.
//!
//! Stages, in data-path order: [`ingest`] → [`store`] (→ baseline → detect → score →
//! alert). [`pki`] makes and checks the certificates agents connect with.

pub mod config;
pub mod ingest;
pub mod metrics;
pub mod pki;
pub mod store;

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
