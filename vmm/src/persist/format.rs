//! The machine-state file: a header Vessel recognises its states by (a mark, the format's
//! version, which Vessel wrote it, the payload's length and checksum), then the state
//! itself (serde, in postcard's compact encoding). A state from another format version is
//! refused with the version and the Vessel that wrote it; a damaged one (checksum) or a
//! cut one is refused as such. Guest memory is not in here: it is a file of its own.
//!
//! Header, little-endian: mark (8 bytes, `VESSELST`), format version (u32), flags (u32,
//! 0), payload length (u64), payload CRC-32 (u32), length of the writer's name (u32), the
//! writer's name (UTF-8, at most `MAX_WRITER` bytes), the payload.

use serde::Serialize;
use serde::de::DeserializeOwned;

/// The mark at the start of every state file.
pub const MAGIC: [u8; 8] = *b"VESSELST";
/// The state layout this Vessel writes and reads. A change to any saved structure that
/// an older reader would misread bumps it. 2: firmware machines' devices (the fw_cfg
/// device; the VGA's state among the PCI functions').
pub const FORMAT_VERSION: u32 = 2;
/// Longest writer's name read.
pub const MAX_WRITER: usize = 64;
/// Largest state read: devices and vCPUs, never guest memory (which is a file of its own);
/// the GPU's resources (up to 256 MiB of pixels) and the VGA's memory are the large parts.
pub const MAX_STATE: u64 = 512 << 20;
const HEADER: usize = 8 + 4 + 4 + 8 + 4 + 4;

/// What this Vessel calls itself in the states it writes.
pub fn writer() -> String {
    format!("Vessel {}", env!("CARGO_PKG_VERSION"))
}

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("not a Vessel machine state: it does not start with Vessel's mark")]
    NotAState,
    #[error("the machine state is cut short ({0} bytes); it cannot be resumed: discard it")]
    Truncated(usize),
    #[error(
        "this machine state was written by {writer} in state format {found}; this Vessel \
         ({ours}) reads format {expected} only: resume it with the Vessel that saved it, or \
         discard it"
    )]
    OtherFormat { found: u32, writer: String, ours: String, expected: u32 },
    #[error(
        "the machine state is damaged (its checksum does not match); it cannot be resumed: \
         discard it"
    )]
    Checksum,
    #[error("the machine state is {0} bytes, more than a state can be ({MAX_STATE} bytes)")]
    TooLarge(u64),
    #[error("the machine state does not hold what this Vessel expects: {0}")]
    Decode(String),
    #[error("cannot encode the machine state: {0}")]
    Encode(String),
}

/// `value` as a state file's bytes.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StateFileError> {
    let payload = postcard::to_stdvec(value).map_err(|e| StateFileError::Encode(e.to_string()))?;
    if payload.len() as u64 > MAX_STATE {
        return Err(StateFileError::TooLarge(payload.len() as u64));
    }
    let writer = writer();
    let writer = &writer.as_bytes()[..writer.len().min(MAX_WRITER)];
    let mut out = Vec::with_capacity(HEADER + writer.len() + payload.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(payload.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&payload).to_le_bytes());
    out.extend_from_slice(&(writer.len() as u32).to_le_bytes());
    out.extend_from_slice(writer);
    out.extend_from_slice(&payload);
    Ok(out)
}

/// The state in a state file's `bytes`, checked: its mark, format version, length and
/// checksum, before anything is decoded.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StateFileError> {
    if bytes.len() < MAGIC.len() || bytes[..MAGIC.len()] != MAGIC {
        return Err(StateFileError::NotAState);
    }
    let header = bytes.get(..HEADER).ok_or(StateFileError::Truncated(bytes.len()))?;
    let u32_at = |at: usize| u32::from_le_bytes(header[at..at + 4].try_into().expect("4 bytes"));
    let found = u32_at(8);
    let length = u64::from_le_bytes(header[16..24].try_into().expect("8 bytes"));
    let checksum = u32_at(24);
    let writer_len = (u32_at(28) as usize).min(MAX_WRITER);
    let writer =
        bytes.get(HEADER..HEADER + writer_len).ok_or(StateFileError::Truncated(bytes.len()))?;
    let writer = String::from_utf8_lossy(writer).into_owned();
    if found != FORMAT_VERSION {
        return Err(StateFileError::OtherFormat {
            found,
            writer,
            ours: self::writer(),
            expected: FORMAT_VERSION,
        });
    }
    if length > MAX_STATE {
        return Err(StateFileError::TooLarge(length));
    }
    let start = HEADER + writer_len;
    let payload =
        bytes.get(start..start + length as usize).ok_or(StateFileError::Truncated(bytes.len()))?;
    if crc32fast::hash(payload) != checksum {
        return Err(StateFileError::Checksum);
    }
    postcard::from_bytes(payload).map_err(|e| StateFileError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        name: String,
        words: Vec<u64>,
        flag: bool,
    }

    fn sample() -> Sample {
        Sample { name: "vcpu0".into(), words: (0..100).map(|i| i * 0x1_0001).collect(), flag: true }
    }

    #[test]
    fn a_state_reads_back_as_written() {
        let bytes = encode(&sample()).unwrap();
        assert_eq!(&bytes[..8], b"VESSELST");
        assert_eq!(decode::<Sample>(&bytes).unwrap(), sample());
    }

    #[test]
    fn damage_of_any_kind_is_refused_and_named() {
        let bytes = encode(&sample()).unwrap();
        // A flipped byte in the payload: the checksum.
        let mut flipped = bytes.clone();
        *flipped.last_mut().unwrap() ^= 0x40;
        assert!(matches!(decode::<Sample>(&flipped), Err(StateFileError::Checksum)));
        // Cut anywhere: too short, never a panic.
        for cut in 0..bytes.len() {
            let result = decode::<Sample>(&bytes[..cut]);
            assert!(
                matches!(result, Err(StateFileError::Truncated(_) | StateFileError::NotAState)),
                "cut at {cut}: {result:?}"
            );
        }
        // Not a state at all.
        assert!(matches!(decode::<Sample>(b"\x7fELF\x02\x01\x01"), Err(StateFileError::NotAState)));
        // A length beyond any state's: refused before anything is read or allocated.
        let mut huge = bytes.clone();
        huge[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(decode::<Sample>(&huge), Err(StateFileError::TooLarge(_))));
        // A payload that is not this structure (the checksum made to match).
        let mut other = encode(&(1u8, 2u8)).unwrap();
        other[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        assert!(matches!(decode::<Sample>(&other), Err(StateFileError::Decode(_))));
    }

    #[test]
    fn a_state_of_another_format_says_who_wrote_it() {
        let mut bytes = encode(&sample()).unwrap();
        bytes[8..12].copy_from_slice(&7u32.to_le_bytes());
        let error = decode::<Sample>(&bytes).unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, StateFileError::OtherFormat { found: 7, .. }), "{text}");
        assert!(text.contains("format 7") && text.contains(&writer()), "{text}");
        assert!(text.contains(&format!("reads format {FORMAT_VERSION}")), "{text}");
    }
}
