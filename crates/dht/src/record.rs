//! Signed, versioned, expiring DHT records and their canonical encoding.
//!
//! ```text
//! body    = version (0x01) || kind (1 byte: 0x01 peer, 0x02 prekey bundle)
//!        || owner (32, Ed25519 public key)
//!        || sequence (u64 big-endian) || expires_at_ms (u64 big-endian, Unix milliseconds)
//!        || payload_len (u16 big-endian) || payload
//! signed  = "dp2ptcs/v1/dht-record" (21 ASCII bytes, no terminator) || body
//! record  = body || signature (64, Ed25519 by owner over `signed`)
//!
//! peer payload    = count (1 byte, at most 8)
//!                   || count × ( 0x04 || IPv4 (4) || port (u16 BE)
//!                              | 0x06 || IPv6 (16) || port (u16 BE) )
//!                   || has_mix_key (0x00 or 0x01) [|| mix key (32, X25519)]
//! prekey payload  = the prekey bundle encoding of PROTOCOL.md section 7.1; its identity key must
//!                   equal `owner` and its signed-prekey signature must verify
//! ```
//!
//! A record is stored under its [`RecordKey`]: the owner's node id (`SHA-256(owner)`) and its
//! kind, at the [`K`](crate::K) nodes closest to that id. A [`Record`] value is always verified:
//! the only ways to get one are [`Record::sign`] and [`Record::from_bytes`], which checks the
//! signature, the payload and every length. Freshness (expiry, sequence) is the store's job.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use dp2ptcs_crypto::x3dh::BundleError;
use dp2ptcs_crypto::{Identity, PreKeyBundle, PublicIdentity, PublicKeyError};
use dp2ptcs_types::NodeId;

/// Domain-separation prefix of every record signature.
pub const RECORD_SIGNATURE_CONTEXT: &[u8] = b"dp2ptcs/v1/dht-record";
/// First byte of a record's body.
pub const RECORD_VERSION: u8 = 1;
/// Most addresses one peer record may list.
pub const MAX_PEER_ADDRESSES: usize = 8;
/// Largest encoded record (body and signature), in bytes: the wire bound
/// [`MAX_DHT_RECORD_LEN`](dp2ptcs_types::limits::MAX_DHT_RECORD_LEN).
pub const MAX_RECORD_LEN: usize = dp2ptcs_types::limits::MAX_DHT_RECORD_LEN;
const _: () = assert!(
    MAX_RECORD_LEN == 1024,
    "PROTOCOL.md section 10.1 fixes 1024 bytes"
);
/// Size of the fixed part of a body before the payload.
const HEADER_LEN: usize = 1 + 1 + 32 + 8 + 8 + 2;
const SIGNATURE_LEN: usize = 64;

/// What a record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum RecordKind {
    /// Where a node can be reached ([`PeerRecord`]).
    Peer = 1,
    /// A node's X3DH prekey bundle, for sessions started while it is offline.
    PrekeyBundle = 2,
}

impl RecordKind {
    /// The kind byte.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The kind with this byte.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Peer),
            2 => Some(Self::PrekeyBundle),
            _ => None,
        }
    }
}

/// Where a record lives: the owner's node id and the record kind. The DHT key is the owner id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordKey {
    /// `SHA-256(owner public key)`.
    pub owner: NodeId,
    /// Which of the owner's records.
    pub kind: RecordKind,
}

/// The addresses a node can be reached at, and (later) its mix key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    /// Addresses to dial, most preferred first; at most [`MAX_PEER_ADDRESSES`].
    pub addresses: Vec<SocketAddr>,
    /// The node's X25519 mix key for onion routing, when it relays.
    pub mix_key: Option<[u8; 32]>,
}

/// A record's content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordPayload {
    /// A peer record.
    Peer(PeerRecord),
    /// A prekey bundle.
    PrekeyBundle(Box<PreKeyBundle>),
}

