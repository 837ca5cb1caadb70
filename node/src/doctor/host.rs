//! The host's interfaces the agent relies on: the underlay interface that holds `tunnel_ip`
//! (present, up, an MTU that leaves room for VXLAN's 50 bytes), every `[external]` interface
//! (present, up), and whether bridged frames pass through the host's IP firewall hooks (bridge
//! netfilter). Read only: interfaces from netlink, MTUs from `/sys/class/net`, the bridge
//! netfilter switch from `/proc/sys/net/bridge`.

use std::net::Ipv4Addr;

use mesh_proto::NodeMode;

use super::{Check, Group};
use crate::config::Config;

/// Bytes VXLAN adds to every tenant frame: outer Ethernet 14, IPv4 20, UDP 8, VXLAN 8.
pub const VXLAN_OVERHEAD: u32 = 50;
/// The tenant MTU networks get by default (`Mtu::VXLAN_DEFAULT`).
pub const DEFAULT_TENANT_MTU: u32 = 1450;
/// The smallest tenant MTU dvrmesh accepts as working: IPv6's minimum, and what most guests
/// assume.
pub const MIN_TENANT_MTU: u32 = 1280;

/// One interface of the host (the datapath's netlink reading of it).
pub type Iface = datapath::linux::InterfaceInfo;

/// Every interface of this process's network namespace (empty when netlink cannot be read).
pub fn interfaces() -> Vec<Iface> {
    std::fs::File::open("/proc/thread-self/ns/net")
        .ok()
        .and_then(|ns| datapath::linux::interfaces(&ns, "host").ok())
        .unwrap_or_default()
}

/// The host checks of a configuration.
pub fn checks(config: &Config) -> Vec<Check> {
    let ifaces = interfaces();
    let mut out = vec![underlay(config.tunnel_ip, &ifaces)];
    out.extend(external(config, &ifaces));
    out.push(bridge_netfilter(read_bridge_nf_call_iptables()));
    out
}

/// Where the host says whether bridged IPv4 frames go through its IP firewall hooks; absent
/// when bridge netfilter is not loaded.
const BRIDGE_NF_CALL_IPTABLES: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

/// The host's bridge netfilter switch: `None` when bridge netfilter is not loaded (or the file
/// reads as something else than a number).
fn read_bridge_nf_call_iptables() -> Option<u8> {
    std::fs::read_to_string(BRIDGE_NF_CALL_IPTABLES)
        .ok()
        .and_then(|v| v.trim().parse().ok())
}

/// Bridge netfilter (pure over the switch's value). On, every tenant frame a host bridge
/// forwards (VM to router, router to VXLAN) also walks the host's IP hooks, with a per-frame
/// allocation, whether or not any rule is there: small packets pay for it (measured in
/// BENCHMARKS.md's data plane section). dvrmesh filters nothing through it (its tables are on
/// the VXLAN devices and in its own namespaces), but a host firewall of bridged traffic (Docker,
/// Kubernetes' iptables proxy) may need it, so this only warns.
pub fn bridge_netfilter(call_iptables: Option<u8>) -> Check {
    match call_iptables {
        None | Some(0) => Check::ok(
            Group::Host,
            "bridge-netfilter",
            "bridged tenant frames skip the host's IP firewall hooks",
        ),
        Some(_) => Check::warn(
            Group::Host,
            "bridge-netfilter",
            "net.bridge.bridge-nf-call-iptables = 1: every frame the tenant bridges forward also walks the host's IP firewall hooks, which costs small packets throughput",
            "unless this host's firewall filters bridged traffic (Docker, kube-proxy): sysctl -w net.bridge.bridge-nf-call-iptables=0 net.bridge.bridge-nf-call-ip6tables=0 net.bridge.bridge-nf-call-arptables=0",
        ),
    }
}

