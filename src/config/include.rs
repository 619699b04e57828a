//! Fragments: `include = ["conf.d/*.toml"]` in the main file names further files,
//! each holding `[[route]]` tables, so each team can own one (CoreDNS `import`,
//! dnsdist `includeDirectory`, dnsmasq `conf-dir`). Patterns are relative to the
//! including file's directory and expanded in sorted order; a pattern without
//! wildcards must name a file that exists, one with wildcards may match none (an
//! empty conf.d). A fragment may not include others.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::error::{ConfigError, SourceText};
use super::raw::RawFragment;

/// A fragment's name (as its errors give it) and text.
pub(super) struct Fragment {
    pub(super) file: String,
    pub(super) text: String,
}

/// The files `include` names, read, in order, each once.
pub(super) fn read_fragments(
    include: Option<Spanned<Vec<Spanned<String>>>>,
    src: &SourceText<'_>,
) -> Result<Vec<Fragment>, ConfigError> {
    let Some(include) = include else {
        return Ok(Vec::new());
    };
    let base = Path::new(src.file).parent().unwrap_or(Path::new(""));
    let mut paths: Vec<PathBuf> = Vec::new();
    for (j, pattern) in include.into_inner().into_iter().enumerate() {
        let key = format!("include[{j}]");
        let pattern_path = lexical(&base.join(pattern.get_ref()));
        for p in expand(&pattern_path, src, &key, pattern.span())? {
            if !paths.contains(&p) {
                paths.push(p);
            }
        }
    }
    paths
        .into_iter()
        .map(|p| {
            let file = p.display().to_string();
            let text = std::fs::read_to_string(&p).map_err(|source| ConfigError::Read {
                path: file.clone(),
                source,
            })?;
            Ok(Fragment { file, text })
        })
        .collect()
}

/// `path` with `.` and `dir/..` taken out, without following links (a Kubernetes
/// ConfigMap volume is a tree of them), so messages and `check` name the file as an
/// operator would: `/etc/zonefwd/../fragments/a.toml` is `/etc/fragments/a.toml`.
fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out
}

/// The files a pattern names, sorted.
fn expand(
    pattern: &Path,
    src: &SourceText<'_>,
    key: &str,
    span: std::ops::Range<usize>,
) -> Result<Vec<PathBuf>, ConfigError> {
    let text = pattern.to_string_lossy();
    let wildcard = text.contains(['*', '?', '[']);
    let matches = glob::glob(&text)
        .map_err(|e| src.error(span.clone(), key, format!("{text}: not a pattern: {e}")))?;
    let mut found = Vec::new();
    for m in matches {
        let p = m.map_err(|e| src.error(span.clone(), key, format!("{text}: {e}")))?;
        if p.is_file() {
            found.push(p);
        }
    }
    if found.is_empty() && !wildcard {
        return Err(src.error(span, key, format!("{text}: no such file")));
    }
    found.sort();
    Ok(found)
}

/// A fragment's tables: `[[route]]` and `[local] records` only, anything else located
/// in the fragment.
pub(super) fn check_fragment(raw: &RawFragment, src: &SourceText<'_>) -> Result<(), ConfigError> {
    let misplaced = [
        ("server", raw.server.as_ref()),
        ("acl", raw.acl.as_ref()),
        ("cache", raw.cache.as_ref()),
        ("include", raw.include.as_ref()),
        ("dnstap", raw.dnstap.as_ref()),
    ];
    let hosts = raw.local.as_ref().and_then(|l| l.hosts.as_ref());
    if let Some(h) = hosts {
        return Err(src.error(
            h.span(),
            "local.hosts",
            "a fragment may hold [local] records, not hosts files: list those in the main configuration file",
        ));
    }
    for (table, value) in misplaced {
        if let Some(v) = value {
            return Err(src.error(
                v.span(),
                table,
                format!("a fragment holds [[route]] tables only: {table} belongs in the main configuration file"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical_paths() {
        for (path, clean) in [
            (
                "/etc/zonefwd/../zonefwd-fragments/*/*.toml",
                "/etc/zonefwd-fragments/*/*.toml",
            ),
            ("./conf.d/./a.toml", "conf.d/a.toml"),
            ("../x/a.toml", "../x/a.toml"),
            ("a/b/../../c.toml", "c.toml"),
        ] {
            assert_eq!(lexical(Path::new(path)), PathBuf::from(clean), "{path}");
        }
    }
}
