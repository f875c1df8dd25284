//! The restart sequence of one entry: wait the retry delay, kill what is left of the
//! dead service, wait for its port, run the restart script and wait for the new
//! process. Its outcome goes back to the entry's decision state.

use crate::act::kill::{kill_service, ServiceId};
use crate::act::restart::{self, Script, Started};
use crate::act::RestartError;
use crate::core::{EventKind, Level, Tag};
use crate::pfile::ProcEntry;
use crate::procfs::{self, Liveness};
use crate::report::events::EventInfo;
use crate::report::Logger;
use crate::shutdown::Shutdown;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One restart, as core decided it.
pub struct Plan {
    pub cfg: ProcEntry,
    /// This attempt, of how many.
    pub attempt: u32,
    pub of: u32,
    /// The retry delay before it.
    pub delay: Duration,
    /// The instance that died, when what is left of it is to be killed first.
    pub remnants: Option<ServiceId>,
}

/// Runs the sequence: Ok with the new process, Err with why it did not start; None
/// when pcheck began to stop before the script ran (no new work).
pub async fn run(
    plan: Plan,
    log: &Arc<Logger>,
    sd: &Shutdown,
) -> Option<Result<Started, RestartError>> {
    let Plan {
        cfg,
        attempt,
        of,
        delay,
        remnants,
    } = plan;
    // Stopping: a restart still waiting for its delay is not started.
    if !delay.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = sd.stopping() => return None,
        }
    }
    if let Some(id) = remnants {
        kill_remnants(&cfg, &id, log).await;
    }
    if let Some(port) = cfg.stall.as_ref().map(|s| s.port) {
        wait_port_free(port, cfg.settings.kill_wait, log, cfg.pent_id).await;
    }
    if let Some(id) = remnants {
        remove_stale_pidfile(&cfg, &id, log).await;
    }
    log.event(
        Level::Info,
        &format!(
            "Restart Process: pname= {} pent_id= {} attempt {attempt}/{of}: {}",
            cfg.pname.display(),
            cfg.pent_id,
            cfg.restart_script.display()
        ),
        EventInfo::from_tag(Tag::new(EventKind::RestartAttempt)).for_entry(&cfg),
    );
    let owner = match procfs::uid_of_user(cfg.owner_name()) {
        Ok(uid) => uid,
        Err(e) => return Some(Err(e.into())),
    };
    let script = Script {
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
        return None;
    }
    Some(restart::run(&script, log, sd).await)
}

/// Kills what is left of the dead service (its workers), one line per process.
async fn kill_remnants(cfg: &ProcEntry, id: &ServiceId, log: &Logger) {
    let (killed, survivors) = kill_service(id, cfg.settings.kill_wait).await;
    for pid in &killed {
        log.event(
            Level::Info,
            &format!(
                "Killed remaining process of pent_id= {}: pid= {pid}",
                cfg.pent_id
            ),
            EventInfo::from_tag(Tag::new(EventKind::Kill).pid(*pid)).for_entry(cfg),
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

/// A dead master may stay a zombie for a while (its parent, often pid 1, reaps it
/// late); a start script that checks its pidfile with kill(pid, 0) would think it
/// still runs ("httpd (pid N) already running") and start nothing.
async fn remove_stale_pidfile(cfg: &ProcEntry, id: &ServiceId, log: &Logger) {
    let Some(pf) = cfg.pidfile.as_deref() else {
        return;
    };
    if procfs::read_pidfile_bounded(pf).await == Some(id.pid)
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

/// Before a restart, the watched port should have no listener left (a surviving
/// worker holding it makes every start fail with "Address already in use").
async fn wait_port_free(port: u16, wait: Duration, log: &Logger, pent_id: u32) {
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
