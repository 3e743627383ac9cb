//! Scheduled calls (`[[schedule]]`): at each tick of a schedule of the
//! current deployment the host calls its route as a request, with the
//! same limits, grants, metrics and request id, and two headers no client
//! can send (the public listener drops client copies):
//!
//! | header | value |
//! | --- | --- |
//! | `x-edge-scheduled` | the schedule's cron pattern, or `trigger` for `edgehost trigger` |
//! | `x-edge-scheduled-at` | the tick's time, in Unix seconds |
//!
//! Ticks are computed from now when the host starts and after each call:
//! a tick missed while no host ran (or while the host was stalled) is not
//! run later. In a fleet each tick is claimed first ([`TickClaims`]), so
//! only one host runs it; when the claim cannot be made (NATS is down) the
//! tick is skipped and logged rather than run twice.

use super::body::HostBody;
use super::edge::{run_guest, Guests};
use super::request_id::RequestIds;
use crate::control::{Host, TickClaims};
use crate::manifest::ScheduleSpec;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::header::{self, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Marks a scheduled call: the schedule's pattern, or `trigger`.
pub(crate) const SCHEDULED: &str = "x-edge-scheduled";
/// The scheduled call's tick, in Unix seconds.
pub(crate) const SCHEDULED_AT: &str = "x-edge-scheduled-at";

/// The longest the loop sleeps before it looks at the deployment again.
const LOOK_AGAIN: Duration = Duration::from_secs(1);

/// Most bytes of a triggered call's answer the trigger reports.
const MAX_REPORTED: usize = 64 * 1024;

/// What a scheduled or triggered call answered.
pub(crate) struct Called {
    pub(crate) status: u16,
    /// Its body, the first [`MAX_REPORTED`] bytes of it.
    pub(crate) body: Bytes,
}

/// Runs the current deployment's schedules.
pub(crate) struct Scheduler {
    guests: Guests,
    ids: RequestIds,
    claims: Option<Arc<dyn TickClaims>>,
}

impl Scheduler {
    /// The scheduler of `host`; in a fleet, ticks are claimed with `claims`.
    pub(crate) fn new(host: Arc<Host>, claims: Option<Arc<dyn TickClaims>>) -> Scheduler {
        Scheduler {
            guests: Guests::new(host),
            ids: RequestIds::new(),
            claims,
        }
    }

    /// The current deployment's schedules and the next tick of each, for
    /// the admin API.
    pub(crate) fn listing(&self) -> serde_json::Value {
        let deployment = self.guests.host.deployments.current();
        let now = Utc::now();
        let list: Vec<serde_json::Value> = deployment
            .table
            .schedules()
            .iter()
            .map(|s| {
                let next = s.next_after(&now);
                serde_json::json!({
                    "cron": s.cron(),
                    "method": s.method(),
                    "path": s.path(),
                    "next": next.map(|t| t.to_rfc3339()),
                    "next_unix": next.map(|t| t.timestamp()),
                })
            })
            .collect();
        serde_json::json!({ "schedules": list })
    }

    /// Calls each schedule's route at its ticks until `stop` resolves.
    pub(crate) async fn run(self: Arc<Self>, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        let mut due: HashMap<String, DateTime<Utc>> = HashMap::new();
        loop {
            let deployment = self.guests.host.deployments.current();
            let schedules = deployment.table.schedules();
            let now = Utc::now();
            let keys: Vec<String> = schedules.iter().map(ScheduleSpec::key).collect();
            due.retain(|key, _| keys.contains(key));
            let mut soonest: Option<DateTime<Utc>> = None;
            for (schedule, key) in schedules.iter().zip(keys) {
                let at = match due.get(&key) {
                    Some(at) => *at,
                    None => match schedule.next_after(&now) {
                        Some(at) => *due.entry(key.clone()).or_insert(at),
                        None => continue,
                    },
                };
                if at <= now {
                    let scheduler = Arc::clone(&self);
                    let fired = schedule.clone();
                    tokio::spawn(async move { scheduler.tick(&fired, at).await });
                    match schedule.next_after(&now) {
                        Some(next) => due.insert(key.clone(), next),
                        None => due.remove(&key),
                    };
                }
                if let Some(next) = due.get(&key) {
                    soonest = Some(soonest.map_or(*next, |s| s.min(*next)));
                }
            }
            let wait = soonest
                .and_then(|at| (at - now).to_std().ok())
                .map_or(LOOK_AGAIN, |wait| wait.min(LOOK_AGAIN));
            tokio::select! {
                () = tokio::time::sleep(wait + Duration::from_millis(1)) => {}
                () = &mut stop => return,
            }
        }
    }

    /// One tick: claimed (in a fleet), then called.
    async fn tick(&self, schedule: &ScheduleSpec, at: DateTime<Utc>) {
        if let Some(claims) = &self.claims {
            let digest = Sha256::digest(schedule.key().as_bytes());
            let name: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            let tick = format!("{name}.{}", at.timestamp());
            match claims.claim(&tick).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::debug!(schedule = %schedule.key(), "tick {at} runs on another host");
                    return;
                }
                Err(reason) => {
                    tracing::warn!(
                        schedule = %schedule.key(),
                        "tick {at} skipped: the fleet cannot tell which host runs it: {reason}"
                    );
                    return;
                }
            }
        }
        // Its answer is logged, as a request's is; nobody else reads it.
        let _ = self.call(schedule, schedule.cron(), at.timestamp()).await;
    }

    /// Runs `path`'s schedule now (the first that calls it), as
    /// `edgehost trigger` does; the reason when there is none.
    pub(crate) async fn trigger(&self, path: &str) -> Result<Called, String> {
        let deployment = self.guests.host.deployments.current();
        let schedule = deployment
            .table
            .schedules()
            .iter()
            .find(|s| s.path() == path)
            .cloned()
            .ok_or_else(|| format!("no [[schedule]] of the current deployment calls {path}"))?;
        self.call(&schedule, "trigger", Utc::now().timestamp())
            .await
    }

    /// Calls `schedule`'s route as a request marked `label`.
    async fn call(&self, schedule: &ScheduleSpec, label: &str, at: i64) -> Result<Called, String> {
        let started = Instant::now();
        let deployment = self.guests.host.deployments.current();
        let (route, params) = deployment
            .table
            .lookup(schedule.path())
            .map_err(|err| err.to_string())?
            .ok_or_else(|| format!("no route answers {}", schedule.path()))?;
        let mut req = Request::builder()
            .method(schedule.method.clone())
            .uri(schedule.path())
            .header(header::HOST, "localhost")
            .body(Empty::<Bytes>::new())
            .map_err(|err| format!("cannot make the request: {err}"))?;
        let headers = req.headers_mut();
        if let Ok(value) = HeaderValue::from_str(label) {
            headers.insert(SCHEDULED, value);
        }
        headers.insert(SCHEDULED_AT, HeaderValue::from(at));
        let id = self.ids.for_request(req.headers());
        let answer = run_guest(&self.guests, route, params, req, "scheduler", &id).await;
        let response: Response<HostBody> =
            answer.unwrap_or_else(|answer| super::body::boxed(answer.into_response()));
        let status = response.status().as_u16();
        let body = read_reported(response.into_body()).await;
        let elapsed = started.elapsed();
        route.metrics.record(&schedule.method, status, elapsed);
        tracing::info!(
            request_id = %id,
            route = %route.name,
            "scheduled {} {} ({label}): {status} in {:.1} ms",
            schedule.method,
            schedule.path(),
            elapsed.as_secs_f64() * 1000.0
        );
        Ok(Called { status, body })
    }
}

/// The first [`MAX_REPORTED`] bytes of `body`, the rest read and dropped
/// (a streamed answer runs to its end).
async fn read_reported(mut body: HostBody) -> Bytes {
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        if let Ok(data) = frame.into_data() {
            let room = MAX_REPORTED.saturating_sub(kept.len());
            kept.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    Bytes::from(kept)
}
