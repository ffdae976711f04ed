//! corral's module tree, in the order a request meets it. The binary
//! (main.rs) is only the command line; benches and fuzz targets import
//! these modules from here. docs/ARCHITECTURE.md has the map.
//!
//! - `config`: site.toml, read and validated once, in the master.
//! - `master`: the single-threaded supervisor that forks everything else.
//! - `edge`: the pingora process that talks to clients.
//! - `proto`: HTTP rules with no I/O, used by the edge.
//! - `worker`: the processes that embed CPython and run the app.
//! - `wire`: the edge↔worker request link's shared names.
//! - `ipc`: the master↔edge and worker→master status messages.

pub mod config;
pub mod cpu_policy;
pub mod edge;
#[cfg(test)]
mod fuzz;
pub mod ipc;
pub mod logging;
pub mod master;
pub mod proctitle;
pub mod proto;
pub mod wire;
pub mod worker;
