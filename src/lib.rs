//! zonefwd: a conditional DNS forwarder. Private cloud zones go to the cloud's
//! in-network resolver, everything else to on-prem DNS; replies are relayed as the
//! upstream sent them.
//!
//! `run` takes a validated `Config`, already-bound `Listeners` and a shutdown future,
//! so tests start the whole server in-process on port 0.
#![forbid(unsafe_code)]

pub mod acl;
pub mod cache;
pub mod claims;
pub mod clients;
pub mod config;
pub mod diagnose;
#[doc(hidden)]
pub mod fuzzing;
pub mod handler;
pub mod loopcheck;
pub mod metrics;
pub mod notify;
pub mod onprem;
pub mod presets;
pub mod report;
pub mod resolver;
pub mod router;
pub mod server;
pub mod throttle;
pub mod udp_batch;
pub mod upstream;
pub mod wire;

pub use config::{Config, LoadEnv};
pub use server::{run, run_with, Control, Listeners};
