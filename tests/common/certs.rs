//! Certificates made for a test (rcgen): a CA, and leaf pairs it signs (valid,
//! expired, for another name) or another CA signs (unknown), written as PEM files.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
};

/// A test CA and the directory its files go to.
pub struct Pki {
    pub dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate, PEM: what `tls_ca`, kdig's `+tls-ca` and Unbound trust.
    pub ca_pem: PathBuf,
}

/// A certificate and its key, as files.
#[derive(Clone, Debug)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `sha256/BASE64` of its public key, as `tls_pins` takes it.
    pub pin: String,
    /// Its validity as written into it, in seconds since the epoch.
    pub not_before: i64,
    pub not_after: i64,
}

/// What kind of leaf to make.
#[derive(Clone, Copy, Debug)]
pub enum Leaf {
    /// Valid now, for the names given.
    Good,
    /// Its validity ended in 2020.
    Expired,
    /// Valid for 90 days, of which 5 are left: its renewal is overdue.
    Expiring,
    /// Signed by a CA nobody trusts.
    UnknownCa,
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = ca("zonefwd test CA");
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, ca.pem()).unwrap();
        Pki { dir, ca, ca_pem }
    }

    /// A leaf for `names` (DNS names or IP addresses), written as `STEM.pem` and
    /// `STEM.key`.
    pub fn leaf(&self, stem: &str, names: &[&str], kind: Leaf) -> Pair {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, stem);
        match kind {
            Leaf::Expired => {
                params.not_before = date_time_ymd(2019, 1, 1);
                params.not_after = date_time_ymd(2020, 1, 1);
            }
            Leaf::Expiring => {
                let day = Duration::from_secs(86_400);
                let now = date_time_ymd(1970, 1, 1)
                    + SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
                params.not_before = now - 85 * day;
                params.not_after = now + 5 * day;
            }
            Leaf::Good | Leaf::UnknownCa => {}
        }
        let key = KeyPair::generate().unwrap();
        let other;
        let issuer = match kind {
            Leaf::UnknownCa => {
                other = ca("someone else's CA");
                &other
            }
            _ => &self.ca,
        };
        let cert = params.signed_by(&key, issuer).unwrap();
        let pin = zonefwd_pin(cert.der());
        let pair = Pair {
            cert: self.dir.path().join(format!("{stem}.pem")),
            key: self.dir.path().join(format!("{stem}.key")),
            pin,
            not_before: params.not_before.unix_timestamp(),
            not_after: params.not_after.unix_timestamp(),
        };
        std::fs::write(&pair.cert, cert.pem()).unwrap();
        std::fs::write(&pair.key, key.serialize_pem()).unwrap();
        pair
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// The pin of a certificate, computed as openssl would: SHA-256 over the DER
/// SubjectPublicKeyInfo, in base64 (through `openssl`, a tool we did not write, when
/// there; `kdig +tls-pin` takes the same text).
fn zonefwd_pin(der: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("c.der");
    std::fs::write(&cert, der).unwrap();
    let script = format!(
        "openssl x509 -inform der -in {} -pubkey -noout | openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64",
        cert.display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("sh");
    let b64 = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(
        out.status.success() && b64.len() == 44,
        "openssl pin: {b64:?}"
    );
    format!("sha256/{b64}")
}

/// `text` with `{ca}` replaced by the CA file's path, for configs.
pub fn with_ca(text: &str, ca: &Path) -> String {
    text.replace("{ca}", &ca.display().to_string())
}
