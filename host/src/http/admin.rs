//! The admin API: deploys, rollbacks, metrics and health, on a listener of
//! its own (loopback by default), never on the public one. This file is its
//! HTTP side; what a deploy does is [`Deployer`]'s.
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
//! | `POST /v1/cache/purge` | bearer | `{"prefix": "/api/posts"}` or `{"tag": "posts"}`: drops those cached answers, says how many |
//!
//! A deploy names its components by content hash (`components` maps each
//! `component = ...` value of the manifest to the SHA-256 of an uploaded
//! file), so a component uploaded once is never sent again.

use super::answer::json;
use super::body::{read_limited, BodyError};
use super::connections::{ConnectionLimits, Connections};
use super::listener::{self, HeadLimits};
use super::schedule::Scheduler;
use crate::control::{DeployRequest, Deployer, Deployment, UploadError};
use crate::manifest::AdminSettings;
use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};
use tokio::net::TcpListener;

/// Time an admin client has to send a request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// The admin API serves operators and deploy tools, a few at a time; an
/// upload may be large, so a slow link has a minute per stalled write.
const ADMIN_CONNECTIONS: ConnectionLimits = ConnectionLimits {
    max_total: 64,
    max_per_client: 64,
    keep_alive: Duration::from_secs(30),
    write_timeout: Duration::from_secs(60),
};

/// The admin API: who may call it and what it drives.
pub(crate) struct Admin {
    /// SHA-256 of the bearer token; compared in constant time.
    token_digest: [u8; 32],
    max_upload: usize,
    deployer: Arc<Deployer>,
    scheduler: Arc<Scheduler>,
}

