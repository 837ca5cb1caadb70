//! A member with a valid certificate attacks three honest agents (real processes on 127.0.0.1,
//! datapath off) over the real wire: it forges another node's facts, ports, floating IPs and SNAT
//! claims, replays its values and the holder's signed SNAT claim, tries to wipe it, invents ghost
//! members, floods and sends oversize frames; in its own name it publishes a port hosted
//! elsewhere and a record from the future, claims SNAT with a huge epoch, floods releases and
//! publishes more claims than a node may hold. Every honest node's members, configuration,
//! datapath plan and SNAT holder stay exactly as they were, and each attempt shows in a counter.

#[path = "../common/mod.rs"]
mod common;
mod member;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, Context, Result};
use common::*;
use member::{append_to, Rogue, ROGUE};
use serde_json::Value;

use dvrmesh_node::api::KIND_REQUEST;
use dvrmesh_node::mesh::codec::{DigestEntry, Message, NodeDelta};
use dvrmesh_node::mesh::pki::signing::claim_message;
use mesh_proto::{
    AddressClaim, ElectionMessage, HlcTimestamp, Mtu, Name, Network, NetworkSpec, NodeId, ObjectId,
    Port, PortSpec, Priority, Record, SignedClaim, SnatClaim, TenantObject, Version, Vni,
};

/// The honest agents: two SNAT candidates (n1 preferred) and one compute node.
const HONEST: [(&str, &str, u8); 3] = [
    ("n1", "dvr_snat", 200),
    ("n2", "dvr_snat", 100),
    ("n3", "dvr", 100),
];

/// One cluster at a time: three agents and a rogue per test already load two cores, and a
/// starved holder would fail over for reasons no attack caused.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Cluster {
    tmp: tempfile::TempDir,
    agents: Vec<Agent>,
    addrs: Vec<SocketAddr>,
    router: String,
}

fn config(dir: &Path, i: usize, port: u16, seed: u16) -> PathBuf {
    let (name, mode, prio) = HONEST[i];
    let path = dir.join(format!("{name}.toml"));
    let text = format!(
        r#"node_id = "{name}"
mode = "{mode}"
listen = "127.0.0.1:{port}"
seeds = ["127.0.0.1:{seed}"]
tunnel_ip = "127.0.0.{}"
snat_priority = {prio}
api_socket = "{name}.sock"
data_dir = "data-{name}"
gossip_interval_ms = 100
snat_advert_interval_ms = 50
datapath = "off"

[tls]
ca = "ca/ca.pem"
cert = "{name}/node.pem"
key = "{name}/node.key"

[external.public]
interface = "lo"
"#,
        i + 1
    );
    std::fs::write(&path, text).expect("config written");
    path
}

fn must(a: &Agent, args: &[&str]) -> Result<Value> {
    a.cli(args).map_err(|e| anyhow!("{} {args:?}: {e}", a.name))
}

