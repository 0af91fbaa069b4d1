//! A thread per virtio device that serves its queue notifications (ioeventfds), its
//! backend fd and its INTx resample fd, so one device's I/O (a 1 MiB disk read) neither
//! runs on a vCPU nor holds up another device or the controller.
//!
//! A device with a poll window (virtio-blk) keeps looking at the queue it just served for
//! that long before sleeping again, as QEMU's iothreads do (`poll-max-ns`): a driver
//! working at queue depth 1 posts its next request a few microseconds after seeing the
//! last one complete, and catching it by polling saves the wake-up of a sleeping thread,
//! which is most of a small request's cost.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use crate::devices::virtio::pci::VirtioPciDevice;
use crate::devices::virtio::{TYPE_BLOCK, TYPE_NET};
use crate::machine::stats::{Activity, MachineStats};
use crate::sync::lock;

/// Event ids of a device's fds: its queues, then these two.
const ID_BACKEND: u64 = 1 << 16;
const ID_INTX_RESAMPLE: u64 = ID_BACKEND + 1;
const ID_EXIT: u64 = ID_BACKEND + 2;

/// A running device thread; `stop` (or dropping it) stops and joins the thread.
pub struct IoThread {
    /// The thread's name and its device's ("vessel-virtio0 (virtio-blk)"), for messages.
    name: String,
    exit: Arc<EventFd>,
    stopping: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

/// Told when a device thread fails (panics): the text names the thread and the device.
pub type FailureSink = Arc<dyn Fn(String) + Send + Sync>;

impl IoThread {
    /// Starts serving `device` on a thread named `name`; a panic in it is caught, ends the
    /// thread, and is reported to `failed`.
    pub fn spawn(
        name: String,
        device: Arc<Mutex<VirtioPciDevice>>,
        stats: Arc<MachineStats>,
        failed: FailureSink,
    ) -> std::io::Result<Self> {
        let exit = Arc::new(EventFd::new(libc::EFD_NONBLOCK)?);
        let stopping = Arc::new(AtomicBool::new(false));
        let epoll = Epoll::new()?;
        watch(&epoll, exit.as_raw_fd(), ID_EXIT, false)?;
        let (poll_window, activity) = {
            let device = lock(&device);
            let activity = match device.device_type() {
                TYPE_BLOCK => Activity::Disk,
                TYPE_NET => Activity::Net,
                _ => Activity::Other,
            };
            for (q, fd) in device.notify_fds().into_iter().enumerate() {
                watch(&epoll, fd, q as u64, false)?;
            }
            if let Some(fd) = device.intx_resample_fd() {
                watch(&epoll, fd, ID_INTX_RESAMPLE, false)?;
            }
            // Backends are watched edge-triggered for input and output: the device reads
            // until the socket is empty or the guest has no room, and writes until it
            // would block, then waits for the next edge or the next queue notification.
            if let Some(fd) = device.backend_fd() {
                watch(&epoll, fd, ID_BACKEND, true)?;
            }
            // On a single host CPU a polling thread would only take time from the vCPU
            // it is waiting for.
            let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
            (if cpus > 1 { device.poll_window() } else { Duration::ZERO }, activity)
        };
        let kind = crate::devices::virtio::type_name(lock(&device).device_type());
        let worker =
            Worker { device, epoll, stopping: stopping.clone(), poll_window, stats, activity };
        let (thread, device_kind) = (name.clone(), kind.clone());
        let handle = std::thread::Builder::new().name(name.clone()).spawn(move || {
            crate::seccomp::confine_this_thread(crate::seccomp::ThreadKind::DeviceIo);
            let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| worker.run()));
            if let Err(panic) = run {
                let why = super::vcpu::panic_message(panic.as_ref());
                failed(format!("the {device_kind} device's thread ({thread}) panicked: {why}"));
            }
        })?;
        Ok(IoThread { name: format!("{name} ({kind})"), exit, stopping, handle: Some(handle) })
    }

    /// Asks the thread to stop (it finishes the request it is serving first).
    pub fn ask_to_stop(&self) {
        self.stopping.store(true, Ordering::SeqCst);
        let _ = self.exit.write(1);
    }

    /// Stops the thread and joins it, waiting until `deadline`; a thread still busy then
    /// (a device stuck in a blocking call) is left to finish on its own, and its name is
    /// returned. What it holds (the device, guest memory) is freed when it exits.
    pub fn stop(mut self, deadline: Instant) -> Result<(), String> {
        self.stop_by(deadline)
    }

    fn stop_by(&mut self, deadline: Instant) -> Result<(), String> {
        self.ask_to_stop();
        let Some(handle) = self.handle.take() else { return Ok(()) };
        while !handle.is_finished() {
            if Instant::now() >= deadline {
                return Err(self.name.clone());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        let _ = handle.join();
        Ok(())
    }
}

impl Drop for IoThread {
    fn drop(&mut self) {
        let _ = self.stop_by(Instant::now() + super::vcpu::SETTLE_LIMIT);
    }
}

fn watch(epoll: &Epoll, fd: RawFd, id: u64, edge: bool) -> std::io::Result<()> {
    let events =
        if edge { EventSet::IN | EventSet::OUT | EventSet::EDGE_TRIGGERED } else { EventSet::IN };
    epoll.ctl(ControlOperation::Add, fd, EpollEvent::new(events, id))
}

struct Worker {
    device: Arc<Mutex<VirtioPciDevice>>,
    epoll: Epoll,
    stopping: Arc<AtomicBool>,
    poll_window: Duration,
    stats: Arc<MachineStats>,
    activity: Activity,
}

impl Worker {
    fn run(self) {
        let mut ready = vec![EpollEvent::default(); 16];
        while !self.stopping.load(Ordering::Relaxed) {
            let n = match self.epoll.wait(-1, &mut ready) {
                Ok(n) => n,
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => {
                    log::error!("virtio device thread: epoll: {e}; the device stops");
                    return;
                }
            };
            self.stats.count(self.activity);
            let mut served = None;
            for event in &ready[..n] {
                match event.data() {
                    ID_EXIT => return,
                    ID_BACKEND => lock(&self.device).process_backend(),
                    ID_INTX_RESAMPLE => lock(&self.device).intx_resample(),
                    queue => {
                        let queue = queue as usize;
                        lock(&self.device).process_queue(queue);
                        served = Some(queue);
                    }
                }
            }
            if let Some(queue) = served {
                self.poll(queue);
            }
        }
    }

    /// Watches `queue` for new buffers for the poll window after its last work, serving
    /// what arrives. The device lock is taken only for each look, so the vCPUs can reach
    /// the device's registers meanwhile.
    fn poll(&self, queue: usize) {
        if self.poll_window.is_zero() {
            return;
        }
        let mut deadline = Instant::now() + self.poll_window;
        while Instant::now() < deadline && !self.stopping.load(Ordering::Relaxed) {
            let mut device = lock(&self.device);
            if device.queue_pending(queue) {
                let before = device.next_avail(queue);
                device.process_queue(queue);
                if device.next_avail(queue) == before {
                    // Buffers the device cannot take (a broken ring): stop looking rather
                    // than spin on them; the next notification brings the thread back.
                    return;
                }
                deadline = Instant::now() + self.poll_window;
            }
            drop(device);
            std::hint::spin_loop();
        }
    }
}
