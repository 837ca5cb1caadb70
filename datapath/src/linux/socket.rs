//! One synchronous netlink socket opened inside a namespace: request/ack, dumps, errno.
//!
//! A netlink socket belongs to the namespace of the thread that created it, so [`Conn::open`]
//! creates it while the calling thread has switched into the namespace; after that it is used
//! from anywhere. Framing is done here (it is the same for rtnetlink
//! and nfnetlink); rtnetlink payloads are built and parsed with `netlink-packet-route`.

use std::fs::File;
use std::io;
use std::ops::ControlFlow;

use netlink_packet_core::{
    Emitable, ParseableParametrized, NLM_F_ACK, NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{Socket, SocketAddr};

use super::netns;
use crate::{Error, Netns};

const NLMSG_HDR_LEN: usize = 16;
const NLMSG_NOOP: u16 = 1;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLMSG_OVERRUN: u16 = 4;
/// The error message echoes only the request's header (`NETLINK_CAP_ACK`).
const NLM_F_CAPPED: u16 = 0x100;
/// The error message carries extended-ack attributes.
const NLM_F_ACK_TLVS: u16 = 0x200;
/// `NLMSGERR_ATTR_MSG`: the kernel's explanation.
const NLMSGERR_ATTR_MSG: u16 = 1;
/// Large enough for any datagram the kernel sends on a socket of this size (dumps use ≤ 32 KiB).
const RECV_BUF: usize = 256 * 1024;
/// A dump interrupted by a concurrent change is retried this many times.
const DUMP_RETRIES: usize = 5;

/// A failed netlink exchange: a kernel errno (positive; 0 when the failure is not an errno, such
/// as an undecodable reply) and a readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NlError {
    /// Positive errno, or 0.
    pub(crate) errno: i32,
    /// The kernel's words (errno text plus extended ack), or the library's.
    pub(crate) message: String,
}

impl NlError {
    fn from_errno(errno: i32, extack: Option<String>) -> Self {
        let base = io::Error::from_raw_os_error(errno).to_string();
        let message = match extack {
            Some(text) if !text.is_empty() => format!("{base}: {text}"),
            _ => base,
        };
        NlError { errno, message }
    }

    fn other(message: impl Into<String>) -> Self {
        NlError {
            errno: 0,
            message: message.into(),
        }
    }

    /// Whether the kernel answered with one of these errnos.
    pub(crate) fn is(&self, errnos: &[i32]) -> bool {
        errnos.contains(&self.errno)
    }
}

impl std::fmt::Display for NlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<io::Error> for NlError {
    fn from(e: io::Error) -> Self {
        match e.raw_os_error() {
            Some(errno) => NlError::from_errno(errno, None),
            None => NlError::other(e.to_string()),
        }
    }
}

/// Wraps a netlink failure of `what` in `ns` as [`Error::Netlink`].
pub(crate) fn nl<'a>(ns: &'a Netns, what: &'a str) -> impl Fn(NlError) -> Error + 'a {
    move |e| Error::Netlink {
        ns: ns.to_string(),
        op: what.to_string(),
        message: e.message,
    }
}

/// A netlink socket bound in one namespace.
pub(crate) struct Conn {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
    /// Ifindexes looked up by name in this pass (see `links::index`); forgotten when a link of
    /// that name is created or deleted.
    pub(crate) indexes: std::collections::HashMap<String, u32>,
}

impl Conn {
    /// Closes the socket on the closer thread, not this one.
    ///
    /// nf_tables destroys the tables a batch deleted (a netdev chain's hooks among them) in
    /// deferred work after an RCU grace period, and the release of any netfilter socket flushes
    /// that work first (`nft_rcv_nl_event` on `NETLINK_URELEASE`). Closed on the pass's thread,
    /// the socket of a batch that replaced a VXLAN device's table held the pass up 10 to 25 ms
    /// (measured with `RUST_LOG=datapath=debug dvrmesh-lab bench --only datapath`). Nothing
    /// waits for the close itself. Should the thread fail to start, the socket closes here.
    pub(crate) fn close_in_background(self) {
        static CLOSER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<Conn>>> =
            std::sync::OnceLock::new();
        let closer = CLOSER.get_or_init(|| {
            let (tx, rx) = std::sync::mpsc::channel::<Conn>();
            std::thread::Builder::new()
                .name("netlink-closer".into())
                .spawn(move || rx.into_iter().for_each(drop))
                .ok()
                .map(|_| tx)
        });
        if let Some(tx) = closer {
            // A send that fails hands the socket back in its error, which closes it here.
            let _ = tx.send(self);
        }
    }

