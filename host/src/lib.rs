//! `edgehost`: serve HTTP API routes written as WebAssembly components.
//!
//! One concept per module, each opening with what it owns:
//!
//! | module | what it owns |
//! | --- | --- |
//! | [`cli`] | what each command does (`main.rs` only parses arguments) |
//! | [`manifest`] | `manifest.toml`: schema, the checking pipeline, the limits table, file-based routes |
//! | `router` | path patterns and the matcher |
//! | [`runtime`] | the engine, compiling and linking routes, running one request in a fresh instance |
//! | [`capabilities`] | what a guest may import: key-value, outbound HTTP, stdio |
//! | `wit` | the WIT boundary as the host sees it (imports, records, method exports) |
//! | `http` | the public listener and the request path, the admin API |
//! | `edge` | the response cache, CORS and rate limits the request path applies |
//! | `fleet` | a fleet of hosts through NATS JetStream: deploys that reach every host |
//! | `control` | what is served and how it changes: deployments, deploys, the file watcher |
//! | `metrics` | the counters and their Prometheus text |
//!
//! Dependencies run one way: `cli` -> `http`, `fleet` -> `control` -> `runtime` ->
//! `edge` -> `manifest` -> `capabilities` -> `wit`, with `metrics` and `router` below
//! what uses them (a test in `architecture.rs` fails on a circle). The
//! public modules are what `main.rs`, the in-process benchmark and tests use.

pub mod capabilities;
pub mod cli;
mod control;
mod edge;
mod fleet;
mod http;
pub mod manifest;
mod metrics;
mod router;
pub mod runtime;
mod wit;

#[cfg(test)]
mod architecture;
