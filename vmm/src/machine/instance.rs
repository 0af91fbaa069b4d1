//! One boot of a machine: the KVM VM, its memory, devices and vCPU threads. A reboot
//! throws the instance away and builds a new one from the same config.

use std::fs::File;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Instant;

use kvm_bindings::{KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY, kvm_pit_config};
use kvm_ioctls::{Cap, VmFd};
use vmm_sys_util::eventfd::EventFd;

use super::config::{Boot, BootDevice, DeviceConfig, MachineConfig};
use super::control::{ControlMsg, ControlSender};
use super::error::{MachineError, error_chain};
use super::events::{Event, EventSink};
use super::io_thread::{FailureSink, IoThread};
use super::vcpu::{self, RunControl, RunMode, SharedVcpu, VcpuContext};
use crate::arch::x86_64::layout::*;
use crate::arch::x86_64::{acpi, boot, cpuid, regs};
use crate::devices::bus::{Bus, SharedDevice};
use crate::devices::legacy::acpi_pm::AcpiPm;
use crate::devices::legacy::cmos::{BootClass, Cmos};
use crate::devices::legacy::debug_port::DebugPort;
use crate::devices::legacy::ged::Ged;
use crate::devices::legacy::i8042::{I8042, I8042Port};
use crate::devices::legacy::serial::{SerialOutput, SerialPort};
use crate::devices::net::passt::{Passt, PasstError};
use crate::devices::pci::isa_bridge::{IsaBridge, pirq_of};
use crate::devices::pci::root::{ConfigPorts, Ecam, PciRoot, Windows, intx_gsi};
use crate::devices::storage::ide::{
    IdeController, PRIMARY_CMD, PRIMARY_CTRL, PRIMARY_IRQ, SECONDARY_CMD, SECONDARY_CTRL,
    SECONDARY_IRQ,
};
use crate::devices::storage::image::ImageSpec;
use crate::devices::storage::mmc::{CdRom, Media};
use crate::devices::vga::{self, StdVga, VgaCore, VgaDisplay, VgaPorts, VgaWindow};
use crate::devices::virtio::VirtioDevice;
use crate::devices::virtio::block::Block;
use crate::devices::virtio::gpu::Gpu;
use crate::devices::virtio::input::Input;
use crate::devices::virtio::net::Net;
use crate::devices::virtio::pci::VirtioPciDevice;
use crate::devices::virtio::rng::Rng;
use crate::devices::{PowerRequest, PowerSink};
use crate::display::Display;
use crate::display::boot_fb::BootFramebuffer;
use crate::firmware::image::FirmwareImage;
use crate::input::InputKind;
use crate::input::InputSink;
use crate::persist::Persist;
use crate::persist::machine::{DeviceStates, MachineState};
use crate::vstate::irq::{GsiRouter, IntxLine, PirqRoutes};
use crate::vstate::kvm::open_kvm;
use crate::vstate::memory::{self, GuestMem};
use crate::vstate::shadow::ShadowRam;

/// What outlives instances: the controller's channels and the serial output buffer.
#[derive(Clone)]
pub struct InstanceEnv {
    pub control: ControlSender,
    pub events: EventSink,
    pub serial_out: Arc<Mutex<Vec<u8>>>,
    pub serial_ready: Arc<EventFd>,
    pub built_at: Instant,
    /// Keyboard and pointer input, kept across reboots.
    pub input: InputSink,
    /// The guest's screen, kept across reboots.
    pub display: Display,
    /// What the machine uses, kept across reboots.
    pub stats: Arc<super::stats::MachineStats>,
}

pub struct Instance {
    // Field order is drop order: threads first, then the VM, then its memory.
    threads: Vec<JoinHandle<()>>,
    /// A thread per virtio device, serving its queues and backend.
    io_threads: Vec<IoThread>,
    run: Arc<RunControl>,
    pub serial: Arc<Mutex<SerialPort>>,
    pub ged: Arc<Mutex<Ged>>,
    /// The CD drive's controller, if the machine has one.
    ide: Option<Arc<Mutex<IdeController>>>,
    /// Kept for as long as the vCPU threads and devices run (dropped after them).
    vm: Arc<VmFd>,
    mem: GuestMem,
    /// Its memory slot goes with the VM, so it is dropped after it.
    boot_fb: Option<BootFramebuffer>,
    /// The VGA's display thread (the VGA's memory removes its own slot when it goes).
    vga: Option<VgaDisplay>,
    /// The firmware ROM's memory (its read-only slot goes with the VM).
    _firmware: Option<FirmwareImage>,
    /// Told of `mem` while it is mapped.
    stats: Arc<super::stats::MachineStats>,
    /// `shutdown` has run.
    shut_down: bool,
    /// What a saved state holds, beside the VM and memory.
    vcpus: Vec<SharedVcpu>,
    /// The MSRs a vCPU's state saves (as this host's KVM lists them).
    msrs: Vec<u32>,
    legacy: Legacy,
    pci: Arc<Mutex<PciRoot>>,
    /// Each virtio device with its thread's name, to serve it again after a save.
    virtio: Vec<(String, Arc<Mutex<VirtioPciDevice>>)>,
    failed: FailureSink,
    /// The KVM slots over guest RAM (a migration logs the guest's writes in them).
    ram_slots: Vec<crate::vstate::dirty::RamSlot>,
    /// Each vCPU's CPUID as this VMM set it. A saved state keeps these, not what
    /// KVM_GET_CPUID2 answers (PVM answers with the host's own features, which its
    /// supported set does not offer); the first vCPU's is what a host the machine moves
    /// to must offer.
    vcpu_cpuid: Vec<Vec<kvm_bindings::kvm_cpuid_entry2>>,
}

