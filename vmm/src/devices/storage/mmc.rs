//! A CD-ROM drive's command set (MMC-6 and SPC-4), independent of how commands arrive, so
//! ATAPI (IDE) carries it now and a SCSI transport (virtio-scsi, AHCI) can later. The drive
//! holds at most one medium, an ISO image opened read-only under a shared OFD lock; it can
//! be inserted, swapped and ejected while the guest runs, with the unit attention and
//! media events guests expect; a guest can lock the tray (PREVENT ALLOW MEDIUM REMOVAL),
//! and then the host's eject is only a request the guest sees, as on a real drive, unless
//! the host forces it.
//!
//! Commands answer with data for the transport to send (bounded by the CDB's allocation
//! length), with a sector range to read (the transport pulls it block by block), or with
//! CHECK CONDITION and sense data, which REQUEST SENSE then returns.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::lock::{LockError, ofd_lock};

/// Bytes in a CD-ROM logical block (mode 1 user data).
pub const BLOCK: u64 = 2048;

// Operation codes (SPC-4 §6, MMC-6 §6).
const TEST_UNIT_READY: u8 = 0x00;
const REQUEST_SENSE: u8 = 0x03;
const INQUIRY: u8 = 0x12;
const MODE_SENSE_6: u8 = 0x1a;
const START_STOP_UNIT: u8 = 0x1b;
const PREVENT_ALLOW: u8 = 0x1e;
const READ_CAPACITY: u8 = 0x25;
const READ_10: u8 = 0x28;
const READ_TOC: u8 = 0x43;
const GET_CONFIGURATION: u8 = 0x46;
const GET_EVENT_STATUS: u8 = 0x4a;
const READ_DISC_INFORMATION: u8 = 0x51;
const MODE_SENSE_10: u8 = 0x5a;
const READ_12: u8 = 0xa8;
const SET_SPEED: u8 = 0xbb;
const MECHANISM_STATUS: u8 = 0xbd;

// Sense keys and (ASC, ASCQ) (SPC-4 §4.5.6, annex D).
const NOT_READY: u8 = 0x02;
const ILLEGAL_REQUEST: u8 = 0x05;
const UNIT_ATTENTION: u8 = 0x06;
const MEDIUM_ERROR: u8 = 0x03;
const INVALID_OPCODE: (u8, u8) = (0x20, 0x00);
const LBA_OUT_OF_RANGE: (u8, u8) = (0x21, 0x00);
const INVALID_FIELD_IN_CDB: (u8, u8) = (0x24, 0x00);
const MEDIUM_CHANGED: (u8, u8) = (0x28, 0x00);
const NO_MEDIUM_TRAY_CLOSED: (u8, u8) = (0x3a, 0x01);
const NO_MEDIUM_TRAY_OPEN: (u8, u8) = (0x3a, 0x02);
const REMOVAL_PREVENTED: (u8, u8) = (0x53, 0x02);
const UNRECOVERED_READ_ERROR: (u8, u8) = (0x11, 0x00);

/// The MMC profile of a CD-ROM (MMC-6 §5.3.1).
const PROFILE_CD_ROM: u16 = 0x0008;

#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    #[error("cannot open ISO image {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{path} is not an ISO image: its size ({size} bytes) is not a whole number of 2048-byte sectors"
    )]
    NotIso { path: PathBuf, size: u64 },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(
        "the guest has locked the CD drive's tray; it was asked to eject the disc (eject with force to take it out anyway)"
    )]
    Locked,
}

/// A disc in the drive.
#[derive(Debug)]
pub struct Media {
    file: File,
    path: PathBuf,
    blocks: u64,
}

impl Media {
    /// Opens an ISO image read-only with a shared lock (other machines may read it too;
    /// nobody may write it meanwhile).
    pub fn open(path: &Path) -> Result<Self, MediaError> {
        let open = |source| MediaError::Open { path: path.to_path_buf(), source };
        let not_iso = |size| MediaError::NotIso { path: path.to_path_buf(), size };
        // Only a regular file is a disc (a FIFO or a device is refused without waiting).
        let file = match super::open_disc(path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => return Err(not_iso(0)),
            Err(e) => return Err(open(e)),
        };
        let size = file.metadata().map_err(open)?.len();
        if size == 0 || !size.is_multiple_of(BLOCK) {
            return Err(not_iso(size));
        }
        ofd_lock(&file, path, false)?;
        Ok(Media { file, path: path.to_path_buf(), blocks: size / BLOCK })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn blocks(&self) -> u64 {
        self.blocks
    }
}

/// What a command asks of the transport.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// GOOD status, no data.
    Done,
    /// GOOD status after sending these bytes (already cut to the allocation length).
    Data(Vec<u8>),
    /// GOOD status after sending `blocks` blocks from `lba` (see `read_block`).
    Read { lba: u64, blocks: u64 },
    /// CHECK CONDITION; the sense data is kept for REQUEST SENSE.
    Check,
}

/// A media event for GET EVENT STATUS NOTIFICATION (MMC-6 §6.7, media class).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum MediaEvent {
    None = 0,
    EjectRequest = 1,
    NewMedia = 2,
    MediaRemoval = 3,
}

/// Sense data: key, ASC, ASCQ.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
}

/// A drive's state: the disc in it (its path and size: the machine opens it from its
/// settings), the tray, the lock, the sense data, a medium change not yet reported.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CdRomState {
    pub media: Option<(PathBuf, u64)>,
    pub tray_open: bool,
    pub locked: bool,
    pub sense: [u8; 3],
    pub unit_attention: bool,
    /// The media event not yet reported (GET EVENT STATUS NOTIFICATION's code).
    pub event: Option<u8>,
}

