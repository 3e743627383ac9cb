//! What each subcommand of `edgehost` does, one file per command; `main.rs`
//! only parses the arguments.
//!
//! | file | command |
//! | --- | --- |
//! | `serve.rs` | `serve` (and `--watch`, `--resume`, the ready file) |
//! | `dev.rs` | `dev`: build, serve, rebuild and reload on save |
//! | `rebuild.rs` | `dev`'s watch: rebuild the crates that changed, reload |
//! | `build.rs` | `build`: one cargo run for every route crate |
//! | `typescript.rs` | `build` of TypeScript routes: one component per routes folder |
//! | `new.rs` | `new`: scaffold a route crate |
//! | `inspect.rs` | `check`, `routes`, `schedules` and `limits` |
//! | `deploy.rs` | `deploy`, `rollback` and `trigger`: the admin API's client |
//! | `fleet.rs` | `deploy --fleet`, `rollback --fleet`, `fleet status` |

mod build;
mod deploy;
mod dev;
mod fleet;
mod import;
mod inspect;
mod new;
mod rebuild;
mod serve;
mod typescript;

pub use build::build_dirs as build;
pub use deploy::{deploy, rollback, trigger};
pub use dev::dev;
pub use fleet::{deploy_fleet, fleet_status, rollback_fleet, FleetTarget};
pub use import::import;
pub use inspect::{check, limits, routes, schedules};
pub use new::new_route;
pub use serve::{serve, ServeOptions};

use crate::capabilities::kv::{DiskKv, KvStores, NoKv};
use crate::capabilities::sql::SqlDatabases;
use crate::manifest::{self, Manifest};
use crate::runtime::{EngineSettings, RouteTable, Runtime};
use anyhow::Context;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One human-readable line per event.
    Text,
    /// One JSON object per line, fields at the top level.
    Json,
}

/// Logs go to stderr; `RUST_LOG` picks what (default: `info`). Every request
/// logs one `access` line; `RUST_LOG=info,access=off` turns them off.
pub fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
}

/// What a command loads a manifest for.
#[derive(PartialEq)]
enum Purpose {
    /// To serve it: the key-value data is opened.
    Serve,
    /// `routes`: like `Inspect`, but secrets need not be set (only their
    /// names are shown).
    List,
    /// `check`: everything but the data, which a live host may hold.
    Inspect,
}

/// A loaded manifest, ready to serve.
struct Loaded {
    manifest: Manifest,
    data_dir: PathBuf,
    runtime: Runtime,
    table: RouteTable,
}

/// Loads, validates and compiles a manifest: everything short of serving.
fn load(
    manifest_path: &Path,
    data_dir: Option<PathBuf>,
    purpose: Purpose,
) -> anyhow::Result<Loaded> {
    let manifest = if purpose == Purpose::List {
        manifest::load_with_secrets(manifest_path, &|_| Some(String::new()))?
    } else {
        manifest::load(manifest_path)?
    };
    let data_dir = data_dir.unwrap_or_else(|| manifest.data_dir.clone());
    let env = |var: &str| std::env::var(var).ok();
    let (kv, sql) = match purpose {
        Purpose::Serve => {
            let configs = manifest::kv::store_configs(&manifest, &env)?;
            let databases = manifest::sql::database_configs(&manifest, &env)?;
            let max_sizes = manifest
                .kv
                .iter()
                .map(|(name, spec)| (name.clone(), spec.max_size))
                .collect();
            let embedded = DiskKv::open(&data_dir)
                .context("cannot open the key-value data")?
                .with_max_sizes(max_sizes);
            let embedded = Arc::new(embedded);
            (
                KvStores::open(embedded, &configs).context("cannot open the key-value stores")?,
                SqlDatabases::new(data_dir.join("sql"), databases),
            )
        }
        // Checked as a host would (URLs set and well formed), not opened.
        Purpose::Inspect => {
            manifest::kv::store_configs(&manifest, &env)?;
            manifest::sql::database_configs(&manifest, &env)?;
            (KvStores::new(Arc::new(NoKv)), SqlDatabases::none())
        }
        Purpose::List => (KvStores::new(Arc::new(NoKv)), SqlDatabases::none()),
    };
    let settings = EngineSettings::for_manifest(&manifest, &data_dir);
    let runtime = Runtime::new(kv, sql, settings)
        .map_err(|err| anyhow::anyhow!("cannot start the WebAssembly engine: {err:#}"))?;
    let table = runtime.load(&manifest)?;
    Ok(Loaded {
        manifest,
        data_dir,
        runtime,
        table,
    })
}

/// A single-threaded async runtime for commands that only make requests.
fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
