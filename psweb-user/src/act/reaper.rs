//! pcheck as a child subreaper: a daemon its restart script starts (fork, setsid,
//! fork) stays pcheck's descendant instead of going to PID 1. That is the evidence
//! that a process was born from pcheck's own script ([`crate::procfs::born_of_me`]),
//! and pcheck reaps such processes the moment they die, so a dead master never lingers
//! as a zombie that a start script would take for a running server.
//!
//! The children tokio waits for itself (restart scripts, the reboot command) are
//! spawned through [`spawn`], which records them so that the reaper leaves them alone.

use std::collections::BTreeSet;
use std::sync::Mutex;

/// Children whose exit status tokio collects (never reaped here).
static OWNED: Mutex<BTreeSet<i32>> = Mutex::new(BTreeSet::new());

/// Makes pcheck a child subreaper. Err: the kernel refused (the birth evidence is then
/// lost for daemons that detach; adoption falls back to executable + owner).
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: prctl with PR_SET_CHILD_SUBREAPER only sets a flag of this process.
    let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Spawns `cmd`, recording the child as tokio's to wait for. Call [`release`] once
/// its status is collected.
pub fn spawn(cmd: &mut tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    let mut owned = OWNED.lock().unwrap_or_else(|e| e.into_inner());
    let child = cmd.spawn()?;
    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
        owned.insert(pid);
    }
    Ok(child)
}

/// The child's status has been collected: the pid is no longer tokio's.
pub fn release(pid: Option<u32>) {
    if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
        OWNED.lock().unwrap_or_else(|e| e.into_inner()).remove(&pid);
    }
}

/// Reaps, on every SIGCHLD, each dead child that is not tokio's. Runs until pcheck ends.
pub fn start() -> std::io::Result<()> {
    let mut sig = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
    tokio::spawn(async move {
        loop {
            reap();
            if sig.recv().await.is_none() {
                return;
            }
        }
    });
    Ok(())
}

/// One pass: waitpid(WNOHANG) on every child of this process that is not tokio's.
pub fn reap() -> usize {
    let owned = OWNED.lock().unwrap_or_else(|e| e.into_inner());
    let mut reaped = 0;
    for pid in children() {
        if owned.contains(&pid) {
            continue;
        }
        let r = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
        if matches!(
            r,
            Ok(nix::sys::wait::WaitStatus::Exited(..) | nix::sys::wait::WaitStatus::Signaled(..))
        ) {
            reaped += 1;
        }
    }
    reaped
}

/// The children of every thread of this process (/proc/self/task/*/children; the
/// whole of /proc where the kernel lacks that file).
fn children() -> Vec<i32> {
    let mut out = Vec::new();
    let mut listed = false;
    if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
        for t in tasks.flatten() {
            if let Ok(text) = std::fs::read_to_string(t.path().join("children")) {
                listed = true;
                out.extend(
                    text.split_whitespace()
                        .filter_map(|p| p.parse::<i32>().ok()),
                );
            }
        }
    }
    if !listed {
        let me = std::process::id() as i32;
        out = crate::procfs::pids()
            .into_iter()
            .filter(|p| crate::procfs::stat(*p).is_ok_and(|s| s.ppid == me))
            .collect();
    }
    out
}
