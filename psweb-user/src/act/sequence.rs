//! The restart sequence of one entry: wait the retry delay, kill what is left of the
//! dead service, wait for its port, run the restart script and wait for the new process.

use crate::act::{self, kill::ServiceId};
use crate::agent::{entry_event, Ctx, Msg, FIND_LIMIT};
use crate::core::{EventKind, Evidence, Level, Tag};
use crate::pfile::ProcEntry;
use crate::report::Logger;
use crate::sense::procfs::{self, Liveness};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) fn spawn_restart(
    idx: usize,
    cfg: &ProcEntry,
    attempt: u32,
    of: u32,
    delay: Duration,
    remnants: Option<ServiceId>,
    ctx: &Ctx,
) {
    let tx = ctx.tx.clone();
    let log = Arc::clone(&ctx.log);
    let cfg = cfg.clone();
    let sd = ctx.shutdown.clone();
    ctx.shutdown.spawn_restart(async move {
        // Stopping: a restart still waiting for its delay is not started.
        if !delay.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = sd.stopping() => return,
            }
        }
        if let Some(id) = remnants {
            let (killed, survivors) = act::kill::kill_service(&id, cfg.settings.kill_wait).await;
            for pid in &killed {
                log.event(
                    Level::Info,
                    &format!(
                        "Killed remaining process of pent_id= {}: pid= {pid}",
                        cfg.pent_id
                    ),
                    entry_event(&cfg, Tag::new(EventKind::Kill).pid(*pid)),
                );
            }
            if !survivors.is_empty() {
                log.error(&format!(
                    "pent_id= {}: processes {survivors:?} survived SIGKILL for {} ms",
                    cfg.pent_id,
                    cfg.settings.kill_wait.as_millis()
                ));
            }
        }
        if let Some(port) = cfg.stall.as_ref().map(|s| s.port) {
            wait_port_free(port, cfg.settings.kill_wait, &log, cfg.pent_id).await;
        }
        // A dead master may stay a zombie for a while (its parent, often pid 1, reaps
        // it late); a start script that checks its pidfile with kill(pid, 0) would
        // think it still runs ("httpd (pid N) already running") and start nothing.
        if let (Some(pf), Some(id)) = (cfg.pidfile.as_deref(), remnants) {
            if procfs::read_pidfile_bounded(pf, FIND_LIMIT).await == Some(id.pid)
                && procfs::alive(id.pid, id.start_time) != Liveness::Alive
                && std::fs::remove_file(pf).is_ok()
            {
                log.info(&format!(
                    "pent_id= {}: removed stale pidfile {} (pid {} is dead)",
                    cfg.pent_id,
                    pf.display(),
                    id.pid
                ));
            }
        }
        log.event(
            Level::Info,
            &format!(
                "Restart Process: pname= {} pent_id= {} attempt {attempt}/{of}: {}",
                cfg.pname.display(),
                cfg.pent_id,
                cfg.restart_script.display()
            ),
            entry_event(&cfg, Tag::new(EventKind::RestartAttempt)),
        );
        let owner = match procfs::uid_of_user(cfg.owner_name()) {
            Ok(uid) => uid,
            Err(reason) => {
                let _ = tx.send(Msg::Evidence(idx, Evidence::StartFailed { reason }));
                return;
            }
        };
        let script = act::restart::Script {
            owner,
            path: &cfg.restart_script,
            pname: &cfg.pname,
            pidfile: cfg.pidfile.as_deref(),
            user: cfg.user.as_deref(),
            pent_id: cfg.pent_id,
            timeout: cfg.settings.restart_timeout,
            start_wait: cfg.settings.start_wait,
        };
        if sd.is_stopping() {
            return;
        }
        let msg = match act::restart::run(&script, &log).await {
            Ok(started) => Msg::Started(idx, started),
            Err(e) => Msg::Evidence(
                idx,
                Evidence::StartFailed {
                    reason: e.to_string(),
                },
            ),
        };
        let _ = tx.send(msg);
    });
}

/// Before a restart, the watched port should have no listener left (a surviving
/// worker holding it makes every start fail with "Address already in use").
pub(crate) async fn wait_port_free(port: u16, wait: Duration, log: &Logger, pent_id: u32) {
    let deadline = Instant::now() + wait;
    while procfs::listeners_on(port) > 0 {
        if Instant::now() >= deadline {
            log.warn(&format!(
                "pent_id= {pent_id}: port {port} still has a listener after {} ms; restarting anyway",
                wait.as_millis()
            ));
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
