//! Who runs a schedule's tick. A host on its own runs every tick; hosts
//! in a fleet claim each tick, and only the one whose claim is first runs
//! it (the `fleet` module's claims, in NATS JetStream).

/// Claims ticks among hosts.
#[async_trait::async_trait]
pub(crate) trait TickClaims: Send + Sync {
    /// Whether this host runs the tick `tick` names: `Ok(false)` when
    /// another host claimed it first, `Err` when nobody can tell.
    async fn claim(&self, tick: &str) -> Result<bool, String>;
}