#[derive(Debug, Default)]
pub struct CdRom {
    media: Option<Media>,
    tray_open: bool,
    /// PREVENT ALLOW MEDIUM REMOVAL's prevent bit.
    locked: bool,
    sense: Sense,
    /// A medium change not yet reported by a command's CHECK CONDITION.
    unit_attention: bool,
    event: Option<MediaEvent>,
    /// Device identification (VPD page 0x83) and serial.
    serial: String,
}

impl CdRom {
    pub fn new(serial: &str) -> Self {
        CdRom {
            serial: serial.chars().filter(char::is_ascii_graphic).take(20).collect(),
            ..Default::default()
        }
    }

    pub fn media(&self) -> Option<&Media> {
        self.media.as_ref()
    }

    pub fn save_state(&self) -> CdRomState {
        CdRomState {
            media: self.media.as_ref().map(|m| (m.path.clone(), m.blocks)),
            tray_open: self.tray_open,
            locked: self.locked,
            sense: [self.sense.key, self.sense.asc, self.sense.ascq],
            unit_attention: self.unit_attention,
            event: self.event.map(|e| e as u8),
        }
    }

    /// Whether this drive can take `state`: the disc must be the one this drive was given
    /// (from the VM's settings), or none (a saved empty drive lets go of a disc it was
    /// given). Returns the media event it holds.
    fn check_state(&self, state: &CdRomState) -> Result<Option<MediaEvent>, String> {
        let here = self.media.as_ref().map(|m| (m.path.clone(), m.blocks));
        if let Some(saved) = &state.media
            && here.as_ref() != Some(saved)
        {
            let has = here.map_or("no disc".to_string(), |(p, _)| p.display().to_string());
            return Err(format!(
                "the saved machine had {} in its CD drive; this one has {has}",
                saved.0.display()
            ));
        }
        Ok(match state.event {
            None => None,
            Some(0) => Some(MediaEvent::None),
            Some(1) => Some(MediaEvent::EjectRequest),
            Some(2) => Some(MediaEvent::NewMedia),
            Some(3) => Some(MediaEvent::MediaRemoval),
            Some(code) => return Err(format!("media event {code}")),
        })
    }

    /// Whether this drive can take `state` (see `restore_state`).
    pub fn can_take(&self, state: &CdRomState) -> Result<(), String> {
        self.check_state(state).map(|_| ())
    }

    /// Takes a saved state (see `check_state`), or nothing of it.
    pub fn restore_state(&mut self, state: &CdRomState) -> Result<(), String> {
        let event = self.check_state(state)?;
        if state.media.is_none() {
            self.media = None;
        }
        self.tray_open = state.tray_open && self.media.is_none();
        self.locked = state.locked;
        let [key, asc, ascq] = state.sense;
        self.sense = Sense { key, asc, ascq };
        self.unit_attention = state.unit_attention;
        self.event = event;
        Ok(())
    }

    /// The drive's serial number (INQUIRY page 0x80, IDENTIFY).
    pub fn serial(&self) -> &str {
        &self.serial
    }

    pub fn locked(&self) -> bool {
        self.locked
    }

    /// Puts a disc in (closing the tray); the guest sees a medium change.
    pub fn insert(&mut self, media: Media) {
        self.media = Some(media);
        self.tray_open = false;
        self.unit_attention = true;
        self.event = Some(MediaEvent::NewMedia);
    }

    /// Puts `media` in place of what the drive holds (the host's "insert" on a drive that
    /// may be full). A swap takes the old disc out first, so a locked tray with a disc in
    /// refuses it unless `force`, as `eject` does: the guest hears an eject request and may
    /// unlock. An empty or unlocked drive just takes the new disc.
    pub fn swap(&mut self, media: Media, force: bool) -> Result<(), MediaError> {
        if self.media.is_some() {
            self.eject(force)?;
        }
        self.insert(media);
        Ok(())
    }

    /// Takes the disc out. With the tray locked and without `force`, nothing moves: the
    /// guest gets an eject request (its software may unlock and eject) and this says why.
    pub fn eject(&mut self, force: bool) -> Result<Option<Media>, MediaError> {
        if self.locked && !force {
            self.event = Some(MediaEvent::EjectRequest);
            return Err(MediaError::Locked);
        }
        Ok(self.remove())
    }

    fn remove(&mut self) -> Option<Media> {
        let media = self.media.take();
        self.tray_open = true;
        if media.is_some() {
            self.unit_attention = true;
            self.event = Some(MediaEvent::MediaRemoval);
        }
        media
    }

    /// The sense data of the last CHECK CONDITION.
    pub fn sense(&self) -> Sense {
        self.sense
    }

    fn check(&mut self, key: u8, (asc, ascq): (u8, u8)) -> Outcome {
        self.sense = Sense { key, asc, ascq };
        Outcome::Check
    }

    fn not_ready(&mut self) -> Outcome {
        let why = if self.tray_open { NO_MEDIUM_TRAY_OPEN } else { NO_MEDIUM_TRAY_CLOSED };
        self.check(NOT_READY, why)
    }

    /// Reads block `lba` of the disc into `buf` (2048 bytes); false on a read error (the
    /// transport then ends the command with `read_failed`).
    pub fn read_block(&self, lba: u64, buf: &mut [u8]) -> bool {
        match &self.media {
            Some(m) if lba < m.blocks && buf.len() == BLOCK as usize => {
                m.file.read_exact_at(buf, lba * BLOCK).is_ok()
            }
            _ => false,
        }
    }

