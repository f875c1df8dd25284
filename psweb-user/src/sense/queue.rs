//! Accept-queue evidence of the watched ports: the statistics `padmin -c show
//! kernel` prints, the sock_diag poller for kernels whose eBPF program does not serve
//! the SYN path, the shared look at the listeners that wakes the kernel-evidence
//! samplers, and the sampler of one watch (`sense::progress`).

use crate::core::progress::Figures;
use crate::core::ratelimit::LogLimit;
use crate::core::{Evidence, WatchId};
use crate::report::Logger;
use crate::sense::progress::{self, Outcome};
use crate::sense::sockdiag;
use crate::shutdown::Shutdown;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// Accept-queue evidence gathered for one watched port.
#[derive(Clone, Debug, Default)]
pub struct PortStats {
    pub syn: u64,
    pub final_ack: u64,
    pub full_polls: u64,
    pub backlog: u32,
    pub max_backlog: u32,
    pub last: Option<SystemTime>,
    limit: LogLimit,
}

impl PortStats {
    /// Records one piece of overflow evidence seen at `now` (`wall`: the same on the
    /// wall clock, for `show kernel`); returns true when it should be logged
    /// (`core::ratelimit`: a storm cannot flood syslog).
    pub fn record(
        &mut self,
        (backlog, max_backlog): (u32, u32),
        now: Instant,
        wall: SystemTime,
    ) -> bool {
        self.backlog = backlog;
        self.max_backlog = max_backlog;
        self.last = Some(wall);
        self.limit.allow(now)
    }
}

/// How often the listeners are looked at for kernel-evidence watchers.
pub const LOOK: Duration = Duration::from_millis(250);
/// The same when the eBPF program reports the overflows of the watched ports (SYN
/// path; with the sk_data_ready tracepoint also the moment a completed handshake
/// makes the queue full, with the tcp_conn_request kprobe at the next SYN) and wakes their
/// watchers at once: the look is then only a safety net for a lost event. A dump walks
/// the kernel's whole listener hash table (cold, ~0.2 ms), so it is kept rare.
pub const LOOK_EBPF: Duration = Duration::from_secs(5);
/// Per stall-check port: wakes its kernel-evidence samplers when the queue may be
/// full (an eBPF overflow event, a failed or slow probe, or the shared look).
pub type QueueWake = Arc<HashMap<u16, tokio::sync::watch::Sender<()>>>;

/// Wakes the kernel-evidence samplers of `port`, if it has any.
pub fn wake(w: &QueueWake, port: u16) {
    if let Some(w) = w.get(&port) {
        w.send_replace(());
    }
}

/// One sock_diag dump of every TCP listener every `every`, for all kernel-evidence
/// watchers together: the watcher of a port whose queue is full is woken. The idle
/// cost does not grow with the number of watched ports (one dump per family per
/// look, and no watcher wakes while its queue is not full).
pub fn spawn_listener_look(ports: Vec<u16>, every: Duration, wake: QueueWake, sd: &Shutdown) {
    sd.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Ok(all) = sockdiag::listeners() else {
                continue;
            };
            for l in all.iter().filter(|l| l.depth > l.limit) {
                if ports.contains(&l.port) {
                    self::wake(&wake, l.port);
                }
            }
        }
    });
}

/// Kernel evidence for one watch: `sense::progress` samples the port while there are
/// signs of waiting work; a window with work waiting and no progress by the server
/// is reported (`report`, false once nobody listens) to the core, which judges
/// (`core::progress`). Runs until dropped.
pub async fn watch_progress(
    watch: WatchId,
    (port, pid): (u16, i32),
    window: Duration,
    woken: tokio::sync::watch::Receiver<()>,
    log: Arc<Logger>,
    report: impl Fn(Evidence) -> bool,
) {
    let withheld = |figures: Figures, why: &str| {
        log.warn(&format!(
            "kernel evidence does not judge pid= {pid} port= {port}: {figures}; {why}"
        ));
        true
    };
    progress::sample_port(port, pid, window, woken, |out| match out {
        Outcome::Stuck(figures) => report(Evidence::NoProgress { watch, figures }),
        Outcome::Suspected(on) => report(Evidence::ProgressSuspect { watch, on }),
        Outcome::Withheld(figures, why) => withheld(figures, why),
    })
    .await;
}

/// Polls sock_diag once a second for the watched ports; reports each full queue as
/// (port, depth, limit) until `report` returns false.
pub fn spawn_queue_poller(
    ports: Vec<u16>,
    report: impl Fn(u16, u32, u32) -> bool + Send + 'static,
    sd: &Shutdown,
) {
    sd.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Ok(all) = sockdiag::listeners() else {
                continue;
            };
            for port in &ports {
                if let Some(l) = all
                    .iter()
                    .filter(|l| l.port == *port)
                    .max_by_key(|l| l.depth)
                {
                    // The kernel's own test (sk_acceptq_is_full): depth > limit.
                    if l.depth > l.limit && !report(*port, l.depth, l.limit) {
                        return;
                    }
                }
            }
        }
    });
}
