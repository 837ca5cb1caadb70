//! Writes the fixture PKI (if absent) and the seed corpora: valid inputs of every target, encoded
//! by the agent's own encoders, so fuzzing starts from real messages.
//!
//! Run from `fuzz/`: `cargo run --example seeds` (fixtures in `fixtures/`, seeds in
//! `corpus/<target>/seed-*`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

use chitchat::{ChitchatId, Serializable};
use dvrmesh_fuzz::{fixtures, me, peer, signer, FIXTURE_DAYS, PEER};
use dvrmesh_node::mesh::codec::{self, DigestEntry, Kv, KvStatus, Message, NodeDelta};
use dvrmesh_node::mesh::keys::{KEY_CERT, KEY_NODE_FACTS};
use dvrmesh_node::mesh::link::{Link, LinkBudget, Outgoing};
use dvrmesh_node::mesh::pki::sealed::{seal, Place};
use dvrmesh_node::mesh::pki::{init_ca, issue_node_cert, Signer};
use dvrmesh_node::mesh::trust::Sender;
use dvrmesh_node::mesh::wire::KIND_GOSSIP;
use mesh_proto::{
    dvr_mac_for, AddressClaim, ElectionMessage, ExternalMapping, HlcTimestamp, InterfaceName,
    MacClaim, Name, NetworkSpec, NodeFacts, NodeId, NodeMode, ObjectId, Priority, Record,
    SignedClaim, SnatClaim, TenantObject, Version, Vni,
};

type Res<T> = Result<T, Box<dyn std::error::Error>>;

fn main() -> Res<()> {
    write_fixtures()?;
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let signer = signer();
    let targets: [(&str, Vec<Vec<u8>>); 10] = [
        ("gossip_frame", gossip_frames(&signer)?),
        ("gossip_linked", linked_frames(&signer)?),
        ("gossip_value", gossip_values(&signer)?),
        ("stream_frame", stream_frames(&signer)?),
        ("election_datagram", datagrams()?),
        ("api_request", api_requests()),
        ("config_file", configs()),
        ("crl_pem", crls()?),
        ("dhcp_frame", dhcp_frames()?),
        ("metadata_path", metadata_paths()),
    ];
    // `cargo run --example seeds -- TARGET…` writes only those targets' seeds.
    let only: Vec<String> = std::env::args().skip(1).collect();
    for (target, seeds) in targets {
        if !only.is_empty() && !only.iter().any(|t| t == target) {
            continue;
        }
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), seed)?;
        }
        println!("{target}: {} seeds", seeds.len());
    }
    Ok(())
}

/// A CA and the sender's certificate, valid for a century, unless already there.
fn write_fixtures() -> Res<()> {
    let dir = fixtures();
    if dir.join("ca/ca.pem").exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir)?;
    init_ca(&dir.join("ca"), FIXTURE_DAYS)?;
    issue_node_cert(
        &dir.join("ca"),
        &NodeId::new(PEER)?,
        &dir.join(PEER),
        FIXTURE_DAYS,
    )?;
    Ok(())
}

fn facts() -> Res<NodeFacts> {
    let id = NodeId::new(PEER)?;
    let mut ext = BTreeMap::new();
    ext.insert(
        Name::new("public")?,
        ExternalMapping {
            interface: InterfaceName::new("eth1")?,
        },
    );
    Ok(NodeFacts::new(
        id.clone(),
        NodeMode::DvrSnat,
        Ipv4Addr::new(192, 0, 2, 11),
        dvr_mac_for(&id),
        Priority::new(200)?,
        ext,
    )?)
}

fn version() -> Res<Version> {
    Ok(Version {
        hlc: HlcTimestamp(1_700_000_000_000 << 16),
        writer: NodeId::new(PEER)?,
    })
}

fn record() -> Res<Record> {
    let net = mesh_proto::Network::new(NetworkSpec {
        id: ObjectId::new("n1")?,
        name: Name::new("net-a")?,
        vni: Vni::new(1001)?,
        mtu: mesh_proto::Mtu::VXLAN_DEFAULT,
    })?;
    Ok(Record::object(TenantObject::Network(net), version()?))
}

