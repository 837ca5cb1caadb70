//! A frame a VM sends on its port device, through what the node's DHCP server runs on it:
//! `dhcp::answer::answer` (Ethernet II, IPv4, UDP 68 → 67, the port's MAC, dhcproto's decoder,
//! the message type) against a fixed lease.
//!
//! Invariants: nothing panics; only a frame from the port's own MAC is answered; a reply comes
//! from the gateway's MAC and fits one Ethernet frame.
//!
//! dhcproto 0.15 checks some option lengths with `debug_assert!` only; `answer` decodes behind
//! `catch_unwind` and refuses such a message. libFuzzer's panic hook would abort before that
//! guard runs, so this target lets panics raised inside dhcproto unwind to it; any other panic
//! is a crash as in every target.
#![no_main]

use dvrmesh_node::dhcp::answer::answer;
use libfuzzer_sys::fuzz_target;

/// An Ethernet frame's largest size without a VLAN tag (1500 bytes of payload).
const ETHERNET_MAX: usize = 1514;

/// Lets panics raised inside dhcproto unwind to `answer`'s guard; every other panic goes to
/// libFuzzer's hook (which aborts: a crash).
fn let_dhcproto_panics_unwind() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let fuzzer_hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let in_dhcproto = info
                .location()
                .is_some_and(|l| l.file().contains("/dhcproto-"));
            if !in_dhcproto {
                fuzzer_hook(info);
            }
        }));
    });
}

fuzz_target!(|data: &[u8]| {
    let_dhcproto_panics_unwind();
    let lease = dvrmesh_fuzz::dhcp_lease();
    if let Ok(Some(reply)) = answer(&lease, data) {
        assert!(data.len() >= 14 && data[6..12] == lease.mac.octets());
        assert!(reply.len() <= ETHERNET_MAX, "a reply of {} bytes", reply.len());
        assert_eq!(reply[6..12], lease.server_mac.octets());
    }
});