/// Three agents with a router (one subnet, a gateway), a port on n2 and its floating IP; waits
/// until every agent names n1 the SNAT holder.
fn start_cluster() -> Result<Cluster> {
    let tmp = pki(&["n1", "n2", "n3", ROGUE])?;
    let ports: Vec<u16> = HONEST.iter().map(|_| free_port()).collect();
    let mut agents = Vec::new();
    for i in 0..HONEST.len() {
        let cfg = config(tmp.path(), i, ports[i], ports[0]);
        agents.push(start(tmp.path(), HONEST[i].0, &cfg)?);
    }
    wait_until(Duration::from_secs(15), "three agents alive", || {
        agents
            .iter()
            .all(|a| states(a).iter().filter(|(_, s)| s == "alive").count() == 3)
    })?;
    let n1 = &agents[0];
    must(n1, &["network", "create", "blue", "--vni", "100"])?;
    must(
        n1,
        &[
            "subnet",
            "create",
            "s1",
            "--network",
            "blue",
            "--cidr",
            "10.1.0.0/24",
        ],
    )?;
    must(
        n1,
        &[
            "external-network",
            "create",
            "public",
            "--cidr",
            "203.0.113.0/24",
            "--gateway",
            "203.0.113.1",
        ],
    )?;
    let router = must(n1, &["router", "create", "r1"])?["id"]
        .as_str()
        .context("router id")?
        .to_string();
    must(n1, &["router", "add-interface", "r1", "--subnet", "s1"])?;
    must(
        n1,
        &[
            "router",
            "set-gateway",
            "r1",
            "--external-network",
            "public",
        ],
    )?;
    must(&agents[1], &["port", "create", "vm1", "--network", "blue"])?;
    // The port is n2's; n1 names it once gossip brought it there.
    wait_until(Duration::from_secs(10), "n1 sees vm1", || {
        n1.cli(&["port", "show", "vm1"]).is_ok()
    })?;
    let fip = must(n1, &["fip", "create", "--external-network", "public"])?["id"]
        .as_str()
        .context("fip id")?
        .to_string();
    must(n1, &["fip", "associate", &fip, "--port", "vm1"])?;
    wait_until(Duration::from_secs(15), "n1 holds r1 everywhere", || {
        agents
            .iter()
            .all(|a| holder(a, "r1").as_deref() == Some("n1"))
    })?;
    let addrs = ports
        .iter()
        .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
        .collect();
    Ok(Cluster {
        tmp,
        agents,
        addrs,
        router,
    })
}

fn holder(a: &Agent, router: &str) -> Option<String> {
    let v = a.cli(&["router", "show", router]).ok()?;
    v["holder"].as_str().map(String::from)
}

/// What an agent believes, for comparison before and after the attacks.
#[derive(Debug, PartialEq)]
struct Seen {
    members: Vec<Value>,
    config: Value,
    plan: Value,
    holder: Option<String>,
}

fn seen(a: &Agent) -> Result<Seen> {
    let members = members(a)?
        .into_iter()
        .filter(|m| m["node_id"] != ROGUE)
        .collect();
    Ok(Seen {
        members,
        config: must(a, &["view"])?,
        plan: must(a, &["datapath", "plan"])?,
        holder: holder(a, "r1"),
    })
}

fn seen_all(c: &Cluster) -> Result<Vec<Seen>> {
    c.agents.iter().map(seen).collect()
}

fn counter(a: &Agent, pointer: &str) -> u64 {
    a.cli(&["status"])
        .ok()
        .and_then(|v| v.pointer(pointer).and_then(Value::as_u64))
        .unwrap_or(0)
}

/// Waits until counter `pointer` of agent `a` exceeds `before`; says which attack went unseen.
fn counted(a: &Agent, attack: &str, pointer: &str, before: u64) -> Result<()> {
    wait_until(
        Duration::from_secs(5),
        &format!("{attack}: {pointer} counted"),
        || counter(a, pointer) > before,
    )
    .map(|_| ())
}

/// Sends `msg` until counter `pointer` of agent `a` exceeds `before`, for at most 10 s: a frame
/// may be dropped before the trust filter sees it (the target's rate and queue limits drop
/// frames as UDP would, which is their job); the attack must be refused and counted once it
/// is read. Says which attack went unseen.
async fn send_until_counted(
    rogue: &Rogue,
    msg: &Message,
    a: &Agent,
    (attack, pointer, before): (&str, &str, u64),
) -> Result<()> {
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(10) {
        rogue.send(msg).await?;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if blocking(|| counter(a, pointer)) > before {
            return Ok(());
        }
    }
    Err(anyhow!(
        "{attack}: {pointer} not counted within 10 s of resending"
    ))
}

