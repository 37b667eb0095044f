//! A contact: a node id and the address it was reached at, and the network prefix that the
//! routing table's diversity limit counts.

use std::net::{IpAddr, SocketAddr};

use dp2ptcs_types::NodeId;

/// A node id with the address it can be dialled at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Contact {
    /// The node's id (SHA-256 of its Ed25519 public key).
    pub id: NodeId,
    /// Where it was reached (or, for a hint, where a peer claims it can be reached).
    pub addr: SocketAddr,
}

impl Contact {
    /// A contact.
    pub fn new(id: NodeId, addr: SocketAddr) -> Self {
        Self { id, addr }
    }

    /// The network prefix this contact's address belongs to for the diversity limit.
    pub fn prefix(&self) -> NetPrefix {
        NetPrefix::of(self.addr.ip())
    }
}

/// The network an address belongs to for the routing table's diversity limit: its IPv4 /24 or
/// its IPv6 /48. An IPv4-mapped IPv6 address counts as the IPv4 address it maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetPrefix {
    /// The first three octets of an IPv4 address.
    V4([u8; 3]),
    /// The first six octets of an IPv6 address.
    V6([u8; 6]),
}

impl NetPrefix {
    /// The prefix of `ip`.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                NetPrefix::V4([o[0], o[1], o[2]])
            }
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => NetPrefix::of(IpAddr::V4(v4)),
                None => {
                    let o = v6.octets();
                    NetPrefix::V6([o[0], o[1], o[2], o[3], o[4], o[5]])
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_slash_24_and_slash_48() {
        let a: IpAddr = "10.1.2.3".parse().unwrap();
        let b: IpAddr = "10.1.2.200".parse().unwrap();
        let c: IpAddr = "10.1.3.3".parse().unwrap();
        assert_eq!(NetPrefix::of(a), NetPrefix::of(b));
        assert_ne!(NetPrefix::of(a), NetPrefix::of(c));
        let d: IpAddr = "2001:db8:1:ffff::1".parse().unwrap();
        let e: IpAddr = "2001:db8:1:0::2".parse().unwrap();
        let f: IpAddr = "2001:db8:2::1".parse().unwrap();
        assert_eq!(NetPrefix::of(d), NetPrefix::of(e));
        assert_ne!(NetPrefix::of(d), NetPrefix::of(f));
        let mapped: IpAddr = "::ffff:10.1.2.9".parse().unwrap();
        assert_eq!(NetPrefix::of(mapped), NetPrefix::of(a));
    }
}
