//! The example webhook's `Stripe-Signature` check: any header, body, secret
//! and clock never panics, and what `sign` makes `verify` accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../routes/api/webhooks/stripe/src/signature.rs"]
mod signature;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let now = u64::from_le_bytes(data[..8].try_into().unwrap_or_default());
    let rest = &data[8..];
    // header \0 secret \0 body
    let mut parts = rest.splitn(3, |b| *b == 0);
    let header = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let secret = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();
    let _ = signature::verify(body, &header, &secret, now);
    let signed = format!("t={now},v1={}", signature::sign(body, now, &secret));
    assert_eq!(signature::verify(body, &signed, &secret, now), Ok(()));
});
