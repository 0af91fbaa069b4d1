//! A vCPU's state as KVM holds it, saved and restored in the order KVM needs (the traps
//! are Firecracker's `vstate/vcpu` findings, each rule commented where it is applied).

use kvm_bindings::{
    CpuId, KVM_MAX_CPUID_ENTRIES, Msrs, kvm_cpuid_entry2, kvm_debugregs, kvm_lapic_state,
    kvm_mp_state, kvm_msr_entry, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
};
use kvm_ioctls::{Cap, Kvm, VcpuFd, VmFd};
use serde::{Deserialize, Serialize};

/// Most MSRs read or written by one ioctl (KVM's own bound).
const MSR_CHUNK: usize = kvm_bindings::KVM_MAX_MSR_ENTRIES;

/// Everything KVM keeps of one vCPU.
#[derive(Debug, Serialize, Deserialize)]
pub struct VcpuState {
    pub cpuid: Vec<kvm_cpuid_entry2>,
    pub msrs: Vec<kvm_msr_entry>,
    pub debug_regs: kvm_debugregs,
    pub lapic: kvm_lapic_state,
    pub mp_state: kvm_mp_state,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub vcpu_events: kvm_vcpu_events,
    pub xcrs: kvm_xcrs,
    pub xsave: kvm_xsave,
    /// The guest's TSC frequency, where KVM tells it.
    pub tsc_khz: Option<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum VcpuStateError {
    #[error("cannot {what} of vCPU {index}")]
    Kvm {
        what: &'static str,
        index: u8,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("this host's KVM keeps {0} bytes of XSAVE state a vCPU, more than Vessel saves (4096)")]
    XsaveTooLarge(usize),
    #[error(
        "vCPU {index}: KVM took {taken} of the {given} MSRs saved (the first refused: {refused:#x})"
    )]
    MsrsRefused { index: u8, taken: usize, given: usize, refused: u32 },
    #[error("vCPU {0}: the saved state holds {1} CPUID entries, more than KVM takes")]
    TooManyCpuidEntries(u8, usize),
}

fn kvm_error(what: &'static str, index: u8) -> impl FnOnce(kvm_ioctls::Error) -> VcpuStateError {
    move |source| VcpuStateError::Kvm { what, index, source }
}

/// The MSRs a vCPU's state saves: those KVM lists as worth saving on this host.
pub fn msrs_to_save(kvm: &Kvm) -> Result<Vec<u32>, VcpuStateError> {
    let list = kvm.get_msr_index_list().map_err(kvm_error("list the MSRs", 0))?;
    Ok(list.as_slice().to_vec())
}

/// Whether the 4096 bytes of `kvm_xsave` hold this VM's vCPUs' XSAVE state: Vessel asks
/// for no dynamically enabled state (AMX tiles need `arch_prctl` first), so they do unless
/// this host's KVM says otherwise.
fn check_xsave_size(vm: &VmFd) -> Result<(), VcpuStateError> {
    let size = vm.check_extension_int(Cap::Xsave2);
    if size as usize > std::mem::size_of::<kvm_xsave>() {
        return Err(VcpuStateError::XsaveTooLarge(size as usize));
    }
    Ok(())
}

/// Saves vCPU `index`'s state; the vCPU is not running (its thread is parked outside
/// `KVM_RUN`). `msrs`: which MSRs (`msrs_to_save`).
pub fn save(
    vm: &VmFd,
    vcpu: &VcpuFd,
    index: u8,
    msrs: &[u32],
) -> Result<VcpuState, VcpuStateError> {
    check_xsave_size(vm)?;
    let e = |what| kvm_error(what, index);
    // MP state first: reading it makes KVM finish an INIT or SIPI it had pending (which
    // other reads would otherwise see half done).
    let mp_state = vcpu.get_mp_state().map_err(e("read the MP state"))?;
    let regs = vcpu.get_regs().map_err(e("read the registers"))?;
    let sregs = vcpu.get_sregs().map_err(e("read the special registers"))?;
    let xsave = vcpu.get_xsave().map_err(e("read the XSAVE state"))?;
    let xcrs = vcpu.get_xcrs().map_err(e("read the XCRs"))?;
    let debug_regs = vcpu.get_debug_regs().map_err(e("read the debug registers"))?;
    let lapic = vcpu.get_lapic().map_err(e("read the local APIC"))?;
    let tsc_khz = vcpu.get_tsc_khz().ok();
    let cpuid = vcpu.get_cpuid2(KVM_MAX_CPUID_ENTRIES).map_err(e("read CPUID"))?;
    let msrs = read_msrs(vcpu, index, msrs)?;
    // vCPU events last: reading the MSRs (or anything above) can still change what is
    // pending (an exception, an NMI, an SMI).
    let vcpu_events = vcpu.get_vcpu_events().map_err(e("read the pending events"))?;
    Ok(VcpuState {
        cpuid: cpuid.as_slice().to_vec(),
        msrs,
        debug_regs,
        lapic,
        mp_state,
        regs,
        sregs,
        vcpu_events,
        xcrs,
        xsave,
        tsc_khz,
    })
}

