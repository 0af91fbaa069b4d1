//! The PCI root bus: an i440FX-compatible host bridge at 00:00.0, the devices in the other
//! slots, configuration access through ports 0xCF8/0xCFC (mechanism #1) and ECAM, and BAR
//! mappings on the MMIO and port buses that follow what the guest programs.

use std::sync::{Arc, Mutex, Weak};

use super::PciDevice;
use super::config::{self, BarKind, COMMAND_IO, COMMAND_MEMORY, PciConfig, PciIds};
use crate::devices::bus::{Bus, BusDevice, SharedDevice};
use crate::devices::log_limit::LogLimit;
use crate::sync::lock;
use crate::vstate::shadow::{self, ShadowRam};

/// Slots on bus 0; function 0 only.
pub const SLOTS: usize = 32;
/// Functions per slot; a device and its functions are kept at `slot * FUNCTIONS + function`.
pub const FUNCTIONS: usize = 8;
/// PCI INTx lines are IOAPIC pins 16-23 (level-triggered, active-low, as _PRT entries
/// without a link device are, ACPI 6.5 §6.2.13).
pub const INTX_GSI_BASE: u32 = 16;
pub const INTX_LINES: u32 = 8;

/// The GSI of `pin` (0 = INTA) of the device in `slot`: the usual rotation, so
/// neighbouring slots spread over the lines.
pub fn intx_gsi(slot: usize, pin: u8) -> u32 {
    INTX_GSI_BASE + ((slot as u32 + u32::from(pin)) % INTX_LINES)
}

pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

#[derive(Debug, thiserror::Error)]
pub enum PciError {
    #[error("the PCI bus is full")]
    NoSlot,
    #[error("PCI 00:{slot:02x}.{function} is taken or does not exist")]
    Taken { slot: usize, function: usize },
    #[error("no room for a {size:#x}-byte BAR in the PCI {window} window")]
    NoSpace { window: &'static str, size: u64 },
}

/// Address windows the VMM assigns BARs from, as firmware would.
#[derive(Clone, Copy, Debug)]
pub struct Windows {
    pub mem32: (u64, u64),
    pub io: (u64, u64),
}

pub struct PciRoot {
    bridge: Arc<Mutex<HostBridge>>,
    devices: Vec<Option<SharedPciDevice>>,
    mapped: Vec<[Option<u64>; 6]>,
    // Weak: the buses hold the config-access devices, which hold this root.
    mmio: Weak<Bus>,
    pio: Weak<Bus>,
    windows: Windows,
    next_mem32: u64,
    next_io: u64,
    /// BAR placements the guest got wrong (overlaps), logged at a limited rate.
    bad_bars: LogLimit,
}

/// The i440FX host bridge (00:00.0): identity, the PAM registers that govern the legacy
/// BIOS area's RAM (honoured on firmware machines through `ShadowRam`), and the SMRAM
/// register, answered as the 82441FX has it (no SMM behind it).
struct HostBridge {
    config: PciConfig,
    shadow: Option<ShadowRam>,
    bad_pam: LogLimit,
}

/// SMRAM control (82441FX §3.2.13): D_OPEN, D_CLS, D_LCK, G_SMRAME; C_BASE_SEG reads 010b.
const SMRAM: usize = 0x72;
const SMRAM_D_OPEN: u8 = 1 << 6;
const SMRAM_D_LCK: u8 = 1 << 4;
const SMRAM_RESET: u8 = 0x02;

impl HostBridge {
    fn new() -> Self {
        let mut config = PciConfig::new(PciIds {
            vendor: 0x8086,
            device: 0x1237,
            class: 0x06_00_00,
            revision: 0x02,
            subsystem_vendor: 0x1af4,
            subsystem: 0x1100,
        });
        // PAM0's high nibble, then both nibbles of PAM1-6: RE and WE each.
        config.set_wmask(shadow::PAM0, &[0x30]);
        config.set_wmask(shadow::PAM0 + 1, &[0x33; shadow::PAM_COUNT - 1]);
        config.set_bytes(SMRAM, &[SMRAM_RESET]);
        config.set_wmask(SMRAM, &[0x78]);
        HostBridge { config, shadow: None, bad_pam: LogLimit::default() }
    }

