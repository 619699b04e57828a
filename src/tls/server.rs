//! The listeners' certificate (`[server] tls_cert`, `tls_key`): read from PEM files at
//! each load, so a reload (SIGHUP, `ctl reload`) picks up a renewed pair and a pair that
//! does not load is a located error that keeps the running one. Made into two rustls
//! server configurations, DoT's (ALPN "dot", RFC 7858) and DoH's (h2 and http/1.1,
//! RFC 8484 section 5.2), TLS 1.2 and 1.3 only (rustls has nothing older). The session
//! cache outlives reloads, so clients resume across a certificate change. `on_disk`
//! reads the files again, for the run loop's check for a renewed pair.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerSessionMemoryCache, StoresServerSessions};
use rustls::ServerConfig;

use super::client::{read_certs, ALPN_DOT};
use super::validity::Validity;

/// Sessions the listeners keep for resumption, across reloads.
const SESSIONS: usize = 4096;

/// The listeners' certificate and key, loaded.
#[derive(Clone)]
pub struct Identity {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The names the certificate is for (its DNS subjectAltNames).
    pub names: Vec<String>,
    /// When the chain is accepted by clients.
    pub validity: Validity,
    chain: Vec<CertificateDer<'static>>,
    pub dot: Arc<ServerConfig>,
    pub doh: Arc<ServerConfig>,
}

impl Identity {
    /// Reads and checks the pair: a certificate chain (leaf first) and the leaf's key.
    pub fn load(cert: &Path, key: &Path) -> Result<Identity, String> {
        let chain = read_certs(cert)?;
        let leaf = webpki::EndEntityCert::try_from(&chain[0]).map_err(|e| {
            format!(
                "{}: the first certificate does not parse: {e}",
                cert.display()
            )
        })?;
        let names = leaf.valid_dns_names().map(str::to_string).collect();
        let validity =
            Validity::of_chain(&chain).map_err(|e| format!("{}: {e}", cert.display()))?;
        let text = std::fs::read(key).map_err(|e| format!("cannot read {}: {e}", key.display()))?;
        let der = PrivateKeyDer::from_pem_slice(&text).map_err(|e| {
            format!(
                "{}: no private key in it (expected PEM, \"-----BEGIN PRIVATE KEY-----\"): {e}",
                key.display()
            )
        })?;
        let dot = server_config(&chain, &der, vec![ALPN_DOT.to_vec()], cert, key)?;
        let doh = server_config(
            &chain,
            &der,
            vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            cert,
            key,
        )?;
        Ok(Identity {
            cert: cert.to_path_buf(),
            key: key.to_path_buf(),
            names,
            validity,
            chain,
            dot,
            doh,
        })
    }

    /// `check`'s, `doctor`'s and the log's words for it, when it is expired, not yet
    /// valid or overdue for renewal at `now`: the text and the fix.
    pub fn expiry_problem(&self, now: std::time::SystemTime) -> Option<(String, String)> {
        self.validity.problem(&self.label(), now)
    }

    /// "tls_cert PATH": the certificate as messages name it.
    pub fn label(&self) -> String {
        format!("tls_cert {}", self.cert.display())
    }

    /// What the files hold now: the same certificates, a renewed pair (loaded and
    /// checked), or why what is there does not load.
    pub fn on_disk(&self) -> OnDisk {
        match read_certs(&self.cert) {
            Ok(chain) if chain == self.chain => OnDisk::Unchanged,
            Ok(_) => match Identity::load(&self.cert, &self.key) {
                Ok(renewed) => OnDisk::Renewed(renewed),
                Err(why) => OnDisk::Unloadable(why),
            },
            Err(why) => OnDisk::Unloadable(why),
        }
    }
}

/// The listeners' certificate files, as read again.
pub enum OnDisk {
    Unchanged,
    Renewed(Identity),
    Unloadable(String),
}

fn server_config(
    chain: &[CertificateDer<'static>],
    key: &PrivateKeyDer<'static>,
    alpn: Vec<Vec<u8>>,
    cert_path: &Path,
    key_path: &Path,
) -> Result<Arc<ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(chain.to_vec(), key.clone_key())
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(_) => format!(
                "{} is not the key of the certificate in {}",
                key_path.display(),
                cert_path.display()
            ),
            e => format!("{} with {}: {e}", cert_path.display(), key_path.display()),
        })?;
    config.alpn_protocols = alpn;
    config.session_storage = sessions();
    Ok(Arc::new(config))
}

fn sessions() -> Arc<dyn StoresServerSessions> {
    static CACHE: OnceLock<Arc<dyn StoresServerSessions>> = OnceLock::new();
    Arc::clone(CACHE.get_or_init(|| ServerSessionMemoryCache::new(SESSIONS)))
}

impl PartialEq for Identity {
    /// The same files with the same certificates (a renewed certificate differs).
    fn eq(&self, other: &Identity) -> bool {
        self.cert == other.cert && self.key == other.key && self.chain == other.chain
    }
}

impl fmt::Debug for Identity {
    /// Never the key.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("names", &self.names)
            .field("validity", &self.validity)
            .finish_non_exhaustive()
    }
}
