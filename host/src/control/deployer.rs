//! Deploys, rollbacks and resumes made through the admin API or a fleet: a
//! deploy is checked against the uploaded components and the secrets
//! deploys may use, swapped in, recorded for `serve --resume`, and followed
//! by garbage collection. A fleet prepares first ([`Deployer::prepare`]) and
//! swaps in when its pointer moves ([`Deployer::activate`]).

use super::components::ComponentStore;
use super::deployments::{Deployment, Turn};
use super::gc::Collector;
use super::host::Host;
use super::record::{DeployRequest, Record};
use crate::manifest::{self, Lookup, Secret};
use crate::runtime::RouteTable;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

/// Changes what a host serves on the admin API's behalf.
pub(crate) struct Deployer {
    host: Arc<Host>,
    components: ComponentStore,
    /// Host environment variables a deployed manifest may use as secrets.
    deploy_secrets: Arc<BTreeSet<String>>,
    /// What each kept deployment made through this API was made from, by
    /// deployment id: a rollback records it as what to resume.
    requests: Mutex<BTreeMap<String, Arc<DeployRequest>>>,
    /// The deployment `serve --resume` brings back.
    record: Record,
    collector: Collector,
    /// One admin deploy at a time, from its migrations to its swap: two
    /// racing deploys cannot migrate in one order and swap in the other.
    applying: tokio::sync::Mutex<()>,
}

/// A deployment made, with warnings about settings that need a restart.
pub(crate) type Deployed = (Arc<Deployment>, Vec<String>);

/// A deploy request validated and compiled, not yet served.
pub(crate) struct Prepared {
    request: Arc<DeployRequest>,
    table: RouteTable,
    warnings: Vec<String>,
}

impl Deployer {
    /// Deploys to `host` with the data under `data_dir`; deploys may use
    /// the secrets `deploy_secrets` lists.
    pub(crate) fn new(
        host: Arc<Host>,
        deploy_secrets: Option<&Vec<String>>,
        data_dir: &Path,
    ) -> Deployer {
        // Without a list, deploys may use the secrets the host started with:
        // the admin token must not open the whole host environment.
        let deploy_secrets = match deploy_secrets {
            Some(names) => names.iter().cloned().collect(),
            None => host
                .started_with
                .routes
                .iter()
                .flat_map(|route| route.secrets.iter().cloned())
                .collect(),
        };
        let pinned = host
            .deployments
            .current()
            .table
            .routes()
            .iter()
            .filter_map(|route| route.compiled.clone())
            .collect();
        let components = ComponentStore::new(data_dir.join("components"));
        Deployer {
            collector: Collector {
                components: components.dir().clone(),
                compiled: data_dir.join("compiled"),
                pinned,
            },
            components,
            host,
            deploy_secrets: Arc::new(deploy_secrets),
            requests: Mutex::new(BTreeMap::new()),
            applying: tokio::sync::Mutex::new(()),
            record: Record::new(data_dir.join("deployment.json")),
        }
    }

    pub(crate) fn host(&self) -> &Arc<Host> {
        &self.host
    }

    pub(crate) fn components(&self) -> &ComponentStore {
        &self.components
    }

    /// Validates, compiles and swaps in a deploy request, records it as what
    /// `serve --resume` brings back, and collects garbage; or says why not.
    pub(crate) async fn deploy(&self, request: DeployRequest) -> Result<Deployed, Vec<String>> {
        self.apply(request).await
    }

    /// Back to the deployment before the current one, recorded for a resume.
    pub(crate) async fn rollback(&self) -> Result<Arc<Deployment>, String> {
        let turn = self.host.deployments.turn().await;
        let deployment = turn.rollback()?;
        self.record(&turn, &deployment).await;
        self.collector.collect(&self.host.deployments).await;
        Ok(deployment)
    }