    fn byte(&self, offset: usize) -> u8 {
        let mut b = [0u8];
        self.config.read(offset, &mut b);
        b[0]
    }
}

impl PciDevice for HostBridge {
    fn config(&self) -> &PciConfig {
        &self.config
    }
    fn config_mut(&mut self) -> &mut PciConfig {
        &mut self.config
    }
    fn config_write(&mut self, offset: usize, data: &[u8]) {
        for (i, &value) in data.iter().enumerate() {
            let at = offset + i;
            if at == SMRAM {
                // Once locked, SMRAM stays as it is until reset, and D_OPEN is closed.
                if self.byte(SMRAM) & SMRAM_D_LCK != 0 {
                    continue;
                }
                let value = if value & SMRAM_D_LCK != 0 { value & !SMRAM_D_OPEN } else { value };
                self.config.write(at, &[value]);
            } else {
                self.config.write(at, &[value]);
            }
        }
        let pam = shadow::PAM0..shadow::PAM0 + shadow::PAM_COUNT;
        if offset < pam.end && offset + data.len() > pam.start {
            let mut regs = [0u8; shadow::PAM_COUNT];
            self.config.read(shadow::PAM0, &mut regs);
            if let Some(shadow) = &mut self.shadow
                && let Err(e) = shadow.set_pam(&regs)
                && self.bad_pam.allow().is_some()
            {
                log::error!("the BIOS area's RAM did not follow the PAM registers: {e}");
            }
        }
    }
    fn bar_read(&mut self, _: usize, _: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn bar_write(&mut self, _: usize, _: u64, _: &[u8]) {}
    fn save_state(&self) -> Result<Vec<u8>, String> {
        Ok(super::save_config_only(&self.config))
    }
    /// The PAM registers and SMRAM as saved; the BIOS area's RAM follows the PAMs again.
    fn restore_state(&mut self, state: &[u8]) -> Result<(), String> {
        super::restore_config_only(&mut self.config, state)?;
        let mut regs = [0u8; shadow::PAM_COUNT];
        self.config.read(shadow::PAM0, &mut regs);
        if let Some(shadow) = &mut self.shadow {
            shadow.set_pam(&regs).map_err(|e| format!("the BIOS area's RAM: {e}"))?;
        }
        Ok(())
    }
}

/// A BAR's range on a bus, forwarding to its device.
struct BarWindow {
    device: SharedPciDevice,
    bar: usize,
}

impl BusDevice for BarWindow {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        lock(&self.device).bar_read(self.bar, offset, data);
    }
    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        lock(&self.device).bar_write(self.bar, offset, data);
    }
}

fn align_up(v: u64, align: u64) -> Option<u64> {
    v.checked_add(align - 1).map(|v| v & !(align - 1))
}

impl PciRoot {
    pub fn new(mmio: &Arc<Bus>, pio: &Arc<Bus>, windows: Windows) -> Self {
        let bridge = Arc::new(Mutex::new(HostBridge::new()));
        let mut devices: Vec<Option<SharedPciDevice>> = vec![None; SLOTS * FUNCTIONS];
        devices[0] = Some(bridge.clone());
        PciRoot {
            bridge,
            devices,
            mapped: vec![[None; 6]; SLOTS * FUNCTIONS],
            mmio: Arc::downgrade(mmio),
            pio: Arc::downgrade(pio),
            windows,
            next_mem32: windows.mem32.0,
            next_io: windows.io.0,
            bad_bars: LogLimit::default(),
        }
    }

    /// The host bridge's PAM registers govern `shadow` from now on (firmware machines).
    pub fn attach_shadow_ram(&mut self, shadow: ShadowRam) {
        lock(&self.bridge).shadow = Some(shadow);
    }

