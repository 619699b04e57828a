//! The trust a route gives its `tls://` upstreams (RFC 7858), as one rustls client
//! configuration: the system's roots or the route's `tls_ca`, checked against the name
//! in `tls://ADDR#NAME`; SPKI pins (`tls_pins`, RFC 7858 section 4.2 and RFC 7469's
//! `sha256/` form) on top, or alone for an upstream without a name; or, with
//! `tls_insecure_no_verify`, nothing. Sessions are resumed (RFC 8446 section 2.2) from
//! the configuration's cache, which the upstream's connections share.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use base64::Engine;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};

/// ALPN for DNS over TLS (the IANA registry's "dot").
pub const ALPN_DOT: &[u8] = b"dot";

/// Where an upstream's certificate must lead to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Roots {
    /// The host's trusted roots (rustls-native-certs: /etc/ssl/certs on Debian).
    System,
    /// `tls_ca`: the certificates of this file only.
    File {
        path: PathBuf,
        certs: Vec<CertificateDer<'static>>,
    },
    /// `tls_insecure_no_verify` (or pins alone): no chain, no name.
    Unchecked,
}

/// A route's trust for its `tls://` upstreams.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Trust {
    pub roots: Roots,
    /// `tls_pins`: the SHA-256 of the certificate's SubjectPublicKeyInfo; when any is
    /// given, the upstream's must be one of them.
    pub pins: Vec<Pin>,
}

/// One `sha256/BASE64` pin: a SubjectPublicKeyInfo's SHA-256.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pin(pub [u8; 32]);

impl Pin {
    pub fn parse(s: &str) -> Result<Pin, String> {
        let Some(b64) = s.strip_prefix("sha256/") else {
            return Err(format!(
                "{s:?}: expected \"sha256/\" and the base64 SHA-256 of the certificate's public key (kdig +tls-pin, or: openssl x509 -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64)"
            ));
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|e| format!("{s:?}: not base64: {e}"))?;
        let digest: [u8; 32] = bytes
            .try_into()
            .map_err(|b: Vec<u8>| format!("{s:?}: a SHA-256 is 32 octets, this is {}", b.len()))?;
        Ok(Pin(digest))
    }

    /// The pin of a certificate's key.
    pub fn of(cert: &CertificateDer<'_>) -> Result<Pin, rustls::Error> {
        let parsed = webpki::EndEntityCert::try_from(cert)
            .map_err(|_| rustls::Error::InvalidCertificate(CertificateError::BadEncoding))?;
        let spki = parsed.subject_public_key_info();
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, spki.as_ref());
        let mut out = [0; 32];
        out.copy_from_slice(digest.as_ref());
        Ok(Pin(out))
    }
}

impl fmt::Display for Pin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.0);
        write!(f, "sha256/{b64}")
    }
}

/// The host's trusted roots, read once: an empty store when it has none.
pub fn system_roots() -> Arc<RootCertStore> {
    static ROOTS: OnceLock<Arc<RootCertStore>> = OnceLock::new();
    let roots = ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::debug!(error = %e, "reading the system's trusted roots");
        }
        let mut store = RootCertStore::empty();
        let (_added, _ignored) = store.add_parsable_certificates(found.certs);
        Arc::new(store)
    });
    Arc::clone(roots)
}

/// `tls_ca`: every certificate of a PEM file.
pub fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = read_certs(path)?;
    let mut store = RootCertStore::empty();
    let (added, _) = store.add_parsable_certificates(certs.iter().cloned());
    if added == 0 {
        return Err(format!(
            "{}: none of its certificates can be a trust anchor",
            path.display()
        ));
    }
    Ok(certs)
}

/// Every certificate in a PEM file; an error that says why there are none.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{}: no certificate in it (expected PEM, \"-----BEGIN CERTIFICATE-----\")",
            path.display()
        ));
    }
    Ok(certs)
}

/// The rustls client configuration for `trust`, shared by every connection of one
/// upstream so that they resume each other's sessions.
pub fn config(trust: &Trust) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let chain: Option<Arc<dyn ServerCertVerifier>> = match &trust.roots {
        Roots::System => Some(webpki_verifier(system_roots(), &provider)?),
        Roots::File { certs, .. } => {
            let mut store = RootCertStore::empty();
            store.add_parsable_certificates(certs.iter().cloned());
            Some(webpki_verifier(Arc::new(store), &provider)?)
        }
        Roots::Unchecked => None,
    };
    let verifier: Arc<dyn ServerCertVerifier> = match chain {
        Some(chain) if trust.pins.is_empty() => chain,
        chain => Arc::new(Verifier {
            chain,
            pins: trust.pins.clone(),
            algorithms: provider.signature_verification_algorithms,
        }),
    };
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    config.alpn_protocols = vec![ALPN_DOT.to_vec()];
    Ok(Arc::new(config))
}

