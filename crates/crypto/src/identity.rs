//! Ed25519 identities.
//!
//! An identity is an Ed25519 key pair (RFC 8032). Its node id is `SHA-256(public key)`.

use std::fmt;

use dp2ptcs_types::NodeId;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

/// Our own identity: the Ed25519 secret key. Zeroized on drop; `Debug` shows only the node id.
#[derive(Clone)]
pub struct Identity {
    signing: SigningKey,
}

impl Identity {
    /// A fresh identity from the caller's RNG.
    pub fn generate<R: RngCore + CryptoRng>(rng: &mut R) -> Self {
        Self {
            signing: SigningKey::generate(rng),
        }
    }

    /// The identity whose 32-byte Ed25519 secret seed is `seed`.
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self {
            signing: SigningKey::from_bytes(seed),
        }
    }

    /// The 32-byte secret seed, for the keystore. The copy is wiped when dropped.
    pub fn seed(&self) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(self.signing.to_bytes())
    }

    /// The public half.
    pub fn public(&self) -> PublicIdentity {
        PublicIdentity {
            key: self.signing.verifying_key(),
        }
    }

    /// Our node id.
    pub fn node_id(&self) -> NodeId {
        self.public().node_id()
    }

    /// Signs `message` (pure Ed25519, RFC 8032).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.signing.sign(message).to_bytes()
    }

    /// The underlying dalek signing key, for the protocol modules of this crate.
    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self { signing: _ } = self;
        f.debug_struct("Identity")
            .field("node_id", &self.node_id())
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// Someone's public identity: a validated Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicIdentity {
    key: VerifyingKey,
}

/// Why 32 bytes are not a usable Ed25519 public key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PublicKeyError {
    /// The bytes do not decode to a point on the curve.
    #[error("not a valid Ed25519 public key")]
    Invalid,
    /// The point has small order, so signatures by it prove nothing.
    #[error("weak Ed25519 public key (small-order point)")]
    Weak,
}

impl PublicIdentity {
    /// Validates a 32-byte Ed25519 public key: it must decode and must not be a small-order point.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, PublicKeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|_| PublicKeyError::Invalid)?;
        if key.is_weak() {
            return Err(PublicKeyError::Weak);
        }
        Ok(Self { key })
    }

    /// The 32-byte encoding.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.key.to_bytes()
    }

    /// The node id: SHA-256 of the 32-byte encoding.
    pub fn node_id(&self) -> NodeId {
        NodeId::from_public_key(&self.key.to_bytes())
    }

    /// Checks an Ed25519 signature by this key over `message` (strict verification: rejects
    /// non-canonical and malleable signatures).
    pub fn verify(&self, message: &[u8], signature: &[u8; 64]) -> bool {
        self.key
            .verify_strict(message, &Signature::from_bytes(signature))
            .is_ok()
    }

    /// The underlying dalek verifying key, for the protocol modules of this crate.
    pub(crate) fn verifying_key(&self) -> &VerifyingKey {
        &self.key
    }
}

impl fmt::Debug for PublicIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicIdentity({})", hex::encode(self.key.to_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    #[test]
    fn rfc8032_test_vector_1() {
        // RFC 8032, section 7.1, TEST 1.
        let seed: [u8; 32] =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .unwrap()
                .try_into()
                .unwrap();
        let id = Identity::from_seed(&seed);
        assert_eq!(
            hex::encode(id.public().to_bytes()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
        let sig = id.sign(b"");
        assert_eq!(
            hex::encode(sig),
            "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155\
             5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
        );
        assert!(id.public().verify(b"", &sig));
        assert!(!id.public().verify(b"x", &sig));
    }

    #[test]
    fn debug_does_not_leak_the_secret() {
        let id = Identity::generate(&mut ChaCha20Rng::seed_from_u64(7));
        let dbg = format!("{id:?}");
        let seed_hex = hex::encode(*id.seed());
        assert!(!dbg.contains(&seed_hex));
        assert!(!dbg.contains(&seed_hex[..16]));
        assert!(dbg.contains("redacted"));
    }

    #[test]
    fn weak_and_invalid_keys_are_rejected() {
        // The identity point (small order).
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        assert_eq!(
            PublicIdentity::from_bytes(&identity_point),
            Err(PublicKeyError::Weak)
        );
        // y = 2 is not on the curve.
        let mut off_curve = [0u8; 32];
        off_curve[0] = 2;
        assert_eq!(
            PublicIdentity::from_bytes(&off_curve),
            Err(PublicKeyError::Invalid)
        );
    }
}
