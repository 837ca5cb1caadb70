//! A DHCP server's socket on one port device: an `AF_PACKET` socket bound to the device, with a
//! classic BPF filter that lets only IPv4 UDP to port 67 through, and that sends whole Ethernet
//! frames out of that device alone.
//!
//! Bound to a bridge port (a VM's tap or veth), it sees what the VM sends before the bridge takes
//! it (an `ETH_P_ALL` socket is served before the bridge's handler), so a request's port is the
//! device it came in on, whatever MAC it claims; and what it sends goes to that VM only, never
//! through the bridge to other ports or the VXLAN device. It ignores what goes out of the device
//! (to the VM): the kernel would otherwise copy every such frame for the socket before the
//! filter drops it, a cost each small packet to the VM paid.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Every protocol: a protocol-specific socket would see nothing on a bridge port.
const ETH_P_ALL: u16 = 0x0003;
/// Largest frame read: DHCP messages are far smaller; longer ones are cut and then refused.
pub const MAX_FRAME: usize = 1600;

/// `udp dst port 67` over Ethernet, unfragmented IPv4 (as `tcpdump -dd` compiles it).
const FILTER: [libc::sock_filter; 11] = [
    op(0x28, 0, 0, 12),     // ldh [12]          ethertype
    op(0x15, 0, 8, 0x0800), // jeq IPv4
    op(0x30, 0, 0, 23),     // ldb [23]          protocol
    op(0x15, 0, 6, 17),     // jeq UDP
    op(0x28, 0, 0, 20),     // ldh [20]          flags + fragment offset
    op(0x45, 4, 0, 0x1fff), // jset fragment offset → drop
    op(0xb1, 0, 0, 14),     // ldxb 4*([14]&0xf) IP header length
    op(0x48, 0, 0, 16),     // ldh [x + 16]      UDP destination port
    op(0x15, 0, 1, 67),     // jeq 67
    op(0x06, 0, 0, 0x40000),
    op(0x06, 0, 0, 0),
];

const fn op(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// One received frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    /// Bytes written into the buffer.
    pub len: usize,
    /// Whether the frame was sent out of the device (to the VM, e.g. flooded by the bridge from
    /// another port) rather than received from it.
    pub outgoing: bool,
}

/// A non-blocking packet socket bound to one device of the calling thread's network namespace.
#[derive(Debug)]
pub struct DhcpSocket {
    fd: OwnedFd,
    ifindex: i32,
}

