use dp2ptcs_crypto::Identity;

use super::*;

const DAY: u64 = 24 * 60 * 60 * 1000;

fn sender(seed: u8) -> Identity {
    Identity::from_seed(&[seed; 32])
}

fn recipient(seed: u8) -> Identity {
    Identity::from_seed(&[0x80 | seed; 32])
}

/// An item of `payload` bytes (157 + payload encoded) from sender `s` to recipient `r`.
fn item(s: u8, r: u8, id: u8, expires: u64, payload: usize) -> MailboxItem {
    MailboxItem::sign(
        &sender(s),
        recipient(r).node_id(),
        MessageId::from_bytes([id; 16]),
        expires,
        vec![id; payload],
    )
    .unwrap()
}

fn store() -> MailboxStore {
    MailboxStore::new(MailboxLimits::small())
}

#[test]
fn put_fetch_and_duplicates() {
    let mut s = store();
    let a = item(1, 1, 1, DAY, 10);
    assert_eq!(s.put(a.clone(), 0), Ok(MailboxPut::Stored));
    assert_eq!(s.put(a.clone(), 1), Ok(MailboxPut::Duplicate));
    assert_eq!(s.items_held(), 1);
    assert_eq!(s.bytes_held(), a.encoded_len());
    // Same id, other content: the first stays.
    assert_eq!(
        s.put(item(1, 1, 1, DAY, 11), 2),
        Err(MailboxError::Conflict)
    );
    assert_eq!(s.get(a.recipient(), a.message_id()), Some(&a));
    assert_eq!(
        s.recipients().copied().collect::<Vec<_>>(),
        vec![recipient(1).node_id()]
    );
}

#[test]
fn what_one_sender_has_in_every_mailbox_is_counted() {
    let mut s = store();
    let mine = [item(1, 1, 1, DAY, 10), item(1, 2, 2, DAY, 20)];
    for i in mine.iter().cloned().chain([item(2, 1, 3, DAY, 30)]) {
        assert_eq!(s.put(i, 0), Ok(MailboxPut::Stored));
    }
    let bytes = mine.iter().map(MailboxItem::encoded_len).sum();
    assert_eq!(s.held_from(&sender(1).node_id()), (2, bytes));
    assert_eq!(s.held_from(&sender(3).node_id()), (0, 0));
    // Gone from the count once it leaves.
    s.remove(&recipient(2).node_id(), mine[1].message_id());
    assert_eq!(
        s.held_from(&sender(1).node_id()),
        (1, mine[0].encoded_len())
    );
}

#[test]
fn the_sender_quota_refuses_one_sender_while_another_is_accepted() {
    let mut s = store();
    for i in 0..3 {
        assert_eq!(s.put(item(1, 1, i, DAY, 10), 0), Ok(MailboxPut::Stored));
    }
    assert_eq!(
        s.put(item(1, 1, 3, DAY, 10), 0),
        Err(MailboxError::Quota(QuotaKind::SenderItems))
    );
    assert_eq!(s.put(item(2, 1, 4, DAY, 10), 0), Ok(MailboxPut::Stored));
    // The same sender may still write to another mailbox.
    assert_eq!(s.put(item(1, 2, 5, DAY, 10), 0), Ok(MailboxPut::Stored));
    // Bytes per sender: 2 KiB; an item of 157 + 1900 bytes is over it with one held.
    let mut s = store();
    assert_eq!(s.put(item(3, 1, 1, DAY, 100), 0), Ok(MailboxPut::Stored));
    assert_eq!(
        s.put(item(3, 1, 2, DAY, 1900), 0),
        Err(MailboxError::Quota(QuotaKind::SenderBytes))
    );
    assert_eq!(s.put(item(4, 1, 2, DAY, 1800), 0), Ok(MailboxPut::Stored));
}