fn webpki_verifier(
    roots: Arc<RootCertStore>,
    provider: &Arc<CryptoProvider>,
) -> Result<Arc<dyn ServerCertVerifier>, String> {
    if roots.is_empty() {
        return Err("this host has no trusted root certificates (install ca-certificates), so no upstream can be verified: set tls_ca to the CA that issued the upstream's certificate".to_string());
    }
    let v = WebPkiServerVerifier::builder_with_provider(roots, Arc::clone(provider))
        .build()
        .map_err(|e| e.to_string())?;
    Ok(v)
}

/// The chain check when there is one, then the pins; the handshake's signatures are
/// always checked, so a pinned key must also be held.
#[derive(Debug)]
struct Verifier {
    chain: Option<Arc<dyn ServerCertVerifier>>,
    pins: Vec<Pin>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Verifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if let Some(chain) = &self.chain {
            chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        }
        if !self.pins.is_empty() && !self.pins.contains(&Pin::of(end_entity)?) {
            return Err(rustls::Error::InvalidCertificate(
                CertificateError::ApplicationVerificationFailure,
            ));
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// The name an upstream is asked as: `#NAME` (SNI, and what its certificate must
/// name), or its address.
pub fn server_name(
    name: Option<&str>,
    addr: std::net::IpAddr,
) -> Result<ServerName<'static>, String> {
    match name {
        Some(n) => ServerName::try_from(n.to_string())
            .map_err(|_| format!("{n:?} is not a DNS name to verify")),
        None => Ok(ServerName::IpAddress(addr.into())),
    }
}

/// The TLS side of one upstream: the configuration its connections share (and so
/// their session cache), the name it is asked as, its handshakes by outcome, and the
/// last failure, which `ctl status` and the log report.
pub struct Dialer {
    connector: Result<tokio_rustls::TlsConnector, String>,
    name: ServerName<'static>,
    pub handshakes: super::HandshakeCounts,
    /// The last handshake's failure; `None` once one succeeds.
    last_failure: std::sync::Mutex<Option<super::HandshakeError>>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// A handshake with an upstream that does not end in this long has failed (a server
/// that accepts connections and never speaks TLS).
pub const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

impl Dialer {
    pub fn new(name: Option<&str>, addr: std::net::IpAddr, trust: &Trust) -> Dialer {
        let name = server_name(name, addr).unwrap_or(ServerName::IpAddress(addr.into()));
        Dialer {
            connector: config(trust).map(tokio_rustls::TlsConnector::from),
            name,
            handshakes: super::HandshakeCounts::default(),
            last_failure: std::sync::Mutex::new(None),
        }
    }

    /// TLS over `tcp`, within `HANDSHAKE_TIMEOUT`; its outcome counted, and logged
    /// when it changes (`upstream`: as the configuration writes it).
    pub async fn handshake(
        &self,
        tcp: tokio::net::TcpStream,
        upstream: &str,
    ) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, super::HandshakeError> {
        let connector = match &self.connector {
            Ok(c) => c,
            Err(e) => {
                let err = super::HandshakeError {
                    failure: super::TlsFailure::UnknownCa,
                    detail: e.clone(),
                };
                return Err(self.failed(err, upstream));
            }
        };
        let shaking = connector.connect(self.name.clone(), tcp);
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, shaking).await {
            Ok(Ok(stream)) => {
                let resumed =
                    stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
                self.handshakes.record(Ok(resumed));
                let was = self.lock().take();
                if let Some(was) = was {
                    tracing::info!(%upstream, failure = %was, "tls handshakes with the upstream succeed again");
                }
                Ok(stream)
            }
            Ok(Err(e)) => Err(self.failed(super::HandshakeError::of(&e), upstream)),
            Err(_) => Err(self.failed(super::HandshakeError::timeout(), upstream)),
        }
    }

    fn failed(&self, err: super::HandshakeError, upstream: &str) -> super::HandshakeError {
        self.handshakes.record(Err(err.failure));
        let mut last = self.lock();
        // Said once per change, not once per connection attempt.
        if last.as_ref().map(|l| l.failure) != Some(err.failure) {
            tracing::warn!(%upstream, reason = err.failure.as_str(), error = %err, "tls handshake with the upstream failed; it is not asked in plain text");
        }
        *last = Some(err.clone());
        err
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<super::HandshakeError>> {
        self.last_failure.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The last handshake's failure, if the last one failed.
    pub fn last_failure(&self) -> Option<super::HandshakeError> {
        self.lock().clone()
    }

    /// The name the upstream is asked as (SNI, and its certificate's).
    pub fn name(&self) -> String {
        match &self.name {
            ServerName::DnsName(n) => n.as_ref().to_string(),
            other => other.to_str().into_owned(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_read_and_print_in_the_sha256_base64_form() {
        let text = "sha256/47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";
        assert_eq!(Pin::parse(text).unwrap().to_string(), text);
        for (bad, says) in [
            ("47DEQpj8HBSa", "expected \"sha256/\""),
            ("sha256/!!!", "not base64"),
            ("sha256/AAAA", "32 octets, this is 3"),
        ] {
            let e = Pin::parse(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }
}
