//! Running a restart script: no shell (unless the script is one), stdin closed,
//! output into the log, its own session, a hard timeout after which the whole
//! session's process group is SIGKILLed and the attempt counts as failed.

use crate::procfs::{self, Stat};
use crate::report::Logger;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
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
pub async fn run(s: &Script<'_>, log: &Arc<Logger>) -> Result<Started, String> {
    // Checked again at every restart, as written (each directory and symlink on the
    // way); the resolved path is run, and nothing on it can be changed but by root.
    let exec = crate::trust::check(s.path, "restart script")?;
    {
        use std::os::unix::fs::PermissionsExt;
        let m = std::fs::metadata(&exec)
            .map_err(|e| format!("restart script {}: {e}", s.path.display()))?;
        if !m.is_file() || m.permissions().mode() & 0o111 == 0 {
            return Err(format!(
                "restart script {} is not an executable regular file",
                s.path.display()
            ));
        }
    }
    let mut cmd = Command::new(&exec);
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
            let u = nix::unistd::User::from_name(name)
                .map_err(|e| format!("user {name}: {e}"))?
                .ok_or_else(|| format!("user {name} does not exist"))?;
            let cname = std::ffi::CString::new(name).map_err(|e| format!("user {name}: {e}"))?;
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
    let name = s.path.display().to_string();
    let mut child = super::reaper::spawn(&mut cmd)
        .map_err(|e| format!("cannot run restart script {name}: {e}"))?;
    let child_id = child.id();
    let Some(script_pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        return Err(format!(
            "restart script {name} exited before it could be watched"
        ));
    };
    // Output goes to the log line by line, for as long as anything holds the pipe
    // (a server the script leaves running may keep it: it is drained, never blocked).
    if let Some(out) = child.stdout.take() {
        spawn_lines(out, name.clone(), Arc::clone(log));
    }
    if let Some(err) = child.stderr.take() {
        spawn_lines(err, name.clone(), Arc::clone(log));
    }
    let waited = tokio::time::timeout(s.timeout, child.wait()).await;
    if waited.is_ok() {
        super::reaper::release(child_id);
    }
    let status = match waited {
        Ok(Ok(st)) => st,
        Ok(Err(e)) => return Err(format!("waiting for restart script {name}: {e}")),
        Err(_) => {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(script_pid),
                nix::sys::signal::Signal::SIGKILL,
            );
            let _ = child.wait().await;
            super::reaper::release(child_id);
            return Err(format!(
                "restart script {name} did not finish within {} ms: killed its process group",
                s.timeout.as_millis()
            ));
        }
    };
    if !status.success() {
        return Err(
            match (
                status.code(),
                std::os::unix::process::ExitStatusExt::signal(&status),
            ) {
                (Some(c), _) => format!("restart script {name} exited with status {c}"),
                (None, Some(sig)) => format!("restart script {name} was killed by signal {sig}"),
                _ => format!("restart script {name} failed"),
            },
        );
    }
    let deadline = Instant::now() + s.start_wait;
    loop {
        if let Some(stat) =
            procfs::find_bounded(s.pname, s.pidfile, s.owner, Duration::from_secs(2)).await
        {
            return Ok(Started {
                stat,
                script_sid: script_pid,
            });
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
            return Err(format!(
                "restart script {name} exited 0 but {how} after {} ms",
                s.start_wait.as_millis()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The environment restart scripts and the reboot command get: nothing inherited
/// but `PATH` (a fixed system one) and `LANG=C`.
pub fn clean_env(cmd: &mut Command) {
    cmd.env_clear().env("PATH", PATH).env("LANG", "C");
}

fn spawn_lines<R>(r: R, name: String, log: Arc<Logger>)
where
    R: tokio::io::AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut lines = BufReader::new(r).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let line: String = line.chars().take(1000).collect();
            log.info(&format!("restart script {name}: {line}"));
        }
    });
}
