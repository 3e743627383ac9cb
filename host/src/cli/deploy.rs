//! `edgehost deploy`, `edgehost rollback` and `edgehost trigger`: the client of a running
//! host's admin API. A deploy uploads each component the host lacks (named
//! by its SHA-256), then the manifest.

use super::client_runtime;
use crate::control::{hash_of, DeployRequest};
use crate::manifest;
use anyhow::{bail, Context};
use bytes::Bytes;
use http::header;
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use std::collections::BTreeMap;
use std::path::Path;

/// `edgehost deploy`.
pub fn deploy(manifest_path: &Path, to: &str, token_env: &str) -> anyhow::Result<()> {
    let client = Client::new(to, token_env)?;
    client_runtime()?.block_on(client.deploy(manifest_path))
}

/// `edgehost rollback`.
pub fn rollback(to: &str, token_env: &str) -> anyhow::Result<()> {
    let client = Client::new(to, token_env)?;
    client_runtime()?.block_on(client.rollback())
}

/// `edgehost trigger`: runs `path`'s schedule on the host now and prints
/// what the route answered; fails when the route's answer is not a success.
pub fn trigger(path: &str, to: &str, token_env: &str) -> anyhow::Result<()> {
    let client = Client::new(to, token_env)?;
    client_runtime()?.block_on(async {
        let body = serde_json::json!({ "path": path }).to_string();
        let (status, body) = client
            .send(
                Method::POST,
                "/v1/schedules/trigger",
                "application/json",
                Bytes::from(body),
            )
            .await?;
        if !status.is_success() {
            bail!("trigger refused ({status}): {}", reason(&body));
        }
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        let answered = answer["status"].as_u64().unwrap_or(0);
        println!("{path}: {answered}");
        if let Some(text) = answer["body"].as_str().filter(|t| !t.is_empty()) {
            println!("{text}");
        }
        if !(200..300).contains(&answered) {
            bail!("the route answered {answered}");
        }
        Ok(())
    })
}

/// What a deploy sends: the request, and each component file it names as
/// `(written, SHA-256, bytes)`.
pub(super) struct Bundle {
    pub(super) request: DeployRequest,
    pub(super) files: Vec<(String, String, Vec<u8>)>,
}

impl Bundle {
    /// Reads the manifest at `manifest_path` and the components it names.
    pub(super) fn read(manifest_path: &Path) -> anyhow::Result<Bundle> {
        let text = std::fs::read_to_string(manifest_path)
            .with_context(|| format!("cannot read {}", manifest_path.display()))?;
        let file = manifest_path.display().to_string();
        let base = manifest::base_of(manifest_path);
        let manifest::Sources {
            components: written,
            folder_routes,
            migrations: migration_dirs,
        } = manifest::Sources::read(&text, base)
            .map_err(|reason| anyhow::anyhow!("{file}: {reason}"))?;
        let mut components = BTreeMap::new();
        let mut files = Vec::new();
        for component in written {
            if components.contains_key(&component) {
                continue;
            }
            let bytes = std::fs::read(base.join(&component)).with_context(|| {
                format!(
                    "cannot read component {component} (build the routes first: `edgehost build`)"
                )
            })?;
            let hash = hash_of(&bytes);
            components.insert(component.clone(), hash.clone());
            files.push((component, hash, bytes));
        }
        let mut migrations = BTreeMap::new();
        for dir in migration_dirs {
            let files = manifest::sql::read_migration_files(&base.join(&dir))
                .map_err(|reason| anyhow::anyhow!("{file}: migrations: {reason}"))?;
            migrations.insert(dir, files);
        }
        Ok(Bundle {
            request: DeployRequest {
                file,
                manifest: text,
                components,
                folder_routes,
                migrations,
                id: None,
            },
            files,
        })
    }
}

/// A connection to a host's admin API.
struct Client {
    base: Uri,
    token: String,
}

