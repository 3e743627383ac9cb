//! A fleet's state in NATS JetStream, and the records kept there. For the
//! fleet `F`:
//!
//! | where | what |
//! | --- | --- |
//! | key-value bucket `edgehost-F-deployments`, key `current` | the [`Pointer`]: the deployment every host serves, moved by compare-and-swap |
//! | same bucket, key `next-id` | the last fleet-wide deployment id given |
//! | same bucket, keys `deployment.<id>` | each [`DeploymentRecord`]: manifest text, component hashes, who and when |
//! | object store `edgehost-F-components` | components, each named by its SHA-256 |
//! | key-value bucket `edgehost-F-hosts` (age limit [`HEARTBEAT_AGE`]) | each live host's [`Heartbeat`] |
//! | subject `edgehost.F.prepare` | a deploy asks every live host to prepare a deployment ([`PrepareReply`]) |
//! | key-value bucket `edgehost-F-ticks` (age limit [`TICK_AGE`]) | one key per schedule tick, created by the host that runs it |

use crate::control::DeployRequest;
use async_nats::jetstream::{self, kv, object_store};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncReadExt;

/// How often a host says it is alive.
pub(crate) const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);
/// How long a heartbeat counts: a host silent this long drops out.
pub(crate) const HEARTBEAT_AGE: Duration = Duration::from_secs(5);
/// How long a NATS call may take before the fleet counts as unreachable.
pub(crate) const NATS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a claimed tick is remembered: far longer than any two hosts'
/// clocks disagree.
pub(crate) const TICK_AGE: Duration = Duration::from_secs(3600);
/// Deployments a pointer remembers for rollbacks.
const POINTER_HISTORY: usize = 20;

/// The fleet's `current` key: what every host serves, and what it served
/// before (oldest first), for rollbacks.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Pointer {
    pub(crate) id: String,
    #[serde(default)]
    pub(crate) history: Vec<String>,
}

impl Pointer {
    /// The pointer after deploying `id` on top of `self`.
    pub(crate) fn then(&self, id: &str) -> Pointer {
        let mut history = self.history.clone();
        if !self.id.is_empty() {
            history.push(self.id.clone());
        }
        let excess = history.len().saturating_sub(POINTER_HISTORY);
        history.drain(..excess);
        Pointer {
            id: id.to_string(),
            history,
        }
    }

    /// The pointer after rolling back, or `None` when there is nothing
    /// before the current deployment.
    pub(crate) fn back(&self) -> Option<Pointer> {
        let mut history = self.history.clone();
        let id = history.pop()?;
        Some(Pointer { id, history })
    }
}

/// One fleet deployment: what hosts load, and who made it when.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DeploymentRecord {
    pub(crate) id: String,
    pub(crate) request: DeployRequest,
    /// `user@machine` of the client that deployed it.
    pub(crate) by: String,
    /// When, in seconds since 1970.
    pub(crate) at_unix: u64,
}

/// What a host says of itself every [`HEARTBEAT_EVERY`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Heartbeat {
    pub(crate) name: String,
    /// Its public listener.
    pub(crate) listen: String,
    /// Its admin API, when on.
    pub(crate) admin: Option<String>,
    /// The deployment it serves.
    pub(crate) deployment: String,
    /// Why it does not serve the fleet's current deployment, if it cannot.
    #[serde(default)]
    pub(crate) problem: Option<String>,
}

/// A host's answer to a prepare request: first `done: false` (it is on
/// it), then `done: true` with the reasons it cannot serve the deployment
/// (none: ready).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PrepareReply {
    pub(crate) host: String,
    pub(crate) done: bool,
    #[serde(default)]
    pub(crate) errors: Vec<String>,
}

/// What a prepare request asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PrepareRequest {
    pub(crate) id: String,
}

/// The machine's name, as the kernel has it (empty if unknown).
pub(crate) fn machine_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|name| name.trim().to_string())
        .unwrap_or_default()
}

