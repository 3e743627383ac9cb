//! Where an outbound request may connect. The allow-list names origins; the
//! host resolves a name itself and refuses it when any address it resolves
//! to is not on the public internet (loopback, private, link-local such as
//! the cloud metadata service at 169.254.169.254, shared, multicast or
//! reserved), unless the route sets `allow_private_networks = true`. An
//! allow-list entry that is itself an IP literal names its address on
//! purpose, and is reached whatever network it is on.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// What kind of non-public address `ip` is, if it is one.
pub(crate) fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (0, _, _) => "an unspecified (\"this network\") address",
        (127, _, _) => "a loopback address",
        (10, _, _) | (172, 16..=31, _) | (192, 168, _) => "a private address",
        (169, 254, _) => "a link-local address (the cloud metadata service lives there)",
        (100, 64..=127, _) => "a shared (carrier-grade NAT) address",
        (192, 0, 0) => "an IETF protocol address",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "a documentation address",
        (198, 18..=19, _) => "a benchmarking address",
        (224..=239, _, _) => "a multicast address",
        (240..=255, _, _) => "a reserved address",
        _ => return None,
    })
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let segments = ip.segments();
    // Addresses that carry an IPv4 address are judged by it.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_public_v4(v4);
    }
    let embedded = |high: u16, low: u16| {
        let [a, b] = high.to_be_bytes();
        let [c, d] = low.to_be_bytes();
        Ipv4Addr::new(a, b, c, d)
    };
    Some(match segments {
        [0, 0, 0, 0, 0, 0, 0, 0] => "an unspecified address",
        [0, 0, 0, 0, 0, 0, 0, 1] => "a loopback address",
        // NAT64 (RFC 6052): the IPv4 address it translates to decides.
        [0x64, 0xff9b, 0, 0, 0, 0, high, low] => return non_public_v4(embedded(high, low)),
        // 6to4 (RFC 3056): the IPv4 address of the relay's far end decides.
        [0x2002, high, low, ..] => return non_public_v4(embedded(high, low)),
        [0, 0, 0, 0, 0, 0, _, _] => "an IPv4-compatible address (deprecated)",
        [0x64, 0xff9b, 1, ..] => "a local-use NAT64 address",
        [0x100, 0, 0, 0, ..] => "a discard-only address",
        [0x2001, 0, ..] => "a Teredo address",
        [0x2001, 0xdb8, ..] => "a documentation address",
        [first, ..] if first & 0xfe00 == 0xfc00 => "a unique local (private) address",
        [first, ..] if first & 0xffc0 == 0xfe80 => "a link-local address",
        [first, ..] if first & 0xffc0 == 0xfec0 => "a site-local address",
        [first, ..] if first & 0xff00 == 0xff00 => "a multicast address",
        _ => return None,
    })
}

/// The address to connect to for `host:port`: resolved by the host, each
/// address it resolves to checked unless `allow_private`. `trusted_literal`
/// is set when `host` is an IP literal that an allow-list entry names
/// exactly.
pub(crate) async fn resolve(
    host: &str,
    port: u16,
    allow_private: bool,
    trusted_literal: bool,
) -> Result<SocketAddr, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return match non_public(ip) {
            Some(kind) if !allow_private && !trusted_literal => Err(format!(
                "{ip} is {kind}; only an allowed_outbound_hosts entry naming {host} itself, or allow_private_networks = true on the route, allows it"
            )),
            _ => Ok(SocketAddr::new(ip, port)),
        };
    }
    let addresses: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|err| format!("{host} does not resolve: {err}"))?
        .collect();
    // IPv4 first: a server bound to 0.0.0.0 or 127.0.0.1 (most are) is
    // reachable that way, where the resolver may list ::1 first.
    let Some(first) = addresses
        .iter()
        .find(|addr| addr.is_ipv4())
        .or(addresses.first())
        .copied()
    else {
        return Err(format!("{host} resolves to no address"));
    };
    if !allow_private {
        // One non-public answer refuses the name: a resolver handing out
        // several could otherwise pick the internal one later.
        if let Some((addr, kind)) = addresses
            .iter()
            .find_map(|addr| non_public(addr.ip()).map(|kind| (addr.ip(), kind)))
        {
            return Err(format!(
                "{host} resolves to {addr}, {kind}; set allow_private_networks = true on the route to allow it"
            ));
        }
    }
    Ok(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn internal_addresses_are_named_and_public_ones_pass() {
        for (ip, kind) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "shared"),
            ("0.0.0.0", "unspecified"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("198.18.0.1", "benchmarking"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:7f00:1::", "loopback"),
            ("::7f00:1", "IPv4-compatible"),
            ("fd00::1", "unique local"),
            ("fc12::1", "unique local"),
            ("fe80::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("2001:db8::1", "documentation"),
            ("2001:0:4136:e378::1", "Teredo"),
        ] {
            let found = non_public(ip.parse().unwrap());
            assert!(
                found.is_some_and(|k| k.contains(kind)),
                "{ip}: {found:?}, expected {kind}"
            );
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "192.169.0.1",
            "2606:4700::1111",
            "::ffff:1.1.1.1",
            "64:ff9b::101:101",
            "2002:101:101::",
        ] {
            assert_eq!(non_public(ip.parse().unwrap()), None, "{ip}");
        }
    }

    #[tokio::test]
    async fn names_resolving_inward_are_refused_unless_allowed() {
        let refused = resolve("localhost", 80, false, false).await.unwrap_err();
        assert!(refused.contains("loopback"), "{refused}");
        assert!(refused.contains("allow_private_networks"), "{refused}");
        let allowed = resolve("localhost", 80, true, false).await.unwrap();
        assert!(allowed.ip().is_loopback());
        // An IP literal is refused like a name, unless an entry names it.
        assert!(resolve("169.254.169.254", 80, false, false).await.is_err());
        let literal = resolve("[::1]", 8080, false, true).await.unwrap();
        assert_eq!(literal, "[::1]:8080".parse().unwrap());
        assert_eq!(
            resolve("93.184.215.14", 443, false, false).await.unwrap(),
            "93.184.215.14:443".parse().unwrap()
        );
    }
}
