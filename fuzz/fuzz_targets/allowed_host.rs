//! `allowed_outbound_hosts` entries: parsing never panics, an entry reads
//! back as itself, and it allows its own origin.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../host/src/capabilities/allowed_host.rs"]
mod allowed_host;

use allowed_host::AllowedHost;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(entry) = AllowedHost::parse(text) else {
        return;
    };
    let shown = entry.to_string();
    let again = AllowedHost::parse(&shown)
        .unwrap_or_else(|reason| panic!("{text:?} shows as {shown:?}, which is refused: {reason}"));
    assert_eq!(again, entry, "{text:?} shows as {shown:?}");
    // `scheme://host:port` of a plain entry is allowed by it.
    if let (false, Some((scheme, rest))) = (entry.is_wildcard(), shown.split_once("://")) {
        if let Some((host, port)) = rest.rsplit_once(':') {
            if let Ok(port) = port.parse::<u16>() {
                assert!(entry.allows(scheme == "https", host, port), "{shown}");
            }
        }
    }
});
