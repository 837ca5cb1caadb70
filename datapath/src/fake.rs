//! An in-memory kernel for tests: ordered maps, with the rules of the real one that matter to
//! ordering (a link needs its namespace and its master; an address, route or neighbour needs its
//! device; deleting a link takes its veth peer and everything on it; deleting a namespace takes
//! everything in it).

use std::collections::BTreeSet;

use crate::model::*;

/// A fake kernel.
#[derive(Clone, Debug, Default)]
pub struct FakeKernel {
    state: KernelState,
    /// Devices made by someone else (VM taps, physical interfaces), by namespace and name.
    external: BTreeSet<(Netns, String)>,
    /// Ops applied so far.
    pub applied: usize,
}

impl FakeKernel {
    /// Declares a device someone else made, e.g. a VM's tap or the external interface.
    pub fn add_external_device(&mut self, ns: Netns, name: &str) {
        self.external.insert((ns, name.to_string()));
    }

    /// Everything in the fake, for assertions.
    pub fn state(&self) -> &KernelState {
        &self.state
    }

    fn ns_exists(&self, ns: &Netns) -> bool {
        match ns {
            Netns::Host => true,
            Netns::Named(n) => self.state.namespaces.contains(n),
        }
    }

    fn dev_exists(&self, ns: &Netns, dev: &str) -> bool {
        self.state
            .links
            .contains_key(&(ns.clone(), dev.to_string()))
            || self.external.contains(&(ns.clone(), dev.to_string()))
    }

    fn remove_link(&mut self, ns: &Netns, name: &str) {
        if let Some(spec) = self.state.links.remove(&(ns.clone(), name.to_string())) {
            if let LinkKind::Veth { peer, peer_ns } = spec.kind {
                self.state.links.remove(&(peer_ns.clone(), peer.clone()));
                self.remove_on_dev(&peer_ns, &peer);
            }
        }
        self.remove_on_dev(ns, name);
    }

    fn remove_on_dev(&mut self, ns: &Netns, dev: &str) {
        let on = |n: &Netns, d: &str| n == ns && d == dev;
        self.state.addrs.retain(|a| !on(&a.ns, &a.dev));
        self.state.routes.retain(|r| !on(&r.ns, &r.dev));
        self.state.neighs.retain(|n| !on(&n.ns, &n.dev));
        self.state.fdb.retain(|f| !on(&f.ns, &f.dev));
        let (ns, dev) = (ns.clone(), dev.to_string());
        for spec in self.state.links.values_mut() {
            if spec.master.as_deref() == Some(dev.as_str()) && ns == Netns::Host {
                spec.master = None;
            }
        }
    }

    fn apply_one(&mut self, op: &Op) -> Result<(), String> {
        match op {
            Op::AddNamespace { name } => {
                self.state.namespaces.insert(name.clone());
            }
            Op::DelNamespace { name } => self.del_namespace(name),
            Op::SetSysctl { ns, key, value } => self.set_sysctl(ns, key, value)?,
            Op::AddLink { ns, name, spec } => self.add_link(ns, name, spec)?,
            Op::SetLink { ns, name, spec } => self.set_link(ns, name, spec)?,
            Op::DelLink { ns, name } => self.remove_link(ns, name),
            Op::AddAddr(a) => {
                self.need_dev(&a.ns, &a.dev)?;
                self.state.addrs.insert(a.clone());
            }
            Op::DelAddr(a) => {
                self.state.addrs.remove(a);
            }
            Op::AddRoute(r) => self.add_route(r)?,
            Op::DelRoute(r) => {
                self.state.routes.remove(r);
            }
            Op::AddRule(r) => {
                self.need_ns(&r.ns)?;
                self.state.rules.insert(r.clone());
            }
            Op::DelRule(r) => {
                self.state.rules.remove(r);
            }
            Op::AddNeigh(n) => {
                self.need_dev(&n.ns, &n.dev)?;
                self.state
                    .neighs
                    .retain(|o| !(o.ns == n.ns && o.dev == n.dev && o.ip == n.ip));
                self.state.neighs.insert(n.clone());
            }
            Op::DelNeigh(n) => {
                self.state.neighs.remove(n);
            }
            Op::AddFdb(f) => {
                self.need_dev(&f.ns, &f.dev)?;
                self.state.fdb.insert(f.clone());
            }
            Op::DelFdb(f) => {
                self.state.fdb.remove(f);
            }
            Op::ReplaceNft { key, table } => {
                self.need_ns(&key.ns)?;
                table.check().map_err(|e| format!("EINVAL: {e}"))?;
                self.state
                    .nft
                    .insert(key.clone(), NftContent::Table(table.clone()));
            }
            Op::DelNft(key) => {
                self.state.nft.remove(key);
            }
        }
        Ok(())
    }

