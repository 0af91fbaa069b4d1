//! The virtio PCI transport, modern only (virtio 1.2 §4.1): common, notify, ISR, device
//! and PCI_CFG capabilities in front of one 64-bit BAR, MSI-X in the same BAR, and queue
//! notifications through ioeventfds that follow the BAR.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;

use kvm_ioctls::{IoEventAddress, NoDatamatch, VmFd};
use virtio_queue::{Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

use super::{
    CONFIG_CHANGED, MAX_QUEUES, VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_RING_INDIRECT_DESC,
    VIRTIO_F_VERSION_1, VirtioDevice, serve_again, serve_queue,
};
use crate::devices::log_limit::{LogLimit, held_back};
use crate::devices::pci::config::{COMMAND_INTX_DISABLE, STATUS};
use crate::devices::pci::msix::{self, Msix};
use crate::devices::pci::{BarInfo, BarKind, PciConfig, PciDevice, PciIds};
use crate::vstate::irq::{GsiRouter, IntxLine, IrqError};
use crate::vstate::memory::GuestMem;

const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
const VIRTIO_PCI_DEVICE_BASE: u16 = 0x1040;

/// Layout of BAR 0.
const BAR_SIZE: u64 = 0x10000;
const COMMON_OFFSET: u64 = 0x0000;
const COMMON_SIZE: u64 = 0x40;
const ISR_OFFSET: u64 = 0x1000;
const DEVICE_OFFSET: u64 = 0x2000;
const DEVICE_SIZE: u64 = 0x1000;
const NOTIFY_OFFSET: u64 = 0x3000;
const NOTIFY_MULTIPLIER: u32 = 4;
const NOTIFY_SIZE: u64 = 0x1000;
const MSIX_TABLE_OFFSET: u64 = 0x4000;
const MSIX_PBA_OFFSET: u64 = 0x6000;

/// virtio_pci_cap cfg_type values (§4.1.4).
const CAP_COMMON: u8 = 1;
const CAP_NOTIFY: u8 = 2;
const CAP_ISR: u8 = 3;
const CAP_DEVICE: u8 = 4;
const CAP_PCI_CFG: u8 = 5;
const CAP_VENDOR: u8 = 0x09;

/// Device status bits (§2.1).
const STATUS_DRIVER_OK: u8 = 4;
const STATUS_FEATURES_OK: u8 = 8;
const STATUS_FAILED: u8 = 0x80;

/// "No vector" for config_msix_vector / queue_msix_vector (§4.1.5.1.2).
const NO_VECTOR: u16 = 0xffff;

/// A queue's saved state: virtio-queue's own (positions in the rings, their addresses,
/// size, ready, EVENT_IDX) and its MSI-X vector.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SavedQueue {
    pub max_size: u16,
    pub size: u16,
    pub ready: bool,
    pub next_avail: u16,
    pub next_used: u16,
    pub event_idx: bool,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
    pub msix_vector: u16,
}

/// The transport's saved state, with its configuration space, MSI-X and device model.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct VirtioPciState {
    pub config: Vec<u8>,
    pub msix: msix::MsixState,
    pub queues: Vec<SavedQueue>,
    pub device_feature_select: u32,
    pub driver_feature_select: u32,
    pub driver_features: u64,
    pub status: u8,
    pub config_generation: u8,
    pub config_msix_vector: u16,
    pub queue_select: u16,
    pub isr: u8,
    /// The device model's own (`VirtioDevice::save_state`).
    pub device: Vec<u8>,
}

/// Transport state of each queue, beside the `Queue` itself.
struct QueueState {
    msix_vector: u16,
    notify: EventFd,
}

pub struct VirtioPciDevice {
    config: PciConfig,
    device: Box<dyn VirtioDevice>,
    queues: Vec<Queue>,
    queue_state: Vec<QueueState>,
    msix: Msix,
    intx: Option<IntxLine>,
    mem: GuestMem,
    vm: Option<Arc<VmFd>>,
    notify_base: Option<u64>,
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    status: u8,
    config_generation: u8,
    config_msix_vector: u16,
    queue_select: u16,
    isr: u8,
    /// Offsets of the PCI_CFG and MSI-X capabilities in configuration space.
    pci_cfg_cap: usize,
    msix_cap: usize,
    /// Warnings a driver can provoke at will (bad rings, broken queues).
    guest_warnings: LogLimit,
}

fn vendor_cap(cfg_type: u8, offset: u64, length: u64, extra: &[u8]) -> Vec<u8> {
    let cap_len = 16 + extra.len() as u8;
    let mut body = vec![cap_len, cfg_type, 0, 0, 0, 0];
    body.extend_from_slice(&(offset as u32).to_le_bytes());
    body.extend_from_slice(&(length as u32).to_le_bytes());
    body.extend_from_slice(extra);
    body
}