    /// Opens a socket of `protocol` (`NETLINK_ROUTE`, `NETLINK_NETFILTER`) inside the namespace
    /// `ns` (labelled `label` in errors).
    pub(crate) fn open(protocol: isize, ns: &File, label: &str) -> Result<Conn, Error> {
        let sock = netns::in_netns(ns, label, move || -> io::Result<Socket> {
            let mut sock = Socket::new(protocol)?;
            sock.bind_auto()?;
            Ok(sock)
        })?
        .map_err(|e| Error::Namespace {
            ns: label.to_string(),
            message: format!("netlink socket: {e}"),
        })?;
        // Best effort: a kernel without these still works, only with terser errors.
        let _ = sock.set_ext_ack(true);
        let _ = sock.set_cap_ack(true);
        Ok(Conn {
            sock,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
            indexes: std::collections::HashMap::new(),
        })
    }

    /// Sends one rtnetlink request with `flags` (plus `NLM_F_REQUEST | NLM_F_ACK`) and waits for
    /// the kernel's answer; returns the messages the kernel sent before its ack.
    pub(crate) fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        let msg_type = msg.message_type();
        let mut payload = vec![0u8; msg.buffer_len()];
        msg.emit(&mut payload);
        let raw = self.raw_exchange(msg_type, flags | NLM_F_ACK, &payload)?;
        parse_route(raw)
    }

    /// Sends one raw request with `flags` (plus `NLM_F_REQUEST | NLM_F_ACK`); returns
    /// `(message type, payload)` of the messages the kernel sent before its ack.
    pub(crate) fn raw_request(
        &mut self,
        msg_type: u16,
        flags: u16,
        payload: &[u8],
    ) -> Result<Vec<(u16, Vec<u8>)>, NlError> {
        self.raw_exchange(msg_type, flags | NLM_F_ACK, payload)
    }

    /// Dumps with an rtnetlink request (`NLM_F_DUMP`), retrying when the dump was interrupted.
    pub(crate) fn dump(
        &mut self,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        let msg_type = msg.message_type();
        let mut payload = vec![0u8; msg.buffer_len()];
        msg.emit(&mut payload);
        parse_route(self.raw_dump(msg_type, &payload)?)
    }

    /// [`Conn::dump`] with the kernel's strict checking of dump requests on for this one
    /// request: the kernel then applies the filters the request carries (an address dump's
    /// interface index, a route dump's output device, a neighbour dump's `NDA_IFINDEX`) instead of
    /// sending everything. A kernel that cannot check strictly sends everything, so callers still
    /// filter what comes back.
    pub(crate) fn filtered_dump(
        &mut self,
        msg: RouteNetlinkMessage,
    ) -> Result<Vec<RouteNetlinkMessage>, NlError> {
        let strict = self.sock.set_netlink_get_strict_chk(true).is_ok();
        let out = self.dump(msg);
        if strict {
            self.sock.set_netlink_get_strict_chk(false)?;
        }
        out
    }

    /// Dumps with a raw request; returns `(message type, payload)` of every reply.
    pub(crate) fn raw_dump(
        &mut self,
        msg_type: u16,
        payload: &[u8],
    ) -> Result<Vec<(u16, Vec<u8>)>, NlError> {
        let mut last = NlError::other("dump interrupted");
        for _ in 0..DUMP_RETRIES {
            match self.raw_exchange(msg_type, NLM_F_DUMP, payload) {
                Err(e) if e.errno == libc::EINTR => last = e,
                other => return other,
            }
        }
        Err(last)
    }

    /// Sends `batch` as one atomic nfnetlink transaction and reads the kernel's answers. The
    /// kernel handles a netlink message inside `sendmsg`, so every answer is queued when it
    /// returns: the error of each refused message, or the ack of the last one.
    pub(crate) fn nft_batch(&mut self, batch: &super::nft_wire::Batch) -> Result<(), NlError> {
        if batch.messages.is_empty() {
            return Ok(());
        }
        let first = self.seq.wrapping_add(1);
        let count = u32::try_from(batch.messages.len() + 2)
            .map_err(|_| NlError::other("batch too large"))?;
        self.seq = self.seq.wrapping_add(count);
        let bytes = super::nft_wire::frame(batch, first);
        self.grow_send_buffer(bytes.len())?;
        self.sock.send_to(&bytes, &SocketAddr::new(0, 0), 0)?;
        let last_seq = first.wrapping_add(batch.messages.len() as u32);
        let mut acked = false;
        let mut refused: Option<NlError> = None;
        // Every answer is queued already: read until there is none.
        self.read_replies(libc::MSG_DONTWAIT, |m| {
            match m.status() {
                None => {}
                Some(Ok(())) => acked |= m.mseq == last_seq,
                Some(Err(mut e)) if refused.is_none() => {
                    let index = m.mseq.wrapping_sub(first).wrapping_sub(1) as usize;
                    let what = batch
                        .messages
                        .get(index)
                        .map(|msg| msg.what.as_str())
                        .unwrap_or("the batch");
                    e.message = format!("{what}: {}", e.message);
                    refused = Some(e);
                }
                Some(Err(_)) => {} // the first refusal is the one that says why
            }
            Ok(ControlFlow::<()>::Continue(()))
        })?;
        match refused {
            Some(e) => Err(e),
            None if acked => Ok(()),
            None => Err(NlError::other("the kernel did not answer the nft batch")),
        }
    }

    /// Receives one datagram into the buffer; its length, or `None` when `flags` has
    /// `MSG_DONTWAIT` and nothing is queued. A datagram larger than the buffer is an error
    /// (`MSG_TRUNC` makes the kernel report the full length, so truncation shows).
    fn receive(&mut self, flags: libc::c_int) -> Result<Option<usize>, NlError> {
        self.buf.clear();
        let n = loop {
            match self.sock.recv(&mut self.buf, libc::MSG_TRUNC | flags) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        };
        if n > self.buf.len() {
            return Err(NlError::other("netlink reply truncated"));
        }
        Ok(Some(n))
    }

    /// Makes the send buffer hold a datagram of `len` bytes (a large nft batch is one datagram).
    fn grow_send_buffer(&mut self, len: usize) -> Result<(), NlError> {
        const DEFAULT_HEADROOM: usize = 200 * 1024;
        if len < DEFAULT_HEADROOM {
            return Ok(());
        }
        let size = libc::c_int::try_from(len + 64 * 1024)
            .map_err(|_| NlError::other("batch too large"))?;
        // SAFETY: setsockopt on a socket this struct owns, with a pointer to a live c_int and
        // its size.
        let rc = unsafe {
            libc::setsockopt(
                std::os::fd::AsRawFd::as_raw_fd(&self.sock),
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error().into());
        }
        Ok(())
    }

    /// Sends one message and collects replies until the ack (`NLM_F_ACK` requests) or
    /// `NLMSG_DONE` (dumps). An interrupted dump is reported as `EINTR`.
    fn raw_exchange(
        &mut self,
        msg_type: u16,
        flags: u16,
        payload: &[u8],
    ) -> Result<Vec<(u16, Vec<u8>)>, NlError> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let len = NLMSG_HDR_LEN + payload.len();
        let len32 = u32::try_from(len).map_err(|_| NlError::other("request too large"))?;
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(&len32.to_ne_bytes());
        out.extend_from_slice(&msg_type.to_ne_bytes());
        out.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        out.extend_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&0u32.to_ne_bytes());
        out.extend_from_slice(payload);
        self.sock.send_to(&out, &SocketAddr::new(0, 0), 0)?;

        let mut replies = Vec::new();
        let mut interrupted = false;
        self.read_replies(0, |m| {
            if m.mseq != seq {
                return Ok(ControlFlow::Continue(())); // a late answer to an earlier request
            }
            interrupted |= m.mflags & NLM_F_DUMP_INTR != 0;
            match m.mtype {
                NLMSG_NOOP => Ok(ControlFlow::Continue(())),
                NLMSG_OVERRUN => Err(NlError::other("netlink overrun")),
                NLMSG_DONE => match read_i32(m.body).unwrap_or(0) {
                    code if code < 0 => Err(NlError::from_errno(-code, None)),
                    _ if interrupted => Err(NlError::from_errno(libc::EINTR, None)),
                    _ => Ok(ControlFlow::Break(())),
                },
                _ => match m.status() {
                    Some(result) => result.map(ControlFlow::Break),
                    None => {
                        replies.push((m.mtype, m.body.to_vec()));
                        Ok(ControlFlow::Continue(()))
                    }
                },
            }
        })?;
        Ok(replies)
    }

    /// Reads datagrams and hands each message to `on` until `on` breaks, or — with
    /// `MSG_DONTWAIT` in `flags` — until nothing more is queued.
    fn read_replies(
        &mut self,
        flags: libc::c_int,
        mut on: impl FnMut(Header<'_>) -> Result<ControlFlow<()>, NlError>,
    ) -> Result<(), NlError> {
        loop {
            let Some(n) = self.receive(flags)? else {
                if flags & libc::MSG_DONTWAIT != 0 {
                    return Ok(());
                }
                continue;
            };
            for message in messages(&self.buf[..n]) {
                if on(message?)?.is_break() {
                    return Ok(());
                }
            }
        }
    }
}

