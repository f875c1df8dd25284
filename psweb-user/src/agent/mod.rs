//! The agent: one tokio task owns every entry's decision state; senses and actors run
//! in their own tasks and report back through one channel. Evidence -> core -> actions.
//!
//! - `mod.rs`: the state the main task owns, and its loop (what it waits on).
//! - `startup.rs`: wiring at start (event outputs, the evidence source, the ports'
//!   accept-queue evidence, persisted state) and adoption of what already runs.
//! - `dispatch.rs`: turning core's actions into work (watchers, probe loops, kills,
//!   restart sequences).
//! - `evidence.rs`: what the main task does with kernel events and queue reports.
//! - `tick.rs`: the once-a-second tick (the fleet's gate, the reboot decision).
//! - `requests.rs`: padmin's requests.
//! - `sync.rs`: what is written out after decisions (state file, metrics, load
//!   balancers) and the way out.

mod dispatch;
mod error;
mod evidence;
mod requests;
mod startup;
mod sync;
mod tick;

use crate::act::kill::ServiceId;
use crate::act::restart::Started;
use crate::admin::server::Call;
use crate::core::reboot::RebootGuard;
use crate::core::{DeathSource, Entry, EventKind, Evidence, Level, ProcSts, WatchId};
use crate::fleet::Fleet;
use crate::pfile::{EvidenceMode, Pfile, ProcEntry};
use crate::probe::Prober;
use crate::report::events::EventInfo;
use crate::report::metrics::Metrics;
use crate::report::notify::Notifier;
use crate::report::Logger;
use crate::sense::ebpf::{self, KernelEvent, KernelEvidence, LoadReport};
use crate::sense::queue::{PortStats, QueueWake};
use crate::shutdown::Shutdown;
use crate::state::{self, Store};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::signal::unix::Signal;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub use error::AgentError;

pub struct Options {
    pub pfile: Pfile,
    /// Overrides the pfile's `evidence`.
    pub evidence: Option<EvidenceMode>,
    /// How often /proc is polled when it is the source of death evidence.
    pub poll_interval: Duration,
    /// Where the eBPF object is (default: [`ebpf::locate_object`]).
    pub bpf_object: Option<PathBuf>,
    /// Ring buffer or perf event array (default: whichever the kernel has).
    pub bpf_transport: ebpf::TransportChoice,
    pub log: Arc<Logger>,
}

/// Messages from the agent's helpers to its main task.
enum Msg {
    Evidence(usize, Evidence),
    Started(usize, Started),
    /// sock_diag found a watched port's accept queue full: (port, depth, limit).
    QueueFull(u16, u32, u32),
}

/// One process entry: its configuration, its decision state, and the tasks that
/// work for it.
struct Slot {
    cfg: ProcEntry,
    core: Entry,
    /// The stall check's probe, built once (TLS configuration included).
    prober: Option<Arc<Prober>>,
    /// Probe loop and kernel-evidence watcher of the current watch.
    stall_tasks: Vec<JoinHandle<()>>,
    /// The running instance, while watched.
    service: Option<ServiceId>,
    /// The last instance that ran: what is left of it is killed before a restart.
    last_service: Option<ServiceId>,
    watcher: Option<JoinHandle<()>>,
    /// `padmin -c drain -n ID` (until `-c ready`): the load balancer is told drain.
    lb_drain: bool,
    /// A stall kill waiting for the fleet's restart budget: (watch, pid).
    held_kill: Option<(WatchId, i32)>,
}

/// What the tasks spawned for entries share.
struct Ctx {
    tx: mpsc::UnboundedSender<Msg>,
    log: Arc<Logger>,
    /// The source of death evidence in use.
    source: DeathSource,
    poll_interval: Duration,
    store: Store,
    guard: RebootGuard,
    reboots: Vec<state::RebootRecord>,
    pfile_path: String,
    /// Something persisted changed: write the state file.
    persist_due: bool,
    metrics: Option<Arc<Metrics>>,
    /// What each entry's load balancer is told.
    lb: Arc<crate::lb::Board>,
    /// Per stall-check port: wakes its kernel-evidence watchers when the queue may be
    /// full (an eBPF overflow event, or the shared look at the listeners).
    queue_wake: QueueWake,
    /// Handed to every task spawned here; see [`Agent::stop`].
    shutdown: Shutdown,
    /// The fleet has a restart budget: stall kills wait for its slot (asked for at
    /// once, killed on the tick once granted).
    restart_budget: Option<crate::fleet::RestartAsk>,
}

impl Ctx {
    /// How a task working for entry `idx` reports evidence: false once the main
    /// task is gone.
    fn reporter(&self, idx: usize) -> impl Fn(Evidence) -> bool + Send + Sync + 'static {
        let tx = self.tx.clone();
        move |ev| tx.send(Msg::Evidence(idx, ev)).is_ok()
    }
}

/// The eBPF program, when it is the source, and which entry each watched tgid is.
struct Kernel {
    evidence: Option<KernelEvidence>,
    by_tgid: HashMap<i32, usize>,
    /// What was attached (for `show kernel`).
    report: Option<LoadReport>,
}

