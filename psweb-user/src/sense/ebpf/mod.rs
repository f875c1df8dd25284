//! Kernel evidence: loads psweb's eBPF object (aya), keeps the watched-PID and
//! watched-port maps, and forwards ring-buffer events to the agent.
//!
//! Owned by the kernel-evidence work (issue 3); this is the interface the agent uses.
//!
//! The programs (`psweb-ebpf/src/main.rs`) carry no kernel offsets: [`KernelEvidence::load`]
//! reads them from the kernel's BTF (`/sys/kernel/btf/vmlinux`) and from the tracepoints'
//! `format` files, and writes them into the programs' read-only data before loading.
//! A hook the running kernel lacks is skipped and reported in [`LoadReport`].
//!
//! Events come through a ring buffer (`psweb.bpf.o`), or, on kernels without
//! BPF_MAP_TYPE_RINGBUF, through a perf event array (`psweb-perf.bpf.o`, the same
//! programs built with the `perf-array` feature; read in [`perf`]):
//! [`Transport`] is chosen at load by probing the kernel, or forced.

use std::collections::HashMap as StdHashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aya::maps::{HashMap as BpfHashMap, MapData, MapError, MapType, PerfEventArray, RingBuf};
use aya::programs::{KProbe, ProgramError, TracePoint};
use aya::{Ebpf, EbpfLoader, Pod};
use psweb_ebpf::{
    Config, Event, EVENT_EXIT, EVENT_OVERFLOW_FINAL_ACK, EVENT_OVERFLOW_SYN, GLOBAL_CONFIG,
    MAP_EVENTS, MAP_WATCHED_PIDS, MAP_WATCHED_PORTS, NO_FIELD, PROG_EXIT, PROG_KFREE_SKB,
    PROG_SK_DATA_READY,
};
use tokio::io::unix::AsyncFd;

mod perf;

/// Evidence kinds named in [`LoadReport::hooks`] and [`LoadReport::unavailable`].
pub const EVIDENCE_EXIT: &str = "process exit";
pub const EVIDENCE_OVERFLOW_FINAL_ACK: &str = "accept-queue overflow (final ACK)";
pub const EVIDENCE_OVERFLOW_SYN: &str = "accept-queue overflow (SYN)";

/// File name of the perf-event-array object, beside the ring-buffer one.
pub const PERF_OBJECT_NAME: &str = "psweb-perf.bpf.o";

/// How the kernel program's events reach userspace.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// BPF_MAP_TYPE_RINGBUF (Linux 5.8+): one buffer shared by all CPUs.
    #[default]
    RingBuffer,
    /// BPF_MAP_TYPE_PERF_EVENT_ARRAY: one perf buffer per CPU (any eBPF kernel).
    PerfArray,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::RingBuffer => "ring buffer",
            Transport::PerfArray => "perf array",
        }
    }
}

/// Which transport to load: `Auto` uses the ring buffer where the kernel has it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TransportChoice {
    #[default]
    Auto,
    RingBuffer,
    PerfArray,
}

impl std::str::FromStr for TransportChoice {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(TransportChoice::Auto),
            "ring-buffer" | "ringbuf" => Ok(TransportChoice::RingBuffer),
            "perf-array" | "perf" => Ok(TransportChoice::PerfArray),
            other => Err(format!(
                "unknown eBPF transport {other:?} (auto, ring-buffer or perf-array)"
            )),
        }
    }
}

/// The transport for `choice` on a kernel that has (or lacks) the ring buffer.
pub fn pick_transport(choice: TransportChoice, kernel_has_ringbuf: bool) -> Transport {
    match choice {
        TransportChoice::RingBuffer => Transport::RingBuffer,
        TransportChoice::PerfArray => Transport::PerfArray,
        TransportChoice::Auto if kernel_has_ringbuf => Transport::RingBuffer,
        TransportChoice::Auto => Transport::PerfArray,
    }
}

/// Whether the running kernel can create a BPF_MAP_TYPE_RINGBUF. A probe that fails
/// unexpectedly counts as "yes": loading the ring-buffer object then says why it fails.
pub fn kernel_has_ringbuf() -> bool {
    match aya::sys::is_map_supported(MapType::RingBuf) {
        Ok(yes) => yes,
        Err(e) => {
            log::debug!("probing for BPF_MAP_TYPE_RINGBUF failed: {e}");
            true
        }
    }
}

/// Whether the kernel publishes its BTF (`/sys/kernel/btf/vmlinux`), which the loader
/// needs to find structure offsets.
pub fn btf_present() -> bool {
    Path::new(VMLINUX_BTF).exists()
}

/// The object for `transport`, given the ring-buffer object's path: the perf one is
/// its sibling [`PERF_OBJECT_NAME`].
pub fn object_for(ring_object: &Path, transport: Transport) -> PathBuf {
    match transport {
        Transport::RingBuffer => ring_object.to_path_buf(),
        Transport::PerfArray => ring_object.with_file_name(PERF_OBJECT_NAME),
    }
}

/// How a watched listener's accept queue was seen to overflow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPath {
    /// kfree_skb with reason TCP_LISTEN_OVERFLOW (the final ACK of a handshake dropped).
    FinalAck,
    /// The queue was full where the kernel queues a connection: later SYNs are dropped.
    Syn,
}