impl RecordPayload {
    /// The kind of record this payload makes.
    pub fn kind(&self) -> RecordKind {
        match self {
            Self::Peer(_) => RecordKind::Peer,
            Self::PrekeyBundle(_) => RecordKind::PrekeyBundle,
        }
    }

    fn encode(&self) -> Vec<u8> {
        match self {
            Self::Peer(p) => {
                let mut out = Vec::with_capacity(1 + p.addresses.len() * 19 + 33);
                out.push(p.addresses.len() as u8);
                for a in &p.addresses {
                    match a.ip() {
                        IpAddr::V4(ip) => {
                            out.push(4);
                            out.extend_from_slice(&ip.octets());
                        }
                        IpAddr::V6(ip) => {
                            out.push(6);
                            out.extend_from_slice(&ip.octets());
                        }
                    }
                    out.extend_from_slice(&a.port().to_be_bytes());
                }
                match &p.mix_key {
                    Some(k) => {
                        out.push(1);
                        out.extend_from_slice(k);
                    }
                    None => out.push(0),
                }
                out
            }
            Self::PrekeyBundle(b) => b.to_bytes(),
        }
    }

    fn decode(kind: RecordKind, owner: &PublicIdentity, bytes: &[u8]) -> Result<Self, RecordError> {
        match kind {
            RecordKind::Peer => {
                let mut r = Reader(bytes);
                let count = r.u8()? as usize;
                if count > MAX_PEER_ADDRESSES {
                    return Err(RecordError::TooManyAddresses(count));
                }
                let mut addresses = Vec::with_capacity(count);
                for _ in 0..count {
                    let ip = match r.u8()? {
                        4 => IpAddr::V4(Ipv4Addr::from(r.array::<4>()?)),
                        6 => IpAddr::V6(Ipv6Addr::from(r.array::<16>()?)),
                        other => return Err(RecordError::AddressFamily(other)),
                    };
                    let port = u16::from_be_bytes(r.array::<2>()?);
                    addresses.push(SocketAddr::new(ip, port));
                }
                let mix_key = match r.u8()? {
                    0 => None,
                    1 => Some(r.array::<32>()?),
                    other => return Err(RecordError::Flag(other)),
                };
                if !r.0.is_empty() {
                    return Err(RecordError::Malformed("bytes after the peer payload"));
                }
                Ok(Self::Peer(PeerRecord { addresses, mix_key }))
            }
            RecordKind::PrekeyBundle => {
                let bundle = PreKeyBundle::from_bytes(bytes)?;
                if bundle.identity() != owner {
                    return Err(RecordError::BundleOwnerMismatch);
                }
                bundle.verify()?;
                Ok(Self::PrekeyBundle(Box::new(bundle)))
            }
        }
    }
}

