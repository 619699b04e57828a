//! The documents say what the code and the shipped files say: every link resolves, the
//! configuration document covers the reference file's keys, the configurations and
//! forwarder snippets shown are the files and the output they claim to be, and no
//! user document talks about issue numbers.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use zonefwd::manual::reference_keys;

/// The checkout, or `$ZONEFWD_DOCS` (a copy with a defect planted, to see a test fail).
fn root() -> PathBuf {
    std::env::var_os("ZONEFWD_DOCS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The documents a user or maintainer reads: the README, docs/ and the benchmark pages.
fn documents() -> Vec<PathBuf> {
    let mut docs = vec![root().join("README.md"), root().join("bench/README.md")];
    for dir in ["docs", "bench/results"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "md") {
                docs.push(path);
            }
        }
    }
    docs.sort();
    docs
}

/// The text outside fenced code blocks, line by line (code is not prose: a `[x](y)`
/// in a TOML example is no link).
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    text.lines()
        .filter(|line| {
            if line.trim_start().starts_with("```") {
                fenced = !fenced;
                return false;
            }
            !fenced
        })
        .collect()
}

/// GitHub's anchor for a heading: lowercase, punctuation but `-` and `_` dropped,
/// spaces as `-`; a repeated one gets `-1`, `-2`, ...
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for line in prose(markdown) {
        let Some(title) = line.strip_prefix('#').map(|t| t.trim_start_matches('#')) else {
            continue;
        };
        let slug: String = title
            .trim()
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let mut unique = slug.clone();
        let mut n = 1;
        while !seen.insert(unique.clone()) {
            unique = format!("{slug}-{n}");
            n += 1;
        }
    }
    seen
}

/// The targets of `[text](target)` links in a line.
fn links(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        found.push(after[..end].trim().to_string());
        rest = &after[end..];
    }
    found
}

