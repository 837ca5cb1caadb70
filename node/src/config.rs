//! The agent's configuration file: TOML, parsed once into validated types.
//!
//! Every problem in a file is reported in one pass, each naming its key. Unknown keys are errors
//! (a typo must not silently fall back to a default). Relative paths are relative to the file.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use mesh_proto::{ExternalMapping, InterfaceName, Name, NodeId, NodeMode, Priority};
use toml::{Table, Value};

use crate::Error;

/// Default gossip round interval.
pub const DEFAULT_GOSSIP_INTERVAL_MS: u64 = 200;
/// Default SNAT priority.
pub const DEFAULT_SNAT_PRIORITY: u8 = 100;
/// Default interval between a SNAT holder's adverts.
pub const DEFAULT_ADVERT_INTERVAL_MS: u64 = 20;
/// Default number of advert intervals of silence before a backup declares the holder down.
pub const DEFAULT_ADVERT_MULTIPLIER: u32 = 8;
/// The fewest silent advert intervals before a backup takes over, on a path where it measured no
/// advert loss (VRRP's 3); more as it measures loss, up to `snat_advert_multiplier`.
pub const DEFAULT_ADVERT_MULTIPLIER_MIN: u32 = 3;
/// How far ahead of the local clock a peer's timestamp may be, by default (ms).
pub const DEFAULT_MAX_CLOCK_SKEW_MS: u64 = 10_000;
/// Default cluster id; nodes with another id refuse each other's gossip.
pub const DEFAULT_CLUSTER_ID: &str = "dvrmesh";
/// Default DHCP lease time handed to VMs (one day, as Neutron's `dhcp_lease_duration`).
pub const DEFAULT_DHCP_LEASE_SECONDS: u32 = 86_400;
/// Largest configuration file read.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Paths of the node's TLS material.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsPaths {
    /// Cluster CA certificate.
    pub ca: PathBuf,
    /// This node's certificate.
    pub cert: PathBuf,
    /// This node's private key.
    pub key: PathBuf,
    /// The cluster's revocation list (`dvrmesh cert revoke` writes it), re-read when it changes.
    pub crl: Option<PathBuf>,
}

/// A validated agent configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// The node's id; must equal the id in its certificate.
    pub node_id: NodeId,
    /// The node's role.
    pub mode: NodeMode,
    /// Where the QUIC gossip endpoint binds.
    pub listen: SocketAddr,
    /// The address peers reach this node at (defaults to `listen`).
    pub advertise: SocketAddr,
    /// Peers to contact first, `host:port`.
    pub seeds: Vec<String>,
    /// The VXLAN tunnel endpoint address.
    pub tunnel_ip: Ipv4Addr,
    /// Default SNAT priority.
    pub snat_priority: Priority,
    /// The local API's unix socket.
    pub api_socket: PathBuf,
    /// Where the agent keeps its state.
    pub data_dir: PathBuf,
    /// Gossip round interval.
    pub gossip_interval: Duration,
    /// Cluster id shared by every node of one cluster.
    pub cluster_id: String,
    /// TLS material.
    pub tls: TlsPaths,
    /// External networks this node reaches, by name.
    pub external: BTreeMap<Name, ExternalMapping>,
    /// Whether the agent programs the kernel.
    pub datapath: DatapathMode,
    /// Where named network namespaces live.
    pub netns_dir: PathBuf,
    /// How often a SNAT holder adverts to the other candidates.
    pub advert_interval: Duration,
    /// The most intervals of silence (plus the priority skew) before a backup takes over: what it
    /// waits when it measures heavy advert loss from the holder.
    pub advert_multiplier: u32,
    /// The fewest: what it waits when it measures none (at most `advert_multiplier`).
    pub advert_multiplier_min: u32,
    /// How long the nodes waiting on this node's SNAT adverts keep it as the holder while its
    /// agent restarts (`snat_restart_hold_ms`, 0 = off, at most 30 000): a stopping agent says
    /// so first and its next life resumes the routers. A node that does not come back leaves
    /// its routers without a working holder for this long.
    pub snat_restart_hold: Duration,
    /// How far ahead of this node's clock a peer's timestamp may be before its record or claim
    /// is refused.
    pub max_clock_skew: Duration,
    /// Where `/metrics`, `/healthz` and `/readyz` are served over HTTP (off when unset).
    pub metrics_listen: Option<SocketAddr>,
    /// Who may write tenant configuration (`[tenancy] writers`); every node must agree.
    pub tenancy_writers: crate::tenant::Writers,
    /// The lease time this node's DHCP server hands to its VMs.
    pub dhcp_lease: Duration,
}

