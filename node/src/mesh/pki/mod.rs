//! The cluster PKI: issuing the CA and node certificates offline ([`issue`]), reading a node's
//! identity from its certificate ([`identity`]), the credentials and TLS configurations of the
//! transport ([`credentials`]), owner signatures ([`signing`]), the seal every published gossip
//! value carries ([`sealed`]), and revocation: the CA's list ([`revoke`]) and the agent's
//! verifiers that follow it ([`crl`]).

pub mod ca;
pub mod credentials;
pub mod crl;
pub mod identity;
pub mod issue;
pub mod revoke;
pub mod sealed;
pub mod signing;

pub use credentials::{Credentials, ALPN};
pub use identity::{node_id_from_cert, peer_node_id};
pub use issue::{
    init_ca, issue_node_cert, CA_CERT, CA_KEY, DEFAULT_CA_DAYS, DEFAULT_NODE_CERT_DAYS, NODE_CERT,
    NODE_KEY,
};
pub use signing::{PeerCerts, Signer};
