//! `x-request-id` from clients: whatever a client sends, the id the host
//! uses (in its answer and every log line) is a short token of safe
//! characters: the client's own when it is one, else a generated one.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../host/src/http/request_id.rs"]
mod request_id;

fuzz_target!(|data: &[u8]| {
    let ids = request_id::RequestIds::new();
    let mut headers = http::HeaderMap::new();
    let sent = http::HeaderValue::from_bytes(data).ok();
    if let Some(value) = &sent {
        headers.insert("x-request-id", value.clone());
    }
    let id = ids.for_request(&headers);
    let safe = |b: u8| b.is_ascii_alphanumeric() || b"-_.:/+=@".contains(&b);
    assert!(
        (1..=128).contains(&id.len()) && id.bytes().all(safe),
        "{id:?} from {data:?}"
    );
    assert!(http::HeaderValue::from_str(&id).is_ok(), "{id:?}");
    let taken =
        sent.is_some() && !data.is_empty() && data.len() <= 128 && data.iter().all(|b| safe(*b));
    assert_eq!(id.as_bytes() == data, taken, "{id:?} from {data:?}");
});
