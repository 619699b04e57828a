//! The crate's layout rule: no file imports one that imports it back, however long
//! the way round. Each file of `src/` is read as text; every `use` and every
//! `crate::`/`super::` path in its code (comments, strings and `#[cfg(test)]` items
//! left out) is resolved to the file that defines the name, following re-exports, and
//! the strongly connected components of that graph are the circles.
//!
//! `ZONEFWD_SRC=DIR cargo test --test layout` checks another tree (an older checkout,
//! to see the test fail on a circle).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// A module path: `["upstream", "tcp"]` for `src/upstream/tcp.rs`.
type ModPath = Vec<String>;

struct Module {
    file: String,
    code: String,
    /// Names of the items this file defines.
    defines: BTreeSet<String>,
    /// Re-exports: the name they give, and the path they stand for, as written.
    reexports: Vec<(String, ModPath)>,
    /// `pub use x::*`: the paths whose items it re-exports, as written.
    globs: Vec<ModPath>,
}

struct Crate {
    modules: BTreeMap<ModPath, Module>,
}

#[test]
fn no_file_imports_one_that_imports_it_back() {
    let src = std::env::var_os("ZONEFWD_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    let krate = Crate::read(&src);
    let edges = krate.edges();
    let circles = circles(&edges);
    let mut report = String::new();
    for circle in &circles {
        report.push_str(&format!("circle of {} files:\n", circle.len()));
        for from in circle {
            for (to, names) in &edges[from] {
                if circle.contains(to) {
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    report.push_str(&format!("  {from} -> {to}: {}\n", names.join(", ")));
                }
            }
        }
    }
    assert!(
        circles.is_empty(),
        "files that import one another, directly or round a circle (move the shared \
         piece down to a file both can import):\n{report}"
    );
    // The reader must see the crate at all: a parser that found nothing would pass.
    assert!(
        edges.values().map(BTreeMap::len).sum::<usize>() > 100,
        "too few imports read from {}",
        src.display()
    );
}

impl Crate {
    fn read(src: &Path) -> Crate {
        let mut modules = BTreeMap::new();
        let mut stack = vec![src.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).expect("src/ readable") {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let Some(mpath) = module_path(src, &path) else {
                    continue;
                };
                let text = std::fs::read_to_string(&path).unwrap();
                let code = without_test_items(&strip_comments_and_strings(&text));
                let file = path.strip_prefix(src.parent().unwrap()).unwrap();
                modules.insert(mpath, Module::parse(file.display().to_string(), code));
            }
        }
        Crate { modules }
    }

    /// File -> file it takes names from -> the names.
    fn edges(&self) -> BTreeMap<String, BTreeMap<String, BTreeSet<String>>> {
        let mut edges: BTreeMap<String, BTreeMap<String, BTreeSet<String>>> = BTreeMap::new();
        for (mpath, m) in &self.modules {
            let out = edges.entry(m.file.clone()).or_default();
            for path in paths_in(&m.code) {
                let Some(full) = self.absolute(mpath, &path) else {
                    continue;
                };
                let (target, name) = self.resolve(&full, 0);
                if target != m.file {
                    out.entry(target).or_default().insert(name);
                }
            }
        }
        edges
    }

    /// `path` as written in module `at`, made absolute; `None` for other crates.
    fn absolute(&self, at: &ModPath, path: &[String]) -> Option<ModPath> {
        let mut base = at.clone();
        let mut rest = path;
        match path.first().map(String::as_str) {
            Some("crate") => {
                base.clear();
                rest = &path[1..];
            }
            Some("self") => rest = &path[1..],
            Some("super") => {
                while rest.first().map(String::as_str) == Some("super") {
                    base.pop();
                    rest = &rest[1..];
                }
            }
            Some(first) => {
                // A path relative to this module: only its child modules count.
                let mut child = at.clone();
                child.push(first.to_string());
                if !self.modules.contains_key(&child) {
                    return None;
                }
            }
            None => return None,
        }
        base.extend(rest.iter().cloned());
        Some(base)
    }

    /// The file that defines what `full` names, and the name.
    fn resolve(&self, full: &ModPath, depth: usize) -> (String, String) {
        let mut module: ModPath = Vec::new();
        let mut i = 0;
        while i < full.len() {
            let mut next = module.clone();
            next.push(full[i].clone());
            if !self.modules.contains_key(&next) {
                break;
            }
            module = next;
            i += 1;
        }
        let m = &self.modules[&module];
        let Some(name) = full.get(i) else {
            // The module itself (`use crate::wire;`).
            return (m.file.clone(), full.last().cloned().unwrap_or_default());
        };
        if m.defines.contains(name) || depth > 8 {
            return (m.file.clone(), name.clone());
        }
        let reexport = m.reexports.iter().find(|(n, _)| n == name);
        if let Some(target) = reexport.and_then(|(_, t)| self.absolute(&module, t)) {
            return self.resolve(&target, depth + 1);
        }
        for glob in &m.globs {
            let Some(mut candidate) = self.absolute(&module, glob) else {
                continue;
            };
            candidate.push(name.clone());
            let (file, found) = self.resolve(&candidate, depth + 1);
            if self
                .modules
                .values()
                .any(|g| g.file == file && g.defines.contains(&found))
            {
                return (file, found);
            }
        }
        (m.file.clone(), name.clone())
    }
}