#[test]
fn every_link_in_the_documents_resolves() {
    let mut broken = Vec::new();
    let mut checked = 0;
    for doc in documents() {
        let text = read(&doc);
        for target in prose(&text).into_iter().flat_map(links) {
            if target.starts_with("http://") || target.starts_with("https://") {
                continue;
            }
            checked += 1;
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let file = if path.is_empty() {
                doc.clone()
            } else {
                doc.parent().unwrap().join(path)
            };
            if !file.exists() {
                broken.push(format!("{}: {target}: no such file", doc.display()));
            } else if !anchor.is_empty() && !anchors(&read(&file)).contains(anchor) {
                broken.push(format!("{}: {target}: no such heading", doc.display()));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
    assert!(
        checked > 50,
        "only {checked} links found: is the reader broken?"
    );
}

#[test]
fn the_configuration_document_covers_every_key_of_the_reference_file() {
    let (_, keys) = reference_keys(&read(&root().join("config/reference.toml")));
    let doc = read(&root().join("docs/configuration.md"));
    let sections = sections_by_table(&doc);
    let mut missing = Vec::new();
    for k in &keys {
        let table = if k.table.is_empty() {
            "include"
        } else {
            &k.table
        };
        let text = sections.iter().find(|(t, _)| t == table).map(|(_, s)| s);
        if !text.is_some_and(|s| {
            s.contains(&format!("`{}`", k.key)) || s.contains(&format!("{} = ", k.key))
        }) {
            missing.push(format!("[{table}] {}", k.key));
        }
    }
    assert!(
        missing.is_empty(),
        "docs/configuration.md lacks: {missing:?}"
    );
    // And documents no key the reference file lacks (a removed or misspelt one).
    let known: BTreeSet<(String, String)> = keys
        .iter()
        .map(|k| (k.table.clone(), k.key.clone()))
        .collect();
    let mut unknown = Vec::new();
    for (table, text) in &sections {
        for line in text.lines().filter(|l| l.starts_with("| `")) {
            let key = line[3..].split('`').next().unwrap_or_default().to_string();
            if !known.contains(&(table.clone(), key.clone())) {
                unknown.push(format!("[{table}] {key}"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "docs/configuration.md documents keys config/reference.toml lacks: {unknown:?}"
    );
    assert!(
        keys.len() > 40,
        "only {} keys read from the reference file",
        keys.len()
    );
}

/// docs/configuration.md cut at its `##` headings, each named by the table it is about
/// (`[server]` -> `server`, `[[route]]` -> `route`, `include` for the fragments).
fn sections_by_table(doc: &str) -> Vec<(String, String)> {
    let mut sections: Vec<(String, String)> = Vec::new();
    for line in doc.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            let table = match title {
                t if t.contains("`include`") => "include".to_string(),
                t => t
                    .split('`')
                    .nth(1)
                    .unwrap_or(t)
                    .trim_matches(|c| c == '[' || c == ']')
                    .to_string(),
            };
            sections.push((table, String::new()));
        } else if let Some((_, text)) = sections.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    sections
}

/// The fenced block right after each `<!-- KIND ARGS -->` marker of `doc`, with ARGS.
fn marked_blocks(doc: &str, kind: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(args) = line
            .strip_prefix(&format!("<!-- {kind} "))
            .and_then(|l| l.strip_suffix(" -->"))
        else {
            continue;
        };
        assert!(
            lines[i + 1].starts_with("```"),
            "{kind} {args}: no code block after the marker"
        );
        let body: Vec<&str> = lines[i + 2..]
            .iter()
            .take_while(|l| !l.starts_with("```"))
            .copied()
            .collect();
        found.push((args.to_string(), body.join("\n") + "\n"));
    }
    found
}

#[test]
fn the_configurations_shown_are_the_files_shipped() {
    let mut shown = 0;
    for doc in documents() {
        for (path, block) in marked_blocks(&read(&doc), "file") {
            let file = read(&root().join(&path));
            assert_eq!(
                block,
                file,
                "{}: the block marked {path} is not that file",
                doc.display()
            );
            shown += 1;
        }
    }
    assert!(
        shown >= 2,
        "the README shows the recommended configuration for each cloud"
    );
}

#[test]
fn each_overlay_ships_the_routes_of_its_clouds_recommended_configuration() {
    let routes = |text: String| text[text.find("[[route]]").expect("a route")..].to_string();
    for cloud in ["azure", "aws"] {
        let vm = routes(read(&root().join(format!("config/{cloud}.toml"))));
        let pod = routes(read(
            &root().join(format!("deploy/kubernetes/overlays/{cloud}/zonefwd.toml")),
        ));
        assert_eq!(
            vm, pod,
            "config/{cloud}.toml and the {cloud} overlay route differently"
        );
    }
}

#[test]
fn the_forwarder_snippets_are_what_onprem_forwarders_prints() {
    let mut shown = 0;
    for doc in documents() {
        for (args, block) in marked_blocks(&read(&doc), "onprem-forwarders") {
            let out = Command::new(env!("CARGO_BIN_EXE_zonefwd"))
                .arg("onprem-forwarders")
                .args(args.split_whitespace())
                .current_dir(root())
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "onprem-forwarders {args}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert_eq!(
                block,
                String::from_utf8(out.stdout).unwrap(),
                "{}: the snippet for `onprem-forwarders {args}` is not what it prints now",
                doc.display()
            );
            shown += 1;
        }
    }
    assert!(
        shown >= 2,
        "docs/operations.md shows the Windows and BIND snippets"
    );
}

#[test]
fn user_documents_name_no_issue_numbers() {
    let mut found = Vec::new();
    let user_docs = documents()
        .into_iter()
        .filter(|d| !d.starts_with(root().join("bench/results")));
    for doc in user_docs {
        for line in prose(&read(&doc)) {
            let lower = line.to_lowercase();
            let numbered = lower.match_indices("issue").any(|(i, _)| {
                let after = lower[i + 5..].trim_start_matches(['s', ' ', '#']);
                after.starts_with(|c: char| c.is_ascii_digit())
            });
            if numbered {
                found.push(format!("{}: {line}", doc.display()));
            }
        }
    }
    assert!(
        found.is_empty(),
        "issue numbers in user documents:\n{}",
        found.join("\n")
    );
}
