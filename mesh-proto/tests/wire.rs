//! Wire-format tests: property round trips, golden bytes per type, and hostile input.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use mesh_proto::*;
use proptest::prelude::*;

// === strategies ===

fn label(max: usize) -> impl Strategy<Value = String> {
    proptest::string::string_regex(&format!("[a-z0-9]([a-z0-9-]{{0,{}}}[a-z0-9])?", max - 2))
        .expect("regex")
}
fn node_id() -> impl Strategy<Value = NodeId> {
    label(32).prop_map(|s| NodeId::new(s).expect("generated label is valid"))
}
fn object_id() -> impl Strategy<Value = ObjectId> {
    label(36).prop_map(|s| ObjectId::new(s).expect("generated label is valid"))
}
fn name() -> impl Strategy<Value = Name> {
    proptest::string::string_regex("[A-Za-z0-9][A-Za-z0-9._-]{0,20}")
        .expect("regex")
        .prop_map(|s| Name::new(s).expect("generated name is valid"))
}
fn ip() -> impl Strategy<Value = Ipv4Addr> {
    (1u8..224, any::<u8>(), any::<u8>(), 1u8..255)
        .prop_map(|(a, b, c, d)| Ipv4Addr::new(a, b, c, d))
}
fn mac() -> impl Strategy<Value = MacAddr> {
    any::<[u8; 6]>().prop_map(|mut o| {
        o[0] = (o[0] & 0xfe) | 0x02;
        MacAddr::new(o).expect("unicast local MAC")
    })
}
fn cidr() -> impl Strategy<Value = Ipv4Cidr> {
    (any::<u32>(), 0u8..=32).prop_map(|(a, p)| {
        let mask = if p == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(p))
        };
        Ipv4Cidr::new(Ipv4Addr::from(a & mask), p).expect("masked")
    })
}
/// A subnet-shaped (cidr, gateway, pool) triple.
fn addressing() -> impl Strategy<Value = (Ipv4Cidr, Ipv4Addr, Ipv4Range)> {
    (any::<u32>(), 8u8..=29).prop_map(|(a, p)| {
        let mask = u32::MAX << (32 - u32::from(p));
        let net = a & mask;
        let cidr = Ipv4Cidr::new(Ipv4Addr::from(net), p).expect("masked");
        let gw = Ipv4Addr::from(net + 1);
        let pool = Ipv4Range::new(Ipv4Addr::from(net + 2), Ipv4Addr::from((net | !mask) - 1))
            .expect("ordered");
        (cidr, gw, pool)
    })
}

fn node_facts() -> impl Strategy<Value = NodeFacts> {
    (
        node_id(),
        prop_oneof![
            Just(NodeMode::Dvr),
            Just(NodeMode::DvrSnat),
            Just(NodeMode::DvrNoExternal)
        ],
        ip(),
        1u8..=254,
        proptest::collection::btree_map(name(), "[a-z][a-z0-9]{0,14}", 0..3),
        any::<bool>(),
    )
        .prop_map(|(id, mode, tip, prio, ext, draining)| {
            let external: BTreeMap<_, _> = if mode == NodeMode::DvrNoExternal {
                BTreeMap::new()
            } else {
                ext.into_iter()
                    .map(|(k, v)| {
                        (
                            k,
                            ExternalMapping {
                                interface: InterfaceName::new(v).expect("ifname"),
                            },
                        )
                    })
                    .collect()
            };
            let mac = dvr_mac_for(&id);
            NodeFacts::new(
                id,
                mode,
                tip,
                mac,
                Priority::new(prio).expect("1..=254"),
                external,
            )
            .expect("valid facts")
            .with_draining(draining)
        })
}

