//! `edgehost deploy --fleet`, `rollback --fleet` and `fleet status`: the
//! client side of a fleet. A deploy uploads the components the fleet lacks,
//! records the deployment, asks every live host to prepare it, and moves
//! the pointer by compare-and-swap only when every one of them is ready;
//! then it waits until every host says it serves it.

use super::bus::{
    unix_now, Bus, DeploymentRecord, Pointer, PrepareReply, PrepareRequest, HEARTBEAT_AGE,
};
use crate::control::DeployRequest;
use anyhow::bail;
use futures_util::StreamExt;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// How long a live host has to say it is preparing.
const ACK_WITHIN: Duration = Duration::from_secs(5);
/// How long hosts have to switch once the pointer moved.
const SWITCH_WITHIN: Duration = Duration::from_secs(30);

/// What a fleet deploy or rollback did.
pub(crate) struct Moved {
    pub(crate) id: String,
    /// The hosts that prepared it.
    pub(crate) hosts: Vec<String>,
    /// From the pointer's move until the last of `hosts` said it serves
    /// it; `None` when some did not within [`SWITCH_WITHIN`].
    pub(crate) converged: Option<Duration>,
    /// Hosts that had not switched, when `converged` is `None`.
    pub(crate) lagging: Vec<String>,
}

/// `user@machine`, for the record of who deployed.
fn who() -> String {
    let user = std::env::var("USER")
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| "someone".into());
    format!("{user}@{}", super::bus::machine_name())
}

/// Deploys `request` with the component files `files` (`(written, hash,
/// bytes)`) to the fleet; `expect` refuses unless the fleet still serves
/// that deployment.
pub(crate) async fn deploy(
    bus: &Bus,
    mut request: DeployRequest,
    files: Vec<(String, String, Vec<u8>)>,
    expect: Option<&str>,
    prepare_within: Duration,
) -> anyhow::Result<Moved> {
    let pointer = bus.pointer().await?;
    check_expected(&pointer, expect)?;
    let hosts = live(bus).await?;
    let mut seen = BTreeSet::new();
    for (written, hash, bytes) in files {
        if !seen.insert(hash.clone()) {
            continue;
        }
        if bus.has_component(&hash).await? {
            eprintln!("  {written}: the fleet has it");
        } else {
            bus.put_component(&hash, &bytes).await?;
            eprintln!("  {written}: uploaded {} KiB", bytes.len().div_ceil(1024));
        }
    }
    let id = bus.next_id().await?;
    request.id = None;
    bus.put_record(&DeploymentRecord {
        id: id.clone(),
        request,
        by: who(),
        at_unix: unix_now(),
    })
    .await?;
    let base = pointer.clone().map(|(p, _)| p).unwrap_or_default();
    let moved = switch(
        bus,
        &id,
        base.then(&id),
        pointer.map(|(_, r)| r),
        hosts,
        prepare_within,
    )
    .await;
    if moved.is_err() {
        bus.forget_record(&id).await;
    }
    moved
}

/// Moves the fleet back to the deployment before its current one.
pub(crate) async fn rollback(
    bus: &Bus,
    expect: Option<&str>,
    prepare_within: Duration,
) -> anyhow::Result<Moved> {
    let pointer = bus.pointer().await?;
    check_expected(&pointer, expect)?;
    let Some((current, revision)) = pointer else {
        bail!("fleet {} has no deployment to roll back from", bus.fleet);
    };
    let Some(back) = current.back() else {
        bail!(
            "fleet {} has no deployment before {} to roll back to",
            bus.fleet,
            current.id
        );
    };
    let hosts = live(bus).await?;
    let id = back.id.clone();
    switch(bus, &id, back, Some(revision), hosts, prepare_within).await
}

fn check_expected(pointer: &Option<(Pointer, u64)>, expect: Option<&str>) -> anyhow::Result<()> {
    let Some(expect) = expect else {
        return Ok(());
    };
    let current = pointer.as_ref().map_or("none", |(p, _)| p.id.as_str());
    if current != expect {
        bail!("conflict: the fleet serves deployment {current}, not {expect}; nothing changed");
    }
    Ok(())
}

