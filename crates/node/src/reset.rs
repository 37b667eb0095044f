//! The key of the node's QUIC stateless resets, the same at every start.
//!
//! When a node restarts, its peers still hold the connections they had to it. A packet of such a
//! connection reaches the new endpoint, which knows nothing of it and answers with a *stateless
//! reset* (RFC 9000 section 10.3): a token computed from the connection ID with a key of the
//! endpoint, which the peer learned when the connection was set up. With quinn's default key,
//! drawn afresh at every start, the restarted node's token is not the one the peer holds: the
//! peer ignores the reset and keeps sending into the old connection until a request times out
//! or the idle timeout ends it. A key derived from the node's database key (`PROTOCOL.md`
//! section 9.1) makes the restarted node's reset valid: the peer learns that the connection is
//! gone from its first packet after the restart, and dials again.
//!
//! Connection IDs are 8 random bytes. quinn's default IDs carry a check value keyed afresh at
//! every start, and an endpoint answers only a packet whose ID passes the check: the restarted
//! node would drop the packet instead of resetting. A check keyed the same at every start would
//! not do either: its IDs have 3 random bytes and a check an observer can undo, so the tokens
//! of every ID the node will ever use could be collected from it over a few days. With random
//! IDs, an unknown ID gets a reset (at most one per 20 ms) whose token is for an ID that no
//! connection will use.
//!
//! The key is never sent; a token only ever travels inside the encrypted connection, and knowing
//! one lets its holder close that one connection, which the peer at the other end can anyway.

use std::sync::Arc;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use zeroize::Zeroizing;

/// `info` of the HKDF that derives the reset key from the database key.
const INFO: &[u8] = b"DP2PTCS QUIC stateless reset key v1";
/// Length of a connection ID, random bytes.
const CID_LEN: usize = 8;

/// The endpoint configuration of the node whose database key is `database_key`: quinn's
/// defaults, with the reset key derived from it and random connection IDs.
pub(crate) fn endpoint_config(database_key: &[u8; 32]) -> quinn::EndpointConfig {
    let mut config = quinn::EndpointConfig::new(Arc::new(ResetKey::derive(database_key)));
    config.cid_generator(|| {
        Box::new(quinn_proto::RandomConnectionIdGenerator::new(CID_LEN))
            as Box<dyn quinn::ConnectionIdGenerator>
    });
    config
}
/// Length of a reset token quinn takes from [`quinn::crypto::HmacKey::sign`] (its first 16
/// bytes), and of the HMAC-SHA-256 it is cut from.
const MAC_LEN: usize = 32;

/// The stateless reset key of a node.
pub(crate) struct ResetKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for ResetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResetKey(..)")
    }
}

impl ResetKey {
    /// The key of the node whose database key is `database_key`.
    pub(crate) fn derive(database_key: &[u8; 32]) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        dp2ptcs_crypto::kdf::hkdf_sha256(None, database_key, INFO, key.as_mut());
        Self(key)
    }

    fn mac(&self, data: &[u8]) -> Hmac<Sha256> {
        // Cannot fail: HMAC takes a key of any length.
        let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(self.0.as_ref())
            .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
        mac.update(data);
        mac
    }
}

impl quinn::crypto::HmacKey for ResetKey {
    fn sign(&self, data: &[u8], signature_out: &mut [u8]) {
        let mut tag = Zeroizing::new([0u8; MAC_LEN]);
        tag.copy_from_slice(&self.mac(data).finalize().into_bytes());
        let n = signature_out.len().min(MAC_LEN);
        signature_out[..n].copy_from_slice(&tag[..n]);
    }

    fn signature_len(&self) -> usize {
        MAC_LEN
    }

    fn verify(&self, data: &[u8], signature: &[u8]) -> Result<(), quinn::crypto::CryptoError> {
        self.mac(data)
            .verify_slice(signature)
            .map_err(|_| quinn::crypto::CryptoError)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::time::Duration;

    use quinn::crypto::HmacKey;
    use quinn::{ConnectionError, Endpoint};

    use super::*;
    use crate::{tls, SERVER_NAME};

    #[test]
    fn the_key_is_the_same_for_a_database_key_and_differs_between_them() {
        let a = ResetKey::derive(&[1; 32]);
        let (mut x, mut y, mut z) = ([0u8; 32], [0u8; 32], [0u8; 32]);
        a.sign(b"connection id", &mut x);
        ResetKey::derive(&[1; 32]).sign(b"connection id", &mut y);
        ResetKey::derive(&[2; 32]).sign(b"connection id", &mut z);
        assert_eq!(x, y);
        assert_ne!(x, z);
        assert!(a.verify(b"connection id", &x).is_ok());
        assert!(a.verify(b"connection id", &z).is_err());
        assert!(a.verify(b"another id", &x).is_err());
        assert_eq!(format!("{a:?}"), "ResetKey(..)");
    }

    /// An endpoint on `socket` with the node's TLS settings and this reset key.
    fn endpoint(socket: std::net::UdpSocket, database_key: [u8; 32]) -> Endpoint {
        tls::test_endpoint(endpoint_config(&database_key), socket)
    }

    fn udp(addr: SocketAddr) -> std::net::UdpSocket {
        std::net::UdpSocket::bind(addr).unwrap()
    }

    /// A peer holds a connection to a node that then restarts (on the same port, with the same
    /// database key): the peer's next packet on the old connection ends it at once.
    #[tokio::test]
    async fn a_restarted_node_resets_the_connections_it_had() {
        let loopback: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let node = endpoint(udp(loopback), [7; 32]);
        let addr = node.local_addr().unwrap();
        let peer = endpoint(udp(loopback), [8; 32]);
        let (conn, _far) = tokio::join!(
            async { peer.connect(addr, SERVER_NAME).unwrap().await.unwrap() },
            async { node.accept().await.unwrap().await.unwrap() }
        );
        // The node "crashes": its endpoint moves off the port without a word to the peer (a
        // close would tell it), and a new one with the same key takes the port.
        node.rebind(udp(loopback)).unwrap();
        // quinn lets the old socket go once a connection's packet arrives on the new one.
        let other = endpoint(udp(loopback), [9; 32]);
        let moved = node.local_addr().unwrap();
        let (_other_conn, _other_far) = tokio::join!(
            async { other.connect(moved, SERVER_NAME).unwrap().await.unwrap() },
            async { node.accept().await.unwrap().await.unwrap() }
        );
        let socket = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                match std::net::UdpSocket::bind(addr) {
                    Ok(s) => return s,
                    Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        })
        .await
        .expect("the old socket was not released");
        let _restarted = endpoint(socket, [7; 32]);
        let (mut send, _recv) = conn.open_bi().await.unwrap();
        let _ = send.write_all(&[0; 200]).await;
        // A safety net: without the reset, only the idle timeout (30 s) would end it.
        let closed = tokio::time::timeout(Duration::from_secs(20), conn.closed())
            .await
            .expect("the connection was not reset");
        assert!(matches!(closed, ConnectionError::Reset), "{closed:?}");
    }
}
