//! A PIIX3-compatible IDE controller (PCI 8086:7010, both channels in compatibility mode:
//! ports 0x1F0-0x1F7/0x3F6 on IRQ 14 and 0x170-0x177/0x376 on IRQ 15) with an ATAPI CD-ROM
//! drive on the secondary master, the place firmware and every OS look for it. The drive
//! carries MMC commands (`mmc::CdRom`) in ATAPI PACKETs (ATA8-ACS and ATA8-APT, the
//! "PACKET Command feature set"); their data moves by PIO through the data register, or
//! by bus-master DMA (SFF-8038i, as the PIIX3 does it: BAR4's 16 I/O ports, a command,
//! status and PRD-table register per channel) when the PACKET asks for DMA.
//!
//! The guest drives registers at will, in any order: every access is answered from the
//! task file, transfers never run past their buffers, and a drive that is not there reads
//! as the spec says (0 from a missing device, 0xFF from an empty channel).

use std::sync::atomic::{AtomicU64, Ordering};

use vm_memory::bitmap::BitmapSlice;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, VolatileSlice};
use vmm_sys_util::eventfd::EventFd;

use super::mmc::{BLOCK, CdRom, Outcome};
use crate::devices::bus::BusDevice;
use crate::devices::pci::config::COMMAND_BUS_MASTER;
use crate::devices::pci::{BarInfo, BarKind, PciConfig, PciDevice, PciIds};
use crate::vstate::memory::GuestMem;

/// Command block and control ports of the two channels in compatibility mode.
pub const PRIMARY_CMD: u16 = 0x1f0;
pub const PRIMARY_CTRL: u16 = 0x3f6;
pub const SECONDARY_CMD: u16 = 0x170;
pub const SECONDARY_CTRL: u16 = 0x376;
pub const PRIMARY_IRQ: u32 = 14;
pub const SECONDARY_IRQ: u32 = 15;

// Status bits.
const BSY: u8 = 0x80;
const DRDY: u8 = 0x40;
const DSC: u8 = 0x10;
const DRQ: u8 = 0x08;
const ERR: u8 = 0x01;
// Error bits.
const ABRT: u8 = 0x04;
// Device control bits.
const NIEN: u8 = 0x02;
const SRST: u8 = 0x04;
// ATAPI interrupt reason (the sector count register): CoD and IO.
const IREASON_COD: u8 = 0x01;
const IREASON_IO: u8 = 0x02;

// ATA commands a packet device answers (ATA8-ACS §7).
const DEVICE_RESET: u8 = 0x08;
const EXECUTE_DEVICE_DIAGNOSTIC: u8 = 0x90;
const PACKET: u8 = 0xa0;
const IDENTIFY_PACKET_DEVICE: u8 = 0xa1;
const STANDBY_IMMEDIATE: u8 = 0xe0;
const IDLE_IMMEDIATE: u8 = 0xe1;
const CHECK_POWER_MODE: u8 = 0xe5;
const SET_FEATURES: u8 = 0xef;

const PACKET_BYTES: usize = 12;

// SET FEATURES 0x03 transfer modes (the sector count's high five bits), ATA8-ACS §7.45.9.
const MODE_PIO_DEFAULT: u8 = 0;
const MODE_PIO: u8 = 1;
const MODE_MWDMA: u8 = 4;
const MODE_UDMA: u8 = 8;

/// The bus-master BAR (BAR4): 8 I/O ports per channel.
pub const BUS_MASTER_BAR: usize = 4;
const BUS_MASTER_PORTS: u64 = 16;
// Bus-master command bits.
const BM_START: u8 = 0x01;
const BM_TO_MEMORY: u8 = 0x08;
// Bus-master status bits: active, error, interrupt (both write 1 to clear), and the two
// drives' "DMA capable" bits, which firmware sets and the controller only keeps.
const BM_ACTIVE: u8 = 0x01;
const BM_ERROR: u8 = 0x02;
const BM_INTERRUPT: u8 = 0x04;
const BM_CAPABLE: u8 = 0x60;
/// A PRD table may not cross a 64 KiB boundary, so it has at most 8192 entries.
const PRD_TABLE_SPAN: u64 = 0x1_0000;
/// The most one PRD entry moves (a byte count of 0).
const PRD_MAX: usize = 0x1_0000;
/// ATAPI sense key for a transfer the host ended badly (ABORTED COMMAND).
const SENSE_ABORTED_COMMAND: u8 = 0x0b;

/// What the data register transfers now.
#[derive(Debug)]
enum Phase {
    Idle,
    /// The 12-byte command packet, host to device.
    Packet {
        bytes: [u8; PACKET_BYTES],
        got: usize,
    },
    /// Data to the host from a buffer (IDENTIFY, small MMC replies), in DRQ blocks of at
    /// most `limit` bytes; `packet` says whether it ends with an ATAPI status phase.
    Buffer {
        data: Vec<u8>,
        pos: usize,
        drq_left: usize,
        limit: usize,
        packet: bool,
    },
    /// Disc blocks to the host, read one at a time into `buf` (`pos` = BLOCK: read the
    /// next), `remaining` bytes in all, `drq_left` of them in this DRQ block.
    Blocks {
        lba: u64,
        buf: Box<[u8; BLOCK as usize]>,
        pos: usize,
        remaining: u64,
        drq_left: u64,
        limit: u64,
    },
}

/// A data phase as saved (`Phase`'s fields).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum PhaseState {
    Idle,
    Packet { bytes: Vec<u8>, got: usize },
    Buffer { data: Vec<u8>, pos: usize, drq_left: usize, limit: usize, packet: bool },
    Blocks { lba: u64, buf: Vec<u8>, pos: usize, remaining: u64, drq_left: u64, limit: u64 },
}

/// Longest reply an MMC command gives (its allocation length is 16 bits).
const MAX_REPLY: usize = 0x1_0000;

impl PhaseState {
    fn of(phase: &Phase) -> PhaseState {
        match phase {
            Phase::Idle => PhaseState::Idle,
            Phase::Packet { bytes, got } => PhaseState::Packet { bytes: bytes.to_vec(), got: *got },
            Phase::Buffer { data, pos, drq_left, limit, packet } => PhaseState::Buffer {
                data: data.clone(),
                pos: *pos,
                drq_left: *drq_left,
                limit: *limit,
                packet: *packet,
            },
            Phase::Blocks { lba, buf, pos, remaining, drq_left, limit } => PhaseState::Blocks {
                lba: *lba,
                buf: buf.to_vec(),
                pos: *pos,
                remaining: *remaining,
                drq_left: *drq_left,
                limit: *limit,
            },
        }
    }

    /// The phase, if its numbers are ones a transfer can be at (the data phase's code
    /// indexes and subtracts by them) on a disc of `blocks` blocks.
    fn phase(&self, blocks: u64) -> Result<Phase, String> {
        let bad = || format!("a data transfer no command leaves: {self:?}");
        Ok(match self {
            PhaseState::Idle => Phase::Idle,
            PhaseState::Packet { bytes, got } => {
                let bytes: [u8; PACKET_BYTES] = bytes.as_slice().try_into().map_err(|_| bad())?;
                if *got > PACKET_BYTES {
                    return Err(bad());
                }
                Phase::Packet { bytes, got: *got }
            }
            PhaseState::Buffer { data, pos, drq_left, limit, packet } => {
                if data.len() > MAX_REPLY || *pos > data.len() || *drq_left > data.len() - pos {
                    return Err(bad());
                }
                let (pos, drq_left, limit, packet) = (*pos, *drq_left, *limit, *packet);
                Phase::Buffer { data: data.clone(), pos, drq_left, limit, packet }
            }
            PhaseState::Blocks { lba, buf, pos, remaining, drq_left, limit } => {
                let buf: [u8; BLOCK as usize] = buf.as_slice().try_into().map_err(|_| bad())?;
                let whole = |bytes: u64| bytes.div_ceil(BLOCK);
                let ok = *pos <= BLOCK as usize
                    && remaining.checked_add(*pos as u64).is_some_and(|n| n.is_multiple_of(BLOCK))
                    && *drq_left <= *remaining
                    && *drq_left <= *limit
                    && lba.checked_add(whole(*remaining)).is_some_and(|end| end <= blocks);
                if !ok {
                    return Err(bad());
                }
                Phase::Blocks {
                    lba: *lba,
                    buf: Box::new(buf),
                    pos: *pos,
                    remaining: *remaining,
                    drq_left: *drq_left,
                    limit: *limit,
                }
            }
        })
    }
}