impl Admin {
    /// The admin API for `deployer`, with the token read from the
    /// environment variable `settings` names. Fails when it is unset or empty.
    pub(crate) fn new(
        deployer: Arc<Deployer>,
        scheduler: Arc<Scheduler>,
        settings: &AdminSettings,
    ) -> anyhow::Result<Admin> {
        let token = std::env::var(&settings.token_env).unwrap_or_default();
        if token.is_empty() {
            anyhow::bail!(
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
        Ok(Admin {
            token_digest: Sha256::digest(token.as_bytes()).into(),
            max_upload: settings.max_upload,
            deployer,
            scheduler,
        })
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

/// Serves the admin API on `listener` until `shutdown` resolves, then lets
/// requests in flight finish within `drain`.
pub(crate) async fn serve(
    listener: TcpListener,
    admin: Arc<Admin>,
    shutdown: impl Future<Output = ()>,
    drain: Duration,
) {
    listener::serve(
        "admin API",
        listener,
        HeadLimits {
            timeout: HEADER_TIMEOUT,
            max_bytes: None,
            max_headers: None,
        },
        Connections::new(ADMIN_CONNECTIONS, Arc::default()),
        move |req, _client| {
            let admin = Arc::clone(&admin);
            async move { handle(&admin, req).await }
        },
        shutdown,
        drain,
    )
    .await;
}

fn error(status: StatusCode, message: &str) -> Response<Full<Bytes>> {
    json(status, &json!({ "error": message }))
}

async fn handle(admin: &Admin, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let host = admin.deployer.host();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    match (&method, path.as_str()) {
        (&Method::GET, "/healthz") => return json(StatusCode::OK, &json!({"status": "ok"})),
        (&Method::GET, "/readyz") => {
            let deployment = host.deployments.current().id.clone();
            return if host.ready() {
                json(
                    StatusCode::OK,
                    &json!({"status": "ready", "deployment": deployment}),
                )
            } else {
                json(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &json!({"status": "shutting down"}),
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
    let components = admin.deployer.components();
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
            let current = host.deployments.current();
            let list: Vec<serde_json::Value> = host
                .deployments
                .kept()
                .iter()
                .map(|d| describe(d, Arc::ptr_eq(d, &current)))
                .collect();
            json(StatusCode::OK, &json!({ "deployments": list }))
        }
        (&Method::POST, "/v1/deployments" | "/v1/rollback", _) | (&Method::PUT, _, Some(_))
            if host.started_with.fleet.is_some() =>
        {
            let fleet = host.started_with.fleet.as_ref().map_or("", |f| f.name());
            error(
                StatusCode::CONFLICT,
                &format!("this host takes its deployments from fleet {fleet}: use `edgehost deploy --fleet {fleet}` or `edgehost rollback --fleet {fleet}`"),
            )
        }
        (&Method::POST, "/v1/deployments", _) => deploy(admin, req).await,
        (&Method::POST, "/v1/cache/purge", _) => purge(admin, req).await,
        (&Method::GET, "/v1/schedules", _) => json(StatusCode::OK, &admin.scheduler.listing()),
        (&Method::POST, "/v1/schedules/trigger", _) => trigger(admin, req).await,
        (&Method::POST, "/v1/rollback", _) => match admin.deployer.rollback().await {
            Ok(deployment) => json(StatusCode::OK, &describe(&deployment, true)),
            Err(reason) => error(StatusCode::CONFLICT, &reason),
        },
        (&Method::HEAD | &Method::GET, _, Some(hash)) if crate::control::is_hash(&hash) => {
            if components.has(&hash) {
                Response::new(Full::new(Bytes::new()))
            } else {
                error(StatusCode::NOT_FOUND, "no component with this hash")
            }
        }
        (&Method::PUT, _, Some(hash)) if crate::control::is_hash(&hash) => {
            upload(admin, hash, req).await
        }
        (_, _, Some(_)) => error(
            StatusCode::BAD_REQUEST,
            "components are addressed by their SHA-256 in lower-case hex",
        ),
        _ => error(StatusCode::NOT_FOUND, "no such admin endpoint"),
    }
}

fn describe(deployment: &Deployment, current: bool) -> serde_json::Value {
    json!({
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

/// Reads a body of at most `max_upload` bytes; the answer to give when it
/// cannot.
async fn read_body(admin: &Admin, req: Request<Incoming>) -> Result<Bytes, Response<Full<Bytes>>> {
    let limit = admin.max_upload;
    let (parts, body) = req.into_parts();
    read_limited(&parts.headers, body, limit)
        .await
        .map_err(|err| match err {
            BodyError::TooLarge => error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("the upload is over this host's max_upload of {limit} bytes"),
            ),
            BodyError::Unreadable(reason) => error(
                StatusCode::BAD_REQUEST,
                &format!("could not read the body: {reason}"),
            ),
        })
}

async fn upload(admin: &Admin, hash: String, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match read_body(admin, req).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let size = body.len();
    let components = admin.deployer.components().clone();
    let for_store = hash.clone();
    let stored = tokio::task::spawn_blocking(move || components.store(&for_store, &body))
        .await
        .unwrap_or_else(|err| Err(UploadError::Io(std::io::Error::other(err.to_string()))));
    match stored {
        Ok(()) => {
            tracing::info!("stored uploaded component {hash} ({size} bytes)");
            json(StatusCode::CREATED, &json!({ "component": hash }))
        }
        Err(err @ UploadError::WrongHash { .. }) => {
            error(StatusCode::BAD_REQUEST, &err.to_string())
        }
        Err(UploadError::Io(err)) => {
            tracing::error!("cannot store uploaded component {hash}: {err}");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot store the component",
            )
        }
    }
}

/// What a purge names: a URL path prefix or a `Cache-Tag` value.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Purge {
    prefix: Option<String>,
    tag: Option<String>,
}

/// `POST /v1/schedules/trigger {"path": "/api/tasks/cleanup"}`: runs that
/// path's schedule now and answers what the route answered.
async fn trigger(admin: &Admin, req: Request<Incoming>) -> Response<Full<Bytes>> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Trigger {
        path: String,
    }
    let body = match read_body(admin, req).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let path = match serde_json::from_slice::<Trigger>(&body) {
        Ok(Trigger { path }) => path,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the body is not {{\"path\": \"/...\"}}: {err}"),
            )
        }
    };
    match admin.scheduler.trigger(&path).await {
        Ok(called) => json(
            StatusCode::OK,
            &json!({
                "path": path,
                "status": called.status,
                "body": String::from_utf8_lossy(&called.body),
            }),
        ),
        Err(reason) => error(StatusCode::NOT_FOUND, &reason),
    }
}

async fn purge(admin: &Admin, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(cache) = admin.deployer.host().cache.clone() else {
        return error(
            StatusCode::CONFLICT,
            "the response cache is off on this host ([cache] enabled = false)",
        );
    };
    let body = match read_body(admin, req).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let purged = match serde_json::from_slice::<Purge>(&body) {
        Ok(Purge {
            prefix: Some(prefix),
            tag: None,
        }) if prefix.starts_with('/') => cache.purge_prefix(&super::edge::normalise(&prefix)),
        Ok(Purge {
            prefix: None,
            tag: Some(tag),
        }) if !tag.is_empty() => cache.purge_tag(&tag),
        Ok(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "name one of `prefix` (a URL path starting with /) or `tag`",
            )
        }
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the body is not a purge request: {err}"),
            )
        }
    };
    cache.metrics.count_purged(purged);
    tracing::info!("admin purge dropped {purged} cached answers");
    json(StatusCode::OK, &json!({ "purged": purged }))
}

async fn deploy(admin: &Admin, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let body = match read_body(admin, req).await {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let request: DeployRequest = match serde_json::from_slice(&body) {
        // Ids are the host's to give.
        Ok(request) => DeployRequest {
            id: None,
            ..request
        },
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("the body is not a deploy request: {err}"),
            )
        }
    };
    let file = request.file.clone();
    match admin.deployer.deploy(request).await {
        Ok((deployment, warnings)) => {
            let mut answer = describe(&deployment, true);
            answer["warnings"] = json!(warnings);
            json(StatusCode::OK, &answer)
        }
        Err(errors) => json(
            StatusCode::UNPROCESSABLE_ENTITY,
            &json!({
                "error": format!(
                    "{file} was not deployed; the host still serves deployment {}",
                    admin.deployer.host().deployments.current().id
                ),
                "errors": errors,
            }),
        ),
    }
}