impl Client {
    /// `to` is the admin API's URL (`http://127.0.0.1:9090`); the token comes
    /// from the environment variable `token_env`.
    fn new(to: &str, token_env: &str) -> anyhow::Result<Client> {
        let base: Uri = to
            .parse()
            .with_context(|| format!("{to:?} is not a URL such as http://127.0.0.1:9090"))?;
        if base.scheme_str() != Some("http") || base.authority().is_none() {
            bail!("{to:?}: the admin API is reached over http://host:port (put TLS in front of it to reach it remotely)");
        }
        let token = std::env::var(token_env).unwrap_or_default();
        if token.is_empty() {
            bail!("set {token_env} to the host's admin token");
        }
        Ok(Client { base, token })
    }

    /// One request on a fresh connection: the status and the body.
    async fn send(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Bytes,
    ) -> anyhow::Result<(StatusCode, Bytes)> {
        let authority = self
            .base
            .authority()
            .map(|a| a.as_str().to_string())
            .unwrap_or_default();
        let stream = tokio::net::TcpStream::connect(&authority)
            .await
            .with_context(|| format!("cannot connect to the admin API at {}", self.base))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .context("HTTP handshake with the admin API failed")?;
        tokio::spawn(connection);
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(header::HOST, &authority)
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token))
            .header(header::CONTENT_TYPE, content_type)
            .body(Full::new(body))
            .context("cannot build the request")?;
        let response = sender
            .send_request(request)
            .await
            .with_context(|| format!("the admin API at {} did not answer", self.base))?;
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .context("cannot read the admin API's answer")?
            .to_bytes();
        if status == StatusCode::UNAUTHORIZED {
            bail!("the host refused the admin token (401)");
        }
        Ok((status, body))
    }

    /// Uploads the manifest's components the host lacks, then deploys it.
    async fn deploy(&self, manifest_path: &Path) -> anyhow::Result<()> {
        let Bundle { mut request, files } = Bundle::read(manifest_path)?;
        let file = request.file.clone();
        let mut components = BTreeMap::new();
        for (component, hash, bytes) in files {
            if components.contains_key(&component) {
                continue;
            }
            let uri = format!("/v1/components/{hash}");
            let (status, _) = self
                .send(Method::HEAD, &uri, "application/wasm", Bytes::new())
                .await?;
            if status == StatusCode::OK {
                eprintln!("  {component}: the host has it");
            } else {
                let size = bytes.len();
                let (status, body) = self
                    .send(Method::PUT, &uri, "application/wasm", Bytes::from(bytes))
                    .await?;
                if !status.is_success() {
                    bail!("uploading {component} failed ({status}): {}", reason(&body));
                }
                eprintln!("  {component}: uploaded {} KiB", size.div_ceil(1024));
            }
            components.insert(component, hash);
        }
        request.components = components;
        let (status, body) = self
            .send(
                Method::POST,
                "/v1/deployments",
                "application/json",
                Bytes::from(serde_json::to_vec(&request)?),
            )
            .await?;
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        if status.is_success() {
            for warning in answer["warnings"].as_array().into_iter().flatten() {
                eprintln!("warning: {}", warning.as_str().unwrap_or_default());
            }
            println!(
                "deployed {file}: deployment {} serving {} routes",
                answer["deployment"].as_str().unwrap_or("?"),
                answer["routes"]
            );
            return Ok(());
        }
        for line in answer["errors"].as_array().into_iter().flatten() {
            eprintln!("{}", line.as_str().unwrap_or_default());
        }
        bail!("{}", reason(&body))
    }

    /// Asks the host to go back to its previous deployment.
    async fn rollback(&self) -> anyhow::Result<()> {
        let (status, body) = self
            .send(
                Method::POST,
                "/v1/rollback",
                "application/json",
                Bytes::new(),
            )
            .await?;
        if !status.is_success() {
            bail!("rollback refused ({status}): {}", reason(&body));
        }
        let answer: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
        println!(
            "rolled back: deployment {} serving {} routes",
            answer["deployment"].as_str().unwrap_or("?"),
            answer["routes"]
        );
        Ok(())
    }
}

/// The `error` of a JSON error body, or the body itself.
fn reason(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"].as_str().map(str::to_string))
        .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned())
}
