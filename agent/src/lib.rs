//! Tapline agent library: the passive HTTP data path.
//!
//! Stages, in data-path order: [`capture`] → [`decode`] → [`reassembly`] → [`http`].
//! The parsing core (decode, reassembly, http) does no I/O: bytes in, records out.

pub mod capture;
pub mod config;
pub mod decode;
pub mod extract;
pub mod fuzzing;
pub mod http;
pub mod live;
pub mod output;
pub mod pipeline;
pub mod reassembly;
pub mod ship;
pub mod stats;
