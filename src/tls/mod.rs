//! TLS both ways: to `tls://` upstreams (RFC 7858, `client`) and on the DoT and DoH
//! listeners (RFC 7858, RFC 8484, `server`), with rustls and its default provider.
//! What the two share lives here: a failed handshake named for an operator
//! (`TlsFailure`), as the metrics, the log, `ctl status` and `doctor` give it.

pub mod client;
pub mod server;
pub mod validity;

use std::io;

use rustls::{AlertDescription, CertificateError};

/// Why a TLS handshake failed, named for the person who has to fix it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsFailure {
    /// The certificate's validity ended.
    Expired,
    /// The certificate's validity has not begun (or this host's clock is behind).
    NotYetValid,
    /// The certificate does not name the name (or address) asked for.
    WrongName,
    /// No trusted root issued the certificate (the system's roots, or `tls_ca`).
    UnknownCa,
    /// The certificate's key is none of the route's `tls_pins`.
    PinMismatch,
    /// Any other fault in the peer's certificate.
    BadCertificate,
    /// The peer refused our certificate (sent an alert about it).
    CertificateRefused,
    /// No TLS version, cipher suite or ALPN protocol in common.
    Incompatible,
    /// No handshake within its time.
    Timeout,
    /// The connection closed or reset before the handshake ended.
    Closed,
    /// Anything else: not TLS, or a protocol error.
    Protocol,
}

impl TlsFailure {
    pub const ALL: [TlsFailure; 11] = [
        TlsFailure::Expired,
        TlsFailure::NotYetValid,
        TlsFailure::WrongName,
        TlsFailure::UnknownCa,
        TlsFailure::PinMismatch,
        TlsFailure::BadCertificate,
        TlsFailure::CertificateRefused,
        TlsFailure::Incompatible,
        TlsFailure::Timeout,
        TlsFailure::Closed,
        TlsFailure::Protocol,
    ];

    /// The label in metrics and `ctl status`.
    pub fn as_str(self) -> &'static str {
        match self {
            TlsFailure::Expired => "expired",
            TlsFailure::NotYetValid => "not_yet_valid",
            TlsFailure::WrongName => "wrong_name",
            TlsFailure::UnknownCa => "unknown_ca",
            TlsFailure::PinMismatch => "pin_mismatch",
            TlsFailure::BadCertificate => "bad_certificate",
            TlsFailure::CertificateRefused => "certificate_refused",
            TlsFailure::Incompatible => "incompatible",
            TlsFailure::Timeout => "timeout",
            TlsFailure::Closed => "closed",
            TlsFailure::Protocol => "protocol",
        }
    }

    /// A handshake's error, as tokio-rustls returns it (rustls's error inside an
    /// `io::Error`), named.
    pub fn of(e: &io::Error) -> TlsFailure {
        match e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<rustls::Error>())
        {
            Some(tls) => TlsFailure::of_tls(tls),
            None if e.kind() == io::ErrorKind::TimedOut => TlsFailure::Timeout,
            None => match e.kind() {
                io::ErrorKind::UnexpectedEof
                | io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe => TlsFailure::Closed,
                _ => TlsFailure::Protocol,
            },
        }
    }

    fn of_tls(e: &rustls::Error) -> TlsFailure {
        use rustls::Error as E;
        match e {
            E::InvalidCertificate(c) => match c {
                CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                    TlsFailure::Expired
                }
                CertificateError::NotValidYet | CertificateError::NotValidYetContext { .. } => {
                    TlsFailure::NotYetValid
                }
                CertificateError::NotValidForName
                | CertificateError::NotValidForNameContext { .. } => TlsFailure::WrongName,
                CertificateError::UnknownIssuer => TlsFailure::UnknownCa,
                // Raised only by the pin check (`client`).
                CertificateError::ApplicationVerificationFailure => TlsFailure::PinMismatch,
                _ => TlsFailure::BadCertificate,
            },
            E::AlertReceived(a) => match *a {
                AlertDescription::BadCertificate
                | AlertDescription::UnsupportedCertificate
                | AlertDescription::CertificateRevoked
                | AlertDescription::CertificateExpired
                | AlertDescription::CertificateUnknown
                | AlertDescription::UnknownCA => TlsFailure::CertificateRefused,
                AlertDescription::ProtocolVersion
                | AlertDescription::HandshakeFailure
                | AlertDescription::InsufficientSecurity
                | AlertDescription::NoApplicationProtocol => TlsFailure::Incompatible,
                // GnuTLS (kdig) ends a handshake whose certificate it refuses so.
                AlertDescription::CloseNotify => TlsFailure::Closed,
                _ => TlsFailure::Protocol,
            },
            E::NoApplicationProtocol | E::PeerIncompatible(_) => TlsFailure::Incompatible,
            _ => TlsFailure::Protocol,
        }
    }
}

impl TlsFailure {
    /// What to do about a `tls://` upstream whose handshake failed so.
    pub fn fix(self) -> &'static str {
        match self {
            TlsFailure::Expired => "the upstream's certificate has expired: renew it on the upstream",
            TlsFailure::NotYetValid => "check this host's clock (timedatectl), then the certificate's start date",
            TlsFailure::WrongName => "write the name its certificate carries after # (tls://ADDR#NAME); kdig +tls +tls-ca shows the certificate",
            TlsFailure::UnknownCa => "set the route's tls_ca to the CA that issued the upstream's certificate (or add that CA to this host's trust store)",
            TlsFailure::PinMismatch => "the upstream's key is none of tls_pins: if it was renewed on purpose, add the new key's pin (docs/encrypted-dns.md shows how to compute one)",
            TlsFailure::BadCertificate => "the upstream's certificate cannot be used for a TLS server: check it on the upstream",
            TlsFailure::CertificateRefused => "the upstream refused the connection's certificate: it may require client certificates, which zonefwd does not send",
            TlsFailure::Incompatible => "the upstream offers no TLS 1.2 or 1.3, or no cipher suite in common",
            TlsFailure::Timeout | TlsFailure::Closed | TlsFailure::Protocol => "check that the upstream serves DNS over TLS on this port (853 unless written), not plain DNS",
        }
    }
}