/// The interface holding the tunnel address: present, up, and its MTU (pure).
pub fn underlay(tunnel_ip: Ipv4Addr, ifaces: &[Iface]) -> Check {
    let Some(i) = ifaces.iter().find(|i| i.addrs.contains(&tunnel_ip)) else {
        return Check::fail(
            Group::Host,
            "underlay",
            format!("tunnel_ip {tunnel_ip} is on no interface of this host, so VXLAN cannot bind it"),
            format!("add it to the underlay interface (`ip addr add {tunnel_ip}/24 dev <iface>`) or correct tunnel_ip"),
        );
    };
    if !i.up || !i.carrier {
        return Check::fail(
            Group::Host,
            "underlay",
            format!(
                "{} holds tunnel_ip {tunnel_ip} but is {}",
                i.name,
                if i.up { "without carrier" } else { "down" }
            ),
            format!("ip link set {} up (and check its cable or peer)", i.name),
        );
    }
    let (verdict, detail, fix) = mtu_rule(i.mtu);
    let detail = format!("{} holds tunnel_ip {tunnel_ip}; {detail}", i.name);
    match (verdict, fix) {
        (super::Verdict::Ok, _) | (_, None) => Check::ok(Group::Host, "underlay", detail),
        (super::Verdict::Warn, Some(f)) => Check::warn(Group::Host, "underlay", detail, f),
        (super::Verdict::Fail, Some(f)) => Check::fail(Group::Host, "underlay", detail, f),
    }
}

/// The MTU rule (pure). A tenant MTU is the underlay's minus [`VXLAN_OVERHEAD`]:
/// - ok when the default tenant MTU (1450) fits, i.e. the underlay has at least 1500;
/// - warn when only a smaller one fits, down to [`MIN_TENANT_MTU`]: networks must then be
///   created with `--mtu`, or VMs see silent drops of full-size packets;
/// - fail below that (underlay < 1330): no usable tenant MTU is left.
pub fn mtu_rule(mtu: Option<u32>) -> (super::Verdict, String, Option<String>) {
    use super::Verdict::*;
    let Some(m) = mtu else {
        return (
            Warn,
            "its MTU is unreadable".into(),
            Some("check /sys/class/net/<iface>/mtu".into()),
        );
    };
    let tenant = m.saturating_sub(VXLAN_OVERHEAD);
    if tenant >= DEFAULT_TENANT_MTU {
        let jumbo = if tenant >= 1500 {
            "; VMs can use 1500"
        } else {
            "; jumbo frames (>= 1550) would let VMs use 1500"
        };
        (
            Ok,
            format!(
                "MTU {m}: tenant networks up to {tenant} (default {DEFAULT_TENANT_MTU}){jumbo}"
            ),
            None,
        )
    } else if tenant >= MIN_TENANT_MTU {
        (
            Warn,
            format!("MTU {m} leaves {tenant} for tenant networks after VXLAN's {VXLAN_OVERHEAD} bytes, below the default {DEFAULT_TENANT_MTU}"),
            Some(format!("raise the underlay MTU to >= 1500, or create every network with --mtu {tenant}")),
        )
    } else {
        (
            Fail,
            format!(
                "MTU {m} leaves {tenant} for tenant networks, below the {MIN_TENANT_MTU} minimum"
            ),
            Some(format!(
                "raise the underlay MTU to >= {}",
                MIN_TENANT_MTU + VXLAN_OVERHEAD
            )),
        )
    }
}