#[test]
fn mailbox_and_total_quotas() {
    let mut s = store();
    // 5 items per mailbox, from 5 senders.
    for i in 0..5 {
        assert_eq!(s.put(item(i, 1, i, DAY, 10), 0), Ok(MailboxPut::Stored));
    }
    assert_eq!(
        s.put(item(9, 1, 9, DAY, 10), 0),
        Err(MailboxError::Quota(QuotaKind::MailboxItems))
    );
    // 4 KiB per mailbox.
    let mut s = store();
    assert_eq!(s.put(item(1, 2, 1, DAY, 1800), 0), Ok(MailboxPut::Stored));
    assert_eq!(s.put(item(2, 2, 2, DAY, 1800), 0), Ok(MailboxPut::Stored));
    assert_eq!(
        s.put(item(3, 2, 3, DAY, 1800), 0),
        Err(MailboxError::Quota(QuotaKind::MailboxBytes))
    );
    // 6 KiB in total, over several mailboxes.
    assert_eq!(s.put(item(3, 3, 3, DAY, 1800), 0), Ok(MailboxPut::Stored));
    assert_eq!(
        s.put(item(4, 4, 4, DAY, 1800), 0),
        Err(MailboxError::Quota(QuotaKind::Total))
    );
    assert_eq!(s.items_held(), 3);
    // A refused item left nothing behind.
    assert_eq!(s.items_for(&recipient(4).node_id()).count(), 0);
    assert_eq!(s.recipients().count(), 2);
}

#[test]
fn lifetimes_are_checked() {
    let mut s = store();
    assert_eq!(
        s.put(item(1, 1, 1, 100, 1), 100),
        Err(MailboxError::Expired {
            expires_at_ms: 100,
            now_ms: 100
        })
    );
    assert_eq!(
        s.put(item(1, 1, 1, 10 + DAY + 1, 1), 10),
        Err(MailboxError::TtlTooLong {
            ttl_ms: DAY + 1,
            max_ms: DAY
        })
    );
    assert_eq!(
        s.put(item(1, 1, 1, 10 + DAY, 1), 10),
        Ok(MailboxPut::Stored)
    );
    // The maximum is capped at 30 days whatever the configuration says.
    let s = MailboxStore::new(MailboxLimits {
        max_ttl_ms: u64::MAX,
        ..MailboxLimits::default()
    });
    assert_eq!(s.limits().max_ttl_ms, MAX_MAILBOX_TTL_MS);
}

#[test]
fn expiry_drops_items_in_order() {
    let mut s = store();
    s.put(item(1, 1, 1, 300, 1), 0).unwrap();
    s.put(item(2, 1, 2, 100, 1), 0).unwrap();
    s.put(item(3, 2, 3, 200, 1), 0).unwrap();
    assert!(s.expire(99).is_empty());
    let r1 = recipient(1).node_id();
    let r2 = recipient(2).node_id();
    assert_eq!(
        s.expire(200),
        vec![
            (r1, MessageId::from_bytes([2; 16])),
            (r2, MessageId::from_bytes([3; 16]))
        ]
    );
    assert_eq!(s.items_held(), 1);
    assert_eq!(s.recipients().copied().collect::<Vec<_>>(), vec![r1]);
    assert_eq!(s.expire(300).len(), 1);
    assert_eq!((s.items_held(), s.bytes_held()), (0, 0));
    // Room is freed: the quotas count only what is held.
    for i in 0..3 {
        s.put(item(1, 1, 10 + i, 1000, 10), 300).unwrap();
    }
}

