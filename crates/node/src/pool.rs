//! The messaging connections a node keeps: one per authenticated peer, used for every request
//! to it.
//!
//! Two nodes that dial each other at the same moment each end with two connections, and each
//! would keep the one it dialed itself (its handshake completes last) and keep it alive: two
//! connections between them for good, a slot of `max_connections` and its memory each. So both
//! ends keep the same one instead, **the connection dialed by the smaller node id**, and the
//! other one's dialer closes it once it carries nothing (`PROTOCOL.md` section 9.1).
//!
//! A peer that crashed and came back dials us too, while the connection we had to it looks
//! alive until a packet on it meets the peer's stateless reset (`reset.rs`). When that
//! connection is the one the rule prefers, the peer's new one is kept beside it as a *spare*:
//! requests go on the spare until the preferred one is heard from again (a dead one never is,
//! and closes at our next keep-alive), and it takes the preferred one's place if that closes.

use std::collections::HashMap;

use dp2ptcs_types::NodeId;
use quinn::{Connection, Side};

/// The pooled connections of a node (`us`).
#[derive(Debug)]
pub(crate) struct Pool {
    us: NodeId,
    peers: HashMap<NodeId, Pooled>,
}

#[derive(Debug)]
struct Pooled {
    /// The connection requests to the peer go on.
    conn: Connection,
    /// A connection the peer dialed while `conn`, which we dialed, was the one both ends keep:
    /// `conn` if that one closes, else closed by the peer once idle.
    spare: Option<Connection>,
    /// What `conn` had received when the spare came ([`received`]).
    heard: u64,
}

fn live(conn: &Connection) -> bool {
    conn.close_reason().is_none()
}

/// Authenticated frames `conn` has received that show the peer is there: acknowledgements (of
/// our keep-alives, for one), pings and stream data. (Datagrams are counted before they are
/// authenticated: anyone could send one.)
fn received(conn: &Connection) -> u64 {
    let frames = conn.stats().frame_rx;
    frames.acks + frames.ping + frames.stream
}

fn same(a: &Connection, b: &Connection) -> bool {
    a.stable_id() == b.stable_id()
}

impl Pool {
    pub(crate) fn new(us: NodeId) -> Self {
        Self {
            us,
            peers: HashMap::new(),
        }
    }

    /// Whether `conn` to `peer` is the one both ends keep when they have two: the one dialed
    /// by the smaller node id.
    fn preferred(&self, peer: &NodeId, conn: &Connection) -> bool {
        (conn.side() == Side::Client) == (self.us < *peer)
    }

    /// The connection to `peer` requests go on, if a live one is pooled: the spare while the
    /// pooled one has not been heard from since the spare came, and in its place once it closed.
    pub(crate) fn get(&mut self, peer: &NodeId) -> Option<Connection> {
        let entry = self.peers.get_mut(peer)?;
        if !live(&entry.conn) {
            match entry.spare.take().filter(live) {
                Some(spare) => entry.conn = spare,
                None => {
                    self.peers.remove(peer);
                    return None;
                }
            }
        }
        if let Some(spare) = entry.spare.as_ref().filter(|s| live(s)) {
            if received(&entry.conn) == entry.heard {
                return Some(spare.clone());
            }
        }
        Some(entry.conn.clone())
    }

    /// Pools `conn`, just authenticated as `peer`'s: it replaces the pooled connection, unless
    /// that one is live and preferred and `conn` is not. Then `conn` is the spare if the peer
    /// dialed it, and kept by no one if we did (the caller that dialed it uses it once).
    pub(crate) fn adopt(&mut self, peer: NodeId, conn: &Connection) {
        let keep_old = self.peers.get(&peer).is_some_and(|e| {
            live(&e.conn)
                && !same(&e.conn, conn)
                && self.preferred(&peer, &e.conn)
                && !self.preferred(&peer, conn)
        });
        if keep_old {
            if conn.side() == Side::Server {
                if let Some(entry) = self.peers.get_mut(&peer) {
                    entry.heard = received(&entry.conn);
                    entry.spare = Some(conn.clone());
                }
            }
        } else {
            self.peers.insert(
                peer,
                Pooled {
                    conn: conn.clone(),
                    spare: None,
                    heard: 0,
                },
            );
        }
    }