fn network() -> impl Strategy<Value = Network> {
    (object_id(), name(), 1u32..=Vni::MAX, 576u16..=9000).prop_map(|(id, name, vni, mtu)| {
        Network::new(NetworkSpec {
            id,
            name,
            vni: Vni::new(vni).expect("vni"),
            mtu: Mtu::new(mtu).expect("mtu"),
        })
        .expect("valid")
    })
}
fn subnet() -> impl Strategy<Value = Subnet> {
    let dhcp = (
        any::<bool>(),
        proptest::collection::vec(any::<[u8; 4]>(), 0..=MAX_DNS_SERVERS),
        proptest::option::of("[a-z][a-z0-9-]{0,10}[a-z0-9](\\.[a-z]{2,6}){0,2}"),
    )
        .prop_map(|(enabled, dns, domain)| SubnetDhcp {
            enabled,
            dns_servers: dns
                .into_iter()
                .map(|o| Ipv4Addr::new(10, o[1], o[2], o[3].max(1)))
                .collect(),
            domain,
        });
    (object_id(), name(), object_id(), addressing(), dhcp).prop_map(
        |(id, name, network, (cidr, gateway, pool), dhcp)| {
            Subnet::new(SubnetSpec {
                id,
                name,
                network,
                cidr,
                gateway,
                pool,
                dhcp,
            })
            .expect("valid")
        },
    )
}
fn external_network() -> impl Strategy<Value = ExternalNetwork> {
    (object_id(), name(), addressing()).prop_map(|(id, name, (cidr, gateway, pool))| {
        ExternalNetwork::new(ExternalNetworkSpec {
            id,
            name,
            cidr,
            gateway,
            pool,
        })
        .expect("valid")
    })
}
fn router() -> impl Strategy<Value = Router> {
    (
        object_id(),
        name(),
        proptest::collection::btree_set(object_id(), 0..5),
        proptest::option::of((object_id(), any::<bool>())),
        proptest::collection::btree_set((cidr(), ip()), 0..4),
        proptest::collection::btree_map(node_id(), 1u8..=254, 0..3),
        any::<bool>(),
        0u32..=MAX_PREEMPT_DELAY_MS,
    )
        .prop_map(
            |(id, name, interfaces, gw, routes, prios, preempt, delay)| {
                Router::new(RouterSpec {
                    id,
                    name,
                    interfaces,
                    gateway: gw.map(|(external_network, enable_snat)| RouterGateway {
                        external_ip: Some(std::net::Ipv4Addr::new(203, 0, 113, 7)),
                        external_network,
                        enable_snat,
                    }),
                    routes: routes
                        .into_iter()
                        .map(|(destination, nexthop)| ExtraRoute {
                            destination,
                            nexthop,
                        })
                        .collect(),
                    snat_ports: BTreeMap::new(),
                    ha: HaSettings {
                        priorities: prios
                            .into_iter()
                            .map(|(n, p)| (n, Priority::new(p).expect("p")))
                            .collect(),
                        preempt,
                        preempt_delay_ms: delay,
                    },
                })
                .expect("valid")
            },
        )
}
fn port_metadata() -> impl Strategy<Value = PortMetadata> {
    (
        proptest::option::of("[a-z][a-z0-9-]{0,20}[a-z0-9]"),
        proptest::option::of("[ -~\n]{0,200}"),
        proptest::collection::vec("ssh-ed25519 [A-Za-z0-9+/]{1,80}", 0..=MAX_SSH_KEYS),
    )
        .prop_map(|(hostname, user_data, ssh_keys)| PortMetadata {
            hostname,
            user_data,
            ssh_keys,
        })
}
fn port() -> impl Strategy<Value = Port> {
    (
        object_id(),
        name(),
        object_id(),
        mac(),
        proptest::collection::btree_set(ip(), 1..=MAX_FIXED_IPS),
        node_id(),
        proptest::option::of("[a-z][a-z0-9]{0,14}"),
        proptest::collection::vec((cidr(), proptest::option::of(mac())), 0..4),
        port_metadata(),
    )
        .prop_map(
            |(id, name, network, mac, ips, host, dev, pairs, metadata)| {
                Port::new(PortSpec {
                    id,
                    name,
                    network,
                    mac,
                    fixed_ips: ips.into_iter().collect(),
                    host,
                    device: dev.map(|d| InterfaceName::new(d).expect("ifname")),
                    allowed_address_pairs: pairs
                        .into_iter()
                        .map(|(ip, mac)| AddressPair { ip, mac })
                        .collect(),
                    metadata,
                })
                .expect("valid")
            },
        )
}
fn floating_ip() -> impl Strategy<Value = FloatingIp> {
    (
        object_id(),
        object_id(),
        ip(),
        proptest::option::of((object_id(), proptest::option::of(ip()))),
    )
        .prop_map(|(id, external_network, ip, assoc)| {
            let (port, fixed_ip) = match assoc {
                Some((p, f)) => (Some(p), f),
                None => (None, None),
            };
            FloatingIp::new(FloatingIpSpec {
                id,
                external_network,
                ip,
                port,
                fixed_ip,
            })
            .expect("valid")
        })
}

