//! The control socket's frames with a file descriptor alongside (the guest's frame memory,
//! VM process to window). A descriptor travels with the first byte of its frame
//! (SCM_RIGHTS); the reader keeps what arrived in order and a message that says one came
//! takes the oldest. Received descriptors are close-on-exec from the first instant
//! (MSG_CMSG_CLOEXEC): a window starting another VM's process meanwhile must not hand it
//! this VM's screen.

use std::collections::VecDeque;
use std::io::{IoSlice, IoSliceMut, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};
use serde::{Deserialize, Serialize};

use super::protocol::{self, MAX_FRAME, ProtocolError};

/// Descriptors a reader holds for messages not read yet; a peer sending more is broken.
const MAX_PENDING_FDS: usize = 4;

/// Writes `message` as one frame, with `fd` passed alongside when given.
pub fn send_with_fd<T: Serialize>(
    stream: &mut UnixStream,
    message: &T,
    fd: Option<&OwnedFd>,
) -> Result<(), ProtocolError> {
    let frame = protocol::encode(message)?;
    let Some(fd) = fd else {
        stream.write_all(&frame)?;
        return Ok(());
    };
    let fds = [fd.as_raw_fd()];
    let rights = [ControlMessage::ScmRights(&fds)];
    let sent = loop {
        match sendmsg::<()>(
            stream.as_raw_fd(),
            &[IoSlice::new(&frame)],
            &rights,
            MsgFlags::empty(),
            None,
        ) {
            Ok(n) => break n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(ProtocolError::Io(e.into())),
        }
    };
    stream.write_all(&frame[sent..])?;
    Ok(())
}

/// Bytes one read asks for at least (more when a frame being read needs more).
const MIN_READ: usize = 4096;

/// Reads frames from a stream socket, keeping the descriptors that come with them.
pub struct FrameReader {
    stream: UnixStream,
    /// `buffer[start..end]`: received, not parsed yet. The buffer grows to hold the largest
    /// frame seen (`MAX_FRAME` + `MIN_READ` at most), and is zeroed only then: a reader of
    /// small messages keeps a small one.
    buffer: Vec<u8>,
    start: usize,
    end: usize,
    fds: VecDeque<OwnedFd>,
}

impl FrameReader {
    pub fn new(stream: UnixStream) -> Self {
        FrameReader { stream, buffer: Vec::new(), start: 0, end: 0, fds: VecDeque::new() }
    }

    /// The oldest descriptor received and not taken yet.
    pub fn take_fd(&mut self) -> Option<OwnedFd> {
        self.fds.pop_front()
    }

