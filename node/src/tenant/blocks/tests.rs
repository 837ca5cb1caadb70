//! Unit tests of the pure block rules: carving, choosing, borrowing, idle and duplicate detection.

use super::*;
use mesh_proto::{HlcTimestamp, Version};

fn node(n: &str) -> NodeId {
    NodeId::new(n).unwrap()
}

fn block(space: &BlockSpace, first: u32, len: u32, at: u64, by: &str) -> AddressBlock {
    AddressBlock {
        space: space.clone(),
        first,
        len,
        version: Version {
            hlc: HlcTimestamp(at << 16),
            writer: node(by),
        },
    }
}

fn state_with(blocks: Vec<AddressBlock>) -> TenantState {
    let mut s = TenantState::default();
    for b in blocks {
        s.blocks.entry(b.space.clone()).or_default().push(b);
    }
    for bs in s.blocks.values_mut() {
        bs.sort_by(|a, b| a.version.cmp(&b.version));
    }
    s
}

fn pool() -> BlockSpace {
    BlockSpace::Pool(ObjectId::new("s1").unwrap())
}

#[test]
fn blocks_are_an_eighth_of_the_pool_between_one_and_sixteen() {
    assert_eq!(pool_block_len(253), 16); // a /24
    assert_eq!(pool_block_len(61), 4); // a /26
    assert_eq!(pool_block_len(13), 1); // a /28: one by one
    assert_eq!(pool_block_len(5), 1); // a /29
    assert_eq!(pool_block_len(1 << 20), 16);
}

#[test]
fn of_overlapping_blocks_the_older_wins_and_a_block_beside_a_loser_still_wins() {
    let a = block(&pool(), 100, 16, 5, "a"); // oldest
    let b = block(&pool(), 108, 16, 6, "b"); // overlaps a: loses
    let c = block(&pool(), 120, 8, 7, "c"); // overlaps only the loser b: wins
    let s = state_with(vec![c.clone(), b.clone(), a.clone()]);
    let won: Vec<u32> = winners(&s, &pool()).iter().map(|w| w.first).collect();
    assert_eq!(won, [100, 120]);
    assert!(block_won(&s, &a) && !block_won(&s, &b) && block_won(&s, &c));
}

#[test]
fn a_node_uses_only_its_winning_blocks_once_confirmed_or_settled() {
    let mine_old = block(&pool(), 0, 4, 1_000, "a");
    let mine_new = block(&pool(), 4, 4, 9_900, "a");
    let theirs = block(&pool(), 8, 4, 1_000, "b");
    let lost = block(&pool(), 2, 4, 9_000, "a"); // overlaps mine_old, younger: lost
    let s = state_with(vec![mine_old.clone(), mine_new.clone(), theirs, lost]);
    let none = BTreeSet::new();
    let firsts = |v: Vec<&AddressBlock>| v.iter().map(|b| b.first).collect::<Vec<_>>();
    // At 10 000 ms with 500 ms to settle: the new one is too fresh unless confirmed.
    assert_eq!(
        firsts(usable_blocks(&s, &pool(), &node("a"), 10_000, 500, &none)),
        [0]
    );
    let confirmed: BTreeSet<String> = [mine_new.key()].into();
    assert_eq!(
        firsts(usable_blocks(
            &s,
            &pool(),
            &node("a"),
            10_000,
            500,
            &confirmed
        )),
        [0, 4]
    );
}

#[test]
fn free_values_skip_taken_and_stay_inside_the_range() {
    let b = block(&pool(), 10, 8, 1, "a");
    let blocks = [&b];
    let taken: BTreeSet<u32> = [10, 12].into();
    let free: Vec<u32> = free_values(&blocks, (11, 5), &taken).collect();
    assert_eq!(free, [11, 13, 14, 15]);
}

#[test]
fn the_next_block_avoids_every_published_block_and_shrinks_when_the_pool_is_nearly_full() {
    let s = state_with(vec![
        block(&pool(), 0, 16, 1, "a"),
        block(&pool(), 16, 8, 2, "b"),
    ]);
    let none = BTreeSet::new();
    // 32 values: only 24..32 is free of blocks; a block of 16 does not fit, one of 8 does.
    for seed in 0..8 {
        assert_eq!(
            next_block(&s, &pool(), (0, 32), 16, &none, &[], seed),
            Some((24, 8))
        );
    }
    // A slot with one free value left is still worth a block; one with none is not.
    let taken: BTreeSet<u32> = (24..31).collect();
    assert_eq!(
        next_block(&s, &pool(), (0, 32), 16, &taken, &[], 0),
        Some((24, 8))
    );
    // A block picked for the same claim counts as published.
    let picked = block(&pool(), 24, 8, 3, "a");
    assert_eq!(
        next_block(&s, &pool(), (0, 32), 16, &none, &[picked], 0),
        None
    );
    let all: BTreeSet<u32> = (24..32).collect();
    assert_eq!(next_block(&s, &pool(), (0, 32), 16, &all, &[], 0), None);
    // Blocks cover 0..24, 24..26 and 28..32: only a block of 2 fits, at 26.
    let s = state_with(vec![
        block(&pool(), 0, 16, 1, "a"),
        block(&pool(), 16, 8, 2, "b"),
        block(&pool(), 28, 4, 3, "c"),
        block(&pool(), 24, 2, 4, "d"),
    ]);
    assert_eq!(
        next_block(&s, &pool(), (0, 32), 16, &none, &[], 0),
        Some((26, 2))
    );
}