/// Whether the agent programs this node's kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatapathMode {
    /// Program namespaces, links, routes and nft through netlink (needs root).
    Linux,
    /// Gossip and configuration only (plans are still computed and shown).
    Off,
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, Error> {
        let data = crate::files::read_limited("configuration", path, MAX_CONFIG_BYTES)?
            .ok_or_else(|| {
                Error::io(
                    "configuration",
                    path,
                    std::io::Error::from(std::io::ErrorKind::NotFound),
                )
            })?;
        let text = String::from_utf8(data).map_err(|_| Error::Config {
            path: path.to_path_buf(),
            problems: "the file is not UTF-8 text".into(),
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, base).map_err(|problems| Error::Config {
            path: path.to_path_buf(),
            problems,
        })
    }

    /// Parses configuration text; relative paths are joined to `base`. On failure returns every
    /// problem, one per line.
    pub fn parse(text: &str, base: &Path) -> Result<Config, String> {
        let table: Table = text.parse().map_err(|e: toml::de::Error| e.to_string())?;
        let t = &table;
        let mut p = Parser {
            problems: Vec::new(),
            base,
        };
        let node_id = p.required(t, "node_id", p_node_id);
        let mode = p.required(t, "mode", p_mode);
        let listen = p.required(t, "listen", p_sockaddr);
        let advertise = p.optional(t, "advertise", p_sockaddr);
        let seeds = p.optional(t, "seeds", p_seeds).unwrap_or_default();
        let tunnel_ip = p.required(t, "tunnel_ip", p_tunnel_ip);
        let snat_priority = p
            .optional(t, "snat_priority", p_priority)
            .unwrap_or_else(|| {
                Priority::new(DEFAULT_SNAT_PRIORITY).unwrap_or_else(|_| unreachable!())
            });
        let api_socket = p.required(t, "api_socket", |v| p_path(v, base));
        let data_dir = p.required(t, "data_dir", |v| p_path(v, base));
        let gossip_interval = p
            .optional(t, "gossip_interval_ms", |v| p_millis(v, 10..=10_000))
            .unwrap_or(Duration::from_millis(DEFAULT_GOSSIP_INTERVAL_MS));
        let cluster_id = p
            .optional(t, "cluster_id", p_cluster_id)
            .unwrap_or_else(|| DEFAULT_CLUSTER_ID.to_string());
        let datapath = p
            .optional(t, "datapath", p_datapath)
            .unwrap_or(DatapathMode::Linux);
        let netns_dir = p
            .optional(t, "netns_dir", |v| p_path(v, base))
            .unwrap_or_else(|| PathBuf::from("/run/netns"));
        let advert_interval = p
            .optional(t, "snat_advert_interval_ms", |v| p_millis(v, 5..=5_000))
            .unwrap_or(Duration::from_millis(DEFAULT_ADVERT_INTERVAL_MS));
        let advert_multiplier = p
            .optional(t, "snat_advert_multiplier", |v| p_int(v, 2..=50))
            .map_or(DEFAULT_ADVERT_MULTIPLIER, |n| n as u32);
        let advert_multiplier_min = p.multiplier_min(t, advert_multiplier);
        let snat_restart_hold = p
            .optional(t, "snat_restart_hold_ms", |v| {
                p_millis(
                    v,
                    0..=crate::ha::election::MAX_RESTART_HOLD.as_millis() as i64,
                )
            })
            .unwrap_or(Duration::ZERO);
        let max_clock_skew = p
            .optional(t, "max_clock_skew_ms", |v| p_millis(v, 100..=3_600_000))
            .unwrap_or(Duration::from_millis(DEFAULT_MAX_CLOCK_SKEW_MS));
        let metrics_listen = p.optional(t, "metrics_listen", p_sockaddr);
        let tenancy_writers = p.optional(t, "tenancy", p_tenancy).unwrap_or_default();
        let dhcp_lease = p
            .optional(t, "dhcp_lease_seconds", |v| p_int(v, 10..=31_536_000))
            .map_or(
                Duration::from_secs(u64::from(DEFAULT_DHCP_LEASE_SECONDS)),
                |n| Duration::from_secs(n.unsigned_abs()),
            );
        let tls = p.tls(t);
        let external = p.external(t);
        p.unknown_keys(t);
        p.cross_check(mode, external.as_ref(), listen, advertise);
        if !p.problems.is_empty() {
            return Err(p.problems.join("\n"));
        }
        let bad = || "internal: a required key was missing without a recorded problem".to_string();
        let listen = listen.ok_or_else(bad)?;
        Ok(Config {
            node_id: node_id.ok_or_else(bad)?,
            mode: mode.ok_or_else(bad)?,
            listen,
            advertise: advertise.unwrap_or(listen),
            seeds,
            tunnel_ip: tunnel_ip.ok_or_else(bad)?,
            snat_priority,
            api_socket: api_socket.ok_or_else(bad)?,
            data_dir: data_dir.ok_or_else(bad)?,
            gossip_interval,
            cluster_id,
            tls: tls.ok_or_else(bad)?,
            external: external.ok_or_else(bad)?,
            datapath,
            netns_dir,
            advert_interval,
            advert_multiplier,
            advert_multiplier_min,
            snat_restart_hold,
            max_clock_skew,
            metrics_listen,
            tenancy_writers,
            dhcp_lease,
        })
    }
}

