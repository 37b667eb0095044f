use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

use super::*;
use crate::x3dh::PreKeyStore;
use crate::Identity;

fn pair(seed: u64) -> (ChaCha20Rng, Session, Session) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let alice_id = Identity::generate(&mut rng);
    let bob_id = Identity::generate(&mut rng);
    let mut store = PreKeyStore::new(&mut rng, &bob_id);
    let otk = store.generate_one_time_prekeys(&mut rng, 1);
    let mut alice = Session::initiate(&mut rng, &alice_id, &store.bundle(Some(otk[0].0))).unwrap();
    let initial = alice.pending_initial_message().unwrap().clone();
    let first = alice.encrypt(b"first").unwrap();
    let (bob, pt) = Session::respond(&mut rng, &bob_id, &mut store, &initial, &first, 0).unwrap();
    assert_eq!(pt.as_slice(), b"first");
    assert_eq!(store.one_time_prekey_count(), 0);
    (rng, alice, bob)
}

#[test]
fn ping_pong_with_ratchet_steps() {
    let (mut rng, mut alice, mut bob) = pair(1);
    let mut last_keys = vec![*alice.our_ratchet_key(), *bob.our_ratchet_key()];
    for round in 0..5u8 {
        for i in 0..3u8 {
            let m = alice.encrypt(&[round, i]).unwrap();
            assert_eq!(bob.decrypt(&mut rng, &m).unwrap().as_slice(), &[round, i]);
        }
        assert!(alice.pending_initial_message().is_some() == (round == 0));
        let m = bob.encrypt(&[round, 99]).unwrap();
        assert_eq!(
            alice.decrypt(&mut rng, &m).unwrap().as_slice(),
            &[round, 99]
        );
        assert!(alice.pending_initial_message().is_none());
        // Every turn brings fresh ratchet keys.
        for k in [*alice.our_ratchet_key(), *bob.our_ratchet_key()] {
            if !last_keys.contains(&k) {
                last_keys.push(k);
            }
        }
    }
    assert!(last_keys.len() >= 10);
}

#[test]
fn chain_ranks_order_messages_as_written_where_previous_chain_lengths_do_not() {
    let (mut rng, mut alice, mut bob) = pair(7);
    // Chain 1: five messages; Bob gets the second only (the first is skipped).
    let c1: Vec<_> = (0..5u8).map(|i| alice.encrypt(&[1, i]).unwrap()).collect();
    bob.decrypt(&mut rng, &c1[1]).unwrap();
    // Chain 2: one message, which Bob gets; his reply makes Alice start chain 3.
    alice
        .decrypt(&mut rng, &bob.encrypt(b"r1").unwrap())
        .unwrap();
    let c2 = alice.encrypt(&[2, 0]).unwrap();
    bob.decrypt(&mut rng, &c2).unwrap();
    let c2_more: Vec<_> = (1..3u8).map(|i| alice.encrypt(&[2, i]).unwrap()).collect();
    alice
        .decrypt(&mut rng, &bob.encrypt(b"r2").unwrap())
        .unwrap();
    let c3 = alice.encrypt(&[3, 0]).unwrap();
    // Chain 3's previous chain length (3) is below chain 2's (6): alone it sorts 3 before 2.
    assert!(c3.header.previous_chain_length < c2_more[0].header.previous_chain_length);
    let rank = |m: &RatchetMessage| {
        (
            bob.chain_rank(&m.header.ratchet_key),
            m.header.message_number,
        )
    };
    let mut waiting = vec![&c3, &c2_more[1], &c1[4], &c2_more[0], &c1[0], &c1[2]];
    waiting.sort_by_key(|m| rank(m));
    let order: Vec<Vec<u8>> = waiting
        .into_iter()
        .map(|m| bob.decrypt(&mut rng, m).unwrap().as_slice().to_vec())
        .collect();
    assert_eq!(
        order,
        [[1, 0], [1, 2], [1, 4], [2, 1], [2, 2], [3, 0]].map(|m| m.to_vec())
    );
}

