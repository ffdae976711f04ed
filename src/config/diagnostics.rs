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
                match v.get_ref() {
                    DeValue::Table(inner) => {
                        if let Some(p) = walk(inner, at, &path) {
                            return Some(p);
                        }
                    }
                    // `[[static]]` and other arrays of tables: `static[1].dir`.
                    DeValue::Array(items) => {
                        for (i, item) in items.iter().enumerate() {
                            let DeValue::Table(inner) = item.get_ref() else {
                                continue;
                            };
                            if let Some(p) = walk(inner, at, &format!("{path}[{i}]")) {
                                return Some(p);
                            }
                        }
                    }
                    _ => {}
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

/// `span` is in a table's header (`[sever]`): the span of the whole section,
/// to the next header. Its keys were reported against the section's name;
/// parsed again without the header they would be reported a second time,
/// against the table above.
pub fn section_at(text: &str, span: &Range<usize>) -> Option<Range<usize>> {
    let start = text[..span.start.min(text.len())]
        .rfind('\n')
        .map_or(0, |i| i + 1);
    let header_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    if !text[start..header_end].trim_start().starts_with('[') {
        return None;
    }
    // To the end of the last line before the next header (or the file).
    let mut end = header_end;
    while end + 1 < text.len() {
        let next = end + 1;
        let next_end = text[next..].find('\n').map_or(text.len(), |i| next + i);
        if text[next..next_end].trim_start().starts_with('[') {
            break;
        }
        end = next_end;
    }
    Some(start..end)
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
    fn a_section_runs_from_its_header_to_the_next() {
        let text = "[a]\nx = 1\n[sever]\nlisten = 2\n\nport = 3\n[app]\nm = 1\n";
        let at = text.find("sever").unwrap();
        let section = section_at(text, &(at..at + 5)).unwrap();
        assert_eq!(&text[section], "[sever]\nlisten = 2\n\nport = 3");
        let key = text.find("listen").unwrap();
        assert_eq!(section_at(text, &(key..key + 6)), None);
        let last = text.find("[app]").unwrap();
        assert_eq!(
            &text[section_at(text, &(last..last + 1)).unwrap()],
            "[app]\nm = 1"
        );
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
