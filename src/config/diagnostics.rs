//! Turning config problems into messages that name the file, the line and the
//! key, e.g. `site.toml:4:1: server.lisen: unknown key`.
//!
//! serde stops at the first error, but `corral check` promises every problem.
//! So after an error we blank the offending line (keeping byte offsets, hence
//! line numbers, intact) and parse again, collecting errors as we go.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based line and column, when the problem has a place in the file.
    pub line: Option<(usize, usize)>,
    /// Dotted key, e.g. `app.workers`.
    pub key: Option<String>,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some((l, c)) = self.line {
            write!(f, ":{l}:{c}")?;
        }
        write!(f, ": ")?;
        if let Some(k) = &self.key {
            write!(f, "{k}: ")?;
        }
        write!(f, "{}", self.message)
    }
}

/// All the problems found in one file; what `check` prints.
#[derive(Debug)]
pub struct Problems(pub Vec<Problem>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Problems {}

/// Source text plus its parsed, spanned tree: the means to point at keys.
pub struct Source<'a> {
    pub file: &'a Path,
    pub text: &'a str,
    tree: Option<Spanned<DeTable<'a>>>,
}

impl<'a> Source<'a> {
    pub fn new(file: &'a Path, text: &'a str) -> Self {
        Source {
            file,
            text,
            tree: DeTable::parse(text).ok(),
        }
    }

    /// 1-based (line, column) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        line_col(self.text, offset)
    }

    /// A problem at a dotted key (or at its table, or the file when absent).
    pub fn at_key(&self, key: &str, message: impl Into<String>) -> Problem {
        let line = self.span_of(key).map(|s| self.line_col(s.start));
        Problem {
            file: self.file.to_path_buf(),
            line,
            key: Some(key.to_string()),
            message: message.into(),
        }
    }

    /// Span of the key named by a dotted path, or of its nearest parent that
    /// exists. Array indices are written `listen[1]`-style.
    pub fn span_of(&self, dotted: &str) -> Option<Range<usize>> {
        let tree = self.tree.as_ref()?;
        let mut table: &DeTable = tree.get_ref();
        let mut found: Option<Range<usize>> = None;
        for part in dotted.split('.') {
            let (name, index) = match part.split_once('[') {
                Some((n, rest)) => (n, rest.trim_end_matches(']').parse::<usize>().ok()),
                None => (part, None),
            };
            let (k, v) = table.iter().find(|(k, _)| k.get_ref().as_ref() == name)?;
            found = Some(k.span());
            let mut value: &Spanned<DeValue> = v;
            if let (Some(i), DeValue::Array(items)) = (index, value.get_ref()) {
                if let Some(item) = items.get(i) {
                    found = Some(item.span());
                    value = item;
                }
            }
            match value.get_ref() {
                DeValue::Table(t) => table = t,
                _ => break,
            }
        }
        found
    }

    /// The dotted key whose name or value contains the byte range.
    pub fn key_at(&self, span: &Range<usize>) -> Option<String> {
        fn walk(t: &DeTable, at: usize, prefix: &str) -> Option<String> {
            for (k, v) in t.iter() {
                let path = if prefix.is_empty() {
                    k.get_ref().to_string()
                } else {
                    format!("{prefix}.{}", k.get_ref())
                };
                let ks = k.span();
                let vs = v.span();
                let inside_value = vs.start <= at && at < vs.end.max(vs.start + 1);
                if let DeValue::Table(inner) = v.get_ref() {
                    if let Some(p) = walk(inner, at, &path) {
                        return Some(p);
                    }
                }
                if (ks.start <= at && at < ks.end) || inside_value {
                    return Some(path);
                }
            }
            None
        }
        walk(self.tree.as_ref()?.get_ref(), span.start, "")
    }
}

pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, col)
}

/// Replaces the whole line(s) covering `span` with spaces, preserving every
/// byte offset so later errors still point at the right lines.
pub fn blank_lines(text: &mut String, span: &Range<usize>) {
    let start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let end = text[span.end.min(text.len())..]
        .find('\n')
        .map_or(text.len(), |i| span.end + i);
    let blanked: String = text[start..end]
        .chars()
        .map(|c| if c == '\n' { '\n' } else { ' ' })
        .collect();
    // Multi-byte characters become one space each; pad to keep offsets.
    let pad = (end - start).saturating_sub(blanked.len());
    text.replace_range(start..end, &(blanked + &" ".repeat(pad)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions() {
        assert_eq!(line_col("a\nbc\n", 3), (2, 2));
        assert_eq!(line_col("abc", 0), (1, 1));
    }

    #[test]
    fn finds_keys() {
        let text = "[server]\nlisten = [\"a\", \"b\"]\n[app]\nworkers = 2\n";
        let src = Source::new(Path::new("x.toml"), text);
        let span = src.span_of("app.workers").unwrap();
        assert_eq!(src.line_col(span.start), (4, 1));
        let span = src.span_of("server.listen[1]").unwrap();
        assert_eq!(src.line_col(span.start), (2, 16));
        assert_eq!(src.key_at(&(40..41)).as_deref(), Some("app.workers"));
    }

    #[test]
    fn blanking_keeps_offsets() {
        let mut t = String::from("a = 1\nbé = 2\nc = 3\n");
        let len = t.len();
        blank_lines(&mut t, &(6..7));
        assert_eq!(t.len(), len);
        assert!(t.ends_with("\nc = 3\n"));
    }
}