fn snat_claim() -> Res<SnatClaim> {
    Ok(SnatClaim {
        router: ObjectId::new("r1")?,
        epoch: 3,
        priority: Priority::new(200)?,
        node: NodeId::new(PEER)?,
    })
}

/// The payloads a node publishes, each as gossip text.
fn payloads(signer: &Signer) -> Res<Vec<(String, String)>> {
    let claim = snat_claim()?;
    let sig = signer.sign(&dvrmesh_node::mesh::pki::signing::claim_message(&claim)?)?;
    let rec = record()?;
    Ok(vec![
        (
            KEY_CERT.to_string(),
            dvrmesh_fuzz::credentials().published_cert()?,
        ),
        (
            KEY_NODE_FACTS.to_string(),
            mesh_proto::encode_value(&facts()?)?,
        ),
        (rec.key(), mesh_proto::encode_value(&rec)?),
        (
            claim.key(),
            mesh_proto::encode_value(&SignedClaim {
                claim: claim.clone(),
                signature: sig,
            })?,
        ),
        {
            let c = AddressClaim {
                pool: ObjectId::new("s1")?,
                ip: Ipv4Addr::new(10, 1, 0, 10),
                holder: ObjectId::new("p1")?,
                version: version()?,
            };
            (c.key(), mesh_proto::encode_value(&c)?)
        },
        {
            let c = MacClaim {
                mac: "fa:16:3e:00:00:01".parse()?,
                holder: ObjectId::new("p1")?,
                version: version()?,
            };
            (c.key(), mesh_proto::encode_value(&c)?)
        },
    ])
}

/// The sender's key space as sealed key/values, versions from 1 (the certificate first).
fn sealed_kvs(signer: &Signer) -> Res<Vec<Kv>> {
    let id = peer();
    let mut kvs = Vec::new();
    for (i, (key, payload)) in payloads(signer)?.into_iter().enumerate() {
        let version = i as u64 + 1;
        let place = Place {
            id: &id,
            key: &key,
            version,
            tombstone: false,
        };
        kvs.push(Kv {
            value: seal(signer, place, &payload)?,
            key,
            version,
            status: KvStatus::Set,
        });
    }
    // A tombstone: an empty payload, sealed as one.
    let version = kvs.len() as u64 + 1;
    let key = "snat/r0".to_string();
    let place = Place {
        id: &id,
        key: &key,
        version,
        tombstone: true,
    };
    kvs.push(Kv {
        value: seal(signer, place, "")?,
        key,
        version,
        status: KvStatus::DeleteAfterTtl,
    });
    Ok(kvs)
}

fn digest() -> Vec<DigestEntry> {
    let entry = |id: ChitchatId, heartbeat, max_version| DigestEntry {
        id,
        heartbeat,
        last_gc_version: 0,
        max_version,
    };
    vec![
        entry(peer(), 40, 7),
        entry(me(), 38, 5),
        entry(
            ChitchatId::new("ghost".to_string(), 9, ([127, 0, 0, 1], 7009).into()),
            1_000,
            3,
        ),
    ]
}

fn messages(signer: &Signer) -> Res<Vec<Message>> {
    let kvs = sealed_kvs(signer)?;
    let delta = vec![NodeDelta {
        id: peer(),
        last_gc_version: 0,
        from_version_excluded: 0,
        kvs: kvs.clone(),
        set_max_version: None,
    }];
    let relayed = NodeDelta {
        id: ChitchatId::new("fuzz-b".to_string(), 2, ([127, 0, 0, 1], 7002).into()),
        last_gc_version: 4,
        from_version_excluded: 0,
        kvs: Vec::new(),
        set_max_version: Some(9),
    };
    let about_me = NodeDelta {
        id: me(),
        last_gc_version: 0,
        from_version_excluded: 3,
        kvs: kvs[1..2].to_vec(),
        set_max_version: None,
    };
    let own_max = NodeDelta {
        id: peer(),
        last_gc_version: 3,
        from_version_excluded: 5,
        kvs: Vec::new(),
        set_max_version: Some(7),
    };
    Ok(vec![
        Message::Syn {
            digest: digest(),
            cluster_id: "dvrmesh".into(),
        },
        Message::SynAck {
            digest: digest(),
            delta: delta.clone(),
        },
        Message::Ack {
            delta: delta.clone(),
        },
        Message::Ack {
            delta: vec![delta[0].clone(), relayed, about_me],
        },
        Message::Ack {
            delta: vec![own_max],
        },
        Message::BadCluster,
    ])
}

