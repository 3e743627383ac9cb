//! The admin API: deploys, rollbacks, metrics and health, on a listener of
//! its own (loopback by default), never on the public one.
//!
//! | request | auth | answer |
//! | --- | --- | --- |
//! | `GET /healthz` | none | 200 while the process runs |
//! | `GET /readyz` | none | 200 with the deployment id, 503 once shutting down |
//! | `GET /metrics` | bearer | Prometheus text |
//! | `HEAD /v1/components/<sha256>` | bearer | 200 if the host has it, else 404 |
//! | `PUT /v1/components/<sha256>` | bearer | stores a component (413 over `max_upload`, 400 if the hash differs) |
//! | `POST /v1/deployments` | bearer | `{file, manifest, components}`: validate, compile, swap; 422 with reasons |
//! | `GET /v1/deployments` | bearer | kept deployments, the current one last |
//! | `POST /v1/rollback` | bearer | back to the deployment before the current one |
//!
//! A deploy names its components by content hash (`components` maps each
//! `component = ...` value of the manifest to the SHA-256 of an uploaded
//! file), so a component uploaded once is never sent again.
//!
//! The client side, used by `edgehost deploy` and `edgehost rollback`, is at
//! the end of this module.

use crate::folders::FolderRoute;
use crate::manifest::{self, AdminSettings, Manifest};
use crate::server::{Deployment, Host};
use anyhow::{bail, Context};
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::net::TcpListener;

/// How long an uploaded component no kept deployment uses stays: a deploy
/// uploads its components first and sends its manifest after.
const UNUSED_COMPONENT_GRACE: Duration = Duration::from_secs(3600);

/// What the admin API needs: the host it manages and how to check callers.
pub struct Admin {
    host: Arc<Host>,
    /// SHA-256 of the bearer token; compared in constant time.
    token_digest: [u8; 32],
    max_upload: usize,
    /// Uploaded components, one file per content hash.
    store: PathBuf,
    /// The compile cache.
    compiled: PathBuf,
    /// Compile cache entries of the manifest the host started with: a
    /// restart with it finds them even after its deployment is no longer kept.
    pinned: std::collections::HashSet<PathBuf>,
    /// Host environment variables a deployed manifest may use as secrets.
    deploy_secrets: Arc<std::collections::BTreeSet<String>>,
    /// What each kept deployment made through this API was made from, by
    /// deployment id: a rollback records it as what to resume.
    requests: std::sync::Mutex<BTreeMap<String, Arc<DeployRequest>>>,
    /// The deployment `serve --resume` brings back: the last one deployed or
    /// rolled back to through this API.
    record: PathBuf,
}

impl Admin {
    /// The admin API for `host`, with the token read from the environment
    /// variable `settings` names. Fails when it is unset or empty.
    pub fn new(
        host: Arc<Host>,
        settings: &AdminSettings,
        data_dir: &Path,
    ) -> anyhow::Result<Admin> {
        let token = std::env::var(&settings.token_env).unwrap_or_default();
        if token.is_empty() {
            bail!(
                "the admin API needs a bearer token: set {} in the host's environment",
                settings.token_env
            );
        }
        if token.len() < 16 {
            tracing::warn!(
                "the admin token in {} is shorter than 16 characters; use a long random one",
                settings.token_env
            );
        }
        // Without a list, deploys may use the secrets the host started with:
        // the admin token must not open the whole host environment.
        let deploy_secrets = match &settings.deploy_secrets {
            Some(names) => names.iter().cloned().collect(),
            None => host
                .started_with
                .routes
                .iter()
                .flat_map(|route| route.secrets.iter().cloned())
                .collect(),
        };
        let pinned = host
            .current()
            .table
            .routes()
            .iter()
            .filter_map(|route| route.compiled.clone())
            .collect();
        Ok(Admin {
            host,
            token_digest: Sha256::digest(token.as_bytes()).into(),
            max_upload: settings.max_upload,
            store: data_dir.join("components"),
            compiled: data_dir.join("compiled"),
            requests: std::sync::Mutex::new(BTreeMap::new()),
            record: data_dir.join("deployment.json"),
            pinned,
            deploy_secrets: Arc::new(deploy_secrets),
        })
    }

