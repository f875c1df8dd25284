//! Turning what core decides into work: watchers, probe loops, kills, restarts,
//! persistence, log lines.

use super::{log_action, persist, Ctx, Msg, Slot};
use crate::act::kill::kill_exact;
use crate::act::sequence::spawn_restart;
use crate::core::{Action, EventKind, Evidence, Level, WatchId};
use crate::pfile::StallEvidence;
use crate::probe::schedule::spawn_probe_loop;
use crate::report::events::EventInfo;
use crate::report::metrics::Metrics;
use crate::sense::ebpf::KernelEvidence;
use crate::sense::queue::spawn_queue_watch;
use crate::sense::watch::spawn_watcher;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// Feeds one piece of evidence to one entry and carries out what it decides.
/// Returns Some(exit status) when pcheck must end.
pub(crate) fn feed(
    slots: &mut [Slot],
    idx: usize,
    ev: Evidence,
    ctx: &mut Ctx,
    kernel: &mut Option<KernelEvidence>,
    by_tgid: &mut HashMap<i32, usize>,
) -> Option<u8> {
    let slot = slots.get_mut(idx)?;
    let actions = slot.core.on(ev, Instant::now());
    let mut exit = None;
    for a in actions {
        match a {
            Action::Log(level, msg, tag) => log_action(&ctx.log, level, &msg, tag, Some(&slot.cfg)),
            Action::Watch { watch, pid } => {
                let Some(service) = slot.service else {
                    continue;
                };
                if let Some(k) = kernel.as_mut() {
                    if let Err(e) = k.watch_pid(pid as u32) {
                        ctx.log.warn(&format!("eBPF: cannot watch pid {pid}: {e}"));
                    }
                    by_tgid.insert(pid, idx);
                }
                slot.watcher = Some(spawn_watcher(idx, watch, service, ctx));
            }
            Action::StallWatch { watch, pid } => {
                let (Some(sc), Some(prober)) = (slot.cfg.stall.as_ref(), slot.prober.as_ref())
                else {
                    continue;
                };
                let observe = ctx
                    .metrics
                    .clone()
                    .map(|m| (m, Metrics::entry_labels(slot.cfg.pent_id, &slot.core.pname)));
                slot.stall_tasks.push(spawn_probe_loop(
                    idx,
                    watch,
                    sc.interval,
                    Arc::clone(prober),
                    sc.status_classes.clone(),
                    observe,
                    ctx,
                ));
                if sc.evidence == StallEvidence::Kernel {
                    slot.stall_tasks.push(spawn_queue_watch(
                        idx,
                        watch,
                        (sc.port, pid),
                        sc.kernel_window,
                        ctx,
                    ));
                }
            }
            Action::StallStop { .. } => {
                for h in slot.stall_tasks.drain(..) {
                    h.abort();
                }
            }
            Action::KillStalled { watch, pid } => {
                if let Some(ask) = &ctx.restart_budget {
                    // The fleet's restart budget: killed once a slot is granted.
                    slot.held_kill = Some((watch, pid));
                    ask.now(slot.cfg.pent_id);
                } else {
                    kill_stalled(idx, slot, watch, pid, ctx);
                }
            }
            Action::Unwatch { .. } => {
                // Gone by itself: a held stall kill has nothing left to kill.
                slot.held_kill = None;
                for h in slot.stall_tasks.drain(..) {
                    h.abort();
                }
                if let Some(h) = slot.watcher.take() {
                    h.abort();
                }
                if let Some(s) = slot.service.take() {
                    if let Some(k) = kernel.as_mut() {
                        let _ = k.unwatch_pid(s.pid as u32);
                        by_tgid.remove(&s.pid);
                    }
                    slot.last_service = Some(s);
                }
            }
            Action::Restart {
                attempt,
                of,
                delay,
                kill_remnants,
            } => {
                let remnants = if kill_remnants {
                    slot.last_service
                } else {
                    None
                };
                spawn_restart(idx, &slot.cfg, attempt, of, delay, remnants, ctx);
            }
            Action::RetryOver(_) | Action::Reboot { .. } => {}
            Action::Persist => ctx.persist_due = true,
            Action::Exit(code) => exit = Some(code),
        }
    }
    if ctx.persist_due {
        persist(ctx, slots);
    }
    if let Some(code) = exit {
        ctx.log.event(
            Level::Info,
            &format!("pcheck shutdown: retry-over action, exit status {code}"),
            EventInfo::new(EventKind::PcheckStop),
        );
    }
    exit
}

/// The kill after a stall verdict; its result goes back to the entry's decision state.
pub(crate) fn kill_stalled(idx: usize, slot: &Slot, watch: WatchId, pid: i32, ctx: &Ctx) {
    let start_time = slot.service.map(|s| s.start_time);
    let result = kill_exact(pid, start_time);
    let _ = ctx.tx.send(Msg::Evidence(
        idx,
        Evidence::KillResult { watch, pid, result },
    ));
}