fn le_value(data: &[u8]) -> u64 {
    let mut raw = [0u8; 8];
    let n = data.len().min(8);
    raw[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(raw)
}

impl VirtioPciDevice {
    /// `VirtioDevice::hand_over` of the wrapped device.
    pub fn hand_over(&mut self, release: bool) -> Result<(), String> {
        self.device.hand_over(release)
    }

    /// `VirtioDevice::copy_source` of the wrapped device.
    pub fn copy_source(&mut self) -> Option<&mut dyn crate::devices::storage::CopySource> {
        self.device.copy_source()
    }

    /// `VirtioDevice::switch_image` of the wrapped device.
    pub fn switch_image(&mut self) -> Option<&mut dyn crate::devices::storage::SwitchImage> {
        self.device.switch_image()
    }

    /// The wrapped device's virtio device type (`TYPE_BLOCK`, ...).
    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    /// Wraps `device`. Without `router` there are no MSI-X injection paths and without `vm`
    /// no ioeventfds: unit tests and fuzzing run that way, without KVM.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMem,
        router: Option<Arc<GsiRouter>>,
        vm: Option<Arc<VmFd>>,
    ) -> Result<Self, IrqError> {
        let queue_count = device.queue_max_sizes().len();
        let type_ = device.device_type() as u16;
        let mut config = PciConfig::new(PciIds {
            vendor: VIRTIO_PCI_VENDOR,
            device: VIRTIO_PCI_DEVICE_BASE + type_,
            class: device.pci_class(),
            revision: 1,
            subsystem_vendor: VIRTIO_PCI_VENDOR,
            subsystem: 0x40 + type_,
        });
        config
            .add_bar(0, BarInfo { kind: BarKind::Mem64 { prefetchable: false }, size: BAR_SIZE })
            .expect("BAR 0 is free");
        // One vector per queue plus one for configuration changes.
        let msix = Msix::new(queue_count as u16 + 1, router)?;
        let caps = [
            vendor_cap(CAP_COMMON, COMMON_OFFSET, COMMON_SIZE, &[]),
            vendor_cap(CAP_ISR, ISR_OFFSET, 1, &[]),
            vendor_cap(CAP_DEVICE, DEVICE_OFFSET, DEVICE_SIZE, &[]),
            vendor_cap(CAP_NOTIFY, NOTIFY_OFFSET, NOTIFY_SIZE, &NOTIFY_MULTIPLIER.to_le_bytes()),
        ];
        for cap in caps {
            config.add_capability(CAP_VENDOR, &cap).expect("capabilities fit");
        }
        // PCI_CFG: bar, offset and length are guest-writable, and so is the data window.
        let pci_cfg_cap = config
            .add_capability(CAP_VENDOR, &vendor_cap(CAP_PCI_CFG, 0, 0, &[0; 4]))
            .expect("fits");
        config.set_wmask(pci_cfg_cap + 4, &[0xff]);
        config.set_wmask(pci_cfg_cap + 8, &[0xff; 8]);
        config.set_wmask(pci_cfg_cap + 16, &[0xff; 4]);
        let msix_cap = config
            .add_capability(
                msix::CAPABILITY_ID,
                &msix.capability(0, MSIX_TABLE_OFFSET as u32, MSIX_PBA_OFFSET as u32),
            )
            .expect("fits");
        config.set_wmask(msix_cap + 3, &[Msix::control_wmask()[1]]);
        config.set_interrupt_pin(1); // INTA

        let queues = device
            .queue_max_sizes()
            .iter()
            .map(|&max| Queue::new(max).expect("queue sizes are powers of two"))
            .collect();
        let queue_state = (0..queue_count)
            .map(|_| {
                Ok(QueueState {
                    msix_vector: NO_VECTOR,
                    notify: EventFd::new(libc::EFD_NONBLOCK).map_err(IrqError::EventFd)?,
                })
            })
            .collect::<Result<Vec<_>, IrqError>>()?;
        Ok(VirtioPciDevice {
            config,
            device,
            queues,
            queue_state,
            msix,
            intx: None,
            mem,
            vm,
            notify_base: None,
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            status: 0,
            config_generation: 0,
            config_msix_vector: NO_VECTOR,
            queue_select: 0,
            isr: 0,
            pci_cfg_cap,
            msix_cap,
            guest_warnings: LogLimit::default(),
        })
    }

    fn device_features(&self) -> u64 {
        self.device.features()
            | VIRTIO_F_VERSION_1
            | VIRTIO_F_RING_EVENT_IDX
            | VIRTIO_F_RING_INDIRECT_DESC
    }

    /// The queue notification eventfds, for the device's thread to wait on.
    pub fn notify_fds(&self) -> Vec<RawFd> {
        self.queue_state.iter().map(|q| q.notify.as_raw_fd()).collect()
    }

    /// Runs queue `index` after its notification fired.
    pub fn process_queue(&mut self, index: usize) {
        let Some(q) = self.queue_state.get(index) else { return };
        let _ = q.notify.read();
        if self.status & STATUS_DRIVER_OK == 0 || !self.queues[index].ready() {
            return;
        }
        let device = &mut self.device;
        let mem = &self.mem;
        let (used, more) = serve_queue(&mut self.queues, index, mem, |queues| {
            device.process_queue(index, queues, mem)
        });
        if more {
            let _ = self.queue_state[index].notify.write(1);
        }
        self.signal_used(used);
    }

    /// Whether queue `index` holds buffers the device has not taken yet (for polling: the
    /// driver may have added them without a notification reaching the device yet).
    pub fn queue_pending(&self, index: usize) -> bool {
        use std::sync::atomic::Ordering;
        let Some(queue) = self.queues.get(index) else { return false };
        self.status & STATUS_DRIVER_OK != 0
            && queue.ready()
            && queue
                .avail_idx(&self.mem, Ordering::Acquire)
                .is_ok_and(|idx| idx.0 != queue.next_avail())
    }

    /// Where the device is in queue `index`'s available ring.
    pub fn next_avail(&self, index: usize) -> Option<u16> {
        self.queues.get(index).map(QueueT::next_avail)
    }

    /// How long the device's thread keeps polling a queue after serving it.
    pub fn poll_window(&self) -> std::time::Duration {
        self.device.poll_window()
    }

    /// The device model's backend fd (a network socket), if it has one.
    pub fn backend_fd(&self) -> Option<RawFd> {
        self.device.backend_fd()
    }

    /// The backend has something (received frames, room to send, a grown image). The
    /// device always looks, so its state stays current; the driver hears about it once it
    /// is running.
    pub fn process_backend(&mut self) {
        let used = self.device.process_backend(&mut self.queues, &self.mem);
        for (index, state) in self.queue_state.iter().enumerate().take(MAX_QUEUES) {
            if used & serve_again(index) != 0 {
                // As if the driver had notified: the device thread serves the queue next.
                let _ = state.notify.write(1);
            }
        }
        if used & CONFIG_CHANGED != 0 {
            self.config_generation = self.config_generation.wrapping_add(1);
        }
        if self.status & STATUS_DRIVER_OK != 0 {
            self.signal_used(used);
        }
    }

    /// Interrupts for the queues in `used` (a bit per queue) that the driver wants to hear
    /// about (EVENT_IDX or the NO_INTERRUPT flag may say it does not).
    fn signal_used(&mut self, used: u64) {
        if used & CONFIG_CHANGED != 0 {
            if self.msix.enabled() {
                if self.config_msix_vector != NO_VECTOR {
                    self.msix.notify(self.config_msix_vector);
                }
            } else {
                self.isr |= 2;
                self.assert_intx();
            }
        }
        for index in 0..self.queues.len().min(MAX_QUEUES) {
            if used & (1 << index) == 0 {
                continue;
            }
            if super::wants_interrupt(&mut self.queues[index], &self.mem) {
                let vector = self.queue_state[index].msix_vector;
                self.interrupt(vector);
            }
        }
    }

    /// Connects INTA to its line (the fallback when the driver leaves MSI-X off).
    pub fn set_intx(&mut self, line: IntxLine) {
        self.intx = Some(line);
    }

    /// The fd to watch for INTx resampling, if INTx is wired.
    pub fn intx_resample_fd(&self) -> Option<RawFd> {
        self.intx.as_ref().map(IntxLine::resample_fd)
    }

    /// The guest EOI'd the INTx line: assert it again if the ISR still holds something.
    pub fn intx_resample(&mut self) {
        if let Some(line) = &self.intx {
            line.take_resample();
        }
        if self.isr != 0 {
            self.assert_intx();
        }
    }

    fn assert_intx(&mut self) {
        if self.config.command() & COMMAND_INTX_DISABLE != 0 {
            return;
        }
        if let Some(line) = &self.intx {
            line.assert();
            // Status bit 3: an INTx is pending (PCI 3.0 §6.2.3).
            let status = self.config.read16(STATUS) | 0x08;
            self.config.set_bytes(STATUS, &status.to_le_bytes());
        }
    }

    /// Used buffers (ISR bit 0) or a configuration change (bit 1) to tell the driver.
    fn interrupt(&mut self, vector: u16) {
        if self.msix.enabled() {
            // With MSI-X on, the ISR is unused (§4.1.4.5) and "no vector" means no interrupt.
            if vector != NO_VECTOR {
                self.msix.notify(vector);
            }
            return;
        }
        self.isr |= 1;
        self.assert_intx();
    }

    fn reset(&mut self) {
        for q in &mut self.queues {
            q.reset();
        }
        for q in &mut self.queue_state {
            q.msix_vector = NO_VECTOR;
        }
        self.device.reset();
        self.status = 0;
        self.driver_features = 0;
        self.device_feature_select = 0;
        self.driver_feature_select = 0;
        self.config_msix_vector = NO_VECTOR;
        self.queue_select = 0;
        self.isr = 0;
    }

    fn set_status(&mut self, value: u8) {
        if value == 0 {
            self.reset();
            return;
        }
        let mut value = value;
        if value & STATUS_FEATURES_OK != 0 && self.status & STATUS_FEATURES_OK == 0 {
            let offered = self.device_features();
            let ok = self.driver_features & !offered == 0
                && self.driver_features & VIRTIO_F_VERSION_1 != 0;
            if !ok {
                // The driver re-reads status, sees FEATURES_OK clear and gives up (§3.1.1).
                value &= !STATUS_FEATURES_OK;
            }
        }
        if value & STATUS_DRIVER_OK != 0 && self.status & STATUS_DRIVER_OK == 0 {
            if value & STATUS_FEATURES_OK == 0 {
                value |= STATUS_FAILED;
            } else {
                let event_idx = self.driver_features & VIRTIO_F_RING_EVENT_IDX != 0;
                for q in &mut self.queues {
                    q.set_event_idx(event_idx);
                }
                self.device.activate(self.driver_features);
            }
        }
        self.status = value;
    }

    /// Its state now; the machine is paused and the device's thread has served what the
    /// driver had posted.
    pub fn save_state(&self) -> VirtioPciState {
        let queues = self.queues.iter().zip(&self.queue_state).map(|(q, t)| {
            let s = q.state();
            SavedQueue {
                max_size: s.max_size,
                size: s.size,
                ready: s.ready,
                next_avail: s.next_avail,
                next_used: s.next_used,
                event_idx: s.event_idx_enabled,
                desc_table: s.desc_table,
                avail_ring: s.avail_ring,
                used_ring: s.used_ring,
                msix_vector: t.msix_vector,
            }
        });
        VirtioPciState {
            config: self.config.save_state(),
            msix: self.msix.save_state(),
            queues: queues.collect(),
            device_feature_select: self.device_feature_select,
            driver_feature_select: self.driver_feature_select,
            driver_features: self.driver_features,
            status: self.status,
            config_generation: self.config_generation,
            config_msix_vector: self.config_msix_vector,
            queue_select: self.queue_select,
            isr: self.isr,
            device: self.device.save_state(),
        }
    }

    /// Takes a saved state (from a file: every part checked before any is taken) and, if
    /// the driver had the device running, activates it again as the driver did. Its BAR's
    /// ioeventfds follow when the PCI root places the BAR (`bar_moved`).
    pub fn restore_state(
        &mut self,
        state: &VirtioPciState,
    ) -> Result<(), crate::persist::DeviceStateError> {
        let problem = |p: String| crate::persist::DeviceStateError::new("virtio device", p);
        if state.queues.len() != self.queues.len() {
            return Err(problem(format!(
                "{} queues saved; this device has {}",
                state.queues.len(),
                self.queues.len()
            )));
        }
        let offered = self.device_features();
        if state.driver_features & !offered != 0 {
            return Err(problem(format!(
                "the driver's features {:#x} include some this device does not offer ({offered:#x})",
                state.driver_features
            )));
        }
        let vector_ok = |v: u16| v == NO_VECTOR || usize::from(v) < self.msix.len();
        let mut queues = Vec::with_capacity(state.queues.len());
        for (i, (saved, own)) in state.queues.iter().zip(&self.queues).enumerate() {
            if saved.max_size != own.max_size() || !vector_ok(saved.msix_vector) {
                return Err(problem(format!("queue {i} is not one this device has")));
            }
            let queue = Queue::try_from(virtio_queue::QueueState {
                max_size: saved.max_size,
                next_avail: saved.next_avail,
                next_used: saved.next_used,
                event_idx_enabled: saved.event_idx,
                size: saved.size,
                ready: saved.ready,
                desc_table: saved.desc_table,
                avail_ring: saved.avail_ring,
                used_ring: saved.used_ring,
            })
            .map_err(|e| problem(format!("queue {i}: {e:?}")))?;
            // A ready queue's rings lie in guest memory, as when the driver enabled it.
            if queue.ready() && !queue.is_valid(&self.mem) {
                return Err(problem(format!("queue {i}'s rings are outside guest memory")));
            }
            queues.push(queue);
        }
        if !vector_ok(state.config_msix_vector) {
            return Err(problem(format!("configuration vector {}", state.config_msix_vector)));
        }
        let mut config = self.config.clone();
        config.restore_state(&state.config).map_err(problem)?;
        if state.msix.entries.len() != self.msix.len()
            || state.msix.pending.len() != self.msix.len().div_ceil(64)
        {
            let n = state.msix.entries.len();
            return Err(problem(format!(
                "{n} MSI-X vectors saved; this device has {}",
                self.msix.len()
            )));
        }
        // The device model last of what can refuse (it takes its state whole or not at all).
        self.device.restore_state(&state.device, &self.mem).map_err(problem)?;
        self.msix.restore_state(&state.msix).map_err(problem)?;
        self.config = config;
        self.queues = queues;
        for (transport, saved) in self.queue_state.iter_mut().zip(&state.queues) {
            transport.msix_vector = saved.msix_vector;
        }
        self.device_feature_select = state.device_feature_select;
        self.driver_feature_select = state.driver_feature_select;
        self.driver_features = state.driver_features;
        self.config_generation = state.config_generation;
        self.config_msix_vector = state.config_msix_vector;
        self.queue_select = state.queue_select;
        self.isr = state.isr;
        self.status = state.status;
        if self.status & STATUS_DRIVER_OK != 0 && self.status & STATUS_FAILED == 0 {
            self.device.activate(self.driver_features);
            // A notification the driver sent before the save and the device had not served
            // is in no eventfd now: each running queue is looked at once.
            for (queue, transport) in self.queues.iter().zip(&self.queue_state) {
                if queue.ready() {
                    let _ = transport.notify.write(1);
                }
            }
        }
        Ok(())
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(usize::from(self.queue_select))
    }

    fn common_read(&mut self, offset: u64, data: &mut [u8]) {
        let q = self.queues.get(usize::from(self.queue_select));
        let vector = self.queue_state.get(usize::from(self.queue_select)).map(|q| q.msix_vector);
        let value: u64 = match offset {
            0x00 => u64::from(self.device_feature_select),
            0x04 => match self.device_feature_select {
                0 => self.device_features() & 0xffff_ffff,
                1 => self.device_features() >> 32,
                _ => 0,
            },
            0x08 => u64::from(self.driver_feature_select),
            0x0c => match self.driver_feature_select {
                0 => self.driver_features & 0xffff_ffff,
                1 => self.driver_features >> 32,
                _ => 0,
            },
            0x10 => u64::from(self.config_msix_vector),
            0x12 => self.queues.len() as u64,
            0x14 => u64::from(self.status),
            0x15 => u64::from(self.config_generation),
            0x16 => u64::from(self.queue_select),
            0x18 => q.map_or(0, |q| u64::from(q.size())),
            0x1a => u64::from(vector.unwrap_or(NO_VECTOR)),
            0x1c => q.map_or(0, |q| u64::from(q.ready())),
            0x1e => u64::from(self.queue_select), // queue_notify_off: queue i at i * multiplier
            0x20 => q.map_or(0, |q| q.desc_table()),
            0x24 => q.map_or(0, |q| q.desc_table() >> 32),
            0x28 => q.map_or(0, |q| q.avail_ring()),
            0x2c => q.map_or(0, |q| q.avail_ring() >> 32),
            0x30 => q.map_or(0, |q| q.used_ring()),
            0x34 => q.map_or(0, |q| q.used_ring() >> 32),
            _ => 0,
        };
        let bytes = value.to_le_bytes();
        let n = data.len().min(8);
        data[..n].copy_from_slice(&bytes[..n]);
    }

    fn common_write(&mut self, offset: u64, data: &[u8]) {
        let v = le_value(data);
        let features_locked = self.status & STATUS_FEATURES_OK != 0;
        let vectors = self.msix.len() as u64;
        let valid_vector = |v: u64| if v < vectors { v as u16 } else { NO_VECTOR };
        match offset {
            0x00 => self.device_feature_select = v as u32,
            0x08 => self.driver_feature_select = v as u32,
            0x0c if !features_locked => match self.driver_feature_select {
                0 => {
                    self.driver_features = (self.driver_features & !0xffff_ffff) | (v & 0xffff_ffff)
                }
                1 => self.driver_features = (self.driver_features & 0xffff_ffff) | (v << 32),
                _ => {}
            },
            0x10 => self.config_msix_vector = valid_vector(v),
            0x14 => self.set_status(v as u8),
            0x16 => self.queue_select = v as u16,
            0x18 => {
                if let Some(q) = self.selected().filter(|q| !q.ready()) {
                    // Sizes must be powers of two up to the maximum (§2.7); others are
                    // refused and the old size stays.
                    if v as u16 <= q.max_size() && (v as u16).is_power_of_two() {
                        q.set_size(v as u16);
                    }
                }
            }
            0x1a => {
                let vector = valid_vector(v);
                if let Some(q) = self.queue_state.get_mut(usize::from(self.queue_select)) {
                    q.msix_vector = vector;
                }
            }
            0x1c if v == 1 => {
                let mem = self.mem.clone();
                let mut invalid = false;
                if let Some(q) = self.selected() {
                    // is_valid checks the rings of a ready queue: mark it, check, undo.
                    q.set_ready(true);
                    if !q.is_valid(&mem) {
                        q.set_ready(false);
                        invalid = true;
                    }
                }
                if invalid && let Some(n) = self.guest_warnings.allow() {
                    log::warn!(
                        "virtio: the driver enabled a queue with invalid rings; ignored{}",
                        held_back(n)
                    );
                }
            }
            0x20..=0x37 => {
                let low = offset.is_multiple_of(8);
                let (lo, hi) = if data.len() == 8 {
                    (Some(v as u32), Some((v >> 32) as u32))
                } else if low {
                    (Some(v as u32), None)
                } else {
                    (None, Some(v as u32))
                };
                let field = (offset - 0x20) / 8;
                if let Some(q) = self.selected().filter(|q| !q.ready()) {
                    match field {
                        0 => q.set_desc_table_address(lo, hi),
                        1 => q.set_avail_ring_address(lo, hi),
                        _ => q.set_used_ring_address(lo, hi),
                    }
                }
            }
            _ => {}
        }
    }

    fn bar0_read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        match offset {
            o if o < COMMON_OFFSET + COMMON_SIZE => self.common_read(o - COMMON_OFFSET, data),
            ISR_OFFSET => {
                // Reading the ISR returns and clears it, and with it the INTx (§4.1.4.5).
                data[0] = std::mem::take(&mut self.isr);
                let status = self.config.read16(STATUS) & !0x08;
                self.config.set_bytes(STATUS, &status.to_le_bytes());
            }
            o if (DEVICE_OFFSET..DEVICE_OFFSET + DEVICE_SIZE).contains(&o) => {
                self.device.read_config(o - DEVICE_OFFSET, data)
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                self.msix.table_read(o - MSIX_TABLE_OFFSET, data)
            }
            o if (MSIX_PBA_OFFSET..BAR_SIZE).contains(&o) => {
                self.msix.pba_read(o - MSIX_PBA_OFFSET, data)
            }
            _ => {}
        }
    }

    fn bar0_write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            o if o < COMMON_OFFSET + COMMON_SIZE => self.common_write(o - COMMON_OFFSET, data),
            o if (DEVICE_OFFSET..DEVICE_OFFSET + DEVICE_SIZE).contains(&o) => {
                self.device.write_config(o - DEVICE_OFFSET, data)
            }
            o if (NOTIFY_OFFSET..NOTIFY_OFFSET + NOTIFY_SIZE).contains(&o) => {
                // Only reached when no ioeventfd caught the write: hand it to the loop.
                let index = ((o - NOTIFY_OFFSET) / u64::from(NOTIFY_MULTIPLIER)) as usize;
                if let Some(q) = self.queue_state.get(index) {
                    let _ = q.notify.write(1);
                }
            }
            o if (MSIX_TABLE_OFFSET..MSIX_PBA_OFFSET).contains(&o) => {
                self.msix.table_write(o - MSIX_TABLE_OFFSET, data)
            }
            _ => {}
        }
    }

    /// The PCI_CFG capability's window: bar, offset, length, then data (§4.1.4.9).
    fn pci_cfg_window(&self) -> Option<(u64, usize)> {
        let cap = self.pci_cfg_cap;
        let mut bar = [0u8; 1];
        self.config.read(cap + 4, &mut bar);
        let offset = u64::from(self.config.read32(cap + 8));
        let length = self.config.read32(cap + 12) as usize;
        (bar[0] == 0 && matches!(length, 1 | 2 | 4) && offset + length as u64 <= BAR_SIZE)
            .then_some((offset, length))
    }
}

