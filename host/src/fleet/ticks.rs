//! Schedule ticks in a fleet: the host that creates a tick's key in the
//! fleet's `ticks` bucket runs it; a create that finds the key there means
//! another host already does. Creating a key is atomic in JetStream, so
//! each tick runs on one host however many run the schedule.

use super::bus;
use crate::control::TickClaims;
use async_nats::jetstream::kv;
use bytes::Bytes;

/// A fleet host's claims on ticks; connects to NATS at its first claim
/// (and again after a failure).
pub(crate) struct FleetTicks {
    fleet: String,
    url: String,
    url_env: String,
    host: String,
    store: tokio::sync::Mutex<Option<kv::Store>>,
}

impl FleetTicks {
    pub(crate) fn new(fleet: String, (url, url_env): (String, String), host: String) -> Self {
        FleetTicks {
            fleet,
            url,
            url_env,
            host,
            store: tokio::sync::Mutex::new(None),
        }
    }

    async fn store(&self) -> anyhow::Result<kv::Store> {
        let mut store = self.store.lock().await;
        if let Some(store) = store.as_ref() {
            return Ok(store.clone());
        }
        let client = bus::connect(&self.url, &self.url_env).await?;
        let opened = bus::ticks(client, &self.fleet).await?;
        *store = Some(opened.clone());
        Ok(opened)
    }
}

#[async_trait::async_trait]
impl TickClaims for FleetTicks {
    async fn claim(&self, tick: &str) -> Result<bool, String> {
        let store = self.store().await.map_err(|err| format!("{err:#}"))?;
        let created = tokio::time::timeout(
            bus::NATS_TIMEOUT,
            store.create(tick, Bytes::from(self.host.clone())),
        )
        .await;
        let failure = match created {
            Ok(Ok(_)) => return Ok(true),
            Ok(Err(err)) if err.kind() == kv::CreateErrorKind::AlreadyExists => return Ok(false),
            Ok(Err(err)) => err.to_string(),
            Err(_) => format!("NATS did not answer within {:?}", bus::NATS_TIMEOUT),
        };
        // The next claim connects again.
        *self.store.lock().await = None;
        Err(format!("claiming tick {tick}: {failure}"))
    }
}