/// Everything the main task owns.
struct Agent {
    slots: Vec<Slot>,
    ctx: Ctx,
    kernel: Kernel,
    /// Accept-queue evidence of every stall-check port.
    ports: BTreeMap<u16, PortStats>,
    /// One instant on both clocks: monotonic times printed as wall-clock times.
    anchor: (Instant, SystemTime),
    /// `shutdown_flush`: how long the webhook queues may take at the end.
    flush_bound: Duration,
    /// The load balancers' listeners, served once adoption is done.
    lb_listeners: Option<crate::lb::Listeners>,
}

/// What the main task waits on.
struct Inbox {
    rx: mpsc::UnboundedReceiver<Msg>,
    krx: mpsc::UnboundedReceiver<KernelEvent>,
    calls: mpsc::Receiver<Call>,
    sigterm: Signal,
    sigint: Signal,
}

/// Runs pcheck until shutdown; returns its exit status. Tells systemd (when it
/// started pcheck with Type=notify) READY once every entry is adopted or started,
/// WATCHDOG from the main loop, and STOPPING at the end.
pub async fn run(opts: Options) -> Result<u8, AgentError> {
    let notifier = Notifier::from_env();
    let fleet = Fleet::start(&opts.pfile, &opts.log);
    let r = run_inner(opts, &notifier, fleet.as_ref()).await;
    if let Some(f) = fleet {
        f.stop().await;
    }
    notifier.stopping();
    r
}

async fn run_inner(
    opts: Options,
    notifier: &Notifier,
    fleet: Option<&Fleet>,
) -> Result<u8, AgentError> {
    let (mut agent, mut inbox) = startup::start(opts, fleet)?;
    let code = match agent.adopt_all().await? {
        Some(code) => code,
        None => {
            agent.go_live();
            agent.main_loop(&mut inbox, notifier, fleet).await
        }
    };
    // From here `padmin` requests other than `events` are answered "shutting down".
    drop(inbox.calls);
    agent.stop().await;
    Ok(code)
}

impl Agent {
    /// The main loop, until pcheck is to end: returns its exit status.
    async fn main_loop(
        &mut self,
        inbox: &mut Inbox,
        notifier: &Notifier,
        fleet: Option<&Fleet>,
    ) -> u8 {
        // READY once every entry has settled (running, or given up), so that units
        // ordered after pcheck find the servers up; at the latest after a minute.
        let started_at = Instant::now();
        let mut ready = false;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut watchdog =
            tokio::time::interval(notifier.watchdog_every.unwrap_or(Duration::from_secs(3600)));
        watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if !ready && (self.settled() || started_at.elapsed() >= Duration::from_secs(60)) {
                ready = true;
                notifier.ready(&format!("watching {} entries", self.slots.len()));
            }
            let exit = tokio::select! {
                _ = watchdog.tick(), if ready && notifier.watchdog_every.is_some() => {
                    // From the main loop: a hung loop stops the pings and systemd acts.
                    notifier.watchdog();
                    None
                }
                _ = tick.tick(), if self.ctx.guard.policy.enabled || !ready || fleet.is_some() => {
                    self.on_tick(fleet);
                    None
                }
                Some(msg) = inbox.rx.recv() => self.on_msg(msg),
                Some(kev) = inbox.krx.recv() => self.on_kernel(kev),
                Some(call) = inbox.calls.recv() => self.on_call(call, fleet).await,
                _ = inbox.sigterm.recv() => Some(self.stop_line("pcheck shutdown: SIGTERM")),
                _ = inbox.sigint.recv() => Some(self.stop_line("pcheck shutdown: SIGINT")),
            };
            if let Some(code) = exit {
                return code;
            }
        }
    }

    /// Every entry is running or given up.
    fn settled(&self) -> bool {
        self.slots
            .iter()
            .all(|s| matches!(s.core.proc_sts, ProcSts::Avail | ProcSts::Unavail))
    }

    /// The `pcheck_stop` line of a signal: exit status 0.
    fn stop_line(&self, msg: &str) -> u8 {
        self.ctx
            .log
            .event(Level::Info, msg, EventInfo::new(EventKind::PcheckStop));
        0
    }

    /// One message from a task: evidence for an entry, a started process, a full
    /// queue. Some(exit status) when pcheck must end.
    fn on_msg(&mut self, msg: Msg) -> Option<u8> {
        let (idx, ev) = match msg {
            Msg::Evidence(idx, ev) => (idx, ev),
            Msg::QueueFull(port, depth, limit) => {
                self.on_queue_full(port, depth, limit);
                return None;
            }
            Msg::Started(idx, started) => {
                let st = started.stat;
                if let Some(slot) = self.slots.get_mut(idx) {
                    slot.service = Some(ServiceId::of(&st, Some(started.script_sid)));
                }
                (
                    idx,
                    Evidence::Running {
                        pid: st.pid,
                        adopted: false,
                    },
                )
            }
        };
        self.feed_and_sync(idx, ev)
    }

    /// [`Agent::feed`], then the metrics and load balancers follow.
    fn feed_and_sync(&mut self, idx: usize, ev: Evidence) -> Option<u8> {
        let code = self.feed(idx, ev);
        self.sync_metrics();
        code
    }
}
