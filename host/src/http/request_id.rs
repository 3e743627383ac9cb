//! Request ids: every answer carries `x-request-id`, and every log line of
//! the request names it.

use http::header::HeaderValue;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

/// Request ids: the client's `x-request-id` when it is a sane token, else
/// this process's random prefix and a counter.
pub(crate) struct RequestIds {
    prefix: u32,
    next: AtomicU64,
}

/// The longest `x-request-id` taken from a client.
const MAX_REQUEST_ID: usize = 128;

impl RequestIds {
    pub(crate) fn new() -> RequestIds {
        use std::hash::{BuildHasher, Hasher};
        // std's hasher keys are random per process: enough to tell apart the
        // ids of two host processes, with no extra crate.
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u128(
            SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        RequestIds {
            prefix: hasher.finish() as u32,
            next: AtomicU64::new(1),
        }
    }

    /// The id of a request with these headers.
    pub(crate) fn for_request(&self, headers: &http::HeaderMap) -> Arc<str> {
        let given = headers
            .get("x-request-id")
            .map(HeaderValue::as_bytes)
            .filter(|id| {
                (1..=MAX_REQUEST_ID).contains(&id.len())
                    && id
                        .iter()
                        .all(|b| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(b))
            })
            .and_then(|id| std::str::from_utf8(id).ok());
        match given {
            Some(id) => Arc::from(id),
            None => {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                generated_id(self.prefix, n)
            }
        }
    }
}

/// `{prefix:08x}-{n}`, written by hand: `format!` costs more than the rest
/// of the request's bookkeeping.
fn generated_id(prefix: u32, n: u64) -> Arc<str> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // 8 hex digits, a dash, up to 20 decimal digits.
    let mut text = [0u8; 29];
    for (i, digit) in text[..8].iter_mut().enumerate() {
        *digit = HEX[((prefix >> (28 - 4 * i)) & 0xf) as usize];
    }
    text[8] = b'-';
    let mut decimal = [0u8; 20];
    let mut start = decimal.len();
    let mut rest = n;
    loop {
        start -= 1;
        decimal[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let len = 9 + decimal.len() - start;
    text[9..len].copy_from_slice(&decimal[start..]);
    // Only ASCII digits, letters and a dash were written.
    Arc::from(std::str::from_utf8(&text[..len]).unwrap_or("-"))
}

#[cfg(test)]
mod tests {
    use super::generated_id;

    #[test]
    fn generated_ids_read_as_prefix_dash_counter() {
        for (prefix, n) in [
            (0, 0),
            (0xdead_beef, 1),
            (0x0000_00a0, 42),
            (u32::MAX, 1_000_000_007),
            (0x1234_5678, u64::MAX),
        ] {
            assert_eq!(&*generated_id(prefix, n), format!("{prefix:08x}-{n}"));
        }
    }
}
