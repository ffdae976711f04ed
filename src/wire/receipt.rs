//! What a request cost its worker, written by the worker after each
//! complete response on the hop and read by the edge for the access log
//! (`worker_cpu_ms`, `rss_delta_kb`; the edge knows the worker's pid from
//! its lease):
//!
//! `~<cpu µs> <rss kB> <rss delta kB>\n`, `-` for what is unknown.
//!
//! It follows the body (after the last chunk, or the Content-Length-th
//! byte), so the edge reads it before reusing the connection. A response
//! cut short has none: the edge sees the truncation and drops the
//! connection anyway.
//!
//! CPU is the request thread's own clock, so it is exact for a WSGI
//! worker (one request per thread at a time). An ASGI worker interleaves
//! requests on one thread, so its CPU and memory are not one request's:
//! its receipt is all dashes.

use std::os::unix::fs::FileExt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Receipt {
    pub cpu_us: Option<u64>,
    pub rss_kb: Option<u64>,
    pub rss_delta_kb: Option<i64>,
}

/// Longest receipt line the edge accepts.
pub const MAX_LEN: usize = 96;

impl Receipt {
    pub fn encode(&self, out: &mut Vec<u8>) {
        use std::io::Write;
        let _ = writeln!(
            out,
            "~{} {} {}",
            dash(self.cpu_us),
            dash(self.rss_kb),
            dash(self.rss_delta_kb)
        );
    }

    pub fn decode(line: &[u8]) -> Option<Receipt> {
        let line = std::str::from_utf8(line).ok()?.strip_prefix('~')?;
        let mut parts = line.trim_end_matches(['\r', '\n']).split(' ');
        let receipt = Receipt {
            cpu_us: maybe(parts.next()?)?,
            rss_kb: maybe(parts.next()?)?,
            rss_delta_kb: maybe(parts.next()?)?,
        };
        parts.next().is_none().then_some(receipt)
    }
}

fn dash<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "-".into(), |v| v.to_string())
}

/// `-` is None; anything else must parse (Some(None) is a bad receipt).
fn maybe<T: std::str::FromStr>(s: &str) -> Option<Option<T>> {
    if s == "-" {
        Some(None)
    } else {
        s.parse().ok().map(Some)
    }
}

/// Measures one request from its start: the thread's CPU clock and the
/// process's resident memory.
#[derive(Debug, Clone, Copy, Default)]
pub struct Meter {
    cpu_us: Option<u64>,
    rss_kb: Option<u64>,
}

impl Meter {
    /// No measure (ASGI): the receipt names the worker only.
    pub fn none() -> Meter {
        Meter::default()
    }

    /// The RSS and CPU clock at the start are the ones this thread read at
    /// the end of its previous request (nothing of the app runs on it in
    /// between; the CPU spent reading this request's head is this
    /// request's), so a request costs one reading of each, not two.
    pub fn start() -> Meter {
        let (cpu_us, rss_kb) = LAST.with(|last| last.get());
        Meter {
            cpu_us: cpu_us.or_else(thread_cpu_us),
            rss_kb: rss_kb.or_else(rss_kb_now),
        }
    }

    pub fn receipt(&self) -> Receipt {
        let (Some(cpu0), Some(rss0)) = (self.cpu_us, self.rss_kb) else {
            return Receipt::default();
        };
        let (cpu, rss) = (thread_cpu_us(), rss_kb_now());
        LAST.with(|last| last.set((cpu, rss)));
        Receipt {
            cpu_us: cpu.map(|c| c.saturating_sub(cpu0)),
            rss_kb: rss,
            rss_delta_kb: rss.map(|r| r as i64 - rss0 as i64),
        }
    }
}

fn thread_cpu_us() -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into `ts`.
    let ok = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } == 0;
    ok.then(|| ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1000)
}

thread_local! {
    /// Kept open: one pread per reading instead of open/read/close.
    static STATM: Option<std::fs::File> = std::fs::File::open("/proc/self/statm").ok();
    /// The CPU clock (µs) and RSS (kB) at the end of this thread's last
    /// request.
    static LAST: std::cell::Cell<(Option<u64>, Option<u64>)> =
        const { std::cell::Cell::new((None, None)) };
}

/// Resident set size from /proc/self/statm (its second field, in pages).
fn rss_kb_now() -> Option<u64> {
    let mut buf = [0u8; 128];
    let n = STATM.with(|f| f.as_ref()?.read_at(&mut buf, 0).ok())?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    let pages: u64 = text.split(' ').nth(1)?.parse().ok()?;
    Some(pages * page_kb())
}

fn page_kb() -> u64 {
    // SAFETY: sysconf has no memory effects.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    (size.max(4096) / 1024) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let r = Receipt {
            cpu_us: Some(1500),
            rss_kb: Some(30_000),
            rss_delta_kb: Some(-12),
        };
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(out, b"~1500 30000 -12\n");
        assert_eq!(Receipt::decode(&out), Some(r));
        let bare = Receipt::default();
        out.clear();
        bare.encode(&mut out);
        assert_eq!(Receipt::decode(&out), Some(bare));
        for bad in [
            &b"1 2 3\n"[..],
            b"~x 2 3\n",
            b"~1 2\n",
            b"~1 2 3 4\n",
            b"~1 a 3\n",
        ] {
            assert_eq!(
                Receipt::decode(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn measures_this_thread() {
        let m = Meter::start();
        let mut x = 0u64;
        for i in 0..3_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let r = m.receipt();
        assert!(r.cpu_us.is_some_and(|c| c > 0), "{r:?}");
        assert!(r.rss_kb.is_some_and(|k| k > 1000), "{r:?}");
        assert!(r.rss_delta_kb.is_some());
    }
}
