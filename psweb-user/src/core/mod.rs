//! The decisions, and nothing but decisions.
//!
//! `Entry::on(evidence, now) -> Vec<Action>`: no I/O, no clock reads, no tokio. Time
//! comes in as an argument (a monotonic `Instant`), so a wall-clock jump cannot reach
//! any rule here, and every rule is tested in microseconds (see `tests.rs`).

pub use crate::pfile::DeathSource;
use crate::pfile::{
    KernelAction, ProcEntry, RetryOverAction, StallCheck, StallEvidence, StallKind, EXIT_RETRY_OVER,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{Duration, Instant};

pub mod alerts;
pub mod death;
pub mod fleet;
pub mod lb;
pub mod progress;
pub mod ratelimit;
pub mod reboot;
pub mod status;

/// `proc_sts` in `show pent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ProcSts {
    /// pcheck has not yet found or started the process.
    Init,
    /// Running and watched.
    Avail,
    /// Died; being restarted.
    Restart,
    /// Not running and not being restarted: retry-over (`continue`), or it died while
    /// monitoring was off.
    Unavail,
}

impl fmt::Display for ProcSts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Init => "INIT",
            Self::Avail => "AVAIL",
            Self::Restart => "RESTART",
            Self::Unavail => "UNAVAIL",
        })
    }
}

/// `stall_chk (xxx)` in `show pent` (seed 6.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum StallSts {
    Init,
    Avail,
    Detect,
    Unavail,
    Unknown,
}

impl fmt::Display for StallSts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Init => "INIT",
            Self::Avail => "AVAIL",
            Self::Detect => "DETECT",
            Self::Unavail => "UNAVAIL",
            Self::Unknown => "UNKNOWN",
        })
    }
}

/// How a watched process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DeathKind {
    /// Gone from /proc (or its pidfd says it exited, and it has been reaped).
    Vanished,
    /// Exited but not reaped by its parent: dead all the same.
    Zombie,
    /// Killed by this signal (known from the kernel's exit code).
    Signaled(i32),
    /// Exited with this status (known from the kernel's exit code).
    Exited(i32),
}

impl fmt::Display for DeathKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vanished => f.write_str("vanished"),
            Self::Zombie => f.write_str("zombie"),
            Self::Signaled(s) => write!(f, "killed by signal {s}"),
            Self::Exited(c) => write!(f, "exited with status {c}"),
        }
    }
}

/// Identifies one watch of one process: a late report about an earlier watch (an old
/// pid, a pid since recycled) carries an older id and is ignored.
pub type WatchId = u64;

/// What the senses and the actors report to an entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Evidence {
    /// The process is running: found at start (`adopted`) or after the restart script.
    Running { pid: i32, adopted: bool },
    /// At start, no running process to adopt.
    NotRunning,
    /// The watched process ended.
    Died {
        watch: WatchId,
        pid: i32,
        how: DeathKind,
        source: DeathSource,
    },
    /// A start attempt failed (script non-zero, timed out, or process never appeared).
    StartFailed { reason: String },
    /// A stall probe of the current watch answered (alive).
    ProbeOk { watch: WatchId },
    /// A stall probe of the current watch failed. `started`: when the probe was due
    /// (its interval tick). How long probes have been failing is measured between
    /// these, so a probe that answers its timeout a few ms late or early cannot move
    /// the verdict by a whole interval (with interval 10 and retry-over 10, the second
    /// failed probe is 10 s after the first, not 9.999 s).
    ProbeFailed {
        watch: WatchId,
        reason: String,
        started: Instant,
    },
    /// Kernel evidence: work waited for the server for the check's window and the
    /// server made no progress (`progress::Progress`, `progress::judge`).
    NoProgress {
        watch: WatchId,
        figures: progress::Figures,
    },
    /// Kernel evidence: work has waited with no progress for half of the window
    /// (`on`), or the server progressed again or no work waits any more (`!on`).
    /// A suspicion only, for the load balancer (drain); never a verdict.
    ProgressSuspect { watch: WatchId, on: bool },
    /// The outcome of a forced kill of a stalled process.
    KillResult {
        watch: WatchId,
        pid: i32,
        result: Result<(), String>,
    },
    /// `padmin -c stop -n ID`.
    MonitorOff,
    /// `padmin -c start -n ID`.
    MonitorOn,
}