/// Seconds since 1970, now.
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Connects to the NATS server at `url`, failing within [`NATS_TIMEOUT`].
/// The URL is never shown (it may hold credentials); `shown` names it.
pub(crate) async fn connect(url: &str, shown: &str) -> anyhow::Result<async_nats::Client> {
    let options = async_nats::ConnectOptions::new()
        .connection_timeout(NATS_TIMEOUT)
        .request_timeout(Some(NATS_TIMEOUT))
        .max_reconnects(None)
        // Back soon after NATS is: 0.1 s, 0.2 s, ... at most 1 s apart.
        .reconnect_delay_callback(|attempts| {
            Duration::from_millis((attempts as u64 * 100).min(1000))
        })
        .name("edgehost");
    tokio::time::timeout(NATS_TIMEOUT * 2, options.connect(url))
        .await
        .map_err(|_| {
            anyhow::anyhow!("cannot reach NATS ({shown}): no answer within {NATS_TIMEOUT:?}")
        })?
        .map_err(|err| anyhow::anyhow!("cannot reach NATS ({shown}): {err}"))
}

/// A fleet's buckets, made when missing.
#[derive(Clone)]
pub(crate) struct Bus {
    pub(crate) fleet: String,
    pub(crate) client: async_nats::Client,
    pub(crate) deployments: kv::Store,
    pub(crate) hosts: kv::Store,
    pub(crate) components: object_store::ObjectStore,
}

/// Bounds a NATS call by [`NATS_TIMEOUT`], saying what it was.
async fn within<T, E: std::fmt::Display>(
    what: &str,
    call: impl std::future::Future<Output = Result<T, E>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(NATS_TIMEOUT, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(anyhow::anyhow!("{what}: {err}")),
        Err(_) => Err(anyhow::anyhow!(
            "{what}: NATS did not answer within {NATS_TIMEOUT:?}"
        )),
    }
}

impl Bus {
    /// The buckets of fleet `fleet` on `client`, made if missing.
    pub(crate) async fn open(client: async_nats::Client, fleet: &str) -> anyhow::Result<Bus> {
        let js = jetstream::new(client.clone());
        let deployments = open_kv(
            &js,
            kv::Config {
                bucket: format!("edgehost-{fleet}-deployments"),
                description: format!("edgehost fleet {fleet}: deployments and the current pointer"),
                history: 5,
                ..Default::default()
            },
        )
        .await?;
        let hosts = open_kv(
            &js,
            kv::Config {
                bucket: format!("edgehost-{fleet}-hosts"),
                description: format!("edgehost fleet {fleet}: live hosts' heartbeats"),
                history: 1,
                max_age: HEARTBEAT_AGE,
                ..Default::default()
            },
        )
        .await?;
        let bucket = format!("edgehost-{fleet}-components");
        let components = match within("open the components", js.get_object_store(&bucket)).await {
            Ok(store) => store,
            Err(_) => {
                within(
                    "make the components store",
                    js.create_object_store(object_store::Config {
                        bucket: bucket.clone(),
                        description: Some(format!("edgehost fleet {fleet}: components by SHA-256")),
                        ..Default::default()
                    }),
                )
                .await?
            }
        };
        Ok(Bus {
            fleet: fleet.to_string(),
            client,
            deployments,
            hosts,
            components,
        })
    }

    /// The subject deploys ask hosts to prepare on.
    pub(crate) fn prepare_subject(&self) -> String {
        format!("edgehost.{}.prepare", self.fleet)
    }

    /// The pointer and its revision (for compare-and-swap); `None` before
    /// the fleet's first deployment.
    pub(crate) async fn pointer(&self) -> anyhow::Result<Option<(Pointer, u64)>> {
        let entry = within(
            "read the current pointer",
            self.deployments.entry("current"),
        )
        .await?;
        match entry {
            Some(entry) if entry.operation == kv::Operation::Put => {
                let pointer = serde_json::from_slice(&entry.value)
                    .map_err(|err| anyhow::anyhow!("the current pointer is unreadable: {err}"))?;
                Ok(Some((pointer, entry.revision)))
            }
            _ => Ok(None),
        }
    }

    /// Moves the pointer to `pointer` if it is still at `revision` (`None`:
    /// still unset); `Ok(false)` when another deploy moved it first.
    pub(crate) async fn move_pointer(
        &self,
        pointer: &Pointer,
        revision: Option<u64>,
    ) -> anyhow::Result<bool> {
        let value = Bytes::from(serde_json::to_vec(pointer)?);
        let moved = match revision {
            Some(revision) => tokio::time::timeout(
                NATS_TIMEOUT,
                self.deployments.update("current", value, revision),
            )
            .await
            .map(|r| {
                r.map(|_| ()).map_err(|e| {
                    (
                        e.kind() == kv::UpdateErrorKind::WrongLastRevision,
                        e.to_string(),
                    )
                })
            }),
            None => tokio::time::timeout(NATS_TIMEOUT, self.deployments.create("current", value))
                .await
                .map(|r| {
                    r.map(|_| ()).map_err(|e| {
                        (
                            e.kind() == kv::CreateErrorKind::AlreadyExists,
                            e.to_string(),
                        )
                    })
                }),
        };
        match moved {
            Ok(Ok(())) => Ok(true),
            Ok(Err((true, _))) => Ok(false),
            Ok(Err((false, err))) => Err(anyhow::anyhow!("move the current pointer: {err}")),
            Err(_) => Err(anyhow::anyhow!(
                "move the current pointer: NATS did not answer within {NATS_TIMEOUT:?}"
            )),
        }
    }

