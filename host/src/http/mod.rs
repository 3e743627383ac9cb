//! Everything that speaks HTTP to clients: the public listener with the
//! request path, and the admin API.
//!
//! | file | what it owns |
//! | --- | --- |
//! | `server.rs` | the public listener and the request path, top to bottom in one function |
//! | `edge.rs` | a matched route's edge policies around its guest: CORS preflights, rate limit, cache |
//! | `storing.rs` | copying a guest's answer into the response cache on its way out |
//! | `sdk.rs` | a request for an SDK route: method, body, call, response checks |
//! | `proxy.rs` | a request for a `wasi:http/proxy` or `wasi:http/service` component, streamed both ways |
//! | `spin.rs` | the request headers Spin gives its components |
//! | `answer.rs` | the answers the host makes itself, and their statuses |
//! | `body.rs` | the answer body type; reading a body within a limit |
//! | `request_id.rs` | `x-request-id` |
//! | `access_log.rs` | the per-request `access` line |
//! | `listener.rs` | the accept loop both listeners use, with its graceful drain |
//! | `connections.rs` | connections in number (per listener, per client) and in time (idle, writes) |
//! | `admin.rs` | the admin API's endpoints |

pub(crate) mod access_log;
pub(crate) mod admin;
mod answer;
mod body;
mod connections;
mod edge;
mod listener;
mod proxy;
mod request_id;
pub(crate) mod schedule;
mod sdk;
pub(crate) mod server;
mod spin;
mod storing;
