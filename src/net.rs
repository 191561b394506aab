//! Client addresses: who a request comes from when proxies stand in between, and the key
//! a per-address limit counts under.
//!
//! Only peers listed in `BROADCAST_TRUSTED_PROXIES` may say who the client is
//! (`X-Forwarded-For`, `X-Real-IP`); from anyone else those headers are ignored, so a
//! client cannot pick the address it is throttled under.

use std::net::IpAddr;

use ipnet::IpNet;

/// The peers whose `X-Forwarded-For` / `X-Real-IP` are believed (none by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Addresses (`127.0.0.1`, `::1`) and networks (`10.0.0.0/8`); the first entry that is
    /// neither is the error.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries
            .iter()
            .map(|e| {
                e.parse::<IpNet>()
                    .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| e.clone())
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether `ip` is a trusted proxy.
    pub fn trusts(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: `peer` itself, unless `peer` is trusted; then the nearest hop
    /// of `forwarded_for` (read from the right, past trusted proxies) that is not trusted,
    /// else `real_ip`, else `peer`. Unparseable hops end the walk (what lies beyond them
    /// cannot be believed).
    pub fn client(&self, peer: IpAddr, forwarded_for: Option<&str>, real_ip: Option<&str>) -> IpAddr {
        let peer = canonical(peer);
        if !self.trusts(peer) {
            return peer;
        }
        if let Some(chain) = forwarded_for {
            let mut nearest = None;
            for hop in chain.rsplit(',').map(str::trim).filter(|h| !h.is_empty()) {
                let Some(ip) = parse_hop(hop) else { break };
                nearest = Some(ip);
                if !self.trusts(ip) {
                    return ip;
                }
            }
            if let Some(ip) = nearest {
                return ip;
            }
        }
        real_ip.and_then(|r| parse_hop(r.trim())).unwrap_or(peer)
    }
}

/// `1.2.3.4`, `[::1]:80`, `1.2.3.4:80` or `::1` as an address.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    hop.parse::<std::net::SocketAddr>().ok().map(|s| canonical(s.ip()))
}

/// An IPv4 address written as IPv6 (`::ffff:10.0.0.1`) as the IPv4 address it is.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// What a per-address limit counts under: an IPv4 address, or an IPv6 address's /64 (one
/// subscriber usually holds a whole /64, so counting single addresses would not slow it).
pub(crate) fn limit_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let mut octets = v6.octets();
            octets[8..].fill(0);
            IpAddr::from(octets)
        }
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn only_trusted_peers_say_who_the_client_is() {
        let none = TrustedProxies::default();
        assert_eq!(
            none.client(ip("10.0.0.9"), Some("6.6.6.6"), Some("7.7.7.7")),
            ip("10.0.0.9")
        );
        let nginx = TrustedProxies::parse(&["127.0.0.1".into(), "10.0.0.0/8".into()]).unwrap();
        // nginx on loopback: its $proxy_add_x_forwarded_for appends the client.
        assert_eq!(
            nginx.client(ip("127.0.0.1"), Some("203.0.113.7"), Some("203.0.113.7")),
            ip("203.0.113.7")
        );
        // A forged first hop is ignored: the nearest untrusted hop from the right counts.
        assert_eq!(
            nginx.client(ip("127.0.0.1"), Some("1.1.1.1, 203.0.113.7, 10.1.2.3"), None),
            ip("203.0.113.7")
        );
        // Only X-Real-IP.
        assert_eq!(
            nginx.client(ip("10.0.0.2"), None, Some("198.51.100.4")),
            ip("198.51.100.4")
        );
        // Garbage ends the walk; nothing usable: the peer.
        assert_eq!(
            nginx.client(ip("127.0.0.1"), Some("evil, 10.0.0.5"), None),
            ip("10.0.0.5")
        );
        assert_eq!(nginx.client(ip("127.0.0.1"), Some("nonsense"), None), ip("127.0.0.1"));
        // An untrusted peer's headers mean nothing.
        assert_eq!(
            nginx.client(ip("198.51.100.1"), Some("127.0.0.1"), None),
            ip("198.51.100.1")
        );
        // IPv4-mapped peers are IPv4; ports in hops are dropped.
        assert_eq!(
            nginx.client(ip("::ffff:127.0.0.1"), Some("[2001:db8::1]:443"), None),
            ip("2001:db8::1")
        );
        assert!(TrustedProxies::parse(&["10.0.0.0/33".into()]).is_err());
        assert!(TrustedProxies::parse(&["nginx".into()]).is_err());
    }

    #[test]
    fn ipv6_counts_per_slash_64() {
        assert_eq!(
            limit_key(ip("2001:db8:1:2:aaaa::1")),
            limit_key(ip("2001:db8:1:2:bbbb::2"))
        );
        assert_ne!(limit_key(ip("2001:db8:1:2::1")), limit_key(ip("2001:db8:1:3::1")));
        assert_eq!(limit_key(ip("192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(limit_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
    }
}

/// `url` as logs and stats may show it: scheme, host (and port) and path; no user, no
/// password, no query string or fragment (where secrets of webhook URLs live).
pub(crate) fn shown_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "(not a URL)".into();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let host = authority.rsplit_once('@').map_or(authority, |(_, host)| host);
    let path = &tail[..tail.find(['?', '#']).unwrap_or(tail.len())];
    format!("{scheme}://{host}{path}")
}

/// Whether `ip` is an address a server should rarely be sent to by configuration:
/// loopback, private (RFC 1918, unique local), link-local (cloud metadata services live at
/// 169.254.169.254), carrier-grade NAT, or unspecified.
pub(crate) fn is_internal(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback() || v6.is_unspecified() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn urls_are_shown_without_secrets() {
        assert_eq!(
            shown_url("https://user:pa55@hooks.example.com:8443/pusher?token=s3cret#x"),
            "https://hooks.example.com:8443/pusher"
        );
        assert_eq!(shown_url("http://example.com"), "http://example.com");
        assert_eq!(shown_url("http://example.com?k=1"), "http://example.com");
        assert_eq!(shown_url("nonsense"), "(not a URL)");
    }

    #[test]
    fn internal_addresses() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "0.0.0.0",
        ] {
            assert!(is_internal(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["203.0.113.5", "8.8.8.8", "2001:4860::8888"] {
            assert!(!is_internal(ip.parse().unwrap()), "{ip}");
        }
    }
}
