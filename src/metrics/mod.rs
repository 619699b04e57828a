//! Prometheus metrics and the health endpoints, on `[server] metrics` (off unless set).
//!
//! Counting happens on the query path, so it is plain atomics kept per route (by name,
//! so counts survive a reload) and per upstream; nothing there takes a lock or hashes
//! a label set. At scrape time a prometheus-client `Collector` (`collect`) reads them
//! and encodes the exposition text: zonefwd does not write that format by hand.
//! `http` serves `/metrics`, `/healthz` and `/readyz`.
//!
//! This module depends on nothing of the request path: what it reads of the running
//! configuration comes through `Observed`, which the server implements.

mod collect;
mod counts;
mod http;

pub use collect::registry;
pub use counts::{Metrics, Observed, RouteMetrics, Sources};
pub use http::serve_http;