fn round_trip<T>(v: &T) -> T
where
    T: serde::Serialize + serde::de::DeserializeOwned,
{
    let text = encode_value(v).expect("encodes");
    decode_value(&text).expect("decodes")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn node_facts_round_trip(v in node_facts()) { prop_assert_eq!(round_trip(&v), v); }
    #[test]
    fn network_round_trip(v in network()) { prop_assert_eq!(round_trip(&v), v); }
    #[test]
    fn subnet_round_trip(v in subnet()) { prop_assert_eq!(round_trip(&v), v); }
    #[test]
    fn external_network_round_trip(v in external_network()) { prop_assert_eq!(round_trip(&v), v); }
    #[test]
    fn router_round_trip(v in router()) { prop_assert_eq!(round_trip(&v), v); }
    #[test]
    fn port_round_trip(v in port()) { prop_assert_eq!(round_trip(&v), v); }
    #[test]
    fn floating_ip_round_trip(v in floating_ip()) { prop_assert_eq!(round_trip(&v), v); }

    /// Any byte string fed to the decoder gives a value or an error, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<NodeFacts>(&bytes);
        let _ = decode::<Router>(&bytes);
        let _ = decode::<Port>(&bytes);
        let _ = decode_frame(&bytes, MAX_FRAME_BYTES);
    }

    /// Flipping any byte of a valid encoding gives a value or an error, never a panic.
    #[test]
    fn mutated_encodings_never_panic(v in port(), at in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = encode(&v).expect("encodes");
        let i = at.index(bytes.len());
        bytes[i] = byte;
        let _ = decode::<Port>(&bytes);
    }

    /// Frames round-trip for any payload and kind.
    #[test]
    fn frame_round_trip(kind in any::<u8>(), payload in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let f = encode_frame(kind, &payload);
        let (k, body) = decode_frame(&f, MAX_FRAME_BYTES).expect("decodes");
        prop_assert_eq!(k, kind);
        prop_assert_eq!(body, &payload[..]);
    }
}

// === golden bytes: any change to these is a wire change and needs a new version ===

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
fn oid(s: &str) -> ObjectId {
    ObjectId::new(s).expect("valid id")
}
fn nm(s: &str) -> Name {
    Name::new(s).expect("valid name")
}