/// The devices every machine has, kept for saving and restoring their state.
struct Legacy {
    i8042: Arc<Mutex<I8042>>,
    cmos: Arc<Mutex<Cmos>>,
    pm: Arc<Mutex<AcpiPm>>,
    debug_port: Arc<Mutex<DebugPort>>,
    config_ports: Arc<Mutex<ConfigPorts>>,
    /// A firmware machine's.
    fw_cfg: Option<Arc<Mutex<crate::firmware::fw_cfg::FwCfg>>>,
}

/// A machine built from a saved state: the state, and guest memory mapped from its file.
pub struct Restoring {
    pub state: MachineState,
    pub mem: GuestMem,
}

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> MachineError {
    move |source| MachineError::Kvm { what, source }
}

impl Instance {
    /// Builds the machine `config` describes; `restoring`: from a saved state (its memory
    /// and devices as saved, its vCPUs where they were), not to boot.
    pub fn build(
        config: &MachineConfig,
        env: &InstanceEnv,
        generation: u64,
        restoring: Option<Restoring>,
    ) -> Result<Self, MachineError> {
        config.validate().map_err(MachineError::InvalidConfig)?;
        let kvm = open_kvm()?;
        let max_vcpus = kvm.get_max_vcpus();
        if usize::from(config.vcpus) > max_vcpus {
            return Err(MachineError::InvalidConfig(format!(
                "{} vCPUs requested; this host's KVM allows {max_vcpus}",
                config.vcpus
            )));
        }
        let vm = Arc::new(kvm.create_vm().map_err(kvm_err("create the VM"))?);
        let (mem, restoring) = match restoring {
            Some(Restoring { state, mem }) => (mem, Some(state)),
            None => (memory::create_guest_memory(config.memory_bytes)?, None),
        };
        // RAM first, then the TSS, identity map, irqchip and PIT (Firecracker's order): on
        // this project's hosts KVM took 7 ms more per GiB to register RAM after them
        // (measured by the snapshot benchmark's restores).
        memory::register_with_kvm(&vm, &mem)?;
        vm.set_tss_address(KVM_TSS_ADDRESS as usize).map_err(kvm_err("set the TSS address"))?;
        vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDRESS)
            .map_err(kvm_err("set the identity map address"))?;
        vm.create_irq_chip().map_err(kvm_err("create the in-kernel irqchip"))?;
        let pit = kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
        vm.create_pit2(pit).map_err(kvm_err("create the in-kernel PIT"))?;
        // Direct boot: the kernel loaded, the boot framebuffer described to it, the ACPI
        // tables in the BIOS area, the boot vCPU set up at its entry. Firmware boot: the
        // image mapped as the ROM, the vCPUs in their reset state (the boot vCPU at the
        // reset vector, real mode, CS base 0xFFFF0000, IP 0xFFF0), the firmware told the
        // rest through fw_cfg.
        let mut ram_slots = crate::vstate::dirty::ram_slots(&mem);
        let (entry, firmware, boot_fb, shadow, next_slot) = match &config.boot {
            // Restored: guest memory holds what the guest made of it, which nothing writes;
            // the boot framebuffer's memory is put back below.
            Boot::Kernel(_) if restoring.is_some() => {
                (None, None, boot_framebuffer(config, &vm, &mem)?, None, None)
            }
            Boot::Kernel(source) => {
                let layout = boot::load(&mem, source, config.boot_framebuffer)?;
                let boot_fb = boot_framebuffer(config, &vm, &mem)?;
                acpi::write_tables(&mem, config.vcpus)?;
                (Some(layout.entry), None, boot_fb, None, None)
            }
            Boot::Firmware(fw) => {
                let image = FirmwareImage::load(&fw.image)?;
                // After RAM's slots and the boot framebuffer's.
                let slot = vm_memory::GuestMemoryBackend::num_regions(&mem) as u32 + 1;
                memory::register_rom(&vm, slot, image.rom_start(), image.host_mapping())?;
                // Restored: the BIOS area holds what the firmware made of it.
                if restoring.is_none() {
                    image.copy_legacy(&mem)?;
                }
                // The BIOS area's RAM under the host bridge's PAM registers, in slots of
                // its own after the ROM's.
                let shadow = ShadowRam::new(vm.clone(), &mem, slot + 1)?;
                // Slot 0 is split around the area (which no slot logs for good).
                ram_slots.retain(|s| s.slot != 0);
                ram_slots.extend(shadow.ram_slots(&mem));
                let next_slot = slot + 1 + crate::vstate::shadow::SLOT_COUNT;
                (None, Some(image), None, Some(shadow), Some(next_slot))
            }
        };

