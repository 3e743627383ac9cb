//! Why a guest gave no answer, and the one mapping from that to the status
//! the client gets, the counter it is counted under and how loudly it is
//! logged ([`GuestError::verdict`]).

use super::body::OverLimit;
use super::cpu::CpuTimeExceeded;
use super::store::HostState;
use crate::capabilities::stdio::escape_controls;
use crate::metrics::Event;
use http::StatusCode;
use std::time::Duration;
use wasmtime::PoolConcurrencyLimitError;

/// Why a guest call produced no response.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    /// The guest trapped (a panic, `unreachable`, a bad memory access, stack
    /// exhaustion...); the message is the trap's reason, one line.
    #[error("guest trapped: {0}")]
    Trap(String),
    /// The guest trapped after it was refused memory past its limit.
    #[error("guest trapped after being refused memory past its {limit} byte limit: {reason}")]
    OutOfMemory { limit: usize, reason: String },
    /// The guest ran past its time limit and was stopped.
    #[error("guest ran past its {0:?} time limit")]
    Timeout(Duration),
    /// The guest ran on the CPU past its `cpu_time` and was stopped.
    #[error("guest used more than its {0:?} of CPU time")]
    CpuTime(Duration),
    /// The host could not set up the instance.
    #[error("could not instantiate the route: {0:#}")]
    Instantiate(wasmtime::Error),
    /// Every slot of the instance pool is in use.
    #[error("all instance slots are in use")]
    PoolExhausted,
    /// The guest went past a body limit (`max_body`, `max_part`,
    /// `max_response`) and was stopped there.
    #[error("guest stopped at its {limit} of {bytes} bytes")]
    OverLimit { limit: &'static str, bytes: usize },
    /// Work after the answer ran past its `wait_until` budget and was stopped.
    #[error("work after the answer stopped at its wait_until of {0:?}")]
    WaitUntil(Duration),
}

/// What a guest failure means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// What the client gets, when it has not had an answer's head yet.
    pub(crate) status: StatusCode,
    /// What it is counted as in the route's metrics.
    pub(crate) event: Event,
    /// A limit the route ran into (logged as a warning: the route is
    /// working as configured) rather than a failure (an error).
    pub(crate) limit: bool,
}

impl GuestError {
    /// The one place a guest failure gets its status, its metric and its
    /// log level.
    pub(crate) fn verdict(&self) -> Verdict {
        let (status, event, limit) = match self {
            GuestError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, Event::Timeout, true),
            GuestError::CpuTime(_) => (StatusCode::INTERNAL_SERVER_ERROR, Event::CpuTime, true),
            GuestError::PoolExhausted => {
                (StatusCode::SERVICE_UNAVAILABLE, Event::MaxInstances, true)
            }
            GuestError::OutOfMemory { .. } => {
                (StatusCode::INTERNAL_SERVER_ERROR, Event::Memory, false)
            }
            GuestError::Instantiate(_) => {
                (StatusCode::INTERNAL_SERVER_ERROR, Event::Instantiate, false)
            }
            GuestError::Trap(_) => (StatusCode::INTERNAL_SERVER_ERROR, Event::Trap, false),
            GuestError::OverLimit { limit, .. } => match *limit {
                "max_part" => (StatusCode::PAYLOAD_TOO_LARGE, Event::MaxPart, true),
                "max_body" => (StatusCode::PAYLOAD_TOO_LARGE, Event::MaxBody, true),
                _ => (StatusCode::INTERNAL_SERVER_ERROR, Event::MaxResponse, true),
            },
            GuestError::WaitUntil(_) => (StatusCode::INTERNAL_SERVER_ERROR, Event::WaitUntil, true),
        };
        Verdict {
            status,
            event,
            limit,
        }
    }

    /// The log line for this failure, with the request it belongs to: a
    /// warning for a limit, an error otherwise. Nothing is formatted unless
    /// the line is logged.
    pub(crate) fn log(&self, request_id: &str, route: &str, path: &str) {
        if !self.verdict().limit {
            // A trap's backtrace names the guest's functions as the guest's
            // own name section spells them: escaped like its output.
            let text = self.to_string();
            let text = escape_controls(&text);
            tracing::error!(request_id = %request_id, route = %route, path = %path, "{text}");
            return;
        }
        match self {
            GuestError::Timeout(limit) => tracing::warn!(
                request_id = %request_id, route = %route, path = %path,
                "guest timed out after {limit:?}"
            ),
            GuestError::CpuTime(limit) => tracing::warn!(
                request_id = %request_id, route = %route, path = %path,
                "guest stopped after using its {limit:?} of CPU time"
            ),
            other => tracing::warn!(
                request_id = %request_id, route = %route, path = %path,
                "{other}; answering {}", other.verdict().status.as_u16()
            ),
        }
    }
}