    /// Reads whole blocks from `lba` on straight into `out` (guest memory, a multiple of
    /// 2048 bytes long); false on a read error or past the disc's end.
    pub fn read_blocks_into<B: vm_memory::bitmap::BitmapSlice>(
        &self,
        lba: u64,
        out: &vm_memory::VolatileSlice<'_, B>,
    ) -> bool {
        use std::os::fd::AsRawFd;
        let len = out.len();
        let blocks = len as u64 / BLOCK;
        let Some(m) = &self.media else { return false };
        if !(len as u64).is_multiple_of(BLOCK)
            || lba.checked_add(blocks).is_none_or(|end| end > m.blocks)
        {
            return false;
        }
        let guard = out.ptr_guard_mut();
        let mut done = 0;
        while done < len {
            let at = (lba * BLOCK + done as u64) as libc::off_t;
            // SAFETY: `guard` points at `len` bytes of mapped guest memory that `out`
            // covers, and the kernel writes at most `len - done` bytes from `done` on. No
            // Rust reference to that memory exists (the guest may change it meanwhile).
            let n = unsafe {
                libc::pread(m.file.as_raw_fd(), guard.as_ptr().add(done).cast(), len - done, at)
            };
            match n {
                n if n > 0 => done += n as usize,
                0 => return false, // the file shrank under us
                _ if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted => {}
                _ => return false,
            }
        }
        // Written behind vm-memory's back: the written-pages bitmap is told (migration).
        vm_memory::bitmap::Bitmap::mark_dirty(out.bitmap(), 0, len);
        true
    }

    /// Ends a read that `read_block` could not complete.
    pub fn read_failed(&mut self) -> Outcome {
        self.check(MEDIUM_ERROR, UNRECOVERED_READ_ERROR)
    }

    /// Runs one command (a 12- or 16-byte CDB, zero-padded).
    pub fn execute(&mut self, cdb: &[u8]) -> Outcome {
        let mut c = [0u8; 16];
        let n = cdb.len().min(16);
        c[..n].copy_from_slice(&cdb[..n]);
        let opcode = c[0];
        // These work whatever the medium's state (SPC-4 §5.14: INQUIRY and REQUEST SENSE
        // never report a unit attention; GET EVENT STATUS is how guests poll for changes).
        match opcode {
            INQUIRY => return self.inquiry(&c),
            REQUEST_SENSE => return self.request_sense(&c),
            GET_EVENT_STATUS => return self.event_status(&c),
            GET_CONFIGURATION => return self.configuration(&c),
            _ => {}
        }
        if self.unit_attention {
            self.unit_attention = false;
            return self.check(UNIT_ATTENTION, MEDIUM_CHANGED);
        }
        self.sense = Sense::default();
        match opcode {
            TEST_UNIT_READY => {
                if self.media.is_some() {
                    Outcome::Done
                } else {
                    self.not_ready()
                }
            }
            READ_CAPACITY => match &self.media {
                Some(m) => {
                    let last = u32::try_from(m.blocks - 1).unwrap_or(u32::MAX);
                    let mut d = last.to_be_bytes().to_vec();
                    d.extend_from_slice(&(BLOCK as u32).to_be_bytes());
                    Outcome::Data(d)
                }
                None => self.not_ready(),
            },
            READ_10 | READ_12 => {
                let lba = u64::from(u32::from_be_bytes([c[2], c[3], c[4], c[5]]));
                let blocks = if opcode == READ_10 {
                    u64::from(u16::from_be_bytes([c[7], c[8]]))
                } else {
                    u64::from(u32::from_be_bytes([c[6], c[7], c[8], c[9]]))
                };
                match &self.media {
                    None => self.not_ready(),
                    Some(m) if lba.saturating_add(blocks) > m.blocks => {
                        self.check(ILLEGAL_REQUEST, LBA_OUT_OF_RANGE)
                    }
                    Some(_) if blocks == 0 => Outcome::Done,
                    Some(_) => Outcome::Read { lba, blocks },
                }
            }
            READ_TOC => self.read_toc(&c),
            READ_DISC_INFORMATION => self.disc_information(&c),
            MODE_SENSE_6 | MODE_SENSE_10 => self.mode_sense(&c),
            START_STOP_UNIT => self.start_stop(&c),
            PREVENT_ALLOW => {
                self.locked = c[4] & 1 != 0;
                Outcome::Done
            }
            MECHANISM_STATUS => {
                // No changer: the 8-byte header with the current slot 0 (MMC-6 §6.11).
                let mut d = vec![0u8; 8];
                if self.tray_open {
                    d[1] = 0x10; // door open
                }
                let alloc = usize::from(u16::from_be_bytes([c[8], c[9]]));
                Outcome::Data(cut(d, alloc))
            }
            SET_SPEED => Outcome::Done,
            _ => self.check(ILLEGAL_REQUEST, INVALID_OPCODE),
        }
    }

    fn request_sense(&mut self, c: &[u8; 16]) -> Outcome {
        // A pending unit attention is reported (and cleared) here too (SPC-4 §5.14).
        let sense = if self.unit_attention {
            self.unit_attention = false;
            Sense { key: UNIT_ATTENTION, asc: MEDIUM_CHANGED.0, ascq: MEDIUM_CHANGED.1 }
        } else if self.media.is_none() {
            let (asc, ascq) =
                if self.tray_open { NO_MEDIUM_TRAY_OPEN } else { NO_MEDIUM_TRAY_CLOSED };
            Sense { key: NOT_READY, asc, ascq }
        } else {
            self.sense
        };
        self.sense = Sense::default();
        Outcome::Data(cut(fixed_sense(sense).to_vec(), usize::from(c[4])))
    }

