//! The perf-event-array transport: reads the kernel program's events from one perf
//! buffer per online CPU, for kernels without BPF_MAP_TYPE_RINGBUF (before 5.8, some
//! RHEL 8 kernels) or when the perf path is forced. The event bytes are decoded by
//! the same [`super::decode`] as the ring buffer's.

use aya::maps::perf::{PerfEvent, PerfEventArray, PerfEventArrayBuffer};
use aya::maps::MapData;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::UnboundedSender;

use super::{decode, EbpfError, KernelEvent};

/// Pages per CPU buffer (a power of two): 16 KiB holds about 400 events.
const PAGES_PER_CPU: usize = 4;

/// Opens one buffer per online CPU and starts one task per buffer on `rt`, each
/// forwarding its CPU's events to `tx`. The tasks end when `tx`'s receiver is dropped.
pub(super) fn spawn(
    mut array: PerfEventArray<MapData>,
    tx: UnboundedSender<KernelEvent>,
    rt: &tokio::runtime::Handle,
) -> Result<Vec<tokio::task::JoinHandle<()>>, EbpfError> {
    let cpus = aya::util::online_cpus()
        .map_err(|(what, e)| EbpfError::Reader(format!("cannot list online CPUs ({what}): {e}")))?;
    let mut tasks = Vec::with_capacity(cpus.len());
    for cpu in cpus {
        let buf = array.open(cpu, Some(PAGES_PER_CPU)).map_err(|e| {
            EbpfError::Reader(format!("cannot open the perf buffer of CPU {cpu}: {e}"))
        })?;
        // SAFETY: the buffer owns its perf event fd, which stays open and unchanged for
        // as long as the AsyncFd owns the buffer.
        let mut fd = unsafe { AsyncFd::register_with_interest(buf, tokio::io::Interest::READABLE) }
            .map_err(|e| {
                EbpfError::Reader(format!("cannot poll the perf buffer of CPU {cpu}: {e}"))
            })?;
        let tx = tx.clone();
        tasks.push(rt.spawn(async move {
            loop {
                let mut guard = match fd.readable_mut().await {
                    Ok(g) => g,
                    Err(e) => {
                        log::error!(
                            "eBPF perf buffer of CPU {cpu}: polling failed, its events stop: {e}"
                        );
                        return;
                    }
                };
                // Clear first, then drain: a sample written after the drain wakes us again.
                guard.clear_ready();
                if !drain(guard.get_inner_mut(), cpu, &tx) {
                    return;
                }
            }
        }));
    }
    Ok(tasks)
}

/// Forwards every sample in `buf`; false when the agent is gone.
fn drain(
    buf: &mut PerfEventArrayBuffer<MapData>,
    cpu: u32,
    tx: &UnboundedSender<KernelEvent>,
) -> bool {
    let mut joined = Vec::new();
    let flow = buf.try_fold((), |(), ev| {
        let decoded = match ev {
            PerfEvent::Sample { head, tail: [] } => decode(head),
            PerfEvent::Sample { head, tail } => {
                // A sample that wraps around the end of the buffer.
                joined.clear();
                joined.extend_from_slice(head);
                joined.extend_from_slice(tail);
                decode(&joined)
            }
            PerfEvent::Lost { count } => {
                log::warn!("eBPF perf buffer of CPU {cpu} was full: {count} kernel event(s) lost");
                None
            }
        };
        match decoded {
            Some(ev) if tx.send(ev).is_err() => std::ops::ControlFlow::Break(()),
            _ => std::ops::ControlFlow::Continue(()),
        }
    });
    flow.is_continue()
}
