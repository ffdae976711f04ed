//! Turning the part of a URL after a static mount's prefix into a path
//! under the mount's folder, refusing everything that could escape it:
//! `..` in any spelling (percent-encoded, `%2e%2e`), backslashes, NUL,
//! invalid or overlong UTF-8, and (unless allowed) dotfiles.
//!
//! Pure and allocation-light, so it can be fuzzed on its own. Symlinks are
//! checked afterwards against the real file system (`static_files`).

use std::path::PathBuf;

#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// Looks like an attack or a mistake: 400/404 without details.
    Invalid,
    /// A dotfile (`.env`, `.git/…`) while they are denied: 404.
    Hidden,
}

/// Percent-decodes a URL path, once: mounts are matched and files looked up
/// on the decoded form (as nginx does), and never decoded a second time, so
/// `%252e%252e` stays the literal name `%2e%2e`.
pub fn decode(raw_path: &[u8]) -> Vec<u8> {
    // Most paths have no escapes: one copy, not a decode byte by byte into
    // a vector that grows as it goes.
    if memchr::memchr(b'%', raw_path).is_none() {
        return raw_path.to_vec();
    }
    percent_encoding::percent_decode(raw_path).collect()
}

/// `decoded` is the (already decoded) URL path after the mount prefix.
/// Returns the relative path and whether the URL ended with a slash (a
/// directory request).
pub fn resolve(decoded: &[u8], dotfiles: bool) -> Result<(PathBuf, bool), Refused> {
    // Rejects invalid and overlong UTF-8 (e.g. %c0%ae for '.').
    let text = std::str::from_utf8(decoded).map_err(|_| Refused::Invalid)?;
    if text.contains(['\0', '\\']) || text.chars().any(char::is_control) {
        return Err(Refused::Invalid);
    }
    let trailing_slash = text.is_empty() || text.ends_with('/');
    let mut path = PathBuf::new();
    for segment in text.split('/') {
        match segment {
            "" | "." => continue,
            ".." => return Err(Refused::Invalid),
            s if s.starts_with('.') && !dotfiles => return Err(Refused::Hidden),
            s => path.push(s),
        }
    }
    Ok((path, trailing_slash))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_paths() {
        assert_eq!(
            resolve(&decode(b"css/site.css"), false),
            Ok(("css/site.css".into(), false))
        );
        assert_eq!(
            resolve(&decode(b"a%20b.txt"), false),
            Ok(("a b.txt".into(), false))
        );
        assert_eq!(resolve(&decode(b"docs/"), false), Ok(("docs".into(), true)));
        assert_eq!(resolve(&decode(b""), false), Ok(("".into(), true)));
        assert_eq!(
            resolve(&decode(b"caf%C3%A9.txt"), false),
            Ok(("café.txt".into(), false))
        );
    }

    #[test]
    fn escapes_are_refused() {
        for bad in [
            &b"../etc/passwd"[..],
            b"a/../../etc/passwd",
            b"%2e%2e/etc/passwd",
            b"%2E%2E%2Fetc%2Fpasswd",
            b"..%2fetc",
            b"a%5c..%5c..%5cwin.ini",
            b"a\\b",
            b"a%00.txt",
            b"%c0%ae%c0%ae/etc",
            b"%e0%80%ae%e0%80%ae/",
            b"%ff",
            b"a%0d%0ab",
        ] {
            assert_eq!(
                resolve(&decode(bad), false).unwrap_err(),
                Refused::Invalid,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn decoded_once_only() {
        assert_eq!(
            resolve(&decode(b"%252e%252e/x"), false),
            Ok(("%2e%2e/x".into(), false))
        );
    }

    #[test]
    fn dotfiles() {
        assert_eq!(resolve(&decode(b".env"), false), Err(Refused::Hidden));
        assert_eq!(
            resolve(&decode(b".git/config"), false),
            Err(Refused::Hidden)
        );
        assert_eq!(
            resolve(&decode(b"%2egit/config"), false),
            Err(Refused::Hidden)
        );
        assert!(resolve(&decode(b".well-known/x"), true).is_ok());
    }
}
