//! A relay between a vhost-user frontend and the vhost-user-backend library's connection.
//!
//! It passes every message through unchanged, file descriptors included, but for one: a
//! SET_VRING_ENABLE that arrives before SET_FEATURES. QEMU's virtio-net sends those while
//! the guest negotiates its features (enabling the rings it means to use); the vhost crate
//! answers one by dropping the connection, because protocol features are not acknowledged
//! yet. The relay holds such requests and hands them to the backend right after the
//! SET_FEATURES that acknowledges VHOST_USER_F_PROTOCOL_FEATURES — the ring state the
//! frontend asked for, at the first moment the backend may take it. Without protocol
//! features the rings start enabled (vhost-user spec, "Ring states") and held requests are
//! moot.
//!
//! And it trims a SET_MEM_TABLE whose body is longer than its regions: User-Mode Linux's
//! virtio_uml always sends room for two regions and says how many it filled, while the
//! vhost crate wants the body to be exactly the regions given.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::sync::lock;

/// request, flags, size: three little-endian u32s.
const HEADER_LEN: usize = 12;
/// Far above the largest message (a memory table of 8 regions, a 256-byte config write).
const MAX_BODY: usize = 64 * 1024;
/// What a message may carry (the vhost crate's MAX_ATTACHED_FD_ENTRIES).
const MAX_FDS: usize = 32;
/// Most rings whose early enable requests are held; others go to the backend to judge
/// (a frontend naming millions of ring indices must not grow the map without bound).
const MAX_HELD: usize = 1024;

const SET_FEATURES: u32 = 2;
const SET_MEM_TABLE: u32 = 5;
/// struct VhostUserMemory (nregions, padding) and one VhostUserMemoryRegion.
const MEM_TABLE_HEADER: usize = 8;
const MEM_REGION_LEN: usize = 32;
const SET_VRING_ENABLE: u32 = 18;
const SET_BACKEND_REQ_FD: u32 = 21;
/// Backend-to-frontend request: the device's configuration changed (a disk grew).
const CONFIG_CHANGE_MSG: u32 = 2;
const FLAG_VERSION: u32 = 0x1;
const FLAG_REPLY: u32 = 0x4;
const FLAG_NEED_REPLY: u32 = 0x8;
const F_PROTOCOL_FEATURES: u64 = 1 << 30;

/// One vhost-user message with the file descriptors that came with it.
#[derive(Debug)]
pub struct Message {
    pub request: u32,
    pub flags: u32,
    pub body: Vec<u8>,
    pub fds: Vec<OwnedFd>,
}

impl Message {
    pub fn new(request: u32, flags: u32, body: Vec<u8>) -> Self {
        Message { request, flags, body, fds: Vec::new() }
    }

    fn header(&self) -> [u8; HEADER_LEN] {
        let mut h = [0u8; HEADER_LEN];
        h[0..4].copy_from_slice(&self.request.to_le_bytes());
        h[4..8].copy_from_slice(&self.flags.to_le_bytes());
        h[8..12].copy_from_slice(&(self.body.len() as u32).to_le_bytes());
        h
    }

    fn u64_body(&self) -> Option<u64> {
        Some(u64::from_le_bytes(self.body.as_slice().try_into().ok()?))
    }

    /// (index, num) of a VhostUserVringState body.
    fn vring_state(&self) -> Option<(u32, u32)> {
        let b: &[u8; 8] = self.body.as_slice().try_into().ok()?;
        Some((
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        ))
    }
}

fn sys_err(e: vmm_sys_util::errno::Error) -> io::Error {
    io::Error::from_raw_os_error(e.errno())
}

