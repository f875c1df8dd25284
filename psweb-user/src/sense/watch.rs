//! The death watcher of one watched process: its pidfd (the backstop when eBPF is the
//! evidence), or /proc polling.

use crate::act::kill::ServiceId;
use crate::agent::{Ctx, Msg};
use crate::core::{DeathKind, EventKind, EventSource, Evidence, Level, Source, WatchId};
use crate::report::events::EventInfo;
use crate::sense::pidfd::PidFd;
use crate::sense::procfs::{self, Liveness};
use crate::sense::source::Mode;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

pub(crate) fn spawn_watcher(
    idx: usize,
    watch: WatchId,
    service: ServiceId,
    ctx: &Ctx,
) -> JoinHandle<()> {
    let tx = ctx.tx.clone();
    let log = Arc::clone(&ctx.log);
    let mode = ctx.mode;
    let poll = ctx.poll_interval;
    let pid = service.pid;
    let died = move |how: DeathKind, source: Source| {
        let _ = tx.send(Msg::Evidence(
            idx,
            Evidence::Died {
                watch,
                pid,
                how,
                source,
            },
        ));
    };
    // Opened now, before the caller logs that the process is watched.
    let pidfd = (mode != Mode::Procfs).then(|| PidFd::open(pid));
    // With eBPF, the kernel's exit event is the evidence and normally arrives first;
    // what the pidfd sees is the backstop, reported only if the kernel stays silent
    // (a later report about the same watch is ignored by the core).
    let backstop = move || async move {
        if mode == Mode::Ebpf {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    ctx.shutdown.spawn(async move {
        if let Some(opened) = pidfd {
            match opened {
                Ok(fd) => {
                    // The pidfd now pins this process; make sure it is the one we found
                    // (the pid could have been recycled between finding and opening).
                    let early = match procfs::alive(pid, service.start_time) {
                        Liveness::Alive => None,
                        Liveness::Zombie => Some(DeathKind::Zombie),
                        Liveness::Gone => Some(DeathKind::Vanished),
                    };
                    if let Some(how) = early {
                        backstop().await;
                        return died(how, Source::Pidfd);
                    }
                    if fd.exited().await.is_ok() {
                        backstop().await;
                        let how = match procfs::alive(pid, service.start_time) {
                            Liveness::Zombie => DeathKind::Zombie,
                            _ => DeathKind::Vanished,
                        };
                        return died(how, Source::Pidfd);
                    }
                    log.event(
                        Level::Warning,
                        &format!("pidfd of pid {pid} failed; polling /proc instead"),
                        EventInfo::new(EventKind::EvidenceMode)
                            .pid(pid)
                            .evidence(EventSource::Procfs),
                    );
                }
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                    backstop().await;
                    return died(DeathKind::Vanished, Source::Pidfd);
                }
                Err(e) => log.event(
                    Level::Warning,
                    &format!("pidfd_open({pid}): {e}; polling /proc instead"),
                    EventInfo::new(EventKind::EvidenceMode)
                        .pid(pid)
                        .evidence(EventSource::Procfs),
                ),
            }
        }
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match procfs::alive(pid, service.start_time) {
                Liveness::Alive => {}
                Liveness::Zombie => return died(DeathKind::Zombie, Source::Procfs),
                Liveness::Gone => return died(DeathKind::Vanished, Source::Procfs),
            }
        }
    })
}
