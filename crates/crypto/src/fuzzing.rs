//! Entry points shared by the fuzz targets under `fuzz/` and the tests that replay their corpora.
//! Not a stable API. Each function returns `Err` with a description when an invariant breaks;
//! the fuzz targets turn that into a crash.

use rand_core::{CryptoRng, RngCore};
use sha2::{Digest, Sha256};

use crate::ratchet::{Header, RatchetMessage, Session};
use crate::x3dh::{InitialMessage, PreKeyBundle, PreKeyStore};
use crate::Identity;

/// A deterministic RNG for fuzzing and tests only: SHA-256(seed || counter) blocks.
/// It is **not** a secure RNG; it claims `CryptoRng` only so the fuzzers can drive the API.
#[derive(Debug, Clone)]
pub struct DeterministicRng {
    seed: [u8; 32],
    counter: u64,
}

impl DeterministicRng {
    /// An RNG whose output depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed: Sha256::digest(seed.to_be_bytes()).into(),
            counter: 0,
        }
    }
}

impl RngCore for DeterministicRng {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(32) {
            let mut h = Sha256::new();
            h.update(self.seed);
            h.update(self.counter.to_be_bytes());
            self.counter += 1;
            let block = h.finalize();
            chunk.copy_from_slice(&block[..chunk.len()]);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl CryptoRng for DeterministicRng {}

/// An "RNG" that hands out given 32-byte keys in order (then zeros), so that X25519 secrets drawn
/// with `StaticSecret::random_from_rng` are exactly those keys. For test vectors only.
#[derive(Debug, Clone)]
pub struct FixedKeys {
    keys: Vec<[u8; 32]>,
    next: usize,
    pos: usize,
}

impl FixedKeys {
    /// Hands out `keys` in order.
    pub fn new(keys: Vec<[u8; 32]>) -> Self {
        Self {
            keys,
            next: 0,
            pos: 0,
        }
    }
    /// How many whole keys have been handed out.
    pub fn used(&self) -> usize {
        self.next
    }
}

impl RngCore for FixedKeys {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for d in dest {
            *d = self.keys.get(self.next).map_or(0, |k| k[self.pos]);
            self.pos += 1;
            if self.pos == 32 {
                self.pos = 0;
                self.next += 1;
            }
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}
impl CryptoRng for FixedKeys {}

/// Decodes bytes as a prekey bundle and as an X3DH initial message; whatever decodes must
/// re-encode to the same bytes.
pub fn decode_bundle(data: &[u8]) -> Result<(), String> {
    if let Ok(b) = PreKeyBundle::decode(data) {
        if b.to_bytes() != data {
            return Err("bundle does not re-encode to its input".into());
        }
        let verified = PreKeyBundle::from_bytes(data);
        if verified.is_ok() != b.verify().is_ok() {
            return Err("from_bytes and verify disagree".into());
        }
    }
    if let Ok(m) = InitialMessage::from_bytes(data) {
        if m.to_bytes() != data {
            return Err("initial message does not re-encode to its input".into());
        }
    }
    Ok(())
}

/// Loads bytes as a prekey pickle; whatever loads must pickle again into bytes that load to the
/// same pickle.
pub fn decode_prekey_pickle(data: &[u8]) -> Result<(), String> {
    if let Ok(store) = PreKeyStore::from_pickle(data) {
        let again = store.pickle();
        let reloaded = PreKeyStore::from_pickle(&again)
            .map_err(|e| format!("a re-pickled prekey store does not load: {e}"))?;
        if reloaded.pickle().as_slice() != again.as_slice() {
            return Err("prekey pickle does not round-trip".into());
        }
    }
    Ok(())
}

/// Decodes bytes as a ratchet header and as a ratchet message; whatever decodes must re-encode
/// to the same bytes. A decoded message is also fed to a live session, which must reject it
/// without changing state.
pub fn decode_header(data: &[u8]) -> Result<(), String> {
    if let Ok(h) = Header::from_bytes(data) {
        if h.to_bytes()[..] != data[..] {
            return Err("header does not re-encode to its input".into());
        }
    }
    if let Ok(m) = RatchetMessage::from_bytes(data) {
        if m.to_bytes() != data {
            return Err("message does not re-encode to its input".into());
        }
        let mut pair = Pair::new(0)?;
        let before = pair.bob.pickle();
        if pair.bob.decrypt(&mut pair.rng, &m).is_ok() {
            return Err("a forged message decrypted".into());
        }
        if pair.bob.pickle() != before {
            return Err("a rejected message changed the session".into());
        }
    }
    Ok(())
}

/// The two parties of an interaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// The X3DH initiator.
    Alice,
    /// The X3DH responder.
    Bob,
}

/// One step of an interaction. `pick` selects among the messages in flight (modulo their count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `from` encrypts a new message of `len` bytes to the other party.
    Send {
        /// Sender.
        from: Party,
        /// Plaintext length.
        len: u8,
    },
    /// A message in flight to `to` is delivered; it must decrypt to its plaintext.
    Deliver {
        /// Receiver.
        to: Party,
        /// Which in-flight message.
        pick: u16,
    },
    /// A message in flight to `to` is lost.
    Drop {
        /// Receiver.
        to: Party,
        /// Which in-flight message.
        pick: u16,
    },
    /// A message already delivered to `to` is delivered again; it must be rejected.
    Replay {
        /// Receiver.
        to: Party,
        /// Which delivered message.
        pick: u16,
    },
    /// A copy of an in-flight message with one bit flipped in AD || header || ciphertext is
    /// delivered; it must be rejected without changing state, and the original stays in flight.
    Tamper {
        /// Receiver.
        to: Party,
        /// Which in-flight message.
        pick: u16,
        /// Which bit (modulo the number of bits).
        bit: u16,
    },
    /// `party`'s session is pickled (and sealed) and restored from that.
    SnapshotRestore {
        /// Whose session.
        party: Party,
    },
}

/// The most messages one interaction sends, so no gap reaches `MAX_SKIP` and the skipped-key
/// store never evicts: within these limits every delivered message must decrypt.
pub const MAX_SENDS: usize = 400;

struct InFlight {
    id: u32,
    plaintext: Vec<u8>,
    message: RatchetMessage,
    /// What the message was encrypted in: none or one byte, as an envelope's type.
    context: Vec<u8>,
}

struct Pair {
    rng: DeterministicRng,
    alice: Session,
    bob: Session,
}

impl Pair {
    fn new(seed: u64) -> Result<Self, String> {
        let mut rng = DeterministicRng::new(seed);
        let alice_id = Identity::from_seed(&[1; 32]);
        let bob_id = Identity::from_seed(&[2; 32]);
        let mut store = PreKeyStore::new(&mut rng, &bob_id);
        let otk = store.generate_one_time_prekeys(&mut rng, 1);
        let bundle = store.bundle(otk.first().map(|(id, _)| *id));
        let mut alice =
            Session::initiate(&mut rng, &alice_id, &bundle).map_err(|e| e.to_string())?;
        let initial = alice
            .pending_initial_message()
            .cloned()
            .ok_or("no initial message")?;
        let first = alice.encrypt(b"hello").map_err(|e| e.to_string())?;
        let (bob, pt) = Session::respond(&mut rng, &bob_id, &mut store, &initial, &first, 0)
            .map_err(|e| e.to_string())?;
        if pt.as_slice() != b"hello" {
            return Err("first message plaintext differs".into());
        }
        Ok(Self { rng, alice, bob })
    }
}

/// Interprets `data` as a seed and a list of [`Op`]s (4 bytes each) and runs them.
pub fn ratchet_interaction(data: &[u8]) -> Result<(), String> {
    let (seed, rest) = match data.split_first() {
        Some((s, rest)) => (u64::from(*s), rest),
        None => return Ok(()),
    };
    let ops: Vec<Op> = rest.chunks_exact(4).map(op_from_bytes).collect();
    run_interaction(seed, &ops)
}

fn op_from_bytes(b: &[u8]) -> Op {
    let party = |x: u8| if x & 1 == 0 { Party::Alice } else { Party::Bob };
    let (kind, a, pick) = (b[0], b[1], u16::from_be_bytes([b[2], b[3]]));
    match kind % 8 {
        0 | 1 => Op::Send {
            from: party(kind >> 3),
            len: a,
        },
        2 | 3 => Op::Deliver {
            to: party(kind >> 3),
            pick,
        },
        4 => Op::Drop {
            to: party(kind >> 3),
            pick,
        },
        5 => Op::Replay {
            to: party(kind >> 3),
            pick,
        },
        6 => Op::Tamper {
            to: party(kind >> 3),
            pick,
            bit: u16::from(a) << 8 | (pick & 0xff),
        },
        _ => Op::SnapshotRestore {
            party: party(kind >> 3),
        },
    }
}

/// Encodes ops in the byte form [`ratchet_interaction`] reads (for seed corpora).
pub fn ops_to_bytes(seed: u8, ops: &[Op]) -> Vec<u8> {
    let p = |x: Party| if x == Party::Alice { 0u8 } else { 1u8 };
    let mut out = vec![seed];
    for op in ops {
        let b: [u8; 4] = match *op {
            Op::Send { from, len } => [p(from) << 3, len, 0, 0],
            Op::Deliver { to, pick } => [2 | p(to) << 3, 0, (pick >> 8) as u8, pick as u8],
            Op::Drop { to, pick } => [4 | p(to) << 3, 0, (pick >> 8) as u8, pick as u8],
            Op::Replay { to, pick } => [5 | p(to) << 3, 0, (pick >> 8) as u8, pick as u8],
            Op::Tamper { to, pick, bit } => [
                6 | p(to) << 3,
                (bit >> 8) as u8,
                (pick >> 8) as u8,
                bit as u8,
            ],
            Op::SnapshotRestore { party } => [7 | p(party) << 3, 0, 0, 0],
        };
        out.extend_from_slice(&b);
    }
    out
}

/// Runs an interaction between two freshly established sessions and checks, after every step:
/// each delivered message decrypts exactly once to its plaintext, whatever the order, drops and
/// earlier forgeries; replays and tampered copies are rejected and leave the state unchanged;
/// a pickled and restored session behaves as the original.
pub fn run_interaction(seed: u64, ops: &[Op]) -> Result<(), String> {
    let mut pair = Pair::new(seed)?;
    let mut in_flight: [Vec<InFlight>; 2] = [Vec::new(), Vec::new()];
    let mut delivered: [Vec<(RatchetMessage, Vec<u8>)>; 2] = [Vec::new(), Vec::new()];
    let mut sends = 0usize;
    let idx = |p: Party| if p == Party::Alice { 0 } else { 1 };

    for (step, op) in ops.iter().enumerate() {
        let ctx = |e: String| format!("step {step} {op:?}: {e}");
        match *op {
            Op::Send { from, len } => {
                if sends >= MAX_SENDS {
                    continue;
                }
                sends += 1;
                let id = sends as u32;
                let mut plaintext = id.to_be_bytes().to_vec();
                plaintext.resize(4 + usize::from(len), len);
                let session = if from == Party::Alice {
                    &mut pair.alice
                } else {
                    &mut pair.bob
                };
                let context = if id.is_multiple_of(2) {
                    Vec::new()
                } else {
                    vec![(id % 5) as u8 + 1]
                };
                let message = session
                    .encrypt_in_context(&plaintext, &context)
                    .map_err(|e| ctx(e.to_string()))?;
                let to = if from == Party::Alice {
                    Party::Bob
                } else {
                    Party::Alice
                };
                in_flight[idx(to)].push(InFlight {
                    id,
                    plaintext,
                    message,
                    context,
                });
            }
            Op::Deliver { to, pick } => {
                let q = &mut in_flight[idx(to)];
                if q.is_empty() {
                    continue;
                }
                let m = q.remove(usize::from(pick) % q.len());
                let session = if to == Party::Alice {
                    &mut pair.alice
                } else {
                    &mut pair.bob
                };
                let pt = session
                    .decrypt_in_context(&mut pair.rng, &m.message, &m.context)
                    .map_err(|e| ctx(format!("message {} failed: {e}", m.id)))?;
                if pt.as_slice() != m.plaintext.as_slice() {
                    return Err(ctx(format!(
                        "message {} decrypted to the wrong plaintext",
                        m.id
                    )));
                }
                delivered[idx(to)].push((m.message, m.context));
            }
            Op::Drop { to, pick } => {
                let q = &mut in_flight[idx(to)];
                if !q.is_empty() {
                    q.remove(usize::from(pick) % q.len());
                }
            }
            Op::Replay { to, pick } => {
                let d = &delivered[idx(to)];
                if d.is_empty() {
                    continue;
                }
                let (m, context) = d[usize::from(pick) % d.len()].clone();
                let session = if to == Party::Alice {
                    &mut pair.alice
                } else {
                    &mut pair.bob
                };
                let before = session.pickle();
                if session
                    .decrypt_in_context(&mut pair.rng, &m, &context)
                    .is_ok()
                {
                    return Err(ctx("a replayed message decrypted".into()));
                }
                if session.pickle() != before {
                    return Err(ctx("a rejected replay changed the session".into()));
                }
            }
            Op::Tamper { to, pick, bit } => {
                let q = &in_flight[idx(to)];
                if q.is_empty() {
                    continue;
                }
                let m = &q[usize::from(pick) % q.len()];
                let session = if to == Party::Alice {
                    &mut pair.alice
                } else {
                    &mut pair.bob
                };
                let mut ad = *session.associated_data().as_bytes();
                let mut wire = m.message.to_bytes();
                // The bit is in the AD, the message or the context; an empty context gets a
                // byte instead.
                let mut context = m.context.clone();
                let bits = (ad.len() + wire.len() + context.len().max(1)) * 8;
                let bit = usize::from(bit) % bits;
                let (byte, mask) = (bit / 8, 1u8 << (bit % 8));
                if byte < ad.len() {
                    ad[byte] ^= mask;
                } else if byte < ad.len() + wire.len() {
                    wire[byte - ad.len()] ^= mask;
                } else if context.is_empty() {
                    context.push(mask);
                } else {
                    context[byte - ad.len() - wire.len()] ^= mask;
                }
                let before = session.pickle();
                let accepted = match RatchetMessage::from_bytes(&wire) {
                    Ok(msg) => session
                        .decrypt_with_ad(&mut pair.rng, &msg, &ad, &context)
                        .is_ok(),
                    Err(_) => false,
                };
                if accepted {
                    return Err(ctx(format!("a message with bit {bit} flipped decrypted")));
                }
                if session.pickle() != before {
                    return Err(ctx("a rejected forgery changed the session".into()));
                }
            }
            Op::SnapshotRestore { party } => {
                let session = if party == Party::Alice {
                    &mut pair.alice
                } else {
                    &mut pair.bob
                };
                let pickle = session.pickle();
                let key = [0x5a; 32];
                let sealed = session.seal(&key, &mut pair.rng);
                let restored =
                    Session::open_sealed(&key, &sealed).map_err(|e| ctx(e.to_string()))?;
                if restored.pickle() != pickle {
                    return Err(ctx("a restored session pickles differently".into()));
                }
                *session = restored;
            }
        }
    }
    Ok(())
}

/// Contact URI decoder: never panics; whatever parses re-encodes to a URI that parses to the same
/// value (the canonical form is a fixed point).
pub fn contact_uri(data: &[u8]) -> Result<(), String> {
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok(());
    };
    if let Ok(uri) = text.parse::<crate::ContactUri>() {
        let again: crate::ContactUri = uri
            .to_string()
            .parse()
            .map_err(|e| format!("a parsed URI does not re-parse: {e}"))?;
        if again != uri {
            return Err("a parsed URI re-parses to a different value".into());
        }
    }
    Ok(())
}

