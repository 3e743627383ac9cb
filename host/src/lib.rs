//! `edgehost`: serve HTTP API routes written as WebAssembly components.
//!
//! The request path starts in [`server`]; the manifest is parsed and checked
//! in [`manifest`]; paths are matched in [`router`]; components are compiled,
//! linked and run in [`runtime`]; what a guest may import lives in
//! [`capabilities`].

pub mod admin;
pub mod build;
pub mod capabilities;
pub mod commands;
pub mod dev;
pub mod folders;
pub mod manifest;
pub mod metrics;
pub mod router;
pub mod runtime;
pub mod scaffold;
pub mod server;