    /// Reads more bytes (and any descriptor with them); false at the end of the stream.
    fn fill(&mut self) -> Result<bool, ProtocolError> {
        // Room for the rest of the frame being read (its length is known once 4 bytes are
        // in, and checked against MAX_FRAME), or for MIN_READ.
        let unread = &self.buffer[self.start..self.end];
        let frame = unread.get(..4).map(|b| u32::from_le_bytes(b.try_into().expect("4")));
        let wanted = frame.map_or(MIN_READ, |len| {
            (4 + (len as usize).min(MAX_FRAME)).saturating_sub(unread.len()).max(MIN_READ)
        });
        if self.buffer.len() - self.end < wanted {
            // What is left (less than a frame) to the front, then more room if need be.
            self.buffer.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
            if self.buffer.len() - self.end < wanted {
                self.buffer.resize(self.end + wanted, 0);
            }
        }
        let mut space = nix::cmsg_space!([RawFd; 2]);
        let (n, fds) = loop {
            let mut iov = [IoSliceMut::new(&mut self.buffer[self.end..])];
            match recvmsg::<()>(
                self.stream.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(msg) => {
                    let mut fds = Vec::new();
                    for cmsg in msg.cmsgs().map_err(|e| ProtocolError::Io(e.into()))? {
                        if let ControlMessageOwned::ScmRights(received) = cmsg {
                            fds.extend(received);
                        }
                    }
                    break (msg.bytes, fds);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(ProtocolError::Io(e.into())),
            }
        };
        for fd in fds {
            // SAFETY: the kernel just installed this descriptor for us; nothing else owns it.
            self.fds.push_back(unsafe { OwnedFd::from_raw_fd(fd) });
        }
        if self.fds.len() > MAX_PENDING_FDS {
            return Err(ProtocolError::Io(std::io::Error::other(
                "the peer sent more descriptors than messages that take them",
            )));
        }
        self.end += n;
        Ok(n > 0)
    }

    /// The next message; None at a clean end of the stream (between frames).
    pub fn receive<T: for<'de> Deserialize<'de>>(&mut self) -> Result<Option<T>, ProtocolError> {
        loop {
            let unread = &self.buffer[self.start..self.end];
            if unread.len() >= 4 {
                let len = u32::from_le_bytes(unread[..4].try_into().expect("4 bytes")) as usize;
                if len > MAX_FRAME {
                    return Err(ProtocolError::TooLarge(len));
                }
                if unread.len() >= 4 + len {
                    let message = serde_json::from_slice(&unread[4..4 + len]);
                    self.start += 4 + len;
                    if self.start == self.end {
                        (self.start, self.end) = (0, 0);
                    }
                    return message.map(Some).map_err(ProtocolError::Malformed);
                }
            }
            if !self.fill()? {
                return if self.start == self.end {
                    Ok(None)
                } else {
                    Err(ProtocolError::Truncated)
                };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmhost::protocol::{Reply, VmState};

    #[test]
    fn a_descriptor_arrives_with_its_message_and_is_close_on_exec() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let file = tempfile::tempfile().unwrap();
        file.set_len(123).unwrap();
        let fd: OwnedFd = file.into();
        send_with_fd(&mut a, &Reply::StateChanged { state: VmState::Running }, None).unwrap();
        send_with_fd(&mut a, &Reply::NoFrame, Some(&fd)).unwrap();
        send_with_fd(&mut a, &Reply::Done, None).unwrap();
        drop(a);
        let mut reader = FrameReader::new(b);
        let first: Reply = reader.receive().unwrap().unwrap();
        assert_eq!(first, Reply::StateChanged { state: VmState::Running });
        assert_eq!(reader.receive::<Reply>().unwrap(), Some(Reply::NoFrame));
        let got = reader.take_fd().expect("the descriptor came along");
        assert_eq!(std::fs::File::from(got.try_clone().unwrap()).metadata().unwrap().len(), 123);
        // SAFETY: F_GETFD only reads the descriptor's flags.
        let flags = unsafe { libc::fcntl(got.as_raw_fd(), libc::F_GETFD) };
        assert_eq!(flags & libc::FD_CLOEXEC, libc::FD_CLOEXEC);
        assert_eq!(reader.receive::<Reply>().unwrap(), Some(Reply::Done));
        assert_eq!(reader.receive::<Reply>().unwrap(), None);
        assert!(reader.take_fd().is_none());
    }

    #[test]
    fn a_flood_of_descriptors_is_refused() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let file: OwnedFd = tempfile::tempfile().unwrap().into();
        for _ in 0..MAX_PENDING_FDS + 1 {
            send_with_fd(&mut a, &Reply::Done, Some(&file)).unwrap();
        }
        let mut reader = FrameReader::new(b);
        let mut result = Ok(None);
        for _ in 0..=MAX_PENDING_FDS {
            result = reader.receive::<Reply>();
            if result.is_err() {
                break;
            }
        }
        assert!(result.is_err(), "{result:?}");
    }

    #[test]
    fn messages_of_every_size_come_whole_and_in_order_in_a_bounded_buffer() {
        let (mut a, b) = UnixStream::pair().unwrap();
        // Sizes from none to most of the largest frame (JSON: up to 4 bytes a byte), so
        // frames straddle reads every way.
        let sizes: Vec<usize> = (0..100).map(|i| (i * 7919 * 31) % 200_000).collect();
        let sent = sizes.clone();
        let writer = std::thread::spawn(move || {
            for (i, size) in sent.into_iter().enumerate() {
                let bytes = vec![(i % 251) as u8; size];
                send_with_fd(&mut a, &Reply::Serial { bytes }, None).unwrap();
            }
            let big = vec![7u8; MAX_FRAME / 5];
            send_with_fd(&mut a, &Reply::Serial { bytes: big }, None).unwrap();
        });
        let mut reader = FrameReader::new(b);
        for (i, size) in sizes.into_iter().enumerate() {
            let Some(Reply::Serial { bytes }) = reader.receive::<Reply>().unwrap() else {
                panic!("message {i}")
            };
            assert_eq!(bytes.len(), size, "message {i}");
            assert!(bytes.iter().all(|&b| b == (i % 251) as u8), "message {i}");
            assert!(reader.buffer.len() <= 4 + MAX_FRAME + MIN_READ);
        }
        let Some(Reply::Serial { bytes }) = reader.receive::<Reply>().unwrap() else { panic!() };
        assert_eq!(bytes.len(), MAX_FRAME / 5);
        assert!(reader.buffer.len() <= 4 + MAX_FRAME + MIN_READ);
        writer.join().unwrap();
        assert_eq!(reader.receive::<Reply>().unwrap(), None);
    }

    #[test]
    fn a_reader_of_small_messages_keeps_a_small_buffer() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let writer = std::thread::spawn(move || {
            for _ in 0..500 {
                send_with_fd(&mut a, &Reply::Done, None).unwrap();
            }
        });
        let mut reader = FrameReader::new(b);
        let mut read = 0;
        while reader.receive::<Reply>().unwrap().is_some() {
            assert!(reader.buffer.len() <= 2 * MIN_READ, "{}", reader.buffer.len());
            read += 1;
        }
        assert_eq!(read, 500);
        writer.join().unwrap();
    }
}
