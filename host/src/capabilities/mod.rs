//! What a route may import beyond its request: one module per capability.
//! Each is granted per route by the manifest; nothing here reaches the host's
//! files, sockets or environment on a guest's behalf. `log_throttle.rs`
//! keeps a failing backend's log lines to one per interval;
//! `allowed_host.rs` parses and matches `allowed_outbound_hosts` entries and
//! `destinations.rs` decides which addresses outbound HTTP may connect to,
//! `pool.rs` keeps its connections open between requests.

mod allowed_host;
pub(crate) mod clocks;
mod destinations;
pub mod kv;
mod log_throttle;
pub(crate) mod outbound;
pub(crate) mod pool;
pub(crate) mod spin;
mod spin_sqlite;
pub mod sql;
pub(crate) mod stdio;
