//! `testbed` will own the sealed namespace lab (`dvrmesh-lab`): an underlay, an external network
//! with an upstream router and an internet host, node namespaces running real agents, VMs, the
//! scenario tests and chaos verbs.
//!
//! Nothing is implemented here yet; until the lab exists, `scripts/demo.sh` starts a local
//! three-agent cluster on 127.0.0.1.
#![forbid(unsafe_code)]