/// The same Ack with its delta in one zstd block, as chitchat compresses large deltas.
fn compressed_ack(msg: &Message) -> Res<Vec<u8>> {
    let plain = codec::encode(msg);
    // Header (magic, protocol, type), then plain blocks: type 2, u16 length, content; then 0.
    let mut content = Vec::new();
    let mut rest = &plain[4..];
    while rest[0] == 2 {
        let len = u16::from_le_bytes([rest[1], rest[2]]) as usize;
        content.extend_from_slice(&rest[3..3 + len]);
        rest = &rest[3 + len..];
    }
    let block = zstd::bulk::compress(&content, 3)?;
    let mut out = plain[..4].to_vec();
    out.push(1);
    (block.len() as u16).serialize(&mut out);
    out.extend(block);
    out.push(0);
    Ok(out)
}

/// The seeds are only worth something if the trust filter takes the sender's values: its
/// certificate anchors its node life and every seal verifies.
fn check_anchored(msg: &Message) -> Res<()> {
    let peer = dvrmesh_fuzz::peer_id();
    let from = Sender {
        node: &peer,
        addr: dvrmesh_fuzz::peer_addr(),
    };
    let trust = dvrmesh_fuzz::trust();
    let filtered = trust.filter(msg.clone(), from, std::time::Instant::now());
    let counters = trust.counters();
    if filtered != *msg || counters.bad_seals + counters.unanchored_deltas > 0 {
        return Err(format!("the trust filter refused a seed: {counters:?}").into());
    }
    Ok(())
}

fn gossip_frames(signer: &Signer) -> Res<Vec<Vec<u8>>> {
    let msgs = messages(signer)?;
    check_anchored(&msgs[2])?;
    let mut out: Vec<Vec<u8>> = msgs
        .iter()
        .map(|m| mesh_proto::encode_frame(KIND_GOSSIP, &codec::encode(m)))
        .collect();
    out.push(mesh_proto::encode_frame(
        KIND_GOSSIP,
        &compressed_ack(&msgs[2])?,
    ));
    Ok(out)
}

/// Linked frames as a peer writes them to the fuzz target's node, which sent digest 1 (three
/// node lives `node-0`..`node-2`, as in `fuzz_targets/gossip_linked.rs`): the first (against
/// nothing), one against digest 1, and a SynAck with a sealed delta.
fn linked_frames(signer: &Signer) -> Res<Vec<Vec<u8>>> {
    let entry = |i: u16, heartbeat: u64| DigestEntry {
        id: ChitchatId::new(format!("node-{i}"), 1, ([127, 0, 0, 1], 7000 + i).into()),
        heartbeat,
        last_gc_version: 0,
        max_version: 7,
    };
    let syn = |digest: Vec<DigestEntry>| Message::Syn {
        digest,
        cluster_id: "fuzz".into(),
    };
    let out = |m: &Message| Outgoing::new(codec::encode(m), &mut None);
    let mut node = Link::new(LinkBudget::new(1 << 16));
    let mut peer = Link::new(LinkBudget::new(1 << 16));
    let first = peer.encode(&out(&syn((0..3).map(|i| entry(i, 100)).collect())));
    peer.decode(&node.encode(&out(&syn((0..3).map(|i| entry(i, 100 + u64::from(i))).collect()))))?;
    let against_1 = peer.encode(&out(&syn(vec![entry(0, 90), entry(2, 130), entry(9, 1)])));
    let delta = match messages(signer)?.remove(1) {
        Message::SynAck { delta, .. } => delta,
        other => return Err(format!("seed message 1 is no SynAck: {other:?}").into()),
    };
    let with_delta = peer.encode(&out(&Message::SynAck {
        digest: (0..3).map(|i| entry(i, 140)).collect(),
        delta,
    }));
    Ok(vec![first, against_1, with_delta])
}