/// One netlink message of a received datagram.
struct Header<'a> {
    mtype: u16,
    mflags: u16,
    mseq: u32,
    body: &'a [u8],
}

impl Header<'_> {
    /// For an `NLMSG_ERROR` message, the ack (`Ok`) or the error it reports, with the kernel's
    /// extended-ack text; `None` for any other message.
    fn status(&self) -> Option<Result<(), NlError>> {
        if self.mtype != NLMSG_ERROR {
            return None;
        }
        Some(match read_i32(self.body) {
            None => Err(NlError::other("short error")),
            Some(0) => Ok(()),
            Some(code) => Err(NlError::from_errno(
                -code,
                extack_message(self.mflags, self.body),
            )),
        })
    }
}

/// The messages of one datagram, in order; a length that does not fit is an error.
fn messages(buf: &[u8]) -> impl Iterator<Item = Result<Header<'_>, NlError>> {
    let mut off = 0;
    std::iter::from_fn(move || {
        if off + NLMSG_HDR_LEN > buf.len() {
            return None;
        }
        let hdr = &buf[off..];
        let mlen = u32::from_ne_bytes([hdr[0], hdr[1], hdr[2], hdr[3]]) as usize;
        if mlen < NLMSG_HDR_LEN || off + mlen > buf.len() {
            off = buf.len();
            return Some(Err(NlError::other("malformed netlink message")));
        }
        let message = Header {
            mtype: u16::from_ne_bytes([hdr[4], hdr[5]]),
            mflags: u16::from_ne_bytes([hdr[6], hdr[7]]),
            mseq: u32::from_ne_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]),
            body: &buf[off + NLMSG_HDR_LEN..off + mlen],
        };
        off += (mlen + 3) & !3;
        Some(Ok(message))
    })
}