/// One piece of evidence from the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KernelEvent {
    /// A watched thread group exited. `exit_code` as in `task_struct.exit_code`:
    /// `(status << 8) | signal` (0x80 set if a core was dumped).
    Exit {
        tgid: u32,
        exit_code: u32,
        ktime_ns: u64,
    },
    /// A watched port's accept queue overflowed. `backlog`/`max_backlog` are the queue
    /// depth and limit the kernel saw; on the FinalAck path they come from kfree_skb's
    /// `rx_sk` (kernel 6.12+) and are both 0 on kernels without it.
    Overflow {
        port: u16,
        path: OverflowPath,
        backlog: u32,
        max_backlog: u32,
        ktime_ns: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum EbpfError {
    /// The object could not be loaded or attached (the message says why and what to do).
    #[error("{0}")]
    Load(String),
    /// Updating a watched-PID / watched-port map failed.
    #[error("{0}")]
    Map(String),
    /// The ring-buffer reader could not be started.
    #[error("{0}")]
    Reader(String),
}

/// What the loader attached, and how long it took.
#[derive(Clone, Debug, Default)]
pub struct LoadReport {
    /// From the start of [`KernelEvidence::load`] to the last attach: BTF and format
    /// lookups, reading the object, verifying, loading and attaching.
    pub load_attach: Duration,
    /// (evidence kind, hook that serves it), e.g. ("process exit", "tracepoint sched/sched_process_exit").
    /// A kind the kernel cannot serve appears with a hook starting with "none:".
    pub hooks: Vec<(String, String)>,
    /// (evidence kind, why it is missing and what replaces it) for every skipped hook.
    pub unavailable: Vec<(String, String)>,
    /// How the events reach userspace.
    pub transport: Transport,
}

impl LoadReport {
    /// True if the kernel program serves `kind` (one of the `EVIDENCE_*` names).
    pub fn serves(&self, kind: &str) -> bool {
        !self.unavailable.iter().any(|(k, _)| k == kind)
            && self.hooks.iter().any(|(k, _)| k == kind)
    }
}

/// The loaded programs and their maps. Dropping it detaches everything and stops the
/// reader task.
pub struct KernelEvidence {
    pids: BpfHashMap<MapData, u32, u8>,
    ports: BpfHashMap<MapData, u16, u8>,
    events: Option<Events>,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    /// Owns the programs and their links; declared last so it is dropped last.
    _ebpf: Ebpf,
}

/// The events map, as the transport reads it.
enum Events {
    Ring(RingBuf<MapData>),
    Perf(PerfEventArray<MapData>),
}

impl Drop for KernelEvidence {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// [`Config`] as aya plain data.
#[derive(Clone, Copy)]
#[repr(transparent)]
struct PodConfig(Config);
// SAFETY: Config is #[repr(C)], made only of integers, with explicit padding.
unsafe impl Pod for PodConfig {}

const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

impl KernelEvidence {
    /// Loads `object` (see [`locate_object`]) or, where the kernel has no ring buffer,
    /// its perf-array sibling, and attaches its programs.
    pub fn load(object: &Path) -> Result<(Self, LoadReport), EbpfError> {
        Self::load_with(object, TransportChoice::Auto)
    }

    /// As [`KernelEvidence::load`], with the transport chosen by `choice`
    /// (`object` is always the ring-buffer object's path).
    pub fn load_with(
        object: &Path,
        choice: TransportChoice,
    ) -> Result<(Self, LoadReport), EbpfError> {
        let started = Instant::now();
        let has_ringbuf = choice != TransportChoice::Auto || kernel_has_ringbuf();
        let transport = pick_transport(choice, has_ringbuf);
        let object = &object_for(object, transport);
        let tracefs = ensure_tracefs()?;
        let btf = KernelBtf::read(Path::new(VMLINUX_BTF))?;
        let plan = plan(&btf, &tracefs)?;
        drop(btf);
        let planned = started.elapsed();

        let bytes = std::fs::read(object).map_err(|e| {
            EbpfError::Load(format!(
                "cannot read the eBPF object {}: {e} (build it with `cargo xtask build-ebpf`)",
                object.display()
            ))
        })?;
        let config = PodConfig(plan.config);
        let mut ebpf = EbpfLoader::new()
            // The programs use no CO-RE relocations: offsets come in through PSWEB_CONFIG.
            .btf(None)
            .override_global(GLOBAL_CONFIG, &config, true)
            .load(&bytes)
            .map_err(|e| {
                EbpfError::Load(format!(
                    "loading the eBPF object {} failed: {}{}",
                    object.display(),
                    error_chain(&e),
                    permission_hint(&e)
                ))
            })?;

        let loaded = started.elapsed();
        // Exit evidence is required; any other hook that fails to load or attach is
        // reported as unavailable (with what replaces it) and the rest still run.
        let mut hooks = plan.hooks;
        let mut unavailable = plan.unavailable;
        for a in &plan.attach {
            match attach_one(&mut ebpf, a, object) {
                Ok(insns) => {
                    if let (Some(n), Some(h)) = (insns, hooks.iter_mut().find(|(k, _)| k == a.kind))
                    {
                        h.1.push_str(&format!(" [{n} insns verified]"));
                    }
                }
                Err(e) if a.kind == EVIDENCE_EXIT => return Err(e),
                Err(e) => {
                    let why = format!("{e}; {}", a.fallback);
                    log::warn!("eBPF: {}: {why}", a.kind);
                    if let Some(h) = hooks.iter_mut().find(|(k, _)| k == a.kind) {
                        h.1 = format!("none: {why}");
                    }
                    unavailable.push((a.kind.to_string(), why));
                }
            }
        }

        let pids = take_map(&mut ebpf, MAP_WATCHED_PIDS)?
            .try_into()
            .map_err(|e: MapError| EbpfError::Load(format!("map {MAP_WATCHED_PIDS}: {e}")))?;
        let ports = take_map(&mut ebpf, MAP_WATCHED_PORTS)?
            .try_into()
            .map_err(|e: MapError| EbpfError::Load(format!("map {MAP_WATCHED_PORTS}: {e}")))?;
        let events_map = take_map(&mut ebpf, MAP_EVENTS)?;
        let events = match transport {
            Transport::RingBuffer => events_map.try_into().map(Events::Ring),
            Transport::PerfArray => events_map.try_into().map(Events::Perf),
        }
        .map_err(|e: MapError| {
            EbpfError::Load(format!(
                "map {MAP_EVENTS} of {} is not a {}: {e}",
                object.display(),
                transport.name()
            ))
        })?;
        // eBPF-side diagnostics (aya-log): cheap (one ring buffer), optional.
        let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
            Ok(l) => Some(l),
            Err(e) => {
                log::debug!("eBPF logs unavailable: {e}");
                None
            }
        };

        let load_attach = started.elapsed();
        log::debug!(
            "eBPF: BTF/format lookups {planned:?}, object load {:?}, verify+attach {:?}",
            loaded - planned,
            load_attach - loaded
        );
        let report = LoadReport {
            load_attach,
            hooks,
            unavailable,
            transport,
        };
        Ok((
            KernelEvidence {
                pids,
                ports,
                events: Some(events),
                logger,
                tasks: Vec::new(),
                _ebpf: ebpf,
            },
            report,
        ))
    }

    /// Reports the exit of thread group `tgid` (once: the kernel forgets it after).
    pub fn watch_pid(&mut self, tgid: u32) -> Result<(), EbpfError> {
        self.pids
            .insert(tgid, 1, 0)
            .map_err(|e| EbpfError::Map(format!("watching pid {tgid}: {}", error_chain(&e))))
    }
    /// Stops watching `tgid`; not an error if it was not watched (or already reported).
    pub fn unwatch_pid(&mut self, tgid: u32) -> Result<(), EbpfError> {
        match self.pids.remove(&tgid) {
            Ok(()) => Ok(()),
            Err(e) if is_enoent(&e) => Ok(()),
            Err(e) => Err(EbpfError::Map(format!(
                "unwatching pid {tgid}: {}",
                error_chain(&e)
            ))),
        }
    }
    /// Reports accept-queue overflows of listeners on local port `port` (any address).
    pub fn watch_port(&mut self, port: u16) -> Result<(), EbpfError> {
        self.ports
            .insert(port, 1, 0)
            .map_err(|e| EbpfError::Map(format!("watching port {port}: {}", error_chain(&e))))
    }
    pub fn unwatch_port(&mut self, port: u16) -> Result<(), EbpfError> {
        match self.ports.remove(&port) {
            Ok(()) => Ok(()),
            Err(e) if is_enoent(&e) => Ok(()),
            Err(e) => Err(EbpfError::Map(format!(
                "unwatching port {port}: {}",
                error_chain(&e)
            ))),
        }
    }
    /// Starts reading the ring buffer on the current tokio runtime; events go to `tx`.
    /// The task ends when `tx`'s receiver is dropped or `self` is dropped. Callable once.
    pub fn spawn_reader(
        &mut self,
        tx: tokio::sync::mpsc::UnboundedSender<KernelEvent>,
    ) -> Result<(), EbpfError> {
        let rt = tokio::runtime::Handle::try_current().map_err(|_| {
            EbpfError::Reader("spawn_reader must be called inside a tokio runtime".into())
        })?;
        let _entered = rt.enter();
        let ring = match self.events.take() {
            None => {
                return Err(EbpfError::Reader(
                    "the event reader is already running".into(),
                ))
            }
            Some(Events::Perf(array)) => {
                let tasks = perf::spawn(array, tx, &rt)?;
                self.tasks.extend(tasks);
                self.spawn_logger(&rt);
                return Ok(());
            }
            Some(Events::Ring(ring)) => ring,
        };
        // SAFETY: the RingBuf owns its map fd, which stays open and unchanged for as long
        // as the AsyncFd owns the RingBuf.
        let mut fd =
            unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
                .map_err(|e| {
                    EbpfError::Reader(format!(
                        "cannot poll the ring buffer (is the runtime's IO driver enabled?): {e}"
                    ))
                })?;
        self.tasks.push(rt.spawn(async move {
            loop {
                let mut guard = match fd.readable_mut().await {
                    Ok(g) => g,
                    Err(e) => {
                        log::error!("eBPF ring buffer: polling failed, kernel events stop: {e}");
                        return;
                    }
                };
                // Drain, clear the readiness, and drain once more: an event committed
                // between the first drain and clear_ready would otherwise wait for a
                // wakeup the kernel never sends (it wakes only a consumer that has
                // caught up), and every later event would wait behind it.
                loop {
                    if drain(guard.get_inner_mut(), &tx).is_none() {
                        return;
                    }
                    guard.clear_ready();
                    match drain(guard.get_inner_mut(), &tx) {
                        None => return,
                        Some(false) => break, // caught up: the next commit wakes us
                        Some(true) => {}      // more arrived meanwhile: again
                    }
                }
            }
        }));
        self.spawn_logger(&rt);
        Ok(())
    }

    /// eBPF-side diagnostics in their own task: a malformed log record cannot stop
    /// the evidence.
    fn spawn_logger(&mut self, rt: &tokio::runtime::Handle) {
        if let Some(logger) = self.logger.take() {
            // SAFETY: as above, the logger owns its ring buffer's fd.
            match unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) }
            {
                Ok(mut lfd) => self.tasks.push(rt.spawn(async move {
                    while let Ok(mut guard) = lfd.readable_mut().await {
                        guard.get_inner_mut().flush();
                        guard.clear_ready();
                    }
                })),
                Err(e) => log::debug!("eBPF logs not read: {e}"),
            }
        }
    }
}