impl DhcpSocket {
    /// Opens the socket on `dev`; an error when the device does not exist (yet).
    pub fn open(dev: &str) -> io::Result<Self> {
        let name = std::ffi::CString::new(dev)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "device name with NUL"))?;
        // SAFETY: a pure libc lookup on a NUL-terminated string.
        let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
        if index == 0 {
            return Err(io::Error::last_os_error());
        }
        let ifindex = i32::try_from(index)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "interface index"))?;
        // SAFETY: creates a socket; its descriptor is owned by `fd` at once.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                i32::from(ETH_P_ALL.to_be()),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let sock = DhcpSocket { fd, ifindex };
        sock.attach_filter()?;
        sock.ignore_outgoing()?;
        let addr = sock.address();
        // SAFETY: `addr` is a valid sockaddr_ll of the length passed.
        let rc = unsafe {
            libc::bind(
                sock.fd.as_raw_fd(),
                &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                sockaddr_len(),
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sock)
    }

    fn attach_filter(&self) -> io::Result<()> {
        let prog = libc::sock_fprog {
            len: FILTER.len() as u16,
            filter: FILTER.as_ptr() as *mut libc::sock_filter,
        };
        // The kernel copies the program during the call; FILTER is 'static.
        self.set_option(libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &prog)
    }

    /// Asks the kernel not to hand the socket frames sent out of the device (Linux 4.20 and
    /// later; before, `recv` still marks them and the server skips them).
    fn ignore_outgoing(&self) -> io::Result<()> {
        let on: libc::c_int = 1;
        match self.set_option(libc::SOL_PACKET, libc::PACKET_IGNORE_OUTGOING, &on) {
            Err(e) if e.raw_os_error() == Some(libc::ENOPROTOOPT) => Ok(()),
            other => other,
        }
    }

    /// Sets one socket option to `value`.
    fn set_option<T>(&self, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
        // SAFETY: `value` is valid for `size_of::<T>()` bytes during the call, which copies it.
        let rc = unsafe {
            libc::setsockopt(
                self.fd.as_raw_fd(),
                level,
                name,
                value as *const T as *const libc::c_void,
                std::mem::size_of::<T>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn address(&self) -> libc::sockaddr_ll {
        // SAFETY: sockaddr_ll is plain data; all zeroes is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_protocol = ETH_P_ALL.to_be();
        addr.sll_ifindex = self.ifindex;
        addr
    }

    /// Reads one frame; `WouldBlock` when none is waiting.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        let mut from = self.address();
        let mut len = sockaddr_len();
        // SAFETY: `buf` and `from` are valid for the lengths passed.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr() as *mut libc::c_void,
                buf.len(),
                libc::MSG_TRUNC,
                &mut from as *mut libc::sockaddr_ll as *mut libc::sockaddr,
                &mut len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Received {
            // MSG_TRUNC gives the frame's real length; a longer frame than `buf` is reported
            // as such so the caller can refuse it.
            len: n as usize,
            outgoing: from.sll_pkttype == libc::PACKET_OUTGOING,
        })
    }

    /// Sends one whole Ethernet frame out of the device.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        let addr = self.address();
        // SAFETY: `frame` and `addr` are valid for the lengths passed.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                0,
                &addr as *const libc::sockaddr_ll as *const libc::sockaddr,
                sockaddr_len(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsRawFd for DhcpSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

fn sockaddr_len() -> libc::socklen_t {
    std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::linux::test_support::in_fresh_netns;
    use std::time::{Duration, Instant};

    fn ip(args: &[&str]) {
        let out = std::process::Command::new("ip")
            .args(args)
            .output()
            .expect("run ip");
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    }

    /// A broadcast Ethernet frame holding IPv4 UDP from port 68 to 67 (what the filter passes).
    fn request_frame() -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend([0x02, 0, 0, 0, 0, 1, 0x08, 0x00]);
        // IPv4: version 4, IHL 5, total length 28 + 4, no fragment, TTL 64, UDP.
        f.extend([
            0x45, 0, 0, 32, 0, 0, 0, 0, 64, 17, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255,
        ]);
        // UDP 68 → 67, length 12, a 4-byte payload.
        f.extend([0, 68, 0, 67, 0, 12, 0, 0, 1, 2, 3, 4]);
        f
    }

    /// The frames `sock` reads within `wait`.
    fn drain(sock: &DhcpSocket, wait: Duration) -> Vec<Received> {
        let (mut got, mut buf, until) = (Vec::new(), [0u8; MAX_FRAME], Instant::now() + wait);
        while Instant::now() < until {
            match sock.recv(&mut buf) {
                Ok(r) => got.push(r),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("recv: {e}"),
            }
        }
        got
    }

    #[test]
    fn the_socket_reads_requests_from_the_vm_and_not_frames_sent_to_it() {
        in_fresh_netns(|| {
            ip(&["link", "add", "tap0", "type", "veth", "peer", "name", "vm0"]);
            ip(&["link", "set", "tap0", "up"]);
            ip(&["link", "set", "vm0", "up"]);
            let server = DhcpSocket::open("tap0").expect("open on tap0");
            // A frame out of tap0 (towards the VM), as the bridge floods one.
            let other = DhcpSocket::open("tap0").expect("second socket on tap0");
            other.send(&request_frame()).expect("send out of tap0");
            let seen = drain(&server, Duration::from_millis(200));
            assert!(
                seen.is_empty(),
                "frames sent to the VM reached the server: {seen:?}"
            );
            // A request from the VM.
            let vm = DhcpSocket::open("vm0").expect("open on vm0");
            vm.send(&request_frame()).expect("send from the VM");
            let seen = drain(&server, Duration::from_millis(200));
            assert_eq!(seen.len(), 1, "{seen:?}");
            assert!(!seen[0].outgoing);
            assert_eq!(seen[0].len, request_frame().len());
        });
    }
}