/// The drive's state: its task file, data phase, transfer mode and its MMC core's.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct AtapiDriveState {
    pub task_file: [u8; 8],
    pub phase: PhaseState,
    pub dma: bool,
    pub transfer_mode: u8,
    pub cd: crate::devices::storage::mmc::CdRomState,
}

/// The ATAPI CD-ROM drive: its task file and transfer state around the MMC core.
pub struct AtapiDrive {
    pub cd: CdRom,
    error: u8,
    features: u8,
    count: u8,
    lba: [u8; 3],
    device: u8,
    status: u8,
    phase: Phase,
    /// The command in progress moves its data by DMA (PACKET with the DMA feature bit).
    dma: bool,
    /// The transfer mode SET FEATURES chose (its sector count), for IDENTIFY.
    transfer_mode: u8,
}

impl AtapiDrive {
    pub fn new(cd: CdRom) -> Self {
        let mut d = AtapiDrive {
            cd,
            error: 0,
            features: 0,
            count: 0,
            lba: [0; 3],
            device: 0,
            status: 0,
            phase: Phase::Idle,
            dma: false,
            transfer_mode: MODE_PIO_DEFAULT,
        };
        d.reset();
        d
    }

    pub fn save_state(&self) -> AtapiDriveState {
        let [l0, l1, l2] = self.lba;
        AtapiDriveState {
            task_file: [
                self.error,
                self.features,
                self.count,
                l0,
                l1,
                l2,
                self.device,
                self.status,
            ],
            phase: PhaseState::of(&self.phase),
            dma: self.dma,
            transfer_mode: self.transfer_mode,
            cd: self.cd.save_state(),
        }
    }

    /// Whether this drive can take `state`, changing nothing; the phase it holds.
    fn check_state(&self, state: &AtapiDriveState) -> Result<Phase, String> {
        self.cd.can_take(&state.cd)?;
        // The disc's size after the restore: none if the saved drive was empty.
        let blocks = state.cd.media.as_ref().map_or(0, |(_, blocks)| *blocks);
        state.phase.phase(blocks)
    }

    /// Takes a saved state, checked whole first.
    pub fn restore_state(&mut self, state: &AtapiDriveState) -> Result<(), String> {
        let phase = self.check_state(state)?;
        self.cd.restore_state(&state.cd)?;
        let [error, features, count, l0, l1, l2, device, status] = state.task_file;
        (self.error, self.features, self.count, self.lba) = (error, features, count, [l0, l1, l2]);
        (self.device, self.status) = (device, status);
        self.phase = phase;
        self.dma = state.dma;
        self.transfer_mode = state.transfer_mode;
        Ok(())
    }

    /// The packet device signature (ATA8-ACS §9.12): what reset, diagnostics and any
    /// non-packet command leave in the task file.
    fn signature(&mut self) {
        self.count = 1;
        self.lba = [1, 0x14, 0xeb];
        self.device &= 0x10;
    }

    fn reset(&mut self) {
        self.signature();
        self.error = 1; // diagnostics passed
        self.status = 0;
        self.phase = Phase::Idle;
        self.dma = false;
    }

    fn byte_count(&self) -> usize {
        usize::from(u16::from_le_bytes([self.lba[1], self.lba[2]]))
    }

    fn set_byte_count(&mut self, n: usize) {
        let [lo, hi] = (n as u16).to_le_bytes();
        self.lba[1] = lo;
        self.lba[2] = hi;
    }

    /// Ends a command without data: with no error the drive is ready, with `Some(code)` the
    /// status has ERR and the error register `code`. The caller raises the interrupt.
    fn complete(&mut self, error: Option<u8>) {
        self.phase = Phase::Idle;
        self.dma = false;
        match error {
            None => {
                self.status = DRDY | DSC;
                self.error = 0;
            }
            Some(e) => {
                self.status = DRDY | DSC | ERR;
                self.error = e;
            }
        }
    }

    fn abort(&mut self) {
        self.complete(Some(ABRT));
    }

    /// Runs an ATA command; returns whether to raise the interrupt.
    fn command(&mut self, command: u8) -> bool {
        match command {
            PACKET => {
                // Features bit 0: the data phase goes by DMA (ATA8-APT §5.3).
                self.dma = self.features & 0x01 != 0;
                self.phase = Phase::Packet { bytes: [0; PACKET_BYTES], got: 0 };
                self.count = IREASON_COD;
                self.status = DRDY | DRQ;
                false // the packet is taken without an interrupt (DRQ type "accelerated")
            }
            IDENTIFY_PACKET_DEVICE => {
                let data = identify(&self.cd, self.transfer_mode);
                self.phase =
                    Phase::Buffer { data, pos: 0, drq_left: 512, limit: 512, packet: false };
                self.status = DRDY | DSC | DRQ;
                self.error = 0;
                true
            }
            DEVICE_RESET | EXECUTE_DEVICE_DIAGNOSTIC => {
                self.reset();
                command == EXECUTE_DEVICE_DIAGNOSTIC
            }
            IDLE_IMMEDIATE | STANDBY_IMMEDIATE => {
                self.complete(None);
                true
            }
            CHECK_POWER_MODE => {
                self.complete(None);
                self.count = 0xff; // active or idle
                true
            }
            SET_FEATURES if self.features == 0x03 => {
                // Set transfer mode: PIO, multiword DMA 0-2 or Ultra DMA 0-5, as IDENTIFY
                // offers them.
                let mode = self.count & 7;
                let ok = match self.count >> 3 {
                    MODE_PIO_DEFAULT | MODE_PIO => true,
                    MODE_MWDMA => mode <= 2,
                    MODE_UDMA => mode <= 5,
                    _ => false,
                };
                if ok {
                    self.transfer_mode = self.count;
                }
                self.complete(if ok { None } else { Some(ABRT) });
                true
            }
            _ => {
                // Anything else (IDENTIFY DEVICE, READ SECTORS...): aborted, and the
                // signature tells the driver it talks to a packet device.
                self.abort();
                self.signature();
                true
            }
        }
    }

    /// The packet arrived: runs it on the MMC core. Returns whether to interrupt.
    fn packet(&mut self, cdb: [u8; PACKET_BYTES]) -> bool {
        // The byte count limit: even, and 0 means the largest (ATA8-APT §6.3.2).
        let mut limit = self.byte_count() & !1;
        if limit == 0 {
            limit = 0xfffe;
        }
        match self.cd.execute(&cdb) {
            Outcome::Done => self.status_phase(None),
            Outcome::Check => {
                let key = self.cd.sense().key;
                self.status_phase(Some((key << 4) | ABRT));
            }
            Outcome::Data(data) if data.is_empty() => self.status_phase(None),
            Outcome::Data(data) => {
                self.phase = Phase::Buffer { data, pos: 0, drq_left: 0, limit, packet: true };
                return self.data_phase();
            }
            Outcome::Read { lba, blocks } => {
                self.phase = Phase::Blocks {
                    lba,
                    buf: Box::new([0; BLOCK as usize]),
                    pos: BLOCK as usize,
                    remaining: blocks * BLOCK,
                    drq_left: 0,
                    limit: limit as u64,
                };
                return self.data_phase();
            }
        }
        true
    }

