use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;
use x25519_dalek::{PublicKey as X25519PublicKey, StaticSecret};

use super::*;

fn setup(seed: u64) -> (ChaCha20Rng, Identity, Identity, PreKeyStore) {
    let mut rng = ChaCha20Rng::seed_from_u64(seed);
    let alice = Identity::generate(&mut rng);
    let bob = Identity::generate(&mut rng);
    let store = PreKeyStore::new(&mut rng, &bob);
    (rng, alice, bob, store)
}

/// Small-order points of Curve25519 in Montgomery form (and one non-canonical encoding).
const LOW_ORDER: [[u8; 32]; 3] = [
    [0; 32],
    {
        let mut p = [0u8; 32];
        p[0] = 1;
        p
    },
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
];

#[test]
fn both_sides_agree_without_one_time_prekey() {
    let (mut rng, alice, bob, mut store) = setup(1);
    let bundle = store.bundle(None);
    let a = initiate(&mut rng, &alice, &bundle).unwrap();
    let b = respond(&bob, &mut store, &a.initial_message, 0).unwrap();
    assert_eq!(a.shared_secret.as_bytes(), b.shared_secret.as_bytes());
    assert_eq!(a.associated_data, b.associated_data);
    let mut ad = alice.public().to_bytes().to_vec();
    ad.extend_from_slice(&bob.public().to_bytes());
    assert_eq!(a.associated_data.as_bytes().as_slice(), ad.as_slice());
    assert_eq!(
        a.remote_ratchet_key,
        *b.ratchet_key_pair.public().as_bytes()
    );
    assert_eq!(b.one_time_prekey_id, None);
}

#[test]
fn both_sides_agree_with_one_time_prekey_which_is_used_once() {
    let (mut rng, alice, bob, mut store) = setup(2);
    let otks = store.generate_one_time_prekeys(&mut rng, 3);
    assert_eq!(store.one_time_prekey_count(), 3);
    let bundle = store.bundle(Some(otks[1].0));
    assert_eq!(bundle.one_time_prekey(), Some((otks[1].0, &otks[1].1)));
    let a = initiate(&mut rng, &alice, &bundle).unwrap();
    let b = respond(&bob, &mut store, &a.initial_message, 0).unwrap();
    assert_eq!(a.shared_secret.as_bytes(), b.shared_secret.as_bytes());
    assert_eq!(b.one_time_prekey_id, Some(otks[1].0));
    assert_eq!(store.one_time_prekey_count(), 2);
    // Second use of the same one-time prekey fails.
    assert_eq!(
        respond(&bob, &mut store, &a.initial_message, 0).unwrap_err(),
        X3dhError::UnknownOneTimePreKey(otks[1].0)
    );
    // Without the OPK the secret differs.
    let no_otk = initiate(&mut rng, &alice, &store.bundle(None)).unwrap();
    let b2 = respond(&bob, &mut store, &no_otk.initial_message, 0).unwrap();
    assert_eq!(no_otk.shared_secret.as_bytes(), b2.shared_secret.as_bytes());
    assert_ne!(no_otk.shared_secret.as_bytes(), a.shared_secret.as_bytes());
}

#[test]
fn tampered_bundles_are_rejected() {
    let (mut rng, alice, _bob, mut store) = setup(3);
    let otk = store.generate_one_time_prekeys(&mut rng, 1);
    let bundle = store.bundle(Some(otk[0].0));
    let bytes = bundle.to_bytes();
    assert_eq!(PreKeyBundle::from_bytes(&bytes).unwrap(), bundle);
    // Any flipped bit in the signed part or signature makes the bundle fail.
    for i in 1..134 - 1 {
        let mut b = bytes.clone();
        b[i] ^= 0x01;
        assert!(PreKeyBundle::from_bytes(&b).is_err(), "byte {i}");
    }
    let mut sig = *bundle.signed_prekey_signature();
    sig[5] ^= 0x80;
    let forged = PreKeyBundle::new(
        *bundle.identity(),
        bundle.signed_prekey_id(),
        *bundle.signed_prekey(),
        sig,
        None,
    );
    assert_eq!(
        initiate(&mut rng, &alice, &forged).unwrap_err(),
        X3dhError::BadSignature
    );
    // Another identity's signature.
    let mallory = Identity::generate(&mut rng);
    let forged = PreKeyBundle::new(
        mallory.public(),
        bundle.signed_prekey_id(),
        *bundle.signed_prekey(),
        *bundle.signed_prekey_signature(),
        None,
    );
    assert!(forged.verify().is_err());
}