const KNOWN_KEYS: &[&str] = &[
    "node_id",
    "mode",
    "listen",
    "advertise",
    "seeds",
    "tunnel_ip",
    "snat_priority",
    "api_socket",
    "data_dir",
    "gossip_interval_ms",
    "cluster_id",
    "tls",
    "external",
    "datapath",
    "netns_dir",
    "snat_advert_interval_ms",
    "snat_advert_multiplier",
    "snat_advert_multiplier_min",
    "snat_restart_hold_ms",
    "max_clock_skew_ms",
    "metrics_listen",
    "tenancy",
    "dhcp_lease_seconds",
];

/// `[tenancy]`: `writers = "any-node" | "operators"`.
fn p_tenancy(v: &Value) -> Result<crate::tenant::Writers, String> {
    use crate::tenant::Writers;
    let t = v
        .as_table()
        .ok_or("must be a table: [tenancy] writers = \"any-node\" | \"operators\"")?;
    if let Some(k) = t.keys().find(|k| k.as_str() != "writers") {
        return Err(format!("{k}: unknown key (known keys: writers)"));
    }
    match t.get("writers").map(|w| w.as_str()) {
        None => Ok(Writers::default()),
        Some(Some("any-node")) => Ok(Writers::AnyNode),
        Some(Some("operators")) => Ok(Writers::Operators),
        Some(_) => Err("writers: must be \"any-node\" or \"operators\"".into()),
    }
}

struct Parser<'a> {
    problems: Vec<String>,
    base: &'a Path,
}