#[test]
fn macs_map_to_values_and_back() {
    let v = 0x12_34_56;
    let mac = mac_of(v);
    assert_eq!(mac.to_string(), "fa:16:3e:12:34:56");
    assert_eq!(mac_value(mac), Some(v));
    let other = MacAddr::new([0x02, 0, 0, 0, 0, 1]).unwrap();
    assert_eq!(mac_value(other), None);
}

#[test]
fn of_two_ports_with_one_address_the_older_record_keeps_it() {
    use mesh_proto::{Name, Port, PortSpec, Record, TenantObject};
    let mut s = TenantState::default();
    let net = ObjectId::new("n1").unwrap();
    let port = |id: &str, host: &str, ip: [u8; 4], mac: u8, at: u64| {
        let p = Port::new(PortSpec {
            id: ObjectId::new(id).unwrap(),
            name: Name::new(id).unwrap(),
            network: net.clone(),
            mac: MacAddr::new([0xfa, 0x16, 0x3e, 0, 0, mac]).unwrap(),
            fixed_ips: vec![Ipv4Addr::from(ip)],
            host: node(host),
            device: None,
            allowed_address_pairs: Vec::new(),
            metadata: Default::default(),
        })
        .unwrap();
        let v = Version {
            hlc: HlcTimestamp(at << 16),
            writer: node(host),
        };
        Record::object(TenantObject::Port(p), v)
    };
    for r in [
        port("p-new", "b", [10, 0, 0, 6], 2, 20),
        port("p-old", "a", [10, 0, 0, 6], 1, 10),
        port("p-other", "c", [10, 0, 0, 7], 1, 15),
    ] {
        s.records
            .insert((r.kind(), r.id().clone()), std::sync::Arc::new(r));
    }
    let d = duplicates(&s);
    assert_eq!(d.len(), 2, "{d:?}");
    let addr = d
        .iter()
        .find(|x| matches!(x.value, DuplicateValue::Address(_)))
        .unwrap();
    assert_eq!(
        (
            addr.keeper.as_str(),
            addr.loser.as_str(),
            addr.loser_host.as_str()
        ),
        ("p-old", "p-new", "b")
    );
    // The MAC fa:16:3e:00:00:01 is held by p-old (older) and p-other.
    let mac = d
        .iter()
        .find(|x| matches!(x.value, DuplicateValue::Mac(_)))
        .unwrap();
    assert_eq!(
        (mac.keeper.as_str(), mac.loser.as_str()),
        ("p-old", "p-other")
    );
}

#[test]
fn carving_values_out_of_a_block_leaves_the_runs_around_them() {
    let b = block(&pool(), 100, 16, 1, "a");
    let set = |v: &[u32]| v.iter().copied().collect::<BTreeSet<u32>>();
    assert_eq!(carve(&b, &set(&[105])), vec![(100, 5), (106, 10)]);
    assert_eq!(carve(&b, &set(&[100, 115])), vec![(101, 14)]);
    assert_eq!(carve(&b, &set(&[103, 104])), vec![(100, 3), (105, 11)]);
    // Values outside the block change nothing; every value carved leaves nothing.
    assert_eq!(carve(&b, &set(&[99, 116])), vec![(100, 16)]);
    assert_eq!(carve(&b, &(100..116).collect()), Vec::<(u32, u32)>::new());
    let one = block(&pool(), 7, 1, 1, "a");
    assert_eq!(carve(&one, &set(&[7])), Vec::<(u32, u32)>::new());
}

#[test]
fn only_this_node_s_blocks_of_a_deleted_pool_are_orphans_and_an_unknown_pool_is_not_deleted() {
    let gone = BlockSpace::Pool(ObjectId::new("s-gone").unwrap());
    let unknown = BlockSpace::Pool(ObjectId::new("s-unknown").unwrap());
    let mine_gone = block(&gone, 0, 4, 1, "a");
    let theirs_gone = block(&gone, 4, 4, 1, "b");
    let mine_unknown = block(&unknown, 0, 4, 1, "a");
    let mut s = state_with(vec![mine_gone.clone(), theirs_gone, mine_unknown]);
    assert!(
        orphan_blocks(&s, &node("a")).is_empty(),
        "a block of a pool this view does not know (yet) was taken for an orphan"
    );
    let id = ObjectId::new("s-gone").unwrap();
    let tombstone = mesh_proto::Record::tombstone(
        ObjectKind::Subnet,
        id.clone(),
        Version {
            hlc: HlcTimestamp(2 << 16),
            writer: node("b"),
        },
    );
    s.records
        .insert((ObjectKind::Subnet, id), std::sync::Arc::new(tombstone));
    let orphans: Vec<String> = orphan_blocks(&s, &node("a"))
        .iter()
        .map(|b| b.key())
        .collect();
    assert_eq!(orphans, [mine_gone.key()]);
}
