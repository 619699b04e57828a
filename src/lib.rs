//! zonefwd: a conditional DNS forwarder. Private cloud zones go to the cloud's
//! in-network resolver, everything else to on-prem DNS; replies are relayed as the
//! upstream sent them.
//!
//! `run` takes a validated `Config`, already-bound `Listeners` and a shutdown future,
//! so tests start the whole server in-process on port 0.
//!
//! # Layout
//!
//! A UDP query, top to bottom; no file imports one that imports it back
//! (`tests/layout.rs`):
//!
//! ```text
//! listen/udp        the socket's loop: a batch of datagrams in, answers out
//!   (listen/accept, tcp, tls, https: stream connections within the limits; one RFC
//!   7766 connection, over TCP or after a DoT handshake; a DoH request)
//! admit             Handler::prepare: the stages before anything goes upstream
//!                   (first look, client rate, ACL, checks, answered here, route, cache,
//!                   client and server in-flight caps); a miss becomes a Job
//! job               Job::run: Resolver::answer, then the client's reply (stale when
//!                   the upstreams fail, RFC 8767), counted and logged
//! resolver          coalescing: one resolution per question in flight, into the cache
//! upstream/forward  UpstreamSet::resolve (NXDOMAIN fallback, private guard) and the
//!                   try loop within the route's deadline
//! upstream/attempt  one try over the route's transport, and what its reply means
//! upstream/udp      one exchange on one of the upstream's UDP sockets
//! upstream/tcp      kept, pipelined TCP connections (transport = "tcp", TC retries),
//!                   with TLS on them for a tls:// upstream (tls::client)
//! wire              the bytes: query checks, reply walk, relay render
//! ```
//!
//! Around it: `run` (run, reload, watchdog), `reloads` (applied, refused, restart
//! pending, a renewed certificate), `readiness` (what /readyz says), `listen` (bind,
//! the holder of a port, udp, tcp), `local` (`[local]` records), `control` (the control socket) and `ctl`
//! (its client), `handler` (what one configuration is made of, and what outlives it),
//! `config` (file to `Config`), `cache`, `router`, `claims` (CNAME splicing),
//! `loopcheck`, `tls` (certificates, trust and pins, handshake failures named, both
//! ways; the listeners' certificate expiry), `dnstap` (what clients ask and get and each try upstream, to a
//! dnstap collector), `clients` (per-client limits), `limit` (token bucket, in-flight count,
//! throttled warnings), `life` (shutdown, tasks, clock), `metrics`, `notify` (systemd),
//! `diagnose` and `report` (the `doctor`, `query`, `check` and `explain` commands),
//! `onprem`, `presets`, `import` (managed resolvers' rules as routes). The modules are
//! crate-private; what `main.rs`, the tests and the benchmarks use is re-exported or
//! public below.
#![forbid(unsafe_code)]

mod acl;
mod admit;
pub mod cache;
mod claims;
mod clients;
pub mod config;
mod control;
pub mod ctl;
pub mod diagnose;
mod dnstap;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod handler;
pub mod import;
mod job;
mod life;
mod limit;
mod listen;
mod local;
mod loopcheck;
pub mod manual;
mod metrics;
pub mod notify;
pub mod onprem;
mod outcome;
pub mod presets;
mod query_log;
mod readiness;
mod reloads;
pub mod report;
mod resolver;
pub mod router;
mod run;
mod tls;
mod transport;
mod upstream;
pub mod wire;

pub use claims::MAX_HOPS;
pub use config::{Config, LoadEnv};
pub use life::{Clock, ManualClock, SystemClock};
/// Batched UDP I/O, for the floor servers of the benchmark (bench/reflector.rs,
/// bench/relay.rs), which must batch as the listeners do.
pub use listen::batch;
pub use listen::{BindError, Listeners};
pub use reloads::ReadFile;

pub use run::{run, run_with, RunOptions};