    /// Starts a packet command's data phase: by PIO, its first DRQ block (with an
    /// interrupt); by DMA, waiting for the bus master (the interrupt comes at the end).
    fn data_phase(&mut self) -> bool {
        if self.dma {
            self.count = IREASON_IO;
            self.status = DRDY | DSC | DRQ;
            return false;
        }
        self.next_drq_block();
        true
    }

    /// Whether the drive waits for the bus master to move its data.
    fn dma_waiting(&self) -> bool {
        self.dma && matches!(self.phase, Phase::Buffer { .. } | Phase::Blocks { .. })
    }

    /// Bytes the DMA data phase still has.
    fn dma_remaining(&self) -> u64 {
        match &self.phase {
            Phase::Buffer { data, pos, .. } => (data.len() - pos) as u64,
            Phase::Blocks { remaining, .. } => *remaining,
            _ => 0,
        }
    }

    /// Fills `out` (guest memory) with the next bytes of the DMA data phase; how many
    /// (fewer at its end), or the error register's value when the disc could not be read.
    /// Whole blocks go from the disc straight into guest memory.
    fn dma_fill<B: BitmapSlice>(&mut self, out: &VolatileSlice<'_, B>) -> Result<usize, u8> {
        let read_error = |cd: &mut CdRom| {
            let _ = cd.read_failed();
            (cd.sense().key << 4) | ABRT
        };
        // Subslices of `out` are always in range: offsets and lengths stay within it.
        let part = |at: usize, len: usize| out.subslice(at, len).expect("within the slice");
        match &mut self.phase {
            Phase::Buffer { data, pos, .. } => {
                let n = out.len().min(data.len() - *pos);
                part(0, n).copy_from(&data[*pos..*pos + n]);
                *pos += n;
                Ok(n)
            }
            Phase::Blocks { lba, buf, pos, remaining, .. } => {
                let mut done = 0;
                while done < out.len() && *remaining > 0 {
                    let room = out.len() - done;
                    if *pos < BLOCK as usize {
                        // What is left of a block a short PRD entry split.
                        let n = room.min(BLOCK as usize - *pos);
                        part(done, n).copy_from(&buf[*pos..*pos + n]);
                        (*pos, done, *remaining) = (*pos + n, done + n, *remaining - n as u64);
                    } else if room >= BLOCK as usize {
                        let blocks = (room as u64 / BLOCK).min(*remaining / BLOCK);
                        let bytes = (blocks * BLOCK) as usize;
                        if !self.cd.read_blocks_into(*lba, &part(done, bytes)) {
                            return Err(read_error(&mut self.cd));
                        }
                        *lba += blocks;
                        done += bytes;
                        *remaining -= blocks * BLOCK;
                    } else {
                        if !self.cd.read_block(*lba, &mut buf[..]) {
                            return Err(read_error(&mut self.cd));
                        }
                        (*lba, *pos) = (*lba + 1, 0);
                    }
                }
                Ok(done)
            }
            _ => Ok(0),
        }
    }

    fn status_phase(&mut self, error: Option<u8>) {
        self.complete(error);
        self.count = IREASON_IO | IREASON_COD;
    }

    /// Starts the next DRQ data block of a packet command (its size in the byte count
    /// registers), or the status phase when all data went.
    fn next_drq_block(&mut self) {
        let size = match &mut self.phase {
            Phase::Buffer { data, pos, drq_left, limit, .. } => {
                *drq_left = (data.len() - *pos).min(*limit);
                *drq_left
            }
            Phase::Blocks { remaining, drq_left, limit, .. } => {
                *drq_left = (*remaining).min(*limit);
                *drq_left as usize
            }
            _ => 0,
        };
        if size == 0 {
            self.status_phase(None);
            return;
        }
        self.set_byte_count(size);
        self.count = IREASON_IO;
        self.status = DRDY | DSC | DRQ;
    }

    /// Reads from the data register into `out` (zeros past the data); returns whether to
    /// interrupt.
    fn read_data(&mut self, out: &mut [u8]) -> bool {
        out.fill(0);
        if self.dma {
            return false; // the data goes by DMA, not through this register
        }
        let mut raise = false;
        for b in out.iter_mut() {
            match &mut self.phase {
                Phase::Buffer { data, pos, drq_left, packet, .. } if *drq_left > 0 => {
                    *b = data[*pos];
                    *pos += 1;
                    *drq_left -= 1;
                    if *drq_left == 0 {
                        if *packet {
                            self.next_drq_block();
                            raise = true;
                        } else {
                            // ATA PIO data-in: the last block ends without an interrupt.
                            self.complete(None);
                        }
                    }
                }
                Phase::Blocks { lba, buf, pos, remaining, drq_left, .. } if *drq_left > 0 => {
                    if *pos == BLOCK as usize {
                        if !self.cd.read_block(*lba, &mut buf[..]) {
                            let _ = self.cd.read_failed();
                            let key = self.cd.sense().key;
                            self.status_phase(Some((key << 4) | ABRT));
                            return true;
                        }
                        *lba += 1;
                        *pos = 0;
                    }
                    *b = buf[*pos];
                    *pos += 1;
                    *remaining -= 1;
                    *drq_left -= 1;
                    if *drq_left == 0 {
                        self.next_drq_block(); // or the status phase, if that was all
                        raise = true;
                    }
                }
                _ => break,
            }
        }
        raise
    }

    /// Writes to the data register (the command packet); returns whether to interrupt.
    fn write_data(&mut self, data: &[u8]) -> bool {
        let Phase::Packet { bytes, got } = &mut self.phase else { return false };
        for &b in data {
            if *got < PACKET_BYTES {
                bytes[*got] = b;
                *got += 1;
            }
        }
        if *got == PACKET_BYTES {
            let cdb = *bytes;
            self.status = BSY;
            return self.packet(cdb);
        }
        false
    }
}

