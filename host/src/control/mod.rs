//! What a host serves and how that changes: deploys, reloads, rollbacks and
//! resumes, one deploy turn at a time. Everything that loads a manifest goes
//! through [`Host::load_and_swap`]; a rollback goes back to a kept deployment.
//!
//! | file | what it owns |
//! | --- | --- |
//! | `host.rs` | [`Host`]: runtime, deployments, the starting manifest; `load_and_swap` |
//! | `deployments.rs` | the current route table, the kept ones, the deploy turn |
//! | `deployer.rs` | deploys, rollbacks and resumes made through the admin API or a fleet |
//! | `components.rs` | uploaded components, by SHA-256 |
//! | `record.rs` | the deploy request and the record `serve --resume` reads |
//! | `gc.rs` | deleting components and compiled code no kept deployment uses |
//! | `watcher.rs` | the one file watcher (`serve --watch`, `dev`) |
//! | `build_errors.rs` | `dev`'s failed builds, answered as the route's 500 |
//! | `ticks.rs` | who runs a schedule's tick: one host, or the first of a fleet to claim it |

mod build_errors;
mod components;
mod deployer;
mod deployments;
mod gc;
mod host;
mod record;
mod ticks;
pub(crate) mod watcher;

pub(crate) use build_errors::BuildErrors;
pub(crate) use components::{hash_of, is_hash, UploadError};
pub(crate) use deployer::{Deployer, Prepared};
pub(crate) use deployments::Deployment;
pub(crate) use host::Host;
pub(crate) use record::DeployRequest;
pub(crate) use ticks::TickClaims;