    /// Forgets `conn` (closed, or failed a request), pooled or spare for `peer`: a live spare
    /// takes the place of the pooled one.
    pub(crate) fn evict(&mut self, peer: &NodeId, conn: &Connection) {
        let Some(entry) = self.peers.get_mut(peer) else {
            return;
        };
        if entry.spare.as_ref().is_some_and(|s| same(s, conn)) {
            entry.spare = None;
        } else if same(&entry.conn, conn) {
            match entry.spare.take().filter(live) {
                Some(spare) => entry.conn = spare,
                None => {
                    self.peers.remove(peer);
                }
            }
        }
    }

    /// Whether `conn` is `peer`'s pooled connection or its spare: one that is neither carries
    /// only the requests that took it before, and its dialer closes it once they are done.
    pub(crate) fn keeps(&self, peer: &NodeId, conn: &Connection) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|e| same(&e.conn, conn) || e.spare.as_ref().is_some_and(|s| same(s, conn)))
    }

    /// The peers with a live pooled connection (or spare), sorted.
    pub(crate) fn connected(&self) -> Vec<NodeId> {
        let mut out: Vec<NodeId> = self
            .peers
            .iter()
            .filter(|(_, e)| live(&e.conn) || e.spare.as_ref().is_some_and(live))
            .map(|(id, _)| *id)
            .collect();
        out.sort();
        out
    }

    /// Forgets every connection (at shutdown, once the endpoint closed them).
    pub(crate) fn clear(&mut self) {
        self.peers.clear();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use quinn::Endpoint;

    use super::*;
    use crate::{tls, SERVER_NAME};

    /// A QUIC endpoint on loopback with the node's TLS settings.
    fn endpoint() -> Endpoint {
        tls::test_endpoint(
            quinn::EndpointConfig::default(),
            std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
        )
    }

    /// Real connections between two endpoints, as `us` sees them: one we dialed (client side)
    /// and one the peer dialed (server side).
    struct Conns {
        ours: Connection,
        theirs: Connection,
        /// The peer's ends (a connection closes when every handle to it is dropped): of ours,
        /// and of theirs.
        far: (Connection, Connection),
        _endpoints: (Endpoint, Endpoint),
    }

    async fn dial(from: &Endpoint, to: &Endpoint) -> (Connection, Connection) {
        let addr = to.local_addr().unwrap();
        tokio::join!(
            async { from.connect(addr, SERVER_NAME).unwrap().await.unwrap() },
            async { to.accept().await.unwrap().await.unwrap() }
        )
    }

    async fn conns() -> Conns {
        let (us, peer) = (endpoint(), endpoint());
        let (ours, far_ours) = dial(&us, &peer).await;
        let (far_theirs, theirs) = dial(&peer, &us).await;
        assert_eq!((ours.side(), theirs.side()), (Side::Client, Side::Server));
        // The last packets of the handshakes arrive.
        tokio::time::sleep(Duration::from_millis(200)).await;
        Conns {
            ours,
            theirs,
            far: (far_ours, far_theirs),
            _endpoints: (us, peer),
        }
    }

    const SMALL: NodeId = NodeId::from_bytes([1; 32]);
    const LARGE: NodeId = NodeId::from_bytes([2; 32]);

    fn is(a: Option<Connection>, b: &Connection) -> bool {
        a.is_some_and(|a| same(&a, b))
    }

    /// The connection pooled for `peer`, spare aside.
    fn pooled(pool: &Pool, peer: &NodeId) -> Connection {
        pool.peers[peer].conn.clone()
    }

    /// Has the far end of `conn` send it stream data, and waits until it arrived.
    async fn hear_from(far: &Connection, conn: &Connection) {
        let before = received(conn);
        let (mut send, _recv) = far.open_bi().await.unwrap();
        send.write_all(b"x").await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), async {
            while received(conn) == before {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn both_ends_keep_the_connection_the_smaller_id_dialed_in_either_order() {
        let c = conns().await;
        // We have the smaller id: our dial is kept, whichever completes first.
        for order in [[&c.ours, &c.theirs], [&c.theirs, &c.ours]] {
            let mut pool = Pool::new(SMALL);
            for conn in order {
                pool.adopt(LARGE, conn);
            }
            assert!(same(&pooled(&pool, &LARGE), &c.ours));
            assert!(pool.keeps(&LARGE, &c.ours));
            assert_eq!(pool.connected(), vec![LARGE]);
        }
        // We have the larger id: the peer's dial is kept, and ours by no one.
        for order in [[&c.ours, &c.theirs], [&c.theirs, &c.ours]] {
            let mut pool = Pool::new(LARGE);
            for conn in order {
                pool.adopt(SMALL, conn);
            }
            assert!(is(pool.get(&SMALL), &c.theirs));
            assert!(!pool.keeps(&SMALL, &c.ours), "ours is left to close");
        }
    }

    #[tokio::test]
    async fn the_peers_dial_carries_requests_until_ours_is_heard_from() {
        let c = conns().await;
        let mut pool = Pool::new(SMALL);
        pool.adopt(LARGE, &c.ours);
        pool.adopt(LARGE, &c.theirs);
        assert!(
            pool.keeps(&LARGE, &c.theirs),
            "the peer's dial is the spare"
        );
        // Ours may be dead (the peer restarted): nothing came on it since the peer dialed.
        assert!(is(pool.get(&LARGE), &c.theirs));
        assert!(is(pool.get(&LARGE), &c.theirs));
        // It is alive after all: back to it.
        hear_from(&c.far.0, &c.ours).await;
        assert!(is(pool.get(&LARGE), &c.ours));
        assert!(pool.keeps(&LARGE, &c.theirs));
    }

    #[tokio::test]
    async fn the_spare_takes_the_place_of_a_connection_that_failed_or_closed() {
        // A request failed on ours: evicted.
        let c = conns().await;
        let mut pool = Pool::new(SMALL);
        pool.adopt(LARGE, &c.ours);
        pool.adopt(LARGE, &c.theirs);
        hear_from(&c.far.0, &c.ours).await;
        pool.evict(&LARGE, &c.ours);
        assert!(is(pool.get(&LARGE), &c.theirs));
        assert!(!pool.keeps(&LARGE, &c.ours));

        // Ours closed, not evicted yet.
        let c = conns().await;
        let mut pool = Pool::new(SMALL);
        pool.adopt(LARGE, &c.ours);
        pool.adopt(LARGE, &c.theirs);
        hear_from(&c.far.0, &c.ours).await;
        c.ours.close(0u32.into(), b"gone");
        assert!(is(pool.get(&LARGE), &c.theirs));
        assert_eq!(pool.connected(), vec![LARGE]);

        // The spare closing leaves ours.
        let c = conns().await;
        let mut pool = Pool::new(SMALL);
        pool.adopt(LARGE, &c.ours);
        pool.adopt(LARGE, &c.theirs);
        pool.evict(&LARGE, &c.theirs);
        assert!(is(pool.get(&LARGE), &c.ours));
        assert!(!pool.keeps(&LARGE, &c.theirs));
    }

    #[tokio::test]
    async fn a_closed_connection_is_not_given_out_and_a_new_one_replaces_it() {
        let c = conns().await;
        let mut pool = Pool::new(SMALL);
        pool.adopt(LARGE, &c.ours);
        c.ours.close(0u32.into(), b"gone");
        assert!(pool.get(&LARGE).is_none());
        assert!(pool.connected().is_empty());
        // A closed preferred one does not keep a new one out.
        let c = conns().await;
        let mut pool = Pool::new(SMALL);
        pool.adopt(LARGE, &c.ours);
        c.ours.close(0u32.into(), b"gone");
        pool.adopt(LARGE, &c.theirs);
        assert!(is(pool.get(&LARGE), &c.theirs));
        assert!(same(&pooled(&pool, &LARGE), &c.theirs));
        // Evicting a connection the pool does not hold changes nothing.
        pool.evict(&LARGE, &c.ours);
        assert!(is(pool.get(&LARGE), &c.theirs));
        pool.clear();
        assert!(pool.get(&LARGE).is_none());
    }
}