fn golden_values() -> Vec<(&'static str, Vec<u8>)> {
    let c1 = NodeId::new("c1").expect("id");
    let mut ext = BTreeMap::new();
    ext.insert(
        nm("public"),
        ExternalMapping {
            interface: InterfaceName::new("eth1").expect("if"),
        },
    );
    let facts = NodeFacts::new(
        c1.clone(),
        NodeMode::DvrSnat,
        Ipv4Addr::new(192, 0, 2, 11),
        dvr_mac_for(&c1),
        Priority::new(200).expect("p"),
        ext,
    )
    .expect("facts");
    let network = Network::new(NetworkSpec {
        id: oid("n1"),
        name: nm("net-a"),
        vni: Vni::new(1001).expect("v"),
        mtu: Mtu::VXLAN_DEFAULT,
    })
    .expect("n");
    let subnet = Subnet::new(SubnetSpec {
        id: oid("s1"),
        name: nm("sub-a"),
        network: oid("n1"),
        cidr: "10.1.0.0/24".parse().expect("c"),
        gateway: "10.1.0.1".parse().expect("g"),
        pool: "10.1.0.10-10.1.0.250".parse().expect("p"),
        dhcp: SubnetDhcp::default(),
    })
    .expect("s");
    let extnet = ExternalNetwork::new(ExternalNetworkSpec {
        id: oid("e1"),
        name: nm("public"),
        cidr: "203.0.113.0/24".parse().expect("c"),
        gateway: "203.0.113.1".parse().expect("g"),
        pool: "203.0.113.10-203.0.113.200".parse().expect("p"),
    })
    .expect("e");
    let mut prios = BTreeMap::new();
    prios.insert(c1.clone(), Priority::new(250).expect("p"));
    let router = Router::new(RouterSpec {
        id: oid("r1"),
        name: nm("router-a"),
        interfaces: [oid("s1")].into_iter().collect::<BTreeSet<_>>(),
        snat_ports: [(
            oid("s1"),
            SnatPort {
                ip: "10.1.0.3".parse().expect("ip"),
                mac: "fa:16:3e:00:00:03".parse().expect("mac"),
            },
        )]
        .into_iter()
        .collect(),
        gateway: Some(RouterGateway {
            external_ip: Some("203.0.113.5".parse().expect("ip")),
            external_network: oid("e1"),
            enable_snat: true,
        }),
        routes: [ExtraRoute {
            destination: "198.51.100.0/24".parse().expect("d"),
            nexthop: "10.1.0.254".parse().expect("n"),
        }]
        .into_iter()
        .collect(),
        ha: HaSettings {
            priorities: prios,
            preempt: true,
            preempt_delay_ms: 500,
        },
    })
    .expect("r");
    let port = Port::new(PortSpec {
        id: oid("p1"),
        name: nm("vm-1"),
        network: oid("n1"),
        mac: "fa:16:3e:00:00:01".parse().expect("m"),
        fixed_ips: vec!["10.1.0.10".parse().expect("ip")],
        host: c1,
        device: Some(InterfaceName::new("tap-p1").expect("if")),
        allowed_address_pairs: vec![AddressPair {
            ip: "10.1.0.100/32".parse().expect("c"),
            mac: None,
        }],
        metadata: PortMetadata::default(),
    })
    .expect("port");
    let fip = FloatingIp::new(FloatingIpSpec {
        id: oid("f1"),
        external_network: oid("e1"),
        ip: "203.0.113.50".parse().expect("ip"),
        port: Some(oid("p1")),
        fixed_ip: Some("10.1.0.10".parse().expect("ip")),
    })
    .expect("fip");
    vec![
        ("node_facts", encode(&facts).expect("enc")),
        ("network", encode(&network).expect("enc")),
        ("subnet", encode(&subnet).expect("enc")),
        ("external_network", encode(&extnet).expect("enc")),
        ("router", encode(&router).expect("enc")),
        ("port", encode(&port).expect("enc")),
        ("floating_ip", encode(&fip).expect("enc")),
        ("unique_claim", encode(&unique_claim()).expect("enc")),
        ("address_block", encode(&address_block()).expect("enc")),
    ]
}

fn unique_claim() -> UniqueClaim {
    UniqueClaim {
        value: UniqueValue::Name(ObjectKind::Network, nm("net-a")),
        holder: oid("n1"),
        version: Version {
            hlc: HlcTimestamp(7 << 16),
            writer: NodeId::new("c1").expect("id"),
        },
    }
}

fn address_block() -> AddressBlock {
    AddressBlock {
        space: BlockSpace::Pool(oid("s1")),
        first: u32::from(std::net::Ipv4Addr::new(10, 1, 0, 16)),
        len: 16,
        version: Version {
            hlc: HlcTimestamp(9 << 16),
            writer: NodeId::new("c1").expect("id"),
        },
    }
}