/// IDENTIFY PACKET DEVICE data (ATA8-ACS §7.17): a removable CD-ROM taking 12-byte
/// packets, by PIO or DMA; `cd_mode` is the transfer mode SET FEATURES chose.
fn identify(cd: &CdRom, cd_mode: u8) -> Vec<u8> {
    let mut w = [0u16; 256];
    w[0] = 0x8000 | (5 << 8) | 0x80 | (2 << 5); // ATAPI, CD-ROM, removable, DRQ within 50 us
    let ascii = |w: &mut [u16], text: &str| {
        // Strings are space-padded, two characters a word, the first in the high byte.
        let bytes: Vec<u8> =
            text.bytes().chain(std::iter::repeat(b' ')).take(w.len() * 2).collect();
        for (i, pair) in bytes.chunks(2).enumerate() {
            w[i] = u16::from_be_bytes([pair[0], pair[1]]);
        }
    };
    ascii(&mut w[10..20], cd.serial());
    ascii(&mut w[23..27], "1.0");
    ascii(&mut w[27..47], "VESSEL Virtual CD-ROM");
    w[49] = 1 << 9 | 1 << 8; // LBA, DMA
    w[53] = 0x0006; // words 64-70 and 88 valid
    // Multiword DMA 0-2 and Ultra DMA 0-5 supported, the one SET FEATURES chose selected.
    let (kind, mode) = (cd_mode >> 3, u16::from(cd_mode & 7));
    w[63] = 0x0007 | if kind == MODE_MWDMA { 0x100 << mode } else { 0 };
    w[88] = 0x003f | if kind == MODE_UDMA { 0x100 << mode } else { 0 };
    w[64] = 0x0003; // PIO modes 3 and 4
    w[65] = 120; // minimum multiword DMA cycle
    w[66] = 120;
    w[67] = 120; // minimum PIO cycle without flow control
    w[68] = 120; // with IORDY
    w[71] = 30; // release time after PACKET (us)
    w[72] = 30; // after SERVICE
    w[80] = 0x01f0; // ATA/ATAPI-4 to -8
    w[82] = 1 << 4 | 1 << 14; // PACKET feature set, NOP
    w[83] = 1 << 14;
    w[84] = 1 << 14;
    w[85] = 1 << 4 | 1 << 14;
    w[86] = 0;
    w[87] = 1 << 14;
    w[93] = 0x6000 | 1; // hardware reset result (device 0)
    w.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A channel's bus-master registers (SFF-8038i §2).
#[derive(Default)]
struct BusMaster {
    command: u8,
    status: u8,
    /// The PRD table's guest-physical address (dword-aligned).
    prd: u32,
}

/// Why a DMA transfer ended early.
enum DmaFault {
    /// A PRD table or buffer outside guest memory, or the wrong direction: the bus
    /// master's error bit.
    Bus,
    /// The PRD table ended before the data did.
    ShortTable,
    /// The disc could not be read (the error register's value).
    Read(u8),
}

/// One IDE channel: two device positions, the selected one, its interrupt, its bus master.
struct Channel {
    drives: [Option<AtapiDrive>; 2],
    selected: usize,
    control: u8,
    irq: EventFd,
    interrupts: AtomicU64,
    bm: BusMaster,
}

impl Channel {
    fn new(irq: EventFd) -> Self {
        Channel {
            drives: [None, None],
            selected: 0,
            control: 0,
            irq,
            interrupts: AtomicU64::new(0),
            bm: BusMaster::default(),
        }
    }

    /// A guest read of this channel's bus-master register `reg` (0-7).
    fn bm_read(&self, reg: u64) -> u8 {
        match reg {
            0 => self.bm.command,
            2 => self.bm.status,
            4..=7 => self.bm.prd.to_le_bytes()[reg as usize - 4],
            _ => 0,
        }
    }

    /// A guest write of bus-master register `reg`; true when it started the engine.
    fn bm_write(&mut self, reg: u64, value: u8) -> bool {
        match reg {
            0 => {
                let was = self.bm.command;
                self.bm.command = value & (BM_START | BM_TO_MEMORY);
                if value & BM_START != 0 && was & BM_START == 0 {
                    self.bm.status |= BM_ACTIVE;
                    return true;
                }
                if value & BM_START == 0 {
                    self.bm.status &= !BM_ACTIVE; // stopped by the host
                }
            }
            2 => {
                let cleared = value & (BM_ERROR | BM_INTERRUPT);
                self.bm.status = (self.bm.status & !cleared & !BM_CAPABLE) | (value & BM_CAPABLE);
            }
            4..=7 => {
                let mut bytes = self.bm.prd.to_le_bytes();
                bytes[reg as usize - 4] = value;
                self.bm.prd = u32::from_le_bytes(bytes) & !3;
            }
            _ => {}
        }
        false
    }

    /// Moves the selected drive's data phase through the PRD table into guest memory,
    /// when the drive waits for it and the engine runs; then ends the command (status,
    /// the bus master's interrupt bit, the channel's interrupt).
    fn run_dma(&mut self, mem: Option<&GuestMem>, bus_master_enabled: bool) {
        let selected = self.selected;
        let Some(drive) = self.drives[selected].as_mut() else { return };
        if !drive.dma_waiting() || self.bm.command & BM_START == 0 {
            return;
        }
        let result = match mem {
            // ATAPI data only flows to the host: the engine must write memory.
            Some(mem) if bus_master_enabled && self.bm.command & BM_TO_MEMORY != 0 => {
                dma_to_memory(drive, mem, u64::from(self.bm.prd))
            }
            _ => Err(DmaFault::Bus),
        };
        // SFF-8038i §3.1: the engine stays active when the table had room left over.
        let (error, status) = match result {
            Ok(room_left) => (None, if room_left { BM_ACTIVE } else { 0 }),
            Err(DmaFault::Bus) => (Some((SENSE_ABORTED_COMMAND << 4) | ABRT), BM_ERROR),
            Err(DmaFault::ShortTable) => (Some((SENSE_ABORTED_COMMAND << 4) | ABRT), 0),
            Err(DmaFault::Read(code)) => (Some(code), 0),
        };
        drive.status_phase(error);
        // The interrupt bit follows the drive's interrupt line, which nIEN holds low.
        let interrupt = if self.control & NIEN == 0 { BM_INTERRUPT } else { 0 };
        self.bm.status = (self.bm.status & BM_CAPABLE) | interrupt | status;
        self.raise();
    }

    fn raise(&self) {
        if self.control & NIEN == 0 {
            self.interrupts.fetch_add(1, Ordering::Relaxed);
            let _ = self.irq.write(1);
        }
    }

    fn empty(&self) -> bool {
        self.drives.iter().all(Option::is_none)
    }

    fn read(&mut self, reg: u64, data: &mut [u8]) {
        if self.empty() {
            data.fill(0xff); // nothing drives the bus
            return;
        }
        let selected = self.selected;
        let Some(d) = self.drives[selected].as_mut() else {
            data.fill(0);
            return;
        };
        if reg == 0 {
            if d.read_data(data) {
                self.raise();
            }
            return;
        }
        let value = match reg {
            1 => d.error,
            2 => d.count,
            3 => d.lba[0],
            4 => d.lba[1],
            5 => d.lba[2],
            6 => 0xa0 | d.device,
            _ => d.status, // 7: status (reading it acknowledges the interrupt)
        };
        data.fill(0);
        data[0] = value;
    }

    fn write(&mut self, reg: u64, data: &[u8]) {
        let value = data[0];
        if reg == 6 {
            self.selected = usize::from(value >> 4 & 1);
            for d in self.drives.iter_mut().flatten() {
                d.device = value & 0x1f;
            }
            return;
        }
        if reg == 0 {
            let selected = self.selected;
            if let Some(d) = self.drives[selected].as_mut()
                && d.write_data(data)
            {
                self.raise();
            }
            return;
        }
        // Registers 1-5 are written to both devices (ATA8-ACS: the host writes the
        // shadow task file), command 7 goes to the selected one.
        if reg == 7 {
            let selected = self.selected;
            if let Some(d) = self.drives[selected].as_mut() {
                if d.status & BSY != 0 && value != DEVICE_RESET {
                    return; // a command while busy is ignored
                }
                if d.command(value) {
                    self.raise();
                }
            }
            return;
        }
        for d in self.drives.iter_mut().flatten() {
            match reg {
                1 => d.features = value,
                2 => d.count = value,
                3 => d.lba[0] = value,
                4 => d.lba[1] = value,
                5 => d.lba[2] = value,
                _ => {}
            }
        }
    }

    fn read_control(&self, data: &mut [u8]) {
        data.fill(0);
        data[0] = if self.empty() {
            0xff
        } else {
            self.drives[self.selected].as_ref().map_or(0, |d| d.status) // alternate status
        };
    }

    fn write_control(&mut self, value: u8) {
        let was_reset = self.control & SRST != 0;
        self.control = value;
        if value & SRST != 0 {
            for d in self.drives.iter_mut().flatten() {
                d.status = BSY;
            }
        } else if was_reset {
            for d in self.drives.iter_mut().flatten() {
                d.reset();
            }
            self.selected = 0;
        }
    }
}

/// Walks the PRD table at `table` and writes the drive's data where it says; Ok(whether
/// the table had room left over).
fn dma_to_memory(drive: &mut AtapiDrive, mem: &GuestMem, table: u64) -> Result<bool, DmaFault> {
    let table_end = (table & !(PRD_TABLE_SPAN - 1)) + PRD_TABLE_SPAN;
    let mut entry = table;
    // Bounded: at most PRD_TABLE_SPAN / 8 entries.
    while entry + 8 <= table_end {
        let mut prd = [0u8; 8];
        mem.read_slice(&mut prd, GuestAddress(entry)).map_err(|_| DmaFault::Bus)?;
        let address = u64::from(u32::from_le_bytes(prd[0..4].try_into().expect("4 bytes")) & !1);
        let count = match u16::from_le_bytes([prd[4], prd[5]]) & !1 {
            0 => PRD_MAX,
            n => usize::from(n),
        };
        let last = prd[7] & 0x80 != 0;
        let entry_bytes = count;
        // Only as much as the drive still has: the rest of the entry need not be memory.
        let count = count.min(usize::try_from(drive.dma_remaining()).unwrap_or(usize::MAX));
        let out = mem.get_slice(GuestAddress(address), count).map_err(|_| DmaFault::Bus)?;
        let n = drive.dma_fill(&out).map_err(DmaFault::Read)?;
        if drive.dma_remaining() == 0 {
            return Ok(!(last && n == entry_bytes));
        }
        if last {
            return Err(DmaFault::ShortTable);
        }
        entry += 8;
    }
    Err(DmaFault::ShortTable)
}

/// A channel's state: its drives', the drive selected, device control, the bus master's
/// registers.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChannelState {
    pub drives: [Option<AtapiDriveState>; 2],
    pub selected: usize,
    pub control: u8,
    /// Bus master command, status, PRD table address.
    pub bus_master: (u8, u8, u32),
}