/// Forwards every event in the ring. Some(true) if there was any, None when the
/// agent is gone.
fn drain(
    ring: &mut RingBuf<MapData>,
    tx: &tokio::sync::mpsc::UnboundedSender<KernelEvent>,
) -> Option<bool> {
    let mut got = false;
    while let Some(item) = ring.next() {
        got = true;
        if let Some(ev) = decode(&item) {
            tx.send(ev).ok()?;
        }
    }
    Some(got)
}

/// Why a record from the kernel could not be decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// Fewer bytes than an [`Event`].
    Short(usize),
    /// An event kind this build does not know.
    UnknownKind(u32),
}

/// One event from its bytes as either transport delivers them (a perf sample may
/// carry padding after the [`Event`]). Pure: no logging, no I/O.
pub fn decode_event(buf: &[u8]) -> Result<KernelEvent, DecodeError> {
    if buf.len() < std::mem::size_of::<Event>() {
        return Err(DecodeError::Short(buf.len()));
    }
    // SAFETY: length checked; Event is plain #[repr(C)] integers (any bit pattern valid).
    let ev: Event = unsafe { std::ptr::read_unaligned(buf.as_ptr().cast::<Event>()) };
    let overflow = |path| KernelEvent::Overflow {
        port: ev.port,
        path,
        backlog: ev.backlog,
        max_backlog: ev.max_backlog,
        ktime_ns: ev.ktime_ns,
    };
    match ev.kind {
        EVENT_EXIT => Ok(KernelEvent::Exit {
            tgid: ev.tgid,
            exit_code: ev.exit_code,
            ktime_ns: ev.ktime_ns,
        }),
        EVENT_OVERFLOW_FINAL_ACK => Ok(overflow(OverflowPath::FinalAck)),
        EVENT_OVERFLOW_SYN => Ok(overflow(OverflowPath::Syn)),
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// [`decode_event`], logging a record it ignores.
pub fn decode(buf: &[u8]) -> Option<KernelEvent> {
    match decode_event(buf) {
        Ok(ev) => Some(ev),
        Err(DecodeError::Short(n)) => {
            log::warn!("eBPF events: short record of {n} bytes ignored");
            None
        }
        Err(DecodeError::UnknownKind(k)) => {
            log::warn!("eBPF events: unknown event kind {k} ignored");
            None
        }
    }
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map, EbpfError> {
    ebpf.take_map(name).ok_or_else(|| {
        EbpfError::Load(format!(
            "the eBPF object has no map {name} (rebuild it with `cargo xtask build-ebpf`)"
        ))
    })
}

fn is_enoent(e: &MapError) -> bool {
    match e {
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        MapError::KeyNotFound | MapError::ElementNotFound => true,
        _ => false,
    }
}

/// `e` and its sources, joined by ": ".
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s
}

fn permission_hint<'a>(e: &'a (dyn std::error::Error + 'static)) -> &'static str {
    let mut src: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(cause) = src {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                return " (loading eBPF needs root: CAP_BPF, CAP_PERFMON and access to tracefs)";
            }
        }
        src = cause.source();
    }
    ""
}

// ---------------------------------------------------------------------------------
// tracefs

/// Serialises the tracefs check/mount across threads (tests load in parallel).
static TRACEFS_LOCK: Mutex<()> = Mutex::new(());

/// Finds a tracefs with `events/` readable, mounting one on /sys/kernel/tracing if none
/// is (containers and minimal hosts often leave it unmounted; aya needs it to attach).
fn ensure_tracefs() -> Result<PathBuf, EbpfError> {
    let _guard = TRACEFS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let candidates = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
    let mut denied = None;
    for c in candidates {
        match std::fs::read_dir(Path::new(c).join("events")) {
            Ok(_) => return Ok(PathBuf::from(c)),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => denied = Some(c),
            Err(_) => {}
        }
    }
    if let Some(c) = denied {
        return Err(EbpfError::Load(format!(
            "loading eBPF needs root: tracefs ({c}) is mode 0700"
        )));
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(EbpfError::Load(
            "loading eBPF needs root: tracefs is not mounted and only root can mount it".into(),
        ));
    }
    let target = candidates[0];
    let src = c"tracefs";
    let tgt = c"/sys/kernel/tracing";
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(EbpfError::Load(format!(
            "tracefs is not mounted and mounting it on {target} failed: {err} \
             (in a container, mount tracefs or run with --privileged)"
        )));
    }
    log::info!("mounted tracefs on {target} (needed to attach tracepoints)");
    match std::fs::read_dir(Path::new(target).join("events")) {
        Ok(_) => Ok(PathBuf::from(target)),
        Err(e) => Err(EbpfError::Load(format!(
            "tracefs mounted on {target} but events/ unreadable: {e}"
        ))),
    }
}

