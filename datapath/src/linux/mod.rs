//! The Linux backend of [`Kernel`]: netlink from inside each namespace, one atomic nft batch per
//! namespace per pass.
//!
//! Each `observe` or `apply` is one *pass*: it opens the host namespace and every named namespace
//! it touches, creates one synchronous rtnetlink socket per namespace while the calling thread has
//! switched into it (a socket keeps the namespace it was created in), and uses those sockets
//! after. Sysctls are read and written the same way. nft tables are compiled from their typed
//! trees into nfnetlink batches (`nft_compile`, `nft_wire`), or printed for libnftables. Nothing is
//! kept between passes (but a pool of unnamed spare namespaces, `ns_pool`), so a deleted
//! namespace is never held alive. `observe` can be scoped (see [`crate::Scope`]).
//!
//! What dvrmesh owns, and so what `observe` reports and `apply` may delete: links named with one
//! of [`OWNED_LINK_PREFIXES`], namespaces named with one of [`OWNED_NAMESPACE_PREFIXES`], routes
//! and rules with protocol [`crate::ROUTE_PROTOCOL`], permanent neighbours and FDB entries on
//! owned links, and nft tables named [`crate::NFT_TABLE_PREFIX`]`*`.

mod addrs_routes;
mod apply;
pub mod arp_probe;
pub mod dhcp_socket;
mod garp;
mod interfaces;
mod libnft;
mod links;
mod neigh_fdb;
pub mod netns;
pub mod nft;
mod nft_apply;
mod nft_compile;
mod nft_wire;
mod ns_pool;
mod observe;
mod rules;
pub mod sandbox;
mod socket;
pub mod sysctl;
#[cfg(test)]
mod test_support;

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};

use netlink_sys::protocols::NETLINK_ROUTE;

pub use self::interfaces::{interfaces, InterfaceInfo};
pub use self::links::{is_owned, OWNED_LINK_PREFIXES};
use self::socket::Conn;
use crate::{ApplyReport, Desired, Error, Kernel, Netns, Observed, Op};

/// Name prefixes of the named namespaces dvrmesh owns.
pub const OWNED_NAMESPACE_PREFIXES: &[&str] = &["qrouter-", "snat-", "fip-", "qmeta-"];

/// Which namespace the model's [`Netns::Host`] is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostNs {
    /// The namespace of the thread that calls `observe`/`apply` (the agent's own).
    Current,
    /// The namespace behind this file (a bind-mounted namespace, or `/proc/<pid>/ns/net`); tests
    /// use it to keep everything inside a throwaway namespace.
    Path(PathBuf),
}

/// Where the backend works.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinuxConfig {
    /// The host namespace.
    pub host: HostNs,
    /// Directory of the named namespaces' files (`/run/netns` in production, like `ip netns`).
    pub netns_dir: PathBuf,
    /// How nft tables are loaded.
    pub nft: NftLoader,
}

impl Default for LinuxConfig {
    fn default() -> Self {
        LinuxConfig {
            host: HostNs::Current,
            netns_dir: PathBuf::from("/run/netns"),
            nft: NftLoader::default(),
        }
    }
}

/// How nft tables are loaded. Either way one namespace's tables change in one atomic transaction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NftLoader {
    /// Tables are compiled into nfnetlink messages here: no parser, no process.
    #[default]
    Netlink,
    /// Tables are printed as nft text and loaded through libnftables (or the `nft` binary): the
    /// reference the compiled form is tested against, and a way out should the kernel refuse
    /// the compiled messages.
    Text,
}

/// [`Kernel`] on the running Linux kernel. Needs `CAP_NET_ADMIN` and `CAP_SYS_ADMIN` (setns,
/// mount); libnftables or the `nft` binary only with [`NftLoader::Text`].
#[derive(Debug)]
pub struct LinuxKernel {
    config: LinuxConfig,
}

impl LinuxKernel {
    /// A backend working in `config`'s namespaces. Nothing is opened until the first pass.
    pub fn new(config: LinuxConfig) -> Self {
        ns_pool::refill();
        LinuxKernel { config }
    }

    /// Its configuration.
    pub fn config(&self) -> &LinuxConfig {
        &self.config
    }
}

impl Kernel for LinuxKernel {
    fn observe(&mut self, hint: &Desired) -> Result<Observed, Error> {
        let mut pass = Pass::new(&self.config)?;
        observe::observe(&mut pass, hint, None)
    }

    fn observe_scoped(&mut self, hint: &Desired, scope: &crate::Scope) -> Result<Observed, Error> {
        let mut pass = Pass::new(&self.config)?;
        observe::observe(&mut pass, hint, Some(scope))
    }

    fn apply(&mut self, ops: &[Op]) -> Result<ApplyReport, Error> {
        let mut pass = Pass::new(&self.config)?;
        apply::apply(&mut pass, ops)
    }
}

// === impl Pass ===