impl PciDevice for VirtioPciDevice {
    fn config(&self) -> &PciConfig {
        &self.config
    }

    fn config_mut(&mut self) -> &mut PciConfig {
        &mut self.config
    }

    fn config_read(&mut self, offset: usize, data: &mut [u8]) {
        let data_at = self.pci_cfg_cap + 16;
        if offset == data_at
            && let Some((bar_offset, length)) = self.pci_cfg_window()
        {
            let n = length.min(data.len());
            self.bar0_read(bar_offset, &mut data[..n]);
            return;
        }
        self.config.read(offset, data);
    }

    fn config_write(&mut self, offset: usize, data: &[u8]) {
        let data_at = self.pci_cfg_cap + 16;
        if offset == data_at
            && let Some((bar_offset, length)) = self.pci_cfg_window()
        {
            let n = length.min(data.len());
            self.bar0_write(bar_offset, &data[..n]);
            return;
        }
        self.config.write(offset, data);
        let control = self.msix_cap + 2;
        if offset < control + 2 && offset + data.len() > control {
            self.msix.set_control(self.config.read16(control));
        }
    }

    fn bar_read(&mut self, bar: usize, offset: u64, data: &mut [u8]) {
        if bar == 0 {
            self.bar0_read(offset, data);
        } else {
            data.fill(0xff);
        }
    }