/// Field name -> (offset, size) in a tracepoint record.
type Fields = StdHashMap<String, (u32, u32)>;

/// Field name -> (offset, size) in a tracepoint record, from its `format` file.
/// `None` if the tracepoint does not exist on this kernel.
fn tracepoint_fields(
    tracefs: &Path,
    category: &str,
    name: &str,
) -> Result<Option<Fields>, EbpfError> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(EbpfError::Load(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    let mut fields = StdHashMap::new();
    for line in text.lines() {
        let mut decl = None;
        let mut offset = None;
        let mut size = None;
        for part in line.split(';') {
            let part = part.trim();
            if let Some(d) = part.strip_prefix("field:") {
                decl = Some(d);
            } else if let Some(o) = part.strip_prefix("offset:") {
                offset = o.parse::<u32>().ok();
            } else if let Some(s) = part.strip_prefix("size:") {
                size = s.parse::<u32>().ok();
            }
        }
        if let (Some(d), Some(o), Some(s)) = (decl, offset, size) {
            if let Some(last) = d.split_whitespace().last() {
                let field = last
                    .split('[')
                    .next()
                    .unwrap_or(last)
                    .trim_start_matches('*');
                fields.insert(field.to_string(), (o, s));
            }
        }
    }
    Ok(Some(fields))
}

// ---------------------------------------------------------------------------------
// What to attach, with which offsets

struct Plan {
    config: Config,
    attach: Vec<Attach>,
    hooks: Vec<(String, String)>,
    unavailable: Vec<(String, String)>,
}

/// Where a program attaches.
enum Hook {
    /// A tracepoint: (category, name).
    Tracepoint(&'static str, &'static str),
    /// A kprobe on the entry of a kernel function.
    Kprobe(&'static str),
}

/// One program to load and attach, and the evidence kind it serves.
struct Attach {
    prog: &'static str,
    hook: Hook,
    kind: &'static str,
    /// What replaces it if it cannot be loaded or attached.
    fallback: &'static str,
}

/// The kprobe program: SYN-path overflow where `sock/sk_data_ready` is missing.
const PROG_TCP_CONN_REQUEST: &str = "psweb_tcp_conn_request";
/// The function it probes: every SYN to a listener passes here, and a SYN to a
/// listener whose accept queue is full is dropped here.
const KPROBE_TCP_CONN_REQUEST: &str = "tcp_conn_request";

/// Loads and attaches one program. Returns the verifier's instruction count when the
/// kernel reports it (5.16+).
fn attach_one(ebpf: &mut Ebpf, a: &Attach, object: &Path) -> Result<Option<u32>, EbpfError> {
    let prog = a.prog;
    let missing = || {
        EbpfError::Load(format!(
            "the eBPF object {} has no program {prog} (rebuild it with `cargo xtask build-ebpf`)",
            object.display()
        ))
    };
    let rejected = |e: &ProgramError| {
        EbpfError::Load(format!(
            "the kernel rejected program {prog}: {}{}",
            error_chain(e),
            permission_hint(e)
        ))
    };
    let program = ebpf.program_mut(prog).ok_or_else(missing)?;
    match a.hook {
        Hook::Tracepoint(category, name) => {
            let tp: &mut TracePoint = program.try_into().map_err(|e: ProgramError| {
                EbpfError::Load(format!("program {prog} is not a tracepoint program: {e}"))
            })?;
            tp.load().map_err(|e| rejected(&e))?;
            tp.attach(category, name).map_err(|e| {
                EbpfError::Load(format!(
                    "attaching {prog} to tracepoint {category}/{name} failed: {}{}",
                    error_chain(&e),
                    permission_hint(&e)
                ))
            })?;
            Ok(tp.info().ok().and_then(|i| i.verified_instruction_count()))
        }
        Hook::Kprobe(function) => {
            let kp: &mut KProbe = program.try_into().map_err(|e: ProgramError| {
                EbpfError::Load(format!("program {prog} is not a kprobe program: {e}"))
            })?;
            kp.load().map_err(|e| rejected(&e))?;
            kp.attach(function, 0).map_err(|e| {
                EbpfError::Load(format!(
                    "attaching {prog} to kprobe {function} failed: {}{}",
                    error_chain(&e),
                    permission_hint(&e)
                ))
            })?;
            Ok(kp.info().ok().and_then(|i| i.verified_instruction_count()))
        }
    }
}

/// True if this kernel can attach a kprobe to `function`: kprobe events exist
/// (CONFIG_KPROBE_EVENTS) and the symbol is in /proc/kallsyms.
fn kprobe_available(tracefs: &Path, function: &str) -> bool {
    if !tracefs.join("kprobe_events").exists() {
        return false;
    }
    let Ok(syms) = std::fs::read_to_string("/proc/kallsyms") else {
        return false;
    };
    syms.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_addr, ty, name) = (f.next(), f.next(), f.next());
        matches!(ty, Some("T" | "t")) && name == Some(function)
    })
}