impl Parser<'_> {
    fn required<T>(
        &mut self,
        t: &Table,
        key: &str,
        f: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Option<T> {
        match t.get(key) {
            None => {
                self.problems.push(format!("{key}: missing"));
                None
            }
            Some(v) => self.check(key, f(v)),
        }
    }

    fn optional<T>(
        &mut self,
        t: &Table,
        key: &str,
        f: impl FnOnce(&Value) -> Result<T, String>,
    ) -> Option<T> {
        t.get(key).and_then(|v| self.check(key, f(v)))
    }

    fn check<T>(&mut self, key: &str, r: Result<T, String>) -> Option<T> {
        r.map_err(|e| self.problems.push(format!("{key}: {e}")))
            .ok()
    }

    /// `snat_advert_multiplier_min`: at most `snat_advert_multiplier`; unset, the default or the
    /// most, whichever is smaller.
    fn multiplier_min(&mut self, t: &Table, most: u32) -> u32 {
        let key = "snat_advert_multiplier_min";
        match self.optional(t, key, |v| p_int(v, 2..=50)) {
            None => DEFAULT_ADVERT_MULTIPLIER_MIN.min(most),
            Some(n) if n as u32 > most => {
                self.problems.push(format!(
                    "{key}: {n} is more than snat_advert_multiplier ({most}); set both equal for a fixed count"
                ));
                most
            }
            Some(n) => n as u32,
        }
    }

    /// Every key the file has that the agent does not know.
    fn unknown_keys(&mut self, t: &Table) {
        for key in t.keys() {
            if !KNOWN_KEYS.contains(&key.as_str()) {
                self.problems.push(format!(
                    "{key}: unknown key (known keys: {})",
                    KNOWN_KEYS.join(", ")
                ));
            }
        }
    }

    /// The rules between keys: a `dvr_no_external` node maps no external network; a wildcard
    /// `listen` needs an `advertise`.
    fn cross_check(
        &mut self,
        mode: Option<NodeMode>,
        external: Option<&BTreeMap<Name, ExternalMapping>>,
        listen: Option<SocketAddr>,
        advertise: Option<SocketAddr>,
    ) {
        if mode == Some(NodeMode::DvrNoExternal) && external.is_some_and(|e| !e.is_empty()) {
            self.problems
                .push("external: a dvr_no_external node cannot map external networks".into());
        }
        if let (Some(l), None) = (listen, advertise) {
            if l.ip().is_unspecified() {
                self.problems.push(format!(
                    "advertise: required when listen ({l}) is a wildcard address, so peers know where to reach this node"
                ));
            }
        }
    }

    fn tls(&mut self, t: &Table) -> Option<TlsPaths> {
        let Some(v) = t.get("tls") else {
            self.problems
                .push("tls: missing ([tls] with ca, cert, key)".into());
            return None;
        };
        let Some(tls) = v.as_table() else {
            self.problems
                .push("tls: must be a table with ca, cert, key".into());
            return None;
        };
        let base = self.base;
        let mut get = |k: &str| match tls.get(k) {
            None => {
                self.problems.push(format!("tls.{k}: missing"));
                None
            }
            Some(v) => p_path(v, base)
                .map_err(|e| self.problems.push(format!("tls.{k}: {e}")))
                .ok(),
        };
        let (ca, cert, key) = (get("ca"), get("cert"), get("key"));
        let crl = match tls.get("crl") {
            None => Ok(None),
            Some(v) => p_path(v, base)
                .map(Some)
                .map_err(|e| self.problems.push(format!("tls.crl: {e}"))),
        };
        for k in tls.keys() {
            if !["ca", "cert", "key", "crl"].contains(&k.as_str()) {
                self.problems.push(format!(
                    "tls.{k}: unknown key (known keys: ca, cert, key, crl)"
                ));
            }
        }
        Some(TlsPaths {
            ca: ca?,
            cert: cert?,
            key: key?,
            crl: crl.ok()?,
        })
    }

    fn external(&mut self, t: &Table) -> Option<BTreeMap<Name, ExternalMapping>> {
        let Some(v) = t.get("external") else {
            return Some(BTreeMap::new());
        };
        let Some(ext) = v.as_table() else {
            self.problems.push(
                "external: must be tables, e.g. [external.public] interface = \"eth1\"".into(),
            );
            return None;
        };
        let mut out = BTreeMap::new();
        let mut ok = true;
        for (name, v) in ext {
            let key = format!("external.{name}");
            match mapping(name, v) {
                Ok(m) => {
                    out.insert(m.0, m.1);
                }
                Err(problems) => {
                    self.problems
                        .extend(problems.into_iter().map(|p| format!("{key}{p}")));
                    ok = false;
                }
            }
        }
        ok.then_some(out)
    }
}

/// One `[external.NAME]` table: `interface = "…"` and nothing else. Problems are suffixes of the
/// table's key (`: …` or `.interface: …`).
fn mapping(name: &str, v: &Value) -> Result<(Name, ExternalMapping), Vec<String>> {
    let name = Name::new(name).map_err(|e| vec![format!(": {e}")])?;
    let m = v
        .as_table()
        .ok_or_else(|| vec![": must be a table with an interface key".to_string()])?;
    let mut problems: Vec<String> = m
        .keys()
        .filter(|k| *k != "interface")
        .map(|k| format!(".{k}: unknown key (known keys: interface)"))
        .collect();
    let interface = match m.get("interface").map(p_str) {
        None => Err("missing".to_string()),
        Some(Err(e)) => Err(e),
        Some(Ok(s)) => InterfaceName::new(s).map_err(|e| e.to_string()),
    };
    match interface {
        Ok(interface) if problems.is_empty() => Ok((name, ExternalMapping { interface })),
        Ok(_) => Err(problems),
        Err(e) => {
            problems.push(format!(".interface: {e}"));
            Err(problems)
        }
    }
}