/// The namespaces and sockets of one `observe` or `apply`.
pub(crate) struct Pass<'a> {
    config: &'a LinuxConfig,
    host: File,
    conns: HashMap<Netns, Conn>,
    /// Namespaces made in this pass; `true` for those adopted from the spare pool, which carry
    /// [`crate::plan::NAMESPACE_SYSCTLS`] already.
    created: HashMap<Netns, bool>,
    /// Veth peers created in this pass with their own attributes, still to be brought up.
    fresh_peers: std::collections::HashSet<(Netns, String)>,
    /// `/proc/sys/net` of each namespace whose sysctls this pass wrote.
    sysctl_dirs: HashMap<Netns, sysctl::NetDir>,
}

impl<'a> Pass<'a> {
    fn new(config: &'a LinuxConfig) -> Result<Self, Error> {
        let host = match &config.host {
            HostNs::Current => netns::open(Path::new("/proc/thread-self/ns/net"), "host")?,
            HostNs::Path(p) => netns::open(p, "host")?,
        };
        Ok(Pass {
            config,
            host,
            conns: HashMap::new(),
            created: HashMap::new(),
            fresh_peers: Default::default(),
            sysctl_dirs: HashMap::new(),
        })
    }

    /// Records that `ns` was made in this pass (`from_pool`: a spare with its common sysctls).
    pub(crate) fn created(&mut self, ns: Netns, from_pool: bool) {
        self.created.insert(ns, from_pool);
    }

    /// Whether `ns` was made in this pass (so it holds nothing dvrmesh has not put there since).
    pub(crate) fn is_created(&self, ns: &Netns) -> bool {
        self.created.contains_key(ns)
    }

    /// Whether `ns` was adopted from the spare pool in this pass.
    pub(crate) fn is_preset(&self, ns: &Netns) -> bool {
        self.created.get(ns).copied().unwrap_or(false)
    }

    /// Records that the veth end `name` in `ns` was just created with its MAC and MTU.
    pub(crate) fn fresh_peer(&mut self, ns: &Netns, name: &str) {
        self.fresh_peers.insert((ns.clone(), name.to_string()));
    }

    /// Whether `name` in `ns` is a veth end created in this pass with its attributes (asked
    /// once: the answer is forgotten).
    pub(crate) fn take_fresh_peer(&mut self, ns: &Netns, name: &str) -> bool {
        self.fresh_peers.remove(&(ns.clone(), name.to_string()))
    }

    /// How nft tables are loaded.
    pub(crate) fn nft_loader(&self) -> NftLoader {
        self.config.nft
    }

    /// The directory of named namespaces.
    pub(crate) fn netns_dir(&self) -> &Path {
        &self.config.netns_dir
    }

    /// A fresh handle on the namespace `ns`.
    pub(crate) fn open_ns(&self, ns: &Netns) -> Result<File, Error> {
        match ns {
            Netns::Host => self.host.try_clone().map_err(|e| Error::Namespace {
                ns: ns.to_string(),
                message: format!("dup: {e}"),
            }),
            Netns::Named(name) => {
                let path = netns::path_of(&self.config.netns_dir, name)?;
                if !netns::is_netns(&path) {
                    return Err(Error::Namespace {
                        ns: name.clone(),
                        message: format!("{} is not a network namespace", path.display()),
                    });
                }
                netns::open(&path, name)
            }
        }
    }

    /// The rtnetlink socket of `ns`, opened on first use.
    pub(crate) fn conn(&mut self, ns: &Netns) -> Result<&mut Conn, Error> {
        if !self.conns.contains_key(ns) {
            let file = self.open_ns(ns)?;
            let conn = Conn::open(NETLINK_ROUTE, &file, &ns.to_string())?;
            self.conns.insert(ns.clone(), conn);
        }
        self.conns.get_mut(ns).ok_or_else(|| Error::Namespace {
            ns: ns.to_string(),
            message: "socket vanished".to_string(),
        })
    }

    /// The `/proc/sys/net` directory of `ns`, opened on first use.
    pub(crate) fn sysctl_dir(&mut self, ns: &Netns) -> Result<&mut sysctl::NetDir, Error> {
        if !self.sysctl_dirs.contains_key(ns) {
            let dir = sysctl::NetDir::open(self.open_ns(ns)?, &ns.to_string())?;
            self.sysctl_dirs.insert(ns.clone(), dir);
        }
        self.sysctl_dirs
            .get_mut(ns)
            .ok_or_else(|| Error::Namespace {
                ns: ns.to_string(),
                message: "sysctl directory vanished".to_string(),
            })
    }

    /// Drops the sockets and files of `ns` (they would keep a deleted namespace alive).
    pub(crate) fn forget(&mut self, ns: &Netns) {
        self.conns.remove(ns);
        self.sysctl_dirs.remove(ns);
        self.created.remove(ns);
        self.fresh_peers.retain(|(n, _)| n != ns);
    }

    /// Forgets every remembered ifindex.
    pub(crate) fn forget_all_links(&mut self) {
        for conn in self.conns.values_mut() {
            conn.indexes.clear();
        }
        self.fresh_peers.clear();
    }

    /// Forgets the remembered ifindex of `name` in `ns` (a link of that name is being created
    /// there). Only that namespace's socket is touched: a pass holds one per namespace, thousands
    /// in a large one.
    pub(crate) fn forget_link(&mut self, ns: &Netns, name: &str) {
        if let Some(conn) = self.conns.get_mut(ns) {
            conn.indexes.remove(name);
        }
    }
}