    /// A fresh fleet-wide deployment id: `next-id` counted up by
    /// compare-and-swap, so two deploys never get the same one.
    pub(crate) async fn next_id(&self) -> anyhow::Result<String> {
        for _ in 0..100 {
            let entry = within("read next-id", self.deployments.entry("next-id")).await?;
            let (last, revision) = match &entry {
                Some(entry) if entry.operation == kv::Operation::Put => (
                    std::str::from_utf8(&entry.value)
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0),
                    Some(entry.revision),
                ),
                _ => (0, None),
            };
            let next = (last + 1).to_string();
            let value = Bytes::from(next.clone());
            let taken = match revision {
                Some(revision) => self
                    .deployments
                    .update("next-id", value, revision)
                    .await
                    .is_ok(),
                None => self.deployments.create("next-id", value).await.is_ok(),
            };
            if taken {
                return Ok(next);
            }
        }
        anyhow::bail!("could not take a deployment id: too many deploys at once")
    }

    pub(crate) async fn put_record(&self, record: &DeploymentRecord) -> anyhow::Result<()> {
        let value = Bytes::from(serde_json::to_vec(record)?);
        within(
            "store the deployment record",
            self.deployments
                .put(format!("deployment.{}", record.id), value),
        )
        .await
        .map(|_| ())
    }

    pub(crate) async fn forget_record(&self, id: &str) {
        let _ = within(
            "forget the deployment record",
            self.deployments.purge(format!("deployment.{id}")),
        )
        .await;
    }

    pub(crate) async fn record(&self, id: &str) -> anyhow::Result<DeploymentRecord> {
        let value = within(
            "read the deployment record",
            self.deployments.get(format!("deployment.{id}")),
        )
        .await?
        .ok_or_else(|| anyhow::anyhow!("fleet {} has no deployment {id}", self.fleet))?;
        serde_json::from_slice(&value)
            .map_err(|err| anyhow::anyhow!("deployment {id}'s record is unreadable: {err}"))
    }

    /// Whether the object store has the component named `hash`.
    pub(crate) async fn has_component(&self, hash: &str) -> anyhow::Result<bool> {
        match tokio::time::timeout(NATS_TIMEOUT, self.components.info(hash)).await {
            Ok(Ok(info)) => Ok(!info.deleted),
            Ok(Err(err)) if err.kind() == object_store::InfoErrorKind::NotFound => Ok(false),
            Ok(Err(err)) => Err(anyhow::anyhow!("look up component {hash}: {err}")),
            Err(_) => Err(anyhow::anyhow!(
                "look up component {hash}: NATS did not answer within {NATS_TIMEOUT:?}"
            )),
        }
    }

    /// Uploads a component under its hash.
    pub(crate) async fn put_component(&self, hash: &str, bytes: &[u8]) -> anyhow::Result<()> {
        let mut reader = bytes;
        let budget = NATS_TIMEOUT + Duration::from_secs(bytes.len() as u64 >> 20);
        tokio::time::timeout(budget, self.components.put(hash, &mut reader))
            .await
            .map_err(|_| anyhow::anyhow!("upload component {hash}: NATS did not answer in time"))?
            .map_err(|err| anyhow::anyhow!("upload component {hash}: {err}"))?;
        Ok(())
    }

    /// Downloads the component named `hash`.
    pub(crate) async fn component(&self, hash: &str) -> anyhow::Result<Vec<u8>> {
        let fetch = async {
            let mut object = self
                .components
                .get(hash)
                .await
                .map_err(|err| anyhow::anyhow!("fetch component {hash}: {err}"))?;
            let mut bytes = Vec::new();
            object
                .read_to_end(&mut bytes)
                .await
                .map_err(|err| anyhow::anyhow!("fetch component {hash}: {err}"))?;
            Ok::<_, anyhow::Error>(bytes)
        };
        tokio::time::timeout(NATS_TIMEOUT * 12, fetch)
            .await
            .map_err(|_| anyhow::anyhow!("fetch component {hash}: NATS did not answer in time"))?
    }

    /// Says that `heartbeat`'s host is alive.
    pub(crate) async fn beat(&self, heartbeat: &Heartbeat) -> anyhow::Result<()> {
        let value = Bytes::from(serde_json::to_vec(heartbeat)?);
        within(
            "publish a heartbeat",
            self.hosts.put(&heartbeat.name, value),
        )
        .await
        .map(|_| ())
    }

    /// Every live host: its heartbeat and how old it is.
    pub(crate) async fn live_hosts(&self) -> anyhow::Result<Vec<(Heartbeat, Duration)>> {
        use futures_util::StreamExt;
        // The subjects the stream holds now: a finite list (a key watch, as
        // `keys()` is, keeps delivering while hosts keep beating).
        let prefix = self.hosts.prefix.clone();
        let mut subjects = within(
            "list the hosts",
            self.hosts.stream.info_with_subjects(format!("{prefix}>")),
        )
        .await?;
        let mut names = Vec::new();
        loop {
            match tokio::time::timeout(NATS_TIMEOUT, subjects.next()).await {
                Ok(Some(Ok((subject, _)))) => {
                    names.extend(subject.strip_prefix(&prefix).map(str::to_string));
                }
                Ok(Some(Err(err))) => anyhow::bail!("list the hosts: {err}"),
                Ok(None) => break,
                Err(_) => anyhow::bail!("list the hosts: NATS did not answer in time"),
            }
        }
        let mut hosts = Vec::new();
        for name in names {
            let Some(entry) = within("read a heartbeat", self.hosts.entry(name.as_str())).await?
            else {
                continue;
            };
            if entry.operation != kv::Operation::Put {
                continue;
            }
            let Ok(heartbeat) = serde_json::from_slice::<Heartbeat>(&entry.value) else {
                continue;
            };
            let age = Duration::try_from(time::OffsetDateTime::now_utc() - entry.created)
                .unwrap_or(Duration::ZERO);
            if age <= HEARTBEAT_AGE {
                hosts.push((heartbeat, age));
            }
        }
        hosts.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        Ok(hosts)
    }
}

