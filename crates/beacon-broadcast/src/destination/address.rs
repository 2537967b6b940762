//! The address guard: destination URLs must be `https://` to a public host unless private
//! destinations are allowed (`broadcast.allow_private_destinations`); the export client's
//! resolver applies [`is_private_ip`] again at connect time.

use std::net::IpAddr;

use super::{err, DestinationError};

/// Checks a destination URL: `https://` to a public host, unless private destinations are
/// allowed. Hostnames are checked as written here; resolution-time checks happen on connect.
pub fn check_url(
    field: &str,
    url: &str,
    allow_private: bool,
) -> Result<http::Uri, DestinationError> {
    let uri: http::Uri = url.trim().parse().map_err(|_| err(field, "is not a URL"))?;
    let host = uri.host().ok_or_else(|| err(field, "has no host"))?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") if allow_private => {}
        Some("http") => {
            return Err(err(
                field,
                "must use https:// (http:// needs broadcast.allow_private_destinations)",
            ))
        }
        _ => return Err(err(field, "must be an https:// URL")),
    }
    if !allow_private && is_private_host(host) {
        return Err(err(
            field,
            "points to a loopback or private address (needs broadcast.allow_private_destinations)",
        ));
    }
    Ok(uri)
}

/// True for `localhost` and loopback, private, link-local, unspecified or unique-local IPs.
pub fn is_private_host(host: &str) -> bool {
    let h = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_ascii_lowercase();
    if h == "localhost"
        || h.ends_with(".localhost")
        || h.ends_with(".internal")
        || h.ends_with(".local")
    {
        return true;
    }
    match h.parse::<IpAddr>() {
        Ok(ip) => is_private_ip(ip),
        Err(_) => false,
    }
}

/// True for addresses a multi-tenant gateway must not be made to call.
pub fn is_private_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // 100.64.0.0/10 carrier-grade NAT
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            // IPv6 forms that carry an IPv4 address: mapped (::ffff:a.b.c.d), compatible
            // (::a.b.c.d, the ::/96 block — `[::127.0.0.1]`), NAT64 (64:ff9b::/96) and
            // 6to4 (2002:AABB:CCDD::/48): each is judged by the IPv4 address inside.
            let embedded = if s[0] == 0x2002 {
                let [a, b] = s[1].to_be_bytes();
                let [c, d] = s[2].to_be_bytes();
                Some(std::net::Ipv4Addr::new(a, b, c, d))
            } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] || s[..6] == [0; 6] {
                let [a, b] = s[6].to_be_bytes();
                let [c, d] = s[7].to_be_bytes();
                Some(std::net::Ipv4Addr::new(a, b, c, d))
            } else {
                v6.to_ipv4_mapped()
            };
            v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] & 0xffc0) == 0xfec0 // site local (deprecated, still routed by some)
                || embedded.is_some_and(|v4| is_private_ip(IpAddr::V4(v4)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_hosts_and_schemes() {
        for host in [
            "localhost",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.5",
            "169.254.169.254",
            "[::1]",
            "[fd00::1]",
            "100.64.0.1",
            "0.0.0.0",
            "[::ffff:127.0.0.1]",
        ] {
            assert!(is_private_host(host), "{host}");
        }
        for host in ["o1.ingest.sentry.io", "8.8.8.8", "[2001:4860::1]"] {
            assert!(!is_private_host(host), "{host}");
        }
        assert!(check_url("endpoint", "http://collector.example.com/v1/traces", false).is_err());
        assert!(check_url("endpoint", "https://collector.example.com/v1/traces", false).is_ok());
        assert!(check_url("endpoint", "http://127.0.0.1:4318/v1/traces", true).is_ok());
        assert_eq!(
            check_url("endpoint", "ftp://x.example.com/", true)
                .unwrap_err()
                .field,
            "endpoint"
        );
    }

    #[test]
    fn ipv6_forms_of_private_ipv4_addresses_are_private() {
        for host in [
            "[::127.0.0.1]",
            "[::ffff:127.0.0.1]",
            "[::ffff:10.0.0.1]",
            "[::10.1.2.3]",
            "[64:ff9b::169.254.169.254]",
            "[2002:7f00:1::]",
            "[2002:a9fe:a9fe::1]",
            "[fec0::1]",
            "[::]",
            "[::1]",
        ] {
            assert!(is_private_host(host), "{host}");
        }
        for host in [
            "[::8.8.8.8]",
            "[64:ff9b::8.8.8.8]",
            "[2002:0808:0808::]",
            "[2606:4700::1111]",
        ] {
            assert!(!is_private_host(host), "{host}");
        }
        assert!(check_url("endpoint", "https://[::127.0.0.1]:4318/v1/traces", false).is_err());
    }
}
