//! Kernel evidence: loads psweb's eBPF object (aya), keeps the watched-PID and
//! watched-port maps, and forwards the kernel's events to the agent. This file is the
//! face the agent uses; the work is in:
//!
//! - `loader`: loads the object with the planned offsets, attaches, takes the maps;
//! - `plan`: which program serves each evidence kind on this kernel (tracepoint, or
//!   kprobe where the tracepoint is missing), and the offsets it needs;
//! - `btf`: struct member offsets and enum values from the kernel's BTF (`btfparse`);
//! - `tracefs`: finds or mounts tracefs, reads tracepoint `format` files;
//! - `reader`: the ring buffer's reader task and the event decoding;
//! - `perf`: the perf event array's readers.
//!
//! The programs (`psweb-ebpf/src/main.rs`) carry no kernel offsets: [`KernelEvidence::load`]
//! reads them from the kernel's BTF (`/sys/kernel/btf/vmlinux`) and from the tracepoints'
//! `format` files, and writes them into the programs' read-only data before loading.
//! A hook the running kernel lacks is skipped and reported in [`LoadReport`].
//!
//! Events come through a ring buffer (`psweb.bpf.o`), or, on kernels without
//! BPF_MAP_TYPE_RINGBUF, through a perf event array (`psweb-perf.bpf.o`, the same
//! programs built with the `perf-array` feature): [`Transport`] is chosen at load by
//! probing the kernel, or forced.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aya::maps::{HashMap as BpfHashMap, MapData, MapError, MapType, PerfEventArray, RingBuf};
use aya::Ebpf;

mod btf;
mod loader;
mod perf;
mod plan;
mod reader;
mod tracefs;

pub use reader::{decode, decode_event, DecodeError};

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

/// A transport name [`TransportChoice`] does not know.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown eBPF transport {0:?} (auto, ring-buffer or perf-array)")]
pub struct UnknownTransport(pub String);

impl std::str::FromStr for TransportChoice {
    type Err = UnknownTransport;
    fn from_str(s: &str) -> Result<Self, UnknownTransport> {
        match s {
            "auto" => Ok(TransportChoice::Auto),
            "ring-buffer" | "ringbuf" => Ok(TransportChoice::RingBuffer),
            "perf-array" | "perf" => Ok(TransportChoice::PerfArray),
            other => Err(UnknownTransport(other.to_string())),
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
    Path::new(btf::VMLINUX_BTF).exists()
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
    /// The kernel's BTF could not be read or parsed.
    #[error("cannot {} kernel BTF {path}: {why}", .why.action())]
    Btf { path: String, why: btf::BtfError },
    /// Updating a watched-PID / watched-port map failed.
    #[error("{0}")]
    Map(String),
    /// The event reader could not be started.
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

/// Whether the loaded program (if any) reports the SYN-path overflows of the watched
/// ports: else sock_diag polling does, and `show kernel` says so.
pub fn serves_syn(report: Option<&LoadReport>) -> bool {
    report.is_some_and(|r| r.serves(EVIDENCE_OVERFLOW_SYN))
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
        loader::load(object, choice)
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
    /// Starts reading the events on the current tokio runtime; events go to `tx`.
    /// The task ends when `tx`'s receiver is dropped or `self` is dropped. Callable once.
    pub fn spawn_reader(
        &mut self,
        tx: tokio::sync::mpsc::UnboundedSender<KernelEvent>,
    ) -> Result<(), EbpfError> {
        reader::spawn(self, tx)
    }
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
}