/// The names of the live hosts; a fleet with none cannot check a deploy.
async fn live(bus: &Bus) -> anyhow::Result<Vec<String>> {
    let hosts: Vec<String> = bus
        .live_hosts()
        .await?
        .into_iter()
        .map(|(h, _)| h.name)
        .collect();
    if hosts.is_empty() {
        bail!(
            "no host of fleet {} is running (none has sent a heartbeat in the last {}s): start one, then deploy",
            bus.fleet,
            HEARTBEAT_AGE.as_secs()
        );
    }
    Ok(hosts)
}

/// Has every live host prepare `id`, moves the pointer to `to` if it is
/// still at `revision`, and waits for the hosts to switch.
async fn switch(
    bus: &Bus,
    id: &str,
    to: Pointer,
    revision: Option<u64>,
    hosts: Vec<String>,
    prepare_within: Duration,
) -> anyhow::Result<Moved> {
    let hosts = prepare(bus, id, hosts, prepare_within).await?;
    eprintln!("prepared on {} hosts: {}", hosts.len(), hosts.join(", "));
    // Watched before the pointer moves, so that no switch is missed.
    let mut beats = bus
        .hosts
        .watch_all()
        .await
        .map_err(|err| anyhow::anyhow!("watch the hosts: {err}"))?;
    if !bus.move_pointer(&to, revision).await? {
        let now = bus
            .pointer()
            .await
            .ok()
            .flatten()
            .map_or_else(|| "?".to_string(), |(p, _)| p.id);
        bail!(
            "conflict: another deploy moved fleet {} to deployment {now} first; nothing changed",
            bus.fleet
        );
    }
    let moved = Instant::now();
    let mut waiting: BTreeSet<String> = hosts.iter().cloned().collect();
    // A host may have switched before the watch saw it (its own heartbeat).
    for (heartbeat, _) in bus.live_hosts().await.unwrap_or_default() {
        if heartbeat.deployment == id {
            waiting.remove(&heartbeat.name);
        }
    }
    let deadline = tokio::time::Instant::now() + SWITCH_WITHIN;
    while !waiting.is_empty() {
        match tokio::time::timeout_at(deadline, beats.next()).await {
            Ok(Some(Ok(entry))) => {
                if let Ok(beat) = serde_json::from_slice::<super::bus::Heartbeat>(&entry.value) {
                    if beat.deployment == id {
                        waiting.remove(&beat.name);
                    }
                }
            }
            Ok(Some(Err(_))) => continue,
            Ok(None) | Err(_) => break,
        }
    }
    let converged = waiting.is_empty().then(|| moved.elapsed());
    Ok(Moved {
        id: id.to_string(),
        hosts,
        converged,
        lagging: waiting.into_iter().collect(),
    })
}