fn gossip_values(signer: &Signer) -> Res<Vec<Vec<u8>>> {
    Ok(sealed_kvs(signer)?
        .into_iter()
        .map(|kv| kv.value.into_bytes())
        .collect())
}

fn stream_frames(signer: &Signer) -> Res<Vec<Vec<u8>>> {
    let mut out = gossip_frames(signer)?;
    out.truncate(2);
    out.push(mesh_proto::encode_frame(2, &[]));
    out.push(mesh_proto::encode_frame(7, &[0xaa; 300]));
    Ok(out)
}

fn datagrams() -> Res<Vec<Vec<u8>>> {
    let one = snat_claim()?;
    let mut many = Vec::new();
    for i in 0..16 {
        let mut c = one.clone();
        c.router = ObjectId::new(format!("r{i}"))?;
        c.epoch = i;
        many.push(c);
    }
    Ok(vec![
        ElectionMessage::Advert(vec![one.clone()]).encode()?,
        ElectionMessage::Takeover(vec![one.clone()]).encode()?,
        ElectionMessage::Release(vec![one.clone()]).encode()?,
        ElectionMessage::Restarting(mesh_proto::RestartNotice {
            claims: vec![one],
            hold_ms: 5_000,
        })
        .encode()?,
        ElectionMessage::Advert(many).encode()?,
    ])
}

fn api_requests() -> Vec<Vec<u8>> {
    [
        r#"{"op":"members"}"#,
        r#"{"op":"status"}"#,
        r#"{"op":"ha_status"}"#,
        r#"{"op":"drain"}"#,
        r#"{"op":"network_create","name":"net-a","vni":1001,"mtu":1450}"#,
        r#"{"op":"subnet_create","name":"sub-a","network":"net-a","cidr":"10.1.0.0/24","gateway":"10.1.0.1","pool":"10.1.0.10-10.1.0.250"}"#,
        r#"{"op":"external_network_create","name":"public","cidr":"203.0.113.0/24","gateway":"203.0.113.1","pool":null}"#,
        r#"{"op":"router_create","name":"router-a"}"#,
        r#"{"op":"router_set_gateway","router":"router-a","external_network":"public","snat":true}"#,
        r#"{"op":"router_set_ha","router":"router-a","priorities":["c1=200","c2=default"],"preempt":true,"preempt_delay":"500ms"}"#,
        r#"{"op":"delete","kind":"network","reference":"net-a"}"#,
        r#"{"op":"view"}"#,
    ]
    .iter()
    .map(|j| mesh_proto::encode_frame(dvrmesh_node::api::KIND_REQUEST, j.as_bytes()))
    .collect()
}

const CONFIG: &str = r#"node_id = "compute-1"
mode = "dvr"
listen = "127.0.0.1:7101"
seeds = ["127.0.0.1:7102", "net-1.lab:7101"]
tunnel_ip = "127.0.0.1"
snat_priority = 100
api_socket = "/run/dvrmesh/compute-1.sock"
data_dir = "/var/lib/dvrmesh/compute-1"
gossip_interval_ms = 200

[tls]
ca = "ca/ca.pem"
cert = "compute-1/node.pem"
key = "compute-1/node.key"

[external.public]
interface = "eth1"
"#;

fn configs() -> Vec<Vec<u8>> {
    let full = CONFIG.replace(
        "gossip_interval_ms = 200\n",
        "gossip_interval_ms = 200\nadvertise = \"10.0.0.11:7101\"\ncluster_id = \"lab\"\n\
         datapath = \"off\"\nnetns_dir = \"/run/netns\"\nsnat_advert_interval_ms = 20\n\
         snat_advert_multiplier = 8\nmax_clock_skew_ms = 10000\n",
    );
    let snat = CONFIG
        .replace("mode = \"dvr\"", "mode = \"dvr_snat\"")
        .replace(
            "key = \"compute-1/node.key\"",
            "key = \"compute-1/node.key\"\ncrl = \"ca/crl.pem\"",
        );
    let bad = CONFIG
        .replace("mode = \"dvr\"", "mode = \"router\"")
        .replace("snat_priority = 100", "snat_priority = 0");
    [CONFIG.to_string(), full, snat, bad]
        .into_iter()
        .map(String::into_bytes)
        .collect()
}