#[test]
fn a_block_knows_its_key_its_bounds_and_its_overlaps() {
    let b = address_block();
    assert_eq!(b.key(), "b/s1/10.1.0.16");
    assert_eq!(
        b.last(),
        Ok(u32::from(std::net::Ipv4Addr::new(10, 1, 0, 31)))
    );
    assert!(b.contains(b.first + 15) && !b.contains(b.first + 16) && !b.contains(b.first - 1));
    let next = AddressBlock {
        first: b.first + 16,
        ..b.clone()
    };
    let straddling = AddressBlock {
        first: b.first + 15,
        len: 2,
        ..b.clone()
    };
    assert!(!b.overlaps(&next) && b.overlaps(&straddling) && next.overlaps(&straddling));
    let mac = AddressBlock {
        space: BlockSpace::Mac,
        first: 0xffff00,
        len: 256,
        ..b.clone()
    };
    assert_eq!(mac.key(), "b/mac/ffff00");
    assert!(mac.last().is_ok());
    assert!(
        !mac.overlaps(&AddressBlock {
            first: 0xffff00,
            ..b.clone()
        }),
        "other space"
    );
    for bad in [
        AddressBlock {
            len: 0,
            ..b.clone()
        },
        AddressBlock {
            len: MAX_BLOCK_LEN + 1,
            ..b.clone()
        },
        AddressBlock {
            first: u32::MAX,
            len: 2,
            ..b.clone()
        },
        AddressBlock {
            first: 0xffff01,
            ..mac.clone()
        },
    ] {
        assert!(bad.last().is_err(), "{bad:?} accepted");
    }
}

const GOLDEN: &[(&str, &str)] = &[
    ("node_facts", "0102633101c000020b1166613a31363a33663a32393a64663a6439c801067075626c6963046574683100"),
    ("network", "01026e31056e65742d61fbe903fbaa05"),
    ("subnet", "01027331057375622d61026e310b31302e312e302e302f32340a0100011431302e312e302e31302d31302e312e302e323530010000"),
    ("external_network", "01026531067075626c69630e3230332e302e3131332e302f3234cb0071011a3230332e302e3131332e31302d3230332e302e3131332e323030"),
    ("router", "0102723108726f757465722d6101027331010265310101cb007105010f3139382e35312e3130302e302f32340a0100fe01026331fa01fbf401010273310a0100031166613a31363a33653a30303a30303a3033"),
    // A bare port carries its metadata at the end (three empty fields); inside a record, a port
    // without metadata is still encoded as before (`port_records_written_before_metadata_…`).
    ("port", "0102703104766d2d31026e311166613a31363a33653a30303a30303a3031010a01000a02633101067461702d7031010d31302e312e302e3130302f333200000000"),
    ("floating_ip", "01026631026531cb00713201027031010a01000a"),
    ("unique_claim", "010100056e65742d61026e31fc00000700026331"),
    ("address_block", "0100027331fc1000010a10fc00000900026331"),
];

#[test]
fn golden_bytes_per_type() {
    let mut failures = Vec::new();
    for ((name, bytes), (gname, ghex)) in golden_values().iter().zip(GOLDEN) {
        assert_eq!(name, gname);
        if hex(bytes) != *ghex {
            failures.push(format!("    (\"{name}\", \"{}\"),", hex(bytes)));
        }
    }
    assert_eq!(
        golden_values().len(),
        GOLDEN.len(),
        "a value without its golden bytes"
    );
    assert!(
        failures.is_empty(),
        "wire encoding changed; if deliberate, bump WIRE_VERSION and update GOLDEN:\n{}",
        failures.join("\n")
    );
}

/// A subnet's body as encoded before subnets had DHCP settings (the `subnet` golden bytes then).
const LEGACY_SUBNET_BODY: &str =
    "027331057375622d61026e310b31302e312e302e302f32340a0100011431302e312e302e31302d31302e312e302e323530";

fn subnet_record(dhcp: SubnetDhcp) -> Record {
    let subnet = Subnet::new(SubnetSpec {
        id: oid("s1"),
        name: nm("sub-a"),
        network: oid("n1"),
        cidr: "10.1.0.0/24".parse().expect("c"),
        gateway: "10.1.0.1".parse().expect("g"),
        pool: "10.1.0.10-10.1.0.250".parse().expect("p"),
        dhcp,
    })
    .expect("s");
    let version = Version {
        hlc: HlcTimestamp(7 << 16),
        writer: NodeId::new("c1").expect("id"),
    };
    Record::object(TenantObject::Subnet(subnet), version)
}