/// Severity of a log line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
    Error,
}

/// What an entry asks the agent to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start watching this pid (hold it by pidfd, register it with the kernel program).
    Watch { watch: WatchId, pid: i32 },
    /// Stop watching (it is dead, or monitoring is off).
    Unwatch { watch: WatchId },
    /// Run the restart script, after `delay`. When `kill_remnants`, first SIGKILL what is
    /// left of the previous instance (its session / process group).
    Restart {
        attempt: u32,
        of: u32,
        delay: Duration,
        kill_remnants: bool,
    },
    /// Start the stall check (probes, and kernel evidence where configured) for this watch.
    StallWatch { watch: WatchId, pid: i32 },
    /// Stop the stall check of this watch; death watching goes on.
    StallStop { watch: WatchId },
    /// The seed's ACTION: SIGKILL the stalled process (it works on stopped processes).
    KillStalled { watch: WatchId, pid: i32 },
    /// Counters or verdicts changed: write the persisted state.
    Persist,
    /// Run the reboot command (auto-reboot; the count is already persisted).
    Reboot { count: u32 },
    /// The entry is out of retries: the retry-over action (already logged).
    RetryOver(RetryOverAction),
    /// End pcheck with this exit status.
    Exit(u8),
    /// A log line (the seed's text), and the event it is, if it is one
    /// (`report::events`): typed here, where the decision is made.
    Log(Level, String, Option<Tag>),
}

/// What kind of event a log line is (`report::events::Event::kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    PcheckStart,
    PcheckStop,
    /// The first start of an entry's process (not running when pcheck started).
    ProcessStart,
    /// A running process found and adopted at start.
    ProcessAdopt,
    ProcessDown,
    RestartAttempt,
    RestartOk,
    RestartFailed,
    RetryOver,
    ProbeFailed,
    StallDetected,
    /// The figures that decided a stall verdict (`stall evidence (probe|kernel): ...`).
    StallEvidence,
    /// Kernel evidence of a stall with `kernel_action = observe`: logged, not acted on.
    StallSuspected,
    StallRecovered,
    Kill,
    KillFailed,
    Reboot,
    RebootThreshold,
    RebootReset,
    EvidenceMode,
    Overflow,
    MonitorOn,
    MonitorOff,
    /// What the load balancer is told changed (up, drain, down).
    LbState,
    /// A due automatic reboot waits for the fleet (no slot, a hold, etcd away).
    RebootHeld,
    /// The fleet holds automatic reboots (outage suspected, or an operator).
    FleetHold,
    /// The fleet's hold is over.
    FleetResume,
    /// A reboot slot was taken or given back.
    FleetSlot,
    /// etcd went away.
    FleetEtcdLost,
    /// etcd answers again.
    FleetEtcdBack,
    /// A stall kill waits for the fleet's restart budget (no slot, an outage, etcd away).
    RestartHeld,
    /// A restart slot (`fleet_max_restarting`) was taken or given back.
    RestartSlot,
}

impl EventKind {
    pub const ALL: [EventKind; 32] = [
        Self::PcheckStart,
        Self::PcheckStop,
        Self::ProcessStart,
        Self::ProcessAdopt,
        Self::ProcessDown,
        Self::RestartAttempt,
        Self::RestartOk,
        Self::RestartFailed,
        Self::RetryOver,
        Self::ProbeFailed,
        Self::StallDetected,
        Self::StallEvidence,
        Self::StallSuspected,
        Self::StallRecovered,
        Self::Kill,
        Self::KillFailed,
        Self::Reboot,
        Self::RebootThreshold,
        Self::RebootReset,
        Self::EvidenceMode,
        Self::Overflow,
        Self::MonitorOn,
        Self::MonitorOff,
        Self::LbState,
        Self::RebootHeld,
        Self::FleetHold,
        Self::FleetResume,
        Self::FleetSlot,
        Self::FleetEtcdLost,
        Self::FleetEtcdBack,
        Self::RestartHeld,
        Self::RestartSlot,
    ];

