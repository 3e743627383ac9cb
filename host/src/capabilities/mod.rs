//! What a route may import beyond its request: one module per capability.
//! Each is granted per route by the manifest; nothing here reaches the host's
//! files, sockets or environment on a guest's behalf.

pub mod kv;
pub(crate) mod outbound;
pub mod sql;
pub(crate) mod stdio;
