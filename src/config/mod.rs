//! The configuration file: typed TOML, defaults, and validation whose every error names
//! the file, line, column and key.
//!
//! Two layers: `raw` mirrors the file (unknown keys are errors, values keep their
//! spans), then `validate` turns it into the runtime `Config` (`types`) and performs
//! the cross-field checks, still able to point at the offending text (`error`).
//! `resolv` reads resolv.conf for `"system"` upstreams.

mod dnstap;
mod error;
mod include;
mod local;
mod messages;
mod raw;
mod resolv;
mod server;
mod tls;
mod types;
mod validate;

use std::path::Path;

pub use error::{ConfigError, Errors, Located};
pub(crate) use raw::parse_addr;
pub use resolv::read_resolv_conf;
pub(crate) use resolv::{is_resolved_stub, is_self};
pub(crate) use server::host_name;
pub use types::*;

use error::{Problems, SourceText};
use raw::{RawFile, RawFragment};
use serde_path_to_error::Segment;

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path, env: &LoadEnv) -> Result<Config, ConfigError> {
        let display = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: display.clone(),
            source,
        })?;
        Config::parse(&text, &display, env)
    }

    /// Validates `text`; `file` names it in messages, and `include` patterns are
    /// relative to its directory. Every error of the file and its fragments is
    /// reported, in file order; a TOML syntax error, or a missing key, ends the
    /// reading of its file.
    pub fn parse(text: &str, file: &str, env: &LoadEnv) -> Result<Config, ConfigError> {
        let src = SourceText { file, text };
        let mut problems = Problems::default();
        let Some(mut raw) = deserialize::<RawFile>(&src, &mut problems) else {
            return Err(problems.into_error(&[file.to_string()]));
        };
        let fragments: Vec<include::Fragment> = problems
            .keep(include::read_fragments(raw.include.take(), &src))?
            .unwrap_or_default();
        let mut files = vec![file.to_string()];
        files.extend(fragments.iter().map(|f| f.file.clone()));
        let mut local = problems
            .keep(local_of(raw.local.take(), &src, true))?
            .unwrap_or_default();
        let sources: Vec<SourceText<'_>> = fragments
            .iter()
            .map(|f| SourceText {
                file: &f.file,
                text: &f.text,
            })
            .collect();
        let mut parsed = Vec::with_capacity(sources.len());
        for fragment in &sources {
            let Some(mut raw) = deserialize::<RawFragment>(fragment, &mut problems) else {
                continue;
            };
            problems.keep(include::check_fragment(&raw, fragment))?;
            local.extend(
                problems
                    .keep(local_of(raw.local.take(), fragment, false))?
                    .unwrap_or_default(),
            );
            parsed.push((fragment, raw.route));
        }
        let mut config = validate::validate(raw, &src, parsed, env, &mut problems);
        config.local = local;
        problems.finish(config, &files)
    }
}

/// The `[server] control` socket a file names, read without validating the rest:
/// `zonefwd ctl reload` must reach the server to hear why the file is invalid. `None`
/// when the file cannot be read, is not TOML, or names none.
pub fn control_socket_named_in(path: &Path) -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string(path).ok()?;
    let doc: toml::Table = text.parse().ok()?;
    let control = doc.get("server")?.get("control")?.as_str()?;
    (!control.is_empty()).then(|| std::path::PathBuf::from(control))
}

/// A file's `[local]` records, and its hosts files when `hosts` (the main file only).
fn local_of(
    raw: Option<raw::RawLocal>,
    src: &SourceText<'_>,
    hosts: bool,
) -> Result<Vec<LocalRecord>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let mut out = match raw.records {
        Some(r) => local::parse_records(r, src)?,
        None => Vec::new(),
    };
    if let (true, Some(h)) = (hosts, raw.hosts) {
        out.extend(local::read_hosts(h, src)?);
    }
    Ok(out)
}