#[test]
fn fetch_returns_only_that_recipients_items_oldest_first_bounded_by_bytes() {
    let mut s = store();
    // Arrival order 7, 3, 5 (not id order) for recipient 1; one item for recipient 2.
    for id in [7u8, 3, 5] {
        s.put(item(id, 1, id, DAY, 100), 0).unwrap();
    }
    s.put(item(1, 2, 9, DAY, 100), 0).unwrap();
    let r1 = recipient(1).node_id();
    let ids = |v: &[MailboxItem]| {
        v.iter()
            .map(|i| i.message_id().as_bytes()[0])
            .collect::<Vec<_>>()
    };
    let (all, more) = s.fetch(&r1, 1 << 20);
    assert_eq!((ids(&all), more), (vec![7, 3, 5], false));
    assert!(all.iter().all(|i| *i.recipient() == r1));
    // 257 bytes each: two fit in 600.
    let (page, more) = s.fetch(&r1, 600);
    assert_eq!((ids(&page), more), (vec![7, 3], true));
    let (next, more) = s.fetch_after(&r1, page.last().map(|i| i.message_id()), 600);
    assert_eq!((ids(&next), more), (vec![5], false));
    // Too small for one: nothing, but more.
    assert_eq!(s.fetch(&r1, 10), (Vec::new(), true));
    assert_eq!(s.fetch(&recipient(3).node_id(), 1000), (Vec::new(), false));
    assert_eq!(
        s.items_for(&r1)
            .map(|i| i.message_id().as_bytes()[0])
            .collect::<Vec<_>>(),
        vec![7, 3, 5]
    );
}

#[test]
fn a_delete_removes_and_its_tombstone_blocks_a_re_put() {
    let mut s = store();
    let a = item(1, 1, 1, 5000, 10);
    let b = item(1, 1, 2, 5000, 10);
    s.put(a.clone(), 0).unwrap();
    s.put(b.clone(), 0).unwrap();
    let del = MailboxDelete::sign(
        &recipient(1),
        vec![*a.message_id(), MessageId::from_bytes([0xee; 16])],
        10,
    )
    .unwrap();
    assert_eq!(s.delete(&del, 10), Ok(1));
    assert_eq!(s.items_held(), 1);
    // Another holder hands the deleted item on: refused, until its expiry.
    assert_eq!(s.put(a.clone(), 20), Err(MailboxError::Deleted));
    assert!(s.is_deleted(a.recipient(), a.message_id(), 4999));
    s.expire(5000);
    assert!(!s.is_deleted(a.recipient(), a.message_id(), 5000));
    // An id that was not held yet is tombstoned for the longest lifetime.
    let late = item(1, 1, 0xee, 5000, 10);
    assert_eq!(s.put(late.clone(), 5000), Err(MailboxError::Deleted));
    assert!(s.is_deleted(late.recipient(), late.message_id(), 10 + DAY - 1));
    assert!(!s.is_deleted(late.recipient(), late.message_id(), 10 + DAY));
    // Deleting again is harmless.
    assert_eq!(s.delete(&del, 11), Ok(0));
}

#[test]
fn a_delete_signed_by_someone_else_deletes_nothing_of_the_recipient() {
    let mut s = store();
    let a = item(1, 1, 1, 5000, 10);
    s.put(a.clone(), 0).unwrap();
    // The sender (or anyone) signs a delete: it applies to the signer's own mailbox only.
    let del = MailboxDelete::sign(&sender(1), vec![*a.message_id()], 1).unwrap();
    assert_eq!(s.delete(&del, 1), Ok(0));
    assert_eq!(s.get(a.recipient(), a.message_id()), Some(&a));
    assert_eq!(s.put(a, 2), Ok(MailboxPut::Duplicate));
}

#[test]
fn stale_and_future_deletes_are_refused() {
    let mut s = store();
    let now = 10 * DAY;
    let id = vec![MessageId::from_bytes([1; 16])];
    let future = MailboxDelete::sign(
        &recipient(1),
        id.clone(),
        now + MAX_MAILBOX_CLOCK_SKEW_MS + 1,
    )
    .unwrap();
    assert!(matches!(
        s.delete(&future, now),
        Err(MailboxError::StaleDelete { .. })
    ));
    let old = MailboxDelete::sign(&recipient(1), id.clone(), now - DAY - 1).unwrap();
    assert!(matches!(
        s.delete(&old, now),
        Err(MailboxError::StaleDelete { .. })
    ));
    let ok = MailboxDelete::sign(&recipient(1), id, now - DAY).unwrap();
    assert_eq!(s.delete(&ok, now), Ok(0));
}