#[test]
fn out_of_order_within_and_across_chains() {
    let (mut rng, mut alice, mut bob) = pair(2);
    let a1: Vec<_> = (0..5u8).map(|i| alice.encrypt(&[1, i]).unwrap()).collect();
    // Bob receives the last of chain 1 first, replies, Alice starts chain 2.
    assert_eq!(bob.decrypt(&mut rng, &a1[4]).unwrap().as_slice(), &[1, 4]);
    assert_eq!(bob.skipped_key_count(), 4);
    let b1 = bob.encrypt(b"b").unwrap();
    alice.decrypt(&mut rng, &b1).unwrap();
    let a2: Vec<_> = (0..3u8).map(|i| alice.encrypt(&[2, i]).unwrap()).collect();
    assert_eq!(a2[0].header.previous_chain_length, 6);
    assert_eq!(bob.decrypt(&mut rng, &a2[2]).unwrap().as_slice(), &[2, 2]);
    // Old chain's skipped keys (positions 0..4; 5 never sent on chain 1 by Alice... first message
    // was n=0 of the same chain) and the new chain's.
    assert_eq!(bob.decrypt(&mut rng, &a1[1]).unwrap().as_slice(), &[1, 1]);
    assert_eq!(bob.decrypt(&mut rng, &a2[0]).unwrap().as_slice(), &[2, 0]);
    assert_eq!(bob.decrypt(&mut rng, &a1[0]).unwrap().as_slice(), &[1, 0]);
    assert_eq!(bob.decrypt(&mut rng, &a1[3]).unwrap().as_slice(), &[1, 3]);
    assert_eq!(bob.decrypt(&mut rng, &a2[1]).unwrap().as_slice(), &[2, 1]);
    assert_eq!(bob.decrypt(&mut rng, &a1[2]).unwrap().as_slice(), &[1, 2]);
    assert_eq!(bob.skipped_key_count(), 0);
    // Every one of them is now a replay.
    for m in a1.iter().chain(a2.iter()) {
        let before = bob.pickle();
        assert!(bob.decrypt(&mut rng, m).is_err());
        assert_eq!(bob.pickle(), before);
    }
}

#[test]
fn replays_are_rejected() {
    let (mut rng, mut alice, mut bob) = pair(3);
    let m0 = alice.encrypt(b"x").unwrap();
    let m1 = alice.encrypt(b"y").unwrap();
    bob.decrypt(&mut rng, &m1).unwrap();
    bob.decrypt(&mut rng, &m0).unwrap();
    // n = 0 was the X3DH first message.
    assert_eq!(
        bob.decrypt(&mut rng, &m1).unwrap_err(),
        DecryptError::DuplicateOrExpired { message_number: 2 }
    );
    assert_eq!(
        bob.decrypt(&mut rng, &m0).unwrap_err(),
        DecryptError::DuplicateOrExpired { message_number: 1 }
    );
    // Replay of a message from a chain that has since been replaced.
    let b = bob.encrypt(b"z").unwrap();
    alice.decrypt(&mut rng, &b).unwrap();
    let m2 = alice.encrypt(b"w").unwrap();
    bob.decrypt(&mut rng, &m2).unwrap();
    let before = bob.pickle();
    assert_eq!(
        bob.decrypt(&mut rng, &m0).unwrap_err(),
        DecryptError::Authentication
    );
    assert_eq!(bob.pickle(), before);
}

#[test]
fn max_skip_is_enforced_before_derivation() {
    let (mut rng, mut alice, mut bob) = pair(4);
    let m = alice.encrypt(b"x").unwrap();
    let before = bob.pickle();
    // Current chain (Bob received n = 0 already: Nr = 1).
    let mut forged = m.clone();
    forged.header.message_number = 1 + MAX_SKIP + 1;
    assert_eq!(
        bob.decrypt(&mut rng, &forged).unwrap_err(),
        DecryptError::TooManySkipped {
            skip: u64::from(MAX_SKIP) + 1,
            max: MAX_SKIP
        }
    );
    forged.header.message_number = u32::MAX;
    assert!(matches!(
        bob.decrypt(&mut rng, &forged),
        Err(DecryptError::TooManySkipped { .. })
    ));
    // New chain: N and PN are both bounded.
    let mut forged = m.clone();
    forged.header.ratchet_key = RatchetPublicKey([9; 32]);
    forged.header.message_number = MAX_SKIP + 1;
    assert!(matches!(
        bob.decrypt(&mut rng, &forged),
        Err(DecryptError::TooManySkipped { .. })
    ));
    forged.header.message_number = 0;
    forged.header.previous_chain_length = 1 + MAX_SKIP + 1;
    assert!(matches!(
        bob.decrypt(&mut rng, &forged),
        Err(DecryptError::TooManySkipped { .. })
    ));
    assert_eq!(bob.pickle(), before);
    // Exactly MAX_SKIP is allowed.
    bob.decrypt(&mut rng, &m).unwrap();
    let msgs: Vec<_> = (0..=MAX_SKIP)
        .map(|_| alice.encrypt(b"y").unwrap())
        .collect();
    assert_eq!(msgs.last().unwrap().header.message_number, MAX_SKIP + 2);
    bob.decrypt(&mut rng, msgs.last().unwrap()).unwrap();
    assert_eq!(bob.skipped_key_count(), MAX_SKIP as usize);
}

