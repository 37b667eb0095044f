//! The cryptography of DP2PTCS.
//!
//! - [`Identity`]: a self-sovereign Ed25519 identity; [`PublicIdentity`] is its public half and
//!   names a node by [`NodeId`](dp2ptcs_types::NodeId) = SHA-256(public key).
//! - [`keystore`]: the encrypted `node.key` file format (Argon2id + AES-256-GCM).
//! - [`ContactUri`]: the self-signed `dp2ptcs://contact` URI people exchange as text or QR code.
//! - [`SafetyNumber`]: the 60-digit numeric fingerprint two people compare face to face.
//! - [`seal`]: authenticated encryption of local state under a 32-byte key.
//! - [`x3dh`]: the X3DH key agreement (signed prekey bundles, one-time prekeys, initiator and
//!   responder).
//! - [`ratchet`]: the Double Ratchet ([`Session`], [`SharedSession`] for concurrent use) and its
//!   versioned, sealable pickles.
//!
//! The crate is pure: it never touches a file, a socket or the clock, and takes randomness from
//! the caller. Reading and writing files is the caller's job; this crate only turns bytes into
//! validated values and back. `PROTOCOL.md` at the root of the repository specifies every byte.

pub mod contact_uri;
mod identity;
pub mod kdf;
pub mod keystore;
pub mod safety_number;
pub mod seal;

#[doc(hidden)]
pub mod fuzzing;
pub mod ratchet;
pub mod x3dh;

pub use contact_uri::{ContactUri, ContactUriError};
pub use identity::{Identity, PublicIdentity, PublicKeyError};
pub use keystore::{KdfParams, KeystoreError, UnlockedKeystore};
pub use safety_number::{SafetyNumber, SafetyNumberError};

pub use ratchet::{Plaintext, RatchetMessage, Session, SharedSession};
pub use x3dh::{PreKeyBundle, PreKeyStore};
