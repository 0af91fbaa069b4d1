//! CMOS RAM and the MC146818 real-time clock, reading the host's time (UTC), plus the
//! memory-size bytes firmware reads (the layout QEMU and SeaBIOS use).

use crate::devices::bus::BusDevice;

const SECONDS: usize = 0x00;
const MINUTES: usize = 0x02;
const HOURS: usize = 0x04;
const WEEKDAY: usize = 0x06;
const DAY: usize = 0x07;
const MONTH: usize = 0x08;
const YEAR: usize = 0x09;
const REG_A: usize = 0x0a;
const REG_B: usize = 0x0b;
const REG_C: usize = 0x0c;
const REG_D: usize = 0x0d;
const CENTURY: usize = 0x32;

const REG_B_24H: u8 = 1 << 1;
const REG_B_BINARY: u8 = 1 << 2;
const REG_D_VALID_RAM: u8 = 1 << 7;

/// A class of boot device as the CMOS boot-order nibbles name it (QEMU's `-boot` letters:
/// a floppy 1, c hard disk 2, d CD 3, n network 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootClass {
    HardDisk = 2,
    Cd = 3,
}

/// Boot-order nibbles: the first and second class at 0x3d (low, high nibble), the third in
/// 0x38's high nibble; 0x38 bit 0 skips the floppy boot-signature check.
const BOOT_ORDER_12: usize = 0x3d;
const BOOT_ORDER_3: usize = 0x38;

/// Source of wall-clock time, replaceable in tests.
pub type Clock = Box<dyn Fn() -> i64 + Send>;

pub struct Cmos {
    index: usize,
    ram: [u8; 128],
    clock: Clock,
}

fn host_time() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

fn to_bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

impl Cmos {
    /// `low_mem` is RAM below 4 GiB, `high_mem` RAM above it, in bytes.
    pub fn new(low_mem: u64, high_mem: u64, vcpus: u8) -> Self {
        Self::with_clock(low_mem, high_mem, vcpus, Box::new(host_time))
    }

    pub fn with_clock(low_mem: u64, high_mem: u64, vcpus: u8, clock: Clock) -> Self {
        let mut ram = [0u8; 128];
        ram[REG_A] = 0x26; // 32.768 kHz time base, 1024 Hz periodic rate
        ram[REG_B] = REG_B_24H;
        ram[REG_D] = REG_D_VALID_RAM;
        // Base memory in KiB (0x15/0x16), extended memory 1-64 MiB in KiB (0x17/0x18,
        // 0x30/0x31), memory above 16 MiB in 64 KiB units (0x34/0x35), above 4 GiB in
        // 64 KiB units (0x5b-0x5d), vCPU count - 1 (0x5f).
        ram[0x15..0x17].copy_from_slice(&640u16.to_le_bytes());
        let ext_kib = (low_mem.saturating_sub(1 << 20) >> 10).min(0xfc00) as u16;
        ram[0x17..0x19].copy_from_slice(&ext_kib.to_le_bytes());
        ram[0x30..0x32].copy_from_slice(&ext_kib.to_le_bytes());
        let above_16m = (low_mem.saturating_sub(16 << 20) >> 16).min(0xffff) as u16;
        ram[0x34..0x36].copy_from_slice(&above_16m.to_le_bytes());
        let above_4g = (high_mem >> 16).min(0xff_ffff) as u32;
        ram[0x5b..0x5e].copy_from_slice(&above_4g.to_le_bytes()[..3]);
        ram[0x5f] = vcpus.saturating_sub(1);
        Cmos { index: 0, ram, clock }
    }

    /// The firmware's default boot order by device class, for devices its boot-order list
    /// does not name (SeaBIOS reads these bytes on QEMU-like machines), at most three.
    pub fn set_boot_order(&mut self, order: &[BootClass]) {
        let mut nibbles = [0u8; 3];
        for (n, class) in nibbles.iter_mut().zip(order) {
            *n = *class as u8;
        }
        self.ram[BOOT_ORDER_12] = (nibbles[1] << 4) | nibbles[0];
        // No floppy drive, so no floppy signature to check.
        self.ram[BOOT_ORDER_3] = (nibbles[2] << 4) | 1;
    }

    fn read_register(&mut self, index: usize) -> u8 {
        let time_reg =
            matches!(index, SECONDS | MINUTES | HOURS | WEEKDAY | DAY | MONTH | YEAR | CENTURY);
        if !time_reg {
            let value = self.ram[index];
            if index == REG_C {
                self.ram[REG_C] = 0; // reading C acknowledges the interrupt flags
            }
            return value;
        }
        let now = (self.clock)();
        let days = now.div_euclid(86_400);
        let secs = now.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        let hour = (secs / 3600) as u8;
        let value = match index {
            SECONDS => (secs % 60) as u8,
            MINUTES => ((secs / 60) % 60) as u8,
            HOURS => hour,
            WEEKDAY => ((days + 4).rem_euclid(7) + 1) as u8, // 1970-01-01 was a Thursday; Sunday = 1
            DAY => day as u8,
            MONTH => month as u8,
            YEAR => year.rem_euclid(100) as u8,
            _ => (year / 100) as u8,
        };
        let reg_b = self.ram[REG_B];
        let (value, pm) = if index == HOURS && reg_b & REG_B_24H == 0 {
            let h12 = match value % 12 {
                0 => 12,
                h => h,
            };
            (h12, value >= 12)
        } else {
            (value, false)
        };
        let value = if reg_b & REG_B_BINARY != 0 { value } else { to_bcd(value) };
        if pm { value | 0x80 } else { value }
    }
}

