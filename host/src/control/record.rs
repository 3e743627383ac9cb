//! What a deploy carries ([`DeployRequest`]), and the record of the last
//! one deployed or rolled back to (`<data_dir>/deployment.json`), which
//! `serve --resume` brings back after a restart.

use crate::manifest::folders::FolderRoute;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// What `POST /v1/deployments` carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DeployRequest {
    /// The manifest's file name, for error messages.
    pub(crate) file: String,
    /// The manifest's text.
    pub(crate) manifest: String,
    /// `component = ...` value as written -> SHA-256 of the uploaded file.
    pub(crate) components: BTreeMap<String, String>,
    /// The route crates the manifest's `[routes]` found on the client.
    #[serde(default)]
    pub(crate) folder_routes: Vec<FolderRoute>,
    /// `[sql.NAME] migrations` folder as written -> its `.sql` files (name,
    /// text), read on the client.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) migrations: BTreeMap<String, Vec<(String, String)>>,
    /// The fleet-wide id of a fleet deployment, kept in the record so that
    /// a host resumed without NATS says which one it serves; the admin API
    /// ignores it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
}

/// The record file.
pub(crate) struct Record {
    file: PathBuf,
}

impl Record {
    pub(crate) fn new(file: PathBuf) -> Record {
        Record { file }
    }

    /// Makes `request` what a resume brings back; `None` (the deployment
    /// the host started with) removes the record, so a resume serves the
    /// command line's manifest.
    pub(crate) async fn write(&self, request: Option<&DeployRequest>) -> std::io::Result<()> {
        let file = self.file.clone();
        let text = request
            .map(|request| serde_json::to_vec_pretty(request).map_err(std::io::Error::other))
            .transpose()?;
        tokio::task::spawn_blocking(move || match text {
            Some(text) => {
                // Written whole, then renamed: a crash leaves the old record.
                let temporary = file.with_extension("json.tmp");
                std::fs::write(&temporary, text)?;
                std::fs::rename(&temporary, &file)
            }
            None => match std::fs::remove_file(&file) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
                _ => Ok(()),
            },
        })
        .await
        .unwrap_or_else(|err| Err(std::io::Error::other(err.to_string())))
    }

    /// The recorded deploy: `Ok(None)` when there is none, `Err` with the
    /// reason when it cannot be read.
    pub(crate) fn read(&self) -> Result<Option<DeployRequest>, String> {
        let text = match std::fs::read(&self.file) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(format!("cannot read {}: {err}", self.file.display())),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|err| format!("{} is not a deploy record: {err}", self.file.display()))
    }

    pub(crate) fn file(&self) -> &PathBuf {
        &self.file
    }
}
