//! Which source a peer address counts as, for limits per source (failed authentications,
//! connections): IPv4 addresses as they are (also when mapped into IPv6), other IPv6 addresses
//! by their /64 — one host usually holds a whole /64 and could otherwise move to a fresh
//! address for every attempt.

use std::net::{IpAddr, Ipv6Addr};

/// The source `address` counts as.
pub fn source(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(_) => address,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(Ipv6Addr::from(segments))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_addresses_count_by_their_64_prefix() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::2".parse().expect("ip");
        let other: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(source(a), source(b));
        assert_ne!(source(a), source(other));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(source(mapped), "192.0.2.7".parse::<IpAddr>().expect("ip"));
        let v4: IpAddr = "192.0.2.8".parse().expect("ip");
        assert_eq!(source(v4), v4);
    }
}