/// The controller's state: its configuration space and channels.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdeState {
    pub config: Vec<u8>,
    pub channels: [ChannelState; 2],
}

/// The controller: its PCI function, two channels, and the guest memory its bus masters
/// write.
pub struct IdeController {
    config: PciConfig,
    channels: [Channel; 2],
    mem: Option<GuestMem>,
}

impl IdeController {
    /// A controller whose secondary master is `cd`; `irqs` are IRQ 14 and 15's eventfds;
    /// `mem` is what its bus masters write (none: DMA fails as a bus error).
    pub fn new(cd: Option<CdRom>, irqs: [EventFd; 2], mem: Option<GuestMem>) -> Self {
        let ids = PciIds {
            vendor: 0x8086,
            device: 0x7010,    // PIIX3 IDE
            class: 0x01_01_80, // IDE, bus-master capable, both channels in compatibility mode
            revision: 0,
            subsystem_vendor: 0,
            subsystem: 0,
        };
        let [primary, secondary] = irqs;
        let mut channels = [Channel::new(primary), Channel::new(secondary)];
        channels[1].drives[0] = cd.map(AtapiDrive::new);
        let mut config = PciConfig::new(ids);
        config
            .add_bar(BUS_MASTER_BAR, BarInfo { kind: BarKind::Io, size: BUS_MASTER_PORTS })
            .expect("BAR4 is free and 16 ports is a valid I/O BAR");
        IdeController { config, channels, mem }
    }

    /// Runs channel `c`'s DMA if it is due (PCI Bus Master Enable gates it).
    fn dma(&mut self, c: usize) {
        let enabled = self.config.command() & COMMAND_BUS_MASTER != 0;
        self.channels[c].run_dma(self.mem.as_ref(), enabled);
    }

    /// The CD drive (the secondary master).
    pub fn cd(&mut self) -> Option<&mut CdRom> {
        self.channels[1].drives[0].as_mut().map(|d| &mut d.cd)
    }

    /// Interrupts raised so far on (primary, secondary).
    pub fn interrupts(&self) -> (u64, u64) {
        let n = |c: &Channel| c.interrupts.load(Ordering::Relaxed);
        (n(&self.channels[0]), n(&self.channels[1]))
    }
}

impl BusDevice for IdeController {
    fn read(&mut self, base: u64, offset: u64, data: &mut [u8]) {
        match base as u16 {
            PRIMARY_CMD => self.channels[0].read(offset, data),
            SECONDARY_CMD => self.channels[1].read(offset, data),
            PRIMARY_CTRL => self.channels[0].read_control(data),
            SECONDARY_CTRL => self.channels[1].read_control(data),
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, base: u64, offset: u64, data: &[u8]) {
        match base as u16 {
            PRIMARY_CMD => {
                self.channels[0].write(offset, data);
                self.dma(0); // the packet may have started a DMA data phase
            }
            SECONDARY_CMD => {
                self.channels[1].write(offset, data);
                self.dma(1);
            }
            PRIMARY_CTRL => self.channels[0].write_control(data[0]),
            SECONDARY_CTRL => self.channels[1].write_control(data[0]),
            _ => {}
        }
    }
}

impl PciDevice for IdeController {
    fn config(&self) -> &PciConfig {
        &self.config
    }

    fn config_mut(&mut self) -> &mut PciConfig {
        &mut self.config
    }

    // Compatibility mode: the legacy ports carry the task files; BAR4 the bus masters.
    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        if bar != BUS_MASTER_BAR {
            data.fill(0xff);
            return;
        }
        for (i, b) in data.iter_mut().enumerate() {
            let port = offset + i as u64;
            *b = match self.channels.get((port / 8) as usize) {
                Some(channel) => channel.bm_read(port % 8),
                None => 0xff,
            };
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar != BUS_MASTER_BAR {
            return;
        }
        for (i, &value) in data.iter().enumerate() {
            let port = offset + i as u64;
            let c = (port / 8) as usize;
            if c < self.channels.len() && self.channels[c].bm_write(port % 8, value) {
                self.dma(c);
            }
        }
    }

    fn save_state(&self) -> Result<Vec<u8>, String> {
        let channel = |c: &Channel| ChannelState {
            drives: [0, 1].map(|d| c.drives[d].as_ref().map(AtapiDrive::save_state)),
            selected: c.selected,
            control: c.control,
            bus_master: (c.bm.command, c.bm.status, c.bm.prd),
        };
        let state = IdeState {
            config: self.config.save_state(),
            channels: [channel(&self.channels[0]), channel(&self.channels[1])],
        };
        Ok(crate::persist::encode_part(&state))
    }

