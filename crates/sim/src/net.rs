//! The simulated network: one-way latency drawn from a log-normal distribution, and loss.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

/// How messages travel between simulated nodes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NetModel {
    /// Median one-way latency, milliseconds.
    pub median_latency_ms: f64,
    /// Standard deviation of the latency's natural logarithm (0.5 gives a p99 about 3.2 times
    /// the median).
    pub latency_sigma: f64,
    /// Probability that one message (request or response) is lost.
    pub loss: f64,
}

impl NetModel {
    /// A one-way latency in whole milliseconds (at least 1).
    pub fn latency_ms(&self, rng: &mut ChaCha8Rng) -> u64 {
        // Box-Muller: a standard normal from two uniforms.
        let u1: f64 = rng.gen_range(f64::EPSILON..1.0);
        let u2: f64 = rng.gen::<f64>();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        let ms = self.median_latency_ms * (self.latency_sigma * z).exp();
        (ms.round() as u64).max(1)
    }

    /// Whether the next message is lost.
    pub fn lost(&self, rng: &mut ChaCha8Rng) -> bool {
        self.loss > 0.0 && rng.gen_bool(self.loss.min(1.0))
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    #[test]
    fn latency_median_is_about_the_configured_one() {
        let model = NetModel {
            median_latency_ms: 40.0,
            latency_sigma: 0.5,
            loss: 0.0,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let mut v: Vec<u64> = (0..10_001).map(|_| model.latency_ms(&mut rng)).collect();
        v.sort_unstable();
        assert!((36..=44).contains(&v[5000]), "median {}", v[5000]);
        assert!(!model.lost(&mut rng));
    }
}