/// The CMOS's state: the selected register and its RAM (the clock is the host's, read
/// anew after a restore, as a PC's battery-backed clock goes on while it is off).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CmosState {
    pub index: u8,
    pub ram: Vec<u8>,
}

impl crate::persist::Persist for Cmos {
    type State = CmosState;

    fn save_state(&self) -> CmosState {
        CmosState { index: self.index as u8, ram: self.ram.to_vec() }
    }

    fn restore_state(&mut self, state: &CmosState) -> Result<(), crate::persist::DeviceStateError> {
        let problem = |p: String| crate::persist::DeviceStateError::new("CMOS", p);
        let ram: [u8; 128] = state
            .ram
            .as_slice()
            .try_into()
            .map_err(|_| problem(format!("{} bytes of RAM (it has 128)", state.ram.len())))?;
        if usize::from(state.index) >= ram.len() {
            return Err(problem(format!("register {} selected (it has 128)", state.index)));
        }
        (self.index, self.ram) = (usize::from(state.index), ram);
        Ok(())
    }
}

impl BusDevice for Cmos {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset == 1 {
            data[0] = self.read_register(self.index);
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let Some(&value) = data.first() else { return };
        match offset {
            0 => self.index = usize::from(value & 0x7f), // bit 7 is the NMI mask
            _ => match self.index {
                // The clock follows the host; guest writes to it are not kept. Register
                // A's update-in-progress bit and C/D are read-only.
                SECONDS | MINUTES | HOURS | WEEKDAY | DAY | MONTH | YEAR | CENTURY | REG_C
                | REG_D => {}
                REG_A => self.ram[REG_A] = value & 0x7f,
                i => self.ram[i] = value,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(c: &mut Cmos, index: u8) -> u8 {
        c.write(0x70, 0, &[index]);
        let mut b = [0u8];
        c.read(0x70, 1, &mut b);
        b[0]
    }

    #[test]
    fn time_in_bcd_and_binary() {
        // 2026-11-26 09:12:48 UTC, a Thursday.
        let t = 1_795_684_368;
        let mut c = Cmos::with_clock(256 << 20, 0, 2, Box::new(move || t));
        assert_eq!(read(&mut c, 0x00), 0x48);
        assert_eq!(read(&mut c, 0x02), 0x12);
        assert_eq!(read(&mut c, 0x04), 0x09);
        assert_eq!(read(&mut c, 0x07), 0x26);
        assert_eq!(read(&mut c, 0x08), 0x11);
        assert_eq!(read(&mut c, 0x09), 0x26);
        assert_eq!(read(&mut c, 0x32), 0x20);
        assert_eq!(read(&mut c, 0x06), 5);
        c.write(0x70, 0, &[0x0b]);
        c.write(0x70, 1, &[REG_B_24H | REG_B_BINARY]);
        assert_eq!(read(&mut c, 0x00), 48);
        assert_eq!(read(&mut c, 0x09), 26);
    }

    #[test]
    fn twelve_hour_mode_sets_pm_bit() {
        let t = 15 * 3600; // 15:00 on 1970-01-01
        let mut c = Cmos::with_clock(256 << 20, 0, 1, Box::new(move || t));
        c.write(0x70, 0, &[0x0b]);
        c.write(0x70, 1, &[0]);
        assert_eq!(read(&mut c, 0x04), 0x80 | 0x03);
    }

    #[test]
    fn memory_size_bytes() {
        let mut c = Cmos::with_clock(512 << 20, 1 << 30, 4, Box::new(|| 0));
        // QEMU's `-boot order=dc`: the CD, then the hard disk.
        c.set_boot_order(&[BootClass::Cd, BootClass::HardDisk]);
        assert_eq!((read(&mut c, 0x3d), read(&mut c, 0x38)), (0x23, 0x01));
        c.set_boot_order(&[BootClass::HardDisk]);
        assert_eq!((read(&mut c, 0x3d), read(&mut c, 0x38)), (0x02, 0x01));
        let above_16m = u16::from_le_bytes([read(&mut c, 0x34), read(&mut c, 0x35)]);
        assert_eq!(u64::from(above_16m) << 16, (512 << 20) - (16 << 20));
        assert_eq!(read(&mut c, 0x5c), 0x40); // 1 GiB = 0x4000 * 64 KiB
        assert_eq!(read(&mut c, 0x5f), 3);
        assert_eq!(read(&mut c, 0x0d), REG_D_VALID_RAM);
    }

    #[test]
    fn its_ram_and_selected_register_survive_a_save() {
        use crate::persist::Persist;
        let mut c = Cmos::with_clock(512 << 20, 0, 2, Box::new(|| 0));
        c.write(0x70, 0, &[0x40]);
        c.write(0x70, 1, &[0x5a]); // a byte of the firmware's
        c.write(0x70, 0, &[0x0b]);
        let state = c.save_state();
        let mut restored = Cmos::with_clock(64 << 20, 0, 1, Box::new(|| 0));
        restored.restore_state(&state).unwrap();
        let mut b = [0u8];
        restored.read(0x70, 1, &mut b);
        assert_eq!(b[0], REG_B_24H, "register B still selected");
        assert_eq!(read(&mut restored, 0x40), 0x5a);
        assert_eq!(read(&mut restored, 0x5f), 1, "the saved machine's vCPU count");
        // A state from a file that is not a CMOS's: refused, the device unchanged.
        for bad in
            [CmosState { index: 0, ram: vec![0; 64] }, CmosState { index: 200, ram: vec![0; 128] }]
        {
            let error = restored.restore_state(&bad).unwrap_err();
            assert!(error.to_string().contains("CMOS"), "{error}");
        }
        assert_eq!(read(&mut restored, 0x40), 0x5a);
    }
}
