//! Killing what is left of a dead service before it is restarted (SPEC 9: "master
//! killed, children live on": Apache's workers keep the port after the master dies).

use crate::sense::procfs::{self, Stat};
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
pub fn members(id: &ServiceId) -> Vec<Stat> {
    let me = std::process::id() as i32;
    let my = procfs::stat(me).ok();
    let (my_sid, my_pgid) = (my.map(|s| s.sid), my.map(|s| s.pgid));
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
            let itself = s.pid == id.pid && s.start_time == id.start_time;
            by_sid || by_pgid || itself
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
