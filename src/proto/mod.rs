//! HTTP rules with no I/O: HTTP/1 framing and head checks, the request
//! target's path, byte ranges and conditional requests. Pure functions on
//! bytes and values, so they are unit-tested and fuzzed (`src/fuzz.rs`).

pub(crate) mod accept_encoding;
pub(crate) mod conditional;
pub(crate) mod framing;
pub mod length;
pub mod ranges;
pub(crate) mod strict;
pub(crate) mod target;
