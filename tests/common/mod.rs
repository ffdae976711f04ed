#![allow(dead_code)]
//! Shared harness for corral's integration tests.
//!
//! * [`Site`] builds a temporary site folder (app files + `site.toml`) and
//!   starts `corral serve` on it; [`Running`] is the live server: logs,
//!   child processes, signals, and cleanup on drop (nothing is left behind,
//!   even when a test panics).
//! * A tiny HTTP/1.1 client on `std::net::TcpStream` ([`Conn`],
//!   [`request`], [`get`], [`post`]) that can speak keep-alive, decode
//!   chunked bodies and knows that HEAD/204/304 responses have no body.
//! * Small utilities: JSON (serde_json), SHA-256 (sha2), deterministic test
//!   data, multipart bodies, `curl`, and the test virtualenv.
//!
//! Everything here is bounded in time: sockets have 30 s timeouts, process
//! waits have deadlines.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

/// The binary under test.
pub const CORRAL: &str = env!("CARGO_BIN_EXE_corral");
pub const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
/// Read/write timeout of every test socket: a hang fails instead of blocking.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `Site::start` waits for `corral ready` + an open port.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bound for `corral check` / `--version` style invocations.
pub const CMD_TIMEOUT: Duration = Duration::from_secs(20);
pub const POLL: Duration = Duration::from_millis(50);

mod files;
mod http;
mod idle;
mod json;
mod lifecycle;
mod notify;
mod site;
mod util;
mod venv;

// Each test file uses some of these, none uses all.
#[allow(unused_imports)]
pub use files::*;
#[allow(unused_imports)]
pub use http::*;
#[allow(unused_imports)]
pub use idle::*;
#[allow(unused_imports)]
pub use json::*;
#[allow(unused_imports)]
pub use lifecycle::*;
#[allow(unused_imports)]
pub use notify::*;
#[allow(unused_imports)]
pub use site::*;
#[allow(unused_imports)]
pub use util::*;
#[allow(unused_imports)]
pub use venv::*;