fn p_node_id(v: &Value) -> Result<NodeId, String> {
    p_str(v).and_then(|s| NodeId::new(s).map_err(|e| e.to_string()))
}

fn p_mode(v: &Value) -> Result<NodeMode, String> {
    p_str(v).and_then(|s| s.parse::<NodeMode>().map_err(|e| e.to_string()))
}

fn p_seeds(v: &Value) -> Result<Vec<String>, String> {
    let arr = v
        .as_array()
        .ok_or("must be an array of \"host:port\" strings")?;
    arr.iter().map(p_seed).collect()
}

fn p_tunnel_ip(v: &Value) -> Result<Ipv4Addr, String> {
    let ip: Ipv4Addr = p_str(v)?
        .parse()
        .map_err(|_| "is not an IPv4 address".to_string())?;
    if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
        return Err(format!("{ip} is not a unicast host address"));
    }
    Ok(ip)
}

fn p_priority(v: &Value) -> Result<Priority, String> {
    let n = v.as_integer().ok_or("must be an integer from 1 to 254")?;
    u8::try_from(n)
        .ok()
        .and_then(|n| Priority::new(n).ok())
        .ok_or_else(|| format!("{n} is outside 1..=254"))
}

/// An integer in `range`.
fn p_int(v: &Value, range: std::ops::RangeInclusive<i64>) -> Result<i64, String> {
    let n = v.as_integer().ok_or_else(|| {
        format!(
            "must be an integer from {} to {}",
            range.start(),
            range.end()
        )
    })?;
    if !range.contains(&n) {
        return Err(format!(
            "{n} is outside {}..={}",
            range.start(),
            range.end()
        ));
    }
    Ok(n)
}

/// A whole number of milliseconds in `range`.
fn p_millis(v: &Value, range: std::ops::RangeInclusive<i64>) -> Result<Duration, String> {
    if !v.is_integer() {
        return Err("must be an integer number of milliseconds".into());
    }
    p_int(v, range).map(|n| Duration::from_millis(n.unsigned_abs()))
}

fn p_cluster_id(v: &Value) -> Result<String, String> {
    let s = p_str(v)?;
    if s.is_empty() || s.len() > 64 || !s.chars().all(|c| c.is_ascii_graphic()) {
        return Err("must be 1 to 64 printable ASCII characters".into());
    }
    Ok(s.to_string())
}

fn p_datapath(v: &Value) -> Result<DatapathMode, String> {
    match p_str(v)? {
        "linux" => Ok(DatapathMode::Linux),
        "off" => Ok(DatapathMode::Off),
        other => Err(format!("{other:?} is not one of \"linux\", \"off\"")),
    }
}

fn p_str(v: &Value) -> Result<&str, String> {
    v.as_str().ok_or_else(|| "must be a string".to_string())
}

fn p_sockaddr(v: &Value) -> Result<SocketAddr, String> {
    let s = p_str(v)?;
    s.parse()
        .map_err(|_| format!("{s:?} is not an address:port (e.g. \"10.0.0.1:7101\")"))
}

fn p_seed(v: &Value) -> Result<String, String> {
    let s = p_str(v).map_err(|_| "seeds must be \"host:port\" strings".to_string())?;
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(s.to_string());
    }
    let (host, port) = s
        .rsplit_once(':')
        .ok_or_else(|| format!("{s:?} is not host:port"))?;
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    if !host_ok || port.parse::<u16>().map(|p| p == 0).unwrap_or(true) {
        return Err(format!("{s:?} is not host:port"));
    }
    Ok(s.to_string())
}

