//! What is served: the current [`Deployment`] (an immutable route table,
//! swapped atomically), the ones kept for `rollback`, and the lock that
//! makes deploys, reloads and rollbacks take turns. A change can only be
//! made while holding a [`Turn`].

use crate::edge::ResponseCache;
use crate::metrics::{Activation, Metrics};
use crate::runtime::RouteTable;
use arc_swap::ArcSwap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Deployments kept for `rollback`, the current one included.
const KEPT_DEPLOYMENTS: usize = 10;

/// One route table and where it came from.
pub(crate) struct Deployment {
    /// `1` for the table the host started with, then counting up; in a
    /// fleet, the fleet-wide id (`local` for the command line's table).
    pub(crate) id: String,
    /// What made it: the manifest file at start, a deploy, a reload.
    pub(crate) source: String,
    pub(crate) created: SystemTime,
    pub(crate) table: RouteTable,
}

/// The current deployment and the kept ones.
pub(crate) struct Deployments {
    current: ArcSwap<Deployment>,
    /// Kept deployments, oldest first; the last is the current one.
    history: Mutex<Vec<Arc<Deployment>>>,
    next_id: AtomicU64,
    /// Held by whoever is changing what is served.
    turn: tokio::sync::Mutex<()>,
    metrics: Arc<Metrics>,
    /// Drops the entries of routes a new deployment changed.
    cache: Option<Arc<ResponseCache>>,
}

/// The right to change what is served, one holder at a time: a deploy
/// validates, compiles and swaps before the next one starts.
pub(crate) struct Turn<'a> {
    deployments: &'a Deployments,
    _held: tokio::sync::MutexGuard<'a, ()>,
}

impl Deployments {
    /// Serving `table` (deployment `id`) from `source`.
    pub(crate) fn new(
        table: RouteTable,
        id: &str,
        source: String,
        metrics: Arc<Metrics>,
        cache: Option<Arc<ResponseCache>>,
    ) -> Deployments {
        let first = Arc::new(Deployment {
            id: id.into(),
            source,
            created: SystemTime::now(),
            table,
        });
        metrics.deployed(&first.id, Activation::Start);
        Deployments {
            current: ArcSwap::new(Arc::clone(&first)),
            history: Mutex::new(vec![first]),
            next_id: AtomicU64::new(2),
            turn: tokio::sync::Mutex::new(()),
            metrics,
            cache,
        }
    }

    /// Makes `deployment` the one new requests see; the cache keeps only
    /// the entries of routes it serves unchanged.
    fn make_current(&self, deployment: &Arc<Deployment>) {
        self.current.store(Arc::clone(deployment));
        if let Some(cache) = &self.cache {
            let routes = deployment
                .table
                .routes()
                .iter()
                .map(|route| route.fingerprint)
                .collect();
            let dropped = cache.keep_routes(&routes);
            cache.metrics.count_purged(dropped);
            if dropped > 0 {
                tracing::info!(
                    deployment = %deployment.id,
                    "dropped {dropped} cached answers of routes this deployment changed"
                );
            }
        }
    }

    /// The deployment new requests are served from.
    pub(crate) fn current(&self) -> Arc<Deployment> {
        self.current.load_full()
    }

    /// Kept deployments, oldest first (the last is current).
    pub(crate) fn kept(&self) -> Vec<Arc<Deployment>> {
        self.history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits until no one else is changing what is served.
    pub(crate) async fn turn(&self) -> Turn<'_> {
        Turn {
            _held: self.turn.lock().await,
            deployments: self,
        }
    }
}

impl Turn<'_> {
    /// Makes `table` the one new requests see, as the next deployment id.
    /// Requests already running finish on the table they started with.
    pub(crate) fn activate(&self, table: RouteTable, source: String) -> Arc<Deployment> {
        self.activate_as(table, source, None)
    }

    /// [`Turn::activate`], named `id` (a fleet's id) when given.
    pub(crate) fn activate_as(
        &self,
        table: RouteTable,
        source: String,
        id: Option<String>,
    ) -> Arc<Deployment> {
        let deployments = self.deployments;
        let id = id.unwrap_or_else(|| {
            deployments
                .next_id
                .fetch_add(1, Ordering::Relaxed)
                .to_string()
        });
        let deployment = Arc::new(Deployment {
            id,
            source,
            created: SystemTime::now(),
            table,
        });
        let mut history = deployments
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        history.push(Arc::clone(&deployment));
        let excess = history.len().saturating_sub(KEPT_DEPLOYMENTS);
        history.drain(..excess);
        deployments.make_current(&deployment);
        deployments
            .metrics
            .deployed(&deployment.id, Activation::Deploy);
        tracing::info!(
            deployment = %deployment.id,
            "now serving {} routes from {}",
            deployment.table.routes().len(),
            deployment.source
        );
        deployment
    }

    /// Goes back to the deployment before the current one, or says why not.
    pub(crate) fn rollback(&self) -> Result<Arc<Deployment>, String> {
        let deployments = self.deployments;
        let mut history = deployments
            .history
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let nothing = || "there is no earlier deployment to roll back to".to_string();
        if history.len() < 2 {
            return Err(nothing());
        }
        let left = history.pop();
        let previous = history.last().cloned().ok_or_else(nothing)?;
        deployments.make_current(&previous);
        deployments
            .metrics
            .deployed(&previous.id, Activation::Rollback);
        tracing::info!(
            deployment = %previous.id,
            "rolled back from deployment {}; serving {} routes from {}",
            left.map_or_else(String::new, |d| d.id.clone()),
            previous.table.routes().len(),
            previous.source
        );
        Ok(previous)
    }
}
