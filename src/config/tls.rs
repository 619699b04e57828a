//! Validation of the TLS keys: the DoT and DoH listeners (`[server] tls_listen`,
//! `https_listen`, `tls_cert`, `tls_key`) and a route's trust in its `tls://` upstreams
//! (`tls_ca`, `tls_pins`, `tls_insecure_no_verify`). Files are read here, so a bad one
//! is a located error at load, and a reload that meets one keeps what runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::error::{ConfigError, Problems, SourceText};
use super::raw::{parse_addr_with_port, parse_list};
use super::types::{EncryptedListeners, UpstreamAddr, Warning, DOT_PORT, HTTPS_PORT};
use crate::tls::client::{self, Pin, Roots, Trust};
use crate::tls::server::Identity;

type Addrs = Option<Spanned<Vec<Spanned<String>>>>;

pub(super) struct RawListeners {
    pub tls_listen: Addrs,
    pub https_listen: Addrs,
    pub tls_cert: Option<Spanned<String>>,
    pub tls_key: Option<Spanned<String>>,
}

/// `tls_listen`, `https_listen` and the pair; `listen` is the plain listeners, which
/// take TCP on their ports too.
pub(super) fn listeners(
    raw: RawListeners,
    listen: &[SocketAddr],
    src: &SourceText<'_>,
    problems: &mut Problems,
) -> EncryptedListeners {
    let mut taken: Vec<SocketAddr> = listen.to_vec();
    type Parse = fn(&str) -> Result<SocketAddr, String>;
    let mut addrs = |list: Addrs, key: &str, parse: Parse| -> Vec<SocketAddr> {
        let Some(list) = list else {
            return Vec::new();
        };
        let parsed = problems.or(parse_list(list.into_inner(), src, key, parse), Vec::new());
        let mut out = Vec::new();
        for (addr, span) in parsed {
            // Port 0 (tests: the kernel picks) never clashes.
            if addr.port() != 0 && taken.contains(&addr) {
                problems.push(src.locate(
                    span,
                    key,
                    format!("{addr} is already a listener of server.listen, tls_listen or https_listen: give each its own port"),
                ));
                continue;
            }
            taken.push(addr);
            out.push(addr);
        }
        out
    };
    let first_listener = [&raw.tls_listen, &raw.https_listen]
        .into_iter()
        .flatten()
        .map(|l| l.span())
        .next();
    let tls = addrs(raw.tls_listen, "server.tls_listen", |s| {
        parse_addr_with_port(s, DOT_PORT)
    });
    let https = addrs(raw.https_listen, "server.https_listen", |s| {
        parse_addr_with_port(s, HTTPS_PORT)
    });
    let identity = problems.or(
        identity(
            raw.tls_cert,
            raw.tls_key,
            first_listener.filter(|_| !tls.is_empty() || !https.is_empty()),
            src,
        ),
        None,
    );
    EncryptedListeners {
        tls,
        https,
        identity,
    }
}

/// `tls_cert` and `tls_key`: both, when a listener needs them (`needed_by`: where
/// the first is written); neither otherwise.
fn identity(
    cert: Option<Spanned<String>>,
    key: Option<Spanned<String>>,
    needed_by: Option<std::ops::Range<usize>>,
    src: &SourceText<'_>,
) -> Result<Option<Identity>, ConfigError> {
    let needed = needed_by.is_some();
    match (cert, key) {
        (None, None) if needed => Err(src.error(
            needed_by.unwrap_or_default(),
            "server.tls_cert",
            "tls_listen and https_listen need a certificate: set tls_cert and tls_key (PEM files)",
        )),
        (None, None) => Ok(None),
        (Some(c), None) => Err(src.error(c.span(), "server.tls_key", "tls_cert is set without tls_key")),
        (None, Some(k)) => Err(src.error(k.span(), "server.tls_cert", "tls_key is set without tls_cert")),
        (Some(c), Some(_)) if !needed => Err(src.error(
            c.span(),
            "server.tls_cert",
            "no tls_listen or https_listen uses this certificate: add one, or remove tls_cert and tls_key",
        )),
        (Some(c), Some(k)) => {
            let (cert_path, key_path) = (relative(src, c.get_ref()), relative(src, k.get_ref()));
            Identity::load(&cert_path, &key_path)
                .map(Some)
                .map_err(|e| src.error(c.span(), "server.tls_cert", e))
        }
    }
}