/// A failed instantiation: a full instance pool, or anything else.
pub(super) fn instantiate_error(err: wasmtime::Error) -> GuestError {
    if err.downcast_ref::<PoolConcurrencyLimitError>().is_some() {
        GuestError::PoolExhausted
    } else {
        GuestError::Instantiate(err)
    }
}

/// What a guest's trap means: its CPU time used up, running out of memory
/// when a grow was refused before it, else the trap's one-line reason.
pub(super) fn guest_trap(state: &HostState, err: &wasmtime::Error, request_id: &str) -> GuestError {
    // The wasm backtrace can run to thousands of frames (deep recursion): the
    // log gets it only at debug level.
    tracing::debug!(request_id, "guest trap in full: {err:?}");
    if let Some(CpuTimeExceeded(limit)) = err.downcast_ref::<CpuTimeExceeded>() {
        return GuestError::CpuTime(*limit);
    }
    if let Some(OverLimit { limit, bytes }) = err.downcast_ref::<OverLimit>() {
        return GuestError::OverLimit {
            limit,
            bytes: *bytes,
        };
    }
    let reason = trap_reason(err);
    if state.limits.memory_refused {
        GuestError::OutOfMemory {
            limit: state.limits.memory_limit,
            reason,
        }
    } else {
        GuestError::Trap(reason)
    }
}

/// The one-line reason of a trap: wasmtime's trap code when there is one.
fn trap_reason(err: &wasmtime::Error) -> String {
    match err.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => trap.to_string(),
        None => err.root_cause().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every guest failure, with the status, counter and level it gets.
    #[test]
    fn each_failure_has_one_status_one_counter_and_one_level() {
        let second = Duration::from_secs(1);
        let cases = [
            (GuestError::Trap("x".into()), 500, Event::Trap, false),
            (
                GuestError::OutOfMemory {
                    limit: 1,
                    reason: "x".into(),
                },
                500,
                Event::Memory,
                false,
            ),
            (GuestError::Timeout(second), 504, Event::Timeout, true),
            (GuestError::CpuTime(second), 500, Event::CpuTime, true),
            (
                GuestError::Instantiate(wasmtime::format_err!("x")),
                500,
                Event::Instantiate,
                false,
            ),
            (GuestError::PoolExhausted, 503, Event::MaxInstances, true),
            (
                GuestError::OverLimit {
                    limit: "max_part",
                    bytes: 1,
                },
                413,
                Event::MaxPart,
                true,
            ),
            (
                GuestError::OverLimit {
                    limit: "max_body",
                    bytes: 1,
                },
                413,
                Event::MaxBody,
                true,
            ),
            (
                GuestError::OverLimit {
                    limit: "max_response",
                    bytes: 1,
                },
                500,
                Event::MaxResponse,
                true,
            ),
            (GuestError::WaitUntil(second), 500, Event::WaitUntil, true),
        ];
        for (error, status, event, limit) in cases {
            let verdict = error.verdict();
            assert_eq!(
                (verdict.status.as_u16(), verdict.event, verdict.limit),
                (status, event, limit),
                "{error}"
            );
        }
    }
}
