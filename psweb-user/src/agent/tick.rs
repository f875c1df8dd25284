//! The once-a-second tick: the fleet's gate (its health, the reboot slot, the
//! restart budget that held stall kills wait for) and the auto-reboot decision.

use super::dispatch::{kill_stalled, log_action};
use super::Agent;
use crate::core::reboot::bound_history;
use crate::core::{Action, EventKind, Level};
use crate::fleet::Fleet;
use crate::report::events::EventInfo;
use crate::report::local_time;
use crate::state;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

impl Agent {
    pub(super) fn on_tick(&mut self, fleet: Option<&Fleet>) {
        let now = Instant::now();
        let mut worst = self
            .slots
            .iter()
            .filter(|s| s.core.monitor_on)
            .filter_map(|s| s.core.down_for(now).map(|d| (s.cfg.pent_id, d)))
            .max_by_key(|(_, d)| *d);
        if let Some(f) = fleet {
            worst = self.fleet_gate(f, now, worst);
        }
        if !self.ctx.guard.policy.enabled {
            return;
        }
        for a in self.ctx.guard.on_tick(now, worst) {
            match a {
                Action::Log(level, msg, tag) => log_action(&self.ctx.log, level, &msg, tag, None),
                Action::Persist => self.ctx.persist_due = true,
                Action::Reboot { count } => self.reboot(count, fleet),
                _ => {}
            }
        }
        if self.ctx.persist_due {
            self.persist();
        }
        self.sync_metrics();
    }

    /// The fleet's health, and its reboot slot before a reboot (the worst entry the
    /// reboot rule sees); held stall kills go ahead once the restart budget allows.
    fn fleet_gate(
        &mut self,
        f: &Fleet,
        now: Instant,
        worst: Option<(u32, std::time::Duration)>,
    ) -> Option<(u32, std::time::Duration)> {
        let health = self.slots.iter().map(|s| {
            (
                s.cfg.pent_id,
                s.core.monitor_on && s.core.down_for(now).is_some(),
                s.core.proc_sts,
            )
        });
        let want_restart = self.slots.iter().any(|s| s.held_kill.is_some());
        let worst = f.gate(&self.ctx.guard, health, worst, want_restart);
        if want_restart && f.stall_kill_may() {
            for (idx, s) in self.slots.iter_mut().enumerate() {
                if let Some((watch, pid)) = s.held_kill.take() {
                    kill_stalled(idx, s, watch, pid, &self.ctx);
                }
            }
        }
        worst
    }

    /// The reboot core decided: recorded and made durable first (without a durable
    /// count reboots could loop), then the reboot command.
    fn reboot(&mut self, count: u32, fleet: Option<&Fleet>) {
        self.ctx.reboots.push(state::RebootRecord {
            at: local_time(SystemTime::now()),
            boot_id: state::boot_id(),
            count,
        });
        bound_history(&mut self.ctx.reboots);
        if self.persist() {
            crate::act::reboot::spawn(
                self.ctx.guard.policy.command.clone(),
                Arc::clone(&self.ctx.log),
                &self.ctx.shutdown,
            );
            return;
        }
        self.ctx.log.event(
            Level::Error,
            &format!(
                "Auto Reboot cancelled: the reboot count could not be written to {}; without a durable count reboots could loop: the host stays up",
                self.ctx.store.path().display()
            ),
            EventInfo::new(EventKind::RebootThreshold),
        );
        // The fleet's slot was taken before the count: it goes back.
        if let Some(f) = fleet {
            f.give_back();
        }
    }
}