impl std::fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TlsFailure::Expired => "the certificate has expired",
            TlsFailure::NotYetValid => {
                "the certificate is not valid yet (or this host's clock is behind)"
            }
            TlsFailure::WrongName => "the certificate is not for the name asked for",
            TlsFailure::UnknownCa => "the certificate's issuer is not trusted",
            TlsFailure::PinMismatch => "the certificate's key matches none of tls_pins",
            TlsFailure::BadCertificate => "the certificate is not acceptable",
            TlsFailure::CertificateRefused => "the peer refused our certificate",
            TlsFailure::Incompatible => "no TLS version, cipher suite or ALPN protocol in common",
            TlsFailure::Timeout => "no handshake in time",
            TlsFailure::Closed => "the connection closed during the handshake",
            TlsFailure::Protocol => "a TLS protocol error",
        })
    }
}

/// A failed handshake: its name, and rustls's own words.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("tls handshake failed: {failure} ({detail})")]
pub struct HandshakeError {
    pub failure: TlsFailure,
    pub detail: String,
}

impl HandshakeError {
    pub fn of(e: &io::Error) -> HandshakeError {
        HandshakeError {
            failure: TlsFailure::of(e),
            detail: e.to_string(),
        }
    }

    pub fn timeout() -> HandshakeError {
        HandshakeError {
            failure: TlsFailure::Timeout,
            detail: "timed out".to_string(),
        }
    }
}

/// Handshakes by outcome: full, resumed (RFC 8446 section 2.2), or failed by reason.
#[derive(Debug, Default)]
pub struct HandshakeCounts {
    pub full: std::sync::atomic::AtomicU64,
    pub resumed: std::sync::atomic::AtomicU64,
    failed: [std::sync::atomic::AtomicU64; TlsFailure::ALL.len()],
}

impl HandshakeCounts {
    /// One handshake's outcome; `resumed` for a session taken up again.
    pub fn record(&self, outcome: Result<bool, TlsFailure>) {
        use std::sync::atomic::Ordering::Relaxed;
        let n = match outcome {
            Ok(true) => &self.resumed,
            Ok(false) => &self.full,
            Err(f) => &self.failed[f as usize],
        };
        n.fetch_add(1, Relaxed);
    }

    pub fn failed(&self, f: TlsFailure) -> u64 {
        self.failed[f as usize].load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Each outcome's label and count, for the metrics: "full", "resumed", then the
    /// failures by reason.
    pub fn by_result(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        use std::sync::atomic::Ordering::Relaxed;
        [("full", &self.full), ("resumed", &self.resumed)]
            .into_iter()
            .map(|(l, n)| (l, n.load(Relaxed)))
            .chain(
                TlsFailure::ALL
                    .into_iter()
                    .map(|f| (f.as_str(), self.failed(f))),
            )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handshake_errors_are_named_for_what_to_fix() {
        let tls = |e: rustls::Error| io::Error::new(io::ErrorKind::InvalidData, e);
        let cert = |c: CertificateError| tls(rustls::Error::InvalidCertificate(c));
        let cases = [
            (cert(CertificateError::Expired), TlsFailure::Expired),
            (cert(CertificateError::NotValidYet), TlsFailure::NotYetValid),
            (
                cert(CertificateError::NotValidForName),
                TlsFailure::WrongName,
            ),
            (cert(CertificateError::UnknownIssuer), TlsFailure::UnknownCa),
            (
                cert(CertificateError::ApplicationVerificationFailure),
                TlsFailure::PinMismatch,
            ),
            (
                cert(CertificateError::BadSignature),
                TlsFailure::BadCertificate,
            ),
            (
                tls(rustls::Error::AlertReceived(AlertDescription::UnknownCA)),
                TlsFailure::CertificateRefused,
            ),
            (
                tls(rustls::Error::AlertReceived(
                    AlertDescription::ProtocolVersion,
                )),
                TlsFailure::Incompatible,
            ),
            (
                tls(rustls::Error::AlertReceived(AlertDescription::CloseNotify)),
                TlsFailure::Closed,
            ),
            (
                tls(rustls::Error::NoApplicationProtocol),
                TlsFailure::Incompatible,
            ),
            (
                io::Error::from(io::ErrorKind::UnexpectedEof),
                TlsFailure::Closed,
            ),
            (
                io::Error::from(io::ErrorKind::ConnectionReset),
                TlsFailure::Closed,
            ),
            (
                io::Error::from(io::ErrorKind::TimedOut),
                TlsFailure::Timeout,
            ),
            (tls(rustls::Error::DecryptError), TlsFailure::Protocol),
        ];
        for (e, want) in cases {
            assert_eq!(TlsFailure::of(&e), want, "{e}");
        }
    }

    #[test]
    fn handshake_counts_keep_each_outcome_apart() {
        let c = HandshakeCounts::default();
        c.record(Ok(false));
        c.record(Ok(true));
        c.record(Ok(true));
        c.record(Err(TlsFailure::PinMismatch));
        let got: Vec<(&str, u64)> = c.by_result().filter(|(_, n)| *n > 0).collect();
        assert_eq!(got, [("full", 1), ("resumed", 2), ("pin_mismatch", 1)]);
        assert_eq!(c.by_result().count(), 2 + TlsFailure::ALL.len());
    }
}
