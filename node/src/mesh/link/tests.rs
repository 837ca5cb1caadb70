use super::*;

use proptest::prelude::*;

fn entry(i: u16, heartbeat: u64, max_version: u64) -> DigestEntry {
    DigestEntry {
        id: ChitchatId::new(
            format!("node-{i}"),
            1_790_000_000_000 + u64::from(i),
            ([10, 0, (i >> 8) as u8, i as u8], 7946).into(),
        ),
        heartbeat,
        last_gc_version: 0,
        max_version,
    }
}

/// chitchat writes a digest in node-life order.
fn sorted(mut digest: Vec<DigestEntry>) -> Vec<DigestEntry> {
    digest.sort_by(|a, b| a.id.cmp(&b.id));
    digest
}

fn syn(digest: Vec<DigestEntry>) -> Message {
    let digest = sorted(digest);
    Message::Syn {
        digest,
        cluster_id: "cluster".into(),
    }
}

fn syn_ack(digest: Vec<DigestEntry>) -> Message {
    let digest = sorted(digest);
    Message::SynAck {
        digest,
        delta: Vec::new(),
    }
}

/// What the transport sends for `msg`, as chitchat would have written it.
fn outgoing(msg: &Message) -> Outgoing {
    Outgoing::new(codec::encode(msg), &mut None)
}

fn pair(budget: usize) -> (Link, Link) {
    (
        Link::new(LinkBudget::new(budget)),
        Link::new(LinkBudget::new(budget)),
    )
}

fn settled(n: u16, heartbeat: u64) -> Vec<DigestEntry> {
    (0..n)
        .map(|i| entry(i, heartbeat + u64::from(i), 40))
        .collect()
}

#[test]
fn a_settled_exchange_sends_heartbeats_only_and_decodes_exactly() {
    let (mut a, mut b) = pair(DEFAULT_LINK_BUDGET);
    // A's first Syn has nothing to be written against: whole entries.
    let first = syn(settled(100, 1_000));
    let frame = a.encode(&outgoing(&first));
    assert_eq!(b.decode(&frame).unwrap(), first);
    // B's answer is written against it.
    let answer = syn_ack(settled(100, 1_003));
    let frame = b.encode(&outgoing(&answer));
    assert_eq!(a.decode(&frame).unwrap(), answer);
    let plain = outgoing(&answer).plain_frame();
    // One op byte and a one-byte heartbeat change an entry, against 47 bytes in full.
    assert!(
        frame.len() * 10 < plain.len(),
        "linked {} bytes, plain {}",
        frame.len(),
        plain.len()
    );
    // A's next Syn, some rounds later, is written against B's answer.
    let later = syn(settled(100, 1_030));
    let frame = a.encode(&outgoing(&later));
    assert!(frame.len() < 400, "{} bytes", frame.len());
    assert_eq!(b.decode(&frame).unwrap(), later);
}

#[test]
fn entries_gone_added_and_changed_in_every_field_round_trip() {
    let (mut a, mut b) = pair(DEFAULT_LINK_BUDGET);
    let base = settled(10, 5);
    b.decode(&a.encode(&outgoing(&syn(base.clone())))).unwrap();
    let mut now = base.clone();
    now.remove(3);
    now[0].heartbeat = 1; // backwards
    now[1].last_gc_version = u64::MAX;
    now[2].max_version = 0;
    now.push(entry(500, u64::MAX, u64::MAX));
    now.insert(0, entry(700, 0, 0));
    let answer = syn_ack(now);
    assert_eq!(a.decode(&b.encode(&outgoing(&answer))).unwrap(), answer);
}

#[test]
fn acks_and_bad_cluster_travel_plain() {
    let (mut a, mut b) = pair(DEFAULT_LINK_BUDGET);
    for msg in [Message::Ack { delta: Vec::new() }, Message::BadCluster] {
        let frame = a.encode(&outgoing(&msg));
        assert_eq!(frame, outgoing(&msg).plain_frame());
        assert_eq!(b.decode(&frame).unwrap(), msg);
    }
}

#[test]
fn a_digest_no_longer_kept_is_refused_and_the_link_goes_on() {
    let (mut a, mut b) = pair(DEFAULT_LINK_BUDGET);
    b.decode(&a.encode(&outgoing(&syn(settled(5, 1))))).unwrap();
    let written_against_1 = b.encode(&outgoing(&syn_ack(settled(5, 2))));
    // A sends SENT_KEPT more digests that B never hears: digest 1 is dropped.
    for round in 0..SENT_KEPT as u64 {
        a.encode(&outgoing(&syn(settled(5, 10 + round))));
    }
    assert_eq!(
        a.decode(&written_against_1),
        Err(GossipFrameError::UnknownBase(1))
    );
    let next = syn(settled(5, 20));
    assert_eq!(b.decode(&a.encode(&outgoing(&next))).unwrap(), next);
}