/// Runs blocking CLI work off the async runtime's workers.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// What every agent believes once all list the rogue alive and two looks a second apart agree
/// (its facts reached every plan).
fn settled_with_rogue(c: &Cluster) -> Result<Vec<Seen>> {
    wait_until(
        Duration::from_secs(10),
        "every agent lists the rogue alive",
        || {
            c.agents
                .iter()
                .all(|a| states(a).iter().any(|(id, s)| id == ROGUE && s == "alive"))
        },
    )?;
    let mut last = seen_all(c)?;
    for _ in 0..10 {
        std::thread::sleep(Duration::from_secs(1));
        let now = seen_all(c)?;
        if now == last {
            return Ok(now);
        }
        last = now;
    }
    anyhow::bail!("the cluster did not settle after the rogue joined")
}

/// After the attacks every agent believes what it did before (a few gossip rounds later).
fn unchanged(c: &Cluster, before: &[Seen], attacks: &str) -> Result<()> {
    std::thread::sleep(Duration::from_secs(2));
    let after = seen_all(c)?;
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        assert_eq!(b, a, "{} changed its view after {attacks}", HONEST[i].0);
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_forgeries_wipes_ghosts_and_floods_change_nothing() -> Result<()> {
    let _alone = ONE_AT_A_TIME.lock().await;
    let c = blocking(start_cluster)?;
    let rogue = Rogue::join(c.tmp.path(), c.addrs[0], c.addrs[0]).await?;
    let n1 = &c.agents[0];
    let before = blocking(|| settled_with_rogue(&c))?;
    let n2 = rogue.learn("n2").await?;
    let me = rogue.learn("n1").await?;
    let next = n2.entry.max_version + 1;

    // Forge n2's facts, a port and a floating IP in its name, and a SNAT claim for it.
    let facts = n2
        .kvs
        .iter()
        .find(|kv| kv.key == "node")
        .context("n2's facts")?;
    let forged_facts = sealed_payload(&facts.value).replace("127.0.0.2", "127.0.0.66");
    let forgeries = [
        ("facts", "node".to_string(), forged_facts),
        (
            "port",
            "o/port/port-forged00001".to_string(),
            "{}".to_string(),
        ),
        (
            "fip",
            "o/floating_ip/fip-forged00001".to_string(),
            "{}".to_string(),
        ),
        ("snat", format!("snat/{}", c.router), "{}".to_string()),
    ];
    for (what, key, payload) in &forgeries {
        let bad = blocking(|| counter(n1, "/trust/bad_seals"));
        let kv = rogue.forge(&n2.entry.id, key, next, payload);
        rogue.send(&append_to(&n2, vec![kv])).await?;
        blocking(|| counted(n1, &format!("forged {what}"), "/trust/bad_seals", bad))?;
        blocking(|| still_holding(&c, &format!("forged {what}")));
    }

    // Replay n2's real facts as a newer write.
    let bad = blocking(|| counter(n1, "/trust/bad_seals"));
    let mut replay = facts.clone();
    replay.version = next;
    let replay = append_to(&n2, vec![replay]);
    let seen = ("replayed facts", "/trust/bad_seals", bad);
    send_until_counted(&rogue, &replay, n1, seen).await?;
    blocking(|| still_holding(&c, "replayed facts"));

    // Replay the holder's own signed SNAT claim (n1's, sealed by n1 at its version) into n2's key
    // space as n2's newest write: the claim's signature is genuine, the seal is not n2's.
    let bad = blocking(|| counter(n1, "/trust/bad_seals"));
    let snat_key = format!("snat/{}", c.router);
    let mut old_claim = me
        .kvs
        .iter()
        .find(|kv| kv.key == snat_key)
        .context("n1's signed SNAT claim (n1 holds the router)")?
        .clone();
    old_claim.version = next;
    let replay = append_to(&n2, vec![old_claim]);
    let seen = ("a replayed SNAT claim", "/trust/bad_seals", bad);
    send_until_counted(&rogue, &replay, n1, seen).await?;
    blocking(|| still_holding(&c, "a replayed SNAT claim"));

    // Wipe n2: a relayed reset from version 0 under a newer garbage collection.
    let resets = blocking(|| counter(n1, "/trust/resets_refused"));
    let wipe = Message::Ack {
        delta: vec![NodeDelta {
            id: n2.entry.id.clone(),
            last_gc_version: n2.entry.max_version + 1000,
            from_version_excluded: 0,
            kvs: n2.kvs.iter().take(1).cloned().collect(),
            set_max_version: None,
        }],
    };
    let seen = ("wipe", "/trust/resets_refused", resets);
    send_until_counted(&rogue, &wipe, n1, seen).await?;
    blocking(|| still_holding(&c, "wipe"));

    // A delta about n1 itself, sent to n1.
    let selfs = blocking(|| counter(n1, "/trust/self_deltas"));
    let about_n1 = rogue.forge(&me.entry.id, "node", me.entry.max_version + 1, "{}");
    let about_n1 = append_to(&me, vec![about_n1]);
    let seen = ("a delta about the receiver", "/trust/self_deltas", selfs);
    send_until_counted(&rogue, &about_n1, n1, seen).await?;
    blocking(|| still_holding(&c, "a delta about the receiver"));

    // Ghosts: digest entries for 100 node lives nobody certified.
    let ghosts_before = blocking(|| counter(n1, "/trust/ghost_entries"));
    let ghosts = (0..100u16)
        .map(|i| DigestEntry {
            id: chitchat::ChitchatId::new(
                format!("ghost{i}"),
                1,
                ([127, 0, 0, 1], 40_000 + i).into(),
            ),
            heartbeat: 1_000_000,
            last_gc_version: 0,
            max_version: 5,
        })
        .collect();
    let ghosts = Message::Syn {
        digest: ghosts,
        cluster_id: "dvrmesh".into(),
    };
    let seen = ("ghosts", "/trust/ghost_entries", ghosts_before);
    send_until_counted(&rogue, &ghosts, n1, seen).await?;
    blocking(|| still_holding(&c, "ghosts"));

    // Oversize and malformed frames, then a flood of empty messages.
    let rejected = blocking(|| counter(n1, "/transport/rejected_frames"));
    let _ = rogue.send_bytes(&vec![0u8; 300_000]).await;
    rogue.send_bytes(b"\x01\x01 not a frame").await?;
    blocking(|| {
        counted(
            n1,
            "malformed frames",
            "/transport/rejected_frames",
            rejected,
        )
    })?;
    blocking(|| still_holding(&c, "malformed frames"));
    let rate = blocking(|| counter(n1, "/transport/dropped_rate"));
    let empty = Message::Ack { delta: Vec::new() };
    for _ in 0..3000 {
        if rogue.send(&empty).await.is_err() {
            break;
        }
    }
    blocking(|| counted(n1, "flood", "/transport/dropped_rate", rate))?;
    blocking(|| still_holding(&c, "flood"));

    blocking(|| unchanged(&c, &before, "relayed forgeries, a wipe, ghosts and a flood"))?;
    let log = std::fs::read_to_string(c.tmp.path().join("n1.log"))?;
    assert!(
        log.contains("refused gossip no honest peer sends") && log.contains(ROGUE),
        "n1 logged no refusal naming the rogue"
    );
    Ok(())
}

/// n1 still holds the router in every agent's eyes.
fn still_holding(c: &Cluster, after: &str) {
    for a in &c.agents {
        let h = holder(a, "r1");
        if h.as_deref() != Some("n1") {
            let log = |n: &str| std::fs::read_to_string(c.tmp.path().join(format!("{n}.log")));
            panic!(
                "{} names {h:?} the holder after {after}\nn1.log:\n{}\nn2.log:\n{}",
                a.name,
                log("n1").unwrap_or_default(),
                log("n2").unwrap_or_default()
            );
        }
    }
}

/// The payload of a sealed value (`<signature>.<payload>`).
fn sealed_payload(value: &str) -> String {
    value
        .split_once('.')
        .map(|(_, p)| p.to_string())
        .unwrap_or_default()
}

/// A port record in the rogue's own key space that says n2 hosts it.
fn port_hosted_by_n2(network: &str) -> Result<(String, String)> {
    let port = Port::new(PortSpec {
        id: ObjectId::new("port-rogue0000001")?,
        name: Name::new("evil")?,
        network: ObjectId::new(network)?,
        mac: "fa:16:3e:66:66:66".parse()?,
        fixed_ips: vec!["10.1.0.200".parse()?],
        host: NodeId::new("n2")?,
        device: None,
        allowed_address_pairs: Vec::new(),
        metadata: Default::default(),
    })?;
    let rec = Record::object(TenantObject::Port(port), rogue_version(0));
    Ok((rec.key(), mesh_proto::encode_value(&rec)?))
}

/// A network record stamped an hour ahead of every clock.
fn network_from_the_future() -> Result<(String, String)> {
    let net = Network::new(NetworkSpec {
        id: ObjectId::new("net-rogue0000001")?,
        name: Name::new("future")?,
        vni: Vni::new(4242)?,
        mtu: Mtu::VXLAN_DEFAULT,
    })?;
    let rec = Record::object(TenantObject::Network(net), rogue_version(3_600_000));
    Ok((rec.key(), mesh_proto::encode_value(&rec)?))
}

fn rogue_version(ahead_ms: u64) -> Version {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    Version {
        hlc: HlcTimestamp((now + ahead_ms) << 16),
        writer: NodeId::new(ROGUE).expect("id"),
    }
}

fn rogue_claim(router: &str, epoch: u64) -> Result<SnatClaim> {
    Ok(SnatClaim {
        router: ObjectId::new(router)?,
        epoch,
        priority: Priority::new(254)?,
        node: NodeId::new(ROGUE)?,
    })
}

/// Whether some refused value named in n1's status mentions `needle`.
fn refused_mentions(a: &Agent, needle: &str) -> bool {
    a.cli(&["status"]).ok().is_some_and(|v| {
        v["refused_values"].as_array().is_some_and(|r| {
            r.iter()
                .any(|p| p.as_str().is_some_and(|p| p.contains(needle)))
        })
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lies_in_its_own_name_and_election_datagrams_change_nothing() -> Result<()> {
    let _alone = ONE_AT_A_TIME.lock().await;
    let c = blocking(start_cluster)?;
    let rogue = Rogue::join(c.tmp.path(), c.addrs[0], c.addrs[0]).await?;
    let n1 = &c.agents[0];
    let before = blocking(|| settled_with_rogue(&c))?;
    let network = blocking(|| must(n1, &["network", "show", "blue"]))?["id"]
        .as_str()
        .context("network id")?
        .to_string();

    // Sealed by the rogue, in its own key space: a port "hosted" by n2, a record from the future,
    // and a SNAT claim with an epoch no honest takeover reaches.
    let (port_key, port) = port_hosted_by_n2(&network)?;
    let (net_key, net) = network_from_the_future()?;
    let claim = rogue_claim(&c.router, u64::MAX / 2)?;
    let signed = SignedClaim {
        signature: rogue.signer().sign(&claim_message(&claim)?)?,
        claim: claim.clone(),
    };
    let claim_value = mesh_proto::encode_value(&signed)?;
    rogue
        .own
        .write(|w| {
            w.set(&port_key, &port);
            w.set(&net_key, &net);
            w.set(&claim.key(), &claim_value);
        })
        .await;
    blocking(|| {
        wait_until(
            Duration::from_secs(5),
            "the hosted-elsewhere port refused",
            || refused_mentions(n1, "port-rogue0000001"),
        )?;
        wait_until(
            Duration::from_secs(5),
            "the record from the future refused",
            || refused_mentions(n1, "skew"),
        )
    })?;
    blocking(|| still_holding(&c, "lies in the rogue's own key space"));

    // More claims than a node may hold at once: those past the cap are refused and counted.
    let cap = dvrmesh_node::tenant::state::MAX_CLAIMS_PER_NODE;
    let claims = (0..cap + 44)
        .map(|i| {
            let claim = AddressClaim {
                pool: ObjectId::new("sub-rogue0000001")?,
                ip: std::net::Ipv4Addr::new(10, 77, (i / 250) as u8, (i % 250) as u8 + 1),
                holder: ObjectId::new("port-rogue0000002")?,
                version: rogue_version(0),
            };
            Ok((claim.key(), mesh_proto::encode_value(&claim)?))
        })
        .collect::<Result<Vec<_>>>()?;
    rogue
        .own
        .write(|w| {
            for (k, v) in &claims {
                w.set(k, v);
            }
        })
        .await;
    blocking(|| {
        wait_until(
            Duration::from_secs(10),
            "claims over the cap counted",
            || {
                c.agents
                    .iter()
                    .all(|a| counter(a, &format!("/refused_over_cap/{ROGUE}")) == 44)
            },
        )
    })?;
    assert!(blocking(|| refused_mentions(n1, "over its caps")));

    // Election datagrams: an advert and a takeover with a huge epoch from a non-candidate, claims
    // in n2's name, and a flood of releases for routers nobody has.
    let rejected = blocking(|| counter(n1, "/ha/counters/rejected_datagrams"));
    rogue.datagram(&ElectionMessage::Advert(vec![claim.clone()]))?;
    rogue.datagram(&ElectionMessage::Takeover(vec![claim.clone()]))?;
    let as_n2 = SnatClaim {
        node: NodeId::new("n2")?,
        ..claim.clone()
    };
    rogue.datagram(&ElectionMessage::Takeover(vec![as_n2]))?;
    for i in 0..200 {
        let releases = (0..16)
            .map(|j| rogue_claim(&format!("rtr-ghost{i}x{j}"), 1))
            .collect::<Result<Vec<_>>>()?;
        rogue.datagram(&ElectionMessage::Release(releases))?;
        if i % 20 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    blocking(|| {
        wait_until(Duration::from_secs(5), "datagrams refused", || {
            counter(n1, "/ha/counters/rejected_datagrams") >= rejected + 3
        })
    })?;
    blocking(|| still_holding(&c, "election datagrams"));
    blocking(|| unchanged(&c, &before, "lies in its own name and election datagrams"))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_socket_is_private_and_bad_requests_get_clear_errors() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let tmp = pki(&["n1"])?;
    let cfg = config(tmp.path(), 0, free_port(), free_port());
    let a = start(tmp.path(), "n1", &cfg)?;
    blocking(|| {
        wait_until(Duration::from_secs(10), "the API answers", || {
            a.cli(&["status"]).is_ok()
        })
    })?;
    let mode = std::fs::metadata(&a.socket)?.permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "the API socket is readable or writable by others"
    );
    for (what, body) in [
        ("not JSON", b"\xff\xfe{{{".to_vec()),
        ("an unknown request", br#"{"op":"format_disk"}"#.to_vec()),
        (
            "a wrong field type",
            br#"{"op":"network_create","name":7}"#.to_vec(),
        ),
    ] {
        let reply = api_raw(&a.socket, &mesh_proto::encode_frame(KIND_REQUEST, &body)).await?;
        assert_eq!(reply["ok"], false, "{what}: {reply}");
        let error = reply["error"].as_str().unwrap_or_default();
        assert!(!error.is_empty(), "{what}: no error text in {reply}");
    }
    let reply = api_raw(&a.socket, b"GET / HTTP/1.0\r\n\r\n").await?;
    assert_eq!(reply["ok"], false, "not a frame: {reply}");
    Ok(())
}

/// Sends raw bytes to the API socket and decodes the framed JSON reply.
async fn api_raw(socket: &Path, bytes: &[u8]) -> Result<Value> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::UnixStream::connect(socket).await?;
    s.write_all(bytes).await?;
    s.shutdown().await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let (_, body) = mesh_proto::decode_frame(&out, 1 << 20)?;
    Ok(serde_json::from_slice(body)?)
}