/// Key file decoder: never panics, and what it accepts is within the documented bounds. (No
/// decryption: a valid file may ask Argon2id for up to 2 GiB.)
pub fn keystore_file(data: &[u8]) -> Result<(), String> {
    if let Ok(parsed) = crate::keystore::ParsedKeystore::parse(data) {
        parsed
            .params
            .validate()
            .map_err(|e| format!("accepted bad parameters: {e}"))?;
        if parsed.ciphertext.len() != crate::keystore::PLAINTEXT_LEN + crate::keystore::TAG_LEN {
            return Err("accepted a ciphertext of the wrong length".into());
        }
    }
    Ok(())
}

/// Safety-number checks on scanned or typed text: never panic, and random text never matches.
pub fn safety_number_text(data: &[u8]) -> Result<(), String> {
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok(());
    };
    // The fingerprints cost 5200 SHA-512 each: compute them once per process.
    static PAIR: std::sync::OnceLock<(crate::SafetyNumber, String)> = std::sync::OnceLock::new();
    let (sn, genuine) = PAIR.get_or_init(|| {
        let a = Identity::from_seed(&[1; 32]).public();
        let b = Identity::from_seed(&[2; 32]).public();
        (
            crate::SafetyNumber::new(&a, &b),
            crate::SafetyNumber::new(&b, &a).qr_text(),
        )
    });
    if sn.check_scanned(text).is_ok() && text.trim() != genuine.as_str() {
        return Err(format!(
            "text other than the genuine code matched: {text:?}"
        ));
    }
    let _ = sn.check_digits(text);
    Ok(())
}
