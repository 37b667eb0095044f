//! Mailboxes across several `Dht`s wired by hand: deposit → holders → fetch → delete, hand-off
//! to a closer newcomer, refusals counted.

use dp2ptcs_types::MessageId;

use super::*;
use crate::mailbox::{mailbox_key, MailboxRefusal, DEFAULT_MAILBOX_TTL_MS};

fn identity(net_index: usize) -> Identity {
    Identity::from_seed(&[net_index as u8 + 1; 32])
}

fn item(sender: &Identity, recipient: NodeId, id: u8, now: u64) -> MailboxItem {
    MailboxItem::sign(
        sender,
        recipient,
        MessageId::from_bytes([id; 16]),
        now + DEFAULT_MAILBOX_TTL_MS,
        format!("sealed {id}").into_bytes(),
    )
    .unwrap()
}

/// The `r` nodes of the net closest to `key`.
fn closest(net: &Net, key: &NodeId, r: usize) -> Vec<NodeId> {
    let mut ids: Vec<NodeId> = net.nodes.keys().copied().collect();
    ids.sort_by_key(|id| id.distance(key));
    ids.truncate(r);
    ids.sort();
    ids
}

fn holders_of(net: &Net, recipient: &NodeId, id: &MessageId) -> Vec<NodeId> {
    net.nodes
        .iter()
        .filter(|(_, d)| d.mailbox().is_some_and(|m| m.get(recipient, id).is_some()))
        .map(|(n, _)| *n)
        .collect()
}

fn take_events(net: &mut Net, node: &NodeId) -> Vec<Event> {
    let (mine, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut net.events)
        .into_iter()
        .partition(|(n, _)| n == node);
    net.events = rest;
    mine.into_iter().map(|(_, e)| e).collect()
}