/// Every `[external.NAME]` interface: present and up (pure over `ifaces`).
pub fn external(config: &Config, ifaces: &[Iface]) -> Vec<Check> {
    if config.external.is_empty() {
        return match config.mode {
            NodeMode::DvrSnat => vec![Check::warn(
                Group::Host,
                "external",
                "a dvr_snat node with no [external] network can never hold SNAT",
                "map the external network: [external.NAME] interface = \"ethX\"",
            )],
            _ => vec![Check::ok(
                Group::Host,
                "external",
                "no external network mapped (none needed in this mode)",
            )],
        };
    }
    config
        .external
        .iter()
        .map(|(name, m)| {
            let id = format!("external.{name}");
            let dev = m.interface.as_str();
            match ifaces.iter().find(|i| i.name == dev) {
                None => Check::fail(
                    Group::Host,
                    &id,
                    format!("[external.{name}] interface {dev} does not exist"),
                    format!("correct [external.{name}] interface, or create {dev}"),
                ),
                Some(i) if !i.up => Check::fail(
                    Group::Host,
                    &id,
                    format!("[external.{name}] interface {dev} is down"),
                    format!("ip link set {dev} up"),
                ),
                Some(i) if !i.carrier => Check::warn(
                    Group::Host,
                    &id,
                    format!("[external.{name}] interface {dev} is up but has no carrier"),
                    format!("check {dev}'s cable or peer"),
                ),
                Some(i) => Check::ok(
                    Group::Host,
                    &id,
                    format!(
                        "[external.{name}] interface {dev} is up (MTU {})",
                        i.mtu.map_or("?".into(), |m| m.to_string())
                    ),
                ),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Verdict;

    fn iface(name: &str, ip: [u8; 4], mtu: u32) -> Iface {
        Iface {
            name: name.into(),
            up: true,
            carrier: true,
            mtu: Some(mtu),
            addrs: vec![ip.into()],
        }
    }

    #[test]
    fn bridge_netfilter_warns_only_when_bridged_frames_walk_the_ip_hooks() {
        assert_eq!(bridge_netfilter(None).verdict, Verdict::Ok);
        assert_eq!(bridge_netfilter(Some(0)).verdict, Verdict::Ok);
        let on = bridge_netfilter(Some(1));
        assert_eq!(on.verdict, Verdict::Warn);
        assert!(
            on.fix.as_deref().is_some_and(|f| f.contains("=0")),
            "{on:?}"
        );
    }

    #[test]
    fn the_mtu_rule_leaves_room_for_vxlan() {
        assert_eq!(mtu_rule(Some(9000)).0, Verdict::Ok);
        assert_eq!(
            mtu_rule(Some(1500)).0,
            Verdict::Ok,
            "1500 carries the default 1450"
        );
        let (v, d, f) = mtu_rule(Some(1450));
        assert_eq!(v, Verdict::Warn);
        assert!(d.contains("1400"), "{d}");
        assert!(f.unwrap().contains("--mtu 1400"));
        assert_eq!(
            mtu_rule(Some(1330)).0,
            Verdict::Warn,
            "1280 is still usable"
        );
        assert_eq!(mtu_rule(Some(1329)).0, Verdict::Fail);
        assert_eq!(mtu_rule(None).0, Verdict::Warn);
    }

    #[test]
    fn the_underlay_is_the_interface_holding_the_tunnel_ip() {
        let ifs = [
            iface("lo", [127, 0, 0, 1], 65536),
            iface("eth0", [192, 0, 2, 11], 1500),
        ];
        let c = underlay(Ipv4Addr::new(192, 0, 2, 11), &ifs);
        assert_eq!(c.verdict, Verdict::Ok);
        assert!(c.detail.starts_with("eth0"), "{}", c.detail);
        let c = underlay(Ipv4Addr::new(192, 0, 2, 99), &ifs);
        assert_eq!(c.verdict, Verdict::Fail);
        assert!(c.fix.unwrap().contains("ip addr add 192.0.2.99"));
        let mut down = ifs.clone();
        down[1].up = false;
        let c = underlay(Ipv4Addr::new(192, 0, 2, 11), &down);
        assert_eq!(c.verdict, Verdict::Fail);
        assert_eq!(
            c.fix.as_deref(),
            Some("ip link set eth0 up (and check its cable or peer)")
        );
        let mut small = ifs.clone();
        small[1].mtu = Some(1200);
        assert_eq!(
            underlay(Ipv4Addr::new(192, 0, 2, 11), &small).verdict,
            Verdict::Fail
        );
    }
}