    /// The JSON name: `process_down`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PcheckStart => "pcheck_start",
            Self::PcheckStop => "pcheck_stop",
            Self::ProcessStart => "process_start",
            Self::ProcessAdopt => "process_adopt",
            Self::ProcessDown => "process_down",
            Self::RestartAttempt => "restart_attempt",
            Self::RestartOk => "restart_ok",
            Self::RestartFailed => "restart_failed",
            Self::RetryOver => "retry_over",
            Self::ProbeFailed => "probe_failed",
            Self::StallDetected => "stall_detected",
            Self::StallEvidence => "stall_evidence",
            Self::StallSuspected => "stall_suspected",
            Self::StallRecovered => "stall_recovered",
            Self::Kill => "kill",
            Self::KillFailed => "kill_failed",
            Self::Reboot => "reboot",
            Self::RebootThreshold => "reboot_threshold",
            Self::RebootReset => "reboot_reset",
            Self::EvidenceMode => "evidence_mode",
            Self::Overflow => "overflow",
            Self::MonitorOn => "monitor_on",
            Self::MonitorOff => "monitor_off",
            Self::LbState => "lb_state",
            Self::RebootHeld => "reboot_held",
            Self::FleetHold => "fleet_hold",
            Self::FleetResume => "fleet_resume",
            Self::FleetSlot => "fleet_slot",
            Self::FleetEtcdLost => "fleet_etcd_lost",
            Self::FleetEtcdBack => "fleet_etcd_back",
            Self::RestartHeld => "restart_held",
            Self::RestartSlot => "restart_slot",
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The `evidence` field of an event: where the evidence behind it came from. Wider
/// than [`DeathSource`] (whose three values it carries under the same names, see
/// `From<DeathSource>`): also the stall-evidence kinds (`probe`, `kernel`) and the
/// accept-queue source of an overflow (`ebpf`, `sock_diag`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventSource {
    Ebpf,
    Pidfd,
    Procfs,
    /// A stall probe (HTTP, HTTPS or TCP).
    Probe,
    /// Accept-queue evidence from the kernel (sock_diag samples of the queue).
    Kernel,
    SockDiag,
}

impl From<DeathSource> for EventSource {
    fn from(s: DeathSource) -> Self {
        match s {
            DeathSource::Ebpf => Self::Ebpf,
            DeathSource::Pidfd => Self::Pidfd,
            DeathSource::Procfs => Self::Procfs,
        }
    }
}

/// The event a log line is: its kind and what core knows of it (the agent adds the
/// entry, port and timestamps).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag {
    pub kind: EventKind,
    pub pid: Option<i32>,
    pub evidence: Option<EventSource>,
}

impl Tag {
    pub fn new(kind: EventKind) -> Self {
        Self {
            kind,
            pid: None,
            evidence: None,
        }
    }
    pub fn pid(mut self, pid: i32) -> Self {
        self.pid = Some(pid);
        self
    }
    pub fn evidence(mut self, e: EventSource) -> Self {
        self.evidence = Some(e);
        self
    }
}

/// A plain log line (no event).
pub fn log(level: Level, msg: String) -> Action {
    Action::Log(level, msg, None)
}

/// A log line that is an event.
pub fn event(level: Level, msg: String, tag: Tag) -> Action {
    Action::Log(level, msg, Some(tag))
}