    /// Plugs `device` into the next free slot, assigns its BARs and turns decoding on, as
    /// firmware does before booting an OS. Returns the slot.
    pub fn add_device(&mut self, device: SharedPciDevice) -> Result<usize, PciError> {
        let slot = (0..SLOTS)
            .find(|slot| self.devices[slot * FUNCTIONS].is_none())
            .ok_or(PciError::NoSlot)?;
        self.plug(slot, 0, device)?;
        Ok(slot)
    }

    /// Plugs `device` in as function `function` of the device in `slot` (whose function 0
    /// says in its header type that it has more), as `add_device` does.
    pub fn add_function(
        &mut self,
        slot: usize,
        function: usize,
        device: SharedPciDevice,
    ) -> Result<(), PciError> {
        let taken = || PciError::Taken { slot, function };
        if slot >= SLOTS || function == 0 || function >= FUNCTIONS {
            return Err(taken());
        }
        if self.devices[slot * FUNCTIONS].is_none()
            || self.devices[slot * FUNCTIONS + function].is_some()
        {
            return Err(taken());
        }
        self.plug(slot, function, device)
    }

    fn plug(
        &mut self,
        slot: usize,
        function: usize,
        device: SharedPciDevice,
    ) -> Result<(), PciError> {
        {
            let mut d = lock(&device);
            let mut command = d.config().command();
            for bar in 0..6 {
                let Some(info) = d.config().bar(bar) else { continue };
                let (next, end, window, flag) = match info.kind {
                    BarKind::Io => (&mut self.next_io, self.windows.io.1, "I/O", COMMAND_IO),
                    _ => (&mut self.next_mem32, self.windows.mem32.1, "memory", COMMAND_MEMORY),
                };
                let addr = align_up(*next, info.size)
                    .filter(|a| a.checked_add(info.size).is_some_and(|e| e <= end))
                    .ok_or(PciError::NoSpace { window, size: info.size })?;
                *next = addr + info.size;
                d.config_mut().set_bar_address(bar, addr);
                command |= flag;
            }
            d.config_mut().set_bytes(config::COMMAND, &command.to_le_bytes());
            // Firmware writes the routed interrupt into Interrupt Line.
            let pin = d.config().read16(config::INTERRUPT_LINE) >> 8;
            if pin != 0 {
                let line = intx_gsi(slot, (pin - 1) as u8) as u8;
                d.config_mut().set_bytes(config::INTERRUPT_LINE, &[line]);
            }
        }
        let devfn = slot * FUNCTIONS + function;
        self.devices[devfn] = Some(device);
        self.update_mappings(devfn);
        Ok(())
    }

    /// Maps or moves each BAR of the function at `devfn` to where its registers and the
    /// command register say it decodes.
    fn update_mappings(&mut self, devfn: usize) {
        let Some(device) = self.devices[devfn].clone() else { return };
        let (slot, function) = (devfn / FUNCTIONS, devfn % FUNCTIONS);
        let mut d = lock(&device);
        let command = d.config().command();
        for bar in 0..6 {
            let Some(info) = d.config().bar(bar) else { continue };
            let (bus, enabled) = match info.kind {
                BarKind::Io => (&self.pio, command & COMMAND_IO != 0),
                _ => (&self.mmio, command & COMMAND_MEMORY != 0),
            };
            let Some(bus) = bus.upgrade() else { return };
            let address = d.config().bar_address(bar).filter(|a| enabled && *a != 0);
            // Where the BAR would reach past its address space it does not decode (as
            // QEMU has it): this is the all-ones address firmware writes to size a BAR,
            // often with decoding on.
            let limit = match info.kind {
                BarKind::Io => 0x1_0000,
                BarKind::Mem32 { .. } => 0xffff_ffff,
                BarKind::Mem64 { .. } => u64::MAX,
            };
            let address =
                address.filter(|a| a.checked_add(info.size).is_some_and(|end| end <= limit));
            if address == self.mapped[devfn][bar] {
                continue;
            }
            if let Some(old) = self.mapped[devfn][bar].take() {
                bus.remove(old);
            }
            if let Some(addr) = address {
                let window: SharedDevice =
                    Arc::new(Mutex::new(BarWindow { device: device.clone(), bar }));
                match bus.insert(addr, info.size, window) {
                    Ok(()) => self.mapped[devfn][bar] = Some(addr),
                    Err(e) => {
                        if self.bad_bars.allow().is_some() {
                            log::warn!(
                                "PCI 00:{slot:02x}.{function} BAR {bar} at {addr:#x}: {e}; not decoded"
                            );
                        }
                    }
                }
            }
            d.bar_moved(bar, self.mapped[devfn][bar]);
        }
    }