/// Reads `indices` in chunks KVM takes; an MSR KVM refuses to read (listed, but not
/// readable on this vCPU: KVM stops at it) is left out, and the rest read on.
fn read_msrs(
    vcpu: &VcpuFd,
    index: u8,
    indices: &[u32],
) -> Result<Vec<kvm_msr_entry>, VcpuStateError> {
    let mut out = Vec::with_capacity(indices.len());
    let mut rest = indices;
    // Each round reads at least one MSR or drops one: bounded by the list's length.
    while !rest.is_empty() {
        let chunk = &rest[..rest.len().min(MSR_CHUNK)];
        let entries: Vec<kvm_msr_entry> =
            chunk.iter().map(|&i| kvm_msr_entry { index: i, ..Default::default() }).collect();
        let mut msrs = Msrs::from_entries(&entries).expect("a chunk within KVM's bound");
        let read = vcpu.get_msrs(&mut msrs).map_err(kvm_error("read the MSRs", index))?;
        out.extend_from_slice(&msrs.as_slice()[..read.min(chunk.len())]);
        // KVM stopped at the MSR after the last it read: skip that one.
        let used = if read < chunk.len() { read + 1 } else { read };
        rest = &rest[used..];
    }
    Ok(out)
}

/// Restores `state` into vCPU `index` of a VM built like the one it was saved from (its
/// in-kernel irqchip made, its memory in place); the vCPU has not run yet.
pub fn restore(vcpu: &VcpuFd, index: u8, state: &VcpuState) -> Result<(), VcpuStateError> {
    let e = |what| kvm_error(what, index);
    // CPUID before anything else: it decides which MSRs and XSAVE features the vCPU has,
    // so KVM refuses those writes until it is set.
    let cpuid = CpuId::from_entries(&state.cpuid)
        .map_err(|_| VcpuStateError::TooManyCpuidEntries(index, state.cpuid.len()))?;
    vcpu.set_cpuid2(&cpuid).map_err(e("set CPUID"))?;
    // The TSC frequency before the MSRs: writing IA32_TSC scales by it. A host whose KVM
    // cannot scale keeps its own (the guest's clock then drifts, as after a migration).
    if let Some(khz) = state.tsc_khz
        && vcpu.get_tsc_khz().ok() != Some(khz)
        && let Err(error) = vcpu.set_tsc_khz(khz)
    {
        log::warn!("vCPU {index}: cannot set its TSC to {khz} kHz as saved ({error})");
    }
    vcpu.set_mp_state(state.mp_state).map_err(e("set the MP state"))?;
    vcpu.set_regs(&state.regs).map_err(e("set the registers"))?;
    vcpu.set_sregs(&state.sregs).map_err(e("set the special registers"))?;
    // SAFETY: `kvm_xsave` is the 4096-byte legacy buffer KVM_SET_XSAVE reads; this VMM asks
    // for no dynamically enabled XSAVE state (`check_xsave_size`), so KVM reads no more.
    unsafe { vcpu.set_xsave(&state.xsave) }.map_err(e("set the XSAVE state"))?;
    vcpu.set_xcrs(&state.xcrs).map_err(e("set the XCRs"))?;
    vcpu.set_debug_regs(&state.debug_regs).map_err(e("set the debug registers"))?;
    // The local APIC after the special registers (its base MSR is part of them: set
    // before, the APIC would be reset by them) and before the MSRs (TSC_DEADLINE is
    // dropped while the APIC's timer is not in deadline mode).
    vcpu.set_lapic(&state.lapic).map_err(e("set the local APIC"))?;
    for chunk in state.msrs.chunks(MSR_CHUNK) {
        let msrs = Msrs::from_entries(chunk).expect("a chunk within KVM's bound");
        let taken = vcpu.set_msrs(&msrs).map_err(e("set the MSRs"))?;
        if taken < chunk.len() {
            return Err(VcpuStateError::MsrsRefused {
                index,
                taken,
                given: chunk.len(),
                refused: chunk[taken].index,
            });
        }
    }
    // Pending events last: setting the registers or MSRs above may clear them.
    vcpu.set_vcpu_events(&state.vcpu_events).map_err(e("set the pending events"))?;
    // Tell the guest's kvmclock that the vCPU was stopped, so its watchdogs do not take the
    // time it spent saved for a hang (EINVAL: the guest does not use kvmclock).
    if let Err(error) = vcpu.kvmclock_ctrl()
        && error.errno() != libc::EINVAL
    {
        log::warn!("vCPU {index}: cannot tell the guest's clock it was paused ({error})");
    }
    Ok(())
}