#[test]
fn subnet_records_written_before_dhcp_settings_still_decode() {
    // A subnet with default settings is encoded exactly as before: `Some`, variant 1, the old body.
    let bytes = encode(&subnet_record(SubnetDhcp::default())).expect("enc");
    assert!(
        hex(&bytes).ends_with(&format!("0101{LEGACY_SUBNET_BODY}")),
        "{}",
        hex(&bytes)
    );
    let back: Record = decode(&bytes).expect("dec");
    assert_eq!(back, subnet_record(SubnetDhcp::default()));
    // Settings of its own: a variant added after the six of the first encoding.
    let custom = subnet_record(SubnetDhcp {
        enabled: false,
        dns_servers: vec!["10.1.0.2".parse().expect("ip")],
        domain: Some("lab.example".into()),
    });
    let bytes = encode(&custom).expect("enc");
    assert!(
        hex(&bytes).contains(&format!("0106{LEGACY_SUBNET_BODY}00")),
        "{}",
        hex(&bytes)
    );
    assert_eq!(decode::<Record>(&bytes).expect("dec"), custom);
    // JSON (records.json) of a subnet without the field reads as the default settings.
    let mut json = serde_json::to_value(subnet_record(SubnetDhcp::default())).expect("json");
    let body = &mut json["body"]["subnet"];
    assert!(body.as_object_mut().expect("obj").remove("dhcp").is_some());
    let back: Record = serde_json::from_value(json).expect("old json");
    assert_eq!(back, subnet_record(SubnetDhcp::default()));
}

/// A port's body as encoded before ports had metadata (the `port` golden bytes then).
const LEGACY_PORT_BODY: &str =
    "02703104766d2d31026e311166613a31363a33653a30303a30303a3031010a01000a02633101067461702d7031010d31302e312e302e3130302f333200";

fn port_record(metadata: PortMetadata) -> Record {
    let port = Port::new(PortSpec {
        id: oid("p1"),
        name: nm("vm-1"),
        network: oid("n1"),
        mac: "fa:16:3e:00:00:01".parse().expect("m"),
        fixed_ips: vec!["10.1.0.10".parse().expect("ip")],
        host: NodeId::new("c1").expect("id"),
        device: Some(InterfaceName::new("tap-p1").expect("if")),
        allowed_address_pairs: vec![AddressPair {
            ip: "10.1.0.100/32".parse().expect("c"),
            mac: None,
        }],
        metadata,
    })
    .expect("port");
    let version = Version {
        hlc: HlcTimestamp(7 << 16),
        writer: NodeId::new("c1").expect("id"),
    };
    Record::object(TenantObject::Port(port), version)
}

#[test]
fn port_records_written_before_metadata_still_decode() {
    // Without metadata: `Some`, variant 5, the old body, as older nodes write and read it.
    let bytes = encode(&port_record(PortMetadata::default())).expect("enc");
    assert!(
        hex(&bytes).ends_with(&format!("0105{LEGACY_PORT_BODY}")),
        "{}",
        hex(&bytes)
    );
    assert_eq!(
        decode::<Record>(&bytes).expect("dec"),
        port_record(PortMetadata::default())
    );
    // With metadata: the variant after `SubnetWithDhcp`, the old body, then the metadata.
    let full = port_record(PortMetadata {
        hostname: Some("web-1".into()),
        user_data: Some("u".repeat(MAX_USER_DATA_BYTES)),
        ssh_keys: vec!["k".repeat(MAX_SSH_KEY_BYTES); MAX_SSH_KEYS],
    });
    let bytes = encode(&full).expect("the largest metadata fits one value");
    assert!(
        hex(&bytes).contains(&format!("0107{LEGACY_PORT_BODY}01")),
        "{}",
        &hex(&bytes)[..200]
    );
    assert_eq!(decode::<Record>(&bytes).expect("dec"), full);
    // JSON (records.json) of a port without the field reads as no metadata.
    let mut json = serde_json::to_value(port_record(PortMetadata::default())).expect("json");
    let body = &mut json["body"]["port"];
    assert!(body
        .as_object_mut()
        .expect("obj")
        .remove("metadata")
        .is_some());
    let back: Record = serde_json::from_value(json).expect("old json");
    assert_eq!(back, port_record(PortMetadata::default()));
}

