//! Reloads as an operator sees them: each request (SIGHUP, `zonefwd ctl reload`, a
//! renewed certificate on disk) with the file as read, what came of it (applied or
//! refused, counted), and the settings that the file in force sets but only a restart
//! can apply.
//!
//! The restart-only settings are compared with what runs (the configuration the
//! server started with, whose sockets and sizes are bound), not with the previous
//! file: a `listen` changed in one reload and left alone in the next is still pending.

use std::mem::{discriminant, Discriminant};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use tokio::sync::oneshot;

use crate::config::Config;
use crate::config::TcpOptions;
use crate::tls::server::OnDisk;
use crate::tls::validity::{Expiry, Validity};

/// A file read for a reload: the validated configuration, or the located error.
pub type ReadFile = Result<Config, String>;

/// What a reload came to: the restart-only settings still pending, or why the file
/// was refused (the running configuration stays).
pub type ReloadOutcome = Result<Vec<&'static str>, String>;

/// One reload for the run loop; `answer` is for a caller that waits (the control
/// socket), none for SIGHUP.
pub struct ReloadRequest {
    pub file: ReadFile,
    pub answer: Option<oneshot::Sender<ReloadOutcome>>,
}

/// The counts and state the metrics and `ctl status` read.
#[derive(Debug)]
pub struct ReloadStats {
    pub applied: AtomicU64,
    pub refused: AtomicU64,
    /// The last reload was applied (true before the first: the start succeeded).
    pub last_successful: AtomicBool,
    /// When the configuration in force was applied (the start, or the last applied
    /// reload), in seconds since the epoch.
    pub last_success_unix: AtomicU64,
    /// The restart-only settings the file in force changes.
    pending: Mutex<Vec<&'static str>>,
}

impl Default for ReloadStats {
    fn default() -> Self {
        ReloadStats {
            applied: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            last_successful: AtomicBool::new(true),
            last_success_unix: AtomicU64::new(unix_now()),
            pending: Mutex::new(Vec::new()),
        }
    }
}

impl ReloadStats {
    pub fn note_applied(&self, pending: Vec<&'static str>) {
        self.applied.fetch_add(1, Ordering::Relaxed);
        self.last_successful.store(true, Ordering::Relaxed);
        self.last_success_unix.store(unix_now(), Ordering::Relaxed);
        *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = pending;
    }

    pub fn note_refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        self.last_successful.store(false, Ordering::Relaxed);
    }

    /// The restart-only settings that the file in force changes from what runs.
    pub fn restart_pending(&self) -> Vec<&'static str> {
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The settings of `file` that differ from `running` (what the server started with)
/// but are bound to sockets or sizes fixed at start.
pub fn restart_only_changes(running: &Config, file: &Config) -> Vec<&'static str> {
    let (r, f) = (&running.server, &file.server);
    [
        ("server.listen", r.listen != f.listen),
        ("server.udp_threads", r.udp_threads != f.udp_threads),
        ("server.tcp_*", TcpOptions::of(r) != TcpOptions::of(f)),
        ("server.tls_listen", r.encrypted.tls != f.encrypted.tls),
        (
            "server.https_listen",
            r.encrypted.https != f.encrypted.https,
        ),
        (
            "cache.max_entries",
            running.cache_max_entries != file.cache_max_entries,
        ),
        ("server.log_format", r.log_format != f.log_format),
        ("server.metrics", r.metrics != f.metrics),
        // The socket stays where it was bound; a file without the key (a socket set by
        // `run --control`, kept by a reload) keeps it.
        (
            "server.control",
            f.control.is_some() && r.control != f.control,
        ),
    ]
    .into_iter()
    .filter_map(|(name, changed)| changed.then_some(name))
    .collect()
}

/// The listeners' certificate, read again from `tls_cert` and `tls_key` at each check:
/// a renewal (certbot, cert-manager's Secret in a pod, where no one sends SIGHUP) is
/// applied as a reload of the running configuration with the new pair, nothing else
/// re-read. A pair that does not load is refused only when a second check finds the
/// same failure, since renewal tools replace the two files one after the other; then
/// it is refused once, not at every check, and the running pair stays. The running
/// certificate's expiry is logged when it changes (overdue for renewal, expired), so a
/// renewal that silently stopped shows in the journal weeks before clients refuse it.
#[derive(Debug, Default)]
pub struct CertificateWatch {
    /// A failure seen once, and whether it was refused (reported).
    failure: Option<(String, bool)>,
    /// The running certificate's validity and its expiry when last checked.
    expiry: Option<(Validity, Discriminant<Expiry>)>,
}