#[test]
fn skipped_key_store_is_bounded_oldest_evicted() {
    let (mut rng, mut alice, mut bob) = pair(5);
    let mut chains = Vec::new();
    // Chain 1 (after the first message, n = 0): 999 skipped keys; chains 2 and 3: 1000 each.
    for c in 0..3 {
        let count = if c == 0 { MAX_SKIP } else { MAX_SKIP + 1 };
        let msgs: Vec<_> = (0..count).map(|_| alice.encrypt(b"m").unwrap()).collect();
        bob.decrypt(&mut rng, msgs.last().unwrap()).unwrap();
        let reply = bob.encrypt(b"r").unwrap();
        alice.decrypt(&mut rng, &reply).unwrap();
        chains.push(msgs);
    }
    assert_eq!(bob.skipped_key_count(), MAX_SKIPPED_KEYS);
    // The first chain's keys, the oldest, were evicted; the later chains' were kept.
    assert!(bob.decrypt(&mut rng, &chains[0][0]).is_err());
    assert!(bob.decrypt(&mut rng, &chains[0][998]).is_err());
    assert_eq!(
        bob.decrypt(&mut rng, &chains[1][0]).unwrap().as_slice(),
        b"m"
    );
    assert_eq!(
        bob.decrypt(&mut rng, &chains[2][0]).unwrap().as_slice(),
        b"m"
    );
}

#[test]
fn failed_decryption_leaves_state_unchanged_and_next_message_works() {
    let (mut rng, mut alice, mut bob) = pair(6);
    let reply = bob.encrypt(b"r").unwrap();
    alice.decrypt(&mut rng, &reply).unwrap();
    // A message that starts a new chain for Bob, tampered in body and in header.
    let m = alice.encrypt(b"secret").unwrap();
    let before = bob.pickle();
    let mut bad = m.clone();
    bad.ciphertext[0] ^= 1;
    assert_eq!(
        bob.decrypt(&mut rng, &bad).unwrap_err(),
        DecryptError::Authentication
    );
    let mut bad = m.clone();
    bad.header.previous_chain_length += 1;
    assert!(bob.decrypt(&mut rng, &bad).is_err());
    let mut bad = m.clone();
    bad.header.ratchet_key.0[3] ^= 4;
    assert!(bob.decrypt(&mut rng, &bad).is_err());
    let mut other_ad = *bob.associated_data().as_bytes();
    other_ad[63] ^= 1;
    assert!(bob.decrypt_with_ad(&mut rng, &m, &other_ad, &[]).is_err());
    assert_eq!(bob.pickle(), before);
    assert_eq!(bob.decrypt(&mut rng, &m).unwrap().as_slice(), b"secret");
}

#[test]
fn small_order_ratchet_key_is_rejected() {
    let (mut rng, mut alice, mut bob) = pair(7);
    let before = bob.pickle();
    let mut m = alice.encrypt(b"x").unwrap();
    m.header.ratchet_key = RatchetPublicKey([0; 32]);
    assert_eq!(
        bob.decrypt(&mut rng, &m).unwrap_err(),
        DecryptError::NonContributoryDh
    );
    assert_eq!(bob.pickle(), before);
    let ss = crate::x3dh::SharedSecret::from_bytes([1; 32]);
    let ad = *alice.associated_data();
    assert_eq!(
        Session::new_initiator(&mut rng, &ss, ad, [0; 32]).unwrap_err(),
        SessionError::NonContributoryDh
    );
}

#[test]
fn responder_cannot_send_first() {
    let mut rng = ChaCha20Rng::seed_from_u64(8);
    let ss = crate::x3dh::SharedSecret::from_bytes([1; 32]);
    let ad = crate::x3dh::AssociatedData::from_bytes([2; 64]);
    let mut bob = Session::new_responder(&ss, ad, RatchetKeyPair::generate(&mut rng));
    assert_eq!(bob.encrypt(b"x").unwrap_err(), EncryptError::NoSendingChain);
}