    fn inquiry(&mut self, c: &[u8; 16]) -> Outcome {
        let alloc = usize::from(u16::from_be_bytes([c[3], c[4]]));
        let evpd = c[1] & 1 != 0;
        if !evpd {
            if c[2] != 0 {
                return self.check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB);
            }
            let mut d = vec![0u8; 36];
            d[0] = 0x05; // peripheral device type: CD/DVD
            d[1] = 0x80; // removable
            d[2] = 0x05; // SPC-3
            d[3] = 0x02; // response data format 2
            d[4] = 31; // additional length
            d[8..16].copy_from_slice(b"VESSEL  ");
            d[16..32].copy_from_slice(b"Virtual CD-ROM  ");
            d[32..36].copy_from_slice(b"1.0 ");
            return Outcome::Data(cut(d, alloc));
        }
        let page = c[2];
        let body: Vec<u8> = match page {
            0x00 => vec![0x00, 0x80, 0x83], // the pages supported
            0x80 => self.serial.as_bytes().to_vec(),
            0x83 => {
                // One T10 vendor ID designator (ASCII): vendor, then the serial.
                let mut id = b"VESSEL  ".to_vec();
                id.extend_from_slice(self.serial.as_bytes());
                let mut d = vec![0x02, 0x01, 0x00, id.len() as u8];
                d.extend_from_slice(&id);
                d
            }
            _ => return self.check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB),
        };
        let mut d = vec![0x05, page];
        d.extend_from_slice(&(body.len() as u16).to_be_bytes());
        d.extend_from_slice(&body);
        Outcome::Data(cut(d, alloc))
    }

    fn read_toc(&mut self, c: &[u8; 16]) -> Outcome {
        let Some(m) = &self.media else { return self.not_ready() };
        let msf = c[1] & 0x02 != 0;
        let format = c[2] & 0x0f;
        let track = c[6];
        let alloc = usize::from(u16::from_be_bytes([c[7], c[8]]));
        let address = |lba: u64| -> [u8; 4] {
            if msf {
                // MSF with the 2-second lead-in (MMC-6 §6.26.3.2.3).
                let frames = lba + 150;
                [0, (frames / (75 * 60)) as u8, ((frames / 75) % 60) as u8, (frames % 75) as u8]
            } else {
                (lba as u32).to_be_bytes()
            }
        };
        let leadout = m.blocks;
        let mut d = vec![0u8; 4];
        match format {
            0 => {
                // One data track, then the lead-out (0xAA).
                if track > 1 && track != 0xaa {
                    return self.check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB);
                }
                d[2] = 1; // first track
                d[3] = 1; // last track
                if track <= 1 {
                    d.extend_from_slice(&[0, 0x14, 1, 0]); // ADR 1, data track, track 1
                    d.extend_from_slice(&address(0));
                }
                d.extend_from_slice(&[0, 0x14, 0xaa, 0]);
                d.extend_from_slice(&address(leadout));
            }
            1 => {
                // Session information: one session, its first track at 0.
                d[2] = 1;
                d[3] = 1;
                d.extend_from_slice(&[0, 0x14, 1, 0]);
                d.extend_from_slice(&address(0));
            }
            2 => {
                // Full TOC (raw): A0 (first track), A1 (last track), A2 (lead-out), track 1.
                d[2] = 1;
                d[3] = 1;
                let msf_of = |lba: u64| {
                    let f = lba + 150;
                    [(f / (75 * 60)) as u8, ((f / 75) % 60) as u8, (f % 75) as u8]
                };
                for (point, pmsf) in [
                    (0xa0u8, [1, 0, 0]),
                    (0xa1, [1, 0, 0]),
                    (0xa2, msf_of(leadout)),
                    (1, msf_of(0)),
                ] {
                    d.extend_from_slice(&[1, 0x14, 0, point, 0, 0, 0, 0]);
                    d.extend_from_slice(&pmsf);
                }
            }
            _ => return self.check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB),
        }
        let len = (d.len() - 2) as u16;
        d[0..2].copy_from_slice(&len.to_be_bytes());
        Outcome::Data(cut(d, alloc))
    }

    fn disc_information(&mut self, c: &[u8; 16]) -> Outcome {
        if self.media.is_none() {
            return self.not_ready();
        }
        if c[1] & 0x07 != 0 {
            return self.check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB); // only standard data
        }
        let alloc = usize::from(u16::from_be_bytes([c[7], c[8]]));
        let mut d = vec![0u8; 34];
        d[0..2].copy_from_slice(&32u16.to_be_bytes());
        d[2] = 0x0e; // last session complete, disc finalized (complete)
        d[3] = 1; // first track
        d[4] = 1; // sessions (LSB)
        d[5] = 1; // first track in last session
        d[6] = 1; // last track in last session
        d[7] = 0x20; // unrestricted use
        d[8] = 0x00; // disc type: CD-DA or CD-ROM
        Outcome::Data(cut(d, alloc))
    }

    fn mode_sense(&mut self, c: &[u8; 16]) -> Outcome {
        let ten = c[0] == MODE_SENSE_10;
        let page = c[2] & 0x3f;
        let control = c[2] >> 6;
        if control == 3 {
            return self.check(ILLEGAL_REQUEST, (0x39, 0x00)); // saving parameters not supported
        }
        let mut pages = Vec::new();
        if page == 0x01 || page == 0x3f {
            // Read-write error recovery: defaults.
            pages.extend_from_slice(&[0x01, 0x0a, 0, 5, 0, 0, 0, 0, 5, 0, 0, 0]);
        }
        if page == 0x2a || page == 0x3f {
            // MM capabilities and mechanical status (MMC-3 §6.3.11, as Linux's sr reads it).
            let mut p = vec![0u8; 22];
            p[0] = 0x2a;
            p[1] = 20;
            p[2] = 0x01; // reads CD-R
            p[4] = 0x71; // audio play, mode 2 form 1/2, multisession
            p[5] = 0x7f; // CD-DA, accurate stream, R-W, C2, ISRC, UPC, barcode
            p[6] = 0x29 | if self.locked { 0x02 } else { 0 }; // eject, lock, tray loader
            p[7] = 0x03; // separate volume, separate mute
            p[8..10].copy_from_slice(&(176u16 * 24).to_be_bytes()); // max speed (kB/s, 24x)
            p[10..12].copy_from_slice(&256u16.to_be_bytes()); // volume levels
            p[12..14].copy_from_slice(&2048u16.to_be_bytes()); // buffer size (KB)
            p[14..16].copy_from_slice(&(176u16 * 24).to_be_bytes()); // current speed
            pages.extend_from_slice(&p);
        }
        if pages.is_empty() {
            return self.check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB);
        }
        let medium = if self.media.is_some() { 0x01 } else { 0x70 }; // 120 mm data / no disc
        let (mut d, alloc) = if ten {
            let mut h = vec![0u8; 8];
            h[0..2].copy_from_slice(&((6 + pages.len()) as u16).to_be_bytes());
            h[2] = medium;
            (h, usize::from(u16::from_be_bytes([c[7], c[8]])))
        } else {
            (vec![(3 + pages.len()) as u8, medium, 0, 0], usize::from(c[4]))
        };
        d.extend_from_slice(&pages);
        Outcome::Data(cut(d, alloc))
    }

    fn start_stop(&mut self, c: &[u8; 16]) -> Outcome {
        let (start, load_eject) = (c[4] & 1 != 0, c[4] & 2 != 0);
        if !load_eject {
            return Outcome::Done; // spin up or down: nothing to do
        }
        if start {
            self.tray_open = false; // load: close the tray (an empty drive stays empty)
            return Outcome::Done;
        }
        if self.locked {
            return self.check(ILLEGAL_REQUEST, REMOVAL_PREVENTED);
        }
        // The guest ejected: it knows, so no unit attention, only the media event.
        let had = self.media.is_some();
        self.media = None;
        self.tray_open = true;
        if had {
            self.event = Some(MediaEvent::MediaRemoval);
        }
        Outcome::Done
    }

    fn event_status(&mut self, c: &[u8; 16]) -> Outcome {
        if c[1] & 1 == 0 {
            // Only polled operation (MMC-6 §6.7.2.1).
            return self.check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB);
        }
        let alloc = usize::from(u16::from_be_bytes([c[7], c[8]]));
        let classes = c[4];
        let mut d = vec![0u8; 4];
        d[3] = 1 << 4; // supported classes: media
        if classes & (1 << 4) == 0 {
            d[2] = 0x80; // no event available for the classes asked
            return Outcome::Data(cut(d, alloc));
        }
        d[2] = 4; // media class
        let event = self.event.take().unwrap_or(MediaEvent::None);
        let status = u8::from(self.tray_open) | if self.media.is_some() { 0x02 } else { 0 };
        d.extend_from_slice(&[event as u8, status, 0, 0]);
        d[0..2].copy_from_slice(&4u16.to_be_bytes());
        Outcome::Data(cut(d, alloc))
    }

    fn configuration(&mut self, c: &[u8; 16]) -> Outcome {
        let rt = c[1] & 0x03;
        let start = u16::from_be_bytes([c[2], c[3]]);
        let alloc = usize::from(u16::from_be_bytes([c[7], c[8]]));
        let current = if self.media.is_some() { PROFILE_CD_ROM } else { 0 };
        let feature = |code: u16, version_flags: u8, data: &[u8]| {
            let mut f = code.to_be_bytes().to_vec();
            f.push(version_flags);
            f.push(data.len() as u8);
            f.extend_from_slice(data);
            f
        };
        let cur = if current != 0 { 0x01 } else { 0 };
        // (feature code, descriptor); a descriptor's byte 2 bit 0 says "current".
        let features: Vec<(u16, Vec<u8>)> = vec![
            (0x0000, feature(0x0000, 0x03, &[0x00, 0x08, u8::from(current != 0), 0])), // profile list
            (0x0001, feature(0x0001, 0x0b, &[0, 0, 0, 2, 0, 0, 0, 0])), // core: ATAPI
            (0x0002, feature(0x0002, 0x07, &[0x02, 0, 0, 0])),          // morphing: async
            (0x0003, feature(0x0003, 0x03, &[0x29 | if self.locked { 2 } else { 0 }, 0, 0, 0])), // removable
            (0x0010, feature(0x0010, cur, &[0, 0, 8, 0, 0, 1, 0, 0])), // random readable
            (0x001e, feature(0x001e, 0x08 | cur, &[0, 0, 0, 0])),      // CD read
        ];
        let mut d = vec![0u8; 8];
        d[6..8].copy_from_slice(&current.to_be_bytes());
        for (code, f) in features {
            let wanted = match rt {
                0 => code >= start,
                1 => code >= start && (f[2] & 1 != 0),
                2 => code == start,
                _ => return self.check(ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB),
            };
            if wanted {
                d.extend_from_slice(&f);
            }
        }
        let len = (d.len() - 4) as u32;
        d[0..4].copy_from_slice(&len.to_be_bytes());
        Outcome::Data(cut(d, alloc))
    }
}

