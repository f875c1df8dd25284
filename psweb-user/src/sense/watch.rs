//! The death watcher of one watched process: its pidfd (with eBPF in use, the
//! backstop for a lost kernel event), else /proc polling. It reports one death.

use crate::core::{DeathKind, DeathSource, EventKind, Level};
use crate::pidfd::PidFd;
use crate::procfs::{self, Liveness};
use crate::report::events::EventInfo;
use crate::report::Logger;
use std::time::Duration;

/// With eBPF, how long the pidfd's report waits for the kernel's exit event (which
/// normally comes first; a later report about the same watch is ignored by core).
const BACKSTOP_DELAY: Duration = Duration::from_millis(200);

/// What the pidfd showed.
enum PidfdSaw {
    /// Dead already when it was opened: how.
    Known(DeathKind),
    /// It became readable: the process exited (zombie or reaped, read later).
    Exited,
}

/// One process (pid + start time) watched until it dies.
pub struct DeathWatch {
    pid: i32,
    start_time: u64,
    in_use: DeathSource,
    poll: Duration,
    pidfd: Option<std::io::Result<PidFd>>,
}

impl DeathWatch {
    /// Opens the pidfd now (unless /proc is the source), before the caller logs
    /// that the process is watched. `poll`: the /proc poll interval.
    pub fn open(pid: i32, start_time: u64, in_use: DeathSource, poll: Duration) -> Self {
        Self {
            pid,
            start_time,
            in_use,
            poll,
            pidfd: (in_use != DeathSource::Procfs).then(|| PidFd::open(pid)),
        }
    }

    /// Completes when the process has died: how, and which source saw it.
    pub async fn died(mut self, log: &Logger) -> (DeathKind, DeathSource) {
        if let Some(opened) = self.pidfd.take() {
            if let Some(saw) = self.by_pidfd(opened, log).await {
                self.backstop().await;
                let how = match saw {
                    PidfdSaw::Known(how) => how,
                    // Read after the backstop's wait, as the kernel would have.
                    PidfdSaw::Exited => match procfs::alive(self.pid, self.start_time) {
                        Liveness::Zombie => DeathKind::Zombie,
                        _ => DeathKind::Vanished,
                    },
                };
                return (how, DeathSource::Pidfd);
            }
        }
        (self.by_polling().await, DeathSource::Procfs)
    }

    /// What the pidfd shows; None if it cannot tell (logged: /proc is polled
    /// instead).
    async fn by_pidfd(&self, opened: std::io::Result<PidFd>, log: &Logger) -> Option<PidfdSaw> {
        let pid = self.pid;
        let fd = match opened {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                return Some(PidfdSaw::Known(DeathKind::Vanished))
            }
            Err(e) => {
                polling_instead(log, pid, &format!("pidfd_open({pid}): {e}"));
                return None;
            }
        };
        // The pidfd now pins this process; make sure it is the one we found (the pid
        // could have been recycled between finding and opening).
        match procfs::alive(pid, self.start_time) {
            Liveness::Alive => {}
            Liveness::Zombie => return Some(PidfdSaw::Known(DeathKind::Zombie)),
            Liveness::Gone => return Some(PidfdSaw::Known(DeathKind::Vanished)),
        }
        if fd.exited().await.is_ok() {
            return Some(PidfdSaw::Exited);
        }
        polling_instead(log, pid, &format!("pidfd of pid {pid} failed"));
        None
    }

    /// With eBPF in use, what the pidfd saw is reported only if the kernel's exit
    /// event has not come first.
    async fn backstop(&self) {
        if self.in_use == DeathSource::Ebpf {
            tokio::time::sleep(BACKSTOP_DELAY).await;
        }
    }

    /// Polls /proc every `poll` until the process is gone or a zombie.
    async fn by_polling(&self) -> DeathKind {
        let mut tick = tokio::time::interval(self.poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match procfs::alive(self.pid, self.start_time) {
                Liveness::Alive => {}
                Liveness::Zombie => return DeathKind::Zombie,
                Liveness::Gone => return DeathKind::Vanished,
            }
        }
    }
}

fn polling_instead(log: &Logger, pid: i32, what: &str) {
    log.event(
        Level::Warning,
        &format!("{what}; polling /proc instead"),
        EventInfo::new(EventKind::EvidenceMode)
            .pid(pid)
            .evidence(DeathSource::Procfs.into()),
    );
}