#[test]
fn over_the_budget_digests_go_whole_and_unkept() {
    let (mut a, mut b) = pair(50);
    let big = syn(settled(60, 1));
    let frame = a.encode(&outgoing(&big));
    assert_eq!(
        a.held(),
        0,
        "a 60-entry digest does not fit a 50-entry budget"
    );
    assert_eq!(b.decode(&frame).unwrap(), big);
    // B keeps nothing of it (unkept), so B's answer is written against nothing.
    let answer = syn_ack(settled(60, 2));
    let frame = b.encode(&outgoing(&answer));
    assert_eq!(a.decode(&frame).unwrap(), answer);
    let budget = LinkBudget::new(1_000);
    {
        let mut c = Link::new(budget.clone());
        c.encode(&outgoing(&syn(settled(10, 1))));
        assert_eq!(budget.held(), 10);
    }
    assert_eq!(budget.held(), 0, "a dropped link gives its entries back");
}

#[test]
fn the_links_of_one_budget_share_its_limit() {
    let budget = LinkBudget::new(25);
    let (mut a, mut c) = (Link::new(budget.clone()), Link::new(budget.clone()));
    a.encode(&outgoing(&syn(settled(20, 1))));
    c.encode(&outgoing(&syn(settled(20, 1))));
    assert_eq!((a.held(), c.held(), budget.held()), (20, 0, 20));
}

#[test]
fn a_digest_sent_on_several_links_is_charged_once_while_one_keeps_it() {
    let budget = LinkBudget::new(25);
    let mut recent = None;
    let one_round =
        |recent: &mut Option<_>| Outgoing::new(codec::encode(&syn(settled(20, 1))), recent);
    let (mut a, mut c) = (Link::new(budget.clone()), Link::new(budget.clone()));
    a.encode(&one_round(&mut recent));
    c.encode(&one_round(&mut recent));
    assert_eq!((a.held(), c.held(), budget.held()), (20, 20, 20));
    drop(a);
    assert_eq!(budget.held(), 20, "c still keeps the digest");
    drop(c);
    assert_eq!(budget.held(), 0, "the last keeper gives it back");
}

/// A linked frame around `changes`, written against digest 1 of a link that sent `base`.
fn hostile(changes: &[u8]) -> (Link, Vec<u8>) {
    let mut victim = Link::new(LinkBudget::new(1_000));
    victim.encode(&outgoing(&syn(settled(3, 1))));
    let mut body = Vec::new();
    body.extend(7u32.to_le_bytes());
    body.extend(1u32.to_le_bytes());
    body.extend(&codec::encode(&syn(Vec::new()))[..HEADER]);
    body.extend(changes);
    "cluster".to_string().serialize(&mut body);
    (victim, mesh_proto::encode_frame(KIND_GOSSIP_LINKED, &body))
}

#[test]
fn malformed_changes_are_errors_not_panics() {
    let mut full = Vec::new();
    codec::encode_digest_entry(&entry(1, 0, 0), &mut full);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (vec![0x80, 0x80, 0x80, 0, 0], "ok"),
        (vec![0x40, 0x80, 0x80, 0, 0], "unknown digest change"),
        (vec![0x88, 0x80, 0x80, 0, 0], "unknown digest change"),
        (
            [&[0x81u8][..], &[0xff; 10], &[0x80, 0x80, 0, 0]].concat(),
            "varint",
        ),
        (vec![0x80, 0x80, 0x80, 0xff, 0xff], "more entries"),
        ([&[0x80u8, 0x80, 0x80, 1, 0][..], &full].concat(), "twice"),
    ];
    for (changes, want) in cases {
        let (mut victim, frame) = hostile(&changes);
        let got = victim.decode(&frame);
        if want == "ok" {
            assert!(got.is_ok(), "{got:?}");
            continue;
        }
        let e = got.unwrap_err().to_string();
        assert!(e.contains(want), "{changes:02x?}: {e}");
    }
    // Every truncation of a valid frame is an error.
    let (_, frame) = hostile(&[0x81, 0x05, 0x80, 0x80, 0, 0]);
    for cut in 0..frame.len() {
        let (mut victim, _) = hostile(&[]);
        assert!(victim.decode(&frame[..cut]).is_err(), "cut at {cut}");
    }
    // A linked frame holding an Ack is refused.
    let mut body = vec![0u8; 8];
    body.extend(codec::encode(&Message::Ack { delta: Vec::new() }));
    let frame = mesh_proto::encode_frame(KIND_GOSSIP_LINKED, &body);
    let (mut victim, _) = hostile(&[]);
    assert!(victim.decode(&frame).is_err());
}

#[test]
fn zigzag_and_varints_round_trip_at_the_edges() {
    for d in [0i64, 1, -1, 63, -64, i64::MAX, i64::MIN] {
        let mut out = Vec::new();
        put_varint(zigzag(d), &mut out);
        assert!(out.len() <= 10);
        let mut buf = &out[..];
        assert_eq!(unzigzag(take_varint(&mut buf).unwrap()), d);
        assert!(buf.is_empty());
    }
}