#[test]
fn bundle_decoding_errors() {
    let (_, _, _, store) = setup(4);
    let bytes = store.bundle(None).to_bytes();
    assert_eq!(bytes.len(), 134);
    assert_eq!(
        PreKeyBundle::from_bytes(&bytes[..133]),
        Err(BundleError::Length(133))
    );
    let mut b = bytes.clone();
    b[0] = 2;
    assert_eq!(
        PreKeyBundle::from_bytes(&b),
        Err(BundleError::UnknownVersion(2))
    );
    let mut b = bytes.clone();
    b[133] = 7;
    assert_eq!(PreKeyBundle::from_bytes(&b), Err(BundleError::Flag(7)));
    let mut b = bytes.clone();
    b[133] = 1;
    assert_eq!(PreKeyBundle::from_bytes(&b), Err(BundleError::Length(134)));
    let mut b = bytes;
    b.push(0);
    assert_eq!(PreKeyBundle::from_bytes(&b), Err(BundleError::Length(135)));
}

#[test]
fn initial_message_round_trip_and_errors() {
    let (mut rng, alice, _bob, mut store) = setup(5);
    let otk = store.generate_one_time_prekeys(&mut rng, 1);
    for bundle in [store.bundle(None), store.bundle(Some(otk[0].0))] {
        let m = initiate(&mut rng, &alice, &bundle).unwrap().initial_message;
        let bytes = m.to_bytes();
        assert_eq!(InitialMessage::from_bytes(&bytes).unwrap(), m);
        assert!(InitialMessage::from_bytes(&bytes[..bytes.len() - 1]).is_err());
    }
}

#[test]
fn low_order_keys_are_rejected() {
    let (mut rng, alice, bob, mut store) = setup(6);
    for point in LOW_ORDER {
        // A validly signed but small-order signed prekey.
        let sig = bob.sign(&signed_prekey_signature_message(9, &point));
        let bundle = PreKeyBundle::new(bob.public(), 9, point, sig, None);
        assert!(bundle.verify().is_ok());
        assert_eq!(
            initiate(&mut rng, &alice, &bundle).unwrap_err(),
            X3dhError::NonContributoryDh
        );
        // A small-order one-time prekey.
        let good = store.bundle(None);
        let bundle = PreKeyBundle::new(
            bob.public(),
            good.signed_prekey_id(),
            *good.signed_prekey(),
            *good.signed_prekey_signature(),
            Some((1, point)),
        );
        assert_eq!(
            initiate(&mut rng, &alice, &bundle).unwrap_err(),
            X3dhError::NonContributoryDh
        );
        // A small-order ephemeral key.
        let m = InitialMessage::new(alice.public(), point, store.signed_prekey_id(), None);
        assert_eq!(
            respond(&bob, &mut store, &m, 0).unwrap_err(),
            X3dhError::NonContributoryDh
        );
    }
}

#[test]
fn signed_prekey_rotation_with_grace_period() {
    let (mut rng, alice, bob, mut store) = setup(7);
    let old_bundle = store.bundle(None);
    store.rotate_signed_prekey(&mut rng, &bob, 1000).unwrap();
    assert_eq!(store.signed_prekey_id(), old_bundle.signed_prekey_id() + 1);
    assert_eq!(store.signed_prekey_created_at(), 1000);
    let new_bundle = store.bundle(None);
    assert_ne!(new_bundle.signed_prekey(), old_bundle.signed_prekey());

    let mut arng = ChaCha20Rng::seed_from_u64(70);
    let mut from = |b: &PreKeyBundle| initiate(&mut arng, &alice, b).unwrap();
    let old = from(&old_bundle);
    let last_ok = 1000 + SIGNED_PREKEY_GRACE_PERIOD_SECS - 1;
    let b = respond(&bob, &mut store, &old.initial_message, last_ok).unwrap();
    assert_eq!(b.shared_secret.as_bytes(), old.shared_secret.as_bytes());
    let old2 = from(&old_bundle);
    assert_eq!(
        respond(&bob, &mut store, &old2.initial_message, last_ok + 1).unwrap_err(),
        X3dhError::UnknownSignedPreKey(old_bundle.signed_prekey_id())
    );
    assert!(respond(
        &bob,
        &mut store,
        &from(&new_bundle).initial_message,
        last_ok + 1
    )
    .is_ok());
    // A second rotation keeps both rotated-out keys for their own grace periods.
    store.rotate_signed_prekey(&mut rng, &bob, 2000).unwrap();
    assert_eq!(store.previous_signed_prekey_ids(), vec![2, 1]);
    assert!(respond(&bob, &mut store, &old2.initial_message, 2000).is_ok());
    assert!(respond(&bob, &mut store, &from(&new_bundle).initial_message, 2000).is_ok());
    // Pinned (an initial message made with it is kept to be answered later), key 1 gets a
    // new grace period, and answers past its first one; unpinned, it goes at the end of it.
    let pinned = std::collections::BTreeSet::from([1]);
    let late = 1000 + SIGNED_PREKEY_GRACE_PERIOD_SECS;
    assert!(store.expire_keeping(late - 1, &pinned));
    assert!(respond(&bob, &mut store, &from(&old_bundle).initial_message, late).is_ok());
    assert!(!store.expire(late));
    assert_eq!(store.previous_signed_prekey_ids(), vec![2, 1]);
    assert!(store.expire(2000 + SIGNED_PREKEY_GRACE_PERIOD_SECS));
    assert_eq!(store.previous_signed_prekey_ids(), vec![1]);
    assert!(store.expire(late - 1 + SIGNED_PREKEY_GRACE_PERIOD_SECS));
    assert!(store.previous_signed_prekey_ids().is_empty());
    assert!(respond(&bob, &mut store, &from(&new_bundle).initial_message, 0).is_err());
    // Rotating with another identity is refused.
    assert_eq!(
        store.rotate_signed_prekey(&mut rng, &alice, 0).unwrap_err(),
        X3dhError::WrongIdentity
    );
}