    /// Takes a saved state whose drives are where this controller has them (its CD drive
    /// with the same disc, or the disc let go of); checked whole before anything changes.
    fn restore_state(&mut self, state: &[u8]) -> Result<(), String> {
        let state: IdeState = crate::persist::decode_part(state)?;
        let mut config = self.config.clone();
        config.restore_state(&state.config)?;
        for (c, (channel, saved)) in self.channels.iter().zip(&state.channels).enumerate() {
            for d in 0..2 {
                if channel.drives[d].is_some() != saved.drives[d].is_some() || saved.selected > 1 {
                    return Err(format!("its drives on channel {c} are not where they were"));
                }
            }
        }
        // Every drive's state checked before any drive takes its own.
        for (channel, saved) in self.channels.iter().zip(&state.channels) {
            for (drive, saved) in channel.drives.iter().zip(&saved.drives) {
                if let (Some(drive), Some(saved)) = (drive, saved) {
                    drive.check_state(saved)?;
                }
            }
        }
        for (channel, saved) in self.channels.iter_mut().zip(&state.channels) {
            for (drive, saved) in channel.drives.iter_mut().zip(&saved.drives) {
                if let (Some(drive), Some(saved)) = (drive, saved) {
                    drive.restore_state(saved)?;
                }
            }
            channel.selected = saved.selected;
            channel.control = saved.control;
            let (command, status, prd) = saved.bus_master;
            channel.bm =
                BusMaster { command: command & (BM_START | BM_TO_MEMORY), status, prd: prd & !3 };
        }
        self.config = config;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::storage::mmc::Media;

    const CMD: u64 = SECONDARY_CMD as u64;
    const CTRL: u64 = SECONDARY_CTRL as u64;

    fn iso(blocks: u64) -> (std::path::PathBuf, Vec<u8>) {
        use std::sync::atomic::AtomicU32;
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "vessel-ide-{}-{}.iso",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let data: Vec<u8> =
            (0..blocks * BLOCK).map(|i| (i % 251) as u8 ^ (i / BLOCK) as u8).collect();
        std::fs::write(&path, &data).unwrap();
        (path, data)
    }

    struct Rig {
        ide: IdeController,
        data: Vec<u8>,
        mem: GuestMem,
    }

    const MEM: u64 = 1 << 20;
    const PRD_TABLE: u64 = 0x1000;

    impl Rig {
        fn new() -> Self {
            let (path, data) = iso(40);
            Self::with(&path, data)
        }

        /// A rig whose drive holds the disc at `path` (holding `data`).
        fn with(path: &std::path::Path, data: Vec<u8>) -> Self {
            let mut cd = CdRom::new("vessel-cd0");
            cd.insert(Media::open(path).unwrap());
            let irqs = [
                EventFd::new(libc::EFD_NONBLOCK).unwrap(),
                EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            ];
            let mem = GuestMem::from_ranges(&[(GuestAddress(0), MEM as usize)]).unwrap();
            let mut ide = IdeController::new(Some(cd), irqs, Some(mem.clone()));
            ide.config_write(4, &[0x05, 0x00]); // I/O decoding and bus mastering, as a driver sets
            Rig { ide, data, mem }
        }

        /// Bus-master register `reg` of the secondary channel.
        fn bm_out(&mut self, reg: u64, bytes: &[u8]) {
            self.ide.bar_write(BUS_MASTER_BAR, 8 + reg, bytes);
        }

        fn bm_status(&mut self) -> u8 {
            let mut b = [0u8];
            self.ide.bar_read(BUS_MASTER_BAR, 8 + 2, &mut b);
            b[0]
        }

        /// READ(10) of `blocks` from `lba` by DMA through the PRD entries `prds` (address,
        /// byte count, end of table) written at PRD_TABLE, the engine started after the
        /// packet as Linux does; returns (status, error, ireason) and the bus-master status.
        fn dma_read(
            &mut self,
            lba: u32,
            blocks: u16,
            prds: &[(u32, u16, bool)],
        ) -> ((u8, u8, u8), u8) {
            for (i, (addr, count, last)) in prds.iter().enumerate() {
                let mut entry = [0u8; 8];
                entry[0..4].copy_from_slice(&addr.to_le_bytes());
                entry[4..6].copy_from_slice(&count.to_le_bytes());
                entry[7] = if *last { 0x80 } else { 0 };
                self.mem.write_slice(&entry, GuestAddress(PRD_TABLE + 8 * i as u64)).unwrap();
            }
            self.bm_out(2, &[BM_ERROR | BM_INTERRUPT]); // clear both
            self.bm_out(4, &(PRD_TABLE as u32).to_le_bytes());
            self.bm_out(0, &[BM_TO_MEMORY]);
            self.out(CMD, 6, 0xa0);
            self.out(CMD, 1, 0x01); // DMA
            self.out(CMD, 7, PACKET);
            let mut cdb = [0u8; 12];
            cdb[0] = 0x28;
            cdb[2..6].copy_from_slice(&lba.to_be_bytes());
            cdb[7..9].copy_from_slice(&blocks.to_be_bytes());
            for pair in cdb.chunks(2) {
                self.ide.write(CMD, 0, pair);
            }
            if blocks > 0 && self.inb(CMD, 7) & ERR == 0 {
                assert_eq!(self.inb(CMD, 7) & (DRQ | BSY), DRQ, "waiting for the bus master");
                assert_eq!(self.inw(), [0, 0], "no data through the data register");
            }
            self.bm_out(0, &[BM_TO_MEMORY | BM_START]);
            let bm = self.bm_status();
            self.bm_out(0, &[BM_TO_MEMORY]);
            ((self.inb(CMD, 7), self.inb(CMD, 1), self.inb(CMD, 2)), bm)
        }

        fn memory(&self, at: u64, len: usize) -> Vec<u8> {
            let mut v = vec![0u8; len];
            self.mem.read_slice(&mut v, GuestAddress(at)).unwrap();
            v
        }

        fn out(&mut self, base: u64, reg: u64, v: u8) {
            self.ide.write(base, reg, &[v]);
        }

        fn inb(&mut self, base: u64, reg: u64) -> u8 {
            let mut b = [0u8];
            self.ide.read(base, reg, &mut b);
            b[0]
        }

        fn inw(&mut self) -> [u8; 2] {
            let mut w = [0u8; 2];
            self.ide.read(CMD, 0, &mut w);
            w
        }

        fn irqs(&self) -> u64 {
            self.ide.interrupts().1
        }

        /// Sends a PACKET with `cdb` and byte count limit `limit`; returns the data read
        /// in DRQ blocks (and the block sizes), and the final (status, error, ireason).
        fn packet(&mut self, cdb: &[u8], limit: u16) -> (Vec<u8>, Vec<usize>, (u8, u8, u8)) {
            self.out(CMD, 6, 0xa0);
            self.out(CMD, 1, 0);
            self.out(CMD, 4, limit as u8);
            self.out(CMD, 5, (limit >> 8) as u8);
            self.out(CMD, 7, PACKET);
            assert_eq!(self.inb(CMD, 7) & (DRQ | BSY), DRQ, "ready for the packet");
            assert_eq!(self.inb(CMD, 2) & 3, IREASON_COD);
            let mut p = [0u8; 12];
            p[..cdb.len()].copy_from_slice(cdb);
            for pair in p.chunks(2) {
                self.ide.write(CMD, 0, pair);
            }
            let (mut data, mut blocks) = (Vec::new(), Vec::new());
            while self.inb(CMD, 7) & DRQ != 0 {
                assert_eq!(self.inb(CMD, 2) & 3, IREASON_IO, "data to the host");
                let n = usize::from(u16::from_le_bytes([self.inb(CMD, 4), self.inb(CMD, 5)]));
                blocks.push(n);
                for _ in 0..n / 2 {
                    data.extend_from_slice(&self.inw());
                }
                if n % 2 == 1 {
                    data.push(self.inw()[0]);
                }
            }
            (data, blocks, (self.inb(CMD, 7), self.inb(CMD, 1), self.inb(CMD, 2)))
        }
    }

    #[test]
    fn signature_identify_and_absent_devices() {
        let mut r = Rig::new();
        r.out(CMD, 6, 0xa0);
        assert_eq!(
            [r.inb(CMD, 2), r.inb(CMD, 3), r.inb(CMD, 4), r.inb(CMD, 5)],
            [1, 1, 0x14, 0xeb]
        );
        // IDENTIFY DEVICE is aborted, leaving the packet signature.
        r.out(CMD, 7, 0xec);
        assert_eq!(r.inb(CMD, 7) & ERR, ERR);
        assert_eq!(r.inb(CMD, 1), ABRT);
        assert_eq!([r.inb(CMD, 4), r.inb(CMD, 5)], [0x14, 0xeb]);
        // IDENTIFY PACKET DEVICE: 256 words.
        let before = r.irqs();
        r.out(CMD, 7, IDENTIFY_PACKET_DEVICE);
        assert_eq!(r.irqs(), before + 1);
        let words: Vec<u16> = (0..256).map(|_| u16::from_le_bytes(r.inw())).collect();
        assert_eq!(words[0], 0x85c0, "ATAPI, CD-ROM, removable, 12-byte packets");
        let model: String =
            words[27..47].iter().flat_map(|w| w.to_be_bytes()).map(char::from).collect();
        assert_eq!(model.trim_end(), "VESSEL Virtual CD-ROM");
        let serial: String =
            words[10..20].iter().flat_map(|w| w.to_be_bytes()).map(char::from).collect();
        assert_eq!(serial.trim_end(), "vessel-cd0");
        assert_eq!(words[49] & (1 << 8), 1 << 8, "DMA");
        assert_eq!((words[63], words[88]), (0x0007, 0x003f), "MWDMA 0-2, UDMA 0-5, none chosen");
        assert_eq!(r.inb(CMD, 7) & (DRQ | BSY | ERR), 0, "done after 512 bytes");
        assert_eq!(r.inw(), [0, 0], "nothing more to read");
        // The slave is absent: its registers read 0; the empty primary channel reads 0xFF.
        r.out(CMD, 6, 0xb0);
        assert_eq!((r.inb(CMD, 7), r.inb(CTRL, 0)), (0, 0));
        r.out(CMD, 7, IDENTIFY_PACKET_DEVICE); // goes nowhere
        r.out(CMD, 6, 0xa0);
        assert_eq!(r.inb(PRIMARY_CMD as u64, 7), 0xff);
        assert_eq!(r.inb(PRIMARY_CTRL as u64, 0), 0xff);
        r.out(PRIMARY_CMD as u64, 7, IDENTIFY_PACKET_DEVICE);
        assert_eq!(r.ide.interrupts().0, 0);
    }

    #[test]
    fn packets_sense_and_reads_in_drq_blocks() {
        let mut r = Rig::new();
        // The inserted disc is a unit attention first: CHECK CONDITION, key 6.
        let before = r.irqs();
        let (data, _, (status, error, ireason)) = r.packet(&[0x00], 0);
        assert!(data.is_empty());
        assert_eq!((status & ERR, error, ireason), (ERR, 0x64, 3));
        assert_eq!(r.irqs(), before + 1, "one interrupt for the status phase");
        // REQUEST SENSE then says so; TEST UNIT READY passes.
        let (sense, blocks, (status, _, ireason)) = r.packet(&[0x03, 0, 0, 0, 18, 0], 0xfffe);
        assert_eq!((blocks, sense[2], sense[12]), (vec![18], 6, 0x28));
        assert_eq!((status & (ERR | DRQ), ireason), (0, 3));
        assert_eq!(r.packet(&[0x00], 0).2.0 & ERR, 0);
        // READ(10) of blocks 16-18 with a 4096-byte limit: 4096, 2048.
        let before = r.irqs();
        let (data, blocks, (status, _, _)) = r.packet(&[0x28, 0, 0, 0, 0, 16, 0, 0, 3, 0], 4096);
        assert_eq!(blocks, vec![4096, 2048]);
        assert_eq!(data, r.data[16 * 2048..19 * 2048]);
        assert_eq!(status & (ERR | DRQ | BSY), 0);
        assert_eq!(r.irqs(), before + 3, "two data blocks and the status phase");
        // An odd limit is rounded down to even; blocks then straddle disc blocks.
        let (data, blocks, _) = r.packet(&[0x28, 0, 0, 0, 0, 2, 0, 0, 2, 0], 1001);
        assert_eq!(blocks, vec![1000, 1000, 1000, 1000, 96]);
        assert_eq!(data, r.data[2 * 2048..4 * 2048]);
        // Past the end: ILLEGAL REQUEST (key 5), no data.
        let (data, _, (status, error, _)) = r.packet(&[0x28, 0, 0, 0, 0, 39, 0, 0, 2, 0], 0);
        assert_eq!((data.len(), status & ERR, error), (0, ERR, 0x54));
        // INQUIRY through the limit 0 (= the largest).
        let (inq, _, _) = r.packet(&[0x12, 0, 0, 0, 36, 0], 0);
        assert_eq!(&inq[8..16], b"VESSEL  ");
    }

    #[test]
    fn reset_interrupt_enable_and_hostile_register_use() {
        let mut r = Rig::new();
        // nIEN: no interrupts.
        r.out(CTRL, 0, NIEN);
        let before = r.irqs();
        r.out(CMD, 7, IDENTIFY_PACKET_DEVICE);
        assert_eq!(r.irqs(), before);
        // A soft reset in the middle of a transfer: back to the signature, no data.
        r.out(CTRL, 0, SRST);
        assert_eq!(r.inb(CTRL, 0) & BSY, BSY);
        r.out(CTRL, 0, 0);
        assert_eq!(r.inb(CMD, 7), 0);
        assert_eq!([r.inb(CMD, 4), r.inb(CMD, 5)], [0x14, 0xeb]);
        assert_eq!(r.inw(), [0, 0]);
        // Data written with no packet expected, reads with nothing to read, odd widths.
        r.ide.write(CMD, 0, &[1, 2, 3, 4]);
        let mut four = [0xaau8; 4];
        r.ide.read(CMD, 0, &mut four);
        assert_eq!(four, [0; 4]);
        // A packet longer than 12 bytes: the extra bytes are ignored.
        r.out(CMD, 1, 0);
        r.out(CMD, 7, PACKET);
        for _ in 0..10 {
            r.ide.write(CMD, 0, &[0, 0]);
        }
        assert_eq!(r.inb(CMD, 7) & DRQ, 0);
        // Unknown ATA commands, SET FEATURES with a mode there is not, CHECK POWER MODE.
        for cmd in [0x00, 0x20, 0x30, 0xc8, 0xca, 0xff] {
            r.out(CMD, 7, cmd);
            assert_eq!(r.inb(CMD, 1), ABRT, "command {cmd:#x}");
        }
        r.out(CMD, 1, 0x03);
        r.out(CMD, 2, 0x27); // multiword DMA 7
        r.out(CMD, 7, SET_FEATURES);
        assert_eq!(r.inb(CMD, 1), ABRT);
        r.out(CMD, 2, 0x0c); // PIO 4
        r.out(CMD, 7, SET_FEATURES);
        assert_eq!(r.inb(CMD, 7) & ERR, 0);
        r.out(CMD, 7, CHECK_POWER_MODE);
        assert_eq!(r.inb(CMD, 2), 0xff);
        // Writes to ports past the block, and an unknown base, go nowhere.
        r.ide.write(0x999, 0, &[1]);
        let mut b = [0u8];
        r.ide.read(0x999, 0, &mut b);
        assert_eq!(b, [0xff]);
    }

    #[test]
    fn a_disc_swap_shows_through_the_drive() {
        let mut r = Rig::new();
        r.packet(&[0x00], 0); // the first unit attention
        let (path, data) = iso(4);
        let cd = r.ide.cd().unwrap();
        cd.eject(false).unwrap();
        cd.insert(Media::open(&path).unwrap());
        let (_, _, (_, error, _)) = r.packet(&[0x25], 0);
        assert_eq!(error >> 4, 6, "unit attention after the swap");
        let (cap, _, _) = r.packet(&[0x25], 0);
        assert_eq!(cap, [0, 0, 0, 3, 0, 0, 8, 0]);
        let (read, _, _) = r.packet(&[0x28, 0, 0, 0, 0, 1, 0, 0, 1, 0], 0);
        assert_eq!(read, data[2048..4096]);
    }

    #[test]
    fn transfer_modes_are_chosen_with_set_features() {
        let mut r = Rig::new();
        r.out(CMD, 6, 0xa0);
        for (count, ok) in [(0x22, true), (0x23, false), (0x45, true), (0x46, false), (0x08, true)]
        {
            r.out(CMD, 1, 0x03);
            r.out(CMD, 2, count);
            r.out(CMD, 7, SET_FEATURES);
            assert_eq!(r.inb(CMD, 7) & ERR == 0, ok, "mode {count:#x}");
        }
        r.out(CMD, 1, 0x03);
        r.out(CMD, 2, 0x22); // multiword DMA 2
        r.out(CMD, 7, SET_FEATURES);
        r.out(CMD, 7, IDENTIFY_PACKET_DEVICE);
        let words: Vec<u16> = (0..256).map(|_| u16::from_le_bytes(r.inw())).collect();
        assert_eq!((words[63], words[88]), (0x0407, 0x003f));
    }

    #[test]
    fn reads_by_bus_master_dma() {
        let mut r = Rig::new();
        let _ = r.packet(&[0x00], 0); // the new disc's unit attention
        // Three blocks through two entries (4 KiB, then 2 KiB ending the table).
        let before = r.irqs();
        let ((status, error, ireason), bm) =
            r.dma_read(5, 3, &[(0x10000, 4096, false), (0x20000, 2048, true)]);
        assert_eq!((status & (ERR | DRQ | BSY), error, ireason), (0, 0, 3), "status phase");
        assert_eq!(bm & (BM_ACTIVE | BM_ERROR | BM_INTERRUPT), BM_INTERRUPT, "done, table used up");
        assert_eq!(r.irqs(), before + 1, "one interrupt, at the end");
        let want = &r.data[5 * 2048..8 * 2048];
        assert_eq!(r.memory(0x10000, 4096), want[..4096]);
        assert_eq!(r.memory(0x20000, 2048), want[4096..]);
        // Entries that split blocks (1000 bytes, then the rest) and a table with room left:
        // the engine stays active, as SFF-8038i says.
        let (_, bm) = r.dma_read(9, 2, &[(0x30000, 1000, false), (0x40000, 0, true)]);
        assert_eq!(bm & (BM_ACTIVE | BM_INTERRUPT), BM_ACTIVE | BM_INTERRUPT);
        assert_eq!(r.memory(0x30000, 1000), r.data[9 * 2048..9 * 2048 + 1000]);
        assert_eq!(r.memory(0x40000, 3096), r.data[9 * 2048 + 1000..11 * 2048]);
        // Small replies come by DMA too (INQUIRY).
        r.mem.write_slice(&[0u8; 8], GuestAddress(0x50000)).unwrap();
        let entry = [0x00, 0x00, 0x05, 0x00, 36, 0, 0, 0x80];
        r.mem.write_slice(&entry, GuestAddress(PRD_TABLE)).unwrap();
        r.bm_out(0, &[BM_TO_MEMORY]);
        r.out(CMD, 1, 0x01);
        r.out(CMD, 7, PACKET);
        for pair in [0x12u8, 0, 0, 0, 36, 0, 0, 0, 0, 0, 0, 0].chunks(2) {
            r.ide.write(CMD, 0, pair);
        }
        r.bm_out(0, &[BM_TO_MEMORY | BM_START]);
        assert_eq!(r.memory(0x50008, 8), b"VESSEL  ", "INQUIRY's vendor");
    }

    #[test]
    fn a_bad_dma_setup_ends_the_command_with_an_error() {
        let mut r = Rig::new();
        let _ = r.packet(&[0x00], 0);
        let aborted = (SENSE_ABORTED_COMMAND << 4) | ABRT;
        // The table ends before the data: the command fails, nothing hangs.
        let ((status, error, _), bm) = r.dma_read(0, 2, &[(0x10000, 2048, true)]);
        assert_eq!((status & ERR, error), (ERR, aborted));
        assert_eq!(bm & (BM_ACTIVE | BM_ERROR | BM_INTERRUPT), BM_INTERRUPT);
        // A buffer outside guest memory: the bus master's error bit.
        let ((status, error, _), bm) = r.dma_read(0, 1, &[(MEM as u32 - 16, 2048, true)]);
        assert_eq!((status & ERR, error), (ERR, aborted));
        assert_eq!(bm & (BM_ERROR | BM_INTERRUPT), BM_ERROR | BM_INTERRUPT);
        // A table outside guest memory.
        r.bm_out(4, &0xfff0_0000u32.to_le_bytes());
        r.out(CMD, 1, 0x01);
        r.out(CMD, 7, PACKET);
        for pair in [0x28u8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0].chunks(2) {
            r.ide.write(CMD, 0, pair);
        }
        r.bm_out(0, &[BM_TO_MEMORY | BM_START]);
        assert_eq!(r.bm_status() & BM_ERROR, BM_ERROR);
        assert_eq!(r.inb(CMD, 7) & (ERR | DRQ), ERR);
        // Past the disc's end: the drive refuses it before any transfer.
        let ((status, _, _), _) = r.dma_read(39, 2, &[(0x10000, 4096, true)]);
        assert_eq!(status & ERR, ERR);
        // The wrong direction (memory to the drive), and Bus Master Enable off.
        r.bm_out(0, &[0]);
        r.out(CMD, 1, 0x01);
        r.out(CMD, 7, PACKET);
        for pair in [0x28u8, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0].chunks(2) {
            r.ide.write(CMD, 0, pair);
        }
        r.bm_out(2, &[BM_ERROR | BM_INTERRUPT]);
        r.bm_out(0, &[BM_START]);
        assert_eq!(r.bm_status() & BM_ERROR, BM_ERROR, "wrong direction");
        r.ide.config_write(4, &[0x01, 0x00]); // I/O only, no bus master
        let (_, bm) = r.dma_read(0, 1, &[(0x10000, 2048, true)]);
        assert_eq!(bm & BM_ERROR, BM_ERROR, "bus mastering off");
        // After all that, the drive still works by PIO.
        let (data, _, (status, _, _)) = r.packet(&[0x28, 0, 0, 0, 0, 7, 0, 0, 1], 0xfffe);
        assert_eq!((status & ERR, &data[..]), (0, &r.data[7 * 2048..8 * 2048]));
    }

    #[test]
    fn a_transfer_halfway_through_goes_on_after_a_restore() {
        let (path, data) = iso(40);
        let mut r = Rig::with(&path, data.clone());
        // The new disc's unit attention taken first (TEST UNIT READY).
        r.packet(&[0; 12], 0);
        // READ(10) of blocks 5-6 by PIO, 2048 bytes a DRQ block; 100 bytes read.
        r.out(CMD, 6, 0xa0);
        r.out(CMD, 1, 0);
        r.out(CMD, 4, 0x00);
        r.out(CMD, 5, 0x08);
        r.out(CMD, 7, PACKET);
        for pair in [0x28u8, 0, 0, 0, 0, 5, 0, 0, 2, 0, 0, 0].chunks(2) {
            r.ide.write(CMD, 0, pair);
        }
        let mut got = Vec::new();
        for _ in 0..50 {
            got.extend(r.inw());
        }
        let state = r.ide.save_state().unwrap();

        // The same disc in a new controller: the transfer goes on where it was.
        let mut restored = Rig::with(&path, data.clone());
        restored.ide.restore_state(&state).unwrap();
        while restored.inb(CMD, 7) & DRQ != 0 && got.len() < 8192 {
            got.extend(restored.inw());
        }
        assert_eq!(got.len(), 2 * 2048);
        assert!(got == data[5 * 2048..7 * 2048], "the blocks read across the restore");
        assert_eq!(restored.inb(CMD, 7) & (ERR | DRQ | BSY), 0, "the command completed");

        // Another disc: refused, naming both. A phase no command leaves: refused.
        let (other, other_data) = iso(40);
        let mut elsewhere = Rig::with(&other, other_data);
        let error = elsewhere.ide.restore_state(&state).unwrap_err();
        assert!(error.contains(&*path.to_string_lossy()) && error.contains("CD drive"), "{error}");
        let mut bad: IdeState = crate::persist::decode_part(&state).unwrap();
        if let Some(drive) = &mut bad.channels[1].drives[0]
            && let PhaseState::Blocks { lba, .. } = &mut drive.phase
        {
            *lba = u64::MAX;
        }
        let bad = crate::persist::encode_part(&bad);
        assert!(restored.ide.restore_state(&bad).unwrap_err().contains("data transfer"));
        // Counts that would overflow the checks' own arithmetic: refused, no panic.
        let mut bad: IdeState = crate::persist::decode_part(&state).unwrap();
        if let Some(drive) = &mut bad.channels[1].drives[0]
            && let PhaseState::Blocks { remaining, pos, .. } = &mut drive.phase
        {
            (*remaining, *pos) = (u64::MAX, 2048);
        }
        let bad = crate::persist::encode_part(&bad);
        assert!(restored.ide.restore_state(&bad).unwrap_err().contains("data transfer"));
        // A drive the saved machine had emptied lets go of its disc.
        let mut empty: IdeState = crate::persist::decode_part(&state).unwrap();
        if let Some(drive) = &mut empty.channels[1].drives[0] {
            drive.cd.media = None;
            drive.phase = PhaseState::Idle;
        }
        restored.ide.restore_state(&crate::persist::encode_part(&empty)).unwrap();
        assert!(restored.ide.cd().unwrap().media().is_none());
        for p in [path, other] {
            let _ = std::fs::remove_file(p);
        }
    }
}