#[test]
fn forged_first_message_does_not_burn_the_one_time_prekey() {
    let mut rng = ChaCha20Rng::seed_from_u64(9);
    let (bob_id, mut store, mut alice, initial) = initiated(&mut rng);
    let first = alice.encrypt(b"hi").unwrap();
    let mut forged = first.clone();
    forged.ciphertext[2] ^= 1;
    assert!(Session::respond(&mut rng, &bob_id, &mut store, &initial, &forged, 0).is_err());
    assert_eq!(store.one_time_prekey_count(), 1);
    assert!(Session::respond(&mut rng, &bob_id, &mut store, &initial, &first, 0).is_ok());
    assert_eq!(store.one_time_prekey_count(), 0);
    assert!(matches!(
        Session::respond(&mut rng, &bob_id, &mut store, &initial, &first, 0),
        Err(SessionError::X3dh(
            crate::x3dh::X3dhError::UnknownOneTimePreKey(_)
        ))
    ));
}

/// A message encrypted in a context opens only in that context: what the application sends in
/// clear beside it (say, the kind of payload) cannot be changed in transit. A wrong context is a
/// forgery: the session is left as it was and the right one still opens the message.
#[test]
fn a_message_opens_only_in_the_context_it_was_encrypted_in() {
    let (mut rng, mut alice, mut bob) = pair(12);
    let m = alice.encrypt_in_context(b"receipt", &[2]).unwrap();
    for wrong in [&[][..], &[1], &[2, 0], &[3]] {
        let before = bob.pickle();
        assert!(matches!(
            bob.decrypt_in_context(&mut rng, &m, wrong),
            Err(DecryptError::Authentication)
        ));
        assert_eq!(
            bob.pickle(),
            before,
            "context {wrong:?} changed the session"
        );
    }
    let pt = bob.decrypt_in_context(&mut rng, &m, &[2]).unwrap();
    assert_eq!(pt.as_slice(), b"receipt");
    // The empty context is plain `encrypt`/`decrypt`, both ways and across a ratchet step.
    let r = bob.encrypt(b"reply").unwrap();
    assert!(alice
        .decrypt_in_context(&mut rng, &r.clone(), &[0])
        .is_err());
    assert_eq!(
        alice
            .decrypt_in_context(&mut rng, &r, &[])
            .unwrap()
            .as_slice(),
        b"reply"
    );
    let n = alice.encrypt_in_context(b"next", &[]).unwrap();
    assert_eq!(bob.decrypt(&mut rng, &n).unwrap().as_slice(), b"next");
}

/// Bob's identity and prekeys (one one-time prekey), and Alice's session initiated from his
/// bundle, with its initial message.
fn initiated(
    rng: &mut ChaCha20Rng,
) -> (Identity, PreKeyStore, Session, crate::x3dh::InitialMessage) {
    let alice_id = Identity::generate(rng);
    let bob_id = Identity::generate(rng);
    let mut store = PreKeyStore::new(rng, &bob_id);
    let otk = store.generate_one_time_prekeys(rng, 1);
    let alice = Session::initiate(rng, &alice_id, &store.bundle(Some(otk[0].0))).unwrap();
    let initial = alice.pending_initial_message().unwrap().clone();
    (bob_id, store, alice, initial)
}

