//! Address classification shared by modules (where a connection or a logon
//! came from).

use std::net::IpAddr;

/// Whether `address` is private, loopback, link-local, unspecified or
/// otherwise not on the internet (RFC 1918, RFC 6598, fc00::/7, fe80::/10).
/// Host names and unparsable text are not private. Documentation ranges
/// (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) are not private: they
/// stand for the internet in examples and tests.
pub fn is_private_address(address: &str) -> bool {
    address.trim().parse().is_ok_and(is_private_ip)
}

/// [`is_private_address`] for a parsed address.
pub fn is_private_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (a == 100 && (64..128).contains(&b))
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || v6
                    .to_ipv4_mapped()
                    .is_some_and(|v4| is_private_ip(IpAddr::V4(v4)))
        }
    }
}
