//! `[fleet]`: the fleet a host belongs to, chosen when the host starts. A
//! host in a fleet takes its deployments from the fleet (NATS JetStream),
//! not from its command line; see the `fleet` module.
//!
//! ```toml
//! [fleet]
//! name = "prod"              # hosts with the same name serve the same deployments
//! nats_url_env = "NATS_URL"  # the host environment variable holding nats://...
//! deploy_secrets = ["STRIPE_WEBHOOK_SECRET"]  # default: the secrets this manifest uses
//! ```

use super::schema::RawFleet;

/// Where hosts and the fleet commands find the NATS URL unless told.
pub(crate) const NATS_URL_ENV: &str = "NATS_URL";

/// Where a fleet's name may not reach: it names JetStream buckets.
const MAX_FLEET_NAME: usize = 32;

/// `[fleet]`, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSpec {
    /// The fleet's name: letters, digits, `_` and `-`.
    pub(crate) name: String,
    /// The host environment variable holding the NATS URL.
    pub(crate) nats_url_env: String,
    /// Host environment variables a fleet deployment may name in `secrets`;
    /// `None`: those the manifest the host started with names.
    pub(crate) deploy_secrets: Option<Vec<String>>,
}

impl FleetSpec {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn nats_url_env(&self) -> &str {
        &self.nats_url_env
    }
}

/// Whether `name` can name a fleet (it becomes part of bucket names).
pub(crate) fn is_fleet_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_FLEET_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// `[fleet]` checked, or the reason it is not usable.
pub(crate) fn check(raw: &RawFleet, is_var: &dyn Fn(&str) -> bool) -> Result<FleetSpec, String> {
    if !is_fleet_name(&raw.name) {
        return Err(format!(
            "name {:?} is not a fleet name (1 to {MAX_FLEET_NAME} letters, digits, `_` and `-`)",
            raw.name
        ));
    }
    let nats_url_env = raw
        .nats_url_env
        .clone()
        .unwrap_or_else(|| NATS_URL_ENV.into());
    if !is_var(&nats_url_env) {
        return Err(format!(
            "nats_url_env {nats_url_env:?} is not a variable name"
        ));
    }
    Ok(FleetSpec {
        name: raw.name.clone(),
        nats_url_env,
        deploy_secrets: raw.deploy_secrets.clone(),
    })
}

/// Whether `url` looks like a NATS server's URL (`nats://host:port`); the
/// URL itself is never shown, as it may hold credentials.
pub(crate) fn check_nats_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("nats://")
        .or_else(|| url.strip_prefix("tls://"))
        .ok_or("not a NATS URL (nats://host:port)")?;
    let host = rest.rsplit('@').next().unwrap_or(rest);
    if host.is_empty() || host.contains('/') && !host.ends_with('/') {
        return Err("not a NATS URL (nats://host:port)".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> Result<crate::manifest::Manifest, String> {
        crate::manifest::parse(std::path::Path::new("m.toml"), text, &|_| None)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_fleet_table_is_checked_and_names_its_line() {
        let m = manifest("[fleet]\nname = \"prod\"\n").unwrap();
        let fleet = m.fleet.unwrap();
        assert_eq!((fleet.name(), fleet.nats_url_env()), ("prod", "NATS_URL"));
        for (text, expected) in [
            (
                "\n[fleet]\nname = \"a b\"\n",
                "m.toml:2: [fleet]: name \"a b\" is not a fleet name",
            ),
            (
                "[fleet]\nname = \"p\"\nnats_url_env = \"1X\"\n",
                "m.toml:1: [fleet]: nats_url_env \"1X\" is not a variable name",
            ),
            ("[fleet]\nnats_url_env = \"N\"\n", "missing field `name`"),
            (
                "[fleet]\nname = \"p\"\nurl = \"nats://x\"\n",
                "unknown field `url`",
            ),
        ] {
            let error = manifest(text).unwrap_err();
            assert!(error.contains(expected), "for\n{text}\ngot: {error}");
        }
    }

    #[test]
    fn nats_urls_are_checked() {
        assert!(check_nats_url("nats://127.0.0.1:4222").is_ok());
        assert!(check_nats_url("nats://user:pass@nats.internal:4222").is_ok());
        assert!(check_nats_url("http://127.0.0.1:4222").is_err());
        assert!(check_nats_url("nats://").is_err());
    }
}