impl CertificateWatch {
    /// The reload to apply, if the files changed since `running` loaded them.
    pub fn check(&mut self, running: &Config, now: SystemTime) -> Option<ReloadRequest> {
        let identity = running.server.encrypted.identity.as_ref()?;
        if let Some(problem) = self.expiry_changed(identity.validity, &identity.label(), now) {
            tracing::warn!("{problem}");
        }
        let file = match identity.on_disk() {
            OnDisk::Unchanged => {
                self.failure = None;
                return None;
            }
            OnDisk::Renewed(renewed) => {
                self.failure = None;
                tracing::info!(cert = %renewed.cert.display(), names = %renewed.names.join(" "), validity = %renewed.validity, "tls_cert was renewed on disk: new connections get it");
                let mut config = running.clone();
                config.server.encrypted.identity = Some(renewed);
                Ok(config)
            }
            OnDisk::Unloadable(why) => Err(self.confirmed(why)?),
        };
        Some(ReloadRequest { file, answer: None })
    }

    /// What to say of the running certificate's expiry at `now`: its problem, when that
    /// is new (a first sighting, or a change since the last check), nothing otherwise.
    fn expiry_changed(
        &mut self,
        validity: Validity,
        what: &str,
        now: SystemTime,
    ) -> Option<String> {
        let seen = (validity, discriminant(&validity.at(now)));
        if self.expiry.replace(seen) == Some(seen) {
            return None;
        }
        validity
            .problem(what, now)
            .map(|(text, fix)| format!("{text}; {fix}"))
    }

    /// `why`, the second time in a row it is seen and not before or after.
    fn confirmed(&mut self, why: String) -> Option<String> {
        match &mut self.failure {
            Some((seen, reported)) if *seen == why => {
                let first = !std::mem::replace(reported, true);
                first.then(|| format!("the certificate files changed and do not load: {why}"))
            }
            _ => {
                tracing::debug!("the certificate files changed and do not load yet: {why}");
                self.failure = Some((why, false));
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::CertificateWatch;
    use crate::tls::validity::Validity;
    use std::time::{Duration, UNIX_EPOCH};

    /// The journal hears of a certificate's expiry once per change: at the first check
    /// if it is already due, when it becomes due, when it expires, and again for a
    /// renewed certificate only if that one is due too.
    #[test]
    fn the_expiry_is_logged_when_it_changes_and_only_then() {
        let day = Duration::from_secs(86_400);
        let start = UNIX_EPOCH + 1000 * day;
        let old = Validity {
            not_before: start,
            not_after: start + 90 * day,
        };
        let renewed = Validity {
            not_before: start + 80 * day,
            not_after: start + 170 * day,
        };
        let mut watch = CertificateWatch::default();
        // (the running certificate, days after `start`, logged?)
        let checks = [
            (old, 10, false), // valid
            (old, 60, false),
            (old, 77, true), // 13 days left: overdue
            (old, 78, false),
            (old, 91, true), // expired
            (old, 92, false),
            (renewed, 92, false), // renewed: valid again, nothing to say
            (renewed, 93, false),
        ];
        for (i, (validity, days, logged)) in checks.into_iter().enumerate() {
            let said = watch.expiry_changed(validity, "tls_cert t.pem", start + days * day);
            assert_eq!(said.is_some(), logged, "check {i} (day {days}): {said:?}");
        }
        let mut fresh = CertificateWatch::default();
        let said = fresh.expiry_changed(old, "tls_cert t.pem", start + 85 * day);
        assert!(
            said.is_some_and(|s| s.contains("expires in 5 days")),
            "a due certificate is said at the first check"
        );
    }

    /// A renewal replaces the certificate and the key one after the other: a check
    /// between the two sees a pair that does not match, and the next one a good pair.
    #[test]
    fn a_certificate_failure_is_refused_at_its_second_sighting_and_only_then() {
        let mut watch = CertificateWatch::default();
        let checks = [
            "mismatch",
            "mismatch",
            "mismatch",
            "unreadable",
            "unreadable",
            "mismatch",
        ];
        let refused: Vec<bool> = checks
            .iter()
            .map(|why| watch.confirmed(why.to_string()).is_some())
            .collect();
        assert_eq!(refused, [false, true, false, false, true, false]);
    }
}