/// Reads one message; None when the peer closed the connection.
pub fn recv(sock: &UnixStream) -> io::Result<Option<Message>> {
    let mut header = [0u8; HEADER_LEN];
    let mut raw_fds: [RawFd; MAX_FDS] = [-1; MAX_FDS];
    let mut iov = [libc::iovec { iov_base: header.as_mut_ptr().cast(), iov_len: header.len() }];
    // SAFETY: the iovec covers `header`, which outlives the call and takes any bytes.
    let (n, nfds) = unsafe { sock.recv_with_fds(&mut iov, &mut raw_fds) }.map_err(sys_err)?;
    let fds = raw_fds[..nfds]
        .iter()
        // SAFETY: recvmsg just installed these fds in this process; nothing else owns them.
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if n == 0 {
        return Ok(None);
    }
    let mut reader = sock;
    reader.read_exact(&mut header[n..])?;
    let word = |i: usize| u32::from_le_bytes(header[i..i + 4].try_into().expect("4 bytes"));
    let size = word(8) as usize;
    if size > MAX_BODY {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("vhost-user message of {size} bytes"),
        ));
    }
    let mut body = vec![0u8; size];
    reader.read_exact(&mut body)?;
    Ok(Some(Message { request: word(0), flags: word(4), body, fds }))
}

/// Writes one message, its file descriptors with its first bytes.
pub fn send(sock: &UnixStream, msg: &Message) -> io::Result<()> {
    let header = msg.header();
    let fds: Vec<RawFd> = msg.fds.iter().map(AsRawFd::as_raw_fd).collect();
    let bufs: [&[u8]; 2] = [&header, &msg.body];
    let sent = sock.send_with_fds(&bufs, &fds).map_err(sys_err)?;
    // A stream socket may take a long message in parts; the fds went with the first.
    let mut writer = sock;
    if sent < HEADER_LEN {
        writer.write_all(&header[sent..])?;
        writer.write_all(&msg.body)?;
    } else {
        writer.write_all(&msg.body[sent - HEADER_LEN..])?;
    }
    Ok(())
}

/// The backend's channel to the frontend (SET_BACKEND_REQ_FD), on which it tells the
/// frontend that the device configuration changed. The vhost crate (0.18) does not send
/// CONFIG_CHANGE_MSG, so the relay keeps the channel and sends it.
#[derive(Clone, Default)]
pub struct ConfigNotifier(Arc<Mutex<Option<UnixStream>>>);

impl ConfigNotifier {
    fn set(&self, channel: UnixStream) {
        *lock(&self.0) = Some(channel);
    }

    /// Tells the frontend to re-read the configuration; false when it gave no channel.
    pub fn config_changed(&self) -> bool {
        match lock(&self.0).as_ref() {
            Some(channel) => {
                send(channel, &Message::new(CONFIG_CHANGE_MSG, FLAG_VERSION, Vec::new())).is_ok()
            }
            None => false,
        }
    }
}

/// Where one frontend message goes.
#[derive(Debug, Default)]
pub struct Routed {
    pub to_backend: Vec<Message>,
    /// An answer the relay gives itself (the acknowledgement of a held request).
    pub to_frontend: Option<Message>,
}

/// The relay's view of the negotiation.
#[derive(Debug, Default)]
pub struct Relay {
    features_set: bool,
    /// Held SET_VRING_ENABLE requests: ring index → enable.
    held: BTreeMap<u32, u32>,
}