/// Fleet `fleet`'s bucket of claimed schedule ticks, made if missing.
pub(crate) async fn ticks(client: async_nats::Client, fleet: &str) -> anyhow::Result<kv::Store> {
    let js = jetstream::new(client);
    let config = kv::Config {
        bucket: format!("edgehost-{fleet}-ticks"),
        description: format!("edgehost fleet {fleet}: schedule ticks, each claimed by one host"),
        history: 1,
        max_age: TICK_AGE,
        ..Default::default()
    };
    open_kv(&js, config).await
}

/// The bucket `config` names, made if missing. The stream is made as the
/// key-value layout wants it, by hand: the client's own bucket creation
/// reads account fields that NATS 2.9 does not send.
async fn open_kv(js: &jetstream::Context, config: kv::Config) -> anyhow::Result<kv::Store> {
    let bucket = config.bucket.clone();
    if let Ok(store) = within("open a bucket", js.get_key_value(&bucket)).await {
        return Ok(store);
    }
    let stream = jetstream::stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(config.description),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: config.history.max(1),
        max_age: config.max_age,
        storage: jetstream::stream::StorageType::File,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: jetstream::stream::DiscardPolicy::New,
        num_replicas: 1,
        ..Default::default()
    };
    within(
        &format!("make the bucket {bucket}"),
        js.create_stream(stream),
    )
    .await?;
    within("open a bucket", js.get_key_value(&bucket)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pointer_remembers_what_it_pointed_at_for_rollbacks() {
        let first = Pointer::default().then("1");
        assert_eq!(first.history, Vec::<String>::new());
        assert_eq!(first.back(), None, "nothing before the first deployment");
        let third = first.then("2").then("3");
        assert_eq!(third.history, ["1", "2"]);
        let back = third.back().unwrap();
        assert_eq!(
            (back.id.as_str(), back.history.clone()),
            ("2", vec!["1".to_string()])
        );
        let mut long = Pointer::default();
        for id in 0..50 {
            long = long.then(&id.to_string());
        }
        assert_eq!(long.history.len(), POINTER_HISTORY);
        assert_eq!(long.history.last().map(String::as_str), Some("48"));
    }
}
