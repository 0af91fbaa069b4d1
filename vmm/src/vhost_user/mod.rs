//! Vessel's virtio device models served as vhost-user backends (vhost-user-backend crate),
//! so a hypervisor that speaks vhost-user — QEMU — can put them in front of a real guest
//! driver. On hosts whose KVM cannot run a stock Linux kernel this is how the models meet
//! the real Linux drivers (DESIGN.md §3); it is also a way to share a Vessel device with
//! other VMMs.

pub mod relay;

use std::io::ErrorKind;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::Path;
use std::sync::Mutex;

use vhost::vhost_user::Listener;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    EventConsumer, EventFlag, EventNotifier, new_event_consumer_and_notifier,
};

use crate::devices::virtio::{
    CONFIG_CHANGED, MAX_QUEUES, VIRTIO_F_RING_EVENT_IDX, VIRTIO_F_RING_INDIRECT_DESC,
    VIRTIO_F_VERSION_1, VirtioDevice, serve_again, serve_queue, wants_interrupt,
};
use crate::sync::lock;

/// VHOST_USER_F_PROTOCOL_FEATURES (vhost-user spec): offered so the frontend negotiates
/// protocol features such as CONFIG.
const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;

type Memory = GuestMemoryAtomic<crate::vstate::memory::GuestMem>;

#[derive(Debug, thiserror::Error)]
pub enum VhostUserError {
    #[error("cannot start the vhost-user daemon: {0}")]
    Daemon(String),
    #[error("the vhost-user connection failed: {0}")]
    Serve(String),
    #[error("cannot listen on the vhost-user socket")]
    Listen(#[source] std::io::Error),
}

/// One device model behind the vhost-user protocol.
pub struct Backend {
    // A Mutex only to make the backend Sync, as vhost-user-backend requires.
    device: Mutex<Box<dyn VirtioDevice>>,
    memory: Option<Memory>,
    event_idx: bool,
    /// Tells the library's worker thread to stop when the frontend leaves; without it the
    /// daemon could never be dropped.
    exit: (EventConsumer, EventNotifier),
    /// Tells the frontend when the device's configuration changed.
    config_notifier: relay::ConfigNotifier,
}

impl Backend {
    pub fn new(device: Box<dyn VirtioDevice>) -> std::io::Result<Self> {
        let exit = new_event_consumer_and_notifier(EventFlag::NONBLOCK)?;
        Ok(Backend {
            device: Mutex::new(device),
            memory: None,
            event_idx: false,
            exit,
            config_notifier: relay::ConfigNotifier::default(),
        })
    }
}

impl VhostUserBackendMut for Backend {
    type Bitmap = crate::vstate::written::WrittenPages;
    type Vring = VringRwLock<Memory>;

    fn num_queues(&self) -> usize {
        lock(&self.device).queue_max_sizes().len()
    }

    fn max_queue_size(&self) -> usize {
        lock(&self.device).queue_max_sizes().iter().copied().max().unwrap_or(256).into()
    }

    fn features(&self) -> u64 {
        lock(&self.device).features()
            | VIRTIO_F_VERSION_1
            | VIRTIO_F_RING_EVENT_IDX
            | VIRTIO_F_RING_INDIRECT_DESC
            | VHOST_USER_F_PROTOCOL_FEATURES
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        // BACKEND_REQ: the frontend hands over a channel for CONFIG_CHANGE_MSG.
        VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::BACKEND_REQ
    }

    fn set_event_idx(&mut self, enabled: bool) {
        self.event_idx = enabled;
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let mut data = vec![0u8; size.min(4096) as usize];
        lock(&self.device).read_config(u64::from(offset), &mut data);
        data
    }

    fn set_config(&mut self, offset: u32, buf: &[u8]) -> std::io::Result<()> {
        lock(&self.device).write_config(u64::from(offset), buf);
        Ok(())
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        Some((self.exit.0.try_clone().ok()?, self.exit.1.try_clone().ok()?))
    }

    fn update_memory(&mut self, memory: Memory) -> std::io::Result<()> {
        self.memory = Some(memory);
        Ok(())
    }

