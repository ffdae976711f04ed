//! Accept-Encoding (RFC 9110 §12.5.3): which of the content codings corral
//! can produce (br, zstd, gzip) a client accepts, best first by q-value.
//! Used for response compression and for picking a precompressed sibling
//! of a static file.

/// The codings corral knows, with the file suffix of a precompressed
/// sibling, and their q-values from `accept`, best first (q=0 left out;
/// equal q in the order br, zstd, gzip).
pub fn accepted(accept: &str) -> Vec<((&'static str, &'static str), f32)> {
    const KNOWN: [(&str, &str); 3] = [("br", ".br"), ("zstd", ".zst"), ("gzip", ".gz")];
    let q_of = |name: &str| -> Option<f32> {
        let mut star = None;
        for item in accept.split(',') {
            let mut parts = item.split(';');
            let coding = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            let q = parts
                .find_map(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|v| v.trim().parse::<f32>().ok())
                })
                .unwrap_or(1.0);
            if coding == name || (name == "gzip" && coding == "x-gzip") {
                return Some(q);
            }
            if coding == "*" {
                star = Some(q);
            }
        }
        star
    };
    let mut out: Vec<(f32, usize, (&str, &str))> = KNOWN
        .iter()
        .enumerate()
        .filter_map(|(i, k)| q_of(k.0).filter(|q| *q > 0.0).map(|q| (q, i, *k)))
        .collect();
    out.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    out.into_iter().map(|(q, _, k)| (k, q)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(accept: &str) -> Vec<(&'static str, &'static str)> {
        accepted(accept).into_iter().map(|(k, _)| k).collect()
    }

    #[test]
    fn encodings_by_quality() {
        assert_eq!(
            names("gzip, br").iter().map(|e| e.0).collect::<Vec<_>>(),
            ["br", "gzip"]
        );
        assert_eq!(
            names("gzip;q=1, br;q=0.5")
                .iter()
                .map(|e| e.0)
                .collect::<Vec<_>>(),
            ["gzip", "br"]
        );
        assert_eq!(
            names("br;q=0, gzip")
                .iter()
                .map(|e| e.0)
                .collect::<Vec<_>>(),
            ["gzip"]
        );
        assert_eq!(names("*").len(), 3);
        assert!(names("identity").is_empty());
    }
}