        let power = power_sink(env.control.clone(), generation);
        let devices = build_devices(&vm, &mem, config, env, power, shadow, next_slot)?;
        let Devices { pio, mmio, serial, ged, virtio, inputs, ide, vga, legacy, pci } = devices;
        if let Some(state) = &restoring {
            // Before any device thread runs: the devices as saved, then the VM's interrupt
            // controllers, PIT and clock.
            restore_devices(&state.devices, &serial, &ged, &legacy, &pci)?;
            match (&boot_fb, &state.devices.boot_fb) {
                (Some(fb), Some(saved)) => {
                    fb.restore_state(saved).map_err(MachineError::RestoreState)?;
                }
                (None, None) => {}
                _ => {
                    return Err(MachineError::RestoreState(
                        "the saved machine and this one differ in having a boot framebuffer".into(),
                    ));
                }
            }
            crate::persist::vm::restore(&vm, &state.vm)
                .map_err(|e| MachineError::RestoreState(error_chain(&e)))?;
        }
        // The MSRs a save keeps; without the list a machine runs, and only a save fails.
        let msrs = crate::persist::vcpu::msrs_to_save(&kvm).unwrap_or_else(|e| {
            log::warn!("{}: this machine cannot be saved", error_chain(&e));
            Vec::new()
        });

        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm_err("read supported CPUID"))?;
        let tsc_deadline = kvm.check_extension(Cap::TscDeadlineTimer);
        let run = Arc::new(RunControl::new(usize::from(config.vcpus)));
        vcpu::install_kick_handler().map_err(MachineError::Signal)?;

        let mut instance = Instance {
            threads: Vec::new(),
            io_threads: Vec::new(),
            run: run.clone(),
            serial,
            ged,
            ide,
            vm,
            mem,
            boot_fb,
            vga: None,
            _firmware: firmware,
            stats: env.stats.clone(),
            shut_down: false,
            vcpus: Vec::new(),
            msrs,
            legacy,
            pci,
            virtio: Vec::new(),
            failed: failed_sink(env.control.clone(), generation),
            ram_slots,
            vcpu_cpuid: Vec::new(),
        };
        instance.stats.set_memory(memory::host_ranges(&instance.mem));
        if let Some(fb) = &mut instance.boot_fb {
            fb.start(env.display.clone()).map_err(MachineError::Framebuffer)?;
        }
        if let Some(vga) = vga {
            let shown = VgaDisplay::start(vga, env.display.clone()).map_err(MachineError::Vga)?;
            instance.vga = Some(shown);
        }
        let failed = |control: ControlSender| failed_sink(control, generation);
        for (kind, device) in inputs {
            // Input reaches the guest from the thread that makes it (the window's, a VM
            // process's client's), not by waking the device's thread. A panic in the device
            // ends this machine as one on the device's thread does, not the caller's thread.
            let (device, failed) = (Arc::downgrade(&device), failed(env.control.clone()));
            env.input.queue(kind).deliver_with(Some(Arc::new(move || {
                let Some(device) = device.upgrade() else { return false };
                let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    crate::sync::lock(&device).process_backend();
                }));
                if let Err(panic) = run {
                    let why = vcpu::panic_message(panic.as_ref());
                    failed(format!("the virtio-input device panicked taking input: {why}"));
                }
                true
            })));
        }
        for (index, device) in virtio.into_iter().enumerate() {
            instance.virtio.push((format!("vessel-virtio{index}"), device));
        }
        instance.serve_devices()?;
        if let Some(state) = &restoring
            && state.vcpus.len() != usize::from(config.vcpus)
        {
            return Err(MachineError::RestoreState(format!(
                "the saved machine had {} vCPUs; this one has {}",
                state.vcpus.len(),
                config.vcpus
            )));
        }
        for index in 0..config.vcpus {
            let fd = instance.vm.create_vcpu(u64::from(index)).map_err(kvm_err("create a vCPU"))?;
            if let Some(state) = &restoring {
                // Where it was: CPUID, registers, APIC, MSRs, pending events, as saved.
                let saved = &state.vcpus[usize::from(index)];
                crate::persist::vcpu::restore(&fd, index, saved)
                    .map_err(|e| MachineError::RestoreState(error_chain(&e)))?;
                instance.vcpu_cpuid.push(saved.cpuid.clone());
                instance.spawn_vcpu(fd, index, &pio, &mmio, &run, env, generation)?;
                continue;
            }
            let mut cpuid = supported.clone();
            cpuid::normalize(&mut cpuid, index, config.vcpus, tsc_deadline);
            fd.set_cpuid2(&cpuid).map_err(kvm_err("set CPUID"))?;
            instance.vcpu_cpuid.push(cpuid.as_slice().to_vec());
            regs::setup_msrs(&fd)?;
            regs::setup_fpu(&fd)?;
            regs::setup_lint(&fd)?;
            if index == 0
                && let Some(entry) = entry
            {
                // The other vCPUs wait for the guest's INIT/SIPI (KVM keeps them
                // uninitialised with an in-kernel local APIC).
                regs::setup_boot_vcpu(&fd, &instance.mem, entry)?;
            }
            instance.spawn_vcpu(fd, index, &pio, &mmio, &run, env, generation)?;
        }
        Ok(instance)
    }

    /// Starts vCPU `index`'s thread (parked until the machine runs).
    #[allow(clippy::too_many_arguments)]
    fn spawn_vcpu(
        &mut self,
        fd: kvm_ioctls::VcpuFd,
        index: u8,
        pio: &Arc<Bus>,
        mmio: &Arc<Bus>,
        run: &Arc<RunControl>,
        env: &InstanceEnv,
        generation: u64,
    ) -> Result<(), MachineError> {
        let control = env.control.clone();
        let ctx = VcpuContext {
            index,
            pio: pio.clone(),
            mmio: mmio.clone(),
            run: run.clone(),
            stopped: Arc::new(move |stop| {
                control.send(ControlMsg::VcpuStopped { generation, vcpu: index, stop });
            }),
            stats: env.stats.clone(),
        };
        let fd: SharedVcpu = Arc::new(Mutex::new(fd));
        self.vcpus.push(fd.clone());
        // A failed spawn drops the instance, which stops the threads already running.
        self.threads.push(vcpu::spawn(fd, ctx).map_err(MachineError::Thread)?);
        Ok(())
    }

    /// Starts a thread for each virtio device, serving its queues and backend.
    fn serve_devices(&mut self) -> Result<(), MachineError> {
        for (name, device) in &self.virtio {
            let (stats, failed) = (self.stats.clone(), self.failed.clone());
            let thread = IoThread::spawn(name.clone(), device.clone(), stats, failed);
            self.io_threads.push(thread.map_err(MachineError::Thread)?);
        }
        Ok(())
    }

    /// Writes the machine's state to `state` and its memory to `memory` (both emptied
    /// first); the vCPUs are paused. The device threads stop meanwhile (what they were
    /// serving finished first, so nothing touches guest memory or a device while it is
    /// read) and serve again after.
    pub fn save_state(
        &mut self,
        state: &File,
        memory: &File,
        progress: &dyn Fn(u64, u64),
    ) -> Result<(), MachineError> {
        let busy = self.stop_device_threads();
        let saved = if busy.is_empty() {
            self.write_state(state, memory, progress)
        } else {
            Err(MachineError::SaveState(format!(
                "{} did not finish its work in time",
                busy.join(", ")
            )))
        };
        self.serve_devices()?;
        saved
    }

    /// Stops the device threads once what they serve is finished; the names of those
    /// still busy after `SETTLE_LIMIT` (left to finish on their own).
    fn stop_device_threads(&mut self) -> Vec<String> {
        let deadline = Instant::now() + vcpu::SETTLE_LIMIT;
        self.io_threads.drain(..).filter_map(|thread| thread.stop(deadline).err()).collect()
    }

    fn write_state(
        &self,
        state: &File,
        memory: &File,
        progress: &dyn Fn(u64, u64),
    ) -> Result<(), MachineError> {
        use std::io::Write;
        let fail = |e: String| MachineError::SaveState(e);
        let bytes = self.encoded_state()?;
        crate::persist::memory::save(&self.mem, memory, progress)
            .map_err(|e| fail(error_chain(&e)))?;
        let mut out = state;
        out.set_len(0).and_then(|()| out.write_all(&bytes)).map_err(|e| fail(e.to_string()))?;
        Ok(())
    }

    /// The paused machine's state (not its memory) as a state file's bytes; the device
    /// threads are stopped.
    fn encoded_state(&self) -> Result<Vec<u8>, MachineError> {
        let fail = |e: String| MachineError::SaveState(e);
        if self.msrs.is_empty() {
            return Err(fail("this host's KVM listed no MSRs to save with the vCPUs".into()));
        }
        let mut vcpus = Vec::with_capacity(self.vcpus.len());
        for (index, fd) in self.vcpus.iter().enumerate() {
            let fd = crate::sync::lock(fd);
            let mut saved = crate::persist::vcpu::save(&self.vm, &fd, index as u8, &self.msrs)
                .map_err(|e| fail(error_chain(&e)))?;
            if let Some(set) = self.vcpu_cpuid.get(index) {
                saved.cpuid = set.clone();
            }
            vcpus.push(saved);
        }
        let l = &self.legacy;
        let devices = DeviceStates {
            serial: crate::sync::lock(&self.serial).save_state(),
            i8042: crate::sync::lock(&l.i8042).save_state(),
            cmos: crate::sync::lock(&l.cmos).save_state(),
            acpi_pm: crate::sync::lock(&l.pm).save_state(),
            debug_port: crate::sync::lock(&l.debug_port).save_state(),
            ged: crate::sync::lock(&self.ged).save_state(),
            pci_config_address: crate::sync::lock(&l.config_ports).save_state(),
            pci: crate::sync::lock(&self.pci).save_state().map_err(|e| fail(error_chain(&e)))?,
            boot_fb: self.boot_fb.as_ref().map(BootFramebuffer::save_state),
            fw_cfg: l.fw_cfg.as_ref().map(|d| crate::sync::lock(d).save_state()),
        };
        let machine = MachineState {
            memory: crate::persist::memory::MemoryLayout::of(&self.mem),
            vm: crate::persist::vm::save(&self.vm).map_err(|e| fail(error_chain(&e)))?,
            vcpus,
            devices,
        };
        crate::persist::format::encode(&machine).map_err(|e| fail(e.to_string()))
    }

    /// What a live migration's sender reads of this machine (instance `generation`).
    pub fn migration_source(&self, generation: u64) -> crate::migration::Source {
        crate::migration::Source {
            log: crate::vstate::dirty::DirtyLog::new(
                self.vm.clone(),
                self.mem.clone(),
                self.ram_slots.clone(),
            ),
            requirements: crate::migration::Requirements {
                memory: crate::persist::memory::MemoryLayout::of(&self.mem),
                vcpus: self.vcpus.len() as u8,
                cpuid: self
                    .vcpu_cpuid
                    .first()
                    .map_or_else(Vec::new, |first| first.iter().map(Into::into).collect()),
                disks: None,
            },
            disks: crate::migration::disks::Disks(
                (self.virtio.iter())
                    .filter(|(_, d)| crate::sync::lock(d).copy_source().is_some())
                    .map(|(_, d)| d.clone())
                    .collect(),
            ),
            generation,
        }
    }

    /// The switch-over of a live migration (the vCPUs are paused): the device threads
    /// stop, the machine's state is taken, and the devices let go of what another machine
    /// must take (the disks' locks). On failure everything is as before.
    pub fn freeze(&mut self) -> Result<Vec<u8>, MachineError> {
        let busy = self.stop_device_threads();
        let frozen = if busy.is_empty() {
            self.encoded_state().and_then(|bytes| {
                self.hand_over(true).map(|()| bytes).map_err(MachineError::Migration)
            })
        } else {
            Err(MachineError::Migration(format!(
                "{} did not finish its work in time",
                busy.join(", ")
            )))
        };
        if frozen.is_err() {
            let _ = self.hand_over(false);
            self.serve_devices()?;
        }
        frozen
    }

    /// After a failed migration: the devices take back what they let go, and serve again.
    pub fn thaw(&mut self) -> Result<(), MachineError> {
        self.hand_over(false).map_err(MachineError::Migration)?;
        self.serve_devices()
    }

    fn hand_over(&self, release: bool) -> Result<(), String> {
        for (name, device) in &self.virtio {
            crate::sync::lock(device).hand_over(release).map_err(|e| format!("{name}: {e}"))?;
        }
        Ok(())
    }

    /// Runs, pauses or stops the vCPUs; false if some did not get there in time.
    pub fn set_mode(&self, mode: RunMode) -> bool {
        self.run.settle(mode, &self.threads)
    }

    /// Stops the vCPU and device threads, waiting `SETTLE_LIMIT` at most. A thread that
    /// has not stopped by then (stuck in a device or in KVM) is left to finish on its own —
    /// what it holds, the guest's memory included, is freed when it exits — and the error
    /// names it, so that a power-off always completes.
    pub fn shutdown(&mut self) -> Result<(), String> {
        if self.shut_down {
            return Ok(());
        }
        self.shut_down = true;
        // Before the memory is unmapped (the fields go after this).
        self.stats.set_memory(Vec::new());
        let deadline = Instant::now() + vcpu::SETTLE_LIMIT;
        for io in &self.io_threads {
            io.ask_to_stop();
        }
        self.run.settle(RunMode::Exiting, &self.threads);
        let mut stuck = Vec::new();
        for t in self.threads.drain(..) {
            while !t.is_finished() && Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                stuck.push(t.thread().name().unwrap_or("a vCPU thread").to_string());
            }
        }
        for io in self.io_threads.drain(..) {
            if let Err(name) = io.stop(deadline) {
                stuck.push(name);
            }
        }
        if stuck.is_empty() {
            return Ok(());
        }
        let message = format!(
            "{} did not stop within {} s (stuck in a device or in KVM) and {} left to finish \
             on its own; the machine is off",
            stuck.join(", "),
            vcpu::SETTLE_LIMIT.as_secs(),
            if stuck.len() == 1 { "was" } else { "were" }
        );
        log::error!("{message}");
        Err(message)
    }

    /// Makes what the guest wrote to its disks durable (each disk held a moment).
    pub fn flush_disks(&self) -> Result<(), MachineError> {
        for (index, (_, device)) in self.virtio.iter().enumerate() {
            let mut device = crate::sync::lock(device);
            if let Some(disk) = device.switch_image() {
                disk.flush_image().map_err(|e| {
                    MachineError::InvalidConfig(format!("cannot flush disk {index}: {e}"))
                })?;
            }
        }
        Ok(())
    }

    /// Switches the machine's disks, in the order of its configuration, to the images
    /// `specs` names (a `None` keeps that disk on its image): every image before is
    /// flushed, every new one opened, and only then are they all put in place, so on
    /// failure every disk stays on its image. The vCPUs are paused (the caller's part),
    /// so all disks switch at one point of the guest's time: a request the guest has had
    /// completed went to the image before, one it sends later goes to the new one.
    pub fn switch_disks(&self, specs: &[Option<ImageSpec>]) -> Result<(), MachineError> {
        let mut disks: Vec<_> = self.virtio.iter().map(|(_, d)| crate::sync::lock(d)).collect();
        disks.retain_mut(|d| d.switch_image().is_some());
        if disks.len() != specs.len() {
            return Err(MachineError::InvalidConfig(format!(
                "{} images given for the machine's {} disks",
                specs.len(),
                disks.len()
            )));
        }
        let mut prepared = Vec::new();
        for (index, (disk, spec)) in disks.iter_mut().zip(specs).enumerate() {
            let Some(spec) = spec else {
                prepared.push(None);
                continue;
            };
            let disk = disk.switch_image().expect("kept only disks");
            let failed = |e| MachineError::InvalidConfig(format!("disk {index}: {e}"));
            disk.flush_image().map_err(failed)?;
            prepared.push(Some(disk.prepare_image(spec).map_err(failed)?));
        }
        for (disk, ready) in disks.iter_mut().zip(prepared) {
            if let Some(ready) = ready {
                disk.switch_image().expect("kept only disks").install_image(ready);
            }
        }
        Ok(())
    }

    /// The CD drive's controller.
    pub fn cd(&self) -> Option<Arc<Mutex<IdeController>>> {
        self.ide.clone()
    }

    pub fn raise_power_button(&self) -> std::io::Result<()> {
        crate::sync::lock(&self.ged).raise(acpi::GED_EVENT_POWER_BUTTON)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        let _ = self.shutdown();
    }
}