    fn device(&self, bus: u8, slot: usize, function: u8) -> Option<SharedPciDevice> {
        if bus != 0 || slot >= SLOTS {
            return None;
        }
        self.devices.get(slot * FUNCTIONS + usize::from(function)).cloned().flatten()
    }

    pub fn config_read(&self, bus: u8, slot: usize, function: u8, offset: usize, data: &mut [u8]) {
        match self.device(bus, slot, function) {
            Some(d) => lock(&d).config_read(offset, data),
            None => data.fill(0xff),
        }
    }

    /// Every function's state, by slot and function (`slot * FUNCTIONS + function`).
    pub fn save_state(&self) -> Result<Vec<(u16, Vec<u8>)>, crate::persist::DeviceStateError> {
        let mut out = Vec::new();
        for (devfn, device) in self.devices.iter().enumerate() {
            let Some(device) = device else { continue };
            let state = lock(device).save_state().map_err(|p| {
                crate::persist::DeviceStateError::new("PCI bus", format!("{}: {p}", name(devfn)))
            })?;
            out.push((devfn as u16, state));
        }
        Ok(out)
    }

    /// Takes each function's saved state (the machine has the same functions in the same
    /// places: checked first), then places every BAR where the restored configuration
    /// spaces say, on the buses and in the devices' ioeventfds.
    pub fn restore_state(
        &mut self,
        states: &[(u16, Vec<u8>)],
    ) -> Result<(), crate::persist::DeviceStateError> {
        let problem = |p: String| crate::persist::DeviceStateError::new("PCI bus", p);
        let here: Vec<u16> = (self.devices.iter().enumerate())
            .filter_map(|(devfn, d)| d.as_ref().map(|_| devfn as u16))
            .collect();
        let saved: Vec<u16> = states.iter().map(|(devfn, _)| *devfn).collect();
        if here != saved {
            let list = |v: &[u16]| v.iter().map(|&d| name(d.into())).collect::<Vec<_>>().join(", ");
            return Err(problem(format!(
                "it has functions {} and the saved machine had {}",
                list(&here),
                list(&saved)
            )));
        }
        for (devfn, state) in states {
            let device = self.devices[usize::from(*devfn)].clone().expect("checked above");
            lock(&device)
                .restore_state(state)
                .map_err(|p| problem(format!("{}: {p}", name(usize::from(*devfn)))))?;
        }
        for devfn in 0..self.devices.len() {
            self.update_mappings(devfn);
        }
        Ok(())
    }

    pub fn config_write(&mut self, bus: u8, slot: usize, function: u8, offset: usize, data: &[u8]) {
        let Some(d) = self.device(bus, slot, function) else { return };
        lock(&d).config_write(offset, data);
        let end = offset.saturating_add(data.len());
        let touches = |lo: usize, hi: usize| offset < hi && end > lo;
        if touches(config::COMMAND, config::COMMAND + 2) || touches(config::BAR0, config::BAR0 + 24)
        {
            self.update_mappings(slot * FUNCTIONS + usize::from(function));
        }
    }
}

/// A function's name as `lspci` gives it: 00:SS.F.
fn name(devfn: usize) -> String {
    format!("00:{:02x}.{}", devfn / FUNCTIONS, devfn % FUNCTIONS)
}