fn field_off(fields: &Fields, name: &str, size: Option<u32>) -> Option<u32> {
    fields
        .get(name)
        .filter(|(_, s)| size.is_none_or(|want| *s == want))
        .map(|(o, _)| *o)
}

fn plan(btf: &KernelBtf, tracefs: &Path) -> Result<Plan, EbpfError> {
    let mut config = Config::EMPTY;
    let mut attach = Vec::new();
    let mut hooks = Vec::new();
    let mut unavailable = Vec::new();
    let mut skip = |kind: &str, why: String| {
        hooks.push((kind.to_string(), format!("none: {why}")));
        unavailable.push((kind.to_string(), why));
    };
    let mut served = Vec::new();

    // Process exit: required.
    let exit = tracepoint_fields(tracefs, "sched", "sched_process_exit")?.ok_or_else(|| {
        EbpfError::Load("tracepoint sched/sched_process_exit is missing on this kernel".into())
    })?;
    config.task_exit_code_off = btf
        .member("task_struct", "exit_code")
        .map(|m| m.offset)
        .ok_or_else(|| EbpfError::Load("kernel BTF has no task_struct.exit_code".into()))?;
    let exit_hook = match field_off(&exit, "group_dead", Some(1)) {
        Some(off) => {
            config.exit_group_dead_ctx_off = off;
            "tracepoint sched/sched_process_exit (group_dead)"
        }
        None => {
            let signal = btf.member("task_struct", "signal");
            let live = btf.member("signal_struct", "live");
            match (signal, live) {
                (Some(s), Some(l)) => {
                    config.task_signal_off = s.offset;
                    config.signal_live_off = l.offset;
                    "tracepoint sched/sched_process_exit (signal->live == 0)"
                }
                _ => {
                    return Err(EbpfError::Load(
                        "sched_process_exit has no group_dead and BTF lacks task_struct.signal / signal_struct.live".into(),
                    ))
                }
            }
        }
    };
    attach.push(Attach {
        prog: PROG_EXIT,
        hook: Hook::Tracepoint("sched", "sched_process_exit"),
        kind: EVIDENCE_EXIT,
        fallback: "pidfd or /proc polling replaces it",
    });
    served.push((EVIDENCE_EXIT, exit_hook.to_string()));

    // struct sock: the listener's local port, state and accept-queue depth/limit, read
    // by the SYN path and (via kfree_skb's rx_sk) by the final-ACK path.
    let sk_state = btf.member("sock", "__sk_common.skc_state");
    let sk_num = btf.member("sock", "__sk_common.skc_num");
    let backlog = btf.member("sock", "sk_ack_backlog");
    let max_backlog = btf.member("sock", "sk_max_ack_backlog");
    let sock_ok = match (sk_state, sk_num, backlog, max_backlog) {
        (Some(state), Some(num), Some(b), Some(m))
            if state.size == 1
                && num.size == 2
                && matches!(b.size, 2 | 4)
                && matches!(m.size, 2 | 4) =>
        {
            config.sk_state_off = state.offset;
            config.sk_num_off = num.offset;
            config.sk_ack_backlog_off = b.offset;
            config.sk_ack_backlog_size = b.size;
            config.sk_max_ack_backlog_off = m.offset;
            config.sk_max_ack_backlog_size = m.size;
            true
        }
        _ => false,
    };

    // Final-ACK overflow: kfree_skb with reason SKB_DROP_REASON_TCP_LISTEN_OVERFLOW.
    let reason_value = btf.enum_value("SKB_DROP_REASON_TCP_LISTEN_OVERFLOW");
    let kfree = tracepoint_fields(tracefs, "skb", "kfree_skb")?;
    let skb_head = btf.member("sk_buff", "head");
    let skb_th = btf.member("sk_buff", "transport_header");
    match (&kfree, reason_value, skb_head, skb_th) {
        (Some(f), Some(reason), Some(head), Some(th))
            if field_off(f, "reason", Some(4)).is_some()
                && field_off(f, "skbaddr", Some(8)).is_some()
                && th.size == 2
                && head.size == 8 =>
        {
            config.kfree_reason_ctx_off = field_off(f, "reason", Some(4)).unwrap_or(NO_FIELD);
            config.kfree_skbaddr_ctx_off = field_off(f, "skbaddr", Some(8)).unwrap_or(NO_FIELD);
            config.listen_overflow_reason = reason as u32;
            config.skb_head_off = head.offset;
            config.skb_transport_header_off = th.offset;
            if sock_ok {
                config.kfree_rx_sk_ctx_off = field_off(f, "rx_sk", Some(8)).unwrap_or(NO_FIELD);
            }
            attach.push(Attach {
                prog: PROG_KFREE_SKB,
                hook: Hook::Tracepoint("skb", "kfree_skb"),
                kind: EVIDENCE_OVERFLOW_FINAL_ACK,
                fallback: "TcpExtListenOverflows deltas and sock_diag replace it",
            });
            served.push((
                EVIDENCE_OVERFLOW_FINAL_ACK,
                format!("tracepoint skb/kfree_skb, reason SKB_DROP_REASON_TCP_LISTEN_OVERFLOW ({reason})"),
            ));
        }
        (None, ..) => skip(
            EVIDENCE_OVERFLOW_FINAL_ACK,
            "tracepoint skb/kfree_skb is missing; TcpExtListenOverflows deltas and sock_diag replace it".into(),
        ),
        _ => skip(
            EVIDENCE_OVERFLOW_FINAL_ACK,
            "this kernel's kfree_skb carries no TCP_LISTEN_OVERFLOW drop reason; TcpExtListenOverflows deltas and sock_diag replace it".into(),
        ),
    }

    // SYN-path overflow: sk_data_ready on a full listener.
    let sdr = tracepoint_fields(tracefs, "sock", "sk_data_ready")?;
    match &sdr {
        Some(f)
            if sock_ok
                && field_off(f, "skaddr", Some(8)).is_some()
                && field_off(f, "protocol", Some(2)).is_some() =>
        {
            config.sdr_skaddr_ctx_off = field_off(f, "skaddr", Some(8)).unwrap_or(NO_FIELD);
            config.sdr_protocol_ctx_off = field_off(f, "protocol", Some(2)).unwrap_or(NO_FIELD);
            attach.push(Attach {
                prog: PROG_SK_DATA_READY,
                hook: Hook::Tracepoint("sock", "sk_data_ready"),
                kind: EVIDENCE_OVERFLOW_SYN,
                fallback: "sock_diag polling replaces it",
            });
            served.push((
                EVIDENCE_OVERFLOW_SYN,
                "tracepoint sock/sk_data_ready on a listener, sk_ack_backlog > sk_max_ack_backlog".into(),
            ));
        }
        // Kernels before sk_data_ready (e.g. 6.1) usually have kprobes: probe the
        // function where a SYN to a full listener is dropped.
        None if sock_ok && kprobe_available(tracefs, KPROBE_TCP_CONN_REQUEST) => {
            attach.push(Attach {
                prog: PROG_TCP_CONN_REQUEST,
                hook: Hook::Kprobe(KPROBE_TCP_CONN_REQUEST),
                kind: EVIDENCE_OVERFLOW_SYN,
                fallback: "sock_diag polling replaces it",
            });
            served.push((
                EVIDENCE_OVERFLOW_SYN,
                format!(
                    "kprobe {KPROBE_TCP_CONN_REQUEST} on a listener, sk_ack_backlog > sk_max_ack_backlog (tracepoint sock/sk_data_ready is missing)"
                ),
            ));
        }
        None => skip(
            EVIDENCE_OVERFLOW_SYN,
            "tracepoint sock/sk_data_ready is missing (kernel too old) and no kprobe on tcp_conn_request; sock_diag polling replaces it".into(),
        ),
        _ => skip(
            EVIDENCE_OVERFLOW_SYN,
            "struct sock / sk_data_ready layout not understood; sock_diag polling replaces it".into(),
        ),
    }

    for (kind, hook) in served {
        hooks.push((kind.to_string(), hook));
    }
    // Keep the report in a fixed order: exit, final ACK, SYN.
    let order = |k: &str| match k {
        EVIDENCE_EXIT => 0,
        EVIDENCE_OVERFLOW_FINAL_ACK => 1,
        _ => 2,
    };
    hooks.sort_by_key(|(k, _)| order(k));
    Ok(Plan {
        config,
        attach,
        hooks,
        unavailable,
    })
}

