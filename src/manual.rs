//! The manual pages, made from what the program already says about itself: `zonefwd(8)`
//! and one page per command from the clap definitions (clap_mangen), and
//! `zonefwd.toml(5)` from `config/reference.toml`, every key with its comment. The
//! .deb installs them (`zonefwd manual DIR`, run at package time); `reference_keys`
//! also lets the tests hold `docs/configuration.md` to the same file.

use std::io;
use std::path::{Path, PathBuf};

use clap::Command;
use roff::{bold, italic, roman, Roff};

/// One key of the reference file: its table, name, the comment above it, and the
/// line that sets it there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceKey {
    /// "" for the top level, else `server`, `acl`, `cache`, `route` or `local`.
    pub table: String,
    pub key: String,
    pub doc: String,
    pub example: String,
}

/// A table of the reference file and what its leading comment says of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferenceTable {
    pub table: String,
    pub doc: String,
}

/// The tables and keys of `reference` (the text of config/reference.toml), in order,
/// each key once. A key set in a comment (`# identity = "@hostname"`) counts: the file
/// shows keys without a default that way.
pub fn reference_keys(reference: &str) -> (Vec<ReferenceTable>, Vec<ReferenceKey>) {
    let mut tables = vec![ReferenceTable {
        table: String::new(),
        doc: String::new(),
    }];
    let mut keys: Vec<ReferenceKey> = Vec::new();
    let mut block: Vec<&str> = Vec::new();
    // The last comment block, kept over one blank line for a table header after it.
    let mut previous_block: Vec<&str> = Vec::new();
    for line in reference.lines() {
        let bare = line.trim_start_matches('#').trim();
        if line.trim().is_empty() {
            let table = tables
                .last_mut()
                .expect("the top level is there from the start");
            let keyless = !keys.iter().any(|k| k.table == table.table);
            if !table.table.is_empty() && table.doc.is_empty() && keyless {
                // The comment that opens a table, before its first key's own.
                table.doc = block.join(" ");
                block.clear();
            }
            if !block.is_empty() {
                previous_block = std::mem::take(&mut block);
            }
            continue;
        }
        if let Some(table) = table_header(bare) {
            let doc = if block.is_empty() {
                &previous_block
            } else {
                &block
            };
            tables.push(ReferenceTable {
                table: table.to_string(),
                doc: doc.join(" "),
            });
            block.clear();
            previous_block.clear();
            continue;
        }
        if let Some(key) = key_of(bare) {
            let table = tables.last().map(|t| t.table.clone()).unwrap_or_default();
            if !keys.iter().any(|k| k.table == table && k.key == key) {
                // A key right under another without a comment of its own shares it.
                let doc = match (block.is_empty(), keys.last()) {
                    (true, Some(last)) if last.table == table => last.doc.clone(),
                    _ => block.join(" "),
                };
                keys.push(ReferenceKey {
                    table,
                    key: key.to_string(),
                    doc,
                    example: bare.to_string(),
                });
            }
            block.clear();
            previous_block.clear();
            continue;
        }
        if line.starts_with('#') {
            block.push(bare);
        }
    }
    // The top level's comment is the file's own header; the first table takes the
    // block above it instead.
    tables.retain(|t| !t.table.is_empty());
    (tables, keys)
}

/// `[server]` -> `server`, `[[route]]` -> `route` (also commented out).
fn table_header(line: &str) -> Option<&str> {
    let inner = line.strip_prefix('[')?.strip_suffix(']')?;
    let inner = inner.trim_start_matches('[').trim_end_matches(']');
    inner
        .chars()
        .all(|c| c.is_ascii_lowercase() || c == '_')
        .then_some(inner)
}

/// `max_ttl = "1d"` -> `max_ttl`; prose that happens to hold " = " is not a key: the
/// line must be TOML.
fn key_of(line: &str) -> Option<&str> {
    let (key, _) = line.split_once(" = ")?;
    let named = !key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_');
    (named && line.parse::<toml::Table>().is_ok()).then_some(key)
}

/// Writes `zonefwd.8`, `zonefwd-COMMAND.8` for each visible command (and each of
/// `import`'s) and `zonefwd.toml.5` into `dir`; returns the paths written.
pub fn write_pages(cli: &Command, reference: &str, dir: &Path) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    let mut page = |name: String, bytes: Vec<u8>| -> io::Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, bytes)?;
        written.push(path);
        Ok(())
    };
    let mut cli = cli.clone();
    cli.build();
    page("zonefwd.8".into(), main_page(&cli)?)?;
    for (name, command) in commands(&cli, "zonefwd") {
        let mut out = Vec::new();
        clap_mangen::Man::new(command)
            .section("8")
            .render(&mut out)?;
        page(format!("{name}.8"), out)?;
    }
    page("zonefwd.toml.5".into(), config_page(reference).into_bytes())?;
    Ok(written)
}