/// The boot framebuffer `config` asks for, as the KVM slot after guest RAM's.
fn boot_framebuffer(
    config: &MachineConfig,
    vm: &VmFd,
    mem: &GuestMem,
) -> Result<Option<BootFramebuffer>, MachineError> {
    let Some(mode) = config.boot_framebuffer else { return Ok(None) };
    let fb = BootFramebuffer::new(mode).map_err(MachineError::Framebuffer)?;
    memory::register_framebuffer(vm, mem, &fb)?;
    Ok(Some(fb))
}

fn failed_sink(control: ControlSender, generation: u64) -> FailureSink {
    Arc::new(move |message| {
        control.send(ControlMsg::DeviceFailed { generation, message });
    })
}

/// Gives every device its saved state (each checks what it is given).
fn restore_devices(
    saved: &DeviceStates,
    serial: &Mutex<SerialPort>,
    ged: &Mutex<Ged>,
    legacy: &Legacy,
    pci: &Mutex<PciRoot>,
) -> Result<(), MachineError> {
    use crate::sync::lock;
    let fail = |e: crate::persist::DeviceStateError| MachineError::RestoreState(e.to_string());
    lock(serial).restore_state(&saved.serial).map_err(fail)?;
    lock(&legacy.i8042).restore_state(&saved.i8042).map_err(fail)?;
    lock(&legacy.cmos).restore_state(&saved.cmos).map_err(fail)?;
    lock(&legacy.pm).restore_state(&saved.acpi_pm).map_err(fail)?;
    lock(&legacy.debug_port).restore_state(&saved.debug_port).map_err(fail)?;
    lock(ged).restore_state(&saved.ged).map_err(fail)?;
    lock(&legacy.config_ports).restore_state(&saved.pci_config_address).map_err(fail)?;
    lock(pci).restore_state(&saved.pci).map_err(fail)?;
    match (&legacy.fw_cfg, &saved.fw_cfg) {
        (Some(device), Some(state)) => lock(device).restore_state(state).map_err(fail)?,
        (None, None) => {}
        _ => {
            return Err(MachineError::RestoreState(
                "the saved machine and this one differ in booting through firmware".into(),
            ));
        }
    }
    Ok(())
}