/// The decision state of one process entry.
#[derive(Clone, Debug)]
pub struct Entry {
    pub pent_id: u32,
    pub pname: String,
    pub retry_limit: u32,
    pub retry_over_action: RetryOverAction,
    pub retry_delay: Duration,
    pub proc_sts: ProcSts,
    pub pid: Option<i32>,
    /// Failed attempts in the current outage (0 while the process runs).
    pub retry_count: u32,
    /// Successful restarts since pcheck started.
    pub restart_count: u32,
    pub monitor_on: bool,
    /// When the last successful restart happened.
    pub rerun_at: Option<Instant>,
    pub stall: Option<StallWatch>,
    /// Since when the entry has not been healthy (running and, with a stall check,
    /// answering): what auto-reboot measures.
    pub down_since: Option<Instant>,
    /// The running process has proven itself: adopted, or answered a stall probe (or
    /// there is no stall check). A restarted process that dies or stalls before it
    /// ever answered counts as a failed restart attempt.
    proven: bool,
    /// The last verdict, for the persisted state and operators.
    pub last_verdict: Option<String>,
    /// The process a stall verdict was given on (the load balancer keeps it down).
    pub stalled_pid: Option<i32>,
    /// The entry went to retry-over (until it runs again).
    pub retried_over: bool,
    watch: Option<WatchId>,
    next_watch: WatchId,
    /// An attempt in flight is the first start (not a restart).
    first_start: bool,
}

/// The stall-check rules of one entry (seed 3.3, SPEC 3.2-3.5).
#[derive(Clone, Debug)]
pub struct StallWatch {
    pub kind: StallKind,
    pub port: u16,
    pub duration: Duration,
    pub stop_after_detect: bool,
    pub retry_over_on_kill_failure: bool,
    pub kernel: bool,
    /// A kernel-evidence verdict only logs (`kernel_action = observe`).
    pub kernel_observe: bool,
    pub sts: StallSts,
    /// False once stall watching stopped for good (EXEC error 1 after a detection, or
    /// a failed kill). Death watching is not affected.
    pub enabled: bool,
    pub detections: u32,
    /// The first failure of the current run of failed probes.
    failing_since: Option<Instant>,
    /// Work waits with no progress for half of the kernel window (kernel evidence).
    progress_suspected: bool,
    /// The watch already judged stalled: one verdict per watch (its forced kill ends
    /// it), however much stall evidence follows.
    judged: Option<WatchId>,
}

impl StallWatch {
    pub fn new(c: &StallCheck) -> Self {
        Self {
            kind: c.kind,
            port: c.port,
            duration: c.duration,
            stop_after_detect: c.stop_after_detect,
            retry_over_on_kill_failure: c.retry_over_on_kill_failure,
            kernel: c.evidence == StallEvidence::Kernel,
            kernel_observe: c.kernel_action == KernelAction::Observe,
            sts: StallSts::Init,
            enabled: true,
            detections: 0,
            failing_since: None,
            progress_suspected: false,
            judged: None,
        }
    }

    /// The seed's detection line, verbatim (SPEC 3.3).
    fn find_line(&self, pid: i32) -> String {
        match self.kind {
            StallKind::Socket => format!(
                "Find Socket Service Stall: pid = {pid} : port = {}",
                self.port
            ),
            StallKind::Web | StallKind::Ssl => {
                format!("Find Web Server Stall: pid = {pid} : port = {}", self.port)
            }
        }
    }
}

impl Entry {
    pub fn new(cfg: &ProcEntry) -> Self {
        Self {
            pent_id: cfg.pent_id,
            pname: cfg.pname.display().to_string(),
            retry_limit: cfg.retry_limit,
            retry_over_action: cfg.settings.retry_over_action,
            retry_delay: cfg.settings.retry_delay,
            proc_sts: ProcSts::Init,
            pid: None,
            retry_count: 0,
            restart_count: 0,
            monitor_on: true,
            rerun_at: None,
            stall: cfg.stall.as_ref().map(StallWatch::new),
            down_since: None,
            proven: false,
            last_verdict: None,
            stalled_pid: None,
            retried_over: false,
            watch: None,
            next_watch: u64::from(cfg.pent_id) << 32,
            first_start: true,
        }
    }

    /// The current watch, if the process is running and watched.
    pub fn watch_id(&self) -> Option<WatchId> {
        self.watch
    }

