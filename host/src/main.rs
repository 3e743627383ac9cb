//! The `edgehost` command line: arguments only; the work is in the library.

use clap::{Parser, Subcommand};
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
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the routes of a manifest over HTTP.
    Serve {
        /// The manifest to serve.
        #[arg(long, short, default_value = "manifest.toml")]
        manifest: PathBuf,
        /// Address to listen on (overrides the manifest's [server] listen;
        /// default 127.0.0.1:8080). Port 0 picks a free port.
        #[arg(long, short)]
        listen: Option<SocketAddr>,
        /// Where key-value stores persist (overrides the manifest's
        /// [server] data_dir; default .edgehost next to the manifest).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Build route crates to WebAssembly components (wasm32-wasip2, release),
    /// installing the target with rustup if it is missing.
    Build {
        /// Folders searched for route crates (every Cargo.toml below them).
        #[arg(default_value = "routes")]
        dirs: Vec<PathBuf>,
    },
    /// Check a manifest and compile its components without serving.
    Check {
        #[arg(long, short, default_value = "manifest.toml")]
        manifest: PathBuf,
    },
    /// List a manifest's routes: path, methods, component, grants.
    Routes {
        #[arg(long, short, default_value = "manifest.toml")]
        manifest: PathBuf,
    },
}

fn main() -> ExitCode {
    edgehost::commands::init_logging();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve {
            manifest,
            listen,
            data_dir,
        } => edgehost::commands::serve(&manifest, listen, data_dir),
        Command::Build { dirs } => edgehost::commands::build(&dirs),
        Command::Check { manifest } => edgehost::commands::check(&manifest),
        Command::Routes { manifest } => edgehost::commands::routes(&manifest),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