/// Why a record is malformed, forged, or refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecordError {
    /// The encoding is longer than [`MAX_RECORD_LEN`].
    #[error("record is {0} bytes, at most {MAX_RECORD_LEN}")]
    TooLong(usize),
    /// The encoding ends early or has bytes where none may be.
    #[error("malformed record: {0}")]
    Malformed(&'static str),
    /// Unknown version byte.
    #[error("unknown record version {0}")]
    UnknownVersion(u8),
    /// Unknown kind byte.
    #[error("unknown record kind {0}")]
    UnknownKind(u8),
    /// The owner key is not a usable Ed25519 key.
    #[error("record owner key: {0}")]
    OwnerKey(#[from] PublicKeyError),
    /// The signature does not verify under the owner key.
    #[error("record signature does not verify")]
    BadSignature,
    /// A peer record lists too many addresses.
    #[error("peer record lists {0} addresses, at most {MAX_PEER_ADDRESSES}")]
    TooManyAddresses(usize),
    /// An address family byte is neither 4 nor 6.
    #[error("unknown address family {0}")]
    AddressFamily(u8),
    /// A flag byte is neither 0 nor 1.
    #[error("invalid flag byte {0}")]
    Flag(u8),
    /// The prekey bundle is malformed or its signed prekey signature does not verify.
    #[error("prekey bundle: {0}")]
    Bundle(#[from] BundleError),
    /// The prekey bundle's identity is not the record's owner.
    #[error("prekey bundle identity differs from the record owner")]
    BundleOwnerMismatch,
}

/// A verified record. Its encoding is in the module notes of `src/record.rs` and PROTOCOL.md
/// section 10.2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    owner: PublicIdentity,
    sequence: u64,
    expires_at_ms: u64,
    payload: RecordPayload,
    signature: [u8; 64],
}

impl Record {
    /// Signs a new record by `owner`. `sequence` must grow with every new version the owner
    /// publishes; `expires_at_ms` is a Unix time in milliseconds.
    pub fn sign(
        owner: &Identity,
        sequence: u64,
        expires_at_ms: u64,
        payload: RecordPayload,
    ) -> Result<Self, RecordError> {
        if let RecordPayload::Peer(p) = &payload {
            if p.addresses.len() > MAX_PEER_ADDRESSES {
                return Err(RecordError::TooManyAddresses(p.addresses.len()));
            }
        }
        if let RecordPayload::PrekeyBundle(b) = &payload {
            if *b.identity() != owner.public() {
                return Err(RecordError::BundleOwnerMismatch);
            }
        }
        let mut record = Self {
            owner: owner.public(),
            sequence,
            expires_at_ms,
            payload,
            signature: [0; 64],
        };
        let body = record.body();
        if body.len() + SIGNATURE_LEN > MAX_RECORD_LEN {
            return Err(RecordError::TooLong(body.len() + SIGNATURE_LEN));
        }
        record.signature = owner.sign(&signed_message(&body));
        Ok(record)
    }

    /// Decodes and verifies a record: lengths, kind, owner key, payload, signature.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, RecordError> {
        if bytes.len() > MAX_RECORD_LEN {
            return Err(RecordError::TooLong(bytes.len()));
        }
        if bytes.len() < HEADER_LEN + SIGNATURE_LEN {
            return Err(RecordError::Malformed("shorter than a record header"));
        }
        let (body, sig) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let mut r = Reader(body);
        let version = r.u8()?;
        if version != RECORD_VERSION {
            return Err(RecordError::UnknownVersion(version));
        }
        let kind_code = r.u8()?;
        let kind = RecordKind::from_code(kind_code).ok_or(RecordError::UnknownKind(kind_code))?;
        let owner = PublicIdentity::from_bytes(&r.array::<32>()?)?;
        let sequence = u64::from_be_bytes(r.array::<8>()?);
        let expires_at_ms = u64::from_be_bytes(r.array::<8>()?);
        let len = u16::from_be_bytes(r.array::<2>()?) as usize;
        if r.0.len() != len {
            return Err(RecordError::Malformed(
                "payload length disagrees with the record length",
            ));
        }
        let mut signature = [0u8; 64];
        signature.copy_from_slice(sig);
        // The signature is checked before the payload is parsed: forged records cost one check.
        if !owner.verify(&signed_message(body), &signature) {
            return Err(RecordError::BadSignature);
        }
        let payload = RecordPayload::decode(kind, &owner, r.0)?;
        Ok(Self {
            owner,
            sequence,
            expires_at_ms,
            payload,
            signature,
        })
    }

    /// The canonical encoding: body then signature.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = self.body();
        out.extend_from_slice(&self.signature);
        out
    }

    fn body(&self) -> Vec<u8> {
        let payload = self.payload.encode();
        let mut out = Vec::with_capacity(HEADER_LEN + payload.len() + SIGNATURE_LEN);
        out.push(RECORD_VERSION);
        out.push(self.payload.kind().code());
        out.extend_from_slice(&self.owner.to_bytes());
        out.extend_from_slice(&self.sequence.to_be_bytes());
        out.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Where the record is stored.
    pub fn key(&self) -> RecordKey {
        RecordKey {
            owner: self.owner.node_id(),
            kind: self.payload.kind(),
        }
    }

    /// The owner's public key.
    pub fn owner(&self) -> &PublicIdentity {
        &self.owner
    }

    /// The version number; a higher one replaces a lower one.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// When the record stops being valid, Unix milliseconds.
    pub fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }

    /// The content.
    pub fn payload(&self) -> &RecordPayload {
        &self.payload
    }

    /// The owner's Ed25519 signature.
    pub fn signature(&self) -> &[u8; 64] {
        &self.signature
    }
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(RECORD_SIGNATURE_CONTEXT.len() + body.len());
    m.extend_from_slice(RECORD_SIGNATURE_CONTEXT);
    m.extend_from_slice(body);
    m
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.array::<1>()?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], RecordError> {
        if self.0.len() < N {
            return Err(RecordError::Malformed("truncated"));
        }
        let (head, rest) = self.0.split_at(N);
        let mut out = [0u8; N];
        out.copy_from_slice(head);
        self.0 = rest;
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer_payload() -> RecordPayload {
        RecordPayload::Peer(PeerRecord {
            addresses: vec![
                "192.0.2.1:4433".parse().unwrap(),
                "[2001:db8::1]:4433".parse().unwrap(),
            ],
            mix_key: Some([9; 32]),
        })
    }

    #[test]
    fn a_signed_record_round_trips_and_verifies() {
        let id = Identity::from_seed(&[1; 32]);
        let r = Record::sign(&id, 3, 1_000, peer_payload()).unwrap();
        let bytes = r.to_bytes();
        assert_eq!(bytes.len(), HEADER_LEN + 1 + 7 + 19 + 33 + 64);
        let back = Record::from_bytes(&bytes).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.key().owner, id.node_id());
        assert_eq!(back.key().kind, RecordKind::Peer);
    }

    /// Pins the encoding of PROTOCOL.md section 10.2 (Ed25519 signatures are deterministic).
    #[test]
    fn known_answer() {
        let id = Identity::from_seed(&[0x11; 32]);
        let payload = RecordPayload::Peer(PeerRecord {
            addresses: vec!["192.0.2.7:4433".parse().unwrap()],
            mix_key: None,
        });
        let bytes = Record::sign(&id, 0x0102, 0x0000_0190_0000_0000, payload)
            .unwrap()
            .to_bytes();
        let owner = hex::encode(id.public().to_bytes());
        let body = format!(
            "0101{owner}0000000000000102000001900000000000090104c00002071151{}",
            "00"
        );
        assert_eq!(hex::encode(&bytes[..bytes.len() - 64]), body);
        assert_eq!(hex::encode(&bytes[bytes.len() - 64..]), KNOWN_SIGNATURE);
    }

    /// Also computed with an independent Ed25519 implementation (Python `cryptography`).
    const KNOWN_SIGNATURE: &str = "3a88653da73bc371aed59ac1392b32a9c1bb05109b4a90ce4433a2cfc6afb4c6908db15bd9ecab054c7b842642ac98aa005164d302cfa70b55013248d01c590a";

    #[test]
    fn any_flipped_bit_is_rejected() {
        let id = Identity::from_seed(&[2; 32]);
        let bytes = Record::sign(&id, 1, 5, peer_payload()).unwrap().to_bytes();
        for i in 0..bytes.len() {
            for bit in 0..8 {
                let mut b = bytes.clone();
                b[i] ^= 1 << bit;
                assert!(Record::from_bytes(&b).is_err(), "byte {i} bit {bit}");
            }
        }
    }

    #[test]
    fn a_record_signed_by_someone_else_is_forged() {
        let owner = Identity::from_seed(&[3; 32]);
        let forger = Identity::from_seed(&[4; 32]);
        let mut bytes = Record::sign(&forger, 1, 5, peer_payload())
            .unwrap()
            .to_bytes();
        // Claim the owner's key while keeping the forger's signature.
        bytes[2..34].copy_from_slice(&owner.public().to_bytes());
        assert_eq!(Record::from_bytes(&bytes), Err(RecordError::BadSignature));
    }

    #[test]
    fn the_signature_is_domain_separated() {
        let id = Identity::from_seed(&[5; 32]);
        let r = Record::sign(&id, 1, 5, peer_payload()).unwrap();
        let body = r.body();
        assert!(!id.public().verify(&body, r.signature()));
        assert!(id.public().verify(&signed_message(&body), r.signature()));
    }

    #[test]
    fn too_many_addresses_are_refused_on_both_sides() {
        let id = Identity::from_seed(&[6; 32]);
        let addresses = vec!["192.0.2.1:1".parse().unwrap(); MAX_PEER_ADDRESSES + 1];
        let payload = RecordPayload::Peer(PeerRecord {
            addresses,
            mix_key: None,
        });
        assert_eq!(
            Record::sign(&id, 1, 5, payload).unwrap_err(),
            RecordError::TooManyAddresses(MAX_PEER_ADDRESSES + 1)
        );
    }

    #[test]
    fn prekey_bundle_records_must_carry_the_owners_bundle() {
        use dp2ptcs_crypto::PreKeyStore;
        use rand_chacha::rand_core::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let owner = Identity::from_seed(&[7; 32]);
        let bundle = PreKeyStore::new(&mut rng, &owner).bundle(None);
        let r = Record::sign(
            &owner,
            1,
            5,
            RecordPayload::PrekeyBundle(Box::new(bundle.clone())),
        )
        .unwrap();
        assert_eq!(Record::from_bytes(&r.to_bytes()).unwrap(), r);
        assert_eq!(r.key().kind, RecordKind::PrekeyBundle);
        // Someone else's bundle under my signature is refused when signing...
        let other = Identity::from_seed(&[8; 32]);
        let theirs = PreKeyStore::new(&mut rng, &other).bundle(None);
        assert_eq!(
            Record::sign(
                &owner,
                1,
                5,
                RecordPayload::PrekeyBundle(Box::new(theirs.clone()))
            )
            .unwrap_err(),
            RecordError::BundleOwnerMismatch
        );
        // ...and when decoding a record whose owner signed it anyway.
        let mut forged = r.clone();
        forged.payload = RecordPayload::PrekeyBundle(Box::new(theirs));
        forged.signature = owner.sign(&signed_message(&forged.body()));
        assert_eq!(
            Record::from_bytes(&forged.to_bytes()),
            Err(RecordError::BundleOwnerMismatch)
        );
    }

    proptest::proptest! {
        /// The decoder is fed by peers: arbitrary bytes give an error, never a panic.
        #[test]
        fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1200)) {
            let _ = Record::from_bytes(&bytes);
        }

        /// Truncating or extending a valid record always breaks it.
        #[test]
        fn a_valid_record_with_bytes_cut_or_added_is_rejected(cut in 1usize..100, extra in proptest::prelude::any::<u8>()) {
            let id = Identity::from_seed(&[9; 32]);
            let bytes = Record::sign(&id, 1, 5, peer_payload()).unwrap().to_bytes();
            let cut = cut.min(bytes.len());
            proptest::prop_assert!(Record::from_bytes(&bytes[..bytes.len() - cut]).is_err());
            let mut longer = bytes.clone();
            longer.push(extra);
            proptest::prop_assert!(Record::from_bytes(&longer).is_err());
        }
    }

    #[test]
    fn oversized_input_is_refused_before_parsing() {
        assert_eq!(
            Record::from_bytes(&vec![0; MAX_RECORD_LEN + 1]),
            Err(RecordError::TooLong(MAX_RECORD_LEN + 1))
        );
        assert!(Record::from_bytes(&[]).is_err());
    }
}