    /// Takes one piece of evidence; returns what to do, in order.
    pub fn on(&mut self, ev: Evidence, now: Instant) -> Vec<Action> {
        match ev {
            Evidence::Running { pid, adopted } => self.on_running(pid, adopted, now),
            Evidence::NotRunning => self.on_not_running(now),
            Evidence::Died {
                watch,
                pid,
                how,
                source,
            } => self.on_died(watch, pid, how, source, now),
            Evidence::StartFailed { reason } => self.on_start_failed(reason),
            Evidence::ProbeOk { watch } => self.on_probe_ok(watch, now),
            Evidence::ProbeFailed {
                watch,
                reason,
                started,
            } => self.on_probe_failed(watch, reason, started, now),
            Evidence::ProgressSuspect { watch, on } => {
                self.on_progress_suspect(watch, on);
                Vec::new()
            }
            Evidence::NoProgress { watch, figures } => self.on_no_progress(watch, figures, now),
            Evidence::KillResult { watch, pid, result } => self.on_kill_result(watch, pid, result),
            Evidence::MonitorOff => self.on_monitor_off(),
            Evidence::MonitorOn => self.on_monitor_on(),
        }
    }

    /// The process runs: adopted at start, or started by the restart script.
    fn on_running(&mut self, pid: i32, adopted: bool, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.proc_sts == ProcSts::Avail {
            return out;
        }
        if !self.first_start && !adopted {
            self.restart_count += 1;
            self.rerun_at = Some(now);
            out.push(Action::Persist);
        }
        let verb = if adopted {
            "Adopted"
        } else if self.first_start {
            "Started"
        } else {
            "Restarted"
        };
        self.first_start = false;
        self.pid = Some(pid);
        self.stalled_pid = None;
        self.retried_over = false;
        self.proven = adopted || !self.stall.as_ref().is_some_and(|s| s.enabled);
        if self.proven {
            self.retry_count = 0;
            self.down_since = None;
        }
        self.proc_sts = ProcSts::Avail;
        self.next_watch += 1;
        let watch = self.next_watch;
        self.watch = Some(watch);
        // Watch first: once the line is logged, the process is watched.
        out.push(Action::Watch { watch, pid });
        if let Some(sw) = self.stall.as_mut() {
            sw.failing_since = None;
            sw.progress_suspected = false;
            if sw.sts != StallSts::Detect {
                sw.sts = StallSts::Init;
            }
            if sw.enabled {
                out.push(Action::StallWatch { watch, pid });
            }
        }
        out.push(event(
            Level::Info,
            format!(
                "{verb} Process: pname= {} pid= {pid} pent_id= {}",
                self.pname, self.pent_id
            ),
            Tag::new(if adopted {
                EventKind::ProcessAdopt
            } else if verb == "Started" {
                EventKind::ProcessStart
            } else {
                EventKind::RestartOk
            })
            .pid(pid),
        ));
        out
    }

    /// At start, nothing to adopt: the first start.
    fn on_not_running(&mut self, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.proc_sts != ProcSts::Init {
            return out;
        }
        self.down_since.get_or_insert(now);
        self.first_start = true;
        self.proc_sts = ProcSts::Restart;
        out.push(log(
            Level::Info,
            format!(
                "Start Process: pname= {} pent_id= {} (not running)",
                self.pname, self.pent_id
            ),
        ));
        out.push(self.attempt(Duration::ZERO, false));
        out
    }

    /// Monitoring is off: the process stays down (`padmin -c start` asks for it again).
    fn not_restarting(&mut self) -> Action {
        self.proc_sts = ProcSts::Unavail;
        log(
            Level::Info,
            format!(
                "monitoring of pent_id= {} is off: not restarting",
                self.pent_id
            ),
        )
    }

    /// The watched process ended: the seed's `Process Down`, then a restart.
    fn on_died(
        &mut self,
        watch: WatchId,
        pid: i32,
        how: DeathKind,
        source: DeathSource,
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if self.watch != Some(watch) {
            return out; // a late report about an earlier watch
        }
        self.watch = None;
        self.pid = None;
        self.down_since.get_or_insert(now);
        self.last_verdict = Some(format!("process down ({how}; evidence: {source})"));
        out.push(Action::Persist);
        if let Some(sw) = self.stall.as_mut() {
            sw.failing_since = None;
            sw.progress_suspected = false;
            if sw.enabled && sw.sts != StallSts::Detect {
                sw.sts = StallSts::Unknown;
            }
        }
        out.push(Action::Unwatch { watch });
        out.push(event(
            Level::Warning,
            format!(
                "Process Down: pname= {} pid= {pid} pent_id= {} ({how}; evidence: {source})",
                self.pname, self.pent_id
            ),
            Tag::new(EventKind::ProcessDown)
                .pid(pid)
                .evidence(source.into()),
        ));
        if !self.monitor_on {
            out.push(self.not_restarting());
            return out;
        }
        self.first_start = false;
        if self.proven {
            self.retry_count = 0;
            self.begin_restart(&mut out);
        } else {
            // The last restart never served: that attempt failed.
            self.proc_sts = ProcSts::Restart;
            self.failed_attempt(
                "the restarted process ended before it ever answered its stall check",
                &mut out,
            );
        }
        out
    }

