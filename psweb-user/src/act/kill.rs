//! Killing what is left of a dead service before it is restarted (SPEC 9: "master
//! killed, children live on": Apache's workers keep the port after the master dies).

use crate::pidfd::PidFd;
use crate::procfs::{self, Liveness, Stat};
use std::time::{Duration, Instant};

/// Who belongs to a watched service, recorded when it was found running.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceId {
    pub pid: i32,
    pub start_time: u64,
    /// The session, when it is the service's own: the watched process leads it (a
    /// daemon that called setsid), or pcheck's restart script created it.
    pub sid: Option<i32>,
    /// The process group, on the same terms.
    pub pgid: Option<i32>,
}

impl ServiceId {
    /// `script_sid`: the session of the restart script that started it, if any.
    pub fn of(st: &Stat, script_sid: Option<i32>) -> Self {
        let own = |id: i32| id > 1 && (id == st.pid || Some(id) == script_sid);
        Self {
            pid: st.pid,
            start_time: st.start_time,
            sid: own(st.sid).then_some(st.sid),
            pgid: own(st.pgid).then_some(st.pgid),
        }
    }
}

/// The live (non-zombie) processes of a service, never pcheck itself, its own
/// session or process group, or pid 1.
///
/// Besides the session and process group recorded when the service was found, a
/// session or group led by the watched process itself counts: a daemon may call
/// setsid only after pcheck looked (nginx's parent writes the pidfile before its
/// child, the master, has left the restart script's session), and its workers then
/// live in a session whose id is the master's pid. That id cannot belong to anyone
/// else unless the pid was reused, which is checked.
pub fn members(id: &ServiceId) -> Vec<Stat> {
    let me = std::process::id() as i32;
    let my = procfs::stat(me).ok();
    let (my_sid, my_pgid) = (my.map(|s| s.sid), my.map(|s| s.pgid));
    let reused = procfs::stat(id.pid).is_ok_and(|s| s.start_time != id.start_time);
    let led = (id.pid > 1 && !reused).then_some(id.pid);
    procfs::pids()
        .into_iter()
        .filter(|p| *p != me && *p > 1)
        .filter_map(|p| procfs::stat(p).ok())
        .filter(|s| !s.is_dead())
        .filter(|s| {
            let by_sid = id
                .sid
                .is_some_and(|sid| s.sid == sid && Some(sid) != my_sid);
            let by_pgid = id.pgid.is_some_and(|g| s.pgid == g && Some(g) != my_pgid);
            let by_leader = led.is_some_and(|l| {
                (s.sid == l && Some(l) != my_sid) || (s.pgid == l && Some(l) != my_pgid)
            });
            let itself = s.pid == id.pid && s.start_time == id.start_time;
            by_sid || by_pgid || by_leader || itself
        })
        .collect()
}

/// SIGKILLs every member of the service, repeatedly, until none is alive or `wait`
/// has passed. Returns the pids it killed and those that survived.
pub async fn kill_service(id: &ServiceId, wait: Duration) -> (Vec<i32>, Vec<i32>) {
    let deadline = Instant::now() + wait;
    let mut killed = Vec::new();
    loop {
        let live = members(id);
        if live.is_empty() {
            return (killed, Vec::new());
        }
        for s in &live {
            if nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(s.pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .is_ok()
                && !killed.contains(&s.pid)
            {
                killed.push(s.pid);
            }
        }
        if Instant::now() >= deadline {
            return (killed, live.iter().map(|s| s.pid).collect());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Why the exact kill of a stalled process failed. The text goes into the kill
/// result core logs.
#[derive(Debug, thiserror::Error)]
pub enum KillError {
    /// The pid now names another process (the watched one is gone).
    #[error("pid {0} is no longer the watched process")]
    NotWatched(i32),
    /// Opening the pidfd or signalling through it.
    #[error("{0}")]
    PidFd(std::io::Error),
    /// kill(2), on a kernel without pidfds.
    #[error("{0}")]
    Kill(nix::Error),
}

/// SIGKILLs exactly the process that was watched: through a pidfd opened now and
/// checked against the recorded start time, so a recycled pid is never hit.
pub fn kill_exact(pid: i32, start_time: Option<u64>) -> Result<(), KillError> {
    let check = |st: Option<u64>| match st {
        Some(t) if procfs::alive(pid, t) == Liveness::Gone => Err(KillError::NotWatched(pid)),
        _ => Ok(()),
    };
    match PidFd::open(pid) {
        Ok(fd) => {
            check(start_time)?;
            fd.send_signal(libc::SIGKILL).map_err(KillError::PidFd)
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            check(start_time)?;
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .map_err(KillError::Kill)
        }
        Err(e) => Err(KillError::PidFd(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::Command;

    struct KillGroupOnDrop(i32);
    impl Drop for KillGroupOnDrop {
        fn drop(&mut self) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(self.0),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }

    /// A service whose leader called setsid after it was recorded (so the record has
    /// no session of its own): once the leader is dead, its session's other process
    /// is still found and killed.
    #[test]
    fn a_session_led_by_the_dead_master_is_its_remnant() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "sleep 1000 & exec sleep 1000"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: setsid in the fork-exec child only.
        unsafe {
            cmd.pre_exec(|| {
                nix::unistd::setsid()
                    .map(|_| ())
                    .map_err(std::io::Error::from)
            });
        }
        let mut leader = cmd.spawn().expect("spawn sh");
        let pid = i32::try_from(leader.id()).expect("pid");
        // Whatever happens, the session does not outlive the test.
        let _cleanup = KillGroupOnDrop(pid);
        let deadline = Instant::now() + Duration::from_secs(10);
        let worker = loop {
            let st = procfs::stat(pid).expect("leader stat");
            let others: Vec<i32> = procfs::pids()
                .into_iter()
                .filter(|p| *p != pid)
                .filter_map(|p| procfs::stat(p).ok())
                .filter(|s| s.sid == pid)
                .map(|s| s.pid)
                .collect();
            if let [w] = others[..] {
                break (st, w);
            }
            assert!(
                Instant::now() < deadline,
                "the background sleep never started"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        let (st, worker) = worker;
        // As recorded before the setsid: no session or group of its own.
        let id = ServiceId {
            pid,
            start_time: st.start_time,
            sid: None,
            pgid: None,
        };
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .expect("kill leader");
        leader.wait().expect("reap leader");
        let found: Vec<i32> = members(&id).iter().map(|s| s.pid).collect();
        assert_eq!(found, vec![worker], "the orphaned worker is a remnant");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime");
        let (killed, survivors) = rt.block_on(kill_service(&id, Duration::from_secs(5)));
        assert_eq!(killed, vec![worker]);
        assert!(survivors.is_empty(), "{survivors:?}");
        assert!(members(&id).is_empty());
    }
}
