//! The control socket's protocol between a VM process and its clients (the window, the
//! CLI): frames of a 4-byte little-endian length and a JSON message, at most `MAX_FRAME`
//! bytes, so that neither side allocates what the other claims. A connection opens with a
//! `Hello` each way; a peer of another protocol version is refused with an error that
//! names both versions and what to do.

use std::io::{Read, Write};

use serde::{Deserialize, Serialize};

/// The protocol's version: bumped whenever a message changes meaning.
pub const PROTOCOL_VERSION: u32 = 4;

/// The largest frame either side sends or accepts (a serial chunk, a path, a status).
pub const MAX_FRAME: usize = 1 << 20;

/// The file descriptor a VM process finds its starter's connection on.
pub const CONTROL_FD: i32 = 3;

/// The file descriptor a VM process started to receive its VM by live migration
/// (`vessel-vm --incoming`) finds the sender's connection on.
pub const MIGRATION_FD: i32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    #[error("the control socket failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the control socket closed in the middle of a message")]
    Truncated,
    #[error("a control message of {0} bytes is larger than the {max} bytes allowed", max = MAX_FRAME)]
    TooLarge(usize),
    #[error("a control message is malformed: {0}")]
    Malformed(#[source] serde_json::Error),
    #[error(
        "the VM process speaks control protocol {theirs} (Vessel {their_vessel}), this Vessel \
         {ours}; stop the VM with the Vessel that started it, or run that Vessel's window"
    )]
    Version { theirs: u32, their_vessel: String, ours: u32 },
}

/// The first message each side sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub protocol: u32,
    /// The sender's Vessel version, for the error a mismatch gives.
    pub vessel: String,
    /// The VM process's: the folder of the VM it runs (a client checks it reached the VM it
    /// meant to). None from clients.
    pub bundle: Option<std::path::PathBuf>,
}

impl Hello {
    pub fn ours(bundle: Option<std::path::PathBuf>) -> Self {
        Hello { protocol: PROTOCOL_VERSION, vessel: env!("CARGO_PKG_VERSION").to_string(), bundle }
    }
}

/// What a client asks of the VM process. Control requests get an answer (`Done`,
/// `Failed`, `Status`); input and `Resize` get none, so a window can stream them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// Events from now on: state changes and warnings, and the serial output (with what
    /// the guest wrote lately first) and the display's frames if asked.
    Subscribe {
        serial: bool,
        display: bool,
        /// The guest's debug-port (0xE9) bytes too, timed (benchmarks, `--debugcon`).
        #[serde(default)]
        debug: bool,
    },
    Status,
    /// The ACPI power button.
    Shutdown,
    PowerOff,
    Reset,
    Pause,
    Resume,
    InsertCd {
        iso: std::path::PathBuf,
    },
    EjectCd {
        force: bool,
    },
    /// A key by its Linux evdev code.
    Key {
        code: u16,
        down: bool,
    },
    /// Every key held down comes up (the window lost focus).
    ReleaseKeys,
    /// The tablet to (x, y) in display pixels.
    PointerAbs {
        x: f64,
        y: f64,
    },
    PointerRel {
        dx: i32,
        dy: i32,
    },
    /// A pointer button by its evdev code (`vmm::Button::code`: BTN_LEFT...).
    Button {
        code: u16,
        down: bool,
    },
    Wheel {
        dx: i32,
        dy: i32,
    },
    /// The window asks for a display of this size.
    Resize {
        width: u32,
        height: u32,
    },
    SerialInput {
        bytes: Vec<u8>,
    },
    /// Saves the machine's whole state and memory into its folder and ends the VM
    /// process; the next start goes on from there.
    Suspend,
    /// Moves the running VM by live migration over the connection that comes with this
    /// message (a stream socket the client connected to the receiving Vessel). Answered
    /// `Migrated` (the VM process then ends) or `Failed` (the VM runs on here); its
    /// subscribers hear `Migrating` meanwhile.
    Migrate {
        /// The pause the guest may have, at most, when it is not changing its memory
        /// faster than the link carries it.
        downtime_ms: u64,
        /// Most passes over memory while the guest runs.
        max_passes: u32,
        /// At the pass limit: cancel (true) or complete with the pause it takes (false).
        cancel_at_limit: bool,
        /// The writable disks go too (the receiver has no shared storage).
        #[serde(default)]
        copy_disks: bool,
    },
    /// Cancels the migration under way; the VM runs on here.
    CancelMigration,
    /// Freezes the VM's disks where they are (a snapshot's or a backup's point): the guest
    /// pauses, its configuration names these qcow2 overlays (one per disk, in its order,
    /// relative to the VM's folder; the client made them over the disks' images), the
    /// machine goes on writing them, and the guest runs again. The images before are only
    /// read from then on. On failure the VM runs on its images as before.
    FreezeDisks {
        overlays: Vec<std::path::PathBuf>,
    },
}