    /// Everything in the namespace goes with it.
    fn del_namespace(&mut self, name: &str) {
        let ns = Netns::Named(name.to_string());
        self.state.namespaces.remove(name);
        let names: Vec<String> = self
            .state
            .links
            .keys()
            .filter(|(n, _)| *n == ns)
            .map(|(_, l)| l.clone())
            .collect();
        for l in names {
            self.remove_link(&ns, &l);
        }
        self.state.sysctls.retain(|(n, _), _| *n != ns);
        self.state.rules.retain(|r| r.ns != ns);
        self.state.nft.retain(|k, _| k.ns != ns);
    }

    /// An interface sysctl needs its interface, as `/proc/sys` does.
    fn set_sysctl(&mut self, ns: &Netns, key: &str, value: &str) -> Result<(), String> {
        self.need_ns(ns)?;
        if sysctl_device(key).is_some_and(|dev| !self.dev_exists(ns, dev)) {
            return Err(format!("ENOENT: {key}: no such interface"));
        }
        self.state
            .sysctls
            .insert((ns.clone(), key.to_string()), value.to_string());
        Ok(())
    }

    /// Like the kernel: EEXIST (on the name or a veth's peer) counts as done, a master must
    /// exist, and an external device is never created.
    fn add_link(&mut self, ns: &Netns, name: &str, spec: &LinkSpec) -> Result<(), String> {
        self.need_ns(ns)?;
        if let Some(m) = &spec.master {
            if !self.dev_exists(ns, m) {
                return Err(format!("ENODEV: master {m} of {name}"));
            }
        }
        if self.dev_exists(ns, name) {
            return Ok(());
        }
        if let LinkKind::Veth { peer, peer_ns } = &spec.kind {
            self.need_ns(peer_ns)?;
            if self.dev_exists(peer_ns, peer) {
                return Ok(());
            }
            let peer_spec = LinkSpec::of(LinkKind::Veth {
                peer: name.to_string(),
                peer_ns: ns.clone(),
            });
            self.state
                .links
                .insert((peer_ns.clone(), peer.clone()), peer_spec);
        }
        if spec.kind == LinkKind::External {
            return Err(format!("EPERM: {name} is someone else's device"));
        }
        self.state
            .links
            .insert((ns.clone(), name.to_string()), spec.clone());
        Ok(())
    }

    /// Changes attributes, never the kind; an external device becomes known once set.
    fn set_link(&mut self, ns: &Netns, name: &str, spec: &LinkSpec) -> Result<(), String> {
        if let Some(m) = &spec.master {
            if !self.dev_exists(ns, m) {
                return Err(format!("ENODEV: master {m} of {name}"));
            }
        }
        let key = (ns.clone(), name.to_string());
        if let Some(have) = self.state.links.get_mut(&key) {
            let kind = have.kind.clone();
            *have = LinkSpec {
                kind,
                ..spec.clone()
            };
        } else if self.external.contains(&key) {
            self.state.links.insert(key, spec.clone());
        } else {
            return Err(format!("ENODEV: {name} in {ns}"));
        }
        Ok(())
    }

    /// A gateway must be on a subnet of the route's device.
    fn add_route(&mut self, r: &RouteSpec) -> Result<(), String> {
        self.need_dev(&r.ns, &r.dev)?;
        if let Some(via) = r.via {
            let reachable = self.state.addrs.iter().any(|a| {
                a.ns == r.ns
                    && a.dev == r.dev
                    && mesh_proto::Ipv4Cidr::new(mask(a.ip, a.prefix), a.prefix)
                        .is_ok_and(|c| c.contains(via))
            });
            if !reachable {
                return Err(format!("ENETUNREACH: {via} via {}", r.dev));
            }
        }
        self.state.routes.insert(r.clone());
        Ok(())
    }

    fn need_ns(&self, ns: &Netns) -> Result<(), String> {
        if self.ns_exists(ns) {
            Ok(())
        } else {
            Err(format!("ENOENT: namespace {ns}"))
        }
    }

    fn need_dev(&self, ns: &Netns, dev: &str) -> Result<(), String> {
        if self.dev_exists(ns, dev) {
            Ok(())
        } else {
            Err(format!("ENODEV: {dev} in {ns}"))
        }
    }
}

fn mask(ip: std::net::Ipv4Addr, prefix: u8) -> std::net::Ipv4Addr {
    let m = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    std::net::Ipv4Addr::from(u32::from(ip) & m)
}

impl Kernel for FakeKernel {
    fn observe(&mut self, hint: &Desired) -> Result<Observed, crate::Error> {
        let mut o = self.state.clone();
        o.sysctls.retain(|k, _| hint.sysctls.contains_key(k));
        // Like the Linux backend: owned names only, and devices of others only when the plan
        // mentions them.
        o.links.retain(|k, spec| {
            if spec.kind == LinkKind::External {
                hint.links.contains_key(k)
            } else {
                owns_link(&k.1)
            }
        });
        Ok(o)
    }

    fn apply(&mut self, ops: &[Op]) -> Result<ApplyReport, crate::Error> {
        let mut report = ApplyReport::default();
        for op in ops {
            match self.apply_one(op) {
                Ok(()) => report.applied += 1,
                Err(e) => report.failed.push((format!("{op:?}"), e)),
            }
        }
        self.applied += report.applied;
        Ok(report)
    }
}