#[test]
fn tombstones_are_bounded_per_mailbox_and_in_total() {
    let mut s = store();
    let ids = |from: u8, n: u8| {
        (from..from + n)
            .map(|i| MessageId::from_bytes([i; 16]))
            .collect()
    };
    // 12 ids for one mailbox: only 8 kept.
    let d = MailboxDelete::sign(&recipient(1), ids(0, 12), 0).unwrap();
    s.delete(&d, 0).unwrap();
    assert_eq!(s.tombstones_held(), 8);
    // Two more mailboxes of 8: at most 16 in total.
    for r in [2, 3] {
        let d = MailboxDelete::sign(&recipient(r), ids(0, 8), 0).unwrap();
        s.delete(&d, 0).unwrap();
    }
    assert_eq!(s.tombstones_held(), 16);
    s.expire(DAY);
    assert_eq!(s.tombstones_held(), 0);
}

#[test]
fn restore_skips_the_quotas_but_not_the_total_or_the_lifetime() {
    let mut s = store();
    for i in 0..5 {
        assert_eq!(s.restore(item(1, 1, i, DAY, 10), 0), Ok(MailboxPut::Stored));
    }
    assert_eq!(s.items_held(), 5);
    assert_eq!(
        s.restore(item(1, 1, 0, DAY, 10), 0),
        Ok(MailboxPut::Duplicate)
    );
    assert!(matches!(
        s.restore(item(1, 1, 9, 5, 10), 5),
        Err(MailboxError::Expired { .. })
    ));
    assert_eq!(
        s.restore(item(2, 2, 9, DAY, 6000), 0),
        Err(MailboxError::Quota(QuotaKind::Total))
    );
    // A restored mailbox still counts: new puts see its quota.
    assert_eq!(
        s.put(item(1, 1, 20, DAY, 10), 0),
        Err(MailboxError::Quota(QuotaKind::SenderItems))
    );
}

#[test]
fn remove_frees_the_quota_without_a_tombstone() {
    let mut s = store();
    let a = item(1, 1, 1, DAY, 10);
    s.put(a.clone(), 0).unwrap();
    assert_eq!(s.remove(a.recipient(), a.message_id()), Some(a.clone()));
    assert_eq!(
        (s.items_held(), s.bytes_held(), s.recipients().count()),
        (0, 0, 0)
    );
    assert_eq!(s.put(a, 1), Ok(MailboxPut::Stored));
}

#[test]
fn replication_is_due_an_interval_after_storing_unless_another_holder_handed_it_on() {
    let mut s = store();
    s.set_replicate_interval(100);
    let a = item(1, 1, 1, DAY, 10);
    let b = item(1, 1, 2, DAY, 10);
    s.put(a.clone(), 0).unwrap();
    s.put(b.clone(), 10).unwrap();
    assert!(s.due_replication(99, 10).is_empty());
    let r = *a.recipient();
    assert_eq!(
        s.due_replication(110, 10),
        vec![(r, *a.message_id()), (r, *b.message_id())]
    );
    assert_eq!(s.due_replication(110, 1), vec![(r, *a.message_id())]);
    // b arrives again from another holder at 105: due at 205 only.
    assert_eq!(s.put(b.clone(), 105), Ok(MailboxPut::Duplicate));
    s.replicated(&r, a.message_id(), 200);
    assert!(s.due_replication(199, 10).is_empty());
    assert_eq!(s.due_replication(205, 10).len(), 2);
    // A restored item is due at once.
    let c = item(2, 2, 3, DAY, 10);
    s.restore(c.clone(), 300).unwrap();
    assert!(s
        .due_replication(300, 10)
        .contains(&(*c.recipient(), *c.message_id())));
    s.remove(c.recipient(), c.message_id());
    assert!(!s
        .due_replication(300, 10)
        .contains(&(*c.recipient(), *c.message_id())));
}