/// Ports 0xCF8-0xCFF: CONFIG_ADDRESS (dword at 0xCF8) and CONFIG_DATA (0xCFC-0xCFF). A
/// byte at 0xCF9 is the PIIX reset control register, which shares the range on a PC.
pub struct ConfigPorts {
    root: Arc<Mutex<PciRoot>>,
    reset_control: SharedDevice,
    address: u32,
}

impl ConfigPorts {
    pub const BASE: u64 = 0xcf8;

    pub fn new(root: Arc<Mutex<PciRoot>>, reset_control: SharedDevice) -> Self {
        ConfigPorts { root, reset_control, address: 0 }
    }

    /// (bus, slot, function, register) of CONFIG_ADDRESS, if enabled.
    fn target(&self, data_offset: u64) -> Option<(u8, usize, u8, usize)> {
        let a = self.address;
        (a & 0x8000_0000 != 0).then(|| {
            let reg = (a & 0xfc) as usize + data_offset as usize;
            ((a >> 16) as u8, ((a >> 11) & 0x1f) as usize, ((a >> 8) & 0x7) as u8, reg)
        })
    }
}

impl crate::persist::Persist for ConfigPorts {
    /// CONFIG_ADDRESS as the guest last wrote it.
    type State = u32;

    fn save_state(&self) -> u32 {
        self.address
    }

    fn restore_state(&mut self, address: &u32) -> Result<(), crate::persist::DeviceStateError> {
        self.address = *address;
        Ok(())
    }
}

impl BusDevice for ConfigPorts {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        match (offset, data.len()) {
            (0, 4) => data.copy_from_slice(&self.address.to_le_bytes()),
            (1, 1) => lock(&self.reset_control).read(Self::BASE + 1, 0, data),
            (4..=7, _) => match self.target(offset - 4) {
                Some((bus, slot, function, reg)) => {
                    lock(&self.root).config_read(bus, slot, function, reg, data)
                }
                None => data.fill(0xff),
            },
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        match (offset, data.len()) {
            (0, 4) => self.address = u32::from_le_bytes(data.try_into().expect("4 bytes")),
            (1, 1) => lock(&self.reset_control).write(Self::BASE + 1, 0, data),
            (4..=7, _) => {
                if let Some((bus, slot, function, reg)) = self.target(offset - 4) {
                    lock(&self.root).config_write(bus, slot, function, reg, data);
                }
            }
            _ => {}
        }
    }
}

/// ECAM (PCIe 4.0 §7.2.2) for bus 0: 4 KiB of configuration space per function.
pub struct Ecam {
    root: Arc<Mutex<PciRoot>>,
}

impl Ecam {
    pub fn new(root: Arc<Mutex<PciRoot>>) -> Self {
        Ecam { root }
    }

    fn decode(offset: u64) -> (u8, usize, u8, usize) {
        (
            (offset >> 20) as u8,
            ((offset >> 15) & 0x1f) as usize,
            ((offset >> 12) & 0x7) as u8,
            (offset & 0xfff) as usize,
        )
    }
}

impl BusDevice for Ecam {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        let (bus, slot, function, reg) = Self::decode(offset);
        lock(&self.root).config_read(bus, slot, function, reg, data);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        let (bus, slot, function, reg) = Self::decode(offset);
        lock(&self.root).config_write(bus, slot, function, reg, data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::pci::config::BarInfo;

    struct Dummy {
        config: PciConfig,
        moves: Vec<(usize, Option<u64>)>,
    }

    impl PciDevice for Dummy {
        fn config(&self) -> &PciConfig {
            &self.config
        }
        fn config_mut(&mut self) -> &mut PciConfig {
            &mut self.config
        }
        fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
            data.fill(bar as u8 * 16 + offset as u8);
        }
        fn bar_write(&mut self, _: usize, _: u64, _: &[u8]) {}
        fn bar_moved(&mut self, bar: usize, address: Option<u64>) {
            self.moves.push((bar, address));
        }
        fn save_state(&self) -> Result<Vec<u8>, String> {
            Ok(crate::devices::pci::save_config_only(&self.config))
        }
        fn restore_state(&mut self, state: &[u8]) -> Result<(), String> {
            crate::devices::pci::restore_config_only(&mut self.config, state)
        }
    }

