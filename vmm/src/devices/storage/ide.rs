//! A PIIX3-compatible IDE controller (PCI 8086:7010, both channels in compatibility mode:
//! ports 0x1F0-0x1F7/0x3F6 on IRQ 14 and 0x170-0x177/0x376 on IRQ 15) with an ATAPI CD-ROM
//! drive on the secondary master, the place firmware and every OS look for it. Transfers
//! are PIO (the controller offers no bus-master DMA BAR, so drivers stay on PIO); the drive
//! carries MMC commands (`mmc::CdRom`) in ATAPI PACKETs (ATA8-ACS and ATA8-APT, the
//! "PACKET Command feature set").
//!
//! The guest drives registers at will, in any order: every access is answered from the
//! task file, transfers never run past their buffers, and a drive that is not there reads
//! as the spec says (0 from a missing device, 0xFF from an empty channel).

use std::sync::atomic::{AtomicU64, Ordering};

use vmm_sys_util::eventfd::EventFd;

use super::mmc::{BLOCK, CdRom, Outcome};
use crate::devices::bus::BusDevice;
use crate::devices::pci::{PciConfig, PciDevice, PciIds};

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
        };
        d.reset();
        d
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
                if self.features & 0x01 != 0 {
                    // DMA was asked for, and this drive does PIO only.
                    self.abort();
                    return true;
                }
                self.phase = Phase::Packet { bytes: [0; PACKET_BYTES], got: 0 };
                self.count = IREASON_COD;
                self.status = DRDY | DRQ;
                false // the packet is taken without an interrupt (DRQ type "accelerated")
            }
            IDENTIFY_PACKET_DEVICE => {
                let data = identify(&self.cd);
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
                // Set transfer mode: any PIO mode is fine; DMA modes are not offered.
                let ok = self.count >> 3 <= 1;
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
                self.next_drq_block();
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
                self.next_drq_block();
            }
        }
        true
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
/// packets, PIO only.
fn identify(cd: &CdRom) -> Vec<u8> {
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
    w[49] = 1 << 9; // LBA (no DMA, no IORDY control needed)
    w[53] = 0x0006; // words 64-70 and 88 valid
    w[64] = 0x0003; // PIO modes 3 and 4
    w[65] = 120; // minimum multiword DMA cycle (unused without DMA)
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

/// One IDE channel: two device positions, the selected one, its interrupt.
struct Channel {
    drives: [Option<AtapiDrive>; 2],
    selected: usize,
    control: u8,
    irq: EventFd,
    interrupts: AtomicU64,
}

impl Channel {
    fn new(irq: EventFd) -> Self {
        Channel {
            drives: [None, None],
            selected: 0,
            control: 0,
            irq,
            interrupts: AtomicU64::new(0),
        }
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

/// The controller: its PCI function and two channels.
pub struct IdeController {
    config: PciConfig,
    channels: [Channel; 2],
}

impl IdeController {
    /// A controller whose secondary master is `cd`; `irqs` are IRQ 14 and 15's eventfds.
    pub fn new(cd: Option<CdRom>, irqs: [EventFd; 2]) -> Self {
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
        IdeController { config: PciConfig::new(ids), channels }
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
            PRIMARY_CMD => self.channels[0].write(offset, data),
            SECONDARY_CMD => self.channels[1].write(offset, data),
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

    // Compatibility mode: the legacy ports, not BARs, carry everything.
    fn bar_read(&mut self, _bar: usize, _offset: u64, data: &mut [u8]) {
        data.fill(0xff);
    }

    fn bar_write(&mut self, _bar: usize, _offset: u64, _data: &[u8]) {}
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
    }

    impl Rig {
        fn new() -> Self {
            let (path, data) = iso(40);
            let mut cd = CdRom::new("vessel-cd0");
            cd.insert(Media::open(&path).unwrap());
            let irqs = [
                EventFd::new(libc::EFD_NONBLOCK).unwrap(),
                EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            ];
            Rig { ide: IdeController::new(Some(cd), irqs), data }
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
        assert_eq!(words[49] & (1 << 8), 0, "no DMA");
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
        // DMA asked for: aborted.
        r.out(CMD, 1, 1);
        r.out(CMD, 7, PACKET);
        assert_eq!((r.inb(CMD, 7) & ERR, r.inb(CMD, 1)), (ERR, ABRT));
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
        // Unknown ATA commands, SET FEATURES with a DMA mode, CHECK POWER MODE.
        for cmd in [0x00, 0x20, 0x30, 0xc8, 0xca, 0xff] {
            r.out(CMD, 7, cmd);
            assert_eq!(r.inb(CMD, 1), ABRT, "command {cmd:#x}");
        }
        r.out(CMD, 1, 0x03);
        r.out(CMD, 2, 0x22); // multiword DMA 2
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
}
