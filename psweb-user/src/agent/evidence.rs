//! What the main task does with the kernel's events (a watched process's exit, an
//! accept-queue overflow) and sock_diag's full-queue reports.

use super::Agent;
use crate::core::{DeathKind, DeathSource, EventKind, EventSource, Evidence, Level};
use crate::report::events::EventInfo;
use crate::sense::ebpf::{KernelEvent, OverflowPath};
use crate::sense::queue;
use std::time::{Instant, SystemTime};

impl Agent {
    /// One event from the eBPF program. Some(exit status) when pcheck must end.
    pub(super) fn on_kernel(&mut self, kev: KernelEvent) -> Option<u8> {
        match kev {
            KernelEvent::Overflow {
                port,
                path,
                backlog,
                max_backlog,
                ..
            } => {
                self.on_overflow(port, path, (backlog, max_backlog));
                None
            }
            KernelEvent::Exit {
                tgid, exit_code, ..
            } => self.on_exit(tgid, exit_code),
        }
    }

    /// A watched thread group exited: death evidence for its entry, if it is still
    /// the watched process.
    fn on_exit(&mut self, tgid: u32, exit_code: u32) -> Option<u8> {
        let pid = i32::try_from(tgid).ok()?;
        let idx = *self.kernel.by_tgid.get(&pid)?;
        if self.slots[idx].core.pid != Some(pid) {
            return None;
        }
        let watch = self.slots[idx].core.watch_id()?;
        let ev = Evidence::Died {
            watch,
            pid,
            how: DeathKind::from_wait_status(exit_code),
            source: DeathSource::Ebpf,
        };
        self.feed_and_sync(idx, ev)
    }

    /// An accept-queue overflow of a watched port: its kernel-evidence samplers are
    /// woken, the statistics counted, and (rate-limited) one line logged.
    fn on_overflow(&mut self, port: u16, path: OverflowPath, depth: (u32, u32)) {
        queue::wake(&self.ctx.queue_wake, port);
        let Some(st) = self.ports.get_mut(&port) else {
            return;
        };
        let which = match path {
            OverflowPath::Syn => {
                st.syn += 1;
                "syn"
            }
            OverflowPath::FinalAck => {
                st.final_ack += 1;
                "final ack"
            }
        };
        if let Some(m) = &self.ctx.metrics {
            m.overflow(port, which);
        }
        if st.record(depth, Instant::now(), SystemTime::now()) {
            let (backlog, max_backlog) = depth;
            self.ctx.log.event(
                Level::Warning,
                &format!("Accept Queue Overflow: port= {port} depth= {backlog}/{max_backlog} (evidence: ebpf, {which} path)"),
                EventInfo::new(EventKind::Overflow).port(port).evidence(EventSource::Ebpf),
            );
        }
    }

    /// sock_diag found a watched port's accept queue full.
    pub(super) fn on_queue_full(&mut self, port: u16, depth: u32, limit: u32) {
        let Some(st) = self.ports.get_mut(&port) else {
            return;
        };
        st.full_polls += 1;
        if let Some(m) = &self.ctx.metrics {
            m.full_poll(port);
        }
        if st.record((depth, limit), Instant::now(), SystemTime::now()) {
            self.ctx.log.event(
                Level::Warning,
                &format!(
                    "Accept Queue Full: port= {port} depth= {depth}/{limit} (evidence: sock_diag)"
                ),
                EventInfo::new(EventKind::Overflow)
                    .port(port)
                    .evidence(EventSource::SockDiag),
            );
        }
    }
}
