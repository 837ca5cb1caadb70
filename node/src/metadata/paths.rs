//! One request path in, one reply out (pure): OpenStack's `openstack/latest/…` and EC2's
//! `latest/meta-data/…` for the port a request comes from. Only `latest` is served; every other
//! path is a 404.

use serde_json::{json, Value};

use super::document::PortDoc;

/// A reply: status, content type and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body.
    pub body: String,
}

const TEXT: &str = "text/plain; charset=utf-8";
const JSON: &str = "application/json";

fn ok(body: String) -> Reply {
    Reply {
        status: 200,
        content_type: TEXT,
        body,
    }
}

/// A reply with `status` and a one-line reason.
pub fn error(status: u16, reason: &str) -> Reply {
    Reply {
        status,
        content_type: TEXT,
        body: format!("{reason}\n"),
    }
}

fn not_found() -> Reply {
    error(404, "not found")
}

fn lines(items: &[&str]) -> Reply {
    ok(items.iter().map(|i| format!("{i}\n")).collect())
}

/// The reply to `path` for `doc`'s port. Trailing slashes are ignored; `..` and empty segments
/// are not paths of this service (404).
pub fn respond(doc: &PortDoc, path: &str) -> Reply {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match parts.as_slice() {
        [""] => lines(&["latest", "openstack"]),
        ["openstack"] => lines(&["latest"]),
        ["openstack", "latest", rest @ ..] => openstack(doc, rest),
        ["latest"] => lines(&["meta-data/", "user-data"]),
        ["latest", "user-data"] => user_data(doc),
        ["latest", "meta-data", rest @ ..] => ec2(doc, rest),
        _ => not_found(),
    }
}

fn user_data(doc: &PortDoc) -> Reply {
    match &doc.user_data {
        Some(u) => Reply {
            status: 200,
            content_type: "application/octet-stream",
            body: u.clone(),
        },
        None => not_found(),
    }
}

fn openstack(doc: &PortDoc, rest: &[&str]) -> Reply {
    let json = |v: Value| Reply {
        status: 200,
        content_type: JSON,
        body: v.to_string(),
    };
    match rest {
        [] => {
            let mut items = vec!["meta_data.json", "network_data.json"];
            if doc.user_data.is_some() {
                items.push("user_data");
            }
            lines(&items)
        }
        ["meta_data.json"] => json(meta_data(doc)),
        ["network_data.json"] => json(network_data(doc)),
        ["user_data"] => user_data(doc),
        _ => not_found(),
    }
}

fn key_name(i: usize) -> String {
    format!("key-{i}")
}

/// OpenStack's `meta_data.json`.
fn meta_data(doc: &PortDoc) -> Value {
    let keys: serde_json::Map<String, Value> = doc
        .ssh_keys
        .iter()
        .enumerate()
        .map(|(i, k)| (key_name(i), Value::String(k.clone())))
        .collect();
    let key_list: Vec<Value> = doc
        .ssh_keys
        .iter()
        .enumerate()
        .map(|(i, k)| json!({"name": key_name(i), "type": "ssh", "data": k}))
        .collect();
    json!({
        "uuid": doc.id.as_str(),
        "name": doc.name,
        "hostname": doc.hostname,
        "availability_zone": doc.node.as_str(),
        "launch_index": 0,
        "public_keys": keys,
        "keys": key_list,
        "meta": {},
    })
}

/// OpenStack's `network_data.json`: one link, one IPv4 network, the DNS servers.
fn network_data(doc: &PortDoc) -> Value {
    let link = format!("tap-{}", doc.id.short());
    let routes: Vec<Value> = doc
        .gateway
        .iter()
        .map(|gw| json!({"network": "0.0.0.0", "netmask": "0.0.0.0", "gateway": gw.to_string()}))
        .collect();
    let services: Vec<Value> = doc
        .dns_servers
        .iter()
        .map(|d| json!({"type": "dns", "address": d.to_string()}))
        .collect();
    json!({
        "links": [{
            "id": link,
            "type": "phy",
            "ethernet_mac_address": doc.mac.to_string(),
            "mtu": doc.mtu,
            "vif_id": doc.id.as_str(),
        }],
        "networks": [{
            "id": "network0",
            "link": link,
            "type": "ipv4",
            "ip_address": doc.ip.to_string(),
            "netmask": netmask(doc.cidr.prefix()),
            "routes": routes,
            "network_id": doc.network.as_str(),
        }],
        "services": services,
    })
}

fn netmask(prefix: u8) -> String {
    let bits = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    std::net::Ipv4Addr::from(bits).to_string()
}

/// EC2's `latest/meta-data/…`.
fn ec2(doc: &PortDoc, rest: &[&str]) -> Reply {
    match rest {
        [] => {
            let mut items = vec![
                "hostname",
                "instance-id",
                "local-hostname",
                "local-ipv4",
                "mac",
                "placement/",
            ];
            if doc.public_ip.is_some() {
                items.push("public-ipv4");
            }
            if !doc.ssh_keys.is_empty() {
                items.push("public-keys/");
            }
            lines(&items)
        }
        ["instance-id"] => ok(doc.id.to_string()),
        ["hostname"] | ["local-hostname"] => ok(doc.hostname.clone()),
        ["local-ipv4"] => ok(doc.ip.to_string()),
        ["mac"] => ok(doc.mac.to_string()),
        ["public-ipv4"] => doc
            .public_ip
            .map_or_else(not_found, |ip| ok(ip.to_string())),
        ["placement"] => lines(&["availability-zone"]),
        ["placement", "availability-zone"] => ok(doc.node.to_string()),
        ["public-keys"] if !doc.ssh_keys.is_empty() => ok((0..doc.ssh_keys.len())
            .map(|i| format!("{i}={}\n", key_name(i)))
            .collect()),
        ["public-keys", i, rest @ ..] => public_key(doc, i, rest),
        _ => not_found(),
    }
}

