//! The migration stream: a greeting (Vessel's migration mark, the protocol's version,
//! which Vessel speaks), then framed messages both ways. A frame is a tag (u8) and a
//! length (u64, little-endian) then that many bytes; every tag has a largest length, and
//! a frame beyond it ends the migration before anything is allocated for it. Everything a
//! peer sends is checked: it is another machine's word, possibly an attacker's.

use std::io::{Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The mark each side sends first.
pub const MAGIC: [u8; 8] = *b"VESSELMG";
/// The protocol this Vessel speaks; a peer speaking another is refused by name.
pub const VERSION: u32 = 2;
/// Most guest memory one `Pages` frame carries.
pub const MAX_PAGES: usize = 1 << 20;
/// Most bytes of a disk one `DiskData` frame carries.
pub const MAX_DISK_DATA: usize = 1 << 20;
/// Longest text (a reason for a refusal or a failure).
const MAX_TEXT: u64 = 4096;
/// Largest structure other than memory and the machine's state (the guest's CPUID).
const MAX_REQUIREMENTS: u64 = 1 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Tag {
    /// Sender: what the machine needs (`Requirements`).
    Requirements = 1,
    /// Receiver: it can take this machine; memory may come.
    Accept = 2,
    /// Receiver: it cannot (the text says why).
    Refuse = 3,
    /// Sender: guest memory at a guest address (u64) followed by its bytes.
    Pages = 4,
    /// Sender: guest memory that is all zero now: address (u64), length (u64).
    Zero = 5,
    /// Sender: a pass over memory ended (its number, u32).
    PassEnd = 6,
    /// Sender: the paused machine's state (a state file's bytes); memory is complete.
    State = 7,
    /// Receiver: the machine is built from it and ready to run.
    Ready = 8,
    /// Sender: the source is stopped for good: run it.
    Go = 9,
    /// Receiver: it runs.
    Running = 10,
    /// Either side: the migration failed (the text says why); the sender's machine goes on.
    Failed = 11,
    /// Sender: the user cancelled; the receiver discards everything.
    Cancel = 12,
    /// Sender: a copied disk's bytes: disk (u32), offset (u64), then the bytes.
    DiskData = 13,
    /// Sender: a copied disk's stretch that reads as zeroes: disk (u32), offset (u64),
    /// length (u64).
    DiskZero = 14,
}

impl Tag {
    fn from_u8(byte: u8) -> Option<Tag> {
        use Tag::*;
        [
            Requirements,
            Accept,
            Refuse,
            Pages,
            Zero,
            PassEnd,
            State,
            Ready,
            Go,
            Running,
            Failed,
            Cancel,
            DiskData,
            DiskZero,
        ]
        .into_iter()
        .find(|t| *t as u8 == byte)
    }

    /// The most bytes a frame of this kind may hold.
    fn limit(self) -> u64 {
        match self {
            Tag::Requirements => MAX_REQUIREMENTS,
            Tag::Pages => 8 + MAX_PAGES as u64,
            Tag::Zero => 16,
            Tag::DiskData => 12 + MAX_DISK_DATA as u64,
            Tag::DiskZero => 20,
            Tag::PassEnd => 4,
            Tag::State => crate::persist::format::MAX_STATE + 4096,
            Tag::Refuse | Tag::Failed => MAX_TEXT,
            Tag::Accept | Tag::Ready | Tag::Go | Tag::Running | Tag::Cancel => 0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the connection to the other Vessel failed")]
    Io(#[source] std::io::Error),
    #[error("the other side is not a Vessel migration (it did not greet as one)")]
    NotVessel,
    #[error(
        "the other side ({peer}) speaks migration protocol {found}; this Vessel speaks \
         {VERSION}: migrate between Vessels of the same version"
    )]
    Version { found: u32, peer: String },
    #[error("the other Vessel sent a frame of unknown kind {0}")]
    UnknownTag(u8),
    #[error("the other Vessel sent a {tag:?} of {len} bytes, more than one may be ({limit})")]
    TooLong { tag: Tag, len: u64, limit: u64 },
    #[error("the other Vessel sent a {0:?} that does not decode: {1}")]
    Decode(Tag, String),
    #[error("the other Vessel sent {found:?} where {expected} belongs")]
    Unexpected { found: Tag, expected: &'static str },
}

/// Sends the greeting: mark, version, `who` (at most 64 bytes of it).
pub fn greet(out: &mut (impl Write + ?Sized), who: &str) -> Result<(), WireError> {
    let who = &who.as_bytes()[..who.len().min(64)];
    let mut bytes = MAGIC.to_vec();
    bytes.extend_from_slice(&VERSION.to_le_bytes());
    bytes.push(who.len() as u8);
    bytes.extend_from_slice(who);
    out.write_all(&bytes).and_then(|()| out.flush()).map_err(WireError::Io)
}

/// Reads the peer's greeting; who it is.
pub fn read_greeting(input: &mut (impl Read + ?Sized)) -> Result<String, WireError> {
    let mut head = [0u8; 13];
    input.read_exact(&mut head).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => WireError::NotVessel,
        _ => WireError::Io(e),
    })?;
    if head[..8] != MAGIC {
        return Err(WireError::NotVessel);
    }
    let found = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    let mut who = vec![0u8; usize::from(head[12]).min(64)];
    input.read_exact(&mut who).map_err(WireError::Io)?;
    let peer = String::from_utf8_lossy(&who).into_owned();
    if found != VERSION {
        return Err(WireError::Version { found, peer });
    }
    Ok(peer)
}

/// Sends one frame of `tag` with `parts` one after another as its bytes.
pub fn send(out: &mut (impl Write + ?Sized), tag: Tag, parts: &[&[u8]]) -> Result<(), WireError> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut head = [0u8; 9];
    head[0] = tag as u8;
    head[1..].copy_from_slice(&(len as u64).to_le_bytes());
    out.write_all(&head).map_err(WireError::Io)?;
    for part in parts {
        out.write_all(part).map_err(WireError::Io)?;
    }
    Ok(())
}

