//! Stripe's webhook signature scheme, as its libraries check it.
//!
//! Header: `t=<unix seconds>,v1=<hex>[,v1=<hex>...]` (several `v1` while a
//! secret is being rolled; other schemes are ignored). The expected signature
//! is the lowercase hex HMAC-SHA256 of `"<t>.<raw body>"` keyed with the secret
//! string as-is (`whsec_` prefix included). Any `v1` may match; the comparison
//! is constant-time. A timestamp more than [`TOLERANCE_SECS`] in the past is
//! rejected, so a captured request cannot be replayed later.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How old a signature may be, in seconds (Stripe's default).
pub const TOLERANCE_SECS: u64 = 300;

/// Why a signature was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    /// The header has no `t=` timestamp or it is not a number.
    NoTimestamp,
    /// The header has no `v1=` signature.
    NoSignatures,
    /// The timestamp is older than the tolerance.
    Stale { age_secs: u64 },
    /// No `v1` signature matches.
    Mismatch,
}

impl std::fmt::Display for SignatureError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SignatureError::NoTimestamp => {
                write!(f, "unable to extract timestamp and signatures from header")
            }
            SignatureError::NoSignatures => write!(f, "no signatures found with expected scheme"),
            SignatureError::Stale { age_secs } => {
                write!(f, "timestamp is {age_secs} s old, outside the tolerance")
            }
            SignatureError::Mismatch => write!(f, "no signature matches the payload"),
        }
    }
}

/// The lowercase hex `v1` signature of `body` sent at `timestamp`.
pub fn sign(body: &[u8], timestamp: u64, secret: &str) -> String {
    hex::encode(mac(body, timestamp, secret))
}

/// Checks `header` for `body` at time `now` (unix seconds).
pub fn verify(body: &[u8], header: &str, secret: &str, now: u64) -> Result<(), SignatureError> {
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for item in header.split(',') {
        match item.trim().split_once('=') {
            Some(("t", value)) => timestamp = value.parse::<u64>().ok(),
            Some(("v1", value)) => signatures.push(value),
            _ => {}
        }
    }
    let timestamp = timestamp.ok_or(SignatureError::NoTimestamp)?;
    if signatures.is_empty() {
        return Err(SignatureError::NoSignatures);
    }
    let expected = hex::encode(mac(body, timestamp, secret));
    let matched = signatures.iter().fold(false, |found, candidate| {
        found | bool::from(expected.as_bytes().ct_eq(candidate.as_bytes()))
    });
    if !matched {
        return Err(SignatureError::Mismatch);
    }
    let age_secs = now.saturating_sub(timestamp);
    if age_secs > TOLERANCE_SECS {
        return Err(SignatureError::Stale { age_secs });
    }
    Ok(())
}

fn mac(body: &[u8], timestamp: u64, secret: &str) -> Vec<u8> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "whsec_test_secret";
    const T: u64 = 1_700_000_000;
    const BODY: &[u8] = br#"{"id":"evt_test","object":"event"}"#;
    const V1: &str = "8042376f6ca064adbe037642a718227dfd59047137eb49497a54c49eb0cfb724";

    #[test]
    fn known_vector_signs_and_verifies() {
        assert_eq!(sign(BODY, T, SECRET), V1);
        assert_eq!(
            verify(BODY, &format!("t={T},v1={V1}"), SECRET, T + 10),
            Ok(())
        );
    }

    #[test]
    fn any_v1_may_match_and_other_schemes_are_ignored() {
        let header = format!("t={T},v0=abc,v1={},v1={V1}", "0".repeat(64));
        assert_eq!(verify(BODY, &header, SECRET, T), Ok(()));
    }

    #[test]
    fn rejects() {
        let cases: [(&str, &[u8], &str, u64, SignatureError); 7] = [
            ("v1=abc", BODY, SECRET, T, SignatureError::NoTimestamp),
            (
                "t=soon,v1=abc",
                BODY,
                SECRET,
                T,
                SignatureError::NoTimestamp,
            ),
            (
                "t=1700000000",
                BODY,
                SECRET,
                T,
                SignatureError::NoSignatures,
            ),
            (
                "t=1700000000,v1=00",
                BODY,
                SECRET,
                T,
                SignatureError::Mismatch,
            ),
            // The body is signed byte for byte: re-serialized JSON does not verify.
            (
                "",
                br#"{"id": "evt_test", "object": "event"}"#,
                SECRET,
                T,
                SignatureError::Mismatch,
            ),
            ("", BODY, "whsec_other", T, SignatureError::Mismatch),
            (
                "",
                BODY,
                SECRET,
                T + 301,
                SignatureError::Stale { age_secs: 301 },
            ),
        ];
        for (header, body, secret, now, expected) in cases {
            let header = if header.is_empty() {
                format!("t={T},v1={V1}")
            } else {
                header.to_string()
            };
            assert_eq!(
                verify(body, &header, secret, now),
                Err(expected),
                "{header}"
            );
        }
    }

    #[test]
    fn tolerance_edge_is_inclusive_and_future_timestamps_pass() {
        let header = format!("t={T},v1={V1}");
        assert_eq!(verify(BODY, &header, SECRET, T + TOLERANCE_SECS), Ok(()));
        assert_eq!(verify(BODY, &header, SECRET, T - 60), Ok(()));
    }

    #[test]
    fn uppercase_hex_does_not_match() {
        let header = format!("t={T},v1={}", V1.to_uppercase());
        assert_eq!(
            verify(BODY, &header, SECRET, T),
            Err(SignatureError::Mismatch)
        );
    }
}
