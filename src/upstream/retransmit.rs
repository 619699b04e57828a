//! The budget that holds early retransmissions to an upstream back once too many of
//! them were wasted (`retransmit_budget`).
//!
//! A retransmission is wasted when the try it doubled answers as well: the upstream
//! was slow, not lossy, and the second query was load for nothing. Azure drops what
//! exceeds 1000 queries per second per VM to 168.63.129.16, so extra queries are not
//! free. Under real loss nearly no retransmission is wasted and the budget never
//! binds; under an upstream that got slower than its model, it does, and tries wait
//! for `try_timeout` as before until the share recovers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// The budget is reckoned over about this many tries: past it, what came before
/// counts half.
const WINDOW: u64 = 2000;

/// One upstream's budget for wasted early retransmissions: the counts of tries sent
/// and retransmissions wasted at the start of the window.
#[derive(Debug, Default)]
pub struct RetransmitBudget {
    start: Mutex<(u64, u64)>,
}

impl RetransmitBudget {
    /// Whether one more early retransmission fits: the wasted ones in the window, and
    /// the `pending` ones of the same query whose fate is not known yet (counted as
    /// wasted: against a slow upstream they all are, and the first answer that would
    /// say so comes only after them), are within `share` of the tries sent. The waste
    /// exceeds the share by one at most. Read only when a try is late, never on the
    /// way of an answer.
    pub fn allows(&self, share: f64, sent: &AtomicU64, wasted: &AtomicU64, pending: u32) -> bool {
        if share <= 0.0 {
            return false;
        }
        let (sent, wasted) = (sent.load(Ordering::Relaxed), wasted.load(Ordering::Relaxed));
        let mut start = self.start.lock().unwrap_or_else(|e| e.into_inner());
        let (mut in_sent, mut in_wasted) =
            (sent.saturating_sub(start.0), wasted.saturating_sub(start.1));
        if in_sent > WINDOW {
            in_sent /= 2;
            in_wasted /= 2;
            *start = (sent - in_sent, wasted - in_wasted);
        }
        (in_wasted + u64::from(pending)) as f64 <= share * in_sent as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget_after(sent: u64, wasted: u64, share: f64) -> bool {
        RetransmitBudget::default().allows(share, &AtomicU64::new(sent), &AtomicU64::new(wasted), 0)
    }

    #[test]
    fn wasted_retransmissions_stay_within_their_share_of_the_tries() {
        // (tries sent, retransmissions wasted, share, one more allowed)
        let cases = [
            (100, 0, 0.05, true),
            (100, 5, 0.05, true),
            (100, 6, 0.05, false),
            (10, 0, 0.05, true),
            (19, 1, 0.05, false),
            (20, 1, 0.05, true),
            (1000, 0, 0.0, false),
            (1000, 100, 0.10, true),
            (1000, 101, 0.10, false),
        ];
        for (sent, wasted, share, allowed) in cases {
            assert_eq!(
                budget_after(sent, wasted, share),
                allowed,
                "{wasted} wasted of {sent}, share {share}"
            );
        }
    }

    #[test]
    fn a_querys_own_retransmissions_count_until_their_fate_is_known() {
        let b = RetransmitBudget::default();
        let (sent, wasted) = (AtomicU64::new(100), AtomicU64::new(0));
        // 5% of 100: the query's sixth early retransmission would pass it.
        assert!(b.allows(0.05, &sent, &wasted, 5));
        assert!(!b.allows(0.05, &sent, &wasted, 6));
    }

    #[test]
    fn a_spent_budget_recovers_as_tries_go_unwasted() {
        let b = RetransmitBudget::default();
        let (sent, wasted) = (AtomicU64::new(1000), AtomicU64::new(200));
        assert!(!b.allows(0.05, &sent, &wasted, 0));
        // Tries go on answering without waste; the old waste fades with the window.
        let mut recovered_after = None;
        for more in (0..20_000).step_by(100) {
            sent.store(1000 + more, Ordering::Relaxed);
            if b.allows(0.05, &sent, &wasted, 0) {
                recovered_after = Some(more);
                break;
            }
        }
        let more = recovered_after.expect("the budget never recovered");
        assert!(more > 500, "recovered after only {more} tries");
    }
}