    fn bar_write(&mut self, bar: usize, offset: u64, data: &[u8]) {
        if bar == 0 {
            self.bar0_write(offset, data);
        }
    }

    fn save_state(&self) -> Result<Vec<u8>, String> {
        Ok(crate::persist::encode_part(&VirtioPciDevice::save_state(self)))
    }

    fn restore_state(&mut self, state: &[u8]) -> Result<(), String> {
        let state: VirtioPciState = crate::persist::decode_part(state)?;
        VirtioPciDevice::restore_state(self, &state).map_err(|e| e.problem)
    }

    fn bar_moved(&mut self, bar: usize, address: Option<u64>) {
        if bar != 0 {
            return;
        }
        let Some(vm) = self.vm.clone() else { return };
        let old = self.notify_base.take();
        for (i, q) in self.queue_state.iter().enumerate() {
            let at = |base: u64| {
                IoEventAddress::Mmio(base + NOTIFY_OFFSET + i as u64 * u64::from(NOTIFY_MULTIPLIER))
            };
            if let Some(base) = old
                && let Err(e) = vm.unregister_ioevent(&q.notify, &at(base), NoDatamatch)
            {
                log::warn!("virtio queue {i}: cannot remove its ioeventfd: {e}");
            }
            if let Some(base) = address
                && let Err(e) = vm.register_ioevent(&q.notify, &at(base), NoDatamatch)
            {
                // Notifications then arrive as MMIO exits, handled in bar0_write.
                log::warn!("virtio queue {i}: no ioeventfd ({e}); using MMIO exits");
            }
        }
        self.notify_base = address;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::rng::Rng;
    use crate::devices::virtio::test_util::{AVAIL, DESC, USED, publish, put_desc, used};
    use crate::vstate::kvm::open_kvm;
    use crate::vstate::memory::create_guest_memory;
    use vm_memory::{Bytes, GuestAddress};

    fn device() -> (VirtioPciDevice, GuestMem, Arc<VmFd>) {
        let vm = Arc::new(open_kvm().unwrap().create_vm().unwrap());
        vm.create_irq_chip().unwrap();
        let router = Arc::new(GsiRouter::new(vm.clone()).unwrap());
        let mem = create_guest_memory(16 << 20).unwrap();
        let dev = VirtioPciDevice::new(Box::new(Rng), mem.clone(), Some(router), None).unwrap();
        (dev, mem, vm)
    }

    fn w(dev: &mut VirtioPciDevice, offset: u64, value: u64, size: usize) {
        dev.bar_write(0, offset, &value.to_le_bytes()[..size]);
    }

    fn r(dev: &mut VirtioPciDevice, offset: u64, size: usize) -> u64 {
        let mut b = [0u8; 8];
        dev.bar_read(0, offset, &mut b[..size]);
        u64::from_le_bytes(b)
    }

    fn negotiate(dev: &mut VirtioPciDevice, features_hi: u64) -> u8 {
        w(dev, 0x14, 0, 1);
        w(dev, 0x14, 3, 1);
        w(dev, 0x08, 1, 4);
        w(dev, 0x0c, features_hi, 4);
        w(dev, 0x14, 0x0b, 1);
        r(dev, 0x14, 1) as u8
    }

    #[test]
    fn identity_and_capabilities() {
        let (dev, _mem, _vm) = device();
        assert_eq!(dev.config().read32(0), 0x1044_1af4);
        let mut types = Vec::new();
        let mut at = usize::from(dev.config().read16(0x34) as u8);
        while at != 0 {
            let header = dev.config().read32(at);
            types.push(((header & 0xff) as u8, (header >> 24) as u8));
            at = ((header >> 8) & 0xff) as usize;
        }
        // The virtio structures by cfg_type, then MSI-X.
        assert_eq!(types, vec![(9, 1), (9, 3), (9, 4), (9, 2), (9, 5), (0x11, 0)]);
        // One vector for the queue, one for configuration changes.
        assert_eq!(dev.config().read16(dev.msix_cap + 2) & 0x7ff, 1);
    }

    #[test]
    fn feature_negotiation() {
        let (mut dev, _mem, _vm) = device();
        w(&mut dev, 0x00, 1, 4);
        assert_eq!(r(&mut dev, 0x04, 4) & 1, 1, "VERSION_1 offered");
        assert_eq!(negotiate(&mut dev, 0) & STATUS_FEATURES_OK, 0, "VERSION_1 is required");
        assert_eq!(
            negotiate(&mut dev, 1 | 1 << 20) & STATUS_FEATURES_OK,
            0,
            "unknown bits refused"
        );
        assert_ne!(negotiate(&mut dev, 1) & STATUS_FEATURES_OK, 0);
        // Features are frozen after FEATURES_OK.
        w(&mut dev, 0x0c, 0, 4);
        assert_eq!(dev.driver_features, VIRTIO_F_VERSION_1);
        // DRIVER_OK without FEATURES_OK is a failure.
        w(&mut dev, 0x14, 0, 1);
        w(&mut dev, 0x14, u64::from(STATUS_DRIVER_OK), 1);
        assert_ne!(r(&mut dev, 0x14, 1) as u8 & STATUS_FAILED, 0);
    }

    #[test]
    fn queue_setup_is_validated() {
        let (mut dev, _mem, _vm) = device();
        negotiate(&mut dev, 1);
        w(&mut dev, 0x16, 0, 2);
        assert_eq!(r(&mut dev, 0x18, 2), 256);
        w(&mut dev, 0x18, 7, 2);
        assert_eq!(r(&mut dev, 0x18, 2), 256, "not a power of two");
        w(&mut dev, 0x18, 512, 2);
        assert_eq!(r(&mut dev, 0x18, 2), 256, "above the maximum");
        w(&mut dev, 0x18, 16, 2);
        assert_eq!(r(&mut dev, 0x18, 2), 16);
        // Rings outside guest memory: the queue stays disabled.
        w(&mut dev, 0x20, 0xffff_f000, 4);
        w(&mut dev, 0x24, 0x7fff, 4);
        w(&mut dev, 0x1c, 1, 2);
        assert_eq!(r(&mut dev, 0x1c, 2), 0);
        // A vector beyond the table is "no vector".
        w(&mut dev, 0x1a, 99, 2);
        assert_eq!(r(&mut dev, 0x1a, 2), u64::from(NO_VECTOR));
        // Selecting a queue that does not exist reads zeros and ignores writes.
        w(&mut dev, 0x16, 5, 2);
        assert_eq!(r(&mut dev, 0x18, 2), 0);
        w(&mut dev, 0x1c, 1, 2);
        // Reset clears everything.
        w(&mut dev, 0x14, 0, 1);
        assert_eq!(r(&mut dev, 0x14, 1), 0);
        assert_eq!(r(&mut dev, 0x16, 2), 0);
    }

    /// Queue 0 (16 entries at the test rings) on vector 0, the device running, MSI-X on
    /// with vector 0 pointed at the local APIC but masked (its reset state), so the PBA
    /// shows each interrupt.
    fn running_with_masked_vector(dev: &mut VirtioPciDevice) {
        negotiate(dev, 1);
        w(dev, 0x16, 0, 2);
        w(dev, 0x18, 16, 2);
        w(dev, 0x1a, 0, 2);
        for (offset, value) in [(0x20, DESC), (0x28, AVAIL), (0x30, USED)] {
            w(dev, offset, value, 8);
        }
        w(dev, 0x1c, 1, 2);
        assert_eq!(r(dev, 0x1c, 2), 1);
        w(dev, 0x14, 0x0f, 1);
        // MSI-X on, vector 0 pointed at the local APIC but masked (its reset state).
        dev.msix.set_control(0x8000);
        w(dev, MSIX_TABLE_OFFSET, 0xfee0_0000, 4);
        w(dev, MSIX_TABLE_OFFSET + 8, 0x40, 4);
    }

    #[test]
    fn requests_complete_and_msix_pends_while_masked() {
        let (mut dev, mem, _vm) = device();
        running_with_masked_vector(&mut dev);
        put_desc(&mem, 0, 0x10000, 16, 2, 0);
        publish(&mem, &[0]);
        dev.process_queue(0);
        assert_eq!(used(&mem, 0), (0, 16));
        assert_eq!(r(&mut dev, MSIX_PBA_OFFSET, 8) & 1, 1, "pending while masked");
        w(&mut dev, MSIX_TABLE_OFFSET + 12, 0, 4);
        assert_eq!(r(&mut dev, MSIX_PBA_OFFSET, 8) & 1, 0, "delivered on unmask");
        // With MSI-X on, the ISR is not used.
        assert_eq!(r(&mut dev, ISR_OFFSET, 1), 0);
    }

    #[test]
    fn a_running_device_goes_on_after_a_restore_where_it_was() {
        let (mut dev, mem, vm) = device();
        running_with_masked_vector(&mut dev);
        put_desc(&mem, 0, 0x10000, 16, 2, 0);
        publish(&mem, &[0]);
        dev.process_queue(0);
        assert_eq!(used(&mem, 0), (0, 16));
        let state = dev.save_state();

        // A new transport for the same kind of device, on the same memory.
        let router = Arc::new(GsiRouter::new(vm.clone()).unwrap());
        let mut restored =
            VirtioPciDevice::new(Box::new(Rng), mem.clone(), Some(router), None).unwrap();
        restored.restore_state(&state).unwrap();
        assert_eq!(restored.save_state(), state);
        assert_eq!(r(&mut restored, 0x14, 1), 0x0f, "running, as the driver left it");
        assert_eq!(r(&mut restored, MSIX_PBA_OFFSET, 8) & 1, 1, "the interrupt still pending");
        // The driver's next request is served at the next used slot.
        put_desc(&mem, 1, 0x11000, 8, 2, 0);
        publish(&mem, &[0, 1]);
        restored.process_queue(0);
        assert_eq!(used(&mem, 1), (1, 8));

        // Crafted states: refused, the device left as it was.
        let mut bad = state.clone();
        bad.driver_features |= 1 << 60;
        let error = restored.restore_state(&bad).unwrap_err().to_string();
        assert!(error.contains("does not offer"), "{error}");
        let mut bad = state.clone();
        bad.queues[0].desc_table = 0xffff_ffff_0000;
        let error = restored.restore_state(&bad).unwrap_err().to_string();
        assert!(error.contains("outside guest memory"), "{error}");
        let mut bad = state.clone();
        bad.queues.push(bad.queues[0].clone());
        assert!(restored.restore_state(&bad).is_err());
        let mut bad = state;
        bad.device = vec![1, 2, 3];
        assert!(restored.restore_state(&bad).unwrap_err().to_string().contains("keeps none"));
        assert_eq!(r(&mut restored, 0x14, 1), 0x0f);
    }

    #[test]
    fn no_interrupt_flag_and_pending_buffers() {
        let (mut dev, mem, _vm) = device();
        running_with_masked_vector(&mut dev);
        // The driver asks for no interrupts (VIRTQ_AVAIL_F_NO_INTERRUPT, §2.7.7.2).
        mem.write_obj(1u16, GuestAddress(AVAIL)).unwrap();
        put_desc(&mem, 0, 0x10000, 16, 2, 0);
        assert!(!dev.queue_pending(0), "nothing posted yet");
        publish(&mem, &[0]);
        assert!(dev.queue_pending(0), "a buffer waits, notified or not");
        dev.process_queue(0);
        assert!(!dev.queue_pending(0));
        assert_eq!(used(&mem, 0), (0, 16));
        assert_eq!(r(&mut dev, MSIX_PBA_OFFSET, 8) & 1, 0, "no interrupt while the flag is set");
        // The flag cleared: the next completion interrupts again.
        mem.write_obj(0u16, GuestAddress(AVAIL)).unwrap();
        publish(&mem, &[0, 0]);
        dev.process_queue(0);
        assert_eq!(r(&mut dev, MSIX_PBA_OFFSET, 8) & 1, 1);
        // A ring claiming more buffers than it holds: pending, yet nothing can be taken, so
        // a polling device thread sees no progress and stops looking.
        mem.write_obj(200u16, GuestAddress(AVAIL + 2)).unwrap();
        let before = dev.next_avail(0);
        assert!(dev.queue_pending(0));
        dev.process_queue(0);
        assert_eq!(dev.next_avail(0), before);
        // A queue that does not exist or is not running has nothing pending.
        assert!(!dev.queue_pending(7));
        w(&mut dev, 0x14, 0, 1);
        publish(&mem, &[0, 0, 0]);
        assert!(!dev.queue_pending(0));
    }

    #[test]
    fn a_config_change_bumps_the_generation() {
        let vm = Arc::new(open_kvm().unwrap().create_vm().unwrap());
        vm.create_irq_chip().unwrap();
        let router = Arc::new(GsiRouter::new(vm.clone()).unwrap());
        let mem = create_guest_memory(16 << 20).unwrap();
        let path = std::env::temp_dir().join(format!("vessel-gen-{}.raw", std::process::id()));
        std::fs::File::create(&path).unwrap().set_len(4096).unwrap();
        let block = crate::devices::virtio::block::Block::open(
            &crate::devices::storage::image::ImageSpec::raw(&path),
            false,
            "g",
        )
        .unwrap();
        let mut dev = VirtioPciDevice::new(Box::new(block), mem, Some(router), None).unwrap();
        negotiate(&mut dev, 1);
        w(&mut dev, 0x14, 0x0f, 1);
        let generation = r(&mut dev, 0x15, 1);
        assert_eq!(r(&mut dev, DEVICE_OFFSET, 8), 8);
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(8192).unwrap();
        let mut pfd =
            libc::pollfd { fd: dev.backend_fd().unwrap(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        assert_eq!(unsafe { libc::poll(&mut pfd, 1, 5000) }, 1);
        dev.process_backend();
        assert_eq!(r(&mut dev, 0x15, 1), generation + 1, "config_generation moved on");
        assert_eq!(r(&mut dev, DEVICE_OFFSET, 8), 16, "the new capacity");
        assert_eq!(r(&mut dev, ISR_OFFSET, 1), 2, "INTx mode: ISR bit 1, configuration change");
        let _ = std::fs::remove_file(path);
    }

    #[test]
    fn pci_cfg_window_reaches_the_bar() {
        let (mut dev, _mem, _vm) = device();
        negotiate(&mut dev, 1);
        let cap = dev.pci_cfg_cap;
        dev.config_write(cap + 4, &[0]);
        dev.config_write(cap + 8, &0x14u32.to_le_bytes());
        dev.config_write(cap + 12, &1u32.to_le_bytes());
        let mut b = [0u8; 1];
        dev.config_read(cap + 16, &mut b);
        assert_eq!(b[0] & STATUS_FEATURES_OK, STATUS_FEATURES_OK);
        // A window past the BAR or of a bad length reads the raw bytes, touching nothing.
        dev.config_write(cap + 8, &0xffff_fff0u32.to_le_bytes());
        dev.config_read(cap + 16, &mut b);
        dev.config_write(cap + 12, &3u32.to_le_bytes());
        dev.config_write(cap + 16, &[0xff]);
    }

    #[test]
    fn hostile_bar_accesses() {
        let (mut dev, _mem, _vm) = device();
        for offset in [0x3b, 0x3f, 0x1001, 0x2fff, 0x3ffe, 0x5fff, 0xffff, 0x1_0000, u64::MAX] {
            let mut b = [0u8; 8];
            dev.bar_read(0, offset, &mut b);
            dev.bar_write(0, offset, &b);
            dev.bar_read(3, offset, &mut b[..4]);
        }
        dev.bar_write(0, 0x14, &[0]);
    }

    /// A device model with a bug: it panics when it serves a queue.
    struct Panicky;

    impl VirtioDevice for Panicky {
        fn device_type(&self) -> u32 {
            crate::devices::virtio::TYPE_RNG
        }
        fn queue_max_sizes(&self) -> &[u16] {
            &[16]
        }
        fn pci_class(&self) -> u32 {
            0xff_00_00
        }
        fn process_queue(&mut self, _: usize, _: &mut [Queue], _: &GuestMem) -> u64 {
            panic!("a bug in the device model");
        }
    }

    #[test]
    fn a_panicking_device_thread_is_reported_not_fatal() {
        let vm = Arc::new(open_kvm().unwrap().create_vm().unwrap());
        vm.create_irq_chip().unwrap();
        let router = Arc::new(GsiRouter::new(vm.clone()).unwrap());
        let mem = create_guest_memory(16 << 20).unwrap();
        let mut dev =
            VirtioPciDevice::new(Box::new(Panicky), mem.clone(), Some(router), None).unwrap();
        running_with_masked_vector(&mut dev);
        put_desc(&mem, 0, 0x10000, 16, 2, 0);
        publish(&mem, &[0]);
        let notify = dev.notify_fds()[0];
        let (tx, rx) = std::sync::mpsc::channel();
        let tx = std::sync::Mutex::new(tx);
        let failed: crate::machine::io_thread::FailureSink =
            Arc::new(move |message| tx.lock().unwrap().send(message).unwrap());
        let thread = crate::machine::io_thread::IoThread::spawn(
            "vessel-virtio-test".into(),
            Arc::new(std::sync::Mutex::new(dev)),
            Arc::default(),
            failed,
        )
        .unwrap();
        // SAFETY: an 8-byte write of a counter to an eventfd the device owns and keeps open.
        let written = unsafe { libc::write(notify, (&1u64 as *const u64).cast(), 8) };
        assert_eq!(written, 8);
        let message = rx.recv_timeout(std::time::Duration::from_secs(10)).expect("reported");
        assert!(
            message.contains("virtio-rng") && message.contains("vessel-virtio-test"),
            "{message}"
        );
        assert!(message.contains("a bug in the device model"), "{message}");
        // The thread is gone; stopping it is immediate.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        assert_eq!(thread.stop(deadline), Ok(()));
    }
}