fn power_sink(control: ControlSender, generation: u64) -> PowerSink {
    Arc::new(move |request: PowerRequest| {
        control.send(ControlMsg::Power { generation, request });
    })
}

struct Devices {
    pio: Arc<Bus>,
    mmio: Arc<Bus>,
    serial: Arc<Mutex<SerialPort>>,
    ged: Arc<Mutex<Ged>>,
    virtio: Vec<Arc<Mutex<VirtioPciDevice>>>,
    /// The virtio-input devices among them, and what each carries.
    inputs: Vec<(InputKind, Arc<Mutex<VirtioPciDevice>>)>,
    ide: Option<Arc<Mutex<IdeController>>>,
    vga: Option<vga::SharedVga>,
    legacy: Legacy,
    pci: Arc<Mutex<PciRoot>>,
}

fn build_devices(
    vm: &Arc<VmFd>,
    mem: &GuestMem,
    config: &MachineConfig,
    env: &InstanceEnv,
    power: PowerSink,
    shadow: Option<ShadowRam>,
    // The first KVM memory slot free for devices (firmware machines).
    next_slot: Option<u32>,
) -> Result<Devices, MachineError> {
    let irq = |gsi: u32| -> Result<EventFd, MachineError> {
        let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(MachineError::EventFd)?;
        vm.register_irqfd(&evt, gsi).map_err(kvm_err("register an irqfd"))?;
        Ok(evt)
    };
    let pio = Arc::new(Bus::new("port I/O"));
    let mmio = Arc::new(Bus::new("MMIO"));

    let serial = Arc::new(Mutex::new(SerialPort::new(
        irq(COM1_GSI)?,
        SerialOutput::new(env.serial_out.clone(), env.serial_ready.clone()),
    )));
    pio.insert(u64::from(COM1_PORT), 8, serial.clone())?;

    let irqs = [Some(irq(KBD_GSI)?), Some(irq(AUX_GSI)?)];
    let i8042 = Arc::new(Mutex::new(I8042::new(power.clone(), irqs, Some(env.input.clone()))));
    env.input.attach_ps2(Arc::new(I8042Port::new(Arc::downgrade(&i8042))));
    pio.insert(u64::from(I8042_DATA_PORT), 1, i8042.clone())?;
    pio.insert(u64::from(I8042_COMMAND_PORT), 1, i8042.clone())?;

    let low = config.memory_bytes.min(MMIO_HOLE_START);
    let mut cmos = Cmos::new(low, config.memory_bytes - low, config.vcpus);
    if let Boot::Firmware(fw) = &config.boot {
        // The boot order by device class too, for what `bootorder` does not name.
        let mut classes = Vec::new();
        for device in fw.first_boot_order.as_ref().unwrap_or(&fw.boot_order) {
            let class = match device {
                BootDevice::Disk(_) => BootClass::HardDisk,
                BootDevice::Cd => BootClass::Cd,
            };
            if !classes.contains(&class) {
                classes.push(class);
            }
        }
        cmos.set_boot_order(&classes);
    }
    let cmos = Arc::new(Mutex::new(cmos));
    pio.insert(u64::from(CMOS_PORT), 2, cmos.clone())?;

    let acpi_pm = Arc::new(Mutex::new(AcpiPm::new(power)));
    let pm: SharedDevice = acpi_pm.clone();
    pio.insert(u64::from(SLEEP_CONTROL_PORT), 2, pm.clone())?;

    // A debug console port: each byte becomes a debug-port event.
    let marker_sink = || -> crate::devices::legacy::debug_port::MarkerSink {
        let events = env.events.clone();
        let built_at = env.built_at;
        Box::new(move |code, at| {
            events.send(Event::DebugMarker { code, since_build: at.duration_since(built_at) })
        })
    };
    let debug_port = Arc::new(Mutex::new(DebugPort::new(marker_sink())));
    pio.insert(u64::from(DEBUG_PORT), 1, debug_port.clone())?;

    if let Boot::Firmware(_) = &config.boot {
        // SeaBIOS's own log goes to QEMU's debug console port: events as 0xE9's, more of
        // them.
        let log = DebugPort::firmware_log(marker_sink());
        pio.insert(u64::from(FIRMWARE_DEBUG_PORT), 1, Arc::new(Mutex::new(log)))?;
    }

    let ged = Arc::new(Mutex::new(Ged::new(irq(GED_GSI)?)));
    mmio.insert(GED_MMIO_BASE, GED_MMIO_SIZE, ged.clone())?;

    // PCI: the root bus behind 0xCF8 (which also carries the 0xCF9 reset register) and
    // ECAM, then the configured devices.
    let windows =
        Windows { mem32: (PCI_MMIO32_START, PCI_MMIO32_END), io: (PCI_IO_START, PCI_IO_END) };
    let root = Arc::new(Mutex::new(PciRoot::new(&mmio, &pio, windows)));
    if let Some(shadow) = shadow {
        crate::sync::lock(&root).attach_shadow_ram(shadow);
    }
    let config_ports = Arc::new(Mutex::new(ConfigPorts::new(root.clone(), pm)));
    pio.insert(u64::from(PCI_CONFIG_PORT), 8, config_ports.clone())?;
    mmio.insert(PCI_ECAM_START, PCI_ECAM_SIZE, Arc::new(Mutex::new(Ecam::new(root.clone()))))?;
    let router = Arc::new(GsiRouter::new(vm.clone())?);
    let mut virtio = Vec::new();
    let mut inputs = Vec::new();
    let mut ide = None;
    let mut vga = None;
    let mut option_roms = Vec::new();
    let mut disks = 0;
    // Where the bootable devices went (PCI slots), for the firmware's boot order.
    let (mut cd_slot, mut disk_slots) = (None, Vec::new());
    // A firmware machine is laid out as a PC: the PIIX3's ISA bridge at 00:01.0, and its
    // IDE controller (if there is a CD drive) as function 1 of that slot.
    let (piix_slot, pirq) = match config.boot {
        Boot::Firmware(_) => {
            let pirq = Arc::new(PirqRoutes::new(vm.clone()));
            let bridge = Arc::new(Mutex::new(IsaBridge::new(Some(pirq.clone()))));
            (Some(crate::sync::lock(&root).add_device(bridge)?), Some(pirq))
        }
        Boot::Kernel(_) => (None, None),
    };
    for device in &config.devices {
        let model: Box<dyn VirtioDevice> = match device {
            DeviceConfig::CdRom { iso } => {
                let mut cd = CdRom::new("vessel-cd0");
                if let Some(path) = iso {
                    cd.insert(Media::open(path)?);
                }
                let irqs = [irq(PRIMARY_IRQ)?, irq(SECONDARY_IRQ)?];
                let controller = IdeController::new(Some(cd), irqs, Some(mem.clone()));
                let controller = Arc::new(Mutex::new(controller));
                for (port, len) in
                    [(PRIMARY_CMD, 8), (PRIMARY_CTRL, 1), (SECONDARY_CMD, 8), (SECONDARY_CTRL, 1)]
                {
                    pio.insert(u64::from(port), len, controller.clone())?;
                }
                cd_slot = Some(match piix_slot {
                    Some(slot) => {
                        crate::sync::lock(&root).add_function(slot, 1, controller.clone())?;
                        (slot, 1)
                    }
                    None => (crate::sync::lock(&root).add_device(controller.clone())?, 0),
                });
                ide = Some(controller);
                continue;
            }
            DeviceConfig::Vga(vga_config) => {
                let (core, rom) = add_vga(vm, env, &root, &pio, &mmio, vga_config, next_slot)?;
                option_roms.extend(rom);
                vga = Some(core);
                continue;
            }
            #[cfg(feature = "test-devices")]
            DeviceConfig::Faulty => {
                use crate::devices::faulty::{FAULTY_PORT, Faulty};
                pio.insert(u64::from(FAULTY_PORT), 1, Arc::new(Mutex::new(Faulty::default())))?;
                continue;
            }
            DeviceConfig::Rng => Box::new(Rng),
            DeviceConfig::Gpu(gpu) => Box::new(Gpu::new(env.display.clone(), *gpu)),
            DeviceConfig::Input(kind) => Box::new(Input::new(*kind, env.input.clone())),
            DeviceConfig::Block { image, read_only } => {
                disks += 1;
                Box::new(Block::open(image, *read_only, &format!("vessel-disk{}", disks - 1))?)
            }
            DeviceConfig::Net { mac, forwards, host_access } => {
                match Passt::spawn(forwards, *host_access) {
                    Ok(backend) => Box::new(Net::new(*mac, Box::new(backend))),
                    Err(e @ PasstError::Missing) => {
                        // The machine still starts, without a network card; the user is told.
                        log::warn!("{e}");
                        env.events.send(Event::Warning(e.to_string()));
                        continue;
                    }
                    Err(e) => return Err(MachineError::Net(e)),
                }
            }
        };
        let transport =
            VirtioPciDevice::new(model, mem.clone(), Some(router.clone()), Some(vm.clone()))?;
        let transport = Arc::new(Mutex::new(transport));
        let slot = crate::sync::lock(&root).add_device(transport.clone())?;
        let mut intx = IntxLine::new(vm, intx_gsi(slot, 0))?;
        if let Some(pirq) = &pirq {
            pirq.connect(&mut intx, pirq_of(slot, 0))?;
        }
        crate::sync::lock(&transport).set_intx(intx);
        if let DeviceConfig::Input(kind) = device {
            inputs.push((*kind, transport.clone()));
        }
        if matches!(device, DeviceConfig::Block { .. }) {
            disk_slots.push(slot);
        }
        virtio.push(transport);
    }
    let mut fw_cfg = None;
    if let Boot::Firmware(fw) = &config.boot {
        let order = fw.first_boot_order.as_ref().unwrap_or(&fw.boot_order);
        let order = boot_paths(order, cd_slot, &disk_slots);
        let mut setup = firmware_setup(config, fw, order);
        setup.option_roms = option_roms;
        let device = Arc::new(Mutex::new(crate::firmware::fw_cfg(mem.clone(), &setup)?));
        pio.insert(u64::from(FW_CFG_PORT), FW_CFG_LEN, device.clone())?;
        fw_cfg = Some(device);
    }
    let legacy = Legacy { i8042, cmos, pm: acpi_pm, debug_port, config_ports, fw_cfg };
    Ok(Devices { pio, mmio, serial, ged, virtio, inputs, ide, vga, legacy, pci: root })
}

