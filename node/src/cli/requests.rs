//! What each configuration command asks the agent: its [`ConfigRequest`], and the kind of object
//! a listing prints (for the table's columns).

use dvrmesh_node::tenant::ops::ConfigRequest as R;
use mesh_proto::ObjectKind as K;

use std::path::Path;

use super::args::{
    Command, ExternalNetworkCommand, FipCommand, NetworkCommand, PortCommand, PortMetadataArgs,
    RouterCommand, SubnetCommand,
};

/// A request and, for a listing, the kind it lists.
pub(crate) type Asked = (R, Option<K>);

/// The request of a configuration command; `None` for the commands that are not one.
pub(crate) fn of(cmd: &Command) -> anyhow::Result<Option<Asked>> {
    Ok(Some(match cmd {
        Command::Network(c) => c.request(),
        Command::Subnet(c) => c.request(),
        Command::ExternalNetwork(c) => c.request(),
        Command::Router(c) => c.request(),
        Command::Port(c) => c.request()?,
        Command::Fip(c) => c.request(),
        Command::View => (R::View, None),
        Command::Ca(_)
        | Command::Cert(_)
        | Command::Agent(_)
        | Command::Members
        | Command::Status
        | Command::Datapath(_)
        | Command::Doctor => return Ok(None),
    }))
}

fn one(r: R) -> Asked {
    (r, None)
}

fn list(kind: K) -> Asked {
    (R::List { kind, host: None }, Some(kind))
}

fn show(kind: K, reference: &str) -> Asked {
    one(R::Show {
        kind,
        reference: reference.to_string(),
    })
}

fn delete(kind: K, reference: &str) -> Asked {
    one(R::Delete {
        kind,
        reference: reference.to_string(),
    })
}

impl NetworkCommand {
    fn request(&self) -> Asked {
        match self {
            Self::Create { name, vni, mtu } => one(R::NetworkCreate {
                name: name.clone(),
                vni: *vni,
                mtu: *mtu,
            }),
            Self::List => list(K::Network),
            Self::Show { network } => show(K::Network, network),
            Self::Delete { network } => delete(K::Network, network),
        }
    }
}

impl SubnetCommand {
    fn request(&self) -> Asked {
        match self {
            Self::Create {
                name,
                network,
                cidr,
                gateway,
                pool,
                dhcp,
                dns_servers,
                domain,
            } => one(R::SubnetCreate {
                name: name.clone(),
                network: network.clone(),
                cidr: cidr.clone(),
                gateway: gateway.clone(),
                pool: pool.clone(),
                dhcp: *dhcp,
                dns_servers: dns_servers.clone(),
                domain: domain.clone(),
            }),
            Self::List => list(K::Subnet),
            Self::Show { subnet } => show(K::Subnet, subnet),
            Self::Delete { subnet } => delete(K::Subnet, subnet),
        }
    }
}

impl ExternalNetworkCommand {
    fn request(&self) -> Asked {
        match self {
            Self::Create {
                name,
                cidr,
                gateway,
                pool,
            } => one(R::ExternalNetworkCreate {
                name: name.clone(),
                cidr: cidr.clone(),
                gateway: gateway.clone(),
                pool: pool.clone(),
            }),
            Self::List => list(K::ExternalNetwork),
            Self::Show { external_network } => show(K::ExternalNetwork, external_network),
            Self::Delete { external_network } => delete(K::ExternalNetwork, external_network),
        }
    }
}

impl RouterCommand {
    fn request(&self) -> Asked {
        match self {
            Self::Create { name } => one(R::RouterCreate { name: name.clone() }),
            Self::AddInterface { router: r, subnet } => one(R::RouterAddInterface {
                router: r.clone(),
                subnet: subnet.clone(),
            }),
            Self::RemoveInterface { router: r, subnet } => one(R::RouterRemoveInterface {
                router: r.clone(),
                subnet: subnet.clone(),
            }),
            Self::SetGateway {
                router: r,
                external_network,
                no_snat,
            } => one(R::RouterSetGateway {
                router: r.clone(),
                external_network: external_network.clone(),
                snat: !no_snat,
            }),
            Self::ClearGateway { router: r } => one(R::RouterClearGateway { router: r.clone() }),
            Self::AddRoute {
                router: r,
                destination,
                nexthop,
            } => one(R::RouterAddRoute {
                router: r.clone(),
                destination: destination.clone(),
                nexthop: nexthop.clone(),
            }),
            Self::RemoveRoute {
                router: r,
                destination,
                nexthop,
            } => one(R::RouterRemoveRoute {
                router: r.clone(),
                destination: destination.clone(),
                nexthop: nexthop.clone(),
            }),
            Self::SetHa { .. } => self.set_ha(),
            Self::List => list(K::Router),
            Self::Show { router: r } => show(K::Router, r),
            Self::Delete { router: r } => delete(K::Router, r),
        }
    }

