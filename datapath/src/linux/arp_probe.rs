//! "Who answers for this address?": one ARP request on a device of the calling thread's network
//! namespace, and the distinct MACs that reply within a window. The lab's chaos tests use it from
//! the external side to check that at most one node answers for a router's external IP.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

const ETH_P_ARP: u16 = 0x0806;
/// Every protocol: such a socket sees frames on a bridge port before the bridge takes them, so a
/// probe works from an interface enslaved to a bridge (an ARP-only socket would see nothing there).
const ETH_P_ALL: u16 = 0x0003;

/// Sends one ARP request for `target` from `dev` (MAC `src_mac`, address `src_ip`) and returns the
/// distinct MACs that answer within `wait`, in order of arrival.
pub fn who_has(
    dev: &str,
    src_mac: [u8; 6],
    src_ip: Ipv4Addr,
    target: Ipv4Addr,
    wait: Duration,
) -> Result<Vec<String>, String> {
    let name = std::ffi::CString::new(dev).map_err(|_| format!("bad device name {dev:?}"))?;
    // SAFETY: plain libc calls on a socket this function owns and closes.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    if index == 0 {
        return Err(format!("no device {dev}"));
    }
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW,
            i32::from(ETH_P_ALL.to_be()),
        )
    };
    if fd < 0 {
        return Err(format!(
            "AF_PACKET socket: {}",
            std::io::Error::last_os_error()
        ));
    }
    let result = (|| {
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ALL.to_be();
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&[0xff; 6]);
        let len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        if unsafe { libc::bind(fd, &addr as *const _ as *const libc::sockaddr, len) } < 0 {
            return Err(format!("bind: {}", std::io::Error::last_os_error()));
        }
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 20_000,
        };
        unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                &tv as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::timeval>() as u32,
            )
        };
        let mut frame = Vec::with_capacity(42);
        frame.extend_from_slice(&[0xff; 6]);
        frame.extend_from_slice(&src_mac);
        frame.extend_from_slice(&ETH_P_ARP.to_be_bytes());
        frame.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
        frame.extend_from_slice(&src_mac);
        frame.extend_from_slice(&src_ip.octets());
        frame.extend_from_slice(&[0; 6]);
        frame.extend_from_slice(&target.octets());
        let sent = unsafe {
            libc::sendto(
                fd,
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &addr as *const _ as *const libc::sockaddr,
                len,
            )
        };
        if sent < 0 {
            return Err(format!("send: {}", std::io::Error::last_os_error()));
        }
        let mut macs: Vec<String> = Vec::new();
        let end = Instant::now() + wait;
        let mut buf = [0u8; 128];
        while Instant::now() < end {
            let n = unsafe { libc::recv(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len(), 0) };
            if n < 42 {
                continue;
            }
            let f = &buf[..n as usize];
            let is_reply = f[12..14] == ETH_P_ARP.to_be_bytes() && f[20..22] == [0, 2];
            if is_reply && f[28..32] == target.octets() {
                let mac = f[22..28]
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":");
                if !macs.contains(&mac) {
                    macs.push(mac);
                }
            }
        }
        Ok(macs)
    })();
    unsafe { libc::close(fd) };
    result
}

/// The MAC address of `dev` in the calling thread's network namespace.
pub fn interface_mac(dev: &str) -> Result<[u8; 6], String> {
    if dev.is_empty() || dev.len() >= libc::IFNAMSIZ {
        return Err(format!("bad device name {dev:?}"));
    }
    // SAFETY: an ioctl on a socket this function owns, with a zeroed ifreq holding the name.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(dev.bytes()) {
        *d = s as libc::c_char;
    }
    let rc = unsafe { libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut req) };
    let err = std::io::Error::last_os_error();
    unsafe { libc::close(fd) };
    if rc < 0 {
        return Err(format!("reading the MAC of {dev}: {err}"));
    }
    let data = unsafe { req.ifr_ifru.ifru_hwaddr.sa_data };
    let mut mac = [0u8; 6];
    for (m, d) in mac.iter_mut().zip(data.iter()) {
        *m = *d as u8;
    }
    Ok(mac)
}

/// Whether `target` answers an ARP probe (sender address 0.0.0.0, as duplicate address
/// detection does, so this host needs no address on `dev`) within `wait`. The request is sent up
/// to three times, a third of `wait` apart, so one lost frame is not a dead gateway.
pub fn answers(dev: &str, target: Ipv4Addr, wait: Duration) -> Result<bool, String> {
    let mac = interface_mac(dev)?;
    for _ in 0..3 {
        if !who_has(dev, mac, Ipv4Addr::UNSPECIFIED, target, wait / 3)?.is_empty() {
            return Ok(true);
        }
    }
    Ok(false)
}
