//! Accept-queue sampling of the watched ports: the statistics `padmin -c show kernel`
//! prints, the sock_diag poller for kernels whose eBPF program does not serve the SYN
//! path, the shared look at the listeners, and the per-watch kernel-evidence sampler.

use crate::agent::{Ctx, Msg};
use crate::core::{Evidence, WatchId};
use crate::shutdown::Shutdown;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Accept-queue evidence gathered for one watched port.
#[derive(Clone, Debug, Default)]
pub(crate) struct PortStats {
    pub(crate) syn: u64,
    pub(crate) final_ack: u64,
    pub(crate) full_polls: u64,
    pub(crate) backlog: u32,
    pub(crate) max_backlog: u32,
    pub(crate) last: Option<SystemTime>,
    pub(crate) last_logged: Option<Instant>,
    pub(crate) source: &'static str,
}

impl PortStats {
    /// Records one piece of overflow evidence; returns true when it should be logged
    /// (at most once per port every 10 s, so a storm cannot flood syslog).
    pub(crate) fn record(&mut self, backlog: u32, max_backlog: u32, source: &'static str) -> bool {
        self.backlog = backlog;
        self.max_backlog = max_backlog;
        self.last = Some(SystemTime::now());
        self.source = source;
        let now = Instant::now();
        let log = self
            .last_logged
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(10));
        if log {
            self.last_logged = Some(now);
        }
        log
    }
}

/// How often the listeners are looked at for kernel-evidence watchers.
pub(crate) const LOOK: Duration = Duration::from_millis(250);
/// The same when the eBPF program reports the overflows of the watched ports (SYN
/// path; with the sk_data_ready tracepoint also the moment a completed handshake
/// makes the queue full, with the tcp_conn_request kprobe at the next SYN) and wakes their
/// watchers at once: the look is then only a safety net for a lost event. A dump walks
/// the kernel's whole listener hash table (cold, ~0.2 ms), so it is kept rare.
pub(crate) const LOOK_EBPF: Duration = Duration::from_secs(5);
pub(crate) type QueueWake = Arc<HashMap<u16, tokio::sync::watch::Sender<()>>>;

/// One sock_diag dump of every TCP listener every `every`, for all kernel-evidence
/// watchers together: the watcher of a port whose queue is full is woken. The idle
/// cost does not grow with the number of watched ports (one dump per family per
/// look, and no watcher wakes while its queue is not full).
pub(crate) fn spawn_listener_look(
    ports: Vec<u16>,
    every: Duration,
    wake: QueueWake,
    sd: &Shutdown,
) {
    sd.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Ok(all) = crate::sense::sockdiag::listeners() else {
                continue;
            };
            for l in all.iter().filter(|l| l.depth > l.limit) {
                if ports.contains(&l.port) {
                    if let Some(w) = wake.get(&l.port) {
                        w.send_replace(());
                    }
                }
            }
        }
    });
}

/// Kernel evidence for one watch: `sense::progress` samples the port while there are
/// signs of waiting work; a window with work waiting and no progress by the server
/// is reported to the core, which judges (`core::progress`).
pub(crate) fn spawn_queue_watch(
    idx: usize,
    watch: WatchId,
    (port, pid): (u16, i32),
    window: Duration,
    ctx: &Ctx,
) -> JoinHandle<()> {
    let tx = ctx.tx.clone();
    let log = Arc::clone(&ctx.log);
    let woken = ctx.queue_wake.get(&port).map(|w| w.subscribe());
    ctx.shutdown.spawn(async move {
        let Some(woken) = woken else { return };
        crate::sense::progress::sample_port(port, pid, window, woken, |out| match out {
            crate::sense::progress::Outcome::Stuck(figures) => tx
                .send(Msg::Evidence(idx, Evidence::NoProgress { watch, figures }))
                .is_ok(),
            crate::sense::progress::Outcome::Suspected(on) => tx
                .send(Msg::Evidence(idx, Evidence::ProgressSuspect { watch, on }))
                .is_ok(),
            crate::sense::progress::Outcome::Withheld(figures, why) => {
                log.warn(&format!(
                    "kernel evidence does not judge pid= {pid} port= {port}: {figures}; {why}"
                ));
                true
            }
        })
        .await;
    })
}

/// Polls sock_diag once a second for the watched ports; reports full queues.
pub(crate) fn spawn_queue_poller(ports: Vec<u16>, tx: mpsc::UnboundedSender<Msg>, sd: &Shutdown) {
    sd.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Ok(all) = crate::sense::sockdiag::listeners() else {
                continue;
            };
            for port in &ports {
                if let Some(l) = all
                    .iter()
                    .filter(|l| l.port == *port)
                    .max_by_key(|l| l.depth)
                {
                    // The kernel's own test (sk_acceptq_is_full): depth > limit.
                    if l.depth > l.limit
                        && tx.send(Msg::QueueFull(*port, l.depth, l.limit)).is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
}
