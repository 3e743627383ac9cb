//! Manifest quantities (`"64KiB"`, `"10s"`, counts): parsing never panics or
//! overflows, never yields zero, and a size printed by the host reads back
//! as the same number of bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../host/src/manifest/quantity.rs"]
mod quantity;

use quantity::{size, Kind, Quantity};

fuzz_target!(|data: &[u8]| {
    if data.len() >= 8 {
        let number = u64::from_le_bytes(data[..8].try_into().unwrap_or_default());
        for kind in [Kind::Duration, Kind::Size, Kind::Count] {
            let _ = kind.parse(&Quantity::Number(number));
        }
        if number > 0 {
            let shown = size(number);
            assert_eq!(
                Kind::Size.parse(&Quantity::Text(shown.clone())),
                Ok(number),
                "{shown}"
            );
        }
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for kind in [Kind::Duration, Kind::Size, Kind::Count] {
        if let Ok(value) = kind.parse(&Quantity::Text(text.to_string())) {
            assert!(value > 0, "{text:?} parsed to zero");
        }
    }
});
