//! The cluster PKI: issuing the CA and node certificates offline ([`issue`]), reading a node's
//! identity and role from its certificate ([`identity`]), operator credentials
//! ([`operator`]), the credentials and TLS configurations of the
//! transport ([`credentials`]), owner signatures ([`signing`]), the seal every published gossip
//! value carries ([`sealed`]), and revocation: the CA's list ([`revoke`]) and the agent's
//! verifiers that follow it ([`crl`]); the CA's record of what it issued ([`issued`]).

pub mod ca;
pub mod credentials;
pub mod crl;
pub mod identity;
pub mod issue;
pub mod issued;
pub mod operator;
pub mod revoke;
pub mod sealed;
pub mod signing;

pub use credentials::{Credentials, ALPN, ALPN_LINKED};
pub use identity::{node_id_from_cert, operator_from_cert, peer_node_id, Role};
pub use issue::{
    init_ca, issue_node_cert, issue_operator_cert, operator_credential_file, CA_CERT, CA_KEY,
    DEFAULT_CA_DAYS, DEFAULT_NODE_CERT_DAYS, NODE_CERT, NODE_KEY,
};
pub use signing::{PeerCerts, Signer};
