//! vCPU threads: each runs `KVM_RUN` in a loop, dispatches port and MMIO exits to the
//! buses, and parks when the controller pauses or tears down the machine.
//!
//! Kicking a vCPU out of `KVM_RUN` uses a real-time signal with an empty handler (the
//! ioctl returns EINTR). A signal that lands just before the thread enters `KVM_RUN` is
//! missed, so the controller re-kicks until every vCPU has acknowledged.
//!
//! A vCPU knows nothing of the controller: it reports why it stopped through the
//! `StopSink` it is handed (as Firecracker's vCPUs report through an event channel).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread::JoinHandle;
use std::time::Duration;

use kvm_bindings::{KVM_SYSTEM_EVENT_CRASH, KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{VcpuExit, VcpuFd};
use vmm_sys_util::signal::{Killable, SIGRTMIN, register_signal_handler};

use crate::arch::x86_64::regs::{VcpuRegisters, read_registers};
use crate::devices::bus::Bus;
use crate::sync::lock;

/// Told once why a vCPU stopped for good (from the vCPU's thread).
pub type StopSink = Arc<dyn Fn(VcpuStop) + Send + Sync>;

/// Why a vCPU stopped for good.
#[derive(Debug)]
pub enum VcpuStop {
    TripleFault(Box<VcpuRegisters>),
    PowerOff,
    Reset,
    Error(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum RunMode {
    Paused = 0,
    Running = 1,
    Exiting = 2,
}

struct RunState {
    mode: RunMode,
    /// vCPU threads waiting in `park` (paused, exiting or stopped for good).
    parked: usize,
    /// vCPU threads that have not returned.
    alive: usize,
}

/// Shared between the controller and the vCPU threads of one machine instance.
pub struct RunControl {
    fast_mode: AtomicU8,
    state: Mutex<RunState>,
    changed: Condvar,
}

impl RunControl {
    pub fn new(vcpus: usize) -> Self {
        RunControl {
            fast_mode: AtomicU8::new(RunMode::Paused as u8),
            state: Mutex::new(RunState { mode: RunMode::Paused, parked: 0, alive: vcpus }),
            changed: Condvar::new(),
        }
    }

    fn set_mode(&self, mode: RunMode) {
        let mut st = lock(&self.state);
        st.mode = mode;
        self.fast_mode.store(mode as u8, Ordering::SeqCst);
        self.changed.notify_all();
    }

    /// Sets `mode` and kicks the threads until each is parked (or gone), for at most
    /// `SETTLE_LIMIT`; false if some did not get there (a vCPU stuck in a device, or in
    /// KVM).
    pub fn settle(&self, mode: RunMode, threads: &[JoinHandle<()>]) -> bool {
        self.set_mode(mode);
        if mode == RunMode::Running {
            return true;
        }
        let deadline = std::time::Instant::now() + SETTLE_LIMIT;
        let mut st = lock(&self.state);
        while st.parked < st.alive {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            drop(st);
            for t in threads.iter().filter(|t| !t.is_finished()) {
                let _ = t.kill(kick_signal());
            }
            st = lock(&self.state);
            st = self
                .changed
                .wait_timeout(st, Duration::from_millis(2))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Called by a vCPU thread: waits while paused. Returns false when it should exit.
    fn park(&self, stopped_for_good: bool) -> bool {
        let mut st = lock(&self.state);
        st.parked += 1;
        self.changed.notify_all();
        while st.mode == RunMode::Paused || (stopped_for_good && st.mode != RunMode::Exiting) {
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
        st.parked -= 1;
        st.mode != RunMode::Exiting
    }

    fn exited(&self) {
        let mut st = lock(&self.state);
        st.alive -= 1;
        self.changed.notify_all();
    }
}

/// How long the controller waits for the vCPUs to stop (or pause) before giving up on
/// the ones that did not.
pub const SETTLE_LIMIT: Duration = Duration::from_secs(2);

fn kick_signal() -> i32 {
    SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) kick handler once per process, without SA_RESTART so that
/// `KVM_RUN` returns EINTR.
pub fn install_kick_handler() -> std::io::Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        result = register_signal_handler(kick_signal(), on_kick)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()));
    });
    result
}

/// What a vCPU thread needs.
pub struct VcpuContext {
    pub index: u8,
    pub pio: Arc<Bus>,
    pub mmio: Arc<Bus>,
    pub run: Arc<RunControl>,
    pub stopped: StopSink,
    pub stats: Arc<super::stats::MachineStats>,
}

/// The text of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(text), _) => text.to_string(),
        (_, Some(text)) => text.clone(),
        _ => "(no message)".into(),
    }
}

