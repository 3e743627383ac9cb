//! The `edgehost` command line: arguments only; the work is in the library.

use clap::{Args, Parser, Subcommand};
use edgehost::cli::{self, LogFormat, ServeOptions};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

/// Serve HTTP API routes written as WebAssembly components.
///
/// A manifest (manifest.toml) maps URL paths such as /api/posts/$postId to
/// route components built for wasm32-wasip2, and says what each route may use.
#[derive(Parser)]
#[command(name = "edgehost", version, about, long_about)]
struct Cli {
    /// How log lines are written to stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

/// The manifest a command works on: `edgehost check site.toml` or
/// `edgehost check --manifest site.toml`.
#[derive(Args)]
struct ManifestArg {
    /// The manifest (default: manifest.toml).
    #[arg(value_name = "MANIFEST", conflicts_with = "manifest")]
    positional: Option<PathBuf>,
    /// The manifest, as an option.
    #[arg(long, short)]
    manifest: Option<PathBuf>,
}

impl ManifestArg {
    fn path(self) -> PathBuf {
        self.positional
            .or(self.manifest)
            .unwrap_or_else(|| PathBuf::from("manifest.toml"))
    }
}

/// Where a deploy or rollback goes: one host's admin API (`--to`) or a
/// fleet of hosts (`--fleet`).
#[derive(Args)]
struct AdminTarget {
    /// The host's admin API, for example http://127.0.0.1:9090.
    #[arg(long, required_unless_present = "fleet", conflicts_with = "fleet")]
    to: Option<String>,
    /// The environment variable holding the admin token.
    #[arg(long, default_value = edgehost::manifest::TOKEN_ENV)]
    token_env: String,
    #[command(flatten)]
    fleet: FleetArgs,
}

/// A fleet of hosts and the NATS server it is kept in.
#[derive(Args)]
struct FleetArgs {
    /// The fleet (its hosts' [fleet] name): every live host prepares the
    /// deployment, then all switch to it; if one cannot, none does.
    #[arg(long)]
    fleet: Option<String>,
    /// The fleet's NATS server (default: the variable the manifest's
    /// [fleet] nats_url_env names, else NATS_URL).
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// Refuse unless the fleet serves this deployment id now (so that a
    /// deploy never undoes one made meanwhile).
    #[arg(long, value_name = "ID")]
    expect_current: Option<String>,
    /// Seconds each host has to fetch, validate and compile a deployment.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    prepare_timeout: u64,
}

impl FleetArgs {
    fn target(self, fleet: String) -> cli::FleetTarget {
        cli::FleetTarget {
            fleet,
            nats: self.nats,
            expect_current: self.expect_current,
            prepare_timeout: std::time::Duration::from_secs(self.prepare_timeout),
        }
    }
}

/// `edgehost fleet ...`.
#[derive(Subcommand)]
enum FleetCommand {
    /// Print the fleet's current deployment and each live host: name,
    /// address, the deployment it serves, its last heartbeat's age.
    Status {
        /// The fleet's name.
        #[arg(long)]
        fleet: String,
        /// The fleet's NATS server (default: NATS_URL).
        #[arg(long, value_name = "URL")]
        nats: Option<String>,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Serve the routes of a manifest over HTTP.
    Serve {
        #[command(flatten)]
        manifest: ManifestArg,
        /// Address to listen on (overrides the manifest's [server] listen;
        /// default 127.0.0.1:8080). Port 0 picks a free port.
        #[arg(long, short)]
        listen: Option<SocketAddr>,
        /// Where key-value stores, compiled and uploaded components live
        /// (overrides the manifest's [server] data_dir; default .edgehost
        /// next to the manifest).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Turn the admin API (deploy, rollback, metrics, health) on at this
        /// address (overrides [admin] listen). Its bearer token is read from
        /// EDGEHOST_ADMIN_TOKEN, or the variable [admin] token_env names.
        #[arg(long)]
        admin: Option<SocketAddr>,
        /// Reload when the manifest or a component file changes; a change
        /// that does not validate is logged and changes nothing.
        #[arg(long)]
        watch: bool,
        /// Serve the last deployment made to this data dir with `edgehost
        /// deploy` (or rolled back to), instead of MANIFEST's routes; MANIFEST
        /// still gives the [server] and [admin] settings. Needs the admin API.
        #[arg(long)]
        resume: bool,
        /// Once listening, write {"listen": ADDR, "admin": ADDR or null,
        /// "pid": N} to FILE (for scripts that start the host on port 0).
        #[arg(long, value_name = "FILE")]
        ready_file: Option<PathBuf>,
    },
    /// Build every route crate, serve, and on each saved change rebuild only
    /// the crates that changed and reload without a restart. A failed build
    /// is shown in the terminal and as the route's 500 body; the last good
    /// components keep serving.
    Dev {
        #[command(flatten)]
        manifest: ManifestArg,
        /// Address to listen on (default: the manifest's, or 127.0.0.1:8080).
        #[arg(long, short)]
        listen: Option<SocketAddr>,
        /// Where key-value stores and compiled components live.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Once listening, write where to FILE (as `serve --ready-file`).
        #[arg(long, value_name = "FILE")]
        ready_file: Option<PathBuf>,
        /// Turn the admin API on at this address, as `serve --admin` does
        /// (for `edgehost trigger`, metrics); its token is read from
        /// EDGEHOST_ADMIN_TOKEN.
        #[arg(long, value_name = "ADDR")]
        admin: Option<SocketAddr>,
    },
    /// Build route crates to WebAssembly components (wasm32-wasip2, release),
    /// installing the target with rustup if it is missing.
    Build {
        /// Folders searched for route crates (every Cargo.toml below them).
        #[arg(default_value = "routes")]
        dirs: Vec<PathBuf>,
    },
    /// Scaffold a route crate at the folder its URL spells
    /// (`/api/posts/$postId` -> routes/api/posts/$postId/) and add it to the
    /// workspace and, unless a [routes] folder mounts it, to the manifest.
    New {
        /// The route's URL pattern, for example /api/posts/$postId.
        url: String,
        #[command(flatten)]
        manifest: ManifestArg,
        /// The guest-sdk crate's folder (default: found above the manifest).
        #[arg(long)]
        sdk: Option<PathBuf>,
        /// Write a TypeScript route file (TanStack Start's createAPIFileRoute)
        /// instead of a Rust route crate.
        #[arg(long)]
        ts: bool,
    },
    /// Write a manifest.toml from a Spin manifest (spin.toml, version 2):
    /// each HTTP trigger's route, component, outbound hosts, key-value
    /// stores, SQLite databases and variables; prints every setting it
    /// could not map and why.
    Import {
        /// The Spin manifest.
        #[arg(default_value = "spin.toml")]
        spin_toml: PathBuf,
        /// Where to write (default: manifest.toml beside spin.toml).
        #[arg(long, short)]
        out: Option<PathBuf>,
        /// Replace the file if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Check a manifest and compile its components without serving; exits
    /// non-zero with every reason, each with its line and route.
    Check {
        #[command(flatten)]
        manifest: ManifestArg,
    },
    /// Print a manifest's route table: path, methods (from the components'
    /// exports), granted capabilities and limits.
    Routes {
        #[command(flatten)]
        manifest: ManifestArg,
    },
    /// Print a manifest's [[schedule]] entries and the next run of each.
    Schedules {
        #[command(flatten)]
        manifest: ManifestArg,
    },
    /// Run a schedule's route now on a running host (its admin API), as its
    /// next tick would, and print what it answered.
    Trigger {
        /// The path a [[schedule]] calls, for example /api/tasks/cleanup.
        path: String,
        /// The host's admin API.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        to: String,
        /// The environment variable holding the admin token.
        #[arg(long, default_value = edgehost::manifest::TOKEN_ENV)]
        token_env: String,
    },
    /// Print every limit a route runs within, its default and what happens
    /// when it is hit (set them in [server] or a route's entry).
    Limits,
    /// Upload a manifest and its components to a running host (--to), which
    /// validates and compiles them, then switches to them atomically; or to
    /// every host of a fleet (--fleet).
    Deploy {
        #[command(flatten)]
        manifest: ManifestArg,
        #[command(flatten)]
        target: AdminTarget,
    },
    /// Switch a running host (or a fleet) back to the deployment before its
    /// current one.
    Rollback {
        #[command(flatten)]
        target: AdminTarget,
    },
    /// A fleet of hosts: see what each serves.
    Fleet {
        #[command(subcommand)]
        command: FleetCommand,
    },
}

fn main() -> ExitCode {
    let args = Cli::parse();
    cli::init_logging(args.log_format);
    let result = match args.command {
        Command::Serve {
            manifest,
            listen,
            data_dir,
            admin,
            watch,
            resume,
            ready_file,
        } => cli::serve(ServeOptions {
            manifest: manifest.path(),
            listen,
            data_dir,
            admin,
            watch,
            resume,
            ready_file,
        }),
        Command::Dev {
            manifest,
            listen,
            data_dir,
            ready_file,
            admin,
        } => cli::dev(&manifest.path(), listen, data_dir, ready_file, admin),
        Command::New {
            url,
            manifest,
            sdk,
            ts,
        } => cli::new_route(&manifest.path(), &url, sdk.as_deref(), ts),
        Command::Build { dirs } => cli::build(&dirs),
        Command::Import {
            spin_toml,
            out,
            force,
        } => cli::import(&spin_toml, out.as_deref(), force),
        Command::Check { manifest } => cli::check(&manifest.path()),
        Command::Routes { manifest } => cli::routes(&manifest.path()),
        Command::Schedules { manifest } => cli::schedules(&manifest.path()),
        Command::Trigger {
            path,
            to,
            token_env,
        } => cli::trigger(&path, &to, &token_env),
        Command::Limits => {
            cli::limits();
            Ok(())
        }
        Command::Deploy { manifest, target } => match (target.to, target.fleet.fleet.clone()) {
            (_, Some(fleet)) => cli::deploy_fleet(&manifest.path(), &target.fleet.target(fleet)),
            (Some(to), None) => cli::deploy(&manifest.path(), &to, &target.token_env),
            (None, None) => Err(anyhow::anyhow!("say where: --to or --fleet")),
        },
        Command::Rollback { target } => match (target.to, target.fleet.fleet.clone()) {
            (_, Some(fleet)) => cli::rollback_fleet(&target.fleet.target(fleet)),
            (Some(to), None) => cli::rollback(&to, &target.token_env),
            (None, None) => Err(anyhow::anyhow!("say where: --to or --fleet")),
        },
        Command::Fleet {
            command: FleetCommand::Status { fleet, nats },
        } => cli::fleet_status(&cli::FleetTarget {
            fleet,
            nats,
            expect_current: None,
            prepare_timeout: std::time::Duration::from_secs(120),
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