#[test]
fn deposit_then_fetch_then_delete() {
    let mut net = Net::new(30);
    let sender = identity(3);
    let recipient = identity(7);
    let (s_id, r_id) = (sender.node_id(), recipient.node_id());
    let key = mailbox_key(&r_id);
    let want = closest(&net, &key, MAILBOX_REPLICAS);
    net.events.clear();

    // 1. Deposit: the 5 closest to the mailbox key hold it, and say so.
    let msg = item(&sender, r_id, 1, 100);
    let lid = net
        .nodes
        .get_mut(&s_id)
        .unwrap()
        .deposit(msg.clone(), 100)
        .unwrap();
    net.run(100);
    let events = take_events(&mut net, &s_id);
    let finished = events
        .iter()
        .position(|e| matches!(e, Event::LookupFinished(o) if o.id == lid))
        .unwrap();
    let deposited = events
        .iter()
        .position(|e| {
            *e == Event::Deposited {
                lookup: lid,
                message_id: *msg.message_id(),
                accepted: 5,
                refused: 0,
                held_here: want.contains(&s_id),
                taken: 0,
            }
        })
        .unwrap();
    assert!(finished < deposited, "LookupFinished comes first");
    assert_eq!(holders_of(&net, &r_id, msg.message_id()), want);
    let stored: Vec<NodeId> = net
        .events
        .iter()
        .filter(|(_, e)| *e == Event::MailboxStored(msg.clone()))
        .map(|(n, _)| *n)
        .collect();
    assert_eq!(stored.len(), 5);
    net.events.clear();

    // Depositing again is accepted (already held) and changes nothing.
    let lid2 = net
        .nodes
        .get_mut(&s_id)
        .unwrap()
        .deposit(msg.clone(), 110)
        .unwrap();
    net.run(110);
    assert!(take_events(&mut net, &s_id).contains(&Event::Deposited {
        lookup: lid2,
        message_id: *msg.message_id(),
        accepted: 5,
        refused: 0,
        held_here: want.contains(&s_id),
        taken: 0,
    }));
    assert!(!net
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::MailboxStored(_))));

    // 2. Nobody but the recipient gets it from a holder.
    let holder = want[0];
    let stranger = net.contact(&s_id);
    let answer = net.nodes.get_mut(&holder).unwrap().handle_request(
        stranger,
        Request::MailboxFetch {
            limit_bytes: 0,
            after: None,
        },
        120,
    );
    assert_eq!(
        answer,
        Response::MailboxItems {
            items: vec![],
            more: false
        }
    );

    // 3. The recipient fetches: one copy, although five holders have it.
    let second = item(&identity(4), r_id, 2, 130);
    net.nodes
        .get_mut(&identity(4).node_id())
        .unwrap()
        .deposit(second.clone(), 130)
        .unwrap();
    net.run(130);
    net.events.clear();
    let lid = net
        .nodes
        .get_mut(&r_id)
        .unwrap()
        .fetch_mailbox(200)
        .unwrap();
    net.run(200);
    let events = take_events(&mut net, &r_id);
    let mut got: Vec<MailboxItem> = events
        .iter()
        .filter_map(|e| match e {
            Event::MailboxItems { lookup, items } if *lookup == lid => Some(items.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    got.sort_by_key(|i| *i.message_id());
    assert_eq!(got, vec![msg.clone(), second.clone()]);
    let local_in = want.contains(&r_id);
    assert!(events.contains(&Event::MailboxFetched {
        lookup: lid,
        holders: if local_in { 4 } else { 5 },
        items: 2,
    }));

    // 4. The recipient deletes what it received: gone everywhere, and a tombstone refuses it.
    let del = MailboxDelete::sign(&recipient, vec![*msg.message_id()], 300).unwrap();
    let lid = net
        .nodes
        .get_mut(&r_id)
        .unwrap()
        .delete_from_mailbox(del, 300)
        .unwrap();
    net.run(300);
    assert!(
        take_events(&mut net, &r_id).contains(&Event::MailboxDeleted {
            lookup: lid,
            holders: if local_in { 4 } else { 5 },
            removed: if local_in { 4 } else { 5 },
        })
    );
    assert!(holders_of(&net, &r_id, msg.message_id()).is_empty());
    assert_eq!(holders_of(&net, &r_id, second.message_id()), want);
    let removed = net
        .events
        .iter()
        .filter(|(_, e)| {
            *e == Event::MailboxRemoved {
                recipient: r_id,
                message_id: *msg.message_id(),
            }
        })
        .count();
    assert_eq!(removed, 5);
    let again = net.nodes.get_mut(&holder).unwrap().handle_request(
        stranger,
        Request::MailboxPut {
            item: Box::new(msg.clone()),
        },
        310,
    );
    assert_eq!(
        again,
        Response::MailboxStored {
            accepted: false,
            reason: MailboxRefusal::Deleted.code()
        }
    );

    // 5. The sender deposits it again (it missed the receipt): every holder says it was taken.
    net.events.clear();
    let lid = net
        .nodes
        .get_mut(&s_id)
        .unwrap()
        .deposit(msg.clone(), 320)
        .unwrap();
    net.run(320);
    assert!(take_events(&mut net, &s_id).contains(&Event::Deposited {
        lookup: lid,
        message_id: *msg.message_id(),
        accepted: 0,
        refused: 5,
        held_here: false,
        taken: 5,
    }));
}

#[test]
fn a_recipient_among_its_own_holders_asks_every_node_that_held_for_it() {
    let mut net = Net::new(30);
    // A recipient that is itself one of the r closest to its mailbox key.
    let (index, recipient) = (0..30)
        .map(|i| (i, identity(i)))
        .find(|(_, id)| {
            let key = mailbox_key(&id.node_id());
            closest(&net, &key, MAILBOX_REPLICAS).contains(&id.node_id())
        })
        .unwrap();
    let r_id = recipient.node_id();
    let sender = identity(if index == 2 { 3 } else { 2 });
    let s_id = sender.node_id();
    // While it is away, the sender deposits at the r closest others.
    net.silent.push(r_id);
    net.events.clear();
    let msg = item(&sender, r_id, 1, 10);
    let lid = net
        .nodes
        .get_mut(&s_id)
        .unwrap()
        .deposit(msg.clone(), 10)
        .unwrap();
    let now = run_until(
        &mut net,
        &s_id,
        10,
        |e| matches!(e, Event::Deposited { lookup, .. } if *lookup == lid),
    );
    assert_eq!(
        holders_of(&net, &r_id, msg.message_id()).len(),
        MAILBOX_REPLICAS
    );
    // Back, it asks all r of them, not r - 1 beside itself.
    net.silent.clear();
    net.events.clear();
    let lid = net
        .nodes
        .get_mut(&r_id)
        .unwrap()
        .fetch_mailbox(now)
        .unwrap();
    net.run(now);
    assert!(
        take_events(&mut net, &r_id).contains(&Event::MailboxFetched {
            lookup: lid,
            holders: MAILBOX_REPLICAS as u32,
            items: 1,
        })
    );
    let del = MailboxDelete::sign(&recipient, vec![*msg.message_id()], now).unwrap();
    net.nodes
        .get_mut(&r_id)
        .unwrap()
        .delete_from_mailbox(del, now)
        .unwrap();
    net.run(now);
    assert!(holders_of(&net, &r_id, msg.message_id()).is_empty());
}

#[test]
fn a_silent_holder_counts_as_refused() {
    let mut net = Net::new(20);
    let sender = identity(2);
    let r_id = identity(9).node_id();
    let want = closest(&net, &mailbox_key(&r_id), MAILBOX_REPLICAS);
    let silent = *want.iter().find(|id| **id != sender.node_id()).unwrap();
    net.silent.push(silent);
    net.events.clear();
    let msg = item(&sender, r_id, 1, 10);
    let s_id = sender.node_id();
    let lid = net
        .nodes
        .get_mut(&s_id)
        .unwrap()
        .deposit(msg.clone(), 10)
        .unwrap();
    net.run(10);
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    while !net
        .events
        .iter()
        .any(|(_, e)| matches!(e, Event::Deposited { lookup, .. } if *lookup == lid))
    {
        let now = net.nodes[&s_id].poll_timeout();
        assert!(now < 60_000, "the deposit never ended");
        net.nodes
            .get_mut(&s_id)
            .unwrap()
            .handle_timeout(now, &mut rng);
        net.run(now);
    }
    let deposited = take_events(&mut net, &s_id)
        .into_iter()
        .find(|e| matches!(e, Event::Deposited { .. }))
        .unwrap();
    // The lookup skips the silent node, so the deposit goes to the next closest instead, or it is
    // asked and refuses by silence.
    match deposited {
        Event::Deposited {
            accepted, refused, ..
        } => {
            assert_eq!(accepted + refused, 5);
            assert!(accepted >= 4, "{accepted} accepted");
        }
        _ => unreachable!(),
    }
}

#[test]
fn a_sender_among_the_closest_keeps_its_own_item_and_says_so() {
    let mut net = Net::new(30);
    let recipient = identity(7);
    let r_id = recipient.node_id();
    let want = closest(&net, &mailbox_key(&r_id), MAILBOX_REPLICAS);
    // A sender that is one of the holders, and one that is not.
    let index = |inside: bool| {
        (0..30)
            .find(|&i| i != 7 && want.contains(&identity(i).node_id()) == inside)
            .unwrap()
    };
    for (n, inside) in [(1u8, true), (2, false)] {
        let sender = identity(index(inside));
        let s_id = sender.node_id();
        let msg = item(&sender, r_id, n, 100);
        net.events.clear();
        let lid = net
            .nodes
            .get_mut(&s_id)
            .unwrap()
            .deposit(msg.clone(), 100)
            .unwrap();
        net.run(100);
        let deposited = take_events(&mut net, &s_id)
            .into_iter()
            .find(|e| matches!(e, Event::Deposited { lookup, .. } if *lookup == lid));
        assert_eq!(
            deposited,
            Some(Event::Deposited {
                lookup: lid,
                message_id: *msg.message_id(),
                accepted: 5,
                refused: 0,
                held_here: inside,
                taken: 0,
            }),
            "sender among the holders: {inside}"
        );
        assert_eq!(holders_of(&net, &r_id, msg.message_id()), want);
    }
}

#[test]
fn a_closer_newcomer_gets_the_items_and_the_farthest_holder_lets_go() {
    let mut net = Net::new(20);
    let sender = identity(1);
    let r_id = identity(12).node_id();
    let key = mailbox_key(&r_id);
    let msg = item(&sender, r_id, 1, 0);
    let s_id = sender.node_id();
    net.nodes
        .get_mut(&s_id)
        .unwrap()
        .deposit(msg.clone(), 0)
        .unwrap();
    net.run(0);
    let before = holders_of(&net, &r_id, msg.message_id());
    assert_eq!(before.len(), 5);

    // A newcomer whose id is closer to the key than anyone's joins through one node.
    let mut near = *key.as_bytes();
    near[31] ^= 1;
    let near = NodeId::from_bytes(near);
    let addr = SocketAddr::from(([10, 0, 200, 1], 4433));
    net.addrs.insert(near, addr);
    let mut dht = Dht::new(near, DhtConfig::default(), 1_000);
    dht.add_peer(net.contact(&s_id), 1_000);
    dht.bootstrap(1_000).unwrap();
    net.nodes.insert(near, dht);
    net.run(1_000);
    assert!(holders_of(&net, &r_id, msg.message_id()).len() == 5);

    // The holders it contacted hand the item on after the hand-off delay.
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let t = 1_000 + DhtConfig::default().mailbox_handoff_delay_ms;
    for id in net.nodes.keys().copied().collect::<Vec<_>>() {
        net.nodes.get_mut(&id).unwrap().handle_timeout(t, &mut rng);
        net.run(t);
    }
    let now_holding = holders_of(&net, &r_id, msg.message_id());
    assert!(now_holding.contains(&near), "{now_holding:?}");

    // At the next periodic replication, the holder that is no longer among the 5 closest gives
    // its copy up once the 5 closest all accepted it.
    let t = DhtConfig::default().mailbox_replicate_interval_ms + 60_000;
    for id in net.nodes.keys().copied().collect::<Vec<_>>() {
        net.nodes.get_mut(&id).unwrap().handle_timeout(t, &mut rng);
        net.run(t);
    }
    let after = holders_of(&net, &r_id, msg.message_id());
    assert_eq!(after, closest(&net, &key, MAILBOX_REPLICAS));
    assert!(after.contains(&near));
}

#[test]
fn restore_reloads_and_reports_what_it_cannot() {
    let mut dht = Dht::new(NodeId::from_bytes([1; 32]), DhtConfig::default(), 0);
    let sender = identity(1);
    let r = identity(2).node_id();
    let live = item(&sender, r, 1, 0);
    let dead = MailboxItem::sign(&sender, r, MessageId::from_bytes([2; 16]), 50, vec![]).unwrap();
    assert_eq!(dht.restore_mailbox([live.clone(), dead.clone()], 100), 1);
    assert_eq!(
        dht.mailbox().unwrap().get(&r, live.message_id()),
        Some(&live)
    );
    assert_eq!(
        dht.poll_event(),
        Some(Event::MailboxRemoved {
            recipient: r,
            message_id: *dead.message_id()
        })
    );
    assert_eq!(dht.poll_event(), None);
    // A node configured to hold nothing refuses puts and restores.
    let cfg = DhtConfig {
        mailbox: crate::MailboxLimits::none(),
        ..DhtConfig::default()
    };
    let mut none = Dht::new(NodeId::from_bytes([3; 32]), cfg, 0);
    assert!(none.mailbox().is_none());
    let from = Contact::new(NodeId::from_bytes([4; 32]), "192.0.2.4:1".parse().unwrap());
    assert_eq!(
        none.handle_request(
            from,
            Request::MailboxPut {
                item: Box::new(live)
            },
            0
        ),
        Response::MailboxStored {
            accepted: false,
            reason: MailboxRefusal::NotHolding.code()
        }
    );
}

#[test]
fn expiry_in_maintenance_reports_removals() {
    let mut net = Net::new(8);
    let sender = identity(0);
    let r_id = identity(5).node_id();
    let msg = MailboxItem::sign(
        &sender,
        r_id,
        MessageId::from_bytes([9; 16]),
        90_000,
        vec![1],
    )
    .unwrap();
    net.nodes
        .get_mut(&sender.node_id())
        .unwrap()
        .deposit(msg.clone(), 0)
        .unwrap();
    net.run(0);
    assert_eq!(holders_of(&net, &r_id, msg.message_id()).len(), 5);
    net.events.clear();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    for id in net.nodes.keys().copied().collect::<Vec<_>>() {
        net.nodes
            .get_mut(&id)
            .unwrap()
            .handle_timeout(120_000, &mut rng);
    }
    net.run(120_000);
    assert!(holders_of(&net, &r_id, msg.message_id()).is_empty());
    let removed = net
        .events
        .iter()
        .filter(|(_, e)| matches!(e, Event::MailboxRemoved { .. }))
        .count();
    assert_eq!(removed, 5);
}