    /// Deletes uploaded components and compile cache entries that no kept
    /// deployment uses, except those written (or asked for) within
    /// [`UNUSED_COMPONENT_GRACE`]: a deploy may be on its way with them.
    async fn collect_garbage(&self) {
        let mut in_use = self.pinned.clone();
        for deployment in self.host.deployments() {
            for route in deployment.table.routes() {
                in_use.insert(route.component.clone());
                in_use.extend(route.compiled.clone());
            }
        }
        let dirs = [
            (self.store.clone(), "wasm"),
            (self.compiled.clone(), "cwasm"),
        ];
        let removed = tokio::task::spawn_blocking(move || {
            let mut removed = Vec::new();
            for (dir, extension) in dirs {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for entry in entries.flatten() {
                    let path = entry.path();
                    let stale = entry
                        .metadata()
                        .and_then(|m| m.modified())
                        .ok()
                        .and_then(|modified| modified.elapsed().ok())
                        .is_some_and(|age| age > UNUSED_COMPONENT_GRACE);
                    let ours = path.extension().is_some_and(|e| e == extension);
                    if ours && stale && !in_use.contains(&path) {
                        match std::fs::remove_file(&path) {
                            Ok(()) => removed.push(path),
                            Err(err) => {
                                tracing::warn!("could not remove {}: {err}", path.display())
                            }
                        }
                    }
                }
            }
            removed
        })
        .await
        .unwrap_or_default();
        for path in removed {
            tracing::info!("removed {}: no kept deployment uses it", path.display());
        }
    }

    fn authorized(&self, req: &Request<Incoming>) -> bool {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        let digest: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        // Every byte is compared whatever the first difference: the time
        // taken says nothing about the token.
        digest
            .iter()
            .zip(self.token_digest)
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
    }
}

/// Serves the admin API on `listener` until `shutdown` resolves.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::warn!("admin accept failed: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => return,
        };
        let admin = Arc::clone(&admin);
        let service = service_fn(move |req| {
            let admin = Arc::clone(&admin);
            async move { Ok::<_, std::convert::Infallible>(handle(&admin, req).await) }
        });
        let connection = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .serve_connection(TokioIo::new(stream), service);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!("admin connection ended: {err}");
            }
        });
    }
}

