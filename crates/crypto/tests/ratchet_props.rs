//! Property tests of the Double Ratchet: reordering, drops, forgeries, replays.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers abort on failure

use dp2ptcs_crypto::fuzzing::{run_interaction, DeterministicRng, Op, Party};
use dp2ptcs_crypto::{Identity, PreKeyStore, RatchetMessage, Session};
use proptest::prelude::*;

fn party() -> impl Strategy<Value = Party> {
    prop_oneof![Just(Party::Alice), Just(Party::Bob)]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (party(), any::<u8>()).prop_map(|(from, len)| Op::Send { from, len }),
        4 => (party(), any::<u16>()).prop_map(|(to, pick)| Op::Deliver { to, pick }),
        1 => (party(), any::<u16>()).prop_map(|(to, pick)| Op::Drop { to, pick }),
        1 => (party(), any::<u16>()).prop_map(|(to, pick)| Op::Replay { to, pick }),
        1 => (party(), any::<u16>(), any::<u16>())
            .prop_map(|(to, pick, bit)| Op::Tamper { to, pick, bit }),
        1 => party().prop_map(|party| Op::SnapshotRestore { party }),
    ]
}

fn established(seed: u64) -> (DeterministicRng, Session, Session) {
    let mut rng = DeterministicRng::new(seed);
    let a = Identity::generate(&mut rng);
    let b = Identity::generate(&mut rng);
    let mut store = PreKeyStore::new(&mut rng, &b);
    let mut alice = Session::initiate(&mut rng, &a, &store.bundle(None)).unwrap();
    let initial = alice.pending_initial_message().unwrap().clone();
    let first = alice.encrypt(b"0").unwrap();
    let (bob, _) = Session::respond(&mut rng, &b, &mut store, &initial, &first, 0).unwrap();
    (rng, alice, bob)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    /// Any interleaving of sends, deliveries in any order, drops, replays, bit flips and
    /// snapshot-restores keeps every invariant (see `run_interaction`).
    #[test]
    fn interactions_keep_every_invariant(seed in any::<u64>(), ops in prop::collection::vec(op(), 0..160)) {
        if let Err(e) = run_interaction(seed, &ops) {
            return Err(TestCaseError::fail(e));
        }
    }

    /// Several DH ratchet turns, then every message of every chain delivered in an arbitrary
    /// permutation, with some dropped: each delivered one decrypts exactly once.
    #[test]
    fn any_delivery_order_decrypts_each_message_once(
        seed in any::<u64>(),
        chain_lengths in prop::collection::vec(1usize..12, 1..5),
        order in Just(()).prop_flat_map(|_| prop::collection::vec(any::<u16>(), 64)),
        drops in prop::collection::vec(any::<bool>(), 64),
    ) {
        let (mut rng, mut alice, mut bob) = established(seed);
        let mut to_bob: Vec<(Vec<u8>, RatchetMessage)> = Vec::new();
        for (c, &len) in chain_lengths.iter().enumerate() {
            for i in 0..len {
                let pt = vec![c as u8, i as u8];
                to_bob.push((pt.clone(), alice.encrypt(&pt).unwrap()));
            }
            // One round trip, in order, so Alice's next chain uses a new ratchet key.
            bob.decrypt(&mut rng, &to_bob.last().unwrap().1.clone()).unwrap();
            let delivered_last = to_bob.pop().unwrap();
            let reply = bob.encrypt(b"ack").unwrap();
            alice.decrypt(&mut rng, &reply).unwrap();
            let again = bob.decrypt(&mut rng, &delivered_last.1);
            prop_assert!(again.is_err(), "replay of the last message decrypted");
        }
        // Shuffle the rest by the random keys, drop some, deliver.
        let mut keyed: Vec<_> = to_bob.into_iter().enumerate()
            .map(|(i, m)| (order[i % order.len()], i, m)).collect();
        keyed.sort_by_key(|(k, i, _)| (*k, *i));
        for (j, (_, _, (pt, m))) in keyed.iter().enumerate() {
            if drops[j % drops.len()] && j % 3 == 0 {
                continue;
            }
            let got = bob.decrypt(&mut rng, m);
            prop_assert_eq!(got.as_ref().map(|p| p.as_slice()), Ok(pt.as_slice()));
            prop_assert!(bob.decrypt(&mut rng, m).is_err(), "replay decrypted");
        }
        // Later messages still work after the drops.
        let m = alice.encrypt(b"later").unwrap();
        let got = bob.decrypt(&mut rng, &m).unwrap();
        prop_assert_eq!(got.as_slice(), b"later");
    }

    /// A bit flip anywhere in AD, header or body is rejected, the state is unchanged, and the
    /// genuine message still decrypts afterwards.
    #[test]
    fn any_bit_flip_is_rejected(seed in any::<u64>(), bit in any::<u16>(), new_chain in any::<bool>()) {
        let (mut rng, mut alice, mut bob) = established(seed);
        if new_chain {
            let r = bob.encrypt(b"r").unwrap();
            alice.decrypt(&mut rng, &r).unwrap();
        }
        let m = alice.encrypt(b"payload").unwrap();
        // Flip in the wire form (header or body); AD flips are covered by `run_interaction`.
        let mut wire = m.to_bytes();
        let b = usize::from(bit) % (wire.len() * 8);
        wire[b / 8] ^= 1 << (b % 8);
        let before = bob.pickle();
        if let Ok(bad) = RatchetMessage::from_bytes(&wire) {
            prop_assert!(bob.decrypt(&mut rng, &bad).is_err());
        }
        // And an AD flip, through the interaction harness on the same kind of state.
        let ops = [
            Op::Send { from: Party::Alice, len: 7 },
            Op::Tamper { to: Party::Bob, pick: 0, bit: bit % (64 * 8) },
            Op::Deliver { to: Party::Bob, pick: 0 },
        ];
        prop_assert!(run_interaction(seed, &ops).is_ok());
        prop_assert_eq!(bob.pickle(), before);
        let got = bob.decrypt(&mut rng, &m).unwrap();
        prop_assert_eq!(got.as_slice(), b"payload");
    }
}
