//! Errors that point at the file: file, line, column, key, and the offending line;
//! and `Problems`, which collects every one found in a file and its fragments, so
//! that `check` reports them all in one run, in file order.

use std::fmt;
use std::ops::Range;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: cannot read the config file: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Errors),
}

/// Every error found, in file order (the main file, then each fragment); never empty.
#[derive(Debug)]
pub struct Errors(Vec<Located>);

impl Errors {
    /// The first, in file order.
    pub fn first(&self) -> &Located {
        &self.0[0]
    }

    pub fn iter(&self) -> impl Iterator<Item = &Located> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Errors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        if self.0.len() > 1 {
            write!(f, "\n{} errors", self.0.len())?;
        }
        Ok(())
    }
}

/// An error at a place in the file.
#[derive(Debug)]
pub struct Located {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub key: String,
    pub message: String,
    /// The offending line of the file and the width of the marked part.
    pub excerpt: Option<(String, usize)>,
}

impl fmt::Display for Located {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        write!(f, "{}", self.message)?;
        if let Some((text, width)) = &self.excerpt {
            let gutter = self.line.to_string();
            write!(
                f,
                "\n{pad} |\n{gutter} | {text}\n{pad} | {indent}{marks}",
                pad = " ".repeat(gutter.len()),
                indent = " ".repeat(self.column - 1),
                marks = "^".repeat((*width).max(1)),
            )?;
        }
        Ok(())
    }
}

/// The text being loaded and its name, so any step can locate an error in it.
pub(super) struct SourceText<'a> {
    pub(super) file: &'a str,
    pub(super) text: &'a str,
}

impl SourceText<'_> {
    pub(super) fn error(
        &self,
        span: Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid(Errors(vec![self.locate(span, key, message)]))
    }

    pub(super) fn locate(
        &self,
        span: Range<usize>,
        key: &str,
        message: impl Into<String>,
    ) -> Located {
        let start = span.start.min(self.text.len());
        let line_start = self.text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = self.text[start..]
            .find('\n')
            .map_or(self.text.len(), |i| start + i);
        let line_text = self.text[line_start..line_end].trim_end_matches('\r');
        let column = self.text[line_start..start].chars().count() + 1;
        let width = self.text[start..span.end.clamp(start, line_end)]
            .chars()
            .count();
        Located {
            file: self.file.to_string(),
            line: self.text[..start].matches('\n').count() + 1,
            column,
            key: key.to_string(),
            message: message.into(),
            excerpt: Some((line_text.to_string(), width)),
        }
    }
}

/// The errors found so far, and the keys whose values were set aside (so that a
/// later step's complaint about their absence is not reported as a second error).
#[derive(Debug, Default)]
pub(super) struct Problems {
    found: Vec<Located>,
    /// (file, key) of each value set aside.
    set_aside: Vec<(String, String)>,
}

impl Problems {
    /// Records the errors of `r`; its value, if it had one. A read error is not a
    /// place in the file: it is returned at once.
    pub(super) fn keep<T>(&mut self, r: Result<T, ConfigError>) -> Result<Option<T>, ConfigError> {
        match r {
            Ok(v) => Ok(Some(v)),
            Err(ConfigError::Invalid(errors)) => {
                errors.0.into_iter().for_each(|e| self.push(e));
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Records the errors of `r` (never a read error here) and goes on with `fallback`.
    pub(super) fn or<T>(&mut self, r: Result<T, ConfigError>, fallback: T) -> T {
        match self.keep(r) {
            Ok(v) => v.unwrap_or(fallback),
            Err(e) => {
                // Validation does not read files; a read error here is a bug, kept
                // visible all the same.
                self.push(Located {
                    file: String::new(),
                    line: 0,
                    column: 0,
                    key: String::new(),
                    message: e.to_string(),
                    excerpt: None,
                });
                fallback
            }
        }
    }

    /// Records `e`, unless it is about a value set aside after an earlier error.
    pub(super) fn push(&mut self, e: Located) {
        let about_set_aside = self.set_aside.iter().any(|(file, key)| {
            *file == e.file
                && e.key.strip_prefix(key.as_str()).is_some_and(|rest| {
                    rest.is_empty() || rest.starts_with('.') || rest.starts_with('[')
                })
        });
        if !about_set_aside {
            self.found.push(e);
        }
    }

    /// `key` of `file` had an error and its value was left out: what later steps say
    /// of its absence is not a second error.
    pub(super) fn set_aside(&mut self, file: &str, key: String) {
        self.set_aside.push((file.to_string(), key));
    }

    /// `value`, or every error found in file order (`files`: the main file first,
    /// then the fragments).
    pub(super) fn finish<T>(self, value: T, files: &[String]) -> Result<T, ConfigError> {
        if self.found.is_empty() {
            Ok(value)
        } else {
            Err(self.into_error(files))
        }
    }

    /// Every error found, in file order; only when some were.
    pub(super) fn into_error(self, files: &[String]) -> ConfigError {
        let mut found = self.found;
        let rank = |file: &str| files.iter().position(|f| f == file).unwrap_or(files.len());
        found.sort_by_key(|e| (rank(&e.file), e.line, e.column));
        found.dedup_by(|a, b| {
            a.file == b.file && a.line == b.line && a.column == b.column && a.message == b.message
        });
        ConfigError::Invalid(Errors(found))
    }

    /// Whether `key` of `file` was set aside after an error.
    pub(super) fn is_set_aside(&self, file: &str, key: &str) -> bool {
        self.set_aside.iter().any(|(f, k)| f == file && k == key)
    }
}