/// Plugs a standard VGA into the PCI bus and its legacy ports and memory window, its
/// framebuffer to be mapped as KVM slot `slot`; returns it and its option ROM (by the
/// fw_cfg name SeaBIOS runs it under, as the ROM of the device).
fn add_vga(
    vm: &Arc<VmFd>,
    env: &InstanceEnv,
    root: &Mutex<PciRoot>,
    pio: &Bus,
    mmio: &Bus,
    config: &vga::VgaConfig,
    slot: Option<u32>,
) -> Result<(vga::SharedVga, Option<crate::firmware::OptionRom>), MachineError> {
    let vram = Arc::new(vga::vram::Vram::new(vga::VRAM_BYTES).map_err(vga::VgaError::from)?);
    let core = Arc::new(Mutex::new(VgaCore::new(vram)));
    let slot = slot.map(|slot| (vm.clone(), slot));
    let device = StdVga::new(core.clone(), slot, Some(env.display.clone()));
    crate::sync::lock(root).add_device(Arc::new(Mutex::new(device)))?;
    let ports = Arc::new(Mutex::new(VgaPorts::new(core.clone())));
    pio.insert(u64::from(vga::PORTS_START), vga::PORTS_LEN, ports.clone())?;
    pio.insert(u64::from(vga::DISPI_PORT), vga::DISPI_PORTS_LEN, ports)?;
    mmio.insert(
        vga::WINDOW_START,
        vga::WINDOW_LEN,
        Arc::new(Mutex::new(VgaWindow::new(core.clone()))),
    )?;
    let rom = match &config.rom {
        Some(path) => {
            let name = format!("pci{:04x},{:04x}.rom", vga::VENDOR, vga::DEVICE);
            Some((name, vga::read_rom(path)?))
        }
        None => None,
    };
    Ok((core, rom))
}

