//! Errors that point at the file: file, line, column, key, and the offending line.

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
    Invalid(Box<Located>),
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
        ConfigError::Invalid(Box::new(Located {
            file: self.file.to_string(),
            line: self.text[..start].matches('\n').count() + 1,
            column,
            key: key.to_string(),
            message: message.into(),
            excerpt: Some((line_text.to_string(), width)),
        }))
    }
}