    /// A start attempt failed.
    fn on_start_failed(&mut self, reason: String) -> Vec<Action> {
        let mut out = Vec::new();
        if self.proc_sts != ProcSts::Restart {
            return out;
        }
        self.failed_attempt(&reason, &mut out);
        out
    }

    /// A stall probe answered: the process is proven, a failing run ends.
    fn on_probe_ok(&mut self, watch: WatchId, now: Instant) -> Vec<Action> {
        let mut out = Vec::new();
        if self.watch != Some(watch) || !self.monitor_on {
            return out;
        }
        let (pent_id, pid) = (self.pent_id, self.pid);
        if !self.proven && self.stall.as_ref().is_some_and(|s| s.enabled) {
            self.proven = true;
            self.retry_count = 0;
            self.down_since = None;
        }
        if let Some(sw) = self.stall.as_mut().filter(|s| s.enabled) {
            if let Some(since) = sw.failing_since.take() {
                out.push(event(
                    Level::Info,
                    format!(
                        "stall check ({}) of pent_id= {pent_id} pid= {} port= {}: answering again after {} s",
                        sw.kind.tag(),
                        pid.unwrap_or(0),
                        sw.port,
                        now.saturating_duration_since(since).as_secs()
                    ),
                Tag::new(EventKind::StallRecovered).pid(pid.unwrap_or(0)).evidence(EventSource::Probe), ));
            }
            if sw.sts != StallSts::Avail {
                sw.sts = StallSts::Avail;
                out.push(log(
                    Level::Info,
                    format!(
                        "stall_chk ({}) of pent_id= {pent_id} pid= {} port= {}: AVAIL",
                        sw.kind.tag(),
                        pid.unwrap_or(0),
                        sw.port
                    ),
                ));
            }
        }
        out
    }

    /// The pid a stall verdict on `watch` would be about: `watch` is the current
    /// watch, monitoring is on, and the stall check is enabled and has not judged
    /// this watch yet.
    fn judgeable(&self, watch: WatchId) -> Option<i32> {
        if self.watch != Some(watch) || !self.monitor_on {
            return None;
        }
        let sw = self.stall.as_ref()?;
        if sw.enabled && sw.judged != Some(watch) {
            self.pid
        } else {
            None
        }
    }

    /// A stall probe failed: a verdict once probes have failed for the retry-over time.
    fn on_probe_failed(
        &mut self,
        watch: WatchId,
        reason: String,
        started: Instant,
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(pid) = self.judgeable(watch) else {
            return out;
        };
        let pent_id = self.pent_id;
        let Some(sw) = self.stall.as_mut() else {
            return out;
        };
        let since = *sw.failing_since.get_or_insert(started);
        let failing = started.saturating_duration_since(since);
        out.push(event(
            Level::Warning,
            format!(
                "stall check ({}) of pent_id= {pent_id} pid= {pid} port= {} failed: {reason} (failing for {} s of {} s)",
                sw.kind.tag(),
                sw.port,
                failing.as_secs(),
                sw.duration.as_secs()
            ),
        Tag::new(EventKind::ProbeFailed).pid(pid).evidence(EventSource::Probe), ));
        if failing >= sw.duration {
            let why = format!(
                "stall evidence (probe): pent_id= {pent_id} probes failing for {} s (retry-over time {} s)",
                failing.as_secs(),
                sw.duration.as_secs()
            );
            self.stall_verdict(watch, pid, why, EventSource::Probe, now, &mut out);
        }
        out
    }

