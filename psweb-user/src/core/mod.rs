//! The decisions, and nothing but decisions.
//!
//! `Entry::on(evidence, now) -> Vec<Action>`: no I/O, no clock reads, no tokio. Time
//! comes in as an argument (a monotonic `Instant`), so a wall-clock jump cannot reach
//! any rule here, and every rule is tested in microseconds (see `tests.rs`).

use crate::pfile::{ProcEntry, RetryOverAction, EXIT_RETRY_OVER};
use serde::Serialize;
use std::fmt;
use std::time::{Duration, Instant};

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

/// Where a piece of death evidence came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Ebpf,
    Pidfd,
    Procfs,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ebpf => "ebpf",
            Self::Pidfd => "pidfd",
            Self::Procfs => "procfs",
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
        source: Source,
    },
    /// A start attempt failed (script non-zero, timed out, or process never appeared).
    StartFailed { reason: String },
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
    Watch {
        watch: WatchId,
        pid: i32,
    },
    /// Stop watching (it is dead, or monitoring is off).
    Unwatch {
        watch: WatchId,
    },
    /// Run the restart script, after `delay`. When `kill_remnants`, first SIGKILL what is
    /// left of the previous instance (its session / process group).
    Restart {
        attempt: u32,
        of: u32,
        delay: Duration,
        kill_remnants: bool,
    },
    /// The entry is out of retries: the retry-over action (already logged).
    RetryOver(RetryOverAction),
    /// End pcheck with this exit status.
    Exit(u8),
    Log(Level, String),
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
    pub stall: Option<StallSts>,
    watch: Option<WatchId>,
    next_watch: WatchId,
    /// An attempt in flight is the first start (not a restart).
    first_start: bool,
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
            stall: cfg.stall.as_ref().map(|_| StallSts::Init),
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
        let mut out = Vec::new();
        match ev {
            Evidence::Running { pid, adopted } => {
                if self.proc_sts == ProcSts::Avail {
                    return out;
                }
                if !self.first_start && !adopted {
                    self.restart_count += 1;
                    self.rerun_at = Some(now);
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
                self.retry_count = 0;
                self.proc_sts = ProcSts::Avail;
                self.next_watch += 1;
                let watch = self.next_watch;
                self.watch = Some(watch);
                // Watch first: once the line is logged, the process is watched.
                out.push(Action::Watch { watch, pid });
                out.push(Action::Log(
                    Level::Info,
                    format!(
                        "{verb} Process: pname= {} pid= {pid} pent_id= {}",
                        self.pname, self.pent_id
                    ),
                ));
            }
            Evidence::NotRunning => {
                if self.proc_sts != ProcSts::Init {
                    return out;
                }
                self.first_start = true;
                self.proc_sts = ProcSts::Restart;
                out.push(Action::Log(
                    Level::Info,
                    format!(
                        "Start Process: pname= {} pent_id= {} (not running)",
                        self.pname, self.pent_id
                    ),
                ));
                out.push(self.attempt(Duration::ZERO, false));
            }
            Evidence::Died {
                watch,
                pid,
                how,
                source,
            } => {
                if self.watch != Some(watch) {
                    return out; // a late report about an earlier watch
                }
                self.watch = None;
                self.pid = None;
                out.push(Action::Unwatch { watch });
                out.push(Action::Log(
                    Level::Warning,
                    format!(
                        "Process Down: pname= {} pid= {pid} pent_id= {} ({how}; evidence: {source})",
                        self.pname, self.pent_id
                    ),
                ));
                if !self.monitor_on {
                    self.proc_sts = ProcSts::Unavail;
                    out.push(Action::Log(
                        Level::Info,
                        format!(
                            "monitoring of pent_id= {} is off: not restarting",
                            self.pent_id
                        ),
                    ));
                    return out;
                }
                self.retry_count = 0;
                self.first_start = false;
                self.begin_restart(&mut out);
            }
            Evidence::StartFailed { reason } => {
                if self.proc_sts != ProcSts::Restart {
                    return out;
                }
                self.retry_count += 1;
                let allowed = self.allowed_attempts();
                out.push(Action::Log(
                    Level::Error,
                    format!(
                        "Restart Failed: pname= {} pent_id= {} attempt {}/{}: {reason}",
                        self.pname, self.pent_id, self.retry_count, allowed
                    ),
                ));
                if self.retry_count >= allowed {
                    self.retry_over(&mut out);
                } else {
                    out.push(self.attempt(self.retry_delay, true));
                }
            }
            Evidence::MonitorOff => {
                self.monitor_on = false;
                out.push(Action::Log(
                    Level::Info,
                    format!("monitor_sts of pent_id= {} set to off", self.pent_id),
                ));
            }
            Evidence::MonitorOn => {
                if self.monitor_on {
                    return out;
                }
                self.monitor_on = true;
                out.push(Action::Log(
                    Level::Info,
                    format!("monitor_sts of pent_id= {} set to on", self.pent_id),
                ));
                if self.proc_sts == ProcSts::Unavail {
                    // It died while monitoring was off, or was dropped at retry-over:
                    // an operator turning monitoring on asks for it to run.
                    self.retry_count = 0;
                    self.begin_restart(&mut out);
                }
            }
        }
        out
    }

    fn begin_restart(&mut self, out: &mut Vec<Action>) {
        self.proc_sts = ProcSts::Restart;
        if self.allowed_attempts() == 0 {
            out.push(Action::Log(
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
        let act = self.retry_over_action;
        out.push(Action::Log(
            Level::Error,
            format!(
                "Retry Over: pname= {} pent_id= {} retry_over_action= {}",
                self.pname,
                self.pent_id,
                act.as_str()
            ),
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
mod tests;
