//! Ratchet (DH) key pairs: ours (`DHs`) and the remote public key (`DHr`).

use rand_core::{CryptoRng, RngCore};
use x25519_dalek::{PublicKey as X25519PublicKey, SharedSecret as X25519Shared, StaticSecret};

/// An X25519 ratchet public key as carried in message headers (32 bytes, RFC 7748).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct RatchetPublicKey(pub(crate) [u8; 32]);

impl RatchetPublicKey {
    /// Wraps 32 bytes. Every 32-byte string is a valid X25519 public key; small-order keys are
    /// caught when a DH with them yields zeros.
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
    /// The 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl std::fmt::Debug for RatchetPublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RatchetPublicKey({})", hex::encode(self.0))
    }
}

/// Our ratchet key pair. The secret is zeroized on drop (x25519-dalek `zeroize` feature);
/// `Debug` shows only the public key.
#[derive(Clone)]
pub struct RatchetKeyPair {
    secret: StaticSecret,
    public: RatchetPublicKey,
}

impl RatchetKeyPair {
    /// `GENERATE_DH()`.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self::from_secret(StaticSecret::random_from_rng(&mut *rng))
    }

    /// The key pair of a given X25519 secret (clamped on use).
    pub fn from_secret_bytes(secret: [u8; 32]) -> Self {
        Self::from_secret(StaticSecret::from(secret))
    }

    pub(crate) fn from_secret(secret: StaticSecret) -> Self {
        let public = RatchetPublicKey(X25519PublicKey::from(&secret).to_bytes());
        Self { secret, public }
    }

    /// A pair whose public key the caller already knows to match `secret`.
    pub(crate) fn from_parts(secret: StaticSecret, public: [u8; 32]) -> Self {
        Self {
            secret,
            public: RatchetPublicKey(public),
        }
    }

    /// The public half.
    pub fn public(&self) -> &RatchetPublicKey {
        &self.public
    }

    pub(crate) fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    pub(crate) fn diffie_hellman(&self, theirs: &RatchetPublicKey) -> X25519Shared {
        self.secret.diffie_hellman(&X25519PublicKey::from(theirs.0))
    }
}

impl std::fmt::Debug for RatchetKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self { secret: _, public } = self;
        f.debug_struct("RatchetKeyPair")
            .field("public", public)
            .field("secret", &"<redacted>")
            .finish()
    }
}
