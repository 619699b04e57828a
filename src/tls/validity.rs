//! The listeners' certificate in time: when the served chain stops being accepted,
//! and whether its renewal is overdue. One rule, read by `check`, `doctor`,
//! `ctl status`, the log and (as the two timestamps) the metrics and their alert.
//!
//! Renewers act with about a third of a certificate's lifetime left (certbot: 30 of
//! 90 days; cert-manager: the last third). A fifth left means renewals have been
//! failing for a while, whatever the lifetime (90 days, or a day from an internal
//! ACME CA); past 14 days the rule caps, so a year-long certificate renewed by hand
//! is not called overdue two months ahead.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

const DAY: Duration = Duration::from_secs(86_400);
/// The most time left at which renewal is called overdue.
const OVERDUE_CAP: Duration = Duration::from_secs(14 * 86_400);
/// The share of the lifetime left at which renewal is called overdue.
const OVERDUE_SHARE: u32 = 5;

/// The served chain's validity: from the leaf's notBefore to the earliest notAfter in
/// the chain (a client refuses the chain once any of its certificates expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    pub not_before: SystemTime,
    pub not_after: SystemTime,
}

/// Where `now` falls in a `Validity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Before notBefore: every client refuses it (or this host's clock is behind).
    NotYetValid,
    /// Valid, with this much time left.
    Valid(Duration),
    /// Valid, with less time left than a renewal should ever leave.
    RenewalOverdue(Duration),
    /// Past notAfter by this much: every client refuses it.
    Expired(Duration),
}

impl Validity {
    /// The validity of a chain, leaf first; the error says which certificate does not
    /// parse.
    pub fn of_chain(chain: &[CertificateDer<'_>]) -> Result<Validity, String> {
        let mut validity: Option<Validity> = None;
        for (i, der) in chain.iter().enumerate() {
            let (_, cert) = X509Certificate::from_der(der)
                .map_err(|e| format!("certificate {} of the chain does not parse: {e}", i + 1))?;
            let v = cert.validity();
            let not_after = unix(v.not_after.timestamp());
            validity = Some(match validity {
                None => Validity {
                    not_before: unix(v.not_before.timestamp()),
                    not_after,
                },
                Some(leaf) => Validity {
                    not_after: leaf.not_after.min(not_after),
                    ..leaf
                },
            });
        }
        validity.ok_or_else(|| "no certificate in the chain".to_string())
    }

    pub fn at(&self, now: SystemTime) -> Expiry {
        if now < self.not_before {
            return Expiry::NotYetValid;
        }
        let Ok(left) = self.not_after.duration_since(now) else {
            return Expiry::Expired(now.duration_since(self.not_after).unwrap_or_default());
        };
        let lifetime = self
            .not_after
            .duration_since(self.not_before)
            .unwrap_or_default();
        if left < (lifetime / OVERDUE_SHARE).min(OVERDUE_CAP) {
            Expiry::RenewalOverdue(left)
        } else {
            Expiry::Valid(left)
        }
    }

    /// What is wrong at `now` and what to do, for `check`, `doctor` and the log; `None`
    /// while the certificate is valid and not due. `what` names it ("tls_cert PATH").
    pub fn problem(&self, what: &str, now: SystemTime) -> Option<(String, String)> {
        let renew = "renew it: zonefwd reads a renewed tls_cert and tls_key within a minute, no reload needed";
        let until = rfc3339(self.not_after);
        let (text, fix) = match self.at(now) {
            Expiry::Valid(_) => return None,
            Expiry::RenewalOverdue(left) => (
                format!("{what} expires in {} ({until}) and has not been renewed: DoT and DoH clients will refuse it then", Span(left)),
                renew,
            ),
            Expiry::Expired(ago) => (
                format!("{what} expired {} ago ({until}): every DoT and DoH client refuses it", Span(ago)),
                renew,
            ),
            Expiry::NotYetValid => (
                format!("{what} is valid only from {}: DoT and DoH clients refuse it until then", rfc3339(self.not_before)),
                "check this host's clock (timedatectl), or serve a certificate valid now",
            ),
        };
        Some((text, fix.to_string()))
    }
}

impl fmt::Display for Validity {
    /// "valid until 2027-03-05T00:00:00Z"
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "valid until {}", rfc3339(self.not_after))
    }
}

/// A time left or past, in days, or in hours under two days; rounded, so a
/// certificate made to last 5 more days reads "5 days" a second later.
struct Span(Duration);

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rounded = |unit: u64| (self.0.as_secs() + unit / 2) / unit;
        if self.0 >= 2 * DAY {
            write!(f, "{} days", rounded(DAY.as_secs()))
        } else {
            write!(f, "{} hours", rounded(3600))
        }
    }
}

pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Seconds since the epoch as a time; X.509 times before 1970 are clamped to it.
fn unix(secs: i64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// Seconds since the epoch, for the metrics.
pub fn seconds(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validity(lifetime_days: u32) -> Validity {
        let not_before = UNIX_EPOCH + 1000 * DAY;
        Validity {
            not_before,
            not_after: not_before + lifetime_days * DAY,
        }
    }

    #[test]
    fn renewal_is_overdue_with_a_fifth_of_the_lifetime_left_and_never_more_than_14_days() {
        let hour = Duration::from_secs(3600);
        // (lifetime in days, time left, what it is)
        let cases: [(u32, Duration, &str); 9] = [
            (90, 30 * DAY, "valid"),   // certbot renews here
            (90, 15 * DAY, "valid"),   // a fifth is 18 days, capped at 14
            (90, 13 * DAY, "overdue"), // renewals failed for 17 days
            (365, 30 * DAY, "valid"),  // a fifth would be 73 days: the cap
            (365, 10 * DAY, "overdue"),
            (1, 6 * hour, "valid"), // an internal CA's day-long certificate
            (1, 4 * hour, "overdue"),
            (90, Duration::ZERO, "overdue"), // notAfter is inside (RFC 5280 4.1.2.5)
            (7, 8 * DAY, "not yet valid"),
        ];
        for (lifetime, left, expected) in cases {
            let v = validity(lifetime);
            let now = if left > lifetime * DAY {
                v.not_before - DAY
            } else {
                v.not_after - left
            };
            let found = match v.at(now) {
                Expiry::Valid(_) => "valid",
                Expiry::RenewalOverdue(_) => "overdue",
                Expiry::Expired(_) => "expired",
                Expiry::NotYetValid => "not yet valid",
            };
            assert_eq!(found, expected, "lifetime {lifetime} days, {left:?} left");
        }
    }

    #[test]
    fn the_problem_says_when_and_what_to_do() {
        let v = validity(90);
        let text = |now| v.problem("tls_cert /etc/zonefwd/tls.pem", now).map(|p| p.0);
        assert_eq!(text(v.not_after - 30 * DAY), None);
        assert_eq!(
            text(v.not_after - 5 * DAY + Duration::from_secs(60)).as_deref(),
            Some("tls_cert /etc/zonefwd/tls.pem expires in 5 days (1972-12-26T00:00:00Z) and has not been renewed: DoT and DoH clients will refuse it then")
        );
        assert_eq!(
            text(v.not_after + Duration::from_secs(3 * 3600)).as_deref(),
            Some("tls_cert /etc/zonefwd/tls.pem expired 3 hours ago (1972-12-26T00:00:00Z): every DoT and DoH client refuses it")
        );
        let (early, fix) = v.problem("tls_cert x", v.not_before - DAY).unwrap();
        assert!(
            early.contains("valid only from 1972-09-27T00:00:00Z"),
            "{early}"
        );
        assert!(fix.contains("clock"), "{fix}");
    }
}