#[test]
fn rotation_policy_lifetime_bound_and_maintain() {
    let (mut rng, _, bob, _) = setup(12);
    let mut store = PreKeyStore::new_at(&mut rng, &bob, 5000);
    let end = 5000 + SIGNED_PREKEY_LIFETIME_SECS;
    assert!(!store.needs_rotation(end - 1));
    assert!(!store.maintain(&mut rng, &bob, end - 1).unwrap());
    assert!(store.needs_rotation(end));
    assert!(store.maintain(&mut rng, &bob, end).unwrap());
    assert_eq!(store.signed_prekey_id(), 2);
    assert_eq!(store.previous_signed_prekey_ids(), vec![1]);
    // The retired key goes once its grace period is over.
    let gone = end + SIGNED_PREKEY_GRACE_PERIOD_SECS;
    assert!(!store.maintain(&mut rng, &bob, gone - 1).unwrap());
    assert!(store.maintain(&mut rng, &bob, gone).unwrap());
    assert!(store.previous_signed_prekey_ids().is_empty());
    // At most MAX_PREVIOUS_SIGNED_PREKEYS rotated-out keys are kept.
    for i in 0..MAX_PREVIOUS_SIGNED_PREKEYS as u64 + 3 {
        store
            .rotate_signed_prekey(&mut rng, &bob, gone + i)
            .unwrap();
    }
    assert_eq!(
        store.previous_signed_prekey_ids().len(),
        MAX_PREVIOUS_SIGNED_PREKEYS
    );
    // A store made by `new` counts as made at time 0.
    let fresh = PreKeyStore::new(&mut rng, &bob);
    assert!(!fresh.needs_rotation(SIGNED_PREKEY_LIFETIME_SECS - 1));
    assert!(fresh.needs_rotation(SIGNED_PREKEY_LIFETIME_SECS));
}

#[test]
fn replayed_initial_message_without_one_time_prekey_is_refused() {
    let (mut rng, alice, bob, mut store) = setup(13);
    let a = initiate(&mut rng, &alice, &store.bundle(None)).unwrap();
    respond(&bob, &mut store, &a.initial_message, 0).unwrap();
    assert_eq!(
        respond(&bob, &mut store, &a.initial_message, 0).unwrap_err(),
        X3dhError::ReplayedInitialMessage
    );
    // After a rotation, the replay set of the rotated-out key still holds.
    store.rotate_signed_prekey(&mut rng, &bob, 10).unwrap();
    assert_eq!(
        respond(&bob, &mut store, &a.initial_message, 10).unwrap_err(),
        X3dhError::ReplayedInitialMessage
    );
    // A fresh initial message is fine.
    let b = initiate(&mut rng, &alice, &store.bundle(None)).unwrap();
    assert!(respond(&bob, &mut store, &b.initial_message, 10).is_ok());
}

