//! Bounds: a token bucket per peer and a count of connections per IP address.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// A token bucket: `capacity` tokens, refilled at `rate` per second.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    capacity: f64,
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    pub(crate) fn new(capacity: u32, rate: u32, now: Instant) -> Self {
        Self {
            capacity: f64::from(capacity.max(1)),
            rate: f64::from(rate),
            tokens: f64::from(capacity.max(1)),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts open connections per IP and in total; a slot is released when its guard drops.
#[derive(Debug, Clone, Default)]
pub(crate) struct ConnectionLimiter {
    inner: Arc<Mutex<LimiterState>>,
}

#[derive(Debug, Default)]
struct LimiterState {
    per_ip: HashMap<IpAddr, usize>,
    total: usize,
}

/// A held connection slot.
#[derive(Debug)]
pub(crate) struct ConnectionSlot {
    limiter: ConnectionLimiter,
    ip: Option<IpAddr>,
}

impl ConnectionLimiter {
    fn state(&self) -> std::sync::MutexGuard<'_, LimiterState> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A slot for a connection from `ip` (`None` for one we dial), if under both limits.
    pub(crate) fn try_acquire(
        &self,
        ip: Option<IpAddr>,
        max_total: usize,
        max_per_ip: usize,
    ) -> Option<ConnectionSlot> {
        let mut st = self.state();
        if st.total >= max_total {
            return None;
        }
        if let Some(ip) = ip {
            let n = st.per_ip.entry(ip).or_insert(0);
            if *n >= max_per_ip {
                return None;
            }
            *n += 1;
        }
        st.total += 1;
        Some(ConnectionSlot {
            limiter: self.clone(),
            ip,
        })
    }
}

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        let mut st = self.limiter.state();
        st.total = st.total.saturating_sub(1);
        if let Some(ip) = self.ip {
            if let Some(n) = st.per_ip.get_mut(&ip) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    st.per_ip.remove(&ip);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    #[test]
    fn bucket_refills_and_caps() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(2, 10, t0);
        assert!(b.try_take(t0));
        assert!(b.try_take(t0));
        assert!(!b.try_take(t0));
        assert!(b.try_take(t0 + Duration::from_millis(100)));
        assert!(!b.try_take(t0 + Duration::from_millis(100)));
        let later = t0 + Duration::from_secs(100);
        assert!(b.try_take(later));
        assert!(b.try_take(later));
        assert!(!b.try_take(later));
    }

    #[test]
    fn limiter_counts_per_ip_and_releases() {
        let l = ConnectionLimiter::default();
        let ip: IpAddr = [127, 0, 0, 1].into();
        let a = l.try_acquire(Some(ip), 10, 2).unwrap();
        let _b = l.try_acquire(Some(ip), 10, 2).unwrap();
        assert!(l.try_acquire(Some(ip), 10, 2).is_none());
        assert!(l.try_acquire(Some([127, 0, 0, 2].into()), 10, 2).is_some());
        drop(a);
        let _c = l.try_acquire(Some(ip), 10, 2).unwrap();
        assert!(l.try_acquire(None, 2, 2).is_none());
    }
}