    /// Root, MMIO bus, the device, the config ports, and the port bus kept alive.
    type Setup = (Arc<Mutex<PciRoot>>, Arc<Bus>, Arc<Mutex<Dummy>>, ConfigPorts, Arc<Bus>);

    fn setup() -> Setup {
        let mmio = Arc::new(Bus::new("mmio"));
        let pio = Arc::new(Bus::new("pio"));
        let windows = Windows { mem32: (0xc000_0000, 0xe000_0000), io: (0xc000, 0x1_0000) };
        let root = Arc::new(Mutex::new(PciRoot::new(&mmio, &pio, windows)));
        let mut config = PciConfig::new(PciIds {
            vendor: 0x1af4,
            device: 0x1044,
            class: 0xff00,
            revision: 1,
            subsystem_vendor: 0x1af4,
            subsystem: 0x40,
        });
        config
            .add_bar(0, BarInfo { kind: BarKind::Mem64 { prefetchable: false }, size: 0x4000 })
            .unwrap();
        let dummy = Arc::new(Mutex::new(Dummy { config, moves: Vec::new() }));
        assert_eq!(lock(&root).add_device(dummy.clone()).unwrap(), 1);
        struct NoReset;
        impl BusDevice for NoReset {
            fn read(&mut self, _: u64, _: u64, d: &mut [u8]) {
                d.fill(0x42);
            }
            fn write(&mut self, _: u64, _: u64, _: &[u8]) {}
        }
        let ports = ConfigPorts::new(root.clone(), Arc::new(Mutex::new(NoReset)));
        (root, mmio, dummy, ports, pio)
    }

    fn cfg_read32(ports: &mut ConfigPorts, slot: u32, reg: u32) -> u32 {
        ports.write(0xcf8, 0, &(0x8000_0000 | (slot << 11) | reg).to_le_bytes());
        let mut d = [0u8; 4];
        ports.read(0xcf8, 4, &mut d);
        u32::from_le_bytes(d)
    }

    fn cfg_write32(ports: &mut ConfigPorts, slot: u32, reg: u32, v: u32) {
        ports.write(0xcf8, 0, &(0x8000_0000 | (slot << 11) | reg).to_le_bytes());
        ports.write(0xcf8, 4, &v.to_le_bytes());
    }

    #[test]
    fn a_restored_bus_places_the_bars_where_the_guest_had_moved_them() {
        use crate::persist::Persist;
        let (root, mmio, _dummy, mut ports, _pio) = setup();
        // The guest moves the device's BAR and closes the host bridge's SMRAM.
        cfg_write32(&mut ports, 1, 0x10, 0xd000_0000);
        cfg_write32(&mut ports, 0, 0x70, 0x000a_0000); // SMRAM (0x72): G_SMRAME
        let state = lock(&root).save_state().unwrap();
        let address = ports.save_state();

        let (root2, mmio2, dummy2, mut ports2, _pio2) = setup();
        lock(&root2).restore_state(&state).unwrap();
        ports2.restore_state(&address).unwrap();
        let mut a = [0u8; 4];
        ports2.read(0xcf8, 0, &mut a);
        assert_eq!(a, cfg_read32_address(0, 0x70), "CONFIG_ADDRESS as the guest left it");
        let mut d = [0u8];
        mmio2.read(0xd000_0000, &mut d);
        assert_eq!(d[0], 0, "decoded where the guest put it");
        mmio2.read(0xc000_0000, &mut d);
        assert_eq!(d[0], 0xff, "no longer where the machine first put it");
        assert_eq!(lock(&dummy2).moves.last(), Some(&(0, Some(0xd000_0000))));
        assert_eq!((cfg_read32(&mut ports2, 0, 0x70) >> 16) & 0xff, 0x0a);
        // A machine with other functions refuses the state, naming both sets.
        let (root3, _mmio3, _d3, _p3, _pio3) = setup();
        lock(&root3).add_device(lock(&root).devices[8].clone().unwrap()).unwrap();
        let error = lock(&root3).restore_state(&state).unwrap_err().to_string();
        assert!(error.contains("00:02.0") && error.contains("PCI bus"), "{error}");
        drop(mmio);
    }