#[test]
fn replay_set_is_bounded_and_a_full_one_asks_for_rotation() {
    let (mut rng, alice, bob, mut store) = setup(14);
    let bundle = store.bundle(None);
    for _ in 0..MAX_SEEN_INITIAL_MESSAGES {
        let a = initiate(&mut rng, &alice, &bundle).unwrap();
        respond(&bob, &mut store, &a.initial_message, 0).unwrap();
    }
    assert!(store.needs_rotation(0));
    let a = initiate(&mut rng, &alice, &bundle).unwrap();
    assert_eq!(
        respond(&bob, &mut store, &a.initial_message, 0).unwrap_err(),
        X3dhError::SignedPreKeyExhausted(1)
    );
    // Initial messages with a one-time prekey are still accepted.
    let otk = store.generate_one_time_prekeys(&mut rng, 1)[0].0;
    let a = initiate(&mut rng, &alice, &store.bundle(Some(otk))).unwrap();
    assert!(respond(&bob, &mut store, &a.initial_message, 0).is_ok());
    assert!(store.maintain(&mut rng, &bob, 0).unwrap());
    let a = initiate(&mut rng, &alice, &store.bundle(None)).unwrap();
    assert!(respond(&bob, &mut store, &a.initial_message, 0).is_ok());
}

#[test]
fn wrong_identity_and_unknown_prekeys() {
    let (mut rng, alice, bob, mut store) = setup(8);
    let a = initiate(&mut rng, &alice, &store.bundle(None)).unwrap();
    assert_eq!(
        respond(&alice, &mut store, &a.initial_message, 0).unwrap_err(),
        X3dhError::WrongIdentity
    );
    let m = InitialMessage::new(alice.public(), *a.initial_message.ephemeral_key(), 77, None);
    assert_eq!(
        respond(&bob, &mut store, &m, 0).unwrap_err(),
        X3dhError::UnknownSignedPreKey(77)
    );
    let m = InitialMessage::new(
        alice.public(),
        *a.initial_message.ephemeral_key(),
        1,
        Some(5),
    );
    assert_eq!(
        respond(&bob, &mut store, &m, 0).unwrap_err(),
        X3dhError::UnknownOneTimePreKey(5)
    );
}

#[test]
fn identity_conversion_matches_x25519() {
    let (_, alice, _, _) = setup(9);
    let secret = identity_dh_secret(&alice);
    assert_eq!(
        X25519PublicKey::from(&secret),
        identity_dh_public(&alice.public())
    );
}

#[test]
fn one_time_prekey_pool_is_bounded() {
    let (mut rng, _, _, mut store) = setup(10);
    let first = store.generate_one_time_prekeys(&mut rng, MAX_ONE_TIME_PREKEYS);
    let more = store.generate_one_time_prekeys(&mut rng, 5);
    assert_eq!(store.one_time_prekey_count(), MAX_ONE_TIME_PREKEYS);
    assert!(store.one_time_prekey_secret(first[0].0).is_none());
    assert!(store.one_time_prekey_secret(more[4].0).is_some());
}

#[test]
fn debug_leaks_no_secret() {
    let (mut rng, alice, bob, mut store) = setup(11);
    let spk_secret = StaticSecret::from([0x42; 32]);
    let mut store2 = PreKeyStore::with_signed_prekey(&bob, 3, spk_secret.clone());
    let otk_secret = StaticSecret::from([0x43; 32]);
    store2.insert_one_time_prekey(4, otk_secret.clone());
    let a = initiate(&mut rng, &alice, &store2.bundle(Some(4))).unwrap();
    let b = respond(&bob, &mut store2, &a.initial_message, 0).unwrap();
    store.generate_one_time_prekeys(&mut rng, 2);
    let texts = [
        format!("{store:?}"),
        format!("{store2:?}"),
        format!("{a:?}"),
        format!("{b:?}"),
        format!("{:?}", a.shared_secret),
    ];
    let secrets = [
        hex::encode(spk_secret.to_bytes()),
        hex::encode(otk_secret.to_bytes()),
        hex::encode(a.shared_secret.as_bytes()),
        hex::encode(alice.signing_key().to_scalar_bytes()),
    ];
    for t in &texts {
        assert!(t.contains("redacted"), "{t}");
        for s in &secrets {
            assert!(!t.contains(&s[..16]), "{t} leaks {s}");
        }
        // No raw byte arrays either.
        assert!(!t.contains("66, 66, 66"), "{t}");
        let sk: Vec<String> = a.shared_secret.as_bytes()[..4]
            .iter()
            .map(|b| b.to_string())
            .collect();
        assert!(!t.contains(&sk.join(", ")), "{t}");
    }
}
