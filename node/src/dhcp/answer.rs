//! One DHCP request frame in, at most one reply frame out: pure.
//!
//! Only what a VM on the port's own device may ask is answered: an Ethernet II frame from the
//! port's MAC, IPv4 UDP from port 68 to 67, a BOOTREQUEST for the same hardware address, not
//! relayed. DISCOVER gets an OFFER, REQUEST an ACK for the port's address (a NAK for any other),
//! INFORM an ACK without a lease; RELEASE and DECLINE need no answer (the lease is the port).

use std::net::Ipv4Addr;

use dhcproto::v4::{DhcpOption, HType, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Encodable};
use etherparse::{LinkSlice, NetSlice, PacketBuilder, SlicedPacket, TransportSlice};

use super::lease::Lease;

const SERVER_PORT: u16 = 67;
const CLIENT_PORT: u16 = 68;

/// Why a frame got no answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refused {
    /// Not IPv4 UDP from port 68 to port 67 in an untagged Ethernet II frame.
    NotDhcp,
    /// The DHCP message does not decode.
    Malformed,
    /// The frame's source or the client hardware address is not the port's MAC.
    ForeignMac,
    /// Relayed (a gateway address is set): a VM on the port's device never relays.
    Relayed,
    /// A BOOTREPLY, or a message type a server does not answer.
    NotARequest,
}

impl Refused {
    /// A short reason, for logs and counters.
    pub fn reason(self) -> &'static str {
        match self {
            Refused::NotDhcp => "not a DHCP request frame",
            Refused::Malformed => "malformed DHCP message",
            Refused::ForeignMac => "not the port's MAC",
            Refused::Relayed => "relayed",
            Refused::NotARequest => "not a client request",
        }
    }
}

/// The reply frame to `frame` received on `lease`'s port device, `Ok(None)` when a valid
/// message needs none.
pub fn answer(lease: &Lease, frame: &[u8]) -> Result<Option<Vec<u8>>, Refused> {
    let request = parse(lease, frame)?;
    let Some(kind) = reply_kind(lease, &request)? else {
        return Ok(None);
    };
    let reply = reply_message(lease, &request, kind);
    Ok(Some(reply_frame(lease, &request, kind, &reply)?))
}

/// The DHCP message of a frame from the port's VM.
fn parse(lease: &Lease, frame: &[u8]) -> Result<Message, Refused> {
    let p = SlicedPacket::from_ethernet(frame).map_err(|_| Refused::NotDhcp)?;
    let Some(LinkSlice::Ethernet2(eth)) = &p.link else {
        return Err(Refused::NotDhcp);
    };
    let (Some(NetSlice::Ipv4(_)), Some(TransportSlice::Udp(udp))) = (&p.net, &p.transport) else {
        return Err(Refused::NotDhcp);
    };
    if !p.link_exts.is_empty()
        || udp.source_port() != CLIENT_PORT
        || udp.destination_port() != SERVER_PORT
    {
        return Err(Refused::NotDhcp);
    }
    let mac = lease.mac.octets();
    if eth.source() != mac {
        return Err(Refused::ForeignMac);
    }
    let msg = decode(udp.payload())?;
    if msg.opcode() != Opcode::BootRequest {
        return Err(Refused::NotARequest);
    }
    // hlen first: the crate slices chaddr by it.
    if msg.htype() != HType::Eth || msg.hlen() != 6 || msg.chaddr() != mac {
        return Err(Refused::ForeignMac);
    }
    if !msg.giaddr().is_unspecified() {
        return Err(Refused::Relayed);
    }
    Ok(msg)
}

/// The DHCP message in `payload`. dhcproto 0.15 checks some option lengths with
/// `debug_assert!` only (e.g. option 81 shorter than 3 bytes, option 94 not 3 bytes), so a debug
/// build would panic on them; a panic while decoding is a refusal like any other error.
fn decode(payload: &[u8]) -> Result<Message, Refused> {
    match std::panic::catch_unwind(|| Message::from_bytes(payload)) {
        Ok(Ok(m)) => Ok(m),
        Ok(Err(_)) | Err(_) => Err(Refused::Malformed),
    }
}

