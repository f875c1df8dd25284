//! The readers: the ring buffer's task (the perf array's is in [`super::perf`]), the
//! aya-log task, and the decoding of one event record, shared by both transports.

use aya::maps::{MapData, RingBuf};
use psweb_ebpf::{Event, EVENT_EXIT, EVENT_OVERFLOW_FINAL_ACK, EVENT_OVERFLOW_SYN};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc::UnboundedSender;

use super::{perf, EbpfError, Events, KernelEvent, KernelEvidence, OverflowPath};

/// See [`KernelEvidence::spawn_reader`].
pub(super) fn spawn(
    ke: &mut KernelEvidence,
    tx: UnboundedSender<KernelEvent>,
) -> Result<(), EbpfError> {
    let rt = tokio::runtime::Handle::try_current().map_err(|_| {
        EbpfError::Reader("spawn_reader must be called inside a tokio runtime".into())
    })?;
    let _entered = rt.enter();
    match ke.events.take() {
        None => {
            return Err(EbpfError::Reader(
                "the event reader is already running".into(),
            ))
        }
        Some(Events::Perf(array)) => {
            let tasks = perf::spawn(array, tx, &rt)?;
            ke.tasks.extend(tasks);
        }
        Some(Events::Ring(ring)) => {
            let task = spawn_ring(ring, tx, &rt)?;
            ke.tasks.push(task);
        }
    }
    if let Some(logger) = ke.logger.take() {
        if let Some(task) = spawn_logger(logger, &rt) {
            ke.tasks.push(task);
        }
    }
    Ok(())
}

/// The ring buffer's reader task.
fn spawn_ring(
    ring: RingBuf<MapData>,
    tx: UnboundedSender<KernelEvent>,
    rt: &tokio::runtime::Handle,
) -> Result<tokio::task::JoinHandle<()>, EbpfError> {
    // SAFETY: the RingBuf owns its map fd, which stays open and unchanged for as long
    // as the AsyncFd owns the RingBuf.
    let mut fd = unsafe { AsyncFd::register_with_interest(ring, tokio::io::Interest::READABLE) }
        .map_err(|e| {
            EbpfError::Reader(format!(
                "cannot poll the ring buffer (is the runtime's IO driver enabled?): {e}"
            ))
        })?;
    Ok(rt.spawn(async move {
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
    }))
}

/// eBPF-side diagnostics in their own task: a malformed log record cannot stop
/// the evidence.
fn spawn_logger(
    logger: aya_log::EbpfLogger<&'static dyn log::Log>,
    rt: &tokio::runtime::Handle,
) -> Option<tokio::task::JoinHandle<()>> {
    // SAFETY: as above, the logger owns its ring buffer's fd.
    match unsafe { AsyncFd::register_with_interest(logger, tokio::io::Interest::READABLE) } {
        Ok(mut lfd) => Some(rt.spawn(async move {
            while let Ok(mut guard) = lfd.readable_mut().await {
                guard.get_inner_mut().flush();
                guard.clear_ready();
            }
        })),
        Err(e) => {
            log::debug!("eBPF logs not read: {e}");
            None
        }
    }
}

/// Forwards every event in the ring. Some(true) if there was any, None when the
/// agent is gone.
fn drain(ring: &mut RingBuf<MapData>, tx: &UnboundedSender<KernelEvent>) -> Option<bool> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
