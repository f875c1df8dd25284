//! Running a restart script: no shell (unless the script is one), stdin closed,
//! output into the log, its own session, a hard timeout after which the whole
//! session's process group is SIGKILLed and the attempt counts as failed.

use super::{output, RestartError};
use crate::core::DeathKind;
use crate::procfs::{self, Stat};
use crate::report::Logger;
use crate::shutdown::Shutdown;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::process::Command;

/// The environment a restart script gets: nothing inherited but these.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// A successful start: the process found, and the session the script ran in.
#[derive(Clone, Copy, Debug)]
pub struct Started {
    pub stat: Stat,
    pub script_sid: i32,
}

pub struct Script<'a> {
    pub path: &'a Path,
    pub pname: &'a Path,
    pub pidfile: Option<&'a Path>,
    /// Run the script as this user (name), with its groups.
    pub user: Option<&'a str>,
    /// The uid the started process must run as (`owner=`).
    pub owner: u32,
    pub pent_id: u32,
    pub timeout: Duration,
    pub start_wait: Duration,
}

/// Runs the script; when it exits 0, waits up to `start_wait` for the process to be
/// running (by pidfile or executable). Err says why the attempt failed.
pub async fn run(
    s: &Script<'_>,
    log: &Arc<Logger>,
    sd: &Shutdown,
) -> Result<Started, RestartError> {
    let exec = checked_script(s.path)?;
    let mut cmd = command(s, &exec)?;
    let name = s.path.display().to_string();
    let mut child = super::reaper::spawn(&mut cmd).map_err(|source| RestartError::Spawn {
        name: name.clone(),
        source,
    })?;
    let child_id = child.id();
    let Some(script_pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        return Err(RestartError::Vanished(name));
    };
    // Output goes to the log line by line, for as long as anything holds the pipe
    // (a server the script leaves running may keep it: it is drained, never blocked).
    output::spawn_child_output(&mut child, &format!("restart script {name}"), log, sd);
    wait_script(&mut child, child_id, script_pid, &name, s.timeout).await?;
    let stat = wait_started(s, &name).await?;
    Ok(Started {
        stat,
        script_sid: script_pid,
    })
}

/// The script as it will be run: checked again at every restart, as written (each
/// directory and symlink on the way); the resolved path is run, and nothing on it can
/// be changed but by root.
fn checked_script(path: &Path) -> Result<std::path::PathBuf, RestartError> {
    use std::os::unix::fs::PermissionsExt;
    let exec = crate::trust::check(path, "restart script").map_err(RestartError::Untrusted)?;
    let m = std::fs::metadata(&exec).map_err(|source| RestartError::Unreadable {
        path: path.display().to_string(),
        source,
    })?;
    if !m.is_file() || m.permissions().mode() & 0o111 == 0 {
        return Err(RestartError::NotExecutable(path.display().to_string()));
    }
    Ok(exec)
}

/// The script's command: a clean environment with the entry's names, no stdin, output
/// piped, its own session, and (with `user=`) that user's ids and groups.
fn command(s: &Script<'_>, exec: &Path) -> Result<Command, RestartError> {
    let mut cmd = Command::new(exec);
    clean_env(&mut cmd);
    cmd.env("PSWEB_PNAME", s.pname)
        .env("PSWEB_PENT_ID", s.pent_id.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    if let Some(pf) = s.pidfile {
        cmd.env("PSWEB_PIDFILE", pf);
    }
    let ids = match s.user {
        None => None,
        Some(name) => {
            let bad = |why: String| RestartError::User {
                name: name.to_string(),
                why,
            };
            let u = nix::unistd::User::from_name(name)
                .map_err(|e| bad(e.to_string()))?
                .ok_or_else(|| RestartError::NoUser(name.to_string()))?;
            let cname = std::ffi::CString::new(name).map_err(|e| bad(e.to_string()))?;
            cmd.env("HOME", &u.dir)
                .env("USER", name)
                .env("LOGNAME", name);
            Some((cname, u.uid, u.gid))
        }
    };
    // SAFETY: setsid, initgroups, setgid and setuid are async-signal-safe enough for
    // a fork-exec child (no allocation: the name was prepared above).
    let nofile = super::limits::for_children();
    unsafe {
        cmd.pre_exec(move || {
            super::limits::restore_in_child(nofile)?;
            nix::unistd::setsid().map_err(std::io::Error::from)?;
            if let Some((name, uid, gid)) = &ids {
                nix::unistd::initgroups(name, *gid).map_err(std::io::Error::from)?;
                nix::unistd::setgid(*gid).map_err(std::io::Error::from)?;
                nix::unistd::setuid(*uid).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
    Ok(cmd)
}

/// Waits for the script to exit 0 within `timeout`; at the timeout its whole process
/// group is SIGKILLed.
async fn wait_script(
    child: &mut tokio::process::Child,
    child_id: Option<u32>,
    script_pid: i32,
    name: &str,
    timeout: Duration,
) -> Result<(), RestartError> {
    let waited = tokio::time::timeout(timeout, child.wait()).await;
    if waited.is_ok() {
        super::reaper::release(child_id);
    }
    let status = match waited {
        Ok(Ok(st)) => st,
        Ok(Err(source)) => {
            return Err(RestartError::Wait {
                name: name.to_string(),
                source,
            })
        }
        Err(_) => {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(script_pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait().await;
            super::reaper::release(child_id);
            return Err(RestartError::Timeout {
                name: name.to_string(),
                ms: timeout.as_millis(),
            });
        }
    };
    let name = name.to_string();
    let raw = std::os::unix::process::ExitStatusExt::into_raw(status);
    match (
        status.success(),
        u32::try_from(raw).map(DeathKind::from_wait_status),
    ) {
        (true, _) => Ok(()),
        (false, Ok(DeathKind::Exited(code))) => Err(RestartError::Status { name, code }),
        (false, Ok(DeathKind::Signaled(signal))) => Err(RestartError::Signal { name, signal }),
        _ => Err(RestartError::Failed(name)),
    }
}

/// After the script exited 0: the started process, by pidfile or executable, within
/// `start_wait`.
async fn wait_started(s: &Script<'_>, name: &str) -> Result<Stat, RestartError> {
    let deadline = Instant::now() + s.start_wait;
    loop {
        if let Some(stat) = procfs::find_bounded(s.pname, s.pidfile, s.owner).await {
            return Ok(stat);
        }
        if Instant::now() >= deadline {
            let who = crate::trust::owner_name(s.owner);
            let how = match s.pidfile {
                Some(pf) => format!(
                    "no live {} of {who} in pidfile {}",
                    s.pname.display(),
                    pf.display()
                ),
                None => format!("no process of {who} runs {}", s.pname.display()),
            };
            return Err(RestartError::NotStarted {
                name: name.to_string(),
                how,
                ms: s.start_wait.as_millis(),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The environment restart scripts and the reboot command get: nothing inherited
/// but `PATH` (a fixed system one) and `LANG=C`.
pub fn clean_env(cmd: &mut Command) {
    cmd.env_clear().env("PATH", PATH).env("LANG", "C");
}