/// Every visible command under `cli`, named as its page is (`zonefwd-import-route53-rules`).
fn commands(cli: &Command, prefix: &str) -> Vec<(String, Command)> {
    let mut found = Vec::new();
    let shown = cli
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help");
    for sub in shown {
        let name = format!("{prefix}-{}", sub.get_name());
        let usage = name.replace('-', " ");
        let command = sub.clone().display_name(&name).bin_name(&usage);
        found.extend(commands(sub, &name));
        found.push((name, command));
    }
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found
}

/// `zonefwd(8)`: clap_mangen's page, then what a command list does not say.
fn main_page(cli: &Command) -> io::Result<Vec<u8>> {
    let man = clap_mangen::Man::new(cli.clone()).section("8");
    let mut out = Vec::new();
    man.render_title(&mut out)?;
    man.render_name_section(&mut out)?;
    man.render_synopsis_section(&mut out)?;
    man.render_description_section(&mut out)?;
    man.render_options_section(&mut out)?;
    man.render_subcommands_section(&mut out)?;
    out.extend(about_page().render().into_bytes());
    man.render_version_section(&mut out)?;
    Ok(out)
}

/// The sections of zonefwd(8) after the commands.
fn about_page() -> Roff {
    let mut page = Roff::new();
    page.control("SH", ["EXIT STATUS"]);
    for (code, meaning) in EXIT_STATUS {
        page.control("TP", [] as [&str; 0])
            .text([bold(code.to_string())])
            .text([roman(meaning)]);
    }
    page.control("SH", ["ENVIRONMENT"]);
    for (name, meaning) in ENVIRONMENT {
        page.control("TP", [] as [&str; 0])
            .text([bold(name)])
            .text([roman(meaning)]);
    }
    page.control("SH", ["SIGNALS"]);
    page.text([roman(
        "SIGHUP reloads the configuration (as zonefwd ctl reload does): the new file is \
         validated first; an invalid one is refused, logged and counted, and the running \
         configuration stays. SIGTERM and SIGINT stop accepting queries, finish the ones \
         in flight and exit 0.",
    )]);
    page.control("SH", ["FILES"]);
    for (path, meaning) in FILES {
        page.control("TP", [] as [&str; 0])
            .text([italic(path)])
            .text([roman(meaning)]);
    }
    page.control("SH", ["SEE ALSO"]);
    page.text([roman(
        "zonefwd.toml(5), zonefwd-run(8), zonefwd-check(8), zonefwd-ctl(8), \
         zonefwd-doctor(8), systemd-resolved(8), named.conf(5), unbound.conf(5)",
    )]);
    page
}

/// What each exit status means, for every command.
pub const EXIT_STATUS: [(u8, &str); 3] = [
    (
        0,
        "Success: run stopped cleanly; check found the file valid; query got NOERROR or \
         NXDOMAIN; healthcheck got an answer; doctor found nothing to fix; ctl was done.",
    ),
    (
        1,
        "The answer is no: query got SERVFAIL, REFUSED or another error rcode, or no \
         route matched (explain too); healthcheck got no answer; doctor found something \
         to fix; the server refused a ctl command (a reload of a broken file).",
    ),
    (
        2,
        "The command could not run: a configuration error (every error is printed with \
         its file, line and column), a listen address that cannot be bound (its holder \
         is named), bad arguments, or no control socket to talk to.",
    ),
];

const ENVIRONMENT: [(&str, &str); 4] = [
    (
        "ZONEFWD_CONFIG",
        "The configuration file when -c is not given (default /etc/zonefwd/zonefwd.toml).",
    ),
    (
        "ZONEFWD_CONTROL",
        "The control socket, over [server] control (run --control, ctl --socket).",
    ),
    (
        "RUST_LOG",
        "The log filter (default info; zonefwd=debug for each try).",
    ),
    (
        "JOURNAL_STREAM",
        "Set by systemd: records go to the journal with their priority and fields.",
    ),
];

const FILES: [(&str, &str); 3] = [
    (
        "/etc/zonefwd/zonefwd.toml",
        "The configuration, zonefwd.toml(5).",
    ),
    (
        "/run/zonefwd/control.sock",
        "The control socket the systemd unit sets.",
    ),
    (
        "/usr/share/doc/zonefwd/examples/",
        "The reference configuration with every key, and one recommended configuration \
         per cloud.",
    ),
];

