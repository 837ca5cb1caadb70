//! Gratuitous ARP: when an address appears on this node (a FIP served here, a router's external
//! or SNAT address), tell the segment at once, so neighbours stop sending to where it was before.
//! Sent from a thread inside the namespace through a raw packet socket bound to the device.

use std::fs::File;
use std::net::Ipv4Addr;

use super::netns;

/// How many announcements are sent (back to back; ARP caches take the first one).
const COUNT: usize = 2;

/// The ARP request frame announcing `ip` at `mac`: sender and target IP both `ip`, broadcast.
pub(crate) fn frame(mac: [u8; 6], ip: Ipv4Addr) -> [u8; 42] {
    let mut f = [0u8; 42];
    f[0..6].copy_from_slice(&[0xff; 6]);
    f[6..12].copy_from_slice(&mac);
    f[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
    f[14..16].copy_from_slice(&1u16.to_be_bytes()); // Ethernet
    f[16..18].copy_from_slice(&0x0800u16.to_be_bytes()); // IPv4
    f[18] = 6;
    f[19] = 4;
    f[20..22].copy_from_slice(&1u16.to_be_bytes()); // request
    f[22..28].copy_from_slice(&mac);
    f[28..32].copy_from_slice(&ip.octets());
    // target MAC stays zero
    f[38..42].copy_from_slice(&ip.octets());
    f
}

/// Sends gratuitous ARP for each `(ifindex, mac, ip)` from one thread inside `ns`, through one
/// send-only packet socket.
pub(crate) fn announce_all(
    ns: &File,
    label: &str,
    items: &[(u32, [u8; 6], Ipv4Addr)],
) -> Result<(), String> {
    if items.is_empty() {
        return Ok(());
    }
    let frames: Vec<(u32, [u8; 42])> = items
        .iter()
        .map(|(i, m, ip)| (*i, frame(*m, *ip)))
        .collect();
    netns::in_netns(ns, label, move || send_all(&frames)).map_err(|e| e.to_string())?
}

fn send_all(frames: &[(u32, [u8; 42])]) -> Result<(), String> {
    // Protocol 0: a send-only socket registers no receive hook, so closing it does not wait for an
    // RCU grace period (~10 ms) as a socket opened for ETH_P_ARP would.
    // SAFETY: plain socket(2) call; the descriptor is closed below on every path.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    if fd < 0 {
        return Err(format!(
            "packet socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    let mut result = Ok(());
    'frames: for (ifindex, frame) in frames {
        // SAFETY: sockaddr_ll is plain data; zeroed is a valid value for every field.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = (libc::ETH_P_ARP as u16).to_be();
        addr.sll_ifindex = *ifindex as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        for _ in 0..COUNT {
            // SAFETY: `frame` outlives the call and its length is passed; `addr` is a valid
            // sockaddr_ll of the size given.
            let n = unsafe {
                libc::sendto(
                    fd,
                    frame.as_ptr().cast(),
                    frame.len(),
                    0,
                    (&addr as *const libc::sockaddr_ll).cast(),
                    std::mem::size_of::<libc::sockaddr_ll>() as u32,
                )
            };
            if n < 0 {
                result = Err(format!("sendto: {}", std::io::Error::last_os_error()));
                break 'frames;
            }
        }
    }
    // SAFETY: `fd` is the descriptor opened above and not used afterwards.
    unsafe { libc::close(fd) };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_is_a_broadcast_arp_request_for_itself() {
        let f = frame([0xfa, 0x16, 0x3e, 0, 0, 1], Ipv4Addr::new(203, 0, 113, 50));
        assert_eq!(&f[0..6], &[0xff; 6]);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1]);
        assert_eq!(&f[28..32], &[203, 0, 113, 50]);
        assert_eq!(&f[38..42], &[203, 0, 113, 50]);
        assert_eq!(&f[32..38], &[0; 6]);
    }
}