    /// Kernel evidence suspects (or no longer suspects) a stall: for the load balancer only.
    fn on_progress_suspect(&mut self, watch: WatchId, on: bool) {
        if self.watch == Some(watch) {
            if let Some(sw) = self.stall.as_mut() {
                sw.progress_suspected = on && sw.enabled && self.monitor_on;
            }
        }
    }

    /// Kernel evidence: no progress for the window; a verdict, or a line when observing.
    fn on_no_progress(
        &mut self,
        watch: WatchId,
        figures: progress::Figures,
        now: Instant,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(pid) = self.judgeable(watch) else {
            return out;
        };
        let Some(sw) = self.stall.as_ref().filter(|s| s.kernel) else {
            return out;
        };
        let why = format!(
            "stall evidence (kernel): pent_id= {} pid= {pid} port= {}: {figures}",
            self.pent_id, sw.port
        );
        if sw.kernel_observe {
            out.push(event(
                Level::Warning,
                format!("Stall Suspected (observe only): {why}"),
                Tag::new(EventKind::StallSuspected)
                    .pid(pid)
                    .evidence(EventSource::Kernel),
            ));
            return out;
        }
        self.stall_verdict(watch, pid, why, EventSource::Kernel, now, &mut out);
        out
    }

    /// The forced kill of a stalled process succeeded or failed.
    fn on_kill_result(
        &mut self,
        watch: WatchId,
        pid: i32,
        result: Result<(), String>,
    ) -> Vec<Action> {
        let mut out = Vec::new();
        if self.watch != Some(watch) {
            return out;
        }
        match result {
            Ok(()) => {
                out.push(event(
                    Level::Warning,
                    format!("Killed Process: pid= {pid}"),
                    Tag::new(EventKind::Kill).pid(pid),
                ));
            }
            Err(e) => {
                out.push(event(
                    Level::Error,
                    format!("Can not killed Process: pid= {pid}"),
                    Tag::new(EventKind::KillFailed).pid(pid),
                ));
                out.push(log(
                    Level::Error,
                    format!(
                        "kill of pid {pid} failed: {e}; stall watching of pent_id= {} stops",
                        self.pent_id
                    ),
                ));
                let retry_over = if let Some(sw) = self.stall.as_mut() {
                    sw.enabled = false;
                    sw.sts = StallSts::Unavail;
                    sw.retry_over_on_kill_failure
                } else {
                    false
                };
                out.push(Action::StallStop { watch });
                if retry_over {
                    // `continue` drops the process from watching altogether.
                    if self.retry_over_action == RetryOverAction::Continue {
                        self.watch = None;
                        out.push(Action::Unwatch { watch });
                    }
                    self.retry_over(&mut out);
                }
            }
        }
        out
    }

    /// `padmin -c stop`: monitoring off.
    fn on_monitor_off(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        self.monitor_on = false;
        if let Some(sw) = self.stall.as_mut().filter(|s| s.enabled) {
            sw.failing_since = None;
            sw.progress_suspected = false;
            sw.sts = StallSts::Unknown;
        }
        out.push(event(
            Level::Info,
            format!("monitor_sts of pent_id= {} set to off", self.pent_id),
            Tag::new(EventKind::MonitorOff),
        ));
        out
    }

    /// `padmin -c start`: monitoring on; a process that is down is started.
    fn on_monitor_on(&mut self) -> Vec<Action> {
        let mut out = Vec::new();
        if self.monitor_on {
            return out;
        }
        self.monitor_on = true;
        out.push(event(
            Level::Info,
            format!("monitor_sts of pent_id= {} set to on", self.pent_id),
            Tag::new(EventKind::MonitorOn),
        ));
        if self.proc_sts == ProcSts::Unavail {
            // It died while monitoring was off, or was dropped at retry-over:
            // an operator turning monitoring on asks for it to run.
            self.retry_count = 0;
            self.begin_restart(&mut out);
        }
        out
    }