/// What the firmware is told about the machine.
fn firmware_setup(
    config: &MachineConfig,
    fw: &crate::machine::config::FirmwareBoot,
    boot_order: Vec<String>,
) -> crate::firmware::FirmwareSetup {
    // SMBIOS's processor ID: CPUID leaf 1's EAX and EDX, as the guest sees them (Vessel
    // passes the host's family, model and stepping through).
    let leaf1 = std::arch::x86_64::__cpuid(1);
    let ram = ram_ranges(config.memory_bytes)
        .into_iter()
        .map(|(start, len)| (vm_memory::Address::raw_value(&start), len as u64))
        .collect();
    crate::firmware::FirmwareSetup {
        vcpus: config.vcpus,
        memory_bytes: config.memory_bytes,
        uuid: fw.uuid,
        boot_order,
        boot_menu_ms: fw.boot_menu_ms,
        serial_console: fw.serial_console.then_some(COM1_PORT),
        option_roms: Vec::new(),
        smbios: crate::firmware::smbios::SmbiosConfig {
            uuid: fw.uuid,
            product: "Vessel Virtual Machine".into(),
            serial: uuid_text(&fw.uuid),
            bios_version: "SeaBIOS".into(),
            bios_date: "04/01/2014".into(),
            vcpus: config.vcpus,
            processor_id: (leaf1.eax, leaf1.edx),
            ram,
        },
    }
}