    fn set_ha(&self) -> Asked {
        let Self::SetHa {
            router,
            priorities,
            preempt,
            no_preempt,
            preempt_delay,
        } = self
        else {
            unreachable!("set_ha is called for SetHa only")
        };
        let preempt = match (preempt, no_preempt) {
            (_, true) => Some(false),
            (true, _) => Some(true),
            _ => None,
        };
        one(R::RouterSetHa {
            router: router.clone(),
            priorities: priorities.clone(),
            preempt,
            preempt_delay: preempt_delay.clone(),
        })
    }
}

/// Reads a file of at most `limit` bytes as text, or says why not.
fn read_text(what: &str, path: &Path, limit: usize) -> anyhow::Result<String> {
    use anyhow::Context;
    use std::io::Read;
    let file = std::fs::File::open(path).with_context(|| format!("{what} {}", path.display()))?;
    let mut bytes = Vec::new();
    file.take(limit as u64 + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {what} {}", path.display()))?;
    if bytes.len() > limit {
        anyhow::bail!("{what} {} is larger than {limit} bytes", path.display());
    }
    String::from_utf8(bytes).with_context(|| format!("{what} {} is not UTF-8 text", path.display()))
}

impl PortMetadataArgs {
    /// The host name, the user data and the keys, read from their files.
    fn read(&self) -> anyhow::Result<(Option<String>, Option<String>, Vec<String>)> {
        let user_data = self
            .user_data
            .as_deref()
            .map(|p| read_text("user data", p, mesh_proto::MAX_USER_DATA_BYTES))
            .transpose()?;
        let keys = self
            .ssh_keys
            .iter()
            .map(|p| {
                read_text("public key", p, mesh_proto::MAX_SSH_KEY_BYTES + 1)
                    .map(|k| k.trim_end_matches(['\n', '\r']).to_string())
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok((self.hostname.clone(), user_data, keys))
    }
}

impl PortCommand {
    fn request(&self) -> anyhow::Result<Asked> {
        Ok(match self {
            Self::Create {
                name,
                network,
                ip,
                mac,
                device,
                metadata,
            } => {
                let (hostname, user_data, ssh_keys) = metadata.read()?;
                one(R::PortCreate {
                    name: name.clone(),
                    network: network.clone(),
                    ip: ip.clone(),
                    mac: mac.clone(),
                    device: device.clone(),
                    metadata: mesh_proto::PortMetadata {
                        hostname,
                        user_data,
                        ssh_keys,
                    },
                })
            }
            Self::Set { port, metadata } => {
                let (hostname, user_data, ssh_keys) = metadata.read()?;
                if hostname.is_none() && user_data.is_none() && ssh_keys.is_empty() {
                    anyhow::bail!("nothing to set: give --hostname, --user-data or --ssh-key");
                }
                let keys_given = !ssh_keys.is_empty();
                one(R::PortSet {
                    port: port.clone(),
                    hostname,
                    user_data,
                    ssh_keys: keys_given.then_some(ssh_keys),
                })
            }
            Self::Delete { port } => delete(K::Port, port),
            Self::List { host } => (
                R::List {
                    kind: K::Port,
                    host: host.clone(),
                },
                Some(K::Port),
            ),
            Self::Show { port } => show(K::Port, port),
        })
    }
}

impl FipCommand {
    fn request(&self) -> Asked {
        match self {
            Self::Create {
                external_network,
                ip,
            } => one(R::FipCreate {
                external_network: external_network.clone(),
                ip: ip.clone(),
            }),
            Self::Associate { fip, port } => one(R::FipAssociate {
                fip: fip.clone(),
                port: port.clone(),
            }),
            Self::Disassociate { fip } => one(R::FipDisassociate { fip: fip.clone() }),
            Self::Delete { fip } => delete(K::FloatingIp, fip),
            Self::List => list(K::FloatingIp),
            Self::Show { fip } => show(K::FloatingIp, fip),
        }
    }
}
