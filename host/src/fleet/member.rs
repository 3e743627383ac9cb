//! A host in a fleet: it prepares what deploys ask it to, serves what the
//! fleet's pointer names, and says every [`HEARTBEAT_EVERY`] that it is
//! alive and what it serves.
//!
//! The pointer is watched (a JetStream key-value watch, which gives the
//! current value first, so a late or restarted host needs nothing more)
//! and read again with every heartbeat, so a missed change is caught
//! within a second. With NATS unreachable the host keeps serving what it
//! has; the NATS client reconnects by itself and the host catches up.

use super::bus::{self, Bus, Heartbeat, PrepareReply, PrepareRequest, HEARTBEAT_EVERY};
use crate::control::{Deployer, Prepared};
use futures_util::StreamExt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Deployments a host keeps prepared, waiting for the pointer to move.
const KEPT_PREPARED: usize = 4;
/// How soon a host tries again to serve a deployment it could not.
const RETRY_FAILED: Duration = Duration::from_secs(30);

/// This host, as a member of its fleet.
pub(crate) struct Member {
    fleet: String,
    /// The NATS URL (never logged) and the variable it came from (logged).
    url: String,
    url_env: String,
    /// Its name in the fleet: the machine's name and the public port.
    name: String,
    listen: SocketAddr,
    admin: Option<SocketAddr>,
    deployer: Arc<Deployer>,
    /// Deployments prepared on a deploy's request, newest last.
    prepared: Mutex<Vec<(String, Prepared)>>,
    /// Held while catching up with the pointer: one switch at a time.
    switching: tokio::sync::Mutex<()>,
    /// Why the host does not serve the fleet's current deployment.
    problem: Mutex<Option<String>>,
    /// The deployment it last failed to serve, and when.
    failed: Mutex<Option<(String, Instant)>>,
    /// Whether NATS answered last time (to log changes once).
    reachable: AtomicBool,
}

/// The name a host goes by in its fleet: the machine's name and its public
/// port, in the characters a key may hold.
pub(crate) fn host_name(listen: SocketAddr) -> String {
    let machine: String = bus::machine_name()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let machine = if machine.is_empty() {
        "host".into()
    } else {
        machine
    };
    format!("{machine}-{}", listen.port())
}

/// A watch of the pointer (its current value first), if NATS gives one in
/// time; without one, the heartbeat's reading of the pointer does.
async fn watch_pointer(bus: &Bus) -> Option<async_nats::jetstream::kv::Watch> {
    tokio::time::timeout(
        bus::NATS_TIMEOUT,
        bus.deployments.watch_with_history("current"),
    )
    .await
    .ok()?
    .ok()
}

impl Member {
    pub(crate) fn new(
        fleet: String,
        (url, url_env): (String, String),
        listen: SocketAddr,
        admin: Option<SocketAddr>,
        deployer: Arc<Deployer>,
    ) -> Member {
        Member {
            fleet,
            url,
            url_env,
            name: host_name(listen),
            listen,
            admin,
            deployer,
            prepared: Mutex::new(Vec::new()),
            switching: tokio::sync::Mutex::new(()),
            problem: Mutex::new(None),
            failed: Mutex::new(None),
            reachable: AtomicBool::new(true),
        }
    }

    /// Joins the fleet before the host says it is ready: serves the
    /// fleet's current deployment if NATS answers, else the last fleet
    /// deployment this host recorded; then keeps following the fleet in
    /// the background.
    pub(crate) async fn join(self: &Arc<Self>) {
        let bus = match self.open().await {
            Ok(bus) => {
                tracing::info!(fleet = %self.fleet, "joined fleet {} as {}", self.fleet, self.name);
                self.catch_up(&bus).await;
                Some(bus)
            }
            Err(err) => {
                self.reachable.store(false, Ordering::Relaxed);
                tracing::warn!(
                    fleet = %self.fleet,
                    "{err}; serving the last deployment this host recorded until NATS is back"
                );
                self.deployer.resume().await;
                None
            }
        };
        tokio::spawn(Arc::clone(self).follow(bus));
    }