/// A path in the file, relative to the file's directory.
fn relative(src: &SourceText<'_>, path: &str) -> PathBuf {
    Path::new(src.file)
        .parent()
        .unwrap_or(Path::new(""))
        .join(path)
}

pub(super) struct RawTrust {
    pub tls_ca: Option<Spanned<String>>,
    pub tls_pins: Option<Spanned<Vec<Spanned<String>>>>,
    pub tls_insecure_no_verify: Option<Spanned<bool>>,
}

/// A route's trust in its `tls://` upstreams; `None` when it has none. Warnings for
/// what is allowed but weakens it.
pub(super) fn trust(
    raw: RawTrust,
    route: &str,
    upstreams: &[UpstreamAddr],
    (src, upstreams_span): (&SourceText<'_>, std::ops::Range<usize>),
    key: &dyn Fn(&str) -> String,
    warnings: &mut Vec<Warning>,
) -> Result<Option<Trust>, ConfigError> {
    let tls: Vec<&UpstreamAddr> = upstreams.iter().filter(|u| u.tls.is_some()).collect();
    if tls.is_empty() {
        let stray = [
            raw.tls_ca.as_ref().map(|s| ("tls_ca", s.span())),
            raw.tls_pins.as_ref().map(|s| ("tls_pins", s.span())),
            raw.tls_insecure_no_verify
                .as_ref()
                .map(|s| ("tls_insecure_no_verify", s.span())),
        ];
        if let Some((k, span)) = stray.into_iter().flatten().next() {
            return Err(src.error(
                span,
                &key(k),
                "no upstream of this route is tls://, so nothing uses this",
            ));
        }
        return Ok(None);
    }
    let pins = match raw.tls_pins {
        None => Vec::new(),
        Some(p) => parse_list(p.into_inner(), src, &key("tls_pins"), Pin::parse)?
            .into_iter()
            .map(|(p, _)| p)
            .collect(),
    };
    let no_verify = raw
        .tls_insecure_no_verify
        .as_ref()
        .is_some_and(|v| *v.get_ref());
    let named = tls
        .iter()
        .any(|u| u.tls.as_ref().is_some_and(|t| t.name.is_some()));
    if let Some(bare) = tls
        .iter()
        .find(|u| u.tls.as_ref().is_some_and(|t| t.name.is_none()))
    {
        if !no_verify && pins.is_empty() {
            return Err(src.error(upstreams_span, &key("upstreams"), format!(
                "{} has no name to verify its certificate against: write tls://{}#NAME (the name in its certificate), or pin its key with tls_pins, or set tls_insecure_no_verify = true",
                bare.spec(), bare.addr.ip()
            )));
        }
    }
    let roots = match raw.tls_ca {
        Some(ca) if no_verify => {
            return Err(src.error(ca.span(), &key("tls_ca"), "tls_insecure_no_verify = true checks no certificate, so tls_ca would not be used: remove one of them"));
        }
        _ if no_verify || !named => Roots::Unchecked,
        Some(ca) => {
            let path = relative(src, ca.get_ref());
            let certs =
                client::read_ca(&path).map_err(|e| src.error(ca.span(), &key("tls_ca"), e))?;
            Roots::File { path, certs }
        }
        None if client::system_roots().is_empty() => {
            return Err(src.error(upstreams_span, &key("upstreams"), "this host has no trusted root certificates (install ca-certificates), so the tls:// upstreams cannot be verified: set tls_ca to the CA that issued their certificates"));
        }
        None => Roots::System,
    };
    if no_verify && pins.is_empty() {
        warnings.push(Warning::new(
            format!("route {route}: tls_insecure_no_verify = true: its tls:// upstreams' certificates are not checked, so anyone on the path can answer for them"),
            "name each upstream (tls://ADDR#NAME) and trust its issuer (tls_ca), or pin its key (tls_pins)",
        ));
    }
    if tls.len() < upstreams.len() {
        warnings.push(Warning::new(
            format!("route {route} mixes tls:// and plain upstreams: when the tls:// ones fail, its queries go to the others unencrypted"),
            "make every upstream of the route tls://, or split the route",
        ));
    }
    Ok(Some(Trust { roots, pins }))
}
