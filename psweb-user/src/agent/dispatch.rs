//! Turning what core decides into work: death watchers, probe loops and
//! kernel-evidence samplers, kills, restart sequences, persistence, log lines.

use super::{Agent, Ctx, Kernel, Msg, Slot};
use crate::act::kill::kill_exact;
use crate::act::sequence::{self, Plan};
use crate::core::{Action, EventKind, Evidence, Level, Tag, WatchId};
use crate::pfile::{ProcEntry, StallEvidence};
use crate::probe::schedule::{probe_loop, LoopCfg};
use crate::report::events::EventInfo;
use crate::report::metrics::Metrics;
use crate::report::Logger;
use crate::sense::queue::watch_progress;
use crate::sense::watch::DeathWatch;
use std::sync::Arc;
use std::time::Instant;

/// Carries out a log action of an entry (None: not about an entry).
pub(super) fn log_action(
    log: &Logger,
    level: Level,
    msg: &str,
    tag: Option<Tag>,
    cfg: Option<&ProcEntry>,
) {
    match (tag, cfg) {
        (Some(t), Some(c)) => log.event(level, msg, EventInfo::from_tag(t).for_entry(c)),
        (Some(t), None) => log.event(level, msg, EventInfo::from_tag(t)),
        (None, _) => log.log(level, msg),
    }
}

impl Agent {
    /// Feeds one piece of evidence to one entry and carries out what it decides.
    /// Returns Some(exit status) when pcheck must end.
    pub(super) fn feed(&mut self, idx: usize, ev: Evidence) -> Option<u8> {
        let Self {
            slots, ctx, kernel, ..
        } = self;
        let slot = slots.get_mut(idx)?;
        let actions = slot.core.on(ev, Instant::now());
        let mut exit = None;
        for a in actions {
            match a {
                Action::Exit(code) => exit = Some(code),
                a => carry_out(a, idx, slot, ctx, kernel),
            }
        }
        if self.ctx.persist_due {
            self.persist();
        }
        if let Some(code) = exit {
            self.ctx.log.event(
                Level::Info,
                &format!("pcheck shutdown: retry-over action, exit status {code}"),
                EventInfo::new(EventKind::PcheckStop),
            );
        }
        exit
    }
}

/// Carries out one action of entry `idx` (all but `Exit`, which ends pcheck).
fn carry_out(a: Action, idx: usize, slot: &mut Slot, ctx: &mut Ctx, kernel: &mut Kernel) {
    match a {
        Action::Log(level, msg, tag) => log_action(&ctx.log, level, &msg, tag, Some(&slot.cfg)),
        Action::Watch { watch, pid } => start_watch(idx, slot, (watch, pid), ctx, kernel),
        Action::StallWatch { watch, pid } => start_stall_watch(idx, slot, (watch, pid), ctx),
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
        Action::Unwatch { .. } => unwatch(slot, kernel),
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
            let plan = Plan {
                cfg: slot.cfg.clone(),
                attempt,
                of,
                delay,
                remnants,
            };
            spawn_restart(idx, plan, ctx);
        }
        Action::RetryOver(_) | Action::Reboot { .. } | Action::Exit(_) => {}
        Action::Persist => ctx.persist_due = true,
    }
}

/// The process is up: the kernel program and a death watcher watch it.
fn start_watch(
    idx: usize,
    slot: &mut Slot,
    (watch, pid): (WatchId, i32),
    ctx: &Ctx,
    kernel: &mut Kernel,
) {
    let Some(service) = slot.service else {
        return;
    };
    if let Some(k) = kernel.evidence.as_mut() {
        if let Err(e) = k.watch_pid(pid as u32) {
            ctx.log.warn(&format!("eBPF: cannot watch pid {pid}: {e}"));
        }
        kernel.by_tgid.insert(pid, idx);
    }
    let death = DeathWatch::open(
        service.pid,
        service.start_time,
        ctx.source,
        ctx.poll_interval,
    );
    let report = ctx.reporter(idx);
    let log = Arc::clone(&ctx.log);
    let pid = service.pid;
    slot.watcher = Some(ctx.shutdown.spawn(async move {
        let (how, source) = death.died(&log).await;
        report(Evidence::Died {
            watch,
            pid,
            how,
            source,
        });
    }));
}

/// The stall check starts: its probe loop, and with kernel evidence the port's
/// sampler.
fn start_stall_watch(idx: usize, slot: &mut Slot, (watch, pid): (WatchId, i32), ctx: &Ctx) {
    let (Some(sc), Some(prober)) = (slot.cfg.stall.as_ref(), slot.prober.as_ref()) else {
        return;
    };
    let observe = ctx
        .metrics
        .clone()
        .map(|m| (m, Metrics::entry_labels(slot.cfg.pent_id, &slot.core.pname)));
    let cfg = LoopCfg {
        watch,
        interval: sc.interval,
        classes: sc.status_classes.clone(),
        observe,
        wake: Arc::clone(&ctx.queue_wake),
    };
    let probes = probe_loop(cfg, Arc::clone(prober), ctx.reporter(idx));
    slot.stall_tasks.push(ctx.shutdown.spawn(probes));
    if sc.evidence == StallEvidence::Kernel {
        let woken = ctx.queue_wake.get(&sc.port).map(|w| w.subscribe());
        let (port, window) = (sc.port, sc.kernel_window);
        let log = Arc::clone(&ctx.log);
        let report = ctx.reporter(idx);
        slot.stall_tasks.push(ctx.shutdown.spawn(async move {
            let Some(woken) = woken else { return };
            watch_progress(watch, (port, pid), window, woken, log, report).await;
        }));
    }
}

/// The process is gone by itself: its watchers stop, and what is left of it is
/// remembered for the restart.
fn unwatch(slot: &mut Slot, kernel: &mut Kernel) {
    // A held stall kill has nothing left to kill.
    slot.held_kill = None;
    for h in slot.stall_tasks.drain(..) {
        h.abort();
    }
    if let Some(h) = slot.watcher.take() {
        h.abort();
    }
    if let Some(s) = slot.service.take() {
        if let Some(k) = kernel.evidence.as_mut() {
            let _ = k.unwatch_pid(s.pid as u32);
            kernel.by_tgid.remove(&s.pid);
        }
        slot.last_service = Some(s);
    }
}

/// The restart sequence in its own task; its outcome goes back to the main task.
fn spawn_restart(idx: usize, plan: Plan, ctx: &Ctx) {
    let tx = ctx.tx.clone();
    let log = Arc::clone(&ctx.log);
    let sd = ctx.shutdown.clone();
    ctx.shutdown.spawn_restart(async move {
        let msg = match sequence::run(plan, &log, &sd).await {
            None => return,
            Some(Ok(started)) => Msg::Started(idx, started),
            Some(Err(e)) => Msg::Evidence(
                idx,
                Evidence::StartFailed {
                    reason: e.to_string(),
                },
            ),
        };
        let _ = tx.send(msg);
    });
}

/// The kill after a stall verdict; its result goes back to the entry's decision state.
pub(super) fn kill_stalled(idx: usize, slot: &Slot, watch: WatchId, pid: i32, ctx: &Ctx) {
    let start_time = slot.service.map(|s| s.start_time);
    let result = kill_exact(pid, start_time).map_err(|e| e.to_string());
    let _ = ctx.tx.send(Msg::Evidence(
        idx,
        Evidence::KillResult { watch, pid, result },
    ));
}
