//! Which upstreams a query tries, and in what order (`policy = "sequential" |
//! "round_robin" | "random"`).

use std::sync::atomic::Ordering;

use rand::seq::SliceRandom;

use crate::config::UpstreamOrder;
use crate::upstream::UpstreamSet;

impl UpstreamSet {
    /// Upstream indexes in the order this query will try them: the healthy ones in
    /// policy order, or all of them when none is healthy (a guess beats a SERVFAIL).
    ///
    /// An upstream in a forwarding loop is never tried: the query would only come back;
    /// nor is one taken out by hand.
    pub fn order(&self) -> Vec<usize> {
        let usable = |i: &usize| {
            let u = &self.upstreams[*i];
            !u.looped.load(Ordering::Relaxed) && !u.manual_down.load(Ordering::Relaxed)
        };
        let mut order: Vec<usize> = (0..self.upstreams.len())
            .filter(|&i| self.upstreams[i].in_rotation())
            .collect();
        if order.is_empty() {
            order.extend((0..self.upstreams.len()).filter(usable));
        }
        if order.is_empty() {
            return order;
        }
        match self.order {
            UpstreamOrder::Sequential => {}
            UpstreamOrder::RoundRobin => {
                let k = self.rr.fetch_add(1, Ordering::Relaxed) % order.len();
                order.rotate_left(k);
            }
            UpstreamOrder::Random => order.shuffle(&mut rand::rng()),
        }
        order
    }
}
