//! Upstream health: failures in a row and the mark that takes an upstream out of
//! rotation at `max_fails`; `probe` brings it back.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

use tokio::sync::futures::Notified;
use tokio::sync::Notify;
use tokio::time::Instant;

/// One upstream's health.
#[derive(Debug)]
pub struct Health {
    /// `max_fails`: failures in a row that mark it down; 0 never does.
    max_fails: u32,
    fails: AtomicU32,
    /// When it last answered, in nanoseconds since `created`: a try sent before that
    /// whose answer never came is not a failure in a row.
    answered: AtomicU64,
    created: Instant,
    /// Woken when `max_fails` marks the upstream down, for the slow tries waiting on it
    /// to fail over then (the try loop's `DownWatch`).
    marked_down: Notify,
    probing: AtomicBool,
}

impl Health {
    pub fn new(max_fails: u32) -> Self {
        Health {
            max_fails,
            fails: AtomicU32::new(0),
            answered: AtomicU64::new(0),
            created: Instant::now(),
            marked_down: Notify::new(),
            probing: AtomicBool::new(false),
        }
    }

    /// It answered (anything) just now: the failures in a row end. True when that
    /// brings it back into rotation.
    pub fn answered(&self) -> bool {
        self.note_answer();
        let before = self.fails.swap(0, Ordering::Relaxed);
        self.max_fails > 0 && before >= self.max_fails
    }

    /// A try sent at `sent` failed. It counts towards `max_fails` only when nothing
    /// sent after it has been answered since: the failures must be in a row. Without
    /// that, under a steady stream, the tries lost while an upstream was away keep
    /// timing out after it is back, marking it down again between its answers.
    /// True when this failure marks it down; the tries watching are woken.
    pub fn failed(&self, sent: Instant) -> bool {
        if self.answered_after(sent) {
            return false;
        }
        let now = self.fails.fetch_add(1, Ordering::Relaxed) + 1;
        let marked = self.max_fails > 0 && now == self.max_fails;
        if marked {
            self.marked_down.notify_waiters();
        }
        marked
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.fails.load(Ordering::Relaxed)
    }

    /// Past `max_fails` failures in a row: skipped while any other is up, and probed.
    pub fn is_marked_down(&self) -> bool {
        self.max_fails > 0 && self.consecutive_failures() >= self.max_fails
    }

    /// Neither an answer nor a failure yet.
    pub fn never_heard_of(&self) -> bool {
        self.answered.load(Ordering::Relaxed) == 0 && self.consecutive_failures() == 0
    }

    /// Fires when the upstream is marked down from now on (enable it before reading
    /// `is_marked_down`, so a mark made in between still wakes it).
    pub fn when_marked_down(&self) -> Notified<'_> {
        self.marked_down.notified()
    }

    fn note_answer(&self) {
        let now = self.since_created(Instant::now());
        self.answered.fetch_max(now, Ordering::Relaxed);
    }

    /// Whether it answered some try sent after `sent`.
    fn answered_after(&self, sent: Instant) -> bool {
        self.answered.load(Ordering::Relaxed) > self.since_created(sent)
    }

    fn since_created(&self, t: Instant) -> u64 {
        let d = t.saturating_duration_since(self.created);
        u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
    }

    /// A probe answered: back in rotation.
    pub fn probe_answered(&self) {
        self.note_answer();
        self.fails.store(0, Ordering::Relaxed);
    }

    /// Claims the one probe this upstream may have; false when it has one.
    pub fn start_probing(&self) -> bool {
        !self.probing.swap(true, Ordering::AcqRel)
    }

    pub fn stop_probing(&self) {
        self.probing.store(false, Ordering::Release);
    }
}