impl Relay {
    pub fn route(&mut self, msg: Message) -> Routed {
        match msg.request {
            SET_VRING_ENABLE if !self.features_set => match msg.vring_state() {
                Some((index, num))
                    if self.held.len() < MAX_HELD || self.held.contains_key(&index) =>
                {
                    self.held.insert(index, num);
                    let ack = (msg.flags & FLAG_NEED_REPLY != 0).then(|| {
                        Message::new(SET_VRING_ENABLE, FLAG_VERSION | FLAG_REPLY, vec![0; 8])
                    });
                    Routed { to_backend: Vec::new(), to_frontend: ack }
                }
                // Malformed, or beyond what is held: the backend judges it.
                _ => Routed { to_backend: vec![msg], to_frontend: None },
            },
            SET_FEATURES if !self.features_set => {
                self.features_set = true;
                let protocol = msg.u64_body().is_some_and(|f| f & F_PROTOCOL_FEATURES != 0);
                let held = std::mem::take(&mut self.held);
                let mut to_backend = vec![msg];
                if protocol {
                    to_backend.extend(held.into_iter().map(|(index, num)| {
                        let mut body = index.to_le_bytes().to_vec();
                        body.extend(num.to_le_bytes());
                        Message::new(SET_VRING_ENABLE, FLAG_VERSION, body)
                    }));
                }
                Routed { to_backend, to_frontend: None }
            }
            SET_MEM_TABLE => {
                let mut msg = msg;
                if msg.body.len() >= MEM_TABLE_HEADER {
                    let regions = u32::from_le_bytes(msg.body[0..4].try_into().expect("4 bytes"));
                    let len = MEM_TABLE_HEADER
                        .saturating_add((regions as usize).saturating_mul(MEM_REGION_LEN));
                    // Only ever shorter: a body too short for its regions is the backend's to
                    // refuse.
                    if len < msg.body.len() {
                        msg.body.truncate(len);
                    }
                }
                Routed { to_backend: vec![msg], to_frontend: None }
            }
            _ => Routed { to_backend: vec![msg], to_frontend: None },
        }
    }
}