fn p_path(v: &Value, base: &Path) -> Result<PathBuf, String> {
    let s = p_str(v)?;
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    let p = PathBuf::from(s);
    Ok(if p.is_absolute() { p } else { base.join(p) })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
node_id = "compute-1"
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

    #[test]
    fn the_documented_example_parses() {
        let c = Config::parse(EXAMPLE, Path::new("/etc/dvrmesh")).unwrap();
        assert_eq!(c.node_id.as_str(), "compute-1");
        assert_eq!(c.mode, NodeMode::Dvr);
        assert_eq!(c.advertise, c.listen);
        assert_eq!(c.tls.ca, Path::new("/etc/dvrmesh/ca/ca.pem"));
        assert_eq!(c.api_socket, Path::new("/run/dvrmesh/compute-1.sock"));
        assert_eq!(c.gossip_interval, Duration::from_millis(200));
        assert_eq!(c.seeds.len(), 2);
        assert_eq!(
            c.external[&Name::new("public").unwrap()].interface.as_str(),
            "eth1"
        );
    }

    #[test]
    fn every_problem_is_reported_naming_its_key() {
        let bad = EXAMPLE
            .replace("mode = \"dvr\"", "mode = \"router\"")
            .replace(
                "snat_priority = 100",
                "snat_priority = 300\ncolour = \"blue\"",
            )
            .replace("gossip_interval_ms = 200", "gossip_interval_ms = 1")
            .replace(
                "interface = \"eth1\"",
                "interface = \"this-name-is-too-long\"",
            );
        let err = Config::parse(&bad, Path::new("/")).unwrap_err();
        for key in [
            "mode:",
            "snat_priority:",
            "colour:",
            "gossip_interval_ms:",
            "external.public.interface:",
        ] {
            assert!(err.contains(key), "{key} not named in:\n{err}");
        }
    }

    #[test]
    fn missing_required_keys_are_named() {
        let err = Config::parse("mode = \"dvr\"", Path::new("/")).unwrap_err();
        for key in [
            "node_id: missing",
            "listen: missing",
            "tunnel_ip: missing",
            "tls: missing",
            "api_socket: missing",
            "data_dir: missing",
        ] {
            assert!(err.contains(key), "{key} not in:\n{err}");
        }
    }

    #[test]
    fn tls_keys_are_checked() {
        let bad = EXAMPLE.replace("key = \"compute-1/node.key\"", "keyfile = \"x\"");
        let err = Config::parse(&bad, Path::new("/")).unwrap_err();
        assert!(err.contains("tls.key: missing"), "{err}");
        assert!(err.contains("tls.keyfile: unknown key"), "{err}");
    }

    #[test]
    fn the_revocation_list_is_optional_and_relative_to_the_config() {
        let base = Path::new("/etc/dvrmesh");
        assert_eq!(Config::parse(EXAMPLE, base).unwrap().tls.crl, None);
        let with = EXAMPLE.replace(
            "key = \"compute-1/node.key\"",
            "key = \"compute-1/node.key\"\ncrl = \"ca/crl.pem\"",
        );
        assert_eq!(
            Config::parse(&with, base).unwrap().tls.crl,
            Some(base.join("ca/crl.pem"))
        );
        let bad = with.replace("\"ca/crl.pem\"", "7");
        assert!(Config::parse(&bad, base).unwrap_err().contains("tls.crl"));
    }

    #[test]
    fn the_dhcp_lease_defaults_to_a_day_and_is_bounded() {
        let base = Path::new("/");
        let lease = |extra: &str| {
            let text = EXAMPLE.replace("[tls]", &format!("{extra}\n[tls]"));
            Config::parse(&text, base).map(|c| c.dhcp_lease)
        };
        assert_eq!(lease(""), Ok(Duration::from_secs(86_400)));
        assert_eq!(
            lease("dhcp_lease_seconds = 600"),
            Ok(Duration::from_secs(600))
        );
        for bad in ["dhcp_lease_seconds = 5", "dhcp_lease_seconds = \"1h\""] {
            let err = lease(bad).unwrap_err();
            assert!(err.contains("dhcp_lease_seconds"), "{err}");
        }
    }

    #[test]
    fn the_least_advert_multiplier_defaults_to_three_and_never_exceeds_the_most() {
        let base = Path::new("/");
        let counts = |extra: &str| {
            let text = EXAMPLE.replace("[tls]", &format!("{extra}\n[tls]"));
            Config::parse(&text, base).map(|c| (c.advert_multiplier_min, c.advert_multiplier))
        };
        assert_eq!(counts(""), Ok((3, 8)));
        assert_eq!(counts("snat_advert_multiplier = 2"), Ok((2, 2)));
        assert_eq!(
            counts("snat_advert_multiplier = 5\nsnat_advert_multiplier_min = 5"),
            Ok((5, 5))
        );
        let err = counts("snat_advert_multiplier = 4\nsnat_advert_multiplier_min = 6").unwrap_err();
        assert!(
            err.contains("snat_advert_multiplier_min: 6 is more than snat_advert_multiplier (4)"),
            "{err}"
        );
        assert!(counts("snat_advert_multiplier_min = 1")
            .unwrap_err()
            .contains("snat_advert_multiplier_min"));
    }

    #[test]
    fn wildcard_listen_needs_advertise() {
        let bad = EXAMPLE.replace("127.0.0.1:7101", "0.0.0.0:7101");
        assert!(Config::parse(&bad, Path::new("/"))
            .unwrap_err()
            .contains("advertise"));
        let ok = bad.replace("tunnel_ip", "advertise = \"10.0.0.1:7101\"\ntunnel_ip");
        assert!(Config::parse(&ok, Path::new("/")).is_ok());
    }

    #[test]
    fn no_external_mode_rejects_external_networks() {
        let bad = EXAMPLE.replace("mode = \"dvr\"", "mode = \"dvr_no_external\"");
        assert!(Config::parse(&bad, Path::new("/"))
            .unwrap_err()
            .contains("external"));
    }

    #[test]
    fn datapath_mode_is_checked() {
        let top = EXAMPLE.replace(
            "gossip_interval_ms = 200",
            "gossip_interval_ms = 200\ndatapath = \"off\"",
        );
        assert_eq!(
            Config::parse(&top, Path::new("/")).unwrap().datapath,
            DatapathMode::Off
        );
        let bad = EXAMPLE.replace(
            "gossip_interval_ms = 200",
            "gossip_interval_ms = 200\ndatapath = \"ovs\"",
        );
        assert!(Config::parse(&bad, Path::new("/"))
            .unwrap_err()
            .contains("datapath:"));
        assert_eq!(
            Config::parse(EXAMPLE, Path::new("/")).unwrap().datapath,
            DatapathMode::Linux
        );
    }

    /// The configurations the Debian package installs (node/debian/): they parse, they point
    /// at the directories the systemd unit and tmpfiles entry make, and together they mention
    /// every key, so a new key is not forgotten there (nor in docs/operations.md).
    #[test]
    fn the_packaged_examples_parse_and_mention_every_key() {
        let compute = include_str!("../debian/compute-node.toml");
        let network = include_str!("../debian/network-node.toml.example");
        let docs = include_str!("../../docs/operations.md");
        let base = Path::new("/etc/dvrmesh");
        for (text, mode) in [(compute, NodeMode::Dvr), (network, NodeMode::DvrSnat)] {
            let c = Config::parse(text, base).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(c.mode, mode);
            assert_eq!(c.api_socket, Path::new("/run/dvrmesh/api.sock"));
            assert_eq!(c.data_dir, Path::new("/var/lib/dvrmesh"));
            assert_eq!(c.tls.key, base.join("tls/node.key"));
            assert_eq!(c.tls.crl, Some(base.join("tls/crl.pem")));
        }
        let tls = ["ca", "cert", "key", "crl"].map(|k| format!("tls.{k}"));
        let keys = KNOWN_KEYS.iter().map(|k| k.to_string()).chain(tls);
        for key in keys {
            let bare = key.trim_start_matches("tls.");
            let in_examples = [compute, network].iter().any(|t| t.contains(bare));
            assert!(in_examples, "{key} is in neither packaged example");
            assert!(
                docs.contains(&format!("`{key}`")),
                "{key} is not in docs/operations.md"
            );
        }
    }

    #[test]
    fn syntax_errors_are_reported() {
        assert!(Config::parse("node_id = ", Path::new("/")).is_err());
        assert!(Config::parse("seeds = [1, 2]\n", Path::new("/"))
            .unwrap_err()
            .contains("seeds"));
    }
}