async fn handle(admin: &Arc<Admin>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let host = &admin.host;
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    match (&method, path.as_str()) {
        (&Method::GET, "/healthz") => {
            return json(StatusCode::OK, serde_json::json!({"status": "ok"}))
        }
        (&Method::GET, "/readyz") => {
            let deployment = host.current().id.clone();
            return if host.ready() {
                json(
                    StatusCode::OK,
                    serde_json::json!({"status": "ready", "deployment": deployment}),
                )
            } else {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    serde_json::json!({"status": "shutting down"}),
                )
            };
        }
        _ => {}
    }
    if !admin.authorized(&req) {
        tracing::warn!(%method, path, "admin request without a valid bearer token");
        let mut response = error(StatusCode::UNAUTHORIZED, "a valid bearer token is required");
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    let component = path.strip_prefix("/v1/components/").map(str::to_string);
    match (&method, path.as_str(), component) {
        (&Method::GET, "/metrics", _) => {
            let mut response = Response::new(Full::new(Bytes::from(host.metrics().render())));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            response
        }
        (&Method::GET, "/v1/deployments", _) => {
            let current = host.current();
            let list: Vec<serde_json::Value> = host
                .deployments()
                .iter()
                .map(|d| describe(d, Arc::ptr_eq(d, &current)))
                .collect();
            json(StatusCode::OK, serde_json::json!({ "deployments": list }))
        }
        (&Method::POST, "/v1/deployments", _) => deploy(admin, req).await,
        (&Method::POST, "/v1/rollback", _) => {
            let _turn = host.deploying.lock().await;
            match host.rollback() {
                Ok(deployment) => {
                    admin.record(&deployment).await;
                    admin.collect_garbage().await;
                    json(StatusCode::OK, describe(&deployment, true))
                }
                Err(reason) => error(StatusCode::CONFLICT, &reason),
            }
        }
        (&Method::HEAD | &Method::GET, _, Some(hash)) if is_hash(&hash) => {
            let file = admin.store.join(format!("{hash}.wasm"));
            if file.is_file() {
                // A client that finds it will deploy with it: it counts as
                // freshly uploaded, so garbage collection leaves it alone.
                let touched = std::fs::File::options()
                    .write(true)
                    .open(&file)
                    .and_then(|f| f.set_modified(std::time::SystemTime::now()));
                if let Err(err) = touched {
                    tracing::warn!("could not touch {}: {err}", file.display());
                }
                Response::new(Full::new(Bytes::new()))
            } else {
                error(StatusCode::NOT_FOUND, "no component with this hash")
            }
        }
        (&Method::PUT, _, Some(hash)) if is_hash(&hash) => upload(admin, &hash, req).await,
        (_, _, Some(_)) => error(
            StatusCode::BAD_REQUEST,
            "components are addressed by their SHA-256 in lower-case hex",
        ),
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

fn is_hash(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn describe(deployment: &Deployment, current: bool) -> serde_json::Value {
    serde_json::json!({
        "deployment": deployment.id,
        "source": deployment.source,
        "routes": deployment.table.routes().len(),
        "created_unix": deployment
            .created
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        "current": current,
    })
}

/// Reads a body of at most `limit` bytes; the answer to give when it cannot.
async fn read_body(req: Request<Incoming>, limit: usize) -> Result<Bytes, Response<Full<Bytes>>> {
    let too_large = || {
        error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the upload is over this host's max_upload of {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(req.into_body(), limit).collect().await {
        Ok(body) => Ok(body.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(err) => Err(error(
            StatusCode::BAD_REQUEST,
            &format!("could not read the body: {err}"),
        )),
    }
}

async fn upload(admin: &Admin, hash: &str, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match read_body(req, admin.max_upload).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let actual = hex(&Sha256::digest(&body));
    if actual != hash {
        return error(
            StatusCode::BAD_REQUEST,
            &format!("the body's SHA-256 is {actual}, not {hash}"),
        );
    }
    let path = admin.store.join(format!("{hash}.wasm"));
    let store = admin.store.clone();
    let size = body.len();
    let write = move || -> std::io::Result<()> {
        if path.is_file() {
            // Same name, same bytes: already stored.
            return Ok(());
        }
        std::fs::create_dir_all(&store)?;
        // A name of its own per upload: two uploads of one component at
        // once never write the same temporary file.
        static UPLOADS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = UPLOADS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let temporary = path.with_extension(format!("tmp{}-{n}", std::process::id()));
        std::fs::write(&temporary, &body)?;
        std::fs::rename(&temporary, &path)
    };
    let written = tokio::task::spawn_blocking(write)
        .await
        .unwrap_or_else(|err| Err(std::io::Error::other(err.to_string())));
    match written {
        Ok(()) => {
            tracing::info!("stored uploaded component {hash} ({size} bytes)");
            json(
                StatusCode::CREATED,
                serde_json::json!({ "component": hash }),
            )
        }
        Err(err) => {
            tracing::error!("cannot store uploaded component {hash}: {err}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot store the component",
            )
        }
    }
}

/// What `POST /v1/deployments` carries.
#[derive(Clone, Serialize, Deserialize)]
pub struct DeployRequest {
    /// The manifest's file name, for error messages.
    pub file: String,
    /// The manifest's text.
    pub manifest: String,
    /// `component = ...` value as written -> SHA-256 of the uploaded file.
    pub components: BTreeMap<String, String>,
    /// The route crates the manifest's `[routes]` found on the client.
    #[serde(default)]
    pub folder_routes: Vec<FolderRoute>,
}

async fn deploy(admin: &Arc<Admin>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match read_body(req, admin.max_upload).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let request: DeployRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the body is not a deploy request: {err}"),
            )
        }
    };
    let file = request.file.clone();
    match admin.apply(request).await {
        Ok((deployment, warnings)) => {
            admin.collect_garbage().await;
            let mut answer = describe(&deployment, true);
            answer["warnings"] = serde_json::json!(warnings);
            json(StatusCode::OK, answer)
        }
        Err(errors) => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            serde_json::json!({
                "error": format!(
                    "{file} was not deployed; the host still serves deployment {}",
                    admin.host.current().id
                ),
                "errors": errors,
            }),
        ),
    }
}