/// What a reply is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Offer,
    Ack,
    Nak,
    /// ACK to an INFORM: configuration, no address, no lease time.
    InformAck,
}

fn reply_kind(lease: &Lease, msg: &Message) -> Result<Option<Kind>, Refused> {
    let opts = msg.opts();
    match opts.msg_type() {
        Some(MessageType::Discover) => Ok(Some(Kind::Offer)),
        Some(MessageType::Request) => {
            if let Some(DhcpOption::ServerIdentifier(id)) = opts.get(OptionCode::ServerIdentifier) {
                if *id != lease.server_ip {
                    // The client chose another server's offer.
                    return Ok(None);
                }
            }
            let wanted = match opts.get(OptionCode::RequestedIpAddress) {
                Some(DhcpOption::RequestedIpAddress(ip)) => *ip,
                _ => msg.ciaddr(),
            };
            Ok(Some(if wanted == lease.ip {
                Kind::Ack
            } else {
                Kind::Nak
            }))
        }
        Some(MessageType::Inform) => Ok(Some(Kind::InformAck)),
        Some(MessageType::Release) | Some(MessageType::Decline) => Ok(None),
        _ => Err(Refused::NotARequest),
    }
}

fn reply_message(lease: &Lease, req: &Message, kind: Kind) -> Message {
    let yiaddr = match kind {
        Kind::Offer | Kind::Ack => lease.ip,
        Kind::Nak | Kind::InformAck => Ipv4Addr::UNSPECIFIED,
    };
    let ciaddr = match kind {
        Kind::InformAck | Kind::Ack => req.ciaddr(),
        Kind::Offer | Kind::Nak => Ipv4Addr::UNSPECIFIED,
    };
    let mut m = Message::new_with_id(
        req.xid(),
        ciaddr,
        yiaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &lease.mac.octets(),
    );
    m.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_flags(req.flags());
    let opts = m.opts_mut();
    let msg_type = match kind {
        Kind::Offer => MessageType::Offer,
        Kind::Nak => MessageType::Nak,
        Kind::Ack | Kind::InformAck => MessageType::Ack,
    };
    opts.insert(DhcpOption::MessageType(msg_type));
    opts.insert(DhcpOption::ServerIdentifier(lease.server_ip));
    if matches!(kind, Kind::Offer | Kind::Ack) {
        opts.insert(DhcpOption::AddressLeaseTime(lease.lease_secs));
        opts.insert(DhcpOption::Renewal(lease.lease_secs / 2));
        opts.insert(DhcpOption::Rebinding(
            (u64::from(lease.lease_secs) * 7 / 8) as u32,
        ));
    }
    if kind != Kind::Nak {
        for o in configuration(lease) {
            opts.insert(o);
        }
    }
    m
}

/// The options that configure the VM: mask, broadcast, gateway, routes, MTU, DNS, host name.
fn configuration(lease: &Lease) -> Vec<DhcpOption> {
    let mask = Ipv4Addr::from(lease.cidr.mask());
    let mut out = vec![
        DhcpOption::SubnetMask(mask),
        DhcpOption::BroadcastAddr(lease.cidr.last()),
        DhcpOption::InterfaceMtu(lease.mtu),
        DhcpOption::Hostname(lease.hostname.clone()),
    ];
    if let Some(gw) = lease.router {
        out.push(DhcpOption::Router(vec![gw]));
    }
    let routes: Vec<(ipnet::Ipv4Net, Ipv4Addr)> = lease
        .routes
        .iter()
        .filter_map(|(dst, via)| {
            ipnet::Ipv4Net::new(dst.network(), dst.prefix())
                .ok()
                .map(|n| (n, *via))
        })
        .collect();
    if !routes.is_empty() {
        out.push(DhcpOption::ClasslessStaticRoute(routes));
    }
    if !lease.dns_servers.is_empty() {
        out.push(DhcpOption::DomainNameServer(lease.dns_servers.clone()));
    }
    if let Some(d) = &lease.domain {
        out.push(DhcpOption::DomainName(d.clone()));
    }
    out
}