impl Module {
    fn parse(file: String, code: String) -> Module {
        let mut defines = BTreeSet::new();
        let words: Vec<&str> = code
            .split(|c: char| !(c.is_alphanumeric() || c == '_' || c == '!'))
            .filter(|w| !w.is_empty())
            .collect();
        for pair in words.windows(2) {
            if matches!(
                pair[0],
                "struct" | "enum" | "fn" | "const" | "static" | "type" | "trait" | "union"
            ) || pair[0] == "macro_rules!"
            {
                defines.insert(pair[1].to_string());
            }
        }
        let mut reexports = Vec::new();
        let mut globs = Vec::new();
        for (public, tree) in use_statements(&code) {
            if !public {
                continue;
            }
            for path in expand_use_tree(&tree) {
                let (last, rest) = path.split_last().unwrap();
                match last.as_str() {
                    "*" => globs.push(rest.to_vec()),
                    _ => reexports.push((last.clone(), path.clone())),
                }
            }
        }
        Module {
            file,
            code,
            defines,
            reexports,
            globs,
        }
    }
}

/// `src/upstream/tcp.rs` -> `["upstream", "tcp"]`; `main.rs` (another crate) and
/// non-Rust files -> `None`.
fn module_path(src: &Path, file: &Path) -> Option<ModPath> {
    let rel = file.strip_prefix(src).ok()?;
    if rel.extension()? != "rs" || rel == Path::new("main.rs") {
        return None;
    }
    let mut parts: Vec<String> = rel
        .with_extension("")
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if matches!(parts.last().map(String::as_str), Some("mod" | "lib")) {
        parts.pop();
    }
    Some(parts)
}

/// The code with comments blanked and string and char literals emptied.
fn strip_comments_and_strings(text: &str) -> String {
    let b = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'/' if b.get(i + 1) == Some(&b'/') => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let mut depth = 0;
                while i < b.len() {
                    if b[i..].starts_with(b"/*") {
                        depth += 1;
                        i += 2;
                    } else if b[i..].starts_with(b"*/") {
                        depth -= 1;
                        i += 2;
                        if depth == 0 {
                            break;
                        }
                    } else {
                        i += 1;
                    }
                }
                out.push(' ');
            }
            b'r' if matches!(b.get(i + 1), Some(b'#' | b'"'))
                && !b[..i]
                    .last()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_') =>
            {
                let hashes = b[i + 1..].iter().take_while(|&&c| c == b'#').count();
                let open = i + 1 + hashes;
                if b.get(open) != Some(&b'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                let close: Vec<u8> = std::iter::once(b'"')
                    .chain(std::iter::repeat_n(b'#', hashes))
                    .collect();
                let end = b[open + 1..]
                    .windows(close.len())
                    .position(|w| w == close.as_slice())
                    .map_or(b.len(), |p| open + 1 + p + close.len());
                out.push_str("\"\"");
                i = end;
            }
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("\"\"");
            }
            // A char literal ('x', '\n', '\''), not a lifetime ('a).
            b'\'' if b.get(i + 2) == Some(&b'\'') || b.get(i + 1) == Some(&b'\\') => {
                i += 1;
                while i < b.len() && b[i] != b'\'' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                out.push_str("' '");
            }
            _ => {
                let c = text[i..].chars().next().unwrap();
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

/// The code without the items under `#[cfg(test)]`: tests may import anything.
fn without_test_items(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let after = &rest[at + "#[cfg(test)]".len()..];
        // The item ends at its first `;` outside braces, or at the brace that closes
        // its first block.
        let mut depth = 0usize;
        let mut end = after.len();
        for (i, c) in after.char_indices() {
            match c {
                '{' => depth += 1,
                '}' => {
                    depth -= 1;
                    if depth == 0 {
                        end = i + 1;
                        break;
                    }
                }
                ';' if depth == 0 => {
                    end = i + 1;
                    break;
                }
                _ => {}
            }
        }
        rest = &after[end..];
    }
    out.push_str(rest);
    out
}