// ---------------------------------------------------------------------------------
// Kernel BTF: just enough to find struct member offsets and enum values.

/// A member found in a struct: byte offset from the start of the outer struct, and
/// the byte size of its (resolved) type.
#[derive(Clone, Copy, Debug)]
struct Member {
    offset: u32,
    size: u32,
}

struct KernelBtf {
    data: Vec<u8>,
    str_start: usize,
    str_end: usize,
    /// Byte offset in `data` of type id `i + 1`.
    types: Vec<usize>,
}

const BTF_KIND_INT: u32 = 1;
const BTF_KIND_PTR: u32 = 2;
const BTF_KIND_ARRAY: u32 = 3;
const BTF_KIND_STRUCT: u32 = 4;
const BTF_KIND_UNION: u32 = 5;
const BTF_KIND_ENUM: u32 = 6;
const BTF_KIND_TYPEDEF: u32 = 8;
const BTF_KIND_VOLATILE: u32 = 9;
const BTF_KIND_CONST: u32 = 10;
const BTF_KIND_RESTRICT: u32 = 11;
const BTF_KIND_FUNC_PROTO: u32 = 13;
const BTF_KIND_VAR: u32 = 14;
const BTF_KIND_DATASEC: u32 = 15;
const BTF_KIND_DECL_TAG: u32 = 17;
const BTF_KIND_TYPE_TAG: u32 = 18;
const BTF_KIND_ENUM64: u32 = 19;