    async fn open(&self) -> anyhow::Result<Bus> {
        let client = bus::connect(&self.url, &self.url_env).await?;
        Bus::open(client, &self.fleet).await
    }

    /// Follows the fleet for as long as the host runs.
    async fn follow(self: Arc<Self>, mut bus: Option<Bus>) {
        loop {
            let open = match bus.take() {
                Some(open) => open,
                None => match self.open().await {
                    Ok(open) => {
                        self.reached(true, "");
                        self.catch_up(&open).await;
                        open
                    }
                    Err(err) => {
                        self.reached(false, &err.to_string());
                        tokio::time::sleep(HEARTBEAT_EVERY).await;
                        continue;
                    }
                },
            };
            if let Err(err) = Arc::clone(&self).listen(&open).await {
                self.reached(false, &err.to_string());
                tokio::time::sleep(HEARTBEAT_EVERY).await;
            }
            // The client reconnects by itself: keep it.
            bus = Some(open);
        }
    }

    /// Logs NATS going away or coming back, once each.
    fn reached(&self, now: bool, why: &str) {
        if self.reachable.swap(now, Ordering::Relaxed) != now {
            if now {
                tracing::info!(fleet = %self.fleet, "fleet {}: NATS answers again", self.fleet);
            } else {
                tracing::warn!(
                    fleet = %self.fleet,
                    "fleet {}: {why}; serving deployment {} until NATS is back",
                    self.fleet,
                    self.deployer.host().deployments.current().id
                );
            }
        }
    }

    /// Answers prepare requests, watches the pointer and beats, until a
    /// subscription ends.
    async fn listen(self: Arc<Self>, bus: &Bus) -> anyhow::Result<()> {
        let mut requests = bus
            .client
            .subscribe(bus.prepare_subject())
            .await
            .map_err(|err| anyhow::anyhow!("subscribe to prepare requests: {err}"))?;
        let mut watch = watch_pointer(bus).await;
        let mut tick = tokio::time::interval(HEARTBEAT_EVERY);
        loop {
            tokio::select! {
                message = requests.next() => {
                    let Some(message) = message else {
                        anyhow::bail!("the prepare subscription ended");
                    };
                    let member = Arc::clone(&self);
                    let bus = bus.clone();
                    tokio::spawn(async move { member.answer(&bus, message).await });
                }
                entry = async { watch.as_mut()?.next().await }, if watch.is_some() => {
                    match entry {
                        Some(Ok(_)) => {
                            let member = Arc::clone(&self);
                            let bus = bus.clone();
                            tokio::spawn(async move { member.catch_up(&bus).await });
                        }
                        _ => watch = None,
                    }
                }
                _ = tick.tick() => {
                    match self.beat(bus).await {
                        Ok(()) => self.reached(true, ""),
                        Err(err) => self.reached(false, &err.to_string()),
                    }
                    let member = Arc::clone(&self);
                    let catch_up = bus.clone();
                    tokio::spawn(async move { member.catch_up(&catch_up).await });
                    if watch.is_none() {
                        watch = watch_pointer(bus).await;
                    }
                }
            }
        }
    }

    /// Publishes this host's heartbeat.
    async fn beat(&self, bus: &Bus) -> anyhow::Result<()> {
        let problem = self
            .problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        bus.beat(&Heartbeat {
            name: self.name.clone(),
            listen: self.listen.to_string(),
            admin: self.admin.map(|a| a.to_string()),
            deployment: self.deployer.host().deployments.current().id.clone(),
            problem,
        })
        .await
    }