/// The reply in a frame to the port's MAC (the socket sends it out of the port's device only).
/// IP destination: broadcast for a NAK or when the client asked for it, else the address the
/// client has or is offered.
fn reply_frame(
    lease: &Lease,
    req: &Message,
    kind: Kind,
    reply: &Message,
) -> Result<Vec<u8>, Refused> {
    let dst_ip = if kind == Kind::Nak || (req.ciaddr().is_unspecified() && req.flags().broadcast())
    {
        Ipv4Addr::BROADCAST
    } else if !req.ciaddr().is_unspecified() {
        req.ciaddr()
    } else {
        lease.ip
    };
    let payload = reply.to_vec().map_err(|_| Refused::Malformed)?;
    let builder = PacketBuilder::ethernet2(lease.server_mac.octets(), lease.mac.octets())
        .ipv4(lease.server_ip.octets(), dst_ip.octets(), 64)
        .udp(SERVER_PORT, CLIENT_PORT);
    let mut out = Vec::with_capacity(builder.size(payload.len()));
    builder
        .write(&mut out, &payload)
        .map_err(|_| Refused::Malformed)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dhcproto::v4::Flags;
    use mesh_proto::{MacAddr, ObjectId};
    use proptest::prelude::*;

    const VM: [u8; 6] = [0xfa, 0x16, 0x3e, 0, 0, 1];

    fn lease() -> Lease {
        Lease {
            port: ObjectId::new("p1").expect("id"),
            mac: MacAddr::new(VM).expect("mac"),
            ip: "10.1.0.10".parse().expect("ip"),
            cidr: "10.1.0.0/24".parse().expect("cidr"),
            server_ip: "10.1.0.1".parse().expect("ip"),
            server_mac: "fa:16:3d:00:00:01".parse().expect("mac"),
            router: Some("10.1.0.1".parse().expect("ip")),
            routes: vec![
                (
                    "0.0.0.0/0".parse().expect("c"),
                    "10.1.0.1".parse().expect("ip"),
                ),
                (
                    "192.0.2.0/24".parse().expect("c"),
                    "10.1.0.254".parse().expect("ip"),
                ),
            ],
            mtu: 1450,
            dns_servers: vec!["10.1.0.2".parse().expect("ip")],
            domain: Some("lab.example".into()),
            hostname: "vm-1".into(),
            lease_secs: 600,
        }
    }

    fn request(kind: MessageType, edit: impl FnOnce(&mut Message)) -> Message {
        let mut m = Message::new_with_id(
            0x1234,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::UNSPECIFIED,
            &VM,
        );
        m.opts_mut().insert(DhcpOption::MessageType(kind));
        edit(&mut m);
        m
    }

    fn frame_from(src: [u8; 6], src_ip: Ipv4Addr, payload: &[u8]) -> Vec<u8> {
        let b = PacketBuilder::ethernet2(src, [0xff; 6])
            .ipv4(src_ip.octets(), [255; 4], 64)
            .udp(CLIENT_PORT, SERVER_PORT);
        let mut out = Vec::new();
        b.write(&mut out, payload).expect("frame");
        out
    }

    fn frame(m: &Message) -> Vec<u8> {
        frame_from(VM, m.ciaddr(), &m.to_vec().expect("enc"))
    }

    /// The reply's IP destination and DHCP message.
    fn reply(m: &Message) -> (Ipv4Addr, Message) {
        let out = answer(&lease(), &frame(m))
            .expect("answered")
            .expect("a reply");
        let p = SlicedPacket::from_ethernet(&out).expect("parses");
        let Some(LinkSlice::Ethernet2(eth)) = &p.link else {
            panic!("not ethernet")
        };
        assert_eq!(eth.destination(), VM, "always to the port's MAC");
        let (Some(NetSlice::Ipv4(ip)), Some(TransportSlice::Udp(udp))) = (&p.net, &p.transport)
        else {
            panic!("not udp")
        };
        assert_eq!(ip.header().source_addr(), lease().server_ip);
        assert_eq!((udp.source_port(), udp.destination_port()), (67, 68));
        let msg = Message::from_bytes(udp.payload()).expect("dhcp");
        (ip.header().destination_addr(), msg)
    }

    fn opt(m: &Message, code: OptionCode) -> Option<&DhcpOption> {
        m.opts().get(code)
    }

    #[test]
    fn discover_gets_an_offer_with_the_whole_configuration() {
        let (dst, offer) = reply(&request(MessageType::Discover, |_| {}));
        assert_eq!(dst, lease().ip);
        assert_eq!(offer.opcode(), Opcode::BootReply);
        assert_eq!(offer.xid(), 0x1234);
        assert_eq!(offer.yiaddr(), lease().ip);
        assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
        let mask: Ipv4Addr = "255.255.255.0".parse().expect("ip");
        assert_eq!(
            opt(&offer, OptionCode::SubnetMask),
            Some(&DhcpOption::SubnetMask(mask))
        );
        assert_eq!(
            opt(&offer, OptionCode::Router),
            Some(&DhcpOption::Router(vec![lease().server_ip]))
        );
        assert_eq!(
            opt(&offer, OptionCode::InterfaceMtu),
            Some(&DhcpOption::InterfaceMtu(1450))
        );
        assert_eq!(
            opt(&offer, OptionCode::AddressLeaseTime),
            Some(&DhcpOption::AddressLeaseTime(600))
        );
        assert_eq!(
            opt(&offer, OptionCode::Renewal),
            Some(&DhcpOption::Renewal(300))
        );
        assert_eq!(
            opt(&offer, OptionCode::Rebinding),
            Some(&DhcpOption::Rebinding(525))
        );
        let Some(DhcpOption::ClasslessStaticRoute(routes)) =
            opt(&offer, OptionCode::ClasslessStaticRoute)
        else {
            panic!("no option 121")
        };
        assert_eq!(routes.len(), 2);
        assert_eq!(routes[1].0.to_string(), "192.0.2.0/24");
        assert_eq!(routes[1].1, "10.1.0.254".parse::<Ipv4Addr>().expect("ip"));
        assert!(opt(&offer, OptionCode::DomainNameServer).is_some());
        assert_eq!(
            opt(&offer, OptionCode::DomainName),
            Some(&DhcpOption::DomainName("lab.example".into()))
        );
        assert_eq!(
            opt(&offer, OptionCode::Hostname),
            Some(&DhcpOption::Hostname("vm-1".into()))
        );
    }

    #[test]
    fn requests_are_acked_for_the_port_address_only() {
        let want = |ip: &str| {
            request(MessageType::Request, |m| {
                m.opts_mut()
                    .insert(DhcpOption::RequestedIpAddress(ip.parse().expect("ip")));
                m.opts_mut()
                    .insert(DhcpOption::ServerIdentifier(lease().server_ip));
            })
        };
        let (_, ack) = reply(&want("10.1.0.10"));
        assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
        assert_eq!(ack.yiaddr(), lease().ip);
        let (dst, nak) = reply(&want("10.1.0.99"));
        assert_eq!(nak.opts().msg_type(), Some(MessageType::Nak));
        assert_eq!(dst, Ipv4Addr::BROADCAST);
        assert!(opt(&nak, OptionCode::Router).is_none());
        // A renewal: ciaddr set, no requested address; answered to the client's address.
        let renew = request(MessageType::Request, |m| {
            m.set_ciaddr(lease().ip);
        });
        let (dst, ack) = reply(&renew);
        assert_eq!(
            (dst, ack.opts().msg_type()),
            (lease().ip, Some(MessageType::Ack))
        );
        // The broadcast bit asks for a broadcast reply.
        let (dst, _) = reply(&request(MessageType::Discover, |m| {
            m.set_flags(Flags::default().set_broadcast());
        }));
        assert_eq!(dst, Ipv4Addr::BROADCAST);
        // INFORM: configuration, no address, no lease.
        let (_, inform) = reply(&request(MessageType::Inform, |m| {
            m.set_ciaddr(lease().ip);
        }));
        assert_eq!(inform.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert!(opt(&inform, OptionCode::AddressLeaseTime).is_none());
        assert!(opt(&inform, OptionCode::SubnetMask).is_some());
    }

    #[test]
    fn what_needs_no_answer_gets_none() {
        for kind in [MessageType::Release, MessageType::Decline] {
            let m = request(kind, |_| {});
            assert_eq!(answer(&lease(), &frame(&m)), Ok(None));
        }
        let other_server = request(MessageType::Request, |m| {
            m.opts_mut().insert(DhcpOption::ServerIdentifier(
                "10.1.0.77".parse().expect("ip"),
            ));
        });
        assert_eq!(answer(&lease(), &frame(&other_server)), Ok(None));
    }

    #[test]
    fn other_macs_relays_replies_and_junk_are_refused() {
        let discover = request(MessageType::Discover, |_| {});
        let payload = discover.to_vec().expect("enc");
        let spoofed = frame_from([0xfa, 0x16, 0x3e, 0, 0, 2], Ipv4Addr::UNSPECIFIED, &payload);
        assert_eq!(answer(&lease(), &spoofed), Err(Refused::ForeignMac));
        let mut other_chaddr = discover.clone();
        other_chaddr.set_chaddr(&[0xfa, 0x16, 0x3e, 0, 0, 2]);
        assert_eq!(
            answer(&lease(), &frame(&other_chaddr)),
            Err(Refused::ForeignMac)
        );
        let mut relayed = discover.clone();
        relayed.set_giaddr(Ipv4Addr::new(10, 9, 9, 9));
        assert_eq!(answer(&lease(), &frame(&relayed)), Err(Refused::Relayed));
        let mut a_reply = discover.clone();
        a_reply.set_opcode(Opcode::BootReply);
        assert_eq!(
            answer(&lease(), &frame(&a_reply)),
            Err(Refused::NotARequest)
        );
        let no_type = request(MessageType::Discover, |m| {
            m.opts_mut().remove(OptionCode::MessageType);
        });
        assert_eq!(
            answer(&lease(), &frame(&no_type)),
            Err(Refused::NotARequest)
        );
        // hlen beyond chaddr's 16 bytes (byte 2 of the message): refused, not a panic.
        let mut bad_hlen = payload.clone();
        bad_hlen[2] = 255;
        let f = frame_from(VM, Ipv4Addr::UNSPECIFIED, &bad_hlen);
        assert_eq!(answer(&lease(), &f), Err(Refused::ForeignMac));
        let f = frame_from(VM, Ipv4Addr::UNSPECIFIED, &payload[..100]);
        assert_eq!(answer(&lease(), &f), Err(Refused::Malformed));
        assert_eq!(answer(&lease(), &[]), Err(Refused::NotDhcp));
    }

    proptest! {
        #[test]
        fn random_frames_and_payloads_never_panic(
            bytes in proptest::collection::vec(any::<u8>(), 0..700),
            cut in 0usize..400,
            flip in any::<(usize, u8)>(),
        ) {
            let _ = answer(&lease(), &bytes);
            let _ = answer(&lease(), &frame_from(VM, Ipv4Addr::UNSPECIFIED, &bytes));
            let mut good = request(MessageType::Request, |m| { m.set_ciaddr(lease().ip); })
                .to_vec()
                .expect("enc");
            let i = flip.0 % good.len();
            good[i] ^= flip.1;
            good.truncate(good.len().saturating_sub(cut));
            let _ = answer(&lease(), &frame_from(VM, Ipv4Addr::UNSPECIFIED, &good));
        }
    }
}