/// One step of a random exchange between two links.
#[derive(Clone, Debug)]
enum Step {
    /// A (or B) sends a digest of these (node, heartbeat, max version); it arrives or is lost.
    Send {
        from_a: bool,
        syn: bool,
        nodes: Vec<(u16, u64, u64)>,
        lost: bool,
    },
    /// The last frame held back is delivered now (a reordering).
    Late,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => (
            any::<bool>(),
            any::<bool>(),
            prop::collection::btree_map(0u16..12, (0u64..6, 0u64..3), 0..10),
            prop::bool::weighted(0.2),
        )
            .prop_map(|(from_a, syn, m, lost)| Step::Send {
                from_a,
                syn,
                nodes: m.into_iter().map(|(i, (h, v))| (i, h, v)).collect(),
                lost,
            }),
        1 => Just(Step::Late),
    ]
}

proptest! {
    /// Whatever the order, losses and reorderings, a frame decodes to exactly the message sent,
    /// or is refused as written against a digest no longer kept: never to another message.
    #[test]
    fn every_frame_decodes_to_what_was_sent_or_is_refused_as_stale(
        steps in prop::collection::vec(step(), 1..60),
        budget in prop_oneof![Just(DEFAULT_LINK_BUDGET), 0usize..20],
    ) {
        let (mut a, mut b) = pair(budget);
        let mut held_back: Option<(bool, Vec<u8>, Message)> = None;
        for s in steps {
            let (to_b, frame, msg) = match s {
                Step::Send { from_a, syn: is_syn, nodes, lost } => {
                    let digest = nodes.iter().map(|(i, h, v)| entry(*i, *h, *v)).collect();
                    let msg = if is_syn { syn(digest) } else { syn_ack(digest) };
                    let sender = if from_a { &mut a } else { &mut b };
                    let frame = sender.encode(&outgoing(&msg));
                    if lost {
                        if held_back.is_none() {
                            held_back = Some((from_a, frame, msg));
                        }
                        continue;
                    }
                    (from_a, frame, msg)
                }
                Step::Late => match held_back.take() {
                    Some(late) => late,
                    None => continue,
                },
            };
            let receiver = if to_b { &mut b } else { &mut a };
            match receiver.decode(&frame) {
                Ok(got) => prop_assert_eq!(got, msg),
                Err(GossipFrameError::UnknownBase(_)) => {}
                Err(e) => prop_assert!(false, "refused: {}", e),
            }
            prop_assert!(a.held() + b.held() <= 2 * budget);
        }
        // Whatever happened, the link heals: after one stale frame each way at most, digests
        // decode again.
        let mut decoded = Vec::new();
        for round in 0..6u64 {
            let (from_a, msg) = (round % 2 == 0, syn(settled(4, 100 + round)));
            let (sender, receiver) = if from_a { (&mut a, &mut b) } else { (&mut b, &mut a) };
            let frame = sender.encode(&outgoing(&msg));
            match receiver.decode(&frame) {
                Ok(got) => {
                    prop_assert_eq!(got, msg);
                    decoded.push(round);
                }
                Err(GossipFrameError::UnknownBase(_)) => {}
                Err(e) => prop_assert!(false, "refused: {}", e),
            }
        }
        prop_assert!(
            decoded.ends_with(&[2, 3, 4, 5]),
            "the link did not heal: decoded in rounds {:?}",
            decoded
        );
    }
}

#[test]
fn after_a_partition_both_sides_heal_within_one_exchange() {
    let (mut a, mut b) = pair(DEFAULT_LINK_BUDGET);
    b.decode(&a.encode(&outgoing(&syn(settled(5, 1))))).unwrap();
    a.decode(&b.encode(&outgoing(&syn_ack(settled(5, 2)))))
        .unwrap();
    // Cut off: each sends more digests than the other keeps, none arrives.
    for round in 0..=SENT_KEPT as u64 {
        a.encode(&outgoing(&syn(settled(5, 10 + round))));
        b.encode(&outgoing(&syn(settled(5, 10 + round))));
    }
    // Healed: both first frames are stale; each side then sends its digest whole.
    let (from_a, from_b) = (
        a.encode(&outgoing(&syn(settled(5, 20)))),
        b.encode(&outgoing(&syn(settled(5, 20)))),
    );
    assert!(matches!(
        b.decode(&from_a),
        Err(GossipFrameError::UnknownBase(_))
    ));
    assert!(matches!(
        a.decode(&from_b),
        Err(GossipFrameError::UnknownBase(_))
    ));
    for round in 0..4 {
        let msg = syn(settled(5, 30 + round));
        let got = if round % 2 == 0 {
            b.decode(&a.encode(&outgoing(&msg)))
        } else {
            a.decode(&b.encode(&outgoing(&msg)))
        };
        assert_eq!(got.unwrap(), msg, "round {round} after the heal");
    }
}
