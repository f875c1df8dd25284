//! What pcheck does to the world: run restart scripts, kill what is left of a dead
//! service. Each function reports its outcome; the decisions stay in `core`.

pub mod kill;
pub mod limits;
pub mod reaper;
pub mod reboot;
pub mod restart;

use crate::report::Logger;

/// Before anything is started: the fd limit raised (children get the one found),
/// pcheck made a child subreaper and its reaper started. Each failure is logged and
/// pcheck goes on with less protection.
pub fn prepare(log: &Logger) {
    match limits::raise_nofile() {
        Ok((found, now)) if found != now => log.info(&format!(
            "file descriptors: limit raised from {found} to {now} (restart scripts get {found})"
        )),
        Ok(_) => {}
        Err(e) => log.warn(&format!("file descriptors: cannot raise the limit: {e}")),
    }
    if let Err(e) = reaper::become_subreaper() {
        log.warn(&format!(
            "cannot become a child subreaper ({e}): a daemon that detaches from its restart script is adopted by executable and owner only"
        ));
    }
    if let Err(e) = reaper::start() {
        log.warn(&format!(
            "cannot watch SIGCHLD ({e}): dead children are reaped late"
        ));
    }
}