impl KernelBtf {
    fn read(path: &Path) -> Result<Self, EbpfError> {
        let data = std::fs::read(path).map_err(|e| {
            EbpfError::Load(format!(
                "cannot read kernel BTF {}: {e} (the kernel needs CONFIG_DEBUG_INFO_BTF)",
                path.display()
            ))
        })?;
        Self::parse(data).map_err(|why| {
            EbpfError::Load(format!("cannot parse kernel BTF {}: {why}", path.display()))
        })
    }

    fn parse(data: Vec<u8>) -> Result<Self, String> {
        let u16_at = |o: usize| data.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
        let u32_at = |o: usize| {
            data.get(o..o + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        if u16_at(0) != Some(0xeb9f) {
            return Err("bad magic (not little-endian BTF)".into());
        }
        let field = |o| u32_at(o).map(|v| v as usize).ok_or("truncated header");
        let hdr_len = field(4)?;
        let type_off = field(8)?;
        let type_len = field(12)?;
        let str_off = field(16)?;
        let str_len = field(20)?;
        let t_start = hdr_len + type_off;
        let t_end = t_start + type_len;
        let str_start = hdr_len + str_off;
        let str_end = str_start + str_len;
        if t_end > data.len() || str_end > data.len() {
            return Err("sections extend past the end".into());
        }
        let mut types = Vec::with_capacity(type_len / 16);
        let mut pos = t_start;
        while pos < t_end {
            let info = u32_at(pos + 4).ok_or("truncated type")?;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let extra = match kind {
                BTF_KIND_INT | BTF_KIND_VAR | BTF_KIND_DECL_TAG => 4,
                BTF_KIND_ARRAY => 12,
                BTF_KIND_STRUCT | BTF_KIND_UNION | BTF_KIND_DATASEC | BTF_KIND_ENUM64 => 12 * vlen,
                BTF_KIND_ENUM | BTF_KIND_FUNC_PROTO => 8 * vlen,
                0..=19 => 0,
                other => return Err(format!("unknown BTF kind {other}")),
            };
            types.push(pos);
            pos += 12 + extra;
        }
        Ok(KernelBtf {
            data,
            str_start,
            str_end,
            types,
        })
    }

    fn u32_at(&self, o: usize) -> u32 {
        self.data
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0)
    }

    fn name(&self, name_off: u32) -> &[u8] {
        let start = self.str_start + name_off as usize;
        if start >= self.str_end {
            return b"";
        }
        let s = &self.data[start..self.str_end];
        let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
        &s[..end]
    }

    /// (name_off, kind, vlen, kind_flag, size_or_type, position) of type `id`.
    fn ty(&self, id: u32) -> Option<(u32, u32, usize, bool, u32, usize)> {
        let pos = *self.types.get((id as usize).checked_sub(1)?)?;
        let info = self.u32_at(pos + 4);
        Some((
            self.u32_at(pos),
            (info >> 24) & 0x1f,
            (info & 0xffff) as usize,
            info >> 31 == 1,
            self.u32_at(pos + 8),
            pos,
        ))
    }

    /// Follows typedefs and qualifiers.
    fn resolve(&self, mut id: u32) -> Option<u32> {
        for _ in 0..32 {
            let (_, kind, _, _, next, _) = self.ty(id)?;
            match kind {
                BTF_KIND_TYPEDEF | BTF_KIND_VOLATILE | BTF_KIND_CONST | BTF_KIND_RESTRICT
                | BTF_KIND_TYPE_TAG => id = next,
                _ => return Some(id),
            }
        }
        None
    }

    fn size_of(&self, id: u32) -> Option<u32> {
        let (_, kind, _, _, size, _) = self.ty(self.resolve(id)?)?;
        match kind {
            BTF_KIND_INT | BTF_KIND_ENUM | BTF_KIND_ENUM64 | BTF_KIND_STRUCT | BTF_KIND_UNION => {
                Some(size)
            }
            BTF_KIND_PTR => Some(8),
            _ => None,
        }
    }

    fn struct_id(&self, name: &str) -> Option<u32> {
        (1..=self.types.len() as u32).find(|&id| {
            self.ty(id).is_some_and(|(n, kind, vlen, ..)| {
                kind == BTF_KIND_STRUCT && vlen > 0 && self.name(n) == name.as_bytes()
            })
        })
    }

    /// Bit offset and type of member `name` of struct/union `id`, looking inside
    /// anonymous struct/union members as C does.
    fn find_member(&self, id: u32, name: &str, depth: u32) -> Option<(u32, u32)> {
        if depth > 8 {
            return None;
        }
        let (_, kind, vlen, kind_flag, _, pos) = self.ty(id)?;
        if kind != BTF_KIND_STRUCT && kind != BTF_KIND_UNION {
            return None;
        }
        for i in 0..vlen {
            let m = pos + 12 + 12 * i;
            let (m_name, m_type, m_off) = (self.u32_at(m), self.u32_at(m + 4), self.u32_at(m + 8));
            let bit_off = if kind_flag {
                m_off & 0x00ff_ffff
            } else {
                m_off
            };
            if m_name != 0 {
                if self.name(m_name) == name.as_bytes() {
                    return Some((bit_off, m_type));
                }
            } else if let Some(inner) = self.resolve(m_type) {
                if let Some((off, ty)) = self.find_member(inner, name, depth + 1) {
                    return Some((bit_off + off, ty));
                }
            }
        }
        None
    }

    /// Byte offset and size of `path` ("a.b.c", anonymous members transparent) in
    /// `struct strukt`. None if absent or not byte-aligned.
    fn member(&self, strukt: &str, path: &str) -> Option<Member> {
        let mut id = self.struct_id(strukt)?;
        let mut bits = 0u32;
        let mut ty = id;
        for part in path.split('.') {
            let (off, t) = self.find_member(id, part, 0)?;
            bits += off;
            ty = t;
            id = self.resolve(t)?;
        }
        if bits & 7 != 0 {
            return None;
        }
        Some(Member {
            offset: bits / 8,
            size: self.size_of(ty)?,
        })
    }

    /// The value of enumerator `name` in any enum.
    fn enum_value(&self, name: &str) -> Option<i64> {
        for id in 1..=self.types.len() as u32 {
            let Some((_, kind, vlen, _, _, pos)) = self.ty(id) else {
                continue;
            };
            match kind {
                BTF_KIND_ENUM => {
                    for i in 0..vlen {
                        let e = pos + 12 + 8 * i;
                        if self.name(self.u32_at(e)) == name.as_bytes() {
                            return Some(i64::from(self.u32_at(e + 4) as i32));
                        }
                    }
                }
                BTF_KIND_ENUM64 => {
                    for i in 0..vlen {
                        let e = pos + 12 + 12 * i;
                        if self.name(self.u32_at(e)) == name.as_bytes() {
                            let v = u64::from(self.u32_at(e + 4))
                                | (u64::from(self.u32_at(e + 8)) << 32);
                            return Some(v as i64);
                        }
                    }
                }
                _ => {}
            }
        }
        None
    }
}

/// Where the built object is: $PSWEB_BPF_OBJECT, then `psweb.bpf.o` next to the running
/// executable, then /usr/lib/psweb/psweb.bpf.o.
pub fn locate_object() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("PSWEB_BPF_OBJECT") {
        return Some(PathBuf::from(p));
    }
    let beside = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|d| d.join("psweb.bpf.o")));
    beside
        .into_iter()
        .chain(std::iter::once(PathBuf::from("/usr/lib/psweb/psweb.bpf.o")))
        .find(|p| p.exists())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_evidence_is_send() {
        fn send<T: Send>() {}
        send::<KernelEvidence>();
    }

    #[test]
    fn decode_rejects_short_and_unknown_records() {
        assert_eq!(decode(&[0u8; 8]), None);
        assert_eq!(decode_event(&[0u8; 8]), Err(DecodeError::Short(8)));
        let ev = Event {
            kind: 99,
            ..Event::default()
        };
        let bytes: [u8; std::mem::size_of::<Event>()] = unsafe { std::mem::transmute(ev) };
        assert_eq!(decode(&bytes), None);
        let ev = Event {
            kind: EVENT_EXIT,
            tgid: 7,
            exit_code: 9,
            ktime_ns: 5,
            ..Event::default()
        };
        let bytes: [u8; std::mem::size_of::<Event>()] = unsafe { std::mem::transmute(ev) };
        assert_eq!(
            decode(&bytes),
            Some(KernelEvent::Exit {
                tgid: 7,
                exit_code: 9,
                ktime_ns: 5
            })
        );
    }

    #[test]
    fn transport_follows_the_kernel_unless_forced() {
        use TransportChoice as C;
        assert_eq!(pick_transport(C::Auto, true), Transport::RingBuffer);
        assert_eq!(pick_transport(C::Auto, false), Transport::PerfArray);
        assert_eq!(pick_transport(C::PerfArray, true), Transport::PerfArray);
        assert_eq!(pick_transport(C::RingBuffer, false), Transport::RingBuffer);
        assert_eq!("perf-array".parse(), Ok(C::PerfArray));
        assert_eq!("ring-buffer".parse(), Ok(C::RingBuffer));
        assert!("pipe".parse::<C>().is_err());
        let ring = Path::new("/usr/lib/psweb/psweb.bpf.o");
        assert_eq!(object_for(ring, Transport::RingBuffer), ring);
        assert_eq!(
            object_for(ring, Transport::PerfArray),
            Path::new("/usr/lib/psweb/psweb-perf.bpf.o")
        );
    }

    #[test]
    fn decode_accepts_a_padded_perf_sample() {
        let ev = Event {
            kind: EVENT_OVERFLOW_SYN,
            port: 8080,
            backlog: 2,
            max_backlog: 1,
            ktime_ns: 11,
            ..Event::default()
        };
        let bytes: [u8; std::mem::size_of::<Event>()] = unsafe { std::mem::transmute(ev) };
        let mut padded = bytes.to_vec();
        padded.extend_from_slice(&[0; 4]);
        assert_eq!(
            decode(&padded),
            Some(KernelEvent::Overflow {
                port: 8080,
                path: OverflowPath::Syn,
                backlog: 2,
                max_backlog: 1,
                ktime_ns: 11
            })
        );
    }

    #[test]
    fn format_parsing_finds_fields() {
        let dir = std::env::temp_dir().join(format!("psweb-fmt-{}", std::process::id()));
        let ev = dir.join("events/sched/sched_process_exit");
        std::fs::create_dir_all(&ev).unwrap();
        std::fs::write(
            ev.join("format"),
            "name: x\nformat:\n\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n\tfield:const void * skaddr;\toffset:40;\tsize:8;\tsigned:0;\n",
        )
        .unwrap();
        let f = tracepoint_fields(&dir, "sched", "sched_process_exit")
            .unwrap()
            .unwrap();
        assert_eq!(f.get("comm"), Some(&(8, 16)));
        assert_eq!(f.get("group_dead"), Some(&(32, 1)));
        assert_eq!(f.get("skaddr"), Some(&(40, 8)));
        assert!(tracepoint_fields(&dir, "sched", "nope").unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn kprobes_need_kprobe_events() {
        let dir = std::env::temp_dir().join(format!("psweb-kp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // No kprobe_events file: no kprobe, whatever kallsyms says.
        assert!(!kprobe_available(&dir, KPROBE_TCP_CONN_REQUEST));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn kernel_btf_lookups() {
        let Ok(btf) = KernelBtf::read(Path::new(VMLINUX_BTF)) else {
            eprintln!("SKIPPED: no kernel BTF");
            return;
        };
        let exit = btf.member("task_struct", "exit_code").unwrap();
        assert_eq!(exit.size, 4);
        let num = btf.member("sock", "__sk_common.skc_num").unwrap();
        assert_eq!(num.size, 2);
        assert!(btf.member("sock", "sk_ack_backlog").is_some());
        assert!(btf
            .enum_value("SKB_DROP_REASON_TCP_LISTEN_OVERFLOW")
            .is_some());
    }
}
