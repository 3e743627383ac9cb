//! `edgehost deploy --fleet`, `edgehost rollback --fleet` and `edgehost
//! fleet status`: the command line of a fleet (the work is in `fleet`).

use super::client_runtime;
use super::deploy::Bundle;
use crate::fleet::{self, Bus, Moved};
use crate::manifest::fleet::NATS_URL_ENV;
use std::path::Path;
use std::time::Duration;

/// Where a fleet command finds NATS and which fleet it means.
pub struct FleetTarget {
    pub fleet: String,
    /// `--nats URL`, else the variable a manifest's `[fleet]` names, else
    /// `NATS_URL`.
    pub nats: Option<String>,
    /// Refuse unless the fleet still serves this deployment.
    pub expect_current: Option<String>,
    /// How long hosts have to prepare a deployment.
    pub prepare_timeout: Duration,
}

impl FleetTarget {
    /// Connects to NATS and opens the fleet's buckets.
    async fn open(&self, nats_env: &str) -> anyhow::Result<Bus> {
        if !crate::manifest::fleet::is_fleet_name(&self.fleet) {
            anyhow::bail!(
                "{:?} is not a fleet name (letters, digits, `_` and `-`)",
                self.fleet
            );
        }
        let (url, shown) = match &self.nats {
            Some(url) => (url.clone(), "--nats".to_string()),
            None => match std::env::var(nats_env) {
                Ok(url) if !url.is_empty() => (url, nats_env.to_string()),
                _ => anyhow::bail!(
                    "set {nats_env} to the fleet's NATS URL (nats://host:4222), or pass --nats"
                ),
            },
        };
        crate::manifest::fleet::check_nats_url(&url)
            .map_err(|reason| anyhow::anyhow!("{shown}: {reason}"))?;
        let client = fleet::connect(&url, &shown).await.map_err(|err| {
            anyhow::anyhow!("{err:#}; the fleet cannot be changed while NATS is unreachable")
        })?;
        Bus::open(client, &self.fleet)
            .await
            .map_err(|err| anyhow::anyhow!("fleet {}: {err:#}; nothing changed", self.fleet))
    }
}

/// The NATS variable a manifest's `[fleet]` names, if it names one.
fn nats_env_of(text: &str) -> Option<String> {
    let value: toml::Value = toml::from_str(text).ok()?;
    value
        .get("fleet")?
        .get("nats_url_env")?
        .as_str()
        .map(str::to_string)
}

/// Says what a deploy or rollback moved, and how fast the hosts followed.
fn report(what: &str, target: &FleetTarget, moved: &Moved) {
    match moved.converged {
        Some(took) => println!(
            "{what} fleet {}: deployment {} on all {} hosts, {} ms after the pointer moved",
            target.fleet,
            moved.id,
            moved.hosts.len(),
            took.as_millis()
        ),
        None => {
            println!(
                "{what} fleet {}: deployment {} is current",
                target.fleet, moved.id
            );
            eprintln!(
                "warning: not yet switched after 30 s: {} (see `edgehost fleet status --fleet {}`)",
                moved.lagging.join(", "),
                target.fleet
            );
        }
    }
}

/// `edgehost deploy --fleet NAME`.
pub fn deploy_fleet(manifest_path: &Path, target: &FleetTarget) -> anyhow::Result<()> {
    let Bundle { request, files } = Bundle::read(manifest_path)?;
    let nats_env = nats_env_of(&request.manifest).unwrap_or_else(|| NATS_URL_ENV.to_string());
    client_runtime()?.block_on(async {
        let bus = target.open(&nats_env).await?;
        let file = request.file.clone();
        let moved = fleet::deploy(
            &bus,
            request,
            files,
            target.expect_current.as_deref(),
            target.prepare_timeout,
        )
        .await?;
        report(&format!("deployed {file} to"), target, &moved);
        Ok(())
    })
}

/// `edgehost rollback --fleet NAME`.
pub fn rollback_fleet(target: &FleetTarget) -> anyhow::Result<()> {
    client_runtime()?.block_on(async {
        let bus = target.open(NATS_URL_ENV).await?;
        let moved = fleet::rollback(
            &bus,
            target.expect_current.as_deref(),
            target.prepare_timeout,
        )
        .await?;
        report("rolled back", target, &moved);
        Ok(())
    })
}

/// `edgehost fleet status --fleet NAME`.
pub fn fleet_status(target: &FleetTarget) -> anyhow::Result<()> {
    client_runtime()?.block_on(async {
        let bus = target.open(NATS_URL_ENV).await?;
        print!("{}", fleet::status(&bus).await?);
        Ok(())
    })
}