/// The X3DH responder opens a first message only in its context: a wrong one, like a forged
/// message, burns no one-time prekey. `respond_with_start` also gives the session before the
/// first message, with which that message decrypts again (from a restored copy too), and
/// which then goes on as the opened one would.
#[test]
fn a_first_message_opens_only_in_its_context_and_again_from_the_start() {
    let mut rng = ChaCha20Rng::seed_from_u64(13);
    let (bob_id, mut store, mut alice, initial) = initiated(&mut rng);
    let first = alice.encrypt_in_context(b"first", &[1]).unwrap();
    let mut forged = first.clone();
    forged.ciphertext[0] ^= 1;
    for (m, context) in [(&forged, &[1u8][..]), (&first, &[]), (&first, &[4])] {
        let r = Session::respond_with_start(&mut rng, &bob_id, &mut store, &initial, m, context, 0);
        assert!(r.is_err());
        assert_eq!(store.one_time_prekey_count(), 1, "a forgery burns nothing");
    }
    let (opened, start, pt) =
        Session::respond_with_start(&mut rng, &bob_id, &mut store, &initial, &first, &[1], 0)
            .unwrap();
    assert_eq!(pt.as_slice(), b"first");
    assert_eq!(store.one_time_prekey_count(), 0);
    assert!(
        Session::respond_in_context(&mut rng, &bob_id, &mut store, &initial, &first, &[1], 0)
            .is_err(),
        "the initial message is used"
    );
    assert!(opened
        .clone()
        .decrypt_in_context(&mut rng, &first, &[1])
        .is_err());
    let mut bob = start.clone();
    for _ in 0..2 {
        bob = start.clone();
        let pt = bob.decrypt_in_context(&mut rng, &first, &[1]).unwrap();
        assert_eq!(pt.as_slice(), b"first");
    }
    assert!(
        bob.decrypt_in_context(&mut rng, &first, &[1]).is_err(),
        "no replay"
    );
    let reply = bob.encrypt(b"reply").unwrap();
    assert_eq!(
        alice.decrypt(&mut rng, &reply).unwrap().as_slice(),
        b"reply"
    );
}

#[test]
fn header_and_message_encoding() {
    let h = Header {
        ratchet_key: RatchetPublicKey([0xab; 32]),
        previous_chain_length: 0x01020304,
        message_number: 0x0a0b0c0d,
    };
    let b = h.to_bytes();
    assert_eq!(b[0], HEADER_VERSION);
    assert_eq!(&b[33..], &[1, 2, 3, 4, 0x0a, 0x0b, 0x0c, 0x0d]);
    assert_eq!(Header::from_bytes(&b).unwrap(), h);
    assert_eq!(Header::from_bytes(&b[..40]), Err(HeaderError::Length(40)));
    let mut v = b;
    v[0] = 2;
    assert_eq!(Header::from_bytes(&v), Err(HeaderError::UnknownVersion(2)));
    let m = RatchetMessage {
        header: h,
        ciphertext: vec![7; 16],
    };
    assert_eq!(RatchetMessage::from_bytes(&m.to_bytes()).unwrap(), m);
    assert_eq!(
        RatchetMessage::from_bytes(&m.to_bytes()[..56]),
        Err(HeaderError::Truncated(56))
    );
}

#[test]
fn pickles_round_trip_seal_and_version() {
    let (mut rng, mut alice, mut bob) = pair(10);
    let msgs: Vec<_> = (0..4).map(|_| alice.encrypt(b"p").unwrap()).collect();
    bob.decrypt(&mut rng, &msgs[3]).unwrap();
    for s in [&alice, &bob] {
        let p = s.pickle();
        let back = Session::from_pickle(&p).unwrap();
        assert_eq!(back.pickle(), p);
        let key = [3u8; 32];
        let sealed = s.seal(&key, &mut rng);
        assert_eq!(Session::open_sealed(&key, &sealed).unwrap().pickle(), p);
        assert!(matches!(
            Session::open_sealed(&[4u8; 32], &sealed),
            Err(PickleError::Seal(_))
        ));
    }
    // The restored Bob still decrypts the skipped messages.
    let mut bob2 = Session::from_pickle(&bob.pickle()).unwrap();
    assert_eq!(bob2.decrypt(&mut rng, &msgs[0]).unwrap().as_slice(), b"p");
    // Version handling; unknown fields are ignored; the optional field may be absent.
    let text = String::from_utf8(alice.pickle().to_vec()).unwrap();
    let v2 = text.replacen("\"version\":1", "\"version\":2", 1);
    assert_eq!(
        Session::from_pickle(v2.as_bytes()).unwrap_err(),
        PickleError::UnknownVersion(2)
    );
    let extra = text.replacen('{', "{\"future_field\":[1,2],", 1);
    assert_eq!(
        Session::from_pickle(extra.as_bytes()).unwrap().pickle(),
        alice.pickle()
    );
    let mut value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value
        .as_object_mut()
        .unwrap()
        .remove("pending_initial_message");
    assert!(Session::from_pickle(value.to_string().as_bytes()).is_ok());
    assert!(matches!(
        Session::from_pickle(b"{\"version\":1}"),
        Err(PickleError::Malformed { .. })
    ));
    // Malformed hex is reported without echoing it.
    let bad = text.replacen("\"root_key\":\"", "\"root_key\":\"zz", 1);
    let err = Session::from_pickle(bad.as_bytes()).unwrap_err();
    assert!(matches!(err, PickleError::Malformed { .. }));
}