/// A UUID as text (8-4-4-4-12 hex digits).
fn uuid_text(u: &[u8; 16]) -> String {
    let hex: String = u.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// The OpenFirmware paths of `order` as SeaBIOS matches them (QEMU's spelling): a
/// virtio-blk disk at PCI slot S is `/pci@i0cf8/scsi@S/disk@0,0`, the CD (the IDE
/// controller's secondary master) `/pci@i0cf8/ide@S,F/drive@1/disk@0` (`ide@S` when it is
/// function 0). A device the machine lacks is left out.
fn boot_paths(
    order: &[crate::machine::config::BootDevice],
    cd_slot: Option<(usize, usize)>,
    disk_slots: &[usize],
) -> Vec<String> {
    use crate::machine::config::BootDevice;
    order
        .iter()
        .filter_map(|device| match device {
            BootDevice::Cd => cd_slot.map(|(slot, function)| match function {
                0 => format!("/pci@i0cf8/ide@{slot:x}/drive@1/disk@0"),
                f => format!("/pci@i0cf8/ide@{slot:x},{f:x}/drive@1/disk@0"),
            }),
            BootDevice::Disk(n) => {
                disk_slots.get(*n).map(|s| format!("/pci@i0cf8/scsi@{s:x}/disk@0,0"))
            }
        })
        .collect()
}
