//! `mesh-proto` owns dvrmesh's domain model and its wire format.
//!
//! It holds the validated types every other crate speaks (node facts, networks, subnets, external
//! networks, routers, ports, floating IPs), the framing used on every socket, and the versioned
//! binary encoding of values carried in gossip. It performs no I/O and knows nothing of tokio,
//! sockets or the kernel.
//!
//! Every type is "parse, don't validate": constructors and deserialisation both run the same checks,
//! so a value that exists is a valid value. Every decoder takes a hard size limit.
#![forbid(unsafe_code)]
#![warn(missing_docs, unreachable_pub)]

mod codec;
mod election;
mod error;
mod frame;
pub mod hash;
mod ids;
mod net;
mod node;
mod record;
mod tenant;

pub use codec::{
    decode, decode_value, encode, encode_value, MAX_ENCODED_BYTES, MAX_VALUE_CHARS, WIRE_VERSION,
};
pub use election::{
    ElectionMessage, RestartNotice, SignedClaim, MAX_CLAIMS_PER_DATAGRAM, MAX_ELECTION_DATAGRAM,
    MAX_SIGNATURE_BYTES,
};
pub use error::Error;
pub use frame::{decode_frame, encode_frame, FrameHeader, MAX_FRAME_BYTES};
pub use ids::{Name, NodeId, ObjectId, SHORT_ID_CHARS};
pub use net::{Ipv4Cidr, Ipv4Range, MacAddr, Mtu, Vni};
pub use node::{dvr_mac_for, ExternalMapping, InterfaceName, NodeFacts, NodeMode, Priority};
pub use record::{
    record_key, AddressBlock, AddressClaim, BlockSpace, Hlc, HlcTimestamp, MacClaim, ObjectKind,
    OperatorSeal, Record, SnatClaim, TenantObject, UniqueClaim, UniqueValue, Version,
    MAX_BLOCK_LEN,
};
pub use tenant::{
    AddressPair, ExternalNetwork, ExternalNetworkSpec, ExtraRoute, FloatingIp, FloatingIpSpec,
    HaSettings, Network, NetworkSpec, Port, PortMetadata, PortSpec, Router, RouterGateway,
    RouterSpec, SnatPort, Subnet, SubnetDhcp, SubnetSpec, MAX_ADDRESS_PAIRS, MAX_DNS_SERVERS,
    MAX_DOMAIN_CHARS, MAX_FIXED_IPS, MAX_HOSTNAME_CHARS, MAX_PREEMPT_DELAY_MS,
    MAX_ROUTER_INTERFACES, MAX_ROUTER_ROUTES, MAX_SSH_KEYS, MAX_SSH_KEY_BYTES, MAX_USER_DATA_BYTES,
};