impl Request {
    /// How long its answer may take: a suspend writes all of guest memory first.
    pub fn answer_within(&self) -> std::time::Duration {
        let seconds = match self {
            Request::Suspend => 600,
            Request::Migrate { .. } => 3600,
            // Flushing the disks may take a while; an answer given up on would leave the
            // client not knowing which images the VM writes.
            Request::FreezeDisks { .. } => 120,
            _ => 10,
        };
        std::time::Duration::from_secs(seconds)
    }
}

/// How a VM stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum StopKind {
    /// The guest powered off.
    PoweredOff,
    /// A client powered it off (`vessel stop --force`, the window's Power Off).
    ForcedOff,
    /// The guest rebooted and the VM was set to stop then.
    Rebooted,
    /// The guest crashed (a triple fault).
    Crashed,
    /// The machine could not start or could not go on.
    Failed,
    /// Its state was saved (`Request::Suspend`): the next start resumes it.
    Suspended,
    /// It moved to another Vessel by live migration, and runs there.
    Migrated,
}

/// The VM's state as clients see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum VmState {
    /// Its machine is being built (reading the disc, opening disks).
    Starting,
    Running,
    Paused,
    /// Stopped, how, and why for people (a crash's registers, an error's text).
    Stopped {
        kind: StopKind,
        reason: Option<String>,
    },
}

/// What the machine is, once built.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineInfo {
    pub vcpus: u32,
    pub memory_mib: u64,
    /// It boots through firmware (whose text shows on the serial console).
    pub firmware: bool,
    /// The VM process's pid.
    pub pid: u32,
}

/// How the frame lies in the memory passed with a `Frame` (`vmm::display::FrameLayout`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    pub width: u32,
    pub height: u32,
    pub stride: usize,
    pub offset: usize,
    /// `vmm::display::PixelFormat`'s name.
    pub format: String,
}

impl Layout {
    /// The frame layout this describes, if it is one (a known pixel format, at most
    /// `MAX_SCANOUT` on a side as every display of a machine is, a size whose bytes can be
    /// counted). A VM process that says more is not believed: its window or `vessel
    /// screenshot` would make a picture that size.
    pub fn frame_layout(&self) -> Option<vmm::display::FrameLayout> {
        use vmm::devices::virtio::gpu::MAX_SCANOUT;
        use vmm::display::PixelFormat;
        if self.width > MAX_SCANOUT || self.height > MAX_SCANOUT {
            return None;
        }
        let format = [
            PixelFormat::Bgrx,
            PixelFormat::Bgra,
            PixelFormat::Rgbx,
            PixelFormat::Rgba,
            PixelFormat::Xrgb,
            PixelFormat::Argb,
            PixelFormat::Xbgr,
            PixelFormat::Abgr,
        ]
        .into_iter()
        .find(|f| format!("{f:?}") == self.format)?;
        let layout = vmm::display::FrameLayout {
            width: self.width,
            height: self.height,
            stride: self.stride,
            offset: self.offset,
            format,
        };
        layout.bytes_needed().map(|_| layout)
    }
}

/// The VM's resource use, counters as `vmm::Usage` has them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub vcpu_time_ns: u64,
    pub memory_resident: u64,
    pub disk_activity: u64,
    pub net_activity: u64,
    /// The VM process's resident memory beyond guest RAM (its overhead): its own (heap,
    /// stacks, frames) and what it maps of the vessel binary and its libraries.
    pub process_overhead: u64,
    /// Of `process_overhead`, the pages mapped from files (code, read-only data): one copy
    /// in the page cache serves every VM process and the window.
    #[serde(default)]
    pub process_shared: u64,
}

