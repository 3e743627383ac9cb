//! One `allowed_outbound_hosts` entry of a route: the origins it names, and
//! whether a request's scheme, host and port are among them. Plain text in,
//! no I/O, so the parser can be fuzzed on its own (`fuzz/`).

use std::fmt;

/// One `allowed_outbound_hosts` entry: `https://api.example.com`,
/// `http://127.0.0.1:8080`, `https://*.example.com`, `https://host:*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AllowedHost {
    https: bool,
    /// Lower case; for a wildcard, the suffix after `*.`.
    host: String,
    /// `*.` before the host: any subdomain (not the domain itself).
    subdomains: bool,
    /// `None` for `:*` (any port).
    port: Option<u16>,
}

impl AllowedHost {
    /// Parses an entry; the reason says what a valid one looks like.
    pub(crate) fn parse(text: &str) -> Result<AllowedHost, String> {
        let expected = || {
            format!(
                "{text:?} is not an origin such as \"https://api.example.com\", \"http://127.0.0.1:8080\" or \"https://*.example.com\""
            )
        };
        let (https, rest) = if let Some(rest) = text.strip_prefix("https://") {
            (true, rest)
        } else if let Some(rest) = text.strip_prefix("http://") {
            (false, rest)
        } else {
            return Err(expected());
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        // An IPv6 literal keeps its brackets: [::1]:8080.
        let (host, port) = match rest.rfind(':') {
            Some(at) if !rest[at..].contains(']') => (&rest[..at], Some(&rest[at + 1..])),
            _ => (rest, None),
        };
        let port = match port {
            None => Some(if https { 443 } else { 80 }),
            Some("*") => None,
            Some(number) => Some(number.parse::<u16>().map_err(|_| expected())?),
        };
        let (subdomains, host) = match host.strip_prefix("*.") {
            Some(suffix) => (true, suffix),
            None => (false, host),
        };
        // `example.com.` (fully qualified) is `example.com`.
        let host = host.strip_suffix('.').unwrap_or(host);
        if !is_host(host) {
            return Err(expected());
        }
        Ok(AllowedHost {
            https,
            host: host.to_ascii_lowercase(),
            subdomains,
            port,
        })
    }

    /// Whether the entry names hosts by a `*.` wildcard.
    pub(crate) fn is_wildcard(&self) -> bool {
        self.subdomains
    }

    /// Whether a request to `host:port` (lower case, no trailing dot) over
    /// https or not is one this entry allows.
    pub(crate) fn allows(&self, https: bool, host: &str, port: u16) -> bool {
        let host_matches = if self.subdomains {
            host.strip_suffix(self.host.as_str())
                .is_some_and(|prefix| prefix.len() > 1 && prefix.ends_with('.'))
        } else {
            host == self.host
        };
        self.https == https && host_matches && self.port.is_none_or(|p| p == port)
    }
}

/// A host name (labels of letters, digits and `-`, none empty, so no `..`
/// and no second trailing dot), an IPv4 address (which is one), or a
/// bracketed IPv6 literal.
fn is_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl fmt::Display for AllowedHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.https { "https" } else { "http" };
        let star = if self.subdomains { "*." } else { "" };
        match self.port {
            Some(port) => write!(f, "{scheme}://{star}{}:{port}", self.host),
            None => write!(f, "{scheme}://{star}{}:*", self.host),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_parse_or_say_why() {
        for good in [
            "https://a.com",
            "http://a.com:81/",
            "https://*.a.com:*",
            "https://a.com.",
            "http://[::1]:8080",
        ] {
            assert!(AllowedHost::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "a.com",
            "https://",
            "https://a.com:port",
            "https://a.com/path",
            "*://a.com",
            "https://a b",
            // Found by fuzzing: empty labels made an entry that, shown and
            // read back, was another entry (and could match nothing).
            "http://.............",
            "https://a.com..",
            "https://.a.com",
            "https://a..com",
            "https://*..a.com",
            "http://[::1",
            "http://[not-ipv6]:80",
            "http://a:b:80",
        ] {
            assert!(AllowedHost::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(
            AllowedHost::parse("https://*.A.com").unwrap().to_string(),
            "https://*.a.com:443"
        );
    }
}
