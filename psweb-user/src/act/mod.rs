//! What pcheck does to the world: the restart sequence (`sequence`) and its script
//! (`restart`), killing what is left of a dead service and the exact kill of a
//! stalled one (`kill`), the reboot command, and the log of what those commands
//! print (`output`). Each function reports its outcome; the
//! decisions stay in `core`.

pub mod kill;
pub mod limits;
pub mod output;
pub mod reaper;
pub mod reboot;
pub mod restart;
pub mod sequence;

use crate::report::Logger;

/// Why a restart attempt failed. The text is the reason in the `Restart Failed` line
/// and the `restart_failed` event, which operators read.
#[derive(thiserror::Error, Debug)]
pub enum RestartError {
    /// The script, or a directory or symlink on its path, could be changed by a
    /// non-root user.
    #[error("{0}")]
    Untrusted(crate::trust::TrustError),
    #[error("restart script {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
    #[error("restart script {0} is not an executable regular file")]
    NotExecutable(String),
    #[error("user {name}: {why}")]
    User { name: String, why: String },
    #[error("user {0} does not exist")]
    NoUser(String),
    /// The entry's owner has no uid.
    #[error(transparent)]
    Owner(#[from] crate::procfs::UserError),
    #[error("cannot run restart script {name}: {source}")]
    Spawn {
        name: String,
        source: std::io::Error,
    },
    #[error("restart script {0} exited before it could be watched")]
    Vanished(String),
    #[error("waiting for restart script {name}: {source}")]
    Wait {
        name: String,
        source: std::io::Error,
    },
    #[error("restart script {name} did not finish within {ms} ms: killed its process group")]
    Timeout { name: String, ms: u128 },
    #[error("restart script {name} exited with status {code}")]
    Status { name: String, code: i32 },
    #[error("restart script {name} was killed by signal {signal}")]
    Signal { name: String, signal: i32 },
    #[error("restart script {0} failed")]
    Failed(String),
    #[error("restart script {name} exited 0 but {how} after {ms} ms")]
    NotStarted { name: String, how: String, ms: u128 },
}

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