    fn cfg_read32_address(slot: u32, reg: u32) -> [u8; 4] {
        (0x8000_0000u32 | (slot << 11) | reg).to_le_bytes()
    }

    #[test]
    fn host_bridge_and_device_are_visible() {
        let (_root, _mmio, _dummy, mut ports, _pio) = setup();
        assert_eq!(cfg_read32(&mut ports, 0, 0), 0x1237_8086);
        assert_eq!(cfg_read32(&mut ports, 1, 0), 0x1044_1af4);
        assert_eq!(cfg_read32(&mut ports, 2, 0), 0xffff_ffff, "empty slot");
        // A byte at 0xCF9 is the reset register, not CONFIG_ADDRESS.
        let mut b = [0u8];
        ports.read(0xcf8, 1, &mut b);
        assert_eq!(b[0], 0x42);
    }

    #[test]
    fn functions_of_a_multi_function_device() {
        let (root, mmio, _dummy, mut ports, _pio) = setup();
        let function = |bar: u64| {
            let mut config = PciConfig::new(PciIds {
                vendor: 0x8086,
                device: 0x7010,
                class: 0x01_01_80,
                revision: 0,
                subsystem_vendor: 0,
                subsystem: 0,
            });
            config
                .add_bar(0, BarInfo { kind: BarKind::Mem32 { prefetchable: false }, size: bar })
                .unwrap();
            Arc::new(Mutex::new(Dummy { config, moves: Vec::new() }))
        };
        // Function 1 of slot 1: its own config space, its BAR assigned and decoded.
        lock(&root).add_function(1, 1, function(0x1000)).unwrap();
        let at = |ports: &mut ConfigPorts, function: u32, reg: u32| {
            ports.write(0xcf8, 0, &(0x8000_0000 | (1 << 11) | (function << 8) | reg).to_le_bytes());
            let mut d = [0u8; 4];
            ports.read(0xcf8, 4, &mut d);
            u32::from_le_bytes(d)
        };
        assert_eq!(at(&mut ports, 1, 0), 0x7010_8086);
        assert_eq!(at(&mut ports, 0, 0), 0x1044_1af4, "function 0 unchanged");
        assert_eq!(at(&mut ports, 2, 0), 0xffff_ffff, "no function 2");
        let bar = u64::from(at(&mut ports, 1, 0x10) & !0xf);
        let mut d = [0u8];
        mmio.read(bar, &mut d);
        assert_eq!(d[0], 0, "decoded: the function's BAR 0 answers");
        // Taken, out of range, or a slot without function 0: refused.
        for (slot, f) in [(1, 1), (1, 8), (1, 0), (5, 1), (40, 1)] {
            assert!(lock(&root).add_function(slot, f, function(0x1000)).is_err(), "{slot}.{f}");
        }
    }

    #[test]
    fn a_bar_being_sized_does_not_decode() {
        let (root, _mmio, _dummy, mut ports, _pio) = setup();
        let mut config = PciConfig::new(PciIds {
            vendor: 0x1234,
            device: 0x1111,
            class: 0x03_00_00,
            revision: 2,
            subsystem_vendor: 0,
            subsystem: 0,
        });
        let bar = BarInfo { kind: BarKind::Mem32 { prefetchable: true }, size: 16 << 20 };
        config.add_bar(0, bar).unwrap();
        let device = Arc::new(Mutex::new(Dummy { config, moves: Vec::new() }));
        let slot = lock(&root).add_device(device.clone()).unwrap() as u32;
        let assigned = u64::from(cfg_read32(&mut ports, slot, 0x10) & !0xf);
        // Firmware sizes it with decoding on: all ones reach 4 GiB, so it decodes nowhere
        // (its 16 MiB at 0xFF000000 would cover the BIOS ROM), then it is placed again.
        cfg_write32(&mut ports, slot, 0x10, 0xffff_ffff);
        assert_eq!(cfg_read32(&mut ports, slot, 0x10), 0xff00_0008);
        cfg_write32(&mut ports, slot, 0x10, 0xd000_0000);
        let moves = lock(&device).moves.clone();
        assert_eq!(moves, [(0, Some(assigned)), (0, None), (0, Some(0xd000_0000))]);
    }