/// Relays between `frontend` and `backend` until either side closes; then closes the other.
pub fn run(frontend: UnixStream, backend: UnixStream, notifier: &ConfigNotifier) -> io::Result<()> {
    let front_writer = Arc::new(Mutex::new(frontend.try_clone()?));
    let replies = {
        let (back_reader, front_writer) = (backend.try_clone()?, front_writer.clone());
        let front_end = frontend.try_clone()?;
        std::thread::Builder::new().name("vhost-user-relay".into()).spawn(move || {
            let result = (|| -> io::Result<()> {
                while let Some(msg) = recv(&back_reader)? {
                    send(&lock(&front_writer), &msg)?;
                }
                Ok(())
            })();
            let _ = front_end.shutdown(Shutdown::Both);
            result
        })?
    };
    let mut relay = Relay::default();
    let result = (|| -> io::Result<()> {
        while let Some(msg) = recv(&frontend)? {
            if msg.request == SET_BACKEND_REQ_FD
                && let Some(fd) = msg.fds.first()
            {
                notifier.set(UnixStream::from(fd.try_clone()?));
            }
            let routed = relay.route(msg);
            for m in &routed.to_backend {
                send(&backend, m)?;
            }
            if let Some(ack) = &routed.to_frontend {
                send(&lock(&front_writer), ack)?;
            }
        }
        Ok(())
    })();
    let _ = backend.shutdown(Shutdown::Both);
    let replies = replies.join().unwrap_or(Ok(()));
    result.and(replies)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enable(index: u32, num: u32, flags: u32) -> Message {
        let mut body = index.to_le_bytes().to_vec();
        body.extend(num.to_le_bytes());
        Message::new(SET_VRING_ENABLE, flags, body)
    }

    fn features(bits: u64) -> Message {
        Message::new(SET_FEATURES, FLAG_VERSION, bits.to_le_bytes().to_vec())
    }

    #[test]
    fn enables_before_features_are_held_and_replayed_after_them() {
        let mut relay = Relay::default();
        for (i, n) in [(0, 1), (1, 1), (0, 0), (0, 1)] {
            let routed = relay.route(enable(i, n, FLAG_VERSION));
            assert!(routed.to_backend.is_empty() && routed.to_frontend.is_none());
        }
        let routed = relay.route(features(F_PROTOCOL_FEATURES | 1 << 32));
        let sent: Vec<_> = routed
            .to_backend
            .iter()
            .map(|m| (m.request, (m.request == SET_VRING_ENABLE).then(|| m.vring_state())))
            .collect();
        assert_eq!(
            sent,
            [
                (SET_FEATURES, None),
                (SET_VRING_ENABLE, Some(Some((0, 1)))),
                (SET_VRING_ENABLE, Some(Some((1, 1))))
            ]
        );
        // Afterwards everything passes.
        let routed = relay.route(enable(1, 0, FLAG_VERSION));
        assert_eq!(routed.to_backend.len(), 1);
    }

    #[test]
    fn held_enables_are_dropped_when_protocol_features_are_not_acked() {
        let mut relay = Relay::default();
        relay.route(enable(0, 1, FLAG_VERSION));
        let routed = relay.route(features(1 << 32));
        assert_eq!(routed.to_backend.len(), 1);
        assert_eq!(routed.to_backend[0].request, SET_FEATURES);
    }

    #[test]
    fn a_memory_table_longer_than_its_regions_is_trimmed() {
        let table = |regions: u32, room: usize| {
            let mut body = regions.to_le_bytes().to_vec();
            body.resize(MEM_TABLE_HEADER + room * MEM_REGION_LEN, 0xab);
            Message::new(SET_MEM_TABLE, FLAG_VERSION, body)
        };
        let len = |m: Message| Relay::default().route(m).to_backend[0].body.len();
        // UML: one region filled, room for two.
        assert_eq!(len(table(1, 2)), MEM_TABLE_HEADER + MEM_REGION_LEN);
        assert_eq!(len(table(2, 2)), MEM_TABLE_HEADER + 2 * MEM_REGION_LEN, "exact: untouched");
        // Too short for what it claims, or absurd: passed on for the backend to refuse.
        assert_eq!(len(table(3, 2)), MEM_TABLE_HEADER + 2 * MEM_REGION_LEN);
        assert_eq!(len(table(u32::MAX, 1)), MEM_TABLE_HEADER + MEM_REGION_LEN);
        assert_eq!(len(Message::new(SET_MEM_TABLE, FLAG_VERSION, vec![1, 0])), 2);
    }

    #[test]
    fn a_held_request_that_wants_an_answer_gets_a_success_ack() {
        let mut relay = Relay::default();
        let routed = relay.route(enable(0, 1, FLAG_VERSION | FLAG_NEED_REPLY));
        let ack = routed.to_frontend.expect("an ack");
        assert_eq!(
            (ack.request, ack.flags, ack.u64_body()),
            (18, FLAG_VERSION | FLAG_REPLY, Some(0))
        );
    }

    #[test]
    fn a_malformed_enable_goes_to_the_backend_to_be_refused() {
        let mut relay = Relay::default();
        let routed = relay.route(Message::new(SET_VRING_ENABLE, FLAG_VERSION, vec![1]));
        assert_eq!(routed.to_backend.len(), 1);
    }

    #[test]
    fn messages_cross_a_socket_with_their_fds() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut msg = Message::new(13, FLAG_VERSION, 5u64.to_le_bytes().to_vec());
        msg.fds.push(std::fs::File::open("/dev/null").unwrap().into());
        send(&a, &msg).unwrap();
        let got = recv(&b).unwrap().unwrap();
        assert_eq!((got.request, got.flags, got.u64_body(), got.fds.len()), (13, 1, Some(5), 1));
        drop(a);
        assert!(recv(&b).unwrap().is_none());
    }

    #[test]
    fn the_config_change_goes_to_the_channel_the_frontend_gave() {
        let notifier = ConfigNotifier::default();
        assert!(!notifier.config_changed(), "no channel yet");
        let (ours, frontend_end) = UnixStream::pair().unwrap();
        notifier.set(ours);
        assert!(notifier.config_changed());
        let msg = recv(&frontend_end).unwrap().unwrap();
        assert_eq!((msg.request, msg.flags, msg.body.len()), (CONFIG_CHANGE_MSG, FLAG_VERSION, 0));
    }

    #[test]
    fn an_oversized_message_is_refused() {
        let (a, b) = UnixStream::pair().unwrap();
        let mut header = [0u8; HEADER_LEN];
        header[8..12].copy_from_slice(&(MAX_BODY as u32 + 1).to_le_bytes());
        (&a).write_all(&header).unwrap();
        assert_eq!(recv(&b).unwrap_err().kind(), io::ErrorKind::InvalidData);
    }
}