/// What the VM process answers or tells.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    Done,
    /// The request could not be carried out, and why.
    Failed {
        error: String,
    },
    Status {
        state: VmState,
        machine: Option<MachineInfo>,
    },
    // --- events, to subscribers ---
    /// The state changed; the last event before the VM process ends is `Stopped`.
    StateChanged {
        state: VmState,
    },
    /// The machine is built.
    Built {
        machine: MachineInfo,
    },
    /// The guest wrote to its serial port.
    Serial {
        bytes: Vec<u8>,
    },
    /// Something the user should know (no network card, ...).
    Warning {
        text: String,
    },
    /// A disc is in the CD drive.
    CdInserted {
        iso: std::path::PathBuf,
    },
    /// Once a second.
    Usage(Usage),
    /// Its state is being saved (a suspend, a snapshot): bytes of guest memory written, of
    /// all.
    Saving {
        done: u64,
        total: u64,
    },
    /// How far a live migration is (`vmm::migration::Progress`).
    Migrating {
        /// "copying", "stopping" or "handing over".
        phase: String,
        pass: u32,
        sent: u64,
        remaining: u64,
        dirty_rate: u64,
        bandwidth: u64,
        downtime_estimate_ms: u64,
    },
    /// The answer to `FreezeDisks`: the VM runs on its overlays; how long the guest was
    /// paused for it.
    Frozen {
        paused_us: u64,
    },
    /// The answer to `Migrate`: the VM runs on the receiver.
    Migrated {
        passes: u32,
        memory_bytes: u64,
        /// Bytes of disk data sent (the disks were copied).
        #[serde(default)]
        disk_bytes: u64,
        total_ms: u64,
        downtime_ms: u64,
        /// Whether the pause target was met (else the pass limit was hit).
        converged: bool,
    },
    /// The frame shown: a new one (its memory, a sealed memfd, comes with this message)
    /// when `new_memory`, else what changed in the last one. `damage` None: all of it.
    Frame {
        layout: Layout,
        new_memory: bool,
        damage: Option<Vec<(u32, u32, u32, u32)>>,
        drawn: bool,
    },
    /// The guest shows nothing.
    NoFrame,
    /// The pointer's shape (None: hidden): RGBA rows.
    CursorImage {
        image: Option<(u32, u32, u32, u32, Vec<u8>)>,
    },
    CursorMoved {
        x: i32,
        y: i32,
    },
    /// Whether the guest follows an absolute pointer (`vmm::InputSink::pointer_is_absolute`).
    Pointer {
        absolute: bool,
    },
    /// The guest wrote `code` to its debug port at `monotonic_ns` (CLOCK_MONOTONIC, the
    /// same clock in every process of this host).
    DebugMarker {
        code: u8,
        monotonic_ns: u64,
    },
}

/// `message` as one frame: its length, then its JSON.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, ProtocolError> {
    let body = serde_json::to_vec(message).map_err(ProtocolError::Malformed)?;
    if body.len() > MAX_FRAME {
        return Err(ProtocolError::TooLarge(body.len()));
    }
    let mut frame = Vec::with_capacity(4 + body.len());
    frame.extend_from_slice(&(body.len() as u32).to_le_bytes());
    frame.extend_from_slice(&body);
    Ok(frame)
}

/// CLOCK_MONOTONIC now, in nanoseconds: comparable between processes of one host.
pub fn monotonic_ns() -> u64 {
    // SAFETY: clock_gettime writes a timespec we own.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: as above; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Writes `message` as one frame.
pub fn send<T: Serialize>(w: &mut impl Write, message: &T) -> Result<(), ProtocolError> {
    w.write_all(&encode(message)?)?;
    Ok(())
}

/// Reads one frame's message; None at a clean end of the stream (between frames).
pub fn receive<T: for<'de> Deserialize<'de>>(
    r: &mut impl Read,
) -> Result<Option<T>, ProtocolError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < len.len() {
        match r.read(&mut len[got..])? {
            0 if got == 0 => return Ok(None),
            0 => return Err(ProtocolError::Truncated),
            n => got += n,
        }
    }
    let len = u32::from_le_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(ProtocolError::TooLarge(len));
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => ProtocolError::Truncated,
        _ => ProtocolError::Io(e),
    })?;
    serde_json::from_slice(&body).map(Some).map_err(ProtocolError::Malformed)
}