/// Every `use` statement: whether it re-exports (`pub`, `pub(crate)`, ...) and its
/// tree, spaces removed.
fn use_statements(code: &str) -> Vec<(bool, String)> {
    let mut found = Vec::new();
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(p) = code[from..].find("use ") {
        let at = from + p;
        from = at + 4;
        if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
            continue;
        }
        let before = code[..at].trim_end();
        let public = before.ends_with("pub")
            || before.ends_with(')') && {
                let open = before.rfind("pub(");
                open.is_some_and(|o| !before[o..].contains(['{', '}', ';']))
            };
        let statement_start = before.is_empty() || before.ends_with([';', '{', '}', ']']) || public;
        if !statement_start {
            continue;
        }
        let Some(end) = code[from..].find(';') else {
            break;
        };
        let tree: String = code[from..from + end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        found.push((public, tree));
        from += end;
    }
    found
}

/// `crate::a::{b, c::{d, self}}` -> the paths it imports (`as` renames dropped).
fn expand_use_tree(tree: &str) -> Vec<ModPath> {
    fn expand(prefix: &[String], tree: &str, out: &mut Vec<ModPath>) {
        let tree = tree.trim_start_matches("::");
        match tree.find('{') {
            None => {
                let path = tree.split("as").next().unwrap_or(tree);
                let mut full = prefix.to_vec();
                for seg in path.split("::").filter(|s| !s.is_empty()) {
                    if seg != "self" || full.is_empty() {
                        full.push(seg.to_string());
                    }
                }
                out.push(full);
            }
            Some(open) => {
                let mut full = prefix.to_vec();
                full.extend(
                    tree[..open]
                        .split("::")
                        .filter(|s| !s.is_empty())
                        .map(str::to_string),
                );
                let inner = &tree[open + 1..tree.rfind('}').unwrap_or(tree.len())];
                for part in split_top_level(inner) {
                    expand(&full, part, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    expand(&[], tree, &mut out);
    out
}

/// `a, b::{c, d}, e` -> `["a", "b::{c, d}", "e"]`.
fn split_top_level(s: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

/// Every path a file names: the `use` trees, and `crate::`/`super::` paths in its code.
fn paths_in(code: &str) -> Vec<ModPath> {
    let mut paths: Vec<ModPath> = use_statements(code)
        .iter()
        .flat_map(|(_, tree)| expand_use_tree(tree))
        .collect();
    let b = code.as_bytes();
    for root in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(p) = code[from..].find(root) {
            let at = from + p;
            from = at + root.len();
            if at > 0
                && (b[at - 1].is_ascii_alphanumeric() || b[at - 1] == b'_' || b[at - 1] == b':')
            {
                continue;
            }
            let len = code[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .unwrap_or(code.len() - at);
            let text = &code[at..at + len];
            if text.ends_with("::") {
                // `crate::a::{b, c}` or `crate::a::*`: a `use` tree, read above.
                continue;
            }
            let path: ModPath = text
                .split("::")
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect();
            paths.push(path);
        }
    }
    paths
}

/// The strongly connected components of more than one file (Tarjan).
fn circles(edges: &BTreeMap<String, BTreeMap<String, BTreeSet<String>>>) -> Vec<Vec<String>> {
    struct Walk<'a> {
        edges: &'a BTreeMap<String, BTreeMap<String, BTreeSet<String>>>,
        index: HashMap<&'a str, usize>,
        low: HashMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<Vec<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            let edges = self.edges;
            for w in edges.get(v).into_iter().flat_map(|m| m.keys()) {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).unwrap();
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    component.push(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    component.sort();
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        edges,
        index: HashMap::new(),
        low: HashMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}