fn public_key(doc: &PortDoc, index: &str, rest: &[&str]) -> Reply {
    let Some(key) = index
        .parse::<usize>()
        .ok()
        .filter(|i| i.to_string() == index)
        .and_then(|i| doc.ssh_keys.get(i))
    else {
        return not_found();
    };
    match rest {
        [] => lines(&["openssh-key"]),
        ["openssh-key"] => ok(format!("{key}\n")),
        _ => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mesh_proto::{NodeId, ObjectId};

    fn doc() -> PortDoc {
        PortDoc {
            id: ObjectId::new("port-0123456789ab").expect("id"),
            name: "vm1".into(),
            hostname: "web".into(),
            node: NodeId::new("compute-1").expect("node"),
            mac: "fa:16:3e:00:00:01".parse().expect("mac"),
            ip: "10.0.0.10".parse().expect("ip"),
            cidr: "10.0.0.0/24".parse().expect("cidr"),
            gateway: Some("10.0.0.1".parse().expect("gw")),
            network: ObjectId::new("net-1").expect("id"),
            mtu: 1400,
            dns_servers: vec!["10.0.0.2".parse().expect("dns")],
            public_ip: None,
            user_data: None,
            ssh_keys: vec![],
        }
    }

    fn body(d: &PortDoc, path: &str) -> String {
        let r = respond(d, path);
        assert_eq!(r.status, 200, "{path}: {r:?}");
        r.body
    }

    #[test]
    fn ec2_paths_name_the_port() {
        let mut d = doc();
        assert_eq!(
            body(&d, "/latest/meta-data/instance-id"),
            "port-0123456789ab"
        );
        assert_eq!(body(&d, "/latest/meta-data/local-ipv4"), "10.0.0.10");
        assert_eq!(body(&d, "/latest/meta-data/mac"), "fa:16:3e:00:00:01");
        assert_eq!(body(&d, "/latest/meta-data/hostname"), "web");
        assert_eq!(
            body(&d, "/latest/meta-data/placement/availability-zone"),
            "compute-1"
        );
        assert_eq!(respond(&d, "/latest/meta-data/public-ipv4").status, 404);
        assert!(!body(&d, "/latest/meta-data/").contains("public-ipv4"));
        d.public_ip = Some("203.0.113.5".parse().expect("ip"));
        assert_eq!(body(&d, "/latest/meta-data/public-ipv4"), "203.0.113.5");
        assert!(body(&d, "/latest/meta-data/").contains("public-ipv4\n"));
    }

    #[test]
    fn openstack_documents_are_json() {
        let d = doc();
        let m: Value =
            serde_json::from_str(&body(&d, "/openstack/latest/meta_data.json")).expect("json");
        assert_eq!(m["uuid"], "port-0123456789ab");
        assert_eq!(m["name"], "vm1");
        assert_eq!(m["hostname"], "web");
        assert_eq!(m["availability_zone"], "compute-1");
        let n: Value =
            serde_json::from_str(&body(&d, "/openstack/latest/network_data.json")).expect("json");
        assert_eq!(n["networks"][0]["ip_address"], "10.0.0.10");
        assert_eq!(n["networks"][0]["netmask"], "255.255.255.0");
        assert_eq!(n["networks"][0]["routes"][0]["gateway"], "10.0.0.1");
        assert_eq!(n["links"][0]["mtu"], 1400);
        assert_eq!(n["services"][0]["address"], "10.0.0.2");
    }

    #[test]
    fn user_data_and_keys_only_when_set() {
        let mut d = doc();
        assert_eq!(respond(&d, "/openstack/latest/user_data").status, 404);
        assert_eq!(respond(&d, "/latest/user-data").status, 404);
        assert_eq!(
            respond(&d, "/latest/meta-data/public-keys/0/openssh-key").status,
            404
        );
        d.user_data = Some("#cloud-config\n".into());
        d.ssh_keys = vec!["ssh-ed25519 AAAA a".into(), "ssh-ed25519 BBBB b".into()];
        assert_eq!(body(&d, "/openstack/latest/user_data"), "#cloud-config\n");
        assert_eq!(body(&d, "/latest/user-data"), "#cloud-config\n");
        assert_eq!(
            body(&d, "/latest/meta-data/public-keys/"),
            "0=key-0\n1=key-1\n"
        );
        assert_eq!(
            body(&d, "/latest/meta-data/public-keys/1/openssh-key"),
            "ssh-ed25519 BBBB b\n"
        );
        let m: Value =
            serde_json::from_str(&body(&d, "/openstack/latest/meta_data.json")).expect("json");
        assert_eq!(m["public_keys"]["key-0"], "ssh-ed25519 AAAA a");
    }

    #[test]
    fn anything_else_is_not_found() {
        let d = doc();
        for p in [
            "/openstack/2012-08-10/meta_data.json",
            "/latest/meta-data/../../etc/passwd",
            "/latest/meta-data/public-keys/01/openssh-key",
            "/latest/meta-data/public-keys/-1/openssh-key",
            "/latest//meta-data",
            "/nothing",
        ] {
            assert_eq!(respond(&d, p).status, 404, "{p}");
        }
        assert_eq!(body(&d, "/"), "latest\nopenstack\n");
    }
}