/// Sends our `Hello` and checks the peer's: both sides do this first.
pub fn handshake(stream: &mut (impl Read + Write), ours: Hello) -> Result<Hello, ProtocolError> {
    // A peer that already said all it had to (a VM process that failed to start) may have
    // hung up: what it sent is still there to read, and says more than our write's error.
    let sent = send(stream, &ours);
    let theirs: Hello = match receive(stream) {
        Ok(Some(theirs)) => theirs,
        Ok(None) | Err(ProtocolError::Truncated) => {
            return Err(sent.err().unwrap_or(ProtocolError::Truncated));
        }
        Err(e) => return Err(e),
    };
    if theirs.protocol != PROTOCOL_VERSION {
        return Err(ProtocolError::Version {
            theirs: theirs.protocol,
            their_vessel: theirs.vessel,
            ours: PROTOCOL_VERSION,
        });
    }
    Ok(theirs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    #[test]
    fn messages_cross_a_socket() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let peer = std::thread::spawn(move || {
            handshake(&mut b, Hello::ours(None)).unwrap();
            let request: Request = receive(&mut b).unwrap().unwrap();
            assert_eq!(request, Request::Key { code: 30, down: true });
            send(&mut b, &Reply::StateChanged { state: VmState::Running }).unwrap();
            let request: Option<Request> = receive(&mut b).unwrap();
            let left = vmm::Button::Left.code();
            assert_eq!(request, Some(Request::Button { code: left, down: false }));
            assert_eq!(vmm::Button::from_code(left), Some(vmm::Button::Left));
            assert!(receive::<Request>(&mut b).unwrap().is_none(), "a clean end");
        });
        assert_eq!(handshake(&mut a, Hello::ours(None)).unwrap(), Hello::ours(None));
        send(&mut a, &Request::Key { code: 30, down: true }).unwrap();
        let reply: Reply = receive(&mut a).unwrap().unwrap();
        assert_eq!(reply, Reply::StateChanged { state: VmState::Running });
        send(&mut a, &Request::Button { code: vmm::Button::Left.code(), down: false }).unwrap();
        drop(a);
        peer.join().unwrap();
    }

    #[test]
    fn a_peer_of_another_version_is_refused_by_name() {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        let old = Hello { protocol: 0, vessel: "0.0.9".into(), bundle: None };
        send(&mut b, &old).unwrap();
        let error = handshake(&mut a, Hello::ours(None)).unwrap_err();
        let text = error.to_string();
        assert!(text.contains("protocol 0 (Vessel 0.0.9)"), "{text}");
        assert!(text.contains(&format!("this Vessel {PROTOCOL_VERSION}")), "{text}");
    }

    #[test]
    fn a_frame_layout_is_believed_only_within_a_machine_s_displays() {
        let layout = |width, height, format: &str| Layout {
            width,
            height,
            stride: width as usize * 4,
            offset: 0,
            format: format.into(),
        };
        let fits = layout(8192, 8192, "Bgrx").frame_layout().expect("the largest display");
        assert_eq!((fits.width, fits.height), (8192, 8192));
        assert!(layout(1920, 1080, "Xrgb").frame_layout().is_some());
        assert!(layout(16384, 16384, "Bgrx").frame_layout().is_none(), "wider than any display");
        assert!(layout(1024, 8193, "Bgrx").frame_layout().is_none(), "taller");
        assert!(layout(640, 480, "Yuv").frame_layout().is_none(), "an unknown format");
    }

    #[test]
    fn hostile_frames_are_refused_without_allocating_them() {
        // A length past the limit: refused before any body is read.
        let mut huge = &u32::MAX.to_le_bytes()[..];
        assert!(matches!(receive::<Request>(&mut huge), Err(ProtocolError::TooLarge(_))));
        // A body shorter than its length, and a length cut short.
        let mut short: &[u8] = &[10, 0, 0, 0, b'{'];
        assert!(matches!(receive::<Request>(&mut short), Err(ProtocolError::Truncated)));
        let mut cut: &[u8] = &[10, 0];
        assert!(matches!(receive::<Request>(&mut cut), Err(ProtocolError::Truncated)));
        // Not a message.
        let mut junk: &[u8] = &[3, 0, 0, 0, b'x', b'y', b'z'];
        assert!(matches!(receive::<Request>(&mut junk), Err(ProtocolError::Malformed(_))));
        // Nothing at all: the peer hung up between frames.
        let mut empty: &[u8] = &[];
        assert!(receive::<Request>(&mut empty).unwrap().is_none());
    }
}