/// The netlink attributes of `buf` as `(type, value)`, flags masked off; a malformed tail ends
/// the list.
pub(crate) fn attrs(mut buf: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        if buf.len() < 4 {
            return None;
        }
        let len = u16::from_ne_bytes([buf[0], buf[1]]) as usize;
        let kind = u16::from_ne_bytes([buf[2], buf[3]]) & 0x3fff;
        if len < 4 || len > buf.len() {
            return None;
        }
        let value = &buf[4..len];
        buf = buf.get((len + 3) & !3..).unwrap_or_default();
        Some((kind, value))
    })
}

fn read_i32(b: &[u8]) -> Option<i32> {
    Some(i32::from_ne_bytes(b.get(..4)?.try_into().ok()?))
}

/// The `NLMSGERR_ATTR_MSG` text of an error message, if the kernel sent one.
fn extack_message(flags: u16, body: &[u8]) -> Option<String> {
    if flags & NLM_F_ACK_TLVS == 0 {
        return None;
    }
    // code (4) + the echoed request: its header only when capped, else the whole request.
    let echoed = if flags & NLM_F_CAPPED != 0 {
        NLMSG_HDR_LEN
    } else {
        let len = u32::from_ne_bytes(body.get(4..8)?.try_into().ok()?) as usize;
        (len + 3) & !3
    };
    let (_, text) = attrs(body.get(4 + echoed..)?).find(|(kind, _)| *kind == NLMSGERR_ATTR_MSG)?;
    let text = text.split(|b| *b == 0).next().unwrap_or_default();
    Some(String::from_utf8_lossy(text).into_owned())
}

/// Parses rtnetlink replies. Messages the library cannot decode are skipped: a foreign object
/// with an exotic attribute must not make the whole observation fail (an owned object that is
/// skipped is re-added, which the kernel answers with EEXIST, and converges).
fn parse_route(raw: Vec<(u16, Vec<u8>)>) -> Result<Vec<RouteNetlinkMessage>, NlError> {
    Ok(raw
        .into_iter()
        .filter_map(|(t, body)| RouteNetlinkMessage::parse_with_param(&body[..], t).ok())
        .collect())
}
