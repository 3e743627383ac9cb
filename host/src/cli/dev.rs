//! `edgehost dev`: build the route crates, serve, and on every saved change
//! rebuild only the crates that changed and reload without a restart.
//!
//! A failed build keeps the host running on the last good components; the
//! routes of the crate that failed answer 500 with the compiler's errors (in
//! dev mode only) until it builds again, so a curl shows why a change is not
//! live. The errors are printed in the terminal too.

use super::build;
use super::rebuild::{look, record, source_crates, INTERVAL};
use super::serve::{serve_with, ServeOptions};
use crate::control::watcher::Watcher;
use crate::control::BuildErrors;
use crate::manifest;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// `edgehost dev`: build every route crate, serve, rebuild and reload on change.
pub fn dev(
    manifest_path: &Path,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    ready_file: Option<PathBuf>,
    admin: Option<SocketAddr>,
) -> anyhow::Result<()> {
    let errors = BuildErrors::default();
    loop {
        let crates = source_crates(manifest_path);
        let outcome = build::build(manifest::base_of(manifest_path), &crates)?;
        record(&errors, &crates, &outcome);
        match manifest::load(manifest_path) {
            Ok(_) => break,
            Err(reasons) => {
                eprintln!("{reasons}");
                eprintln!("waiting for a change to the routes or the manifest");
                Watcher::new(INTERVAL, || look(manifest_path)).changed_blocking()?;
            }
        }
    }
    serve_with(
        ServeOptions {
            manifest: manifest_path.to_path_buf(),
            listen,
            data_dir,
            admin,
            watch: false,
            resume: false,
            ready_file,
        },
        Some(errors),
    )
}