/// The fixture CA's list as `ca init` writes it (empty), and after revoking a node (in a copy
/// of the CA directory, so the fixture stays as it is).
fn crls() -> Res<Vec<Vec<u8>>> {
    let tmp = std::env::temp_dir().join(format!("dvrmesh-fuzz-seeds-{}", std::process::id()));
    let ca = tmp.join("ca");
    std::fs::create_dir_all(ca.join("issued"))?;
    for f in std::fs::read_dir(fixtures().join("ca"))? {
        let f = f?;
        if f.file_type()?.is_file() {
            std::fs::copy(f.path(), ca.join(f.file_name()))?;
        }
    }
    let empty = std::fs::read(ca.join("crl.pem"))?;
    let node = NodeId::new("victim")?;
    issue_node_cert(&ca, &node, &tmp.join("victim"), FIXTURE_DAYS)?;
    dvrmesh_node::mesh::pki::revoke::revoke(&ca, Some(&node), None)?;
    let revoked = std::fs::read(ca.join("crl.pem"))?;
    std::fs::remove_dir_all(&tmp)?;
    Ok(vec![empty, revoked])
}

/// What a VM's DHCP client sends on its port: DISCOVER, REQUEST, INFORM and RELEASE from the
/// fixture lease's MAC, and a DISCOVER from another MAC.
fn dhcp_frames() -> Res<Vec<Vec<u8>>> {
    use dhcproto::v4::{DhcpOption, Message, MessageType};
    use dhcproto::Encodable;
    let vm: mesh_proto::MacAddr = dvrmesh_fuzz::DHCP_VM_MAC.parse()?;
    let other = [0xfa, 0x16, 0x3e, 0, 0, 2];
    let frame = |src: [u8; 6], kind: MessageType, ciaddr: Ipv4Addr| -> Res<Vec<u8>> {
        let mut m = Message::new_with_id(
            0x1234,
            ciaddr,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &src,
        );
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        if kind == MessageType::Request {
            m.opts_mut()
                .insert(DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 1, 0, 10)));
        }
        let payload = m.to_vec()?;
        let builder = etherparse::PacketBuilder::ethernet2(src, [0xff; 6])
            .ipv4(ciaddr.octets(), [255; 4], 64)
            .udp(68, 67);
        let mut out = Vec::new();
        builder.write(&mut out, &payload)?;
        Ok(out)
    };
    let me = vm.octets();
    let lent = Ipv4Addr::new(10, 1, 0, 10);
    Ok(vec![
        frame(me, MessageType::Discover, Ipv4Addr::UNSPECIFIED)?,
        frame(me, MessageType::Request, Ipv4Addr::UNSPECIFIED)?,
        frame(me, MessageType::Request, lent)?,
        frame(me, MessageType::Inform, lent)?,
        frame(me, MessageType::Release, lent)?,
        frame(other, MessageType::Discover, Ipv4Addr::UNSPECIFIED)?,
    ])
}

/// Every path the metadata service serves, and a few it refuses, as a VM's client asks them.
fn metadata_paths() -> Vec<Vec<u8>> {
    [
        "/",
        "/openstack",
        "/openstack/latest/",
        "/openstack/latest/meta_data.json",
        "/openstack/latest/network_data.json",
        "/openstack/latest/user_data",
        "/latest",
        "/latest/user-data",
        "/latest/meta-data/",
        "/latest/meta-data/instance-id",
        "/latest/meta-data/public-ipv4",
        "/latest/meta-data/placement/availability-zone",
        "/latest/meta-data/public-keys/",
        "/latest/meta-data/public-keys/1/openssh-key",
        "/latest/meta-data/public-keys/01/openssh-key",
        "/latest/../latest/user-data",
        "/2009-04-04/meta-data/",
    ]
    .iter()
    .map(|p| p.as_bytes().to_vec())
    .collect()
}
