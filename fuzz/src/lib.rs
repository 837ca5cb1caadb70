//! What the fuzz targets share: the fixture PKI (a cluster CA and one node, committed under
//! `fixtures/` and written by `examples/seeds.rs`), the node lives the gossip targets speak as,
//! and a tokio runtime for the API reader.
//!
//! Nothing here decodes: the targets call the decoders the agent runs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use chitchat::ChitchatId;
use dvrmesh_node::mesh::pki::{Credentials, PeerCerts, Signer};
use dvrmesh_node::mesh::trust::Trust;
use mesh_proto::NodeId;

/// The receiving node's id in the gossip targets.
pub const ME: &str = "fuzz-me";
/// The certified sender's id (its certificate is in `fixtures/`).
pub const PEER: &str = "fuzz-a";
/// Validity of the fixture certificates, in days: long, so committed seeds stay anchored.
pub const FIXTURE_DAYS: u32 = 36_500;

/// The fixture directory.
pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures")
}

/// The receiving node's life.
pub fn me() -> ChitchatId {
    ChitchatId::new(ME.to_string(), 1, ([127, 0, 0, 1], 7000).into())
}

/// The sender's node life and address.
pub fn peer() -> ChitchatId {
    ChitchatId::new(PEER.to_string(), 1, peer_addr())
}

/// The sender's gossip address.
pub fn peer_addr() -> SocketAddr {
    ([127, 0, 0, 1], 7001).into()
}

/// The sender's certified node id.
pub fn peer_id() -> NodeId {
    NodeId::new(PEER).expect("a valid fixed node id")
}

/// The fixture credentials of the sender (loaded once).
pub fn credentials() -> &'static Credentials {
    static CREDS: OnceLock<Credentials> = OnceLock::new();
    CREDS.get_or_init(|| {
        let dir = fixtures();
        Credentials::load(
            &dir.join("ca/ca.pem"),
            &dir.join(format!("{PEER}/node.pem")),
            &dir.join(format!("{PEER}/node.key")),
        )
        .expect("the fixture PKI in fuzz/fixtures (run: cargo run --example seeds)")
    })
}

/// The sender's signer (to write seeds).
pub fn signer() -> Signer {
    credentials().signer().expect("the fixture key signs")
}

/// The verifier of published certificates, as every agent has one (shared: it caches checks).
pub fn peer_certs() -> &'static PeerCerts {
    static CERTS: OnceLock<PeerCerts> = OnceLock::new();
    CERTS.get_or_init(|| credentials().peer_certs().expect("fixture verifier"))
}

/// A fresh trust filter for the receiving node (fresh per input: no state leaks between runs).
pub fn trust() -> Trust {
    Trust::new(me(), peer_certs().clone())
}

/// The sender's public key, as its certificate carries it.
pub fn peer_key() -> &'static [u8] {
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    KEY.get_or_init(|| {
        let cert = credentials().published_cert().expect("fixture cert");
        peer_certs()
            .public_key(&cert)
            .expect("fixture cert verifies")
            .1
    })
}

/// A current-thread runtime for the async readers.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a current-thread runtime")
    })
}

/// The roots of the fixture CA, for the revocation list target.
pub fn roots() -> Arc<rustls::RootCertStore> {
    static ROOTS: OnceLock<Arc<rustls::RootCertStore>> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            use rustls::pki_types::pem::PemObject;
            let mut roots = rustls::RootCertStore::empty();
            let pem = fixtures().join("ca/ca.pem");
            for c in rustls::pki_types::CertificateDer::pem_file_iter(&pem).expect("fixture CA") {
                roots.add(c.expect("fixture CA pem")).expect("fixture CA");
            }
            Arc::new(roots)
        })
        .clone()
}

/// The lease the DHCP target answers with: a port with a gateway, extra routes, DNS and a domain,
/// as a subnet with every option set gives it.
pub fn dhcp_lease() -> dvrmesh_node::dhcp::lease::Lease {
    let ip = |s: &str| s.parse().expect("a valid fixed address");
    dvrmesh_node::dhcp::lease::Lease {
        port: mesh_proto::ObjectId::new("port-fuzz").expect("a valid fixed id"),
        mac: DHCP_VM_MAC.parse().expect("a valid fixed MAC"),
        ip: ip("10.1.0.10"),
        cidr: "10.1.0.0/24".parse().expect("a valid fixed prefix"),
        server_ip: ip("10.1.0.1"),
        server_mac: "fa:16:3d:00:00:01".parse().expect("a valid fixed MAC"),
        router: Some(ip("10.1.0.1")),
        routes: vec![
            ("0.0.0.0/0".parse().expect("prefix"), ip("10.1.0.1")),
            ("192.0.2.0/24".parse().expect("prefix"), ip("10.1.0.254")),
        ],
        mtu: 1450,
        dns_servers: vec![ip("10.1.0.2")],
        domain: Some("lab.example".into()),
        hostname: "vm-1".into(),
        lease_secs: 600,
    }
}

/// The MAC of the DHCP target's port (its VM's).
pub const DHCP_VM_MAC: &str = "fa:16:3e:00:00:01";

/// The port the metadata target answers for: every optional field set (a FIP, user data, two
/// keys), so every path of the service has something to serve.
pub fn metadata_doc() -> dvrmesh_node::metadata::document::PortDoc {
    let ip = |s: &str| s.parse().expect("a valid fixed address");
    dvrmesh_node::metadata::document::PortDoc {
        id: mesh_proto::ObjectId::new("port-fuzz0000001").expect("a valid fixed id"),
        name: "vm-1".into(),
        hostname: "web-1".into(),
        node: NodeId::new("compute-1").expect("a valid fixed id"),
        mac: DHCP_VM_MAC.parse().expect("a valid fixed MAC"),
        ip: ip("10.1.0.10"),
        cidr: "10.1.0.0/24".parse().expect("a valid fixed prefix"),
        gateway: Some(ip("10.1.0.1")),
        network: mesh_proto::ObjectId::new("net-fuzz00000001").expect("a valid fixed id"),
        mtu: 1450,
        dns_servers: vec![ip("10.1.0.2")],
        public_ip: Some(ip("203.0.113.10")),
        user_data: Some("#cloud-config\nhostname: web-1\n".into()),
        ssh_keys: vec!["ssh-ed25519 AAAAfuzz one".into(), "ssh-rsa AAAAfuzz two".into()],
    }
}
