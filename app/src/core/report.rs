//! Errors and guest crashes in words for people, the same in the window, the CLI and the
//! VM process.

use std::path::Path;

/// Logs to stderr, at `default_filter` unless RUST_LOG says otherwise. Every warning a
/// guest can provoke is rate-limited per place in the code, also those logged inside the
/// crates the devices use (virtio-queue logs each bad kick).
pub fn init_logger(default_filter: &str) {
    let logger =
        env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default_filter))
            .format_timestamp(None)
            .build();
    log::set_max_level(logger.filter());
    let _ =
        log::set_boxed_logger(Box::new(vmm::devices::log_limit::RateLimitedLogger::new(logger)));
}

/// An error with its causes, "what: why: why" (the machine's own, shared).
pub use vmm::machine::error_chain;

/// What a guest crash means on this host, for people.
pub fn crash_reason(report: &vmm::CrashReport) -> String {
    let mut reason = format!(
        "the guest crashed (a triple fault on vCPU {}, at RIP {:#x})",
        report.vcpu, report.registers.regs.rip
    );
    if let Some(hint) = host_hint() {
        reason.push_str(". ");
        reason.push_str(hint);
    }
    reason
}

/// This host's known limits, if it has any.
pub fn host_hint() -> Option<&'static str> {
    Path::new("/sys/module/kvm_pvm").exists().then_some(
        "This host's KVM is PVM (kvm_pvm), not hardware virtualization: guest kernel code \
         is only emulated and a standard Linux kernel cannot boot here. On a machine with \
         VT-x or AMD-V this VM runs.",
    )
}
