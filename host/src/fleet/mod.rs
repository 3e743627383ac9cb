//! A fleet of hosts that serve the same deployments, through NATS
//! JetStream: one deploy reaches every host, all or nothing.
//!
//! What a fleet promises: a deployment is served only after every live
//! host has fetched, validated and compiled it; a deploy that any live host
//! cannot prepare is refused with that host's reasons and no host switches;
//! of two deploys racing, one moves the pointer and the other changes
//! nothing; each request is served by one deployment. What it cannot: the
//! hosts switch one after another as each sees the pointer move, not at
//! one instant (the deploy prints how long that took).
//!
//! | file | what it owns |
//! | --- | --- |
//! | `bus.rs` | the fleet's buckets, subjects and records in JetStream |
//! | `member.rs` | a host in a fleet: prepare, follow the pointer, heartbeats |
//! | `client.rs` | `deploy --fleet`, `rollback --fleet`, `fleet status` |
//! | `ticks.rs` | schedule ticks: each runs on the one host that claims it |

mod bus;
mod client;
mod member;
mod ticks;

pub(crate) use bus::{connect, Bus};
pub(crate) use client::{deploy, rollback, status, Moved};
pub(crate) use member::{host_name, Member};
pub(crate) use ticks::FleetTicks;