impl Admin {
    /// Validates, compiles and swaps in a deploy request, recording it as
    /// what `serve --resume` brings back; or says why not.
    async fn apply(
        &self,
        request: DeployRequest,
    ) -> Result<(Arc<Deployment>, Vec<String>), Vec<String>> {
        let request = Arc::new(request);
        let for_parse = Arc::clone(&request);
        let store = self.store.clone();
        let allowed = Arc::clone(&self.deploy_secrets);
        let refused = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
        let refused_names = Arc::clone(&refused);
        let source = format!("deploy of {}", request.file);
        let loaded = load_and_swap(&self.host, source, move || {
            let request = for_parse;
            manifest::parse_with(
                Path::new(&request.file),
                &request.manifest,
                &|name| {
                    if allowed.contains(name) {
                        std::env::var(name).ok()
                    } else {
                        if let Ok(mut names) = refused_names.lock() {
                            names.push(name.to_string());
                        }
                        None
                    }
                },
                &|written| {
                    let hash = request.components.get(written)?;
                    let path = store.join(format!("{hash}.wasm"));
                    (is_hash(hash) && path.is_file()).then_some(path)
                },
                &|_, _| Ok(request.folder_routes.clone()),
            )
        })
        .await;
        match loaded {
            Ok((deployment, warnings)) => {
                if let Ok(mut requests) = self.requests.lock() {
                    let kept: std::collections::BTreeSet<String> = self
                        .host
                        .deployments()
                        .iter()
                        .map(|d| d.id.clone())
                        .collect();
                    requests.retain(|id, _| kept.contains(id));
                    requests.insert(deployment.id.clone(), Arc::clone(&request));
                }
                self.record(&deployment).await;
                Ok((deployment, warnings))
            }
            Err(mut errors) => {
                // Say why a secret the host has was not given.
                let refused = refused
                    .lock()
                    .map(|names| names.clone())
                    .unwrap_or_default();
                for reason in &mut errors {
                    for name in &refused {
                        let missing = format!("secret {name} is not set in the host's environment");
                        if reason.contains(&missing) {
                            *reason = reason.replace(
                                &missing,
                                &format!("secret {name} is not one deploys may use (list it in [admin] deploy_secrets)"),
                            );
                        }
                    }
                }
                Err(errors)
            }
        }
    }

    /// Records `deployment` as what `serve --resume` brings back: its deploy
    /// request, or nothing (the command line's manifest) for the deployment
    /// the host started with.
    async fn record(&self, deployment: &Deployment) {
        let request = self
            .requests
            .lock()
            .ok()
            .and_then(|requests| requests.get(&deployment.id).cloned());
        let record = self.record.clone();
        let written = tokio::task::spawn_blocking(move || match request {
            Some(request) => {
                let text = serde_json::to_vec_pretty(&*request).map_err(std::io::Error::other)?;
                let temporary = record.with_extension("json.tmp");
                std::fs::write(&temporary, text)?;
                std::fs::rename(&temporary, &record)
            }
            None => match std::fs::remove_file(&record) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(err),
                _ => Ok(()),
            },
        })
        .await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(
                "could not record deployment {} for --resume in {}: {err}",
                deployment.id,
                self.record.display()
            ),
            Err(err) => tracing::warn!("could not record deployment {}: {err}", deployment.id),
        }
    }

    /// `serve --resume`: brings back the last deployment recorded in the
    /// data dir. If there is none, or it no longer loads (a secret gone, a
    /// component deleted), the host serves its command line's manifest and
    /// says why.
    pub async fn resume(&self) {
        let text = match std::fs::read(&self.record) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(
                    "--resume: no deployment recorded in {}; serving the manifest",
                    self.record.display()
                );
                return;
            }
            Err(err) => {
                tracing::error!("--resume: cannot read {}: {err}", self.record.display());
                return;
            }
        };
        let request: DeployRequest = match serde_json::from_slice(&text) {
            Ok(request) => request,
            Err(err) => {
                tracing::error!(
                    "--resume: {} is not a deploy record: {err}",
                    self.record.display()
                );
                return;
            }
        };
        let file = request.file.clone();
        match self.apply(request).await {
            Ok((deployment, _)) => tracing::info!(
                "--resume: serving {file} as deployment {}, as last deployed",
                deployment.id
            ),
            Err(errors) => tracing::error!(
                "--resume: the last deployment ({file}) no longer loads; serving the manifest instead:\n{}",
                errors.join("\n")
            ),
        }
    }
}

