//! What the agent writes out after decisions: the state file, the metrics, what
//! the load balancers are told; and the way out.

use super::Agent;
use crate::report::metrics::Metrics;
use crate::state;

impl Agent {
    /// Metrics of every entry from its decision state (cheap: a few atomic stores).
    pub(super) fn sync_metrics(&self) {
        self.sync_lb();
        let Some(m) = &self.ctx.metrics else { return };
        m.set_reboots(self.ctx.guard.count);
        for s in &self.slots {
            let stall = s.core.stall.as_ref().map(|sw| sw.sts.to_string());
            m.set_entry(
                &Metrics::entry_labels(s.cfg.pent_id, &s.core.pname),
                &s.core.proc_sts.to_string(),
                stall.as_deref(),
                s.core.restart_count,
            );
        }
    }

    /// What the load balancer is told of every entry, from its decision state.
    pub(super) fn sync_lb(&self) {
        let ctx = &self.ctx;
        let entries = self.slots.iter().map(|s| (&s.cfg, &s.core, s.lb_drain));
        crate::lb::sync(&ctx.lb, &ctx.log, ctx.metrics.as_deref(), entries);
    }

    /// Writes the state file. A failure (disk full, read-only file system) is logged
    /// once, and monitoring goes on; the next success is logged too. Returns whether
    /// the state is on disk (fsync'ed).
    pub(super) fn persist(&mut self) -> bool {
        let ctx = &mut self.ctx;
        ctx.persist_due = false;
        let st = state::State {
            version: state::VERSION,
            pfile: ctx.pfile_path.clone(),
            reboot_count: ctx.guard.count,
            reboots: ctx.reboots.clone(),
            entries: self
                .slots
                .iter()
                .map(|s| state::EntryState {
                    pent_id: s.cfg.pent_id,
                    pname: s.core.pname.clone(),
                    restart_count: s.core.restart_count,
                    last_verdict: s.core.last_verdict.clone(),
                })
                .collect(),
        };
        match ctx.store.save(&st) {
            Ok(()) if ctx.store.failing => {
                ctx.store.failing = false;
                ctx.log.info(&format!(
                    "state file {} written again",
                    ctx.store.path().display()
                ));
                true
            }
            Ok(()) => true,
            Err(e) if !ctx.store.failing => {
                ctx.store.failing = true;
                ctx.log.error(&format!(
                    "cannot write state file {}: {e}; monitoring continues (counts are kept in memory)",
                    ctx.store.path().display()
                ));
                false
            }
            Err(_) => false,
        }
    }

    /// The one way out, after the `pcheck_stop` event: running servers are left `up
    /// ready` for load balancers; no new work; a restart script in flight ends or is
    /// killed at its `restart_timeout`; the state file is written (before the flush,
    /// so a receiver that hangs cannot lose it); then, together and within
    /// `shutdown_flush`, each webhook queue is sent, the restart scripts' output is
    /// logged to its end and a reboot command still running is waited for. The
    /// caller then says STOPPING to systemd.
    pub(super) async fn stop(&mut self) {
        self.lb_leave_up().await;
        self.ctx.shutdown.begin();
        self.ctx.shutdown.restarts_done().await;
        self.persist();
        let flush = self.flush_bound;
        let sd = &self.ctx.shutdown;
        let (commands, left) = tokio::join!(sd.commands_done(flush), sd.flush(flush));
        if commands > 0 {
            self.ctx.log.warn(&format!(
                "shutdown_flush ({} ms) passed with {commands} command{} pcheck ran still running or writing (a reboot command, a restart script's output); what they print from now on is not logged",
                flush.as_millis(),
                if commands == 1 { "" } else { "s" },
            ));
        }
        if left > 0 {
            self.ctx.log.warn(&format!(
                "webhook: {left} queue{} not sent within shutdown_flush ({} ms); the events left are dropped",
                if left == 1 { " was" } else { "s were" },
                flush.as_millis()
            ));
        }
    }

    /// On a clean stop: running servers are left `up ready` (see
    /// [`crate::lb::leave_up`]).
    async fn lb_leave_up(&self) {
        let ctx = &self.ctx;
        let entries = self.slots.iter().map(|s| (&s.cfg, &s.core));
        crate::lb::leave_up(&ctx.lb, &ctx.log, ctx.metrics.as_deref(), entries).await;
    }
}
