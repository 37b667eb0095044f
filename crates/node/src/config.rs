//! Node configuration: every bound is a field here, with a documented default.

use std::net::SocketAddr;
use std::time::Duration;

/// How a [`Node`](crate::Node) runs and what it bounds.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// UDP address to bind (port 0 picks one).
    pub listen: SocketAddr,
    /// Most connections open at once, in and out (default 256).
    pub max_connections: usize,
    /// Most inbound connections from one IP address (default 8); more are refused before the
    /// QUIC handshake.
    pub max_connections_per_ip: usize,
    /// Most concurrent bidirectional streams a peer may open on a connection (default 64).
    pub max_streams_per_connection: u32,
    /// Most requests handled at once across all peers (default 1024); beyond it a stream is
    /// refused with `LimitExceeded`.
    pub max_in_flight: usize,
    /// Requests per second a peer may sustain (token bucket refill rate; default 100).
    pub peer_rate_per_sec: u32,
    /// Requests a peer may send in a burst (token bucket capacity; default 200).
    pub peer_burst: u32,
    /// Time allowed for the QUIC + transport handshake of a connection (default 10 s).
    pub handshake_timeout: Duration,
    /// Time allowed for one request stream, from open to reply (default 10 s).
    pub request_timeout: Duration,
    /// A connection idle this long is closed (default 60 s).
    pub idle_timeout: Duration,
    /// Dial attempts before giving up (default 4).
    pub dial_attempts: u32,
    /// First backoff between dial attempts; doubles each time, with ±50 % jitter (default
    /// 100 ms).
    pub dial_backoff: Duration,
    /// Capacity of the event broadcast channel (default 1024); a subscriber that lags behind
    /// loses the oldest events (the history in the store keeps everything).
    pub event_capacity: usize,
    /// Wait before the outbox retries a peer after a failed attempt; doubles with each failure,
    /// with ±50 % jitter (default 1 s).
    pub retry_initial: Duration,
    /// Longest wait between retries (default 30 s).
    pub retry_max: Duration,
    /// The outbox is looked at least this often even when nothing wakes it (default 30 s).
    pub outbox_poll: Duration,
    /// How long an outgoing message is retried before it expires, unless the sender sets its
    /// own time to live (default 7 days).
    pub message_ttl: Duration,
    /// The longest time to live a message may have (default 30 days).
    pub max_message_ttl: Duration,
    /// Our mailbox is checked this often (and right after joining the DHT; default 60 s).
    pub mailbox_poll: Duration,
    /// A message held in a contact's mailbox is deposited again once this long has passed since
    /// its last deposit, if the contact is still out of reach (default 1 h): its holders may all
    /// have left, taking their copies with them. Holders that still have it just acknowledge it.
    pub mailbox_redeposit: Duration,
    /// Addresses of DHT nodes to join through (node ids unknown; each proves its own).
    pub bootstrap: Vec<SocketAddr>,
    /// Addresses our DHT peer record advertises (empty: the bound address if it is a specific
    /// IP; see also [`Node::set_advertised`](crate::Node::set_advertised)).
    pub advertise: Vec<SocketAddr>,
    /// The DHT's tunables (default: the protocol's values, `PROTOCOL.md` section 10.1).
    pub dht: dp2ptcs_dht::DhtConfig,
    /// Speak messaging protocol version 2 with peers that do (default true): the outbox then
    /// sends a contact's waiting messages several batches at a time on one stream instead of
    /// one batch per round trip. `false` speaks only version 1, as earlier releases did.
    pub pipelining: bool,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 0)),
            max_connections: 256,
            max_connections_per_ip: 8,
            max_streams_per_connection: 64,
            max_in_flight: 1024,
            peer_rate_per_sec: 100,
            peer_burst: 200,
            handshake_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            dial_attempts: 4,
            dial_backoff: Duration::from_millis(100),
            event_capacity: 1024,
            retry_initial: Duration::from_secs(1),
            retry_max: Duration::from_secs(30),
            outbox_poll: Duration::from_secs(30),
            message_ttl: Duration::from_secs(7 * 24 * 60 * 60),
            max_message_ttl: Duration::from_secs(30 * 24 * 60 * 60),
            mailbox_poll: Duration::from_secs(60),
            mailbox_redeposit: Duration::from_secs(60 * 60),
            bootstrap: Vec::new(),
            advertise: Vec::new(),
            dht: dp2ptcs_dht::DhtConfig::default(),
            pipelining: true,
        }
    }
}

impl NodeConfig {
    /// Checks the settings whose range the node relies on; [`Node::start`](crate::Node::start)
    /// refuses a configuration that fails:
    /// - `max_message_ttl` above zero and at most 30 days (the longest a mailbox holder keeps an
    ///   item: a message's expiry must be the same in every copy deposited);
    /// - `message_ttl` above zero and at most `max_message_ttl`;
    /// - the timeouts and intervals above zero (a `retry_initial` above `retry_max` is capped
    ///   by it).
    pub fn check(&self) -> Result<(), crate::NodeError> {
        let invalid = |what: String| Err(crate::NodeError::InvalidConfig(what));
        let longest = Duration::from_millis(dp2ptcs_dht::MAX_MAILBOX_TTL_MS);
        if self.max_message_ttl.is_zero() || self.max_message_ttl > longest {
            return invalid(format!(
                "max_message_ttl must be above zero and at most {longest:?} (30 days)"
            ));
        }
        if self.message_ttl.is_zero() || self.message_ttl > self.max_message_ttl {
            return invalid("message_ttl must be above zero and at most max_message_ttl".into());
        }
        for (name, value) in [
            ("handshake_timeout", self.handshake_timeout),
            ("request_timeout", self.request_timeout),
            ("idle_timeout", self.idle_timeout),
            ("retry_initial", self.retry_initial),
            ("outbox_poll", self.outbox_poll),
            ("mailbox_poll", self.mailbox_poll),
        ] {
            if value.is_zero() {
                return invalid(format!("{name} must be above zero"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_defaults_pass_and_settings_out_of_range_are_refused() {
        assert!(NodeConfig::default().check().is_ok());
        const DAY: Duration = Duration::from_secs(24 * 60 * 60);
        type Change = fn(&mut NodeConfig);
        let refused: [(&str, Change); 6] = [
            ("max_message_ttl", |c| c.max_message_ttl = 31 * DAY),
            ("max_message_ttl", |c| c.max_message_ttl = Duration::ZERO),
            ("message_ttl", |c| c.message_ttl = Duration::ZERO),
            ("message_ttl", |c| c.max_message_ttl = DAY),
            ("outbox_poll", |c| c.outbox_poll = Duration::ZERO),
            ("retry_initial", |c| c.retry_initial = Duration::ZERO),
        ];
        for (name, change) in refused {
            let mut config = NodeConfig::default();
            change(&mut config);
            match config.check() {
                Err(crate::NodeError::InvalidConfig(why)) => {
                    assert!(why.starts_with(&format!("{name} must")), "{name}: {why}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        // Capped by retry_max, as the outbox does.
        let config = NodeConfig {
            retry_initial: NodeConfig::default().retry_max * 2,
            ..NodeConfig::default()
        };
        assert!(config.check().is_ok());
    }
}