/// Validates and compiles what `parse` returns, off the async workers, then
/// swaps it in; one deploy or reload at a time. On any error nothing changes
/// and the reasons come back, one per line of the manifest at fault.
pub async fn load_and_swap(
    host: &Arc<Host>,
    source: String,
    parse: impl FnOnce() -> Result<Manifest, manifest::ManifestErrors> + Send + 'static,
) -> Result<(Arc<Deployment>, Vec<String>), Vec<String>> {
    let _turn = host.deploying.lock().await;
    let for_load = Arc::clone(host);
    let loaded = tokio::task::spawn_blocking(move || {
        let manifest = parse()?;
        let warnings = restart_only_changes(&for_load.started_with, &manifest);
        let table = for_load.runtime.load(&manifest)?;
        Ok::<_, manifest::ManifestErrors>((table, warnings))
    })
    .await;
    let reasons = match loaded {
        Ok(Ok((table, warnings))) => {
            for warning in &warnings {
                tracing::warn!("{source}: {warning}");
            }
            return Ok((host.activate(table, source), warnings));
        }
        Ok(Err(errors)) => errors.0.iter().map(ToString::to_string).collect(),
        Err(err) => vec![format!("loading stopped unexpectedly: {err}")],
    };
    host.metrics().deploy_rejected();
    tracing::error!(
        "{source} refused; still serving deployment {}:\n{}",
        host.current().id,
        reasons.join("\n")
    );
    Err(reasons)
}

/// `[server]` and `[admin]` settings that differ from the running host's:
/// they belong to the process and take effect only on a restart.
fn restart_only_changes(running: &Manifest, new: &Manifest) -> Vec<String> {
    let mut changed = Vec::new();
    if running.listen != new.listen {
        changed.push("listen");
    }
    if running.clients != new.clients {
        changed.push("the client limits (header_timeout, body_timeout, drain_timeout, max_header_bytes, max_headers)");
    }
    if running.max_instances != new.max_instances {
        changed.push("max_instances");
    }
    if running.admin != new.admin {
        changed.push("[admin]");
    }
    changed
        .into_iter()
        .map(|what| {
            format!("{what} differs from the running host's and takes effect only when it restarts")
        })
        .collect()
}

fn json(status: StatusCode, body: serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, serde_json::json!({ "error": message }))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---- The client: `edgehost deploy` and `edgehost rollback` ----

/// Where the client finds the admin token unless told otherwise.
pub const TOKEN_ENV: &str = "EDGEHOST_ADMIN_TOKEN";

/// A connection to a host's admin API.
pub struct Client {
    base: Uri,
    token: String,
}

impl Client {
    /// `to` is the admin API's URL (`http://127.0.0.1:9090`); the token comes
    /// from the environment variable `token_env`.
    pub fn new(to: &str, token_env: &str) -> anyhow::Result<Client> {
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
    pub async fn deploy(&self, manifest_path: &Path) -> anyhow::Result<()> {
        let text = std::fs::read_to_string(manifest_path)
            .with_context(|| format!("cannot read {}", manifest_path.display()))?;
        let file = manifest_path.display().to_string();
        let base = manifest_path.parent().unwrap_or(Path::new("."));
        let manifest::Sources {
            components: written,
            folder_routes,
        } = manifest::Sources::read(&text, base)
            .map_err(|reason| anyhow::anyhow!("{file}: {reason}"))?;
        let mut components = BTreeMap::new();
        for component in written {
            if components.contains_key(&component) {
                continue;
            }
            let path = base.join(&component);
            let bytes = std::fs::read(&path).with_context(|| {
                format!(
                    "cannot read component {component} (build the routes first: `edgehost build`)"
                )
            })?;
            let hash = hex(&Sha256::digest(&bytes));
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
        let request = DeployRequest {
            file: file.clone(),
            manifest: text,
            components,
            folder_routes,
        };
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
    pub async fn rollback(&self) -> anyhow::Result<()> {
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