    #[test]
    fn the_host_bridge_answers_pam_and_smram() {
        let (_root, _mmio, _dummy, mut ports, _pio) = setup();
        // PAM0-6 read back within their fields (PAM0's low nibble is reserved).
        cfg_write32(&mut ports, 0, 0x58, 0xffff_ff00);
        assert_eq!(cfg_read32(&mut ports, 0, 0x58), 0x3333_3000);
        cfg_write32(&mut ports, 0, 0x5c, 0x1111_1111);
        assert_eq!(cfg_read32(&mut ports, 0, 0x5c), 0x1111_1111);
        // SMRAM: C_BASE_SEG reads 010b; D_LCK closes D_OPEN and freezes the register.
        let smram = |ports: &mut ConfigPorts| (cfg_read32(ports, 0, 0x70) >> 16) as u8;
        assert_eq!(smram(&mut ports), 0x02);
        cfg_write32(&mut ports, 0, 0x70, 0x0048_0000); // D_OPEN, G_SMRAME
        assert_eq!(smram(&mut ports), 0x4a);
        cfg_write32(&mut ports, 0, 0x70, 0x0058_0000); // and D_LCK
        assert_eq!(smram(&mut ports), 0x1a, "locked, D_OPEN closed");
        cfg_write32(&mut ports, 0, 0x70, 0x0040_0000);
        assert_eq!(smram(&mut ports), 0x1a, "frozen until reset");
    }

    #[test]
    fn bars_follow_the_guest() {
        let (_root, mmio, dummy, mut ports, _pio) = setup();
        let bar = u64::from(cfg_read32(&mut ports, 1, 0x10) & !0xf);
        assert_eq!(bar, 0xc000_0000, "assigned at build");
        let mut d = [0u8; 1];
        mmio.read(bar + 3, &mut d);
        assert_eq!(d[0], 3);
        // Memory decode off: unmapped.
        cfg_write32(&mut ports, 1, 0x04, 0);
        mmio.read(bar + 3, &mut d);
        assert_eq!(d[0], 0xff);
        // Sizing, then a new address, then decode on again: mapped at the new place.
        cfg_write32(&mut ports, 1, 0x10, 0xffff_ffff);
        assert_eq!(cfg_read32(&mut ports, 1, 0x10), 0xffff_c004);
        cfg_write32(&mut ports, 1, 0x10, 0xd000_0000);
        cfg_write32(&mut ports, 1, 0x04, u32::from(COMMAND_MEMORY));
        mmio.read(0xd000_0001, &mut d);
        assert_eq!(d[0], 1);
        mmio.read(bar + 1, &mut d);
        assert_eq!(d[0], 0xff);
        let moves = &lock(&dummy).moves;
        assert_eq!(moves.first(), Some(&(0, Some(0xc000_0000))));
        assert_eq!(moves.last(), Some(&(0, Some(0xd000_0000))));
    }

    #[test]
    fn ecam_reaches_the_same_space() {
        let (root, _mmio, _dummy, _ports, _pio) = setup();
        let mut ecam = Ecam::new(root);
        let mut d = [0u8; 4];
        ecam.read(0, 1 << 15, &mut d);
        assert_eq!(u32::from_le_bytes(d), 0x1044_1af4);
        ecam.read(0, (1 << 20) | (1 << 15), &mut d);
        assert_eq!(d, [0xff; 4], "bus 1 is empty");
        ecam.read(0, (1 << 15) | 0xffe, &mut d[..2]);
    }
}