/// Fixed-format sense data (SPC-4 §4.5.3).
fn fixed_sense(s: Sense) -> [u8; 18] {
    let mut d = [0u8; 18];
    d[0] = 0x70; // current error, fixed format
    d[2] = s.key;
    d[7] = 10; // additional length
    d[12] = s.asc;
    d[13] = s.ascq;
    d
}

/// `data` cut to an allocation length.
fn cut(mut data: Vec<u8>, alloc: usize) -> Vec<u8> {
    data.truncate(alloc);
    data
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iso(blocks: u64) -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "vessel-mmc-{}-{}.iso",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let data: Vec<u8> = (0..blocks * BLOCK).map(|i| (i / BLOCK) as u8 ^ (i as u8)).collect();
        std::fs::write(&path, data).unwrap();
        path
    }

    fn drive_with(blocks: u64) -> CdRom {
        let mut cd = CdRom::new("vessel-cd0");
        cd.insert(Media::open(&iso(blocks)).unwrap());
        // The medium change is reported once.
        assert_eq!(cd.execute(&[TEST_UNIT_READY]), Outcome::Check);
        assert_eq!(cd.sense(), Sense { key: UNIT_ATTENTION, asc: 0x28, ascq: 0 });
        cd
    }

    fn data(o: Outcome) -> Vec<u8> {
        match o {
            Outcome::Data(d) => d,
            other => panic!("data expected, got {other:?}"),
        }
    }

    fn check(cd: &mut CdRom, cdb: &[u8], key: u8, asc: (u8, u8)) {
        assert_eq!(cd.execute(cdb), Outcome::Check, "{cdb:x?}");
        assert_eq!(cd.sense(), Sense { key, asc: asc.0, ascq: asc.1 }, "{cdb:x?}");
    }

    #[test]
    fn an_empty_drive() {
        let mut cd = CdRom::new("cd");
        check(&mut cd, &[TEST_UNIT_READY], NOT_READY, NO_MEDIUM_TRAY_CLOSED);
        check(&mut cd, &[READ_CAPACITY], NOT_READY, NO_MEDIUM_TRAY_CLOSED);
        check(&mut cd, &[READ_10, 0, 0, 0, 0, 0, 0, 0, 1, 0], NOT_READY, NO_MEDIUM_TRAY_CLOSED);
        check(&mut cd, &[READ_TOC, 0, 0, 0, 0, 0, 0, 0, 12, 0], NOT_READY, NO_MEDIUM_TRAY_CLOSED);
        let sense = data(cd.execute(&[REQUEST_SENSE, 0, 0, 0, 18, 0]));
        assert_eq!((sense[0], sense[2], sense[12], sense[13]), (0x70, NOT_READY, 0x3a, 0x01));
        // INQUIRY works without a disc.
        let inq = data(cd.execute(&[INQUIRY, 0, 0, 0, 36, 0]));
        assert_eq!((inq[0], inq[1]), (0x05, 0x80));
        assert_eq!(&inq[8..16], b"VESSEL  ");
        assert_eq!(data(cd.execute(&[INQUIRY, 0, 0, 0, 5, 0])).len(), 5, "allocation length");
        // The current profile is none.
        let conf = data(cd.execute(&[GET_CONFIGURATION, 0, 0, 0, 0, 0, 0, 0, 255, 0]));
        assert_eq!(&conf[6..8], &[0, 0]);
    }

    #[test]
    fn reads_capacity_and_blocks() {
        let mut cd = drive_with(20);
        assert_eq!(cd.execute(&[TEST_UNIT_READY]), Outcome::Done);
        assert_eq!(data(cd.execute(&[READ_CAPACITY])), [0, 0, 0, 19, 0, 0, 8, 0]);
        assert_eq!(
            cd.execute(&[READ_10, 0, 0, 0, 0, 16, 0, 0, 4, 0]),
            Outcome::Read { lba: 16, blocks: 4 }
        );
        assert_eq!(
            cd.execute(&[READ_12, 0, 0, 0, 0, 2, 0, 0, 0, 18, 0, 0]),
            Outcome::Read { lba: 2, blocks: 18 }
        );
        assert_eq!(cd.execute(&[READ_10, 0, 0, 0, 0, 5, 0, 0, 0, 0]), Outcome::Done);
        let mut block = vec![0u8; 2048];
        assert!(cd.read_block(16, &mut block));
        assert_eq!((block[0], block[1], block[2047]), (16, 17, 16 ^ 0xff));
        assert!(!cd.read_block(20, &mut block), "past the end");
        assert!(!cd.read_block(0, &mut block[..100]), "short buffer");
        // Past the end, and overflowing: LBA out of range.
        check(&mut cd, &[READ_10, 0, 0, 0, 0, 19, 0, 0, 2, 0], ILLEGAL_REQUEST, LBA_OUT_OF_RANGE);
        check(
            &mut cd,
            &[READ_12, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0, 0],
            ILLEGAL_REQUEST,
            LBA_OUT_OF_RANGE,
        );
        let sense = data(cd.execute(&[REQUEST_SENSE, 0, 0, 0, 252, 0]));
        assert_eq!((sense[2], sense[12]), (ILLEGAL_REQUEST, 0x21));
        assert_eq!(data(cd.execute(&[REQUEST_SENSE, 0, 0, 0, 252, 0]))[2], 0, "cleared");
    }

    #[test]
    fn unknown_and_malformed_commands() {
        let mut cd = drive_with(4);
        for opcode in [0x0a, 0x2a, 0x35, 0x55, 0xff, 0x04] {
            check(&mut cd, &[opcode, 0xff, 0xff], ILLEGAL_REQUEST, INVALID_OPCODE);
        }
        check(&mut cd, &[INQUIRY, 1, 0x42, 0, 255, 0], ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB);
        check(&mut cd, &[INQUIRY, 0, 0x80, 0, 255, 0], ILLEGAL_REQUEST, INVALID_FIELD_IN_CDB);
        check(
            &mut cd,
            &[READ_TOC, 0, 7, 0, 0, 0, 0, 0, 255, 0],
            ILLEGAL_REQUEST,
            INVALID_FIELD_IN_CDB,
        );
        check(
            &mut cd,
            &[READ_TOC, 0, 0, 0, 0, 0, 5, 0, 255, 0],
            ILLEGAL_REQUEST,
            INVALID_FIELD_IN_CDB,
        );
        check(
            &mut cd,
            &[MODE_SENSE_10, 0, 0x05, 0, 0, 0, 0, 0, 255, 0],
            ILLEGAL_REQUEST,
            INVALID_FIELD_IN_CDB,
        );
        check(
            &mut cd,
            &[MODE_SENSE_10, 0, 0xea, 0, 0, 0, 0, 0, 255, 0],
            ILLEGAL_REQUEST,
            (0x39, 0),
        );
        check(
            &mut cd,
            &[GET_EVENT_STATUS, 0, 0, 0, 0x10, 0, 0, 0, 8, 0],
            ILLEGAL_REQUEST,
            INVALID_FIELD_IN_CDB,
        );
        check(
            &mut cd,
            &[GET_CONFIGURATION, 3, 0, 0, 0, 0, 0, 0, 255, 0],
            ILLEGAL_REQUEST,
            INVALID_FIELD_IN_CDB,
        );
        check(
            &mut cd,
            &[READ_DISC_INFORMATION, 1, 0, 0, 0, 0, 0, 0, 34, 0],
            ILLEGAL_REQUEST,
            INVALID_FIELD_IN_CDB,
        );
        // Short and empty CDBs read as zero-padded.
        assert_eq!(cd.execute(&[]), Outcome::Done, "an empty CDB is TEST UNIT READY");
        assert_eq!(data(cd.execute(&[READ_CAPACITY])).len(), 8);
        assert!(matches!(cd.execute(&[0u8; 40]), Outcome::Done));
    }

    #[test]
    fn inquiry_vpd_pages() {
        let mut cd = drive_with(4);
        assert_eq!(
            data(cd.execute(&[INQUIRY, 1, 0x00, 0, 255, 0])),
            [0x05, 0, 0, 3, 0, 0x80, 0x83]
        );
        let serial = data(cd.execute(&[INQUIRY, 1, 0x80, 0, 255, 0]));
        assert_eq!(&serial[4..], b"vessel-cd0");
        let ids = data(cd.execute(&[INQUIRY, 1, 0x83, 0, 255, 0]));
        assert_eq!((ids[1], ids[4], ids[5]), (0x83, 0x02, 0x01), "a T10 vendor ID, ASCII");
        assert_eq!(&ids[8..16], b"VESSEL  ");
        assert_eq!(usize::from(ids[7]), ids.len() - 8);
    }

    #[test]
    fn toc_disc_information_mode_page_and_configuration() {
        let mut cd = drive_with(300);
        let toc = data(cd.execute(&[READ_TOC, 0, 0, 0, 0, 0, 0, 0, 255, 0]));
        assert_eq!(toc, [0, 18, 1, 1, 0, 0x14, 1, 0, 0, 0, 0, 0, 0, 0x14, 0xaa, 0, 0, 0, 1, 0x2c]);
        let msf = data(cd.execute(&[READ_TOC, 2, 0, 0, 0, 0, 0, 0, 255, 0]));
        // Lead-out at 300 + 150 frames = 0:06:00.
        assert_eq!(&msf[16..20], &[0, 0, 6, 0]);
        assert_eq!(&msf[8..12], &[0, 0, 2, 0], "track 1 at 0:02:00");
        let session = data(cd.execute(&[READ_TOC, 0, 1, 0, 0, 0, 0, 0, 255, 0]));
        assert_eq!(session.len(), 12);
        let full = data(cd.execute(&[READ_TOC, 0, 2, 0, 0, 0, 0, 0, 255, 0]));
        assert_eq!(full.len(), 4 + 4 * 11);
        let info = data(cd.execute(&[READ_DISC_INFORMATION, 0, 0, 0, 0, 0, 0, 0, 34, 0]));
        assert_eq!((info[2] & 3, info[3], info[6]), (2, 1, 1), "complete, one track");
        let page = data(cd.execute(&[MODE_SENSE_10, 0, 0x2a, 0, 0, 0, 0, 0, 255, 0]));
        assert_eq!((page[8], page[9]), (0x2a, 20));
        assert_eq!(u16::from_be_bytes([page[0], page[1]]) as usize, page.len() - 2);
        let six = data(cd.execute(&[MODE_SENSE_6, 0, 0x3f, 0, 255, 0]));
        assert_eq!(six[0] as usize, six.len() - 1);
        assert!(
            six.windows(2).any(|w| w == [0x2a, 20]) && six.windows(2).any(|w| w == [0x01, 0x0a])
        );
        let conf = data(cd.execute(&[GET_CONFIGURATION, 0, 0, 0, 0, 0, 0, 0, 255, 0]));
        assert_eq!(&conf[6..8], &PROFILE_CD_ROM.to_be_bytes());
        assert_eq!(u32::from_be_bytes(conf[0..4].try_into().unwrap()) as usize, conf.len() - 4);
        let one = data(cd.execute(&[GET_CONFIGURATION, 2, 0, 0x1e, 0, 0, 0, 0, 255, 0]));
        assert_eq!((one.len(), &one[8..10]), (16, &[0, 0x1e][..]));
        assert_eq!(data(cd.execute(&[MECHANISM_STATUS, 0, 0, 0, 0, 0, 0, 0, 0, 8, 0, 0])).len(), 8);
        assert_eq!(cd.execute(&[SET_SPEED, 0, 0xff, 0xff, 0xff, 0xff]), Outcome::Done);
    }

    #[test]
    fn media_change_swap_eject_and_the_locked_tray() {
        let mut cd = drive_with(8);
        let poll = |cd: &mut CdRom| {
            let d = data(cd.execute(&[GET_EVENT_STATUS, 1, 0, 0, 0x10, 0, 0, 0, 8, 0]));
            (d[4], d[5])
        };
        assert_eq!(poll(&mut cd), (2, 0x02), "new media, present");
        assert_eq!(poll(&mut cd), (0, 0x02), "reported once");
        // The guest locks the tray: the host's eject becomes a request.
        assert_eq!(cd.execute(&[PREVENT_ALLOW, 0, 0, 0, 1, 0]), Outcome::Done);
        assert!(matches!(cd.eject(false), Err(MediaError::Locked)));
        assert!(cd.media().is_some());
        assert_eq!(poll(&mut cd), (1, 0x02), "eject request");
        check(&mut cd, &[START_STOP_UNIT, 0, 0, 0, 2, 0], ILLEGAL_REQUEST, REMOVAL_PREVENTED);
        // The guest unlocks and ejects itself.
        assert_eq!(cd.execute(&[PREVENT_ALLOW, 0, 0, 0, 0, 0]), Outcome::Done);
        assert_eq!(cd.execute(&[START_STOP_UNIT, 0, 0, 0, 2, 0]), Outcome::Done);
        assert!(cd.media().is_none());
        assert_eq!(poll(&mut cd), (3, 0x01), "removal, tray open");
        check(&mut cd, &[TEST_UNIT_READY], NOT_READY, NO_MEDIUM_TRAY_OPEN);
        // The host swaps another disc in: unit attention, then ready.
        cd.insert(Media::open(&iso(4)).unwrap());
        check(&mut cd, &[READ_CAPACITY], UNIT_ATTENTION, MEDIUM_CHANGED);
        assert_eq!(data(cd.execute(&[READ_CAPACITY])), [0, 0, 0, 3, 0, 0, 8, 0]);
        // A forced eject works even locked.
        cd.execute(&[PREVENT_ALLOW, 0, 0, 0, 1, 0]);
        assert!(cd.eject(true).unwrap().is_some());
        let sense = data(cd.execute(&[REQUEST_SENSE, 0, 0, 0, 18, 0]));
        assert_eq!((sense[2], sense[12]), (UNIT_ATTENTION, 0x28), "the change first");
        check(&mut cd, &[TEST_UNIT_READY], NOT_READY, NO_MEDIUM_TRAY_OPEN);
        // LOAD closes the tray.
        assert_eq!(cd.execute(&[START_STOP_UNIT, 0, 0, 0, 3, 0]), Outcome::Done);
        check(&mut cd, &[TEST_UNIT_READY], NOT_READY, NO_MEDIUM_TRAY_CLOSED);
    }

    #[test]
    fn a_swap_respects_the_locked_tray_unless_forced() {
        let mut cd = CdRom::new("swap");
        // An empty drive takes a disc even locked: nothing has to come out.
        cd.execute(&[PREVENT_ALLOW, 0, 0, 0, 1, 0]);
        cd.swap(Media::open(&iso(2)).unwrap(), false).unwrap();
        assert_eq!(cd.media().map(Media::blocks), Some(2));
        // Full and locked: refused, the disc stays, the guest is asked to eject.
        assert!(matches!(cd.swap(Media::open(&iso(3)).unwrap(), false), Err(MediaError::Locked)));
        assert_eq!(cd.media().map(Media::blocks), Some(2));
        // Forced: the new disc is in.
        cd.swap(Media::open(&iso(3)).unwrap(), true).unwrap();
        assert_eq!(cd.media().map(Media::blocks), Some(3));
        // Unlocked (once the guest has heard of the change): a plain swap.
        check(&mut cd, &[TEST_UNIT_READY], UNIT_ATTENTION, MEDIUM_CHANGED);
        assert_eq!(cd.execute(&[PREVENT_ALLOW, 0, 0, 0, 0, 0]), Outcome::Done);
        cd.swap(Media::open(&iso(4)).unwrap(), false).unwrap();
        assert_eq!(cd.media().map(Media::blocks), Some(4));
    }

    #[test]
    fn media_must_be_iso_sized_and_is_locked_shared() {
        let path = std::env::temp_dir().join(format!("vessel-mmc-odd-{}.iso", std::process::id()));
        std::fs::write(&path, [0u8; 1000]).unwrap();
        assert!(matches!(Media::open(&path), Err(MediaError::NotIso { size: 1000, .. })));
        assert!(matches!(Media::open(Path::new("/nonexistent.iso")), Err(MediaError::Open { .. })));
        // A FIFO named as the ISO: refused at once, not waited on for a writer.
        let fifo = path.with_extension("fifo");
        let _ = std::fs::remove_file(&fifo);
        let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated path; the result is checked.
        assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
        assert!(matches!(Media::open(&fifo), Err(MediaError::NotIso { size: 0, .. })));
        assert!(matches!(Media::open(Path::new("/dev/zero")), Err(MediaError::NotIso { .. })));
        let _ = std::fs::remove_file(&fifo);
        let good = iso(2);
        let a = Media::open(&good).unwrap();
        let b = Media::open(&good).unwrap(); // two readers may share it
        assert_eq!((a.blocks(), b.blocks()), (2, 2));
        let writer = std::fs::OpenOptions::new().write(true).open(&good).unwrap();
        assert!(ofd_lock(&writer, &good, true).is_err(), "nobody writes it meanwhile");
    }
}
