//! Whether this replica should receive queries: what `/readyz` answers and `ctl
//! status` shows.
//!
//! Ready means: the listeners serve, the replica is not draining (`zonefwd ctl
//! drain`), and no route marked `ready = "required"` has every upstream down. Routes
//! are `ignored` unless marked: a readiness probe that failed on any route's outage
//! would turn one team's dead upstream, or the on-prem servers' maintenance, into every
//! replica leaving the load balancer at once, taking the routes that still resolve
//! with them. An upstream taken out by hand counts as down here, as it does for the
//! queries.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::config::RouteReadiness;
use crate::upstream::UpstreamSet;

/// The replica's own switches; the routes' state is read when asked.
#[derive(Debug, Default)]
pub struct Readiness {
    /// Listeners serve and a configuration is loaded; false again once stopping.
    pub serving: AtomicBool,
    /// `zonefwd ctl drain`: answer every query, but tell the load balancer to move
    /// clients elsewhere (before a restart or planned work).
    pub draining: AtomicBool,
}

/// Why the replica is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotReady {
    NotServing,
    Draining,
    /// The `required` routes with every upstream down, by name.
    RoutesDown(Vec<String>),
}

impl std::fmt::Display for NotReady {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NotReady::NotServing => f.write_str("listeners not serving"),
            NotReady::Draining => {
                f.write_str("draining (zonefwd ctl undrain to take queries again)")
            }
            NotReady::RoutesDown(routes) => write!(
                f,
                "every upstream is down on required route(s): {}",
                routes.join(" ")
            ),
        }
    }
}

impl Readiness {
    /// Ready, or the first reason not to be, for the routes in force.
    pub fn check(&self, sets: &[Arc<UpstreamSet>]) -> Result<(), NotReady> {
        if !self.serving.load(Ordering::Relaxed) {
            return Err(NotReady::NotServing);
        }
        if self.draining.load(Ordering::Relaxed) {
            return Err(NotReady::Draining);
        }
        let down: Vec<String> = sets
            .iter()
            .filter(|s| s.ready == RouteReadiness::Required && s.all_down())
            .map(|s| s.route.clone())
            .collect();
        if down.is_empty() {
            Ok(())
        } else {
            Err(NotReady::RoutesDown(down))
        }
    }
}