#[test]
fn shared_session_concurrent_encrypt_and_decrypt() {
    use std::sync::mpsc;
    let (_, alice, bob) = pair(11);
    let alice = SharedSession::new(alice);
    let bob = SharedSession::new(bob);
    let (to_bob, bob_rx) = mpsc::channel();
    let (to_alice, alice_rx) = mpsc::channel();
    std::thread::scope(|s| {
        for t in 0..3u8 {
            let alice = alice.clone();
            let to_bob = to_bob.clone();
            s.spawn(move || {
                for i in 0..40u8 {
                    to_bob
                        .send((vec![t, i], alice.encrypt(&[t, i]).unwrap()))
                        .unwrap();
                }
            });
        }
        drop(to_bob);
        let bob2 = bob.clone();
        let receiver = s.spawn(move || {
            let mut rng = ChaCha20Rng::seed_from_u64(12);
            let mut n = 0;
            for (pt, m) in bob_rx {
                assert_eq!(
                    bob2.decrypt(&mut rng, &m).unwrap().as_slice(),
                    pt.as_slice()
                );
                n += 1;
                if n % 10 == 0 {
                    to_alice.send(bob2.encrypt(&[n as u8]).unwrap()).unwrap();
                }
            }
            n
        });
        let mut rng = ChaCha20Rng::seed_from_u64(13);
        let alice2 = alice.clone();
        let mut got = 0;
        for m in alice_rx {
            alice2.decrypt(&mut rng, &m).unwrap();
            got += 1;
        }
        assert_eq!(receiver.join().unwrap(), 120);
        assert_eq!(got, 12);
    });
    let text = format!("{alice:?}");
    assert!(text.contains("SharedSession"));
    // Debug inside `with` (lock held) must not deadlock.
    let inside = alice.with(|_| format!("{alice:?}"));
    assert_eq!(inside, "SharedSession(<locked>)");
}

#[test]
fn crossing_sessions_resolve_the_same_way_on_both_sides() {
    let mut rng = ChaCha20Rng::seed_from_u64(14);
    for _ in 0..20 {
        let a = Identity::generate(&mut rng).node_id();
        let b = Identity::generate(&mut rng).node_id();
        let at_a = resolve_crossing(&a, &b);
        let at_b = resolve_crossing(&b, &a);
        assert_ne!(at_a, at_b, "exactly one side keeps its own session");
        assert_eq!(
            at_a == CrossingResolution::KeepOurs,
            a.as_bytes() < b.as_bytes()
        );
    }
}

#[test]
fn debug_leaks_no_secret() {
    let (mut rng, mut alice, mut bob) = pair(15);
    let msgs: Vec<_> = (0..3).map(|_| alice.encrypt(b"d").unwrap()).collect();
    bob.decrypt(&mut rng, &msgs[2]).unwrap();
    let mut secrets = Vec::new();
    for s in [&alice, &bob] {
        let st = &s.state;
        secrets.push(*st.root_key.as_bytes());
        secrets.push(st.sending_ratchet_key.secret_bytes());
        if let Some(ck) = &st.sending_chain_key {
            secrets.push(*ck.as_bytes());
        }
        if let Some(ck) = &st.receiving.chain_key {
            secrets.push(*ck.as_bytes());
        }
        for k in s.skipped.iter() {
            secrets.push(*k.key.as_bytes());
        }
    }
    assert!(secrets.len() >= 8);
    let texts = [
        format!("{alice:?}"),
        format!("{bob:?}"),
        format!("{:#?}", bob),
        format!("{:?}", SharedSession::new(bob.clone())),
        format!("{:?}", bob.state.sending_ratchet_key),
        format!("{:?}", bob.skipped.iter().next().unwrap()),
    ];
    for t in &texts {
        assert!(t.contains("redacted"), "{t}");
        for s in &secrets {
            assert!(!t.contains(&hex::encode(&s[..8])), "{t}");
            let dec: Vec<String> = s[..4].iter().map(|b| b.to_string()).collect();
            assert!(!t.contains(&dec.join(", ")), "{t}");
        }
    }
}