#[test]
fn invalid_values_are_rejected_at_decode() {
    // A subnet whose gateway lies outside its CIDR, encoded by hand through the unchecked spec.
    let spec = SubnetSpec {
        id: oid("s1"),
        name: nm("bad"),
        network: oid("n1"),
        cidr: "10.1.0.0/24".parse().expect("c"),
        gateway: "10.9.0.1".parse().expect("g"),
        pool: "10.1.0.10-10.1.0.20".parse().expect("p"),
        dhcp: SubnetDhcp::default(),
    };
    let bytes = encode(&spec).expect("enc");
    let err = decode::<Subnet>(&bytes).unwrap_err();
    assert!(err.to_string().contains("gateway"), "{err}");
}

#[test]
fn a_length_claiming_a_terabyte_is_rejected_without_allocating() {
    // version byte, then a bincode varint string length of 2^40 (0xfd marker + u64 LE).
    let mut bytes = vec![WIRE_VERSION, 0xfd];
    bytes.extend_from_slice(&(1u64 << 40).to_le_bytes());
    let err = decode::<NodeId>(&bytes).unwrap_err();
    assert!(matches!(err, Error::Malformed { .. }), "{err}");
}

#[test]
fn oversized_and_versioned_input_is_rejected() {
    let big = vec![WIRE_VERSION; MAX_ENCODED_BYTES + 1];
    assert!(matches!(
        decode::<NodeId>(&big),
        Err(Error::TooLarge { .. })
    ));
    let text = "A".repeat(MAX_VALUE_CHARS + 1);
    assert!(matches!(
        decode_value::<NodeId>(&text),
        Err(Error::TooLarge { .. })
    ));
    assert!(matches!(
        decode::<NodeId>(&[9, 1, b'a']),
        Err(Error::UnsupportedVersion { version: 9, .. })
    ));
    assert!(matches!(
        decode::<NodeId>(&[]),
        Err(Error::Truncated { .. })
    ));
    let mut trailing = encode(&NodeId::new("a").expect("id")).expect("enc");
    trailing.push(0);
    assert!(matches!(
        decode::<NodeId>(&trailing),
        Err(Error::Malformed { .. })
    ));
    assert!(decode_value::<NodeId>("!!!not base64").is_err());
}

#[test]
fn an_oversized_value_is_refused_at_encode() {
    let huge = Name::new("x".repeat(64)).expect("name");
    let many: Vec<Name> = std::iter::repeat_n(huge, 400).collect();
    assert!(matches!(encode(&many), Err(Error::TooLarge { .. })));
}

/// A record as nodes encoded it before operator seals existed (four fields, no seal).
#[derive(serde::Serialize)]
struct LegacyRecord {
    kind: ObjectKind,
    id: ObjectId,
    version: Version,
    body: Option<TenantObject>,
}

#[test]
fn records_without_a_seal_encode_and_decode_as_before_seals_existed() {
    let version = Version {
        hlc: HlcTimestamp(11 << 16),
        writer: NodeId::new("c1").expect("id"),
    };
    let legacy = LegacyRecord {
        kind: ObjectKind::Network,
        id: oid("n1"),
        version: version.clone(),
        body: None,
    };
    let old_bytes = encode(&legacy).expect("enc");
    let rec = Record::tombstone(ObjectKind::Network, oid("n1"), version);
    // An unsealed record is byte for byte what an older node writes and reads.
    assert_eq!(encode(&rec).expect("enc"), old_bytes);
    let back: Record = decode(&old_bytes).expect("an old record decodes");
    assert_eq!(back, rec);
    assert!(back.operator().is_none());
    // A sealed one round-trips with its seal; bytes after the body that are no seal never make
    // a record sealed (an unsealed record is what any node may publish anyway).
    let sealed = rec.clone().with_operator(OperatorSeal {
        cert: vec![1, 2, 3],
        signature: vec![4, 5],
    });
    let bytes = encode(&sealed).expect("enc");
    assert_eq!(decode::<Record>(&bytes).expect("dec"), sealed);
    let mut garbage = old_bytes.clone();
    garbage.push(0xff);
    assert!(!decode::<Record>(&garbage).is_ok_and(|r| r.operator().is_some()));
}