/// A vCPU's fd, shared by its thread (which holds it while in `KVM_RUN` and handling an
/// exit) and the machine, which reads and writes its state while the thread is parked.
pub type SharedVcpu = Arc<Mutex<VcpuFd>>;

pub fn spawn(vcpu: SharedVcpu, ctx: VcpuContext) -> std::io::Result<JoinHandle<()>> {
    let name = format!("vessel-vcpu{}", ctx.index);
    std::thread::Builder::new().name(name.clone()).spawn(move || {
        crate::seccomp::confine_this_thread(crate::seccomp::ThreadKind::Vcpu);
        ctx.stats.register_vcpu_thread(ctx.index);
        // A panic (a bug in a device model, reached from this vCPU) ends this machine with
        // an error naming the thread; it must not leave the controller waiting for a vCPU
        // that is gone, nor take other machines of the process with it.
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run_loop(&vcpu, &ctx);
        }));
        if let Err(panic) = run {
            (ctx.stopped)(VcpuStop::Error(format!(
                "vCPU {} (thread {name}) panicked: {}",
                ctx.index,
                panic_message(panic.as_ref())
            )));
        }
        ctx.run.exited();
    })
}

fn run_loop(vcpu: &Mutex<VcpuFd>, ctx: &VcpuContext) {
    loop {
        if ctx.run.fast_mode.load(Ordering::SeqCst) != RunMode::Running as u8
            && !ctx.run.park(false)
        {
            return;
        }
        // Held for one run and its exit; parked, the thread holds nothing.
        let stop = run_once(&mut lock(vcpu), ctx);
        if let Some(stop) = stop {
            (ctx.stopped)(stop);
            ctx.run.park(true);
            return;
        }
    }
}

/// Performs the port I/O described by a `KVM_EXIT_IO` kvm_run, one access at a time.
fn port_io(run: &mut kvm_bindings::kvm_run, pio: &Bus) {
    if run.exit_reason != kvm_bindings::KVM_EXIT_IO {
        return;
    }
    // SAFETY: exit_reason says the `io` member of the union is the valid one.
    let io = unsafe { run.__bindgen_anon_1.io };
    let size = usize::from(io.size);
    let count = io.count as usize;
    let Some(len) = size.checked_mul(count).filter(|len| *len > 0 && size <= 8) else {
        return;
    };
    // SAFETY: the kernel puts the data `data_offset` bytes into the kvm_run mapping, which
    // kvm-ioctls maps whole (KVM_GET_VCPU_MMAP_SIZE, at least a page past the struct) for as
    // long as the vCPU lives; `size` <= 8 and `count` are bounded by the kernel to fit it.
    let data = unsafe {
        let base = (run as *mut kvm_bindings::kvm_run).cast::<u8>();
        std::slice::from_raw_parts_mut(base.add(io.data_offset as usize), len)
    };
    let port = u64::from(io.port);
    for access in data.chunks_mut(size) {
        if u32::from(io.direction) == kvm_bindings::KVM_EXIT_IO_IN {
            pio.read(port, access);
        } else {
            pio.write(port, access);
        }
    }
}

/// What a KVM internal error means, with where the guest was.
fn internal_error(index: u8, suberror: u32, regs: &VcpuRegisters) -> String {
    let (r, s) = (&regs.regs, &regs.sregs);
    let mode = if s.cr0 & 1 == 0 {
        "real mode"
    } else if s.efer & (1 << 10) != 0 {
        "long mode"
    } else {
        "protected mode"
    };
    let at = format!("{:04x}:{:x} (ring {}, {mode})", s.cs.selector, r.rip, s.cs.dpl);
    let what = match suberror {
        kvm_bindings::KVM_INTERNAL_ERROR_EMULATION => format!(
            "KVM could not emulate an instruction the guest ran at {at}, so the machine \
             stopped. Where KVM emulates the guest's kernel code instead of running it on the \
             CPU (nested virtualization without VT-x/AMD-V, such as PVM), firmware, boot \
             loaders and kernels stop like this; on a computer with VT-x or AMD-V they run"
        ),
        kvm_bindings::KVM_INTERNAL_ERROR_SIMUL_EX => {
            format!("KVM met an exception while delivering another at {at}")
        }
        kvm_bindings::KVM_INTERNAL_ERROR_DELIVERY_EV => {
            format!("KVM could not deliver an interrupt or exception to the guest at {at}")
        }
        other => format!("KVM internal error {other} at {at}"),
    };
    format!("vCPU {index}: {what}\n{regs}")
}