    /// Answers one prepare request: on it, then ready or why not.
    async fn answer(&self, bus: &Bus, message: async_nats::Message) {
        let Some(reply) = message.reply.clone() else {
            return;
        };
        let send = |done: bool, errors: Vec<String>| {
            let reply = reply.clone();
            let answer = PrepareReply {
                host: self.name.clone(),
                done,
                errors,
            };
            async move {
                let body = serde_json::to_vec(&answer).unwrap_or_default();
                if let Err(err) = bus.client.publish(reply, body.into()).await {
                    tracing::warn!("could not answer a prepare request: {err}");
                }
                let _ = bus.client.flush().await;
            }
        };
        let request: PrepareRequest = match serde_json::from_slice(&message.payload) {
            Ok(request) => request,
            Err(err) => {
                send(true, vec![format!("not a prepare request: {err}")]).await;
                return;
            }
        };
        send(false, Vec::new()).await;
        let errors = match self.prepare(bus, &request.id).await {
            Ok(prepared) => {
                let mut kept = self.prepared.lock().unwrap_or_else(|p| p.into_inner());
                kept.retain(|(id, _)| *id != request.id);
                kept.push((request.id.clone(), prepared));
                let excess = kept.len().saturating_sub(KEPT_PREPARED);
                kept.drain(..excess);
                Vec::new()
            }
            Err(errors) => errors,
        };
        if errors.is_empty() {
            tracing::info!(fleet = %self.fleet, "prepared fleet deployment {}", request.id);
        }
        send(true, errors).await;
    }

    /// Fetches deployment `id`'s record and the components this host
    /// lacks, then validates and compiles it.
    async fn prepare(&self, bus: &Bus, id: &str) -> Result<Prepared, Vec<String>> {
        let on_host = |err: anyhow::Error| vec![format!("{err:#}")];
        let record = bus.record(id).await.map_err(on_host)?;
        let store = self.deployer.components().clone();
        for hash in record.request.components.values() {
            if store.find(hash).is_some() {
                continue;
            }
            let bytes = bus.component(hash).await.map_err(on_host)?;
            let (store, hash) = (store.clone(), hash.clone());
            tokio::task::spawn_blocking(move || store.store(&hash, &bytes))
                .await
                .map_err(|err| vec![format!("storing a component stopped: {err}")])?
                .map_err(|err| vec![format!("component from the fleet: {err}")])?;
        }
        let mut request = record.request;
        request.id = Some(id.to_string());
        self.deployer.prepare(request).await
    }

    /// Serves the deployment the pointer names, if it is not already.
    async fn catch_up(&self, bus: &Bus) {
        let Ok(_switching) = self.switching.try_lock() else {
            // Another catch-up is on it; the next heartbeat looks again.
            return;
        };
        let pointer = match bus.pointer().await {
            Ok(Some((pointer, _))) => pointer,
            Ok(None) => return,
            Err(err) => {
                self.reached(false, &err.to_string());
                return;
            }
        };
        if self.deployer.host().deployments.current().id == pointer.id {
            self.set_problem(None);
            return;
        }
        let tried = self
            .failed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if let Some((id, when)) = tried {
            if id == pointer.id && when.elapsed() < RETRY_FAILED {
                return;
            }
        }
        let ready = {
            let mut kept = self.prepared.lock().unwrap_or_else(|p| p.into_inner());
            kept.iter()
                .position(|(id, _)| *id == pointer.id)
                .map(|at| kept.remove(at).1)
        };
        let prepared = match ready {
            Some(prepared) => Ok(prepared),
            None => self.prepare(bus, &pointer.id).await,
        };
        match prepared {
            Ok(prepared) => {
                self.deployer
                    .activate(prepared, Some(pointer.id.clone()))
                    .await;
                self.set_problem(None);
                if let Err(err) = self.beat(bus).await {
                    self.reached(false, &err.to_string());
                }
            }
            Err(errors) => {
                let problem = format!(
                    "cannot serve fleet deployment {}: {}",
                    pointer.id,
                    errors.join("; ")
                );
                let repeated = self
                    .problem
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_deref()
                    == Some(problem.as_str());
                if !repeated {
                    tracing::error!(fleet = %self.fleet, "{problem}");
                }
                self.set_problem(Some(problem));
                *self.failed.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((pointer.id.clone(), Instant::now()));
            }
        }
    }

    fn set_problem(&self, problem: Option<String>) {
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = problem;
    }
}
