//! Saving a vCPU's and a VM's KVM state and restoring it into a new VM built the same way:
//! what was set before the save reads back after the restore, through the state file.

use kvm_bindings::{
    KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY, Msrs, kvm_msr_entry, kvm_pit_config,
};
use kvm_ioctls::{VcpuFd, VmFd};
use serde::{Deserialize, Serialize};

use super::format;
use super::vcpu::{self, VcpuState};
use super::vm::{self, VmState};
use crate::arch::x86_64::cpuid;
use crate::arch::x86_64::regs::{self, msr_index};

/// A VM as Vessel builds one (irqchip, PIT) with one vCPU set up as at power-on.
fn machine() -> Option<(VmFd, VcpuFd, Vec<u32>)> {
    let kvm = crate::vstate::kvm::open_kvm().ok()?;
    let vm = kvm.create_vm().unwrap();
    vm.set_tss_address(0xfffb_d000).unwrap();
    vm.create_irq_chip().unwrap();
    vm.create_pit2(kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() }).unwrap();
    let vcpu = vm.create_vcpu(0).unwrap();
    let mut supported = kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES).unwrap();
    cpuid::normalize(&mut supported, 0, 1, true);
    vcpu.set_cpuid2(&supported).unwrap();
    regs::setup_msrs(&vcpu).unwrap();
    regs::setup_fpu(&vcpu).unwrap();
    regs::setup_lint(&vcpu).unwrap();
    let msrs = vcpu::msrs_to_save(&kvm).unwrap();
    Some((vm, vcpu, msrs))
}

#[derive(Serialize, Deserialize)]
struct Saved {
    vm: VmState,
    vcpu: VcpuState,
}

fn msr(state: &VcpuState, index: u32) -> Option<u64> {
    state.msrs.iter().find(|m| m.index == index).map(|m| m.data)
}

#[test]
fn a_vcpu_and_its_vm_restore_into_a_new_vm_as_they_were_saved() {
    let Some((vm, cpu, msrs)) = machine() else {
        eprintln!("no /dev/kvm: nothing to check");
        return;
    };
    // State no fresh vCPU has: general and debug registers, MSRs, the APIC's task
    // priority, the PIT's channel 0 count, the clock.
    let mut r = cpu.get_regs().unwrap();
    (r.rax, r.rbx, r.r15, r.rip, r.rflags) = (0x1111_2222_3333_4444, 0x55, 0xfeed, 0x7c00, 0x202);
    cpu.set_regs(&r).unwrap();
    let mut s = cpu.get_sregs().unwrap();
    s.cr2 = 0xdead_b000;
    cpu.set_sregs(&s).unwrap();
    let mut d = cpu.get_debug_regs().unwrap();
    d.db[0] = 0x1234_5000;
    cpu.set_debug_regs(&d).unwrap();
    let entries =
        [(msr_index::STAR, 0x0023_0010_0000_0000), (msr_index::LSTAR, 0xffff_8000_0010_0000)]
            .map(|(index, data)| kvm_msr_entry { index, data, ..Default::default() });
    assert_eq!(cpu.set_msrs(&Msrs::from_entries(&entries).unwrap()).unwrap(), 2);
    let mut lapic = cpu.get_lapic().unwrap();
    lapic.regs[0x80] = 0x20; // TPR
    cpu.set_lapic(&lapic).unwrap();
    let mut pit = vm.get_pit2().unwrap();
    pit.channels[0].count = 0x4321;
    vm.set_pit2(&pit).unwrap();

    let saved =
        Saved { vm: vm::save(&vm).unwrap(), vcpu: vcpu::save(&vm, &cpu, 0, &msrs).unwrap() };
    assert!(!saved.vcpu.msrs.is_empty() && !saved.vcpu.cpuid.is_empty());
    assert_eq!(msr(&saved.vcpu, msr_index::LSTAR), Some(0xffff_8000_0010_0000));
    let bytes = format::encode(&saved).unwrap();
    drop((cpu, vm));

    // A new VM, as Vessel builds one, takes the saved state.
    let (vm, cpu, msrs) = machine().unwrap();
    let loaded: Saved = format::decode(&bytes).unwrap();
    vm::restore(&vm, &loaded.vm).unwrap();
    vcpu::restore(&cpu, 0, &loaded.vcpu).unwrap();

    let again = vcpu::save(&vm, &cpu, 0, &msrs).unwrap();
    let r = again.regs;
    assert_eq!((r.rax, r.rbx, r.r15, r.rip), (0x1111_2222_3333_4444, 0x55, 0xfeed, 0x7c00));
    assert_eq!(again.sregs.cr2, 0xdead_b000);
    assert_eq!(
        (again.sregs.cr0, again.sregs.efer),
        (loaded.vcpu.sregs.cr0, loaded.vcpu.sregs.efer)
    );
    assert_eq!(again.debug_regs.db[0], 0x1234_5000);
    assert_eq!(msr(&again, msr_index::STAR), Some(0x0023_0010_0000_0000));
    assert_eq!(msr(&again, msr_index::LSTAR), Some(0xffff_8000_0010_0000));
    assert_eq!(again.lapic.regs[0x80], 0x20, "the APIC's task priority");
    assert_eq!(again.mp_state.mp_state, loaded.vcpu.mp_state.mp_state);
    assert_eq!(again.cpuid.len(), loaded.vcpu.cpuid.len());
    assert_eq!(again.xcrs.xcrs[0].value, loaded.vcpu.xcrs.xcrs[0].value);
    assert_eq!(again.xsave.region[..8], loaded.vcpu.xsave.region[..8], "x87 and SSE control");
    let vm_again = vm::save(&vm).unwrap();
    assert_eq!(vm_again.pit.channels[0].count, 0x4321);
    // The clock went on from the saved value (it runs on: not earlier than saved).
    assert!(vm_again.clock.clock >= loaded.vm.clock.clock);
    assert!(vm_again.clock.clock - loaded.vm.clock.clock < 10_000_000_000, "no jump");
}