/// Runs the vCPU until the next exit and handles it; `Some` when the vCPU is done.
fn run_once(vcpu: &mut VcpuFd, ctx: &VcpuContext) -> Option<VcpuStop> {
    match vcpu.run() {
        // Port I/O is handled from kvm_run below: string I/O (`rep outsb`, `rep insw`)
        // arrives as one exit of `count` accesses of `size` bytes, and only kvm_run says
        // which `size`.
        Ok(VcpuExit::IoIn(..)) | Ok(VcpuExit::IoOut(..)) => {
            port_io(vcpu.get_kvm_run(), &ctx.pio);
        }
        Ok(VcpuExit::MmioRead(addr, data)) => ctx.mmio.read(addr, data),
        Ok(VcpuExit::MmioWrite(addr, data)) => ctx.mmio.write(addr, data),
        Ok(VcpuExit::Hlt) | Ok(VcpuExit::Intr) | Ok(VcpuExit::IrqWindowOpen) => {}
        Ok(VcpuExit::Shutdown) => {
            return Some(VcpuStop::TripleFault(Box::new(read_registers(vcpu))));
        }
        Ok(VcpuExit::SystemEvent(kind, _)) => {
            return Some(match kind {
                KVM_SYSTEM_EVENT_SHUTDOWN => VcpuStop::PowerOff,
                KVM_SYSTEM_EVENT_RESET => VcpuStop::Reset,
                KVM_SYSTEM_EVENT_CRASH => VcpuStop::TripleFault(Box::new(read_registers(vcpu))),
                other => {
                    VcpuStop::Error(format!("vCPU {}: unknown KVM system event {other}", ctx.index))
                }
            });
        }
        Ok(VcpuExit::FailEntry(reason, cpu)) => {
            return Some(VcpuStop::Error(format!(
                "vCPU {}: KVM could not enter the guest (hardware reason {reason:#x}, cpu {cpu})",
                ctx.index
            )));
        }
        Ok(VcpuExit::InternalError) => {
            let run = vcpu.get_kvm_run();
            // SAFETY: on KVM_EXIT_INTERNAL_ERROR KVM fills the `internal` member of the
            // exit union (Documentation/virt/kvm/api.rst); a u32 has no invalid values.
            let suberror = unsafe { run.__bindgen_anon_1.internal.suberror };
            let regs = read_registers(vcpu);
            return Some(VcpuStop::Error(internal_error(ctx.index, suberror, &regs)));
        }
        Ok(other) => {
            return Some(VcpuStop::Error(format!(
                "vCPU {}: unexpected KVM exit {other:?}",
                ctx.index
            )));
        }
        // A kick (pause, teardown) or a spurious wake-up: the loop re-checks the run mode.
        Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {}
        Err(e) => {
            return Some(VcpuStop::Error(format!("vCPU {}: KVM_RUN failed: {e}", ctx.index)));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_emulation_failure_says_where_and_what_runs_the_guest() {
        let mut regs = VcpuRegisters::default();
        regs.regs.rip = 0x89fc;
        regs.sregs.cs.selector = 0x20;
        regs.sregs.cr0 = 0x11;
        let text = internal_error(0, kvm_bindings::KVM_INTERNAL_ERROR_EMULATION, &regs);
        assert!(text.starts_with("vCPU 0: KVM could not emulate"), "{text}");
        assert!(text.contains("at 0020:89fc (ring 0, protected mode)"), "{text}");
        assert!(text.contains("VT-x or AMD-V"), "{text}");
        assert!(text.contains("RIP=00000000000089fc"), "the registers follow: {text}");
        regs.sregs.cr0 = 0;
        let text = internal_error(1, 3, &regs);
        assert!(text.contains("could not deliver") && text.contains("real mode"), "{text}");
        assert!(internal_error(0, 77, &regs).contains("internal error 77"));
    }
}