/// At most this many errors are read from one file before giving up on the rest.
const MAX_ERRORS: usize = 100;

/// `src` as `T`, every error located in it. A key whose value is wrong (or unknown)
/// is recorded and set aside, and the rest read again, so one run finds every such
/// error; a TOML syntax error, or a missing key, ends the reading (`None`).
fn deserialize<T: serde::de::DeserializeOwned>(
    src: &SourceText<'_>,
    problems: &mut Problems,
) -> Option<T> {
    let mut doc = match toml::de::DeTable::parse(src.text) {
        Ok(doc) => doc,
        Err(e) => {
            problems.push(src.locate(e.span().unwrap_or(0..0), "", e.message().to_string()));
            return None;
        }
    };
    for _ in 0..MAX_ERRORS {
        let de = toml::de::Deserializer::from(doc.clone());
        let e = match serde_path_to_error::deserialize(de) {
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let segments: Vec<Segment> = e.path().iter().cloned().collect();
        let key = key_path(&segments);
        let inner = e.into_inner();
        if let Some(field) = missing_field(inner.message()) {
            // Absent because an earlier error set it aside: said already.
            let full = if key.is_empty() {
                field.to_string()
            } else {
                format!("{key}.{field}")
            };
            let said = problems.is_set_aside(src.file, &full);
            if !said {
                problems.push(src.locate(
                    inner.span().unwrap_or(0..0),
                    &key,
                    inner.message().to_string(),
                ));
            }
            return None;
        }
        problems.push(src.locate(
            inner.span().unwrap_or(0..0),
            &key,
            messages::in_file_terms(inner.message(), &key),
        ));
        match set_aside(doc.get_mut(), &segments) {
            Some(k) => {
                // A misspelt key: what is said of the key it meant being absent
                // (`acl.allowed` for `allow`) is said already.
                if let Some(meant) = messages::meant(inner.message()) {
                    let table = k.rsplit_once('.').map_or("", |(t, _)| t);
                    let full = if table.is_empty() {
                        meant.to_string()
                    } else {
                        format!("{table}.{meant}")
                    };
                    problems.set_aside(src.file, full);
                }
                problems.set_aside(src.file, k);
            }
            None => return None,
        }
    }
    None
}

/// The field a "missing field `x`" error names.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

/// Removes from `root` the deepest key on `path` (the one whose value was wrong, or
/// which is unknown); its key path, or `None` when the path names no key.
fn set_aside(root: &mut toml::de::DeTable<'_>, path: &[Segment]) -> Option<String> {
    let path: Vec<Segment> = path
        .iter()
        .filter(|s| !matches!(s, Segment::Map { key } if key.starts_with("$__serde_spanned")))
        .cloned()
        .collect();
    let last = path
        .iter()
        .rposition(|s| matches!(s, Segment::Map { .. }))?;
    let path = &path[..=last];
    remove_in_table(root, path).then(|| key_path(path))
}

/// Removes the key `path` ends with, `path` starting in `table`.
fn remove_in_table(table: &mut toml::de::DeTable<'_>, path: &[Segment]) -> bool {
    match path {
        [Segment::Map { key }] => {
            let kept = std::mem::take(table)
                .into_iter()
                .filter(|(k, _)| k.get_ref() != key)
                .collect();
            *table = kept;
            true
        }
        [Segment::Map { key }, rest @ ..] => table
            .iter_mut()
            .find(|(k, _)| k.get_ref() == key)
            .is_some_and(|(_, v)| remove_in_value(v.get_mut(), rest)),
        _ => false,
    }
}

fn remove_in_value(value: &mut toml::de::DeValue<'_>, path: &[Segment]) -> bool {
    use toml::de::DeValue;
    match (value, path.first()) {
        (DeValue::Table(t), Some(Segment::Map { .. })) => remove_in_table(t, path),
        (DeValue::Array(a), Some(Segment::Seq { index })) => a
            .get_mut(*index)
            .is_some_and(|v| remove_in_value(v.get_mut(), &path[1..])),
        _ => false,
    }
}

/// `route[1].timeout`, without the markers `Spanned` adds to the path.
fn key_path(path: &[Segment]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Segment::Seq { index } => out.push_str(&format!("[{index}]")),
            Segment::Map { key } if key.starts_with("$__serde_spanned") => {}
            Segment::Map { key } | Segment::Enum { variant: key } => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            Segment::Unknown => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::Acl;
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::time::Duration;

    fn env() -> LoadEnv {
        LoadEnv {
            resolv_conf: PathBuf::from("/nonexistent/resolv.conf"),
        }
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = Config::parse(
            "[[route]]\nname = \"all\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\n",
            "t.toml",
            &env(),
        )
        .unwrap();
        assert_eq!(c.server.listen, vec!["127.0.0.1:53".parse().unwrap()]);
        assert_eq!(c.acl, Acl::default_private());
        let r = &c.routes[0];
        assert_eq!(r.upstreams[0].addr, "192.0.2.1:53".parse().unwrap());
        assert_eq!(
            (r.timeout, r.try_timeout),
            (DEFAULT_TIMEOUT, DEFAULT_TRY_TIMEOUT)
        );
        assert_eq!(r.zones, vec![vec![0]]);
        assert_eq!(r.order, UpstreamOrder::Sequential);
    }

    #[test]
    fn short_timeout_caps_the_default_try_timeout() {
        let c = Config::parse("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"[2001:db8::1]:5300\"]\ntimeout = \"500ms\"\n", "t.toml", &env()).unwrap();
        assert_eq!(c.routes[0].try_timeout, Duration::from_millis(500));
        assert_eq!(
            c.routes[0].upstreams[0].addr,
            "[2001:db8::1]:5300".parse().unwrap()
        );
    }

    #[test]
    fn error_display_points_at_the_text() {
        let e = Config::parse("[[route]]\nname = \"a\"\nzones = [\".\"]\nupstreams = [\"192.0.2.1\"]\ntimeout = \"5 parsecs\"\n", "z.toml", &env()).unwrap_err();
        let s = e.to_string();
        assert!(
            s.starts_with("z.toml:5:11: route[0].timeout: expected a duration"),
            "{s}"
        );
        assert!(
            s.contains("5 | timeout = \"5 parsecs\"\n  |           ^^^^^^^^^^^"),
            "{s}"
        );
    }

    #[test]
    fn resolv_conf_parsing() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("resolv.conf");
        std::fs::write(&p, "# c\nsearch x\nnameserver 192.0.2.53\nnameserver fe80::1%2\nnameserver fe80::1%eth0\nnameserver 192.0.2.53\nnameserver ::1\n").unwrap();
        let (got, skipped) = read_resolv_conf(&p).unwrap();
        assert_eq!(skipped, vec!["fe80::1%eth0".to_string()]);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0], "192.0.2.53:53".parse().unwrap());
        assert!(matches!(got[1], SocketAddr::V6(a) if a.scope_id() == 2));
        std::fs::write(&p, "search x\n").unwrap();
        assert!(read_resolv_conf(&p)
            .unwrap_err()
            .contains("no usable nameserver"));
    }

    #[test]
    fn self_detection() {
        let l: SocketAddr = "0.0.0.0:53".parse().unwrap();
        assert!(is_self(l, "127.0.0.1:53".parse().unwrap()));
        assert!(!is_self(l, "127.0.0.53:53".parse().unwrap()));
        assert!(!is_self(l, "127.0.0.1:5353".parse().unwrap()));
        assert!(is_self(
            "10.0.0.4:53".parse().unwrap(),
            "10.0.0.4:53".parse().unwrap()
        ));
        assert!(!is_self(
            "[::]:53".parse().unwrap(),
            "127.0.0.1:53".parse().unwrap()
        ));
    }
}