    /// A stall is judged: the seed's line, the evidence, the forced kill.
    fn stall_verdict(
        &mut self,
        watch: WatchId,
        pid: i32,
        why: String,
        source: EventSource,
        now: Instant,
        out: &mut Vec<Action>,
    ) {
        self.down_since.get_or_insert(now);
        self.stalled_pid = Some(pid);
        self.last_verdict = Some(why.clone());
        out.push(Action::Persist);
        let Some(sw) = self.stall.as_mut() else {
            return;
        };
        sw.sts = StallSts::Detect;
        sw.judged = Some(watch);
        sw.detections += 1;
        sw.failing_since = None;
        sw.progress_suspected = false;
        out.push(event(
            Level::Error,
            sw.find_line(pid),
            Tag::new(EventKind::StallDetected).pid(pid).evidence(source),
        ));
        out.push(event(
            Level::Error,
            why,
            Tag::new(EventKind::StallEvidence).pid(pid).evidence(source),
        ));
        if sw.stop_after_detect {
            // EXEC error 1: no more stall watching; death watching goes on.
            sw.enabled = false;
            out.push(log(
                Level::Warning,
                format!(
                    "stall watching of pent_id= {} stops (EXEC error 1); death watching continues",
                    self.pent_id
                ),
            ));
            out.push(Action::StallStop { watch });
        }
        out.push(Action::KillStalled { watch, pid });
    }

    /// One more failed attempt: the next attempt, or the retry-over action.
    fn failed_attempt(&mut self, reason: &str, out: &mut Vec<Action>) {
        self.retry_count += 1;
        let allowed = self.allowed_attempts();
        out.push(event(
            Level::Error,
            format!(
                "Restart Failed: pname= {} pent_id= {} attempt {}/{}: {reason}",
                self.pname, self.pent_id, self.retry_count, allowed
            ),
            Tag::new(EventKind::RestartFailed),
        ));
        if !self.monitor_on {
            // Monitoring was turned off while this attempt ran: no next attempt and no
            // retry-over action; `padmin -c start` asks for the process again.
            out.push(self.not_restarting());
            return;
        }
        if self.retry_count >= allowed {
            self.retry_over(out);
        } else {
            out.push(self.attempt(self.retry_delay, true));
        }
    }

    /// How long the entry has not been healthy, if it is not.
    pub fn down_for(&self, now: Instant) -> Option<Duration> {
        self.down_since.map(|s| now.saturating_duration_since(s))
    }

    fn begin_restart(&mut self, out: &mut Vec<Action>) {
        self.proc_sts = ProcSts::Restart;
        if self.allowed_attempts() == 0 {
            out.push(log(
                Level::Error,
                format!("retry count of pent_id= {} is 0: no restart", self.pent_id),
            ));
            self.retry_over(out);
            return;
        }
        out.push(self.attempt(Duration::ZERO, true));
    }

    /// The first start gets at least one attempt even with a retry count of 0.
    fn allowed_attempts(&self) -> u32 {
        if self.first_start {
            self.retry_limit.max(1)
        } else {
            self.retry_limit
        }
    }

    fn attempt(&self, delay: Duration, kill_remnants: bool) -> Action {
        Action::Restart {
            attempt: self.retry_count + 1,
            of: self.allowed_attempts(),
            delay,
            kill_remnants,
        }
    }

    fn retry_over(&mut self, out: &mut Vec<Action>) {
        self.proc_sts = ProcSts::Unavail;
        self.retried_over = true;
        self.last_verdict = Some(format!("retry over ({})", self.retry_over_action.as_str()));
        out.push(Action::Persist);
        let act = self.retry_over_action;
        out.push(event(
            Level::Error,
            format!(
                "Retry Over: pname= {} pent_id= {} retry_over_action= {}",
                self.pname,
                self.pent_id,
                act.as_str()
            ),
            Tag::new(EventKind::RetryOver),
        ));
        out.push(Action::RetryOver(act));
        match act {
            RetryOverAction::Continue => {}
            RetryOverAction::Shutdown => out.push(Action::Exit(0)),
            RetryOverAction::Exit => out.push(Action::Exit(EXIT_RETRY_OVER)),
        }
    }
}

#[cfg(test)]
mod props;
#[cfg(test)]
mod tests;