/// Sends `value` (postcard) as a frame of `tag`.
pub fn send_value<T: Serialize>(
    out: &mut (impl Write + ?Sized),
    tag: Tag,
    value: &T,
) -> Result<(), WireError> {
    let bytes = postcard::to_stdvec(value).map_err(|e| WireError::Decode(tag, e.to_string()))?;
    send(out, tag, &[&bytes])
}

/// Sends a text frame (`Refuse`, `Failed`), cut to the longest text a peer reads.
pub fn send_text(out: &mut (impl Write + ?Sized), tag: Tag, text: &str) -> Result<(), WireError> {
    let mut end = text.len().min(MAX_TEXT as usize);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    send(out, tag, &[&text.as_bytes()[..end]])?;
    out.flush().map_err(WireError::Io)
}

/// A frame's kind and length, read; its bytes are next on the stream.
pub fn read_head(input: &mut (impl Read + ?Sized)) -> Result<(Tag, u64), WireError> {
    let mut head = [0u8; 9];
    input.read_exact(&mut head).map_err(WireError::Io)?;
    let tag = Tag::from_u8(head[0]).ok_or(WireError::UnknownTag(head[0]))?;
    let len = u64::from_le_bytes(head[1..].try_into().expect("8 bytes"));
    if len > tag.limit() {
        return Err(WireError::TooLong { tag, len, limit: tag.limit() });
    }
    Ok((tag, len))
}

/// Reads a frame's `len` bytes (within its kind's limit, which `read_head` checked).
pub fn read_body(input: &mut (impl Read + ?Sized), len: u64) -> Result<Vec<u8>, WireError> {
    let mut body = vec![0u8; len as usize];
    input.read_exact(&mut body).map_err(WireError::Io)?;
    Ok(body)
}

/// A whole frame.
pub fn read_frame(input: &mut (impl Read + ?Sized)) -> Result<(Tag, Vec<u8>), WireError> {
    let (tag, len) = read_head(input)?;
    Ok((tag, read_body(input, len)?))
}

/// Decodes a frame's bytes as `T`.
pub fn decode<T: DeserializeOwned>(tag: Tag, body: &[u8]) -> Result<T, WireError> {
    postcard::from_bytes(body).map_err(|e| WireError::Decode(tag, e.to_string()))
}

/// A text frame's text.
pub fn text(body: &[u8]) -> String {
    String::from_utf8_lossy(body).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_read_back_and_hostile_ones_are_refused_unread() {
        let mut out = Vec::new();
        greet(&mut out, "Vessel test").unwrap();
        send(&mut out, Tag::Pages, &[&0x1000u64.to_le_bytes(), &[7u8; 4096]]).unwrap();
        send_text(&mut out, Tag::Failed, "no").unwrap();
        let mut input = &out[..];
        assert_eq!(read_greeting(&mut input).unwrap(), "Vessel test");
        let (tag, body) = read_frame(&mut input).unwrap();
        assert_eq!((tag, body.len()), (Tag::Pages, 4104));
        let (tag, body) = read_frame(&mut input).unwrap();
        assert_eq!((tag, text(&body).as_str()), (Tag::Failed, "no"));

        // A length no frame of its kind may have: refused from the head alone.
        let mut huge = vec![Tag::Pages as u8];
        huge.extend_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(read_head(&mut &huge[..]), Err(WireError::TooLong { .. })));
        let mut go = vec![Tag::Go as u8];
        go.extend_from_slice(&1u64.to_le_bytes());
        assert!(matches!(read_head(&mut &go[..]), Err(WireError::TooLong { .. })));
        assert!(matches!(read_head(&mut &[0xeeu8; 9][..]), Err(WireError::UnknownTag(0xee))));
        // Not a migration at all, or another version.
        assert!(matches!(
            read_greeting(&mut &b"GET / HTTP/1.1\r\n"[..]),
            Err(WireError::NotVessel)
        ));
        let mut other = Vec::new();
        greet(&mut other, "Vessel 9").unwrap();
        other[8..12].copy_from_slice(&7u32.to_le_bytes());
        let error = read_greeting(&mut &other[..]).unwrap_err();
        assert!(error.to_string().contains("protocol 7") && error.to_string().contains("Vessel 9"));
        // Cut anywhere: an error, never a panic.
        for cut in 0..out.len() {
            let mut input = &out[..cut];
            let _ = read_greeting(&mut input).and_then(|_| read_frame(&mut input));
        }
    }
}