    fn handle_event(
        &mut self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[Self::Vring],
        _thread_id: usize,
    ) -> std::io::Result<()> {
        let Some(memory) = &self.memory else { return Ok(()) };
        let mem = memory.memory();
        let count = vrings.len();
        // The device models work on all their queues at once (virtio-net receives while
        // serving a transmit notification): lock every vring, work on copies of the queue
        // states, put them back.
        let mut guards: Vec<_> = vrings.iter().map(|v| v.get_mut()).collect();
        let mut queues: Vec<Queue> =
            guards.iter_mut().map(|g| std::mem::take(g.get_queue_mut())).collect();
        for q in &mut queues {
            q.set_event_idx(self.event_idx);
        }
        let mut device = lock(&self.device);
        // This thread serves only this device, so it keeps going while the driver keeps
        // adding buffers (the in-VMM transport yields to its event loop instead).
        let serve = |index: usize, queues: &mut [Queue], device: &mut dyn VirtioDevice| {
            let mut used = 0;
            loop {
                let (round, more) =
                    serve_queue(queues, index, &mem, |qs| device.process_queue(index, qs, &mem));
                used |= round;
                if !more {
                    return used;
                }
            }
        };
        let index = usize::from(device_event);
        let used = if index < count {
            serve(index, &mut queues, &mut **device)
        } else if index == count + BACKEND_EVENT_OFFSET {
            let result = device.process_backend(&mut queues, &mem);
            let mut used = result;
            for again in (0..count.min(MAX_QUEUES)).filter(|&i| result & serve_again(i) != 0) {
                used |= serve(again, &mut queues, &mut **device);
            }
            used
        } else {
            0
        };
        drop(device);
        if used & CONFIG_CHANGED != 0 && !self.config_notifier.config_changed() {
            log::warn!("the device configuration changed, but the frontend cannot be told");
        }
        let mut notify = Vec::new();
        for (i, (guard, mut queue)) in guards.iter_mut().zip(queues).enumerate() {
            let wants = used & (1 << i) != 0 && wants_interrupt(&mut queue, &*mem);
            *guard.get_queue_mut() = queue;
            notify.push(wants);
        }
        drop(guards);
        for (vring, wants) in vrings.iter().zip(notify) {
            if wants {
                vring.signal_used_queue()?;
            }
        }
        Ok(())
    }
}

/// The backend fd's event id is past the queues and the library's own exit event.
const BACKEND_EVENT_OFFSET: usize = 1;

/// Serves `device` on a vhost-user socket at `socket` until the frontend disconnects.
pub fn serve(device: Box<dyn VirtioDevice>, socket: &Path) -> Result<(), VhostUserError> {
    let backend = Backend::new(device).map_err(|e| VhostUserError::Daemon(e.to_string()))?;
    let backend_fd = lock(&backend.device).backend_fd();
    let queues = lock(&backend.device).queue_max_sizes().len();
    let exit = backend.exit.1.try_clone().map_err(|e| VhostUserError::Daemon(e.to_string()))?;
    let config_notifier = backend.config_notifier.clone();
    let backend = std::sync::Arc::new(Mutex::new(backend));
    let mut daemon = VhostUserDaemon::new(
        "vessel".into(),
        backend,
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .map_err(|e| VhostUserError::Daemon(format!("{e:?}")))?;
    if let Some(fd) = backend_fd {
        // The device's own host fd (passt's socket, an image watch), edge-triggered as in
        // the VMM's event loop.
        let events = EventSet::IN | EventSet::OUT | EventSet::EDGE_TRIGGERED;
        for handler in daemon.get_epoll_handlers() {
            handler
                .register_listener(fd, events, (queues + BACKEND_EVENT_OFFSET) as u64)
                .map_err(|e| VhostUserError::Daemon(e.to_string()))?;
        }
    }

    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).map_err(VhostUserError::Listen)?;
    let accepted = listener.accept();
    let _ = std::fs::remove_file(socket);
    let (frontend, _) = accepted.map_err(VhostUserError::Listen)?;

    // The library's end of the connection: a private abstract socket only the relay uses.
    let (to_library, mut library_listener) =
        private_connection().map_err(|e| VhostUserError::Daemon(e.to_string()))?;
    daemon.start(&mut library_listener).map_err(|e| VhostUserError::Daemon(format!("{e:?}")))?;
    let relayed = relay::run(frontend, to_library, &config_notifier);
    let served = daemon.wait();
    // Stops the library's worker thread, which watches this event.
    let _ = exit.notify();
    match served {
        Ok(())
        | Err(vhost_user_backend::Error::HandleRequest(
            vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
        )) => {}
        Err(e) => return Err(VhostUserError::Serve(format!("{e:?}"))),
    }
    match relayed {
        Err(e)
            if !matches!(
                e.kind(),
                ErrorKind::UnexpectedEof | ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
            ) =>
        {
            Err(VhostUserError::Serve(e.to_string()))
        }
        _ => Ok(()),
    }
}

/// A connected pair through a listening socket in the abstract namespace (no file), for
/// the library, which only takes connections from a listener.
fn private_connection() -> std::io::Result<(UnixStream, Listener)> {
    use std::os::linux::net::SocketAddrExt;
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = format!(
        "vessel-vhost-user-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
    let listener = UnixListener::bind_addr(&addr)?;
    // Queued in the backlog until the library accepts it.
    let stream = UnixStream::connect_addr(&addr)?;
    Ok((stream, Listener::from(listener)))
}