    /// `serve --resume`: brings back the last deployment recorded in the
    /// data dir. If there is none, or it no longer loads (a secret gone, a
    /// component deleted), the host serves its command line's manifest and
    /// says why.
    pub(crate) async fn resume(&self) {
        let request = match self.record.read() {
            Ok(Some(request)) => request,
            Ok(None) => {
                tracing::info!(
                    "--resume: no deployment recorded in {}; serving the manifest",
                    self.record.file().display()
                );
                return;
            }
            Err(reason) => {
                tracing::error!("--resume: {reason}");
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

    /// Checks `request` against the uploaded components and the deploy
    /// secrets, swaps it in and records it.
    async fn apply(&self, request: DeployRequest) -> Result<Deployed, Vec<String>> {
        let _one_at_a_time = self.applying.lock().await;
        let prepared = self.prepare(request).await?;
        let id = prepared.request.id.clone();
        Ok(self.activate(prepared, id).await)
    }

    /// Checks `request` against the uploaded components and the deploy
    /// secrets and compiles it, without serving it.
    pub(crate) async fn prepare(&self, request: DeployRequest) -> Result<Prepared, Vec<String>> {
        let request = Arc::new(request);
        let for_parse = Arc::clone(&request);
        let components = self.components.clone();
        let allowed = Arc::clone(&self.deploy_secrets);
        let (table, warnings) = self
            .host
            .prepare(&source_of(&request), move || {
                let request = for_parse;
                let file = Path::new(&request.file);
                manifest::check(
                    file,
                    &request.manifest,
                    &Lookup {
                        base: manifest::base_of(file),
                        secret: &|name| {
                            if !allowed.contains(name) {
                                return Secret::NotDeployable;
                            }
                            std::env::var(name).map_or(Secret::Missing, Secret::Value)
                        },
                        component: &|written| components.find(request.components.get(written)?),
                        discover: &|_, _| Ok(request.folder_routes.clone()),
                        migrations: &|dir| {
                            request.migrations.get(dir).cloned().ok_or_else(|| {
                                format!("the deploy carries no migrations folder {dir}")
                            })
                        },
                    },
                )
            })
            .await?;
        Ok(Prepared {
            request,
            table,
            warnings,
        })
    }

    /// Serves `prepared` (as deployment `id` when given), records it for a
    /// resume and collects garbage.
    pub(crate) async fn activate(&self, prepared: Prepared, id: Option<String>) -> Deployed {
        let Prepared {
            request,
            table,
            warnings,
        } = prepared;
        let turn = self.host.deployments.turn().await;
        let deployment = turn.activate_as(table, source_of(&request), id);
        if let Ok(mut requests) = self.requests.lock() {
            let kept: BTreeSet<String> = self
                .host
                .deployments
                .kept()
                .iter()
                .map(|d| d.id.clone())
                .collect();
            requests.retain(|id, _| kept.contains(id));
            requests.insert(deployment.id.clone(), Arc::clone(&request));
        }
        self.record(&turn, &deployment).await;
        drop(turn);
        self.collector.collect(&self.host.deployments).await;
        (deployment, warnings)
    }

    /// Records `deployment` as what `serve --resume` brings back: its deploy
    /// request, or nothing (the command line's manifest) for the deployment
    /// the host started with. Takes the turn so that the record is always
    /// of the deployment being served.
    async fn record(&self, _turn: &Turn<'_>, deployment: &Deployment) {
        let request = self
            .requests
            .lock()
            .ok()
            .and_then(|requests| requests.get(&deployment.id).cloned());
        if let Err(err) = self.record.write(request.as_deref()).await {
            tracing::warn!(
                "could not record deployment {} for --resume in {}: {err}",
                deployment.id,
                self.record.file().display()
            );
        }
    }
}

/// What a deployment says it came from, in logs and listings.
fn source_of(request: &DeployRequest) -> String {
    match &request.id {
        Some(id) => format!("fleet deployment {id} of {}", request.file),
        None => format!("deploy of {}", request.file),
    }
}
