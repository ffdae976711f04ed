//! Human-friendly units in the config file: sizes like `"10MiB"` and
//! durations like `"30s"` / `"500ms"` (or a plain number of seconds).
//!
//! Both deserialize from either a TOML number or a string, so `workers`-style
//! integers and nginx-style strings read the same way users already write them.

use serde::de::{self, Deserializer, Visitor};
use std::fmt;
use std::time::Duration;

/// A byte count. Accepts `1048576`, `"512KiB"`, `"10MiB"`, `"1GB"`, `"64k"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// A duration. Accepts `30`, `1.5`, `"30s"`, `"500ms"`, `"2m"`, `"1h"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Seconds(pub Duration);

/// Parses `"10MiB"`-style sizes. Decimal suffixes (KB, MB, GB) are powers of
/// 1000, binary ones (KiB, MiB, GiB) and nginx's bare `k`/`m`/`g` are 1024.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (examples: 1048576, \"512KiB\", \"10MiB\")"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kib" => 1 << 10,
        "kb" => 1000,
        "m" | "mib" => 1 << 20,
        "mb" => 1_000_000,
        "g" | "gib" => 1 << 30,
        "gb" => 1_000_000_000,
        "t" | "tib" => 1 << 40,
        "tb" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{s}` (use B, KiB, MiB, GiB, KB, MB, GB)"
            ))
        }
    };
    let bytes = num * mult as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(format!("size `{s}` is out of range"));
    }
    Ok(bytes as u64)
}

/// Parses `"30s"`-style durations; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let num: f64 = num.parse().map_err(|_| {
        format!("`{s}` is not a duration (examples: 30, \"30s\", \"500ms\", \"2m\")")
    })?;
    let secs = match unit.trim() {
        "" | "s" | "sec" => num,
        "ms" => num / 1000.0,
        "m" | "min" => num * 60.0,
        "h" => num * 3600.0,
        "d" => num * 86400.0,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` in `{s}` (use ms, s, m, h, d)"
            ))
        }
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("duration `{s}` is out of range"))
}

/// The Python minor version corral embeds, e.g. `3.11` (recorded by build.rs).
pub fn python_version() -> &'static str {
    env!("CORRAL_PYTHON_VERSION")
}

/// `"20r/s"` or `"600r/m"`: requests per second.
pub fn parse_rate(s: &str) -> Result<f64, String> {
    let err = || format!("`{s}` is not a rate: use \"20r/s\" or \"600r/m\"");
    let (n, unit) = s.trim().split_once("r/").ok_or_else(err)?;
    let n: f64 = n.trim().parse().map_err(|_| err())?;
    let per = match unit.trim() {
        "s" => 1.0,
        "m" => 60.0,
        _ => return Err(err()),
    };
    if n <= 0.0 || !n.is_finite() {
        return Err(err());
    }
    Ok(n / per)
}

/// An IP address or CIDR block: (network, prefix length).
pub fn parse_cidr(s: &str) -> Option<(std::net::IpAddr, u8)> {
    let (ip, len) = match s.split_once('/') {
        Some((ip, len)) => (
            ip.parse::<std::net::IpAddr>().ok()?,
            len.parse::<u8>().ok()?,
        ),
        None => {
            let ip: std::net::IpAddr = s.parse().ok()?;
            (ip, if ip.is_ipv4() { 32 } else { 128 })
        }
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

/// Whether `ip` is inside the block.
pub fn cidr_contains(block: &(std::net::IpAddr, u8), ip: &std::net::IpAddr) -> bool {
    use std::net::IpAddr::*;
    let ip = match ip {
        V6(v6) => v6.to_ipv4_mapped().map(V4).unwrap_or(*ip),
        v4 => *v4,
    };
    match (block.0, ip) {
        (V4(net), V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(block.1)).unwrap_or(0);
            u32::from(net) & mask == u32::from(a) & mask
        }
        (V6(net), V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(block.1)).unwrap_or(0);
            u128::from(net) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

struct SizeVisitor;

impl Visitor<'_> for SizeVisitor {
    type Value = ByteSize;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a size: a number of bytes or a string like \"10MiB\"")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ByteSize, E> {
        u64::try_from(v)
            .map(ByteSize)
            .map_err(|_| E::custom("a size cannot be negative"))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteSize, E> {
        Ok(ByteSize(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteSize, E> {
        parse_size(v).map(ByteSize).map_err(E::custom)
    }
}

impl<'de> serde::Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SizeVisitor)
    }
}

struct DurationVisitor;

impl Visitor<'_> for DurationVisitor {
    type Value = Seconds;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a duration: seconds as a number or a string like \"30s\" or \"500ms\"")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Seconds, E> {
        u64::try_from(v)
            .map(|s| Seconds(Duration::from_secs(s)))
            .map_err(|_| E::custom("a duration cannot be negative"))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Seconds, E> {
        Ok(Seconds(Duration::from_secs(v)))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Seconds, E> {
        Duration::try_from_secs_f64(v)
            .map(Seconds)
            .map_err(|_| E::custom("a duration must be a positive number of seconds"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Seconds, E> {
        parse_duration(v).map(Seconds).map_err(E::custom)
    }
}

impl<'de> serde::Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(DurationVisitor)
    }
}

/// `[app] workers`: a number, or `"auto"` (from the CPUs and memory the
/// machine or container allows, worked out by the master).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerCount {
    Fixed(usize),
    Auto,
}

struct WorkersVisitor;

impl Visitor<'_> for WorkersVisitor {
    type Value = WorkerCount;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number of workers, or \"auto\"")
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<WorkerCount, E> {
        usize::try_from(v)
            .map(WorkerCount::Fixed)
            .map_err(|_| E::custom("the number of workers cannot be negative"))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<WorkerCount, E> {
        usize::try_from(v)
            .map(WorkerCount::Fixed)
            .map_err(|_| E::custom("too many workers"))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<WorkerCount, E> {
        match v.trim() {
            "auto" => Ok(WorkerCount::Auto),
            other => Err(E::custom(format!(
                "`{other}` is not a number of workers: use a number such as 4, or \"auto\""
            ))),
        }
    }
}

impl<'de> serde::Deserialize<'de> for WorkerCount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(WorkersVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("64k"), Ok(65536));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("10XB").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn rates_and_cidrs() {
        assert_eq!(parse_rate("20r/s"), Ok(20.0));
        assert_eq!(parse_rate("60r/m"), Ok(1.0));
        assert!(parse_rate("fast").is_err());
        let b = parse_cidr("10.0.0.0/8").unwrap();
        assert!(cidr_contains(&b, &"10.1.2.3".parse().unwrap()));
        assert!(cidr_contains(&b, &"::ffff:10.1.2.3".parse().unwrap()));
        assert!(!cidr_contains(&b, &"11.0.0.1".parse().unwrap()));
        let one = parse_cidr("127.0.0.1").unwrap();
        assert!(cidr_contains(&one, &"127.0.0.1".parse().unwrap()));
        assert!(cidr_contains(
            &parse_cidr("::/0").unwrap(),
            &"2001:db8::1".parse().unwrap()
        ));
        assert!(parse_cidr("10.0.0.0/33").is_none());
        assert!(parse_cidr("nope").is_none());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5 fortnights").is_err());
    }
}