/// Asks every live host to prepare `id`; the hosts that did, or every
/// host's reasons when one did not.
async fn prepare(
    bus: &Bus,
    id: &str,
    hosts: Vec<String>,
    within: Duration,
) -> anyhow::Result<Vec<String>> {
    let inbox = bus.client.new_inbox();
    let mut replies = bus
        .client
        .subscribe(inbox.clone())
        .await
        .map_err(|err| anyhow::anyhow!("subscribe for answers: {err}"))?;
    let body = serde_json::to_vec(&PrepareRequest { id: id.to_string() })?;
    bus.client
        .publish_with_reply(bus.prepare_subject(), inbox, body.into())
        .await
        .map_err(|err| anyhow::anyhow!("ask the hosts to prepare: {err}"))?;
    bus.client
        .flush()
        .await
        .map_err(|err| anyhow::anyhow!("ask the hosts to prepare: {err}"))?;
    let start = tokio::time::Instant::now();
    let mut expected: BTreeSet<String> = hosts.into_iter().collect();
    let mut acked = BTreeSet::new();
    let mut done: BTreeMap<String, Vec<String>> = BTreeMap::new();
    loop {
        if expected.iter().all(|host| done.contains_key(host)) {
            break;
        }
        let all_acked = expected.iter().all(|host| acked.contains(host));
        let until = if all_acked {
            start + within
        } else {
            start + ACK_WITHIN.min(within)
        };
        match tokio::time::timeout_at(until, replies.next()).await {
            Ok(Some(message)) => {
                let Ok(reply) = serde_json::from_slice::<PrepareReply>(&message.payload) else {
                    continue;
                };
                expected.insert(reply.host.clone());
                acked.insert(reply.host.clone());
                if reply.done {
                    done.insert(reply.host, reply.errors);
                }
            }
            Ok(None) => bail!("the answers' subscription ended"),
            Err(_) => {
                let silent: Vec<&String> = expected
                    .iter()
                    .filter(|host| !done.contains_key(*host))
                    .collect();
                let why = if all_acked {
                    format!("did not finish preparing within {}s", within.as_secs())
                } else {
                    format!(
                        "did not answer within {}s (stopped? a stopped host drops out of the fleet {}s after its last heartbeat)",
                        ACK_WITHIN.min(within).as_secs(),
                        HEARTBEAT_AGE.as_secs()
                    )
                };
                let names: Vec<&str> = silent.iter().map(|s| s.as_str()).collect();
                bail!("refused: host {} {why}; no host switched", names.join(", "));
            }
        }
    }
    let failed: Vec<(&String, &Vec<String>)> = done
        .iter()
        .filter(|(_, errors)| !errors.is_empty())
        .collect();
    if !failed.is_empty() {
        let mut message = format!(
            "refused: {} of {} hosts cannot serve deployment {id}; no host switched",
            failed.len(),
            done.len()
        );
        for (host, errors) in failed {
            for error in errors {
                message.push_str(&format!("\nhost {host}: {error}"));
            }
        }
        bail!("{message}");
    }
    Ok(done.into_keys().collect())
}

/// `edgehost fleet status`: the current deployment and every live host, as
/// an aligned table.
pub(crate) async fn status(bus: &Bus) -> anyhow::Result<String> {
    let mut out = String::new();
    match bus.pointer().await? {
        None => out.push_str(&format!("fleet {}: no deployment yet\n", bus.fleet)),
        Some((pointer, _)) => {
            let made = match bus.record(&pointer.id).await {
                Ok(record) => format!(
                    ", deployed by {} {}s ago from {}",
                    record.by,
                    unix_now().saturating_sub(record.at_unix),
                    record.request.file
                ),
                Err(_) => String::new(),
            };
            out.push_str(&format!(
                "fleet {}: deployment {} is current{made}\n",
                bus.fleet, pointer.id
            ));
        }
    }
    let hosts = bus.live_hosts().await?;
    let mut rows = vec![[
        "HOST".to_string(),
        "ADDRESS".to_string(),
        "ADMIN".to_string(),
        "DEPLOYMENT".to_string(),
        "HEARTBEAT".to_string(),
    ]];
    let problems: Vec<String> = hosts
        .iter()
        .filter_map(|(h, _)| h.problem.as_ref().map(|p| format!("{}: {p}", h.name)))
        .collect();
    for (heartbeat, age) in hosts {
        rows.push([
            heartbeat.name,
            heartbeat.listen,
            heartbeat.admin.unwrap_or_else(|| "-".into()),
            heartbeat.deployment,
            format!("{:.1}s ago", age.as_secs_f64()),
        ]);
    }
    let widths: Vec<usize> = (0..5)
        .map(|column| rows.iter().map(|row| row[column].len()).max().unwrap_or(0))
        .collect();
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    if rows.len() == 1 {
        out.push_str("(no live host)\n");
    }
    for problem in problems {
        out.push_str(&format!("problem: {problem}\n"));
    }
    Ok(out)
}