/// `zonefwd.toml(5)`: every table and key of the reference file, with its comment.
pub fn config_page(reference: &str) -> String {
    let (tables, keys) = reference_keys(reference);
    let mut page = Roff::new();
    page.control("TH", ["ZONEFWD.TOML", "5", "", "zonefwd", "File formats"]);
    page.control("SH", ["NAME"])
        .text([roman("zonefwd.toml - zonefwd configuration file")]);
    page.control("SH", ["DESCRIPTION"]).text([roman(
        "The configuration of zonefwd(8), in TOML. Unknown keys are errors. Durations are \
         written \"250ms\", \"5s\", \"1m\", \"1h\", \"1d\". zonefwd check validates a file and \
         prints every error with its file, line and column; zonefwd explain NAME shows \
         which route answers a name. A reload (SIGHUP, zonefwd ctl reload) applies a \
         changed file; listen addresses, udp_threads, the TCP limits, the cache size, \
         log_format, metrics and control need a restart.",
    )]);
    let top: Vec<&ReferenceKey> = keys.iter().filter(|k| k.table.is_empty()).collect();
    if !top.is_empty() {
        page.control("SH", ["TOP LEVEL"]);
        key_items(&mut page, top);
    }
    for t in &tables {
        let header = if t.table == "route" {
            "[[route]]".to_string()
        } else {
            format!("[{}]", t.table)
        };
        page.control("SH", [header.as_str()]);
        if !t.doc.is_empty() {
            page.text([roman(t.doc.as_str())]);
        }
        key_items(
            &mut page,
            keys.iter().filter(|k| k.table == t.table).collect(),
        );
    }
    page.control("SH", ["EXAMPLES"]).text([roman(
        "/usr/share/doc/zonefwd/examples/ holds the reference file with every key, and the \
         recommended configurations for Azure and AWS.",
    )]);
    page.control("SH", ["SEE ALSO"])
        .text([roman("zonefwd(8), zonefwd-check(8), zonefwd-explain(8)")]);
    page.render()
}

fn key_items(page: &mut Roff, keys: Vec<&ReferenceKey>) {
    for k in keys {
        page.control("TP", [] as [&str; 0])
            .text([bold(k.example.as_str())])
            .text([roman(k.doc.as_str())]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"# The file's own header.

# A top-level key. Default: none
# include = ["conf.d/*.toml"]

[server]
# Where to listen. Default: ["127.0.0.1:53"]
listen = ["0.0.0.0:53"]
# The lower bound...
min_ttl = "0s"
max_ttl = "1d"
# Unset by default: shown as a comment. Prose that looks like a key is not one:
# ready = "required" is not TOML with these words after it.
# identity = "@hostname"

[cache]
# What the table is about.

# Entries held. Default: 100000
max_entries = 100000

# Routes: the longest zone wins.

[[route]]
name = "a"

[[route]]
name = "b"
"#;

    fn key<'a>(keys: &'a [ReferenceKey], table: &str, key: &str) -> &'a ReferenceKey {
        keys.iter()
            .find(|k| k.table == table && k.key == key)
            .unwrap_or_else(|| panic!("no [{table}] {key}"))
    }

    #[test]
    fn every_key_is_read_once_with_the_comment_above_it() {
        let (tables, keys) = reference_keys(SAMPLE);
        let names: Vec<String> = keys
            .iter()
            .map(|k| format!("{}.{}", k.table, k.key))
            .collect();
        assert_eq!(
            names,
            [
                ".include",
                "server.listen",
                "server.min_ttl",
                "server.max_ttl",
                "server.identity",
                "cache.max_entries",
                "route.name"
            ]
        );
        assert_eq!(
            key(&keys, "", "include").doc,
            "A top-level key. Default: none"
        );
        assert_eq!(
            key(&keys, "server", "listen").example,
            r#"listen = ["0.0.0.0:53"]"#
        );
        // A key right under another, without a comment of its own, shares its comment.
        assert_eq!(key(&keys, "server", "max_ttl").doc, "The lower bound...");
        // Prose holding " = " is no key; a commented-out key is one.
        assert!(!keys.iter().any(|k| k.key == "ready"));
        assert!(key(&keys, "server", "identity")
            .doc
            .ends_with("with these words after it."));
        let docs: Vec<(&str, &str)> = tables
            .iter()
            .map(|t| (t.table.as_str(), t.doc.as_str()))
            .collect();
        assert_eq!(
            docs,
            [
                ("server", ""),
                ("cache", "What the table is about."),
                ("route", "Routes: the longest zone wins."),
                ("route", "")
            ]
        );
    }

    #[test]
    fn the_configuration_page_holds_every_key_of_the_shipped_reference() {
        let reference = include_str!("../config/reference.toml");
        let page = config_page(reference);
        let (_, keys) = reference_keys(reference);
        assert!(keys.len() > 40);
        for k in &keys {
            assert!(page.contains(&k.key), "zonefwd.toml(5) lacks {}", k.key);
        }
    }
}
