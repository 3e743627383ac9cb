//! `edgehost build`: every route crate in one cargo invocation for
//! `wasm32-wasip2`, compiler errors reported under the route they belong to,
//! and every routes folder's TypeScript files into its one component
//! (`typescript.rs`).

use super::typescript;
use crate::manifest::folders::{self, FolderRoute, TARGET};
use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// The route crates and TypeScript route files under `dirs` (each one's URL
/// spelled from its place below the dir it was found in).
fn route_crates(dirs: &[PathBuf]) -> anyhow::Result<Vec<FolderRoute>> {
    let mut crates = Vec::new();
    let target_dir = folders::default_target_dir(Path::new(""));
    for dir in dirs {
        let found = folders::discover(Path::new(""), &dir.to_string_lossy(), &target_dir)
            .map_err(|reason| anyhow::anyhow!(reason))
            .with_context(|| format!("cannot search {} for route crates", dir.display()))?;
        crates.extend(found);
    }
    Ok(crates)
}

/// What one build did.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Packages that failed to build, with their compiler errors rendered.
    pub(crate) failed: BTreeMap<String, String>,
    /// Errors that belong to no route crate (a dependency, cargo itself).
    pub(crate) other_errors: String,
    /// TypeScript apps that failed to build, by component, with their errors.
    pub(crate) failed_apps: BTreeMap<String, String>,
    pub(crate) success: bool,
}

/// Builds `routes`: the crates (release, `wasm32-wasip2`) in one cargo
/// invocation from `workspace`, then each routes folder's TypeScript files.
/// Progress goes to stderr as it comes; each error is printed under the
/// route it belongs to.
pub(crate) fn build(workspace: &Path, routes: &[FolderRoute]) -> anyhow::Result<Outcome> {
    let crates: Vec<FolderRoute> = routes.iter().filter(|r| !r.script).cloned().collect();
    let mut outcome = build_crates(workspace, &crates)?;
    for app in typescript::apps(routes) {
        if let Some(errors) = typescript::build_app(workspace, &app)? {
            outcome.failed_apps.insert(app.component, errors);
            outcome.success = false;
        }
    }
    Ok(outcome)
}

fn build_crates(workspace: &Path, crates: &[FolderRoute]) -> anyhow::Result<Outcome> {
    if crates.is_empty() {
        return Ok(Outcome {
            success: true,
            ..Outcome::default()
        });
    }
    ensure_target()?;
    let started = Instant::now();
    // `Path::parent` of a bare file name is "", which no process can enter.
    let workspace = if workspace.as_os_str().is_empty() {
        Path::new(".")
    } else {
        workspace
    };
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .current_dir(workspace)
        .args(["build", "--release", "--target", TARGET])
        .arg("--message-format=json-diagnostic-rendered-ansi")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        cargo.env("CARGO_TERM_COLOR", "never");
    }
    for route in crates {
        cargo.args(["-p", &route.package]);
    }
    eprintln!(
        "building {} route crate{} for {TARGET}",
        crates.len(),
        if crates.len() == 1 { "" } else { "s" }
    );
    let mut child = cargo.spawn().context("cannot run cargo")?;
    let stdout = child.stdout.take().context("cargo's output")?;
    // Rust names a crate's target with underscores.
    let by_target: BTreeMap<String, &FolderRoute> = crates
        .iter()
        .map(|route| (route.package.replace('-', "_"), route))
        .collect();
    let mut outcome = Outcome::default();
    // The route whose messages are being printed: its name heads them once.
    let mut printing: Option<String> = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.context("cannot read cargo's output")?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] != "compiler-message" {
            continue;
        }
        let level = message["message"]["level"].as_str().unwrap_or("");
        let rendered = message["message"]["rendered"].as_str().unwrap_or("");
        let target = message["target"]["name"].as_str().unwrap_or("");
        let text = if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            rendered.to_string()
        } else {
            strip_ansi(rendered)
        };
        match by_target.get(target) {
            Some(route) => {
                if printing.as_deref() != Some(route.package.as_str()) {
                    eprintln!("route {} ({}):", route.path, route.crate_dir);
                    printing = Some(route.package.clone());
                }
                eprint!("{text}");
                if level == "error" {
                    let entry = outcome.failed.entry(route.package.clone()).or_default();
                    entry.push_str(&strip_ansi(rendered));
                }
            }
            None => {
                printing = None;
                eprint!("{text}");
                if level == "error" {
                    outcome.other_errors.push_str(&strip_ansi(rendered));
                }
            }
        }
    }
    let status = child.wait().context("cannot wait for cargo")?;
    outcome.success = status.success();
    if outcome.success {
        eprintln!(
            "built {} route crate{} in {:.1}s",
            crates.len(),
            if crates.len() == 1 { "" } else { "s" },
            started.elapsed().as_secs_f64()
        );
    } else {
        let names: Vec<String> = crates
            .iter()
            .filter(|route| outcome.failed.contains_key(&route.package))
            .map(|route| format!("{} ({})", route.path, route.crate_dir))
            .collect();
        if names.is_empty() {
            eprintln!("cargo build failed ({status})");
        } else {
            eprintln!("build failed in route {}", names.join(", "));
        }
    }
    Ok(outcome)
}

/// `edgehost build [DIR ...]`.
pub fn build_dirs(dirs: &[PathBuf]) -> anyhow::Result<()> {
    let crates = route_crates(dirs)?;
    if crates.is_empty() {
        bail!("no route crates (a folder with a Cargo.toml) or TypeScript route files (.ts) found under {dirs:?}");
    }
    let outcome = build(Path::new("."), &crates)?;
    if !outcome.success {
        bail!("the build failed");
    }
    Ok(())
}

/// Installs the wasm target with rustup when it is missing.
fn ensure_target() -> anyhow::Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    match installed {
        Ok(out)
            if String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim() == TARGET) =>
        {
            Ok(())
        }
        Ok(_) => {
            eprintln!("installing the {TARGET} target with rustup");
            let status = Command::new("rustup")
                .args(["target", "add", TARGET])
                .status()
                .context("cannot run rustup")?;
            if !status.success() {
                bail!("`rustup target add {TARGET}` failed ({status})");
            }
            Ok(())
        }
        // No rustup: the toolchain may still have the target; cargo will say if not.
        Err(_) => Ok(()),
    }
}

/// `text` without ANSI colour sequences (for logs and HTTP bodies).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // ESC [ ... final byte in @..~
            if chars.next() == Some('[') {
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_colour() {
        assert_eq!(
            strip_ansi("\u{1b}[0m\u{1b}[1m\u{1b}[38;5;9merror\u{1b}[0m: boom"),
            "error: boom"
        );
    }
}
