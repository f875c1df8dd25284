//! What the load balancer is told about an entry: up, drain or down, with a short
//! reason and, during a warm-up after a restart, a weight.
//!
//! A pure rule over the entry's decision state: the agent-check server, the health
//! endpoint, the HAProxy runtime-API push, events and metrics all read its output.

use super::{Entry, ProcSts};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::{Duration, Instant};

/// The state the balancer is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LbState {
    Up,
    Drain,
    Down,
}

impl LbState {
    pub const ALL: [LbState; 3] = [Self::Up, Self::Drain, Self::Down];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Drain => "drain",
            Self::Down => "down",
        }
    }
}

impl fmt::Display for LbState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the rule looks at, taken from the entry and the agent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LbInputs {
    /// `None`: not yet settled (pcheck has not found or started the process).
    pub proc: Option<ProcSts>,
    /// The running process has proven itself (adopted, answered its stall check, or
    /// there is no stall check to answer).
    pub proven: bool,
    /// A stall verdict was given on the process that runs now (it is being killed,
    /// or the kill failed).
    pub stalled: bool,
    /// The entry went to retry-over.
    pub retried_over: bool,
    /// The stall rule suspects a stall (a failed probe, or work waiting with no
    /// progress for half of the kernel window).
    pub suspected: bool,
    /// `padmin -c drain -n ID`, until `-c ready -n ID`.
    pub operator_drain: bool,
    /// Monitoring is off (`padmin -c stop -n ID`).
    pub monitor_off: bool,
}

impl LbInputs {
    /// The rule's inputs from an entry's decision state.
    pub fn of(e: &Entry, operator_drain: bool) -> Self {
        let running_pid = if e.proc_sts == ProcSts::Avail {
            e.pid
        } else {
            None
        };
        Self {
            proc: (e.proc_sts != ProcSts::Init).then_some(e.proc_sts),
            proven: e.proven,
            stalled: running_pid.is_some() && e.stalled_pid == running_pid,
            retried_over: e.retried_over,
            suspected: e
                .stall
                .as_ref()
                .is_some_and(|s| s.enabled && (s.failing_since.is_some() || s.progress_suspected)),
            operator_drain,
            monitor_off: !e.monitor_on,
        }
    }
}

/// The rule's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LbView {
    pub state: LbState,
    /// Short, one line.
    pub reason: &'static str,
}

/// The first state that holds wins: down, then drain, then up.
pub fn decide(i: &LbInputs) -> LbView {
    let v = |state, reason| LbView { state, reason };
    match i.proc {
        None => return v(LbState::Down, "starting"),
        Some(ProcSts::Init) => return v(LbState::Down, "starting"),
        Some(ProcSts::Restart) => return v(LbState::Down, "restarting"),
        Some(ProcSts::Unavail) if i.retried_over => return v(LbState::Down, "retry over"),
        Some(ProcSts::Unavail) => return v(LbState::Down, "not running"),
        Some(ProcSts::Avail) => {}
    }
    if i.stalled {
        return v(LbState::Down, "stalled");
    }
    if !i.proven {
        return v(LbState::Down, "restarted, not answering yet");
    }
    if i.suspected {
        return v(LbState::Drain, "stall suspected");
    }
    if i.operator_drain {
        return v(LbState::Drain, "drained by operator");
    }
    if i.monitor_off {
        return v(LbState::Drain, "monitoring off");
    }
    v(LbState::Up, "ready")
}

/// The weight (percent) during the warm-up after a restart: from 1% when the new
/// process is up to 100% at `warmup`. `None` without a warm-up.
pub fn weight(up_since: Option<Instant>, warmup: Option<Duration>, now: Instant) -> Option<u8> {
    let warmup = warmup.filter(|w| !w.is_zero())?;
    let Some(since) = up_since else {
        return Some(100);
    };
    let done = now.saturating_duration_since(since).as_millis();
    let pct = (done * 100 / warmup.as_millis().max(1)).clamp(1, 100);
    Some(u8::try_from(pct).unwrap_or(100))
}

/// The agent-check answer line (HAProxy's agent protocol), without the newline.
pub fn agent_line(v: &LbView, weight: Option<u8>) -> String {
    let reason: String = v
        .reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    match (v.state, weight) {
        (LbState::Up, Some(w)) => format!("up ready {w}%"),
        (LbState::Up, None) => "up ready".to_string(),
        (LbState::Drain, _) => format!("drain #{reason}"),
        (LbState::Down, _) => format!("down #{reason}"),
    }
}

/// For a question about several entries: the worst state wins (down, then drain).
pub fn worst<'a>(views: impl IntoIterator<Item = &'a LbView>) -> Option<&'a LbView> {
    views.into_iter().max_by_key(|v| v.state)
}

/// HAProxy's forced maintenance flag in `srv_admin_state` (`show servers state`).
pub const HAPROXY_FMAINT: u32 = 0x01;
/// HAProxy's forced drain flag.
pub const HAPROXY_FDRAIN: u32 = 0x08;

/// What psweb itself has set on a server through HAProxy's runtime API.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PushedMarks {
    /// psweb put the server in DRAIN (`set server ... state drain`).
    pub drained: bool,
    /// psweb forced its health down (`set server ... health down`).
    pub downed: bool,
}

/// The runtime-API commands that tell HAProxy's `server` (BACKEND/SERVER) the new
/// state, given the server's admin flags now. psweb never clears a MAINT or a
/// DRAIN it did not set: an operator's maintenance survives psweb's `ready`.
pub fn runtime_commands(
    server: &str,
    state: LbState,
    admin_flags: u32,
    marks: PushedMarks,
) -> (Vec<String>, PushedMarks) {
    let mut cmds = Vec::new();
    let mut m = marks;
    let operator_maint = admin_flags & HAPROXY_FMAINT != 0;
    let drained_now = admin_flags & HAPROXY_FDRAIN != 0;
    match state {
        LbState::Down => {
            cmds.push(format!("set server {server} health down"));
            m.downed = true;
        }
        LbState::Drain => {
            if m.downed {
                cmds.push(format!("set server {server} health up"));
                m.downed = false;
            }
            if !drained_now && !operator_maint {
                cmds.push(format!("set server {server} state drain"));
                m.drained = true;
            }
        }
        LbState::Up => {
            if m.downed {
                cmds.push(format!("set server {server} health up"));
                m.downed = false;
            }
            // `state ready` clears MAINT too: only when psweb's own drain is the
            // only forced state.
            if m.drained && drained_now && !operator_maint {
                cmds.push(format!("set server {server} state ready"));
            }
            m.drained = false;
        }
    }
    (cmds, m)
}

/// The `srv_admin_state` of `server` (BACKEND/SERVER) in the output of
/// `show servers state BACKEND`.
pub fn haproxy_admin_state(show: &str, server: &str) -> Option<u32> {
    let (backend, name) = server.split_once('/')?;
    show.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 6 && f[1] == backend && f[3] == name)
        .and_then(|f| f[6].parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{DeathKind, DeathSource, Evidence};
    use crate::pfile::{
        EntrySettings, KernelAction, ProcEntry, RetryOverAction, StallCheck, StallEvidence,
        StallKind, TlsVerifyCfg,
    };

    fn inputs(proc: ProcSts) -> LbInputs {
        LbInputs {
            proc: Some(proc),
            proven: true,
            ..LbInputs::default()
        }
    }

    #[test]
    fn precedence_table() {
        use LbState::*;
        let avail = inputs(ProcSts::Avail);
        let rows: Vec<(&str, LbInputs, LbState, &str)> = vec![
            ("not yet settled", LbInputs::default(), Down, "starting"),
            ("running, proven", avail.clone(), Up, "ready"),
            (
                "restarting",
                LbInputs {
                    operator_drain: true,
                    ..inputs(ProcSts::Restart)
                },
                Down,
                "restarting",
            ),
            (
                "retry over",
                LbInputs {
                    retried_over: true,
                    ..inputs(ProcSts::Unavail)
                },
                Down,
                "retry over",
            ),
            (
                "died with monitoring off",
                LbInputs {
                    monitor_off: true,
                    ..inputs(ProcSts::Unavail)
                },
                Down,
                "not running",
            ),
            (
                "stall verdict wins over suspicion and drain",
                LbInputs {
                    stalled: true,
                    suspected: true,
                    operator_drain: true,
                    ..avail.clone()
                },
                Down,
                "stalled",
            ),
            (
                "restarted, before its first answer",
                LbInputs {
                    proven: false,
                    suspected: true,
                    ..avail.clone()
                },
                Down,
                "restarted, not answering yet",
            ),
            (
                "suspicion drains",
                LbInputs {
                    suspected: true,
                    operator_drain: true,
                    ..avail.clone()
                },
                Drain,
                "stall suspected",
            ),
            (
                "operator drain",
                LbInputs {
                    operator_drain: true,
                    monitor_off: true,
                    ..avail.clone()
                },
                Drain,
                "drained by operator",
            ),
            (
                "monitoring off drains",
                LbInputs {
                    monitor_off: true,
                    ..avail.clone()
                },
                Drain,
                "monitoring off",
            ),
        ];
        for (what, i, state, reason) in rows {
            let v = decide(&i);
            assert_eq!((v.state, v.reason), (state, reason), "{what}");
            assert!(!agent_line(&v, None).contains('\n'), "{what}");
        }
    }

    #[test]
    fn agent_lines_and_weights() {
        let t = Instant::now();
        let up = LbView {
            state: LbState::Up,
            reason: "ready",
        };
        let w = Some(Duration::from_secs(20));
        assert_eq!(weight(Some(t), None, t), None);
        assert_eq!(weight(Some(t), w, t), Some(1));
        assert_eq!(weight(Some(t), w, t + Duration::from_secs(5)), Some(25));
        assert_eq!(weight(Some(t), w, t + Duration::from_secs(60)), Some(100));
        assert_eq!(weight(None, w, t), Some(100), "adopted: full weight");
        assert_eq!(agent_line(&up, None), "up ready");
        assert_eq!(agent_line(&up, Some(25)), "up ready 25%");
        let down = LbView {
            state: LbState::Down,
            reason: "retry over",
        };
        assert_eq!(agent_line(&down, Some(25)), "down #retry over");
        let drain = LbView {
            state: LbState::Drain,
            reason: "stall suspected",
        };
        assert_eq!(agent_line(&drain, None), "drain #stall suspected");
        assert_eq!(worst([&up, &drain, &down]), Some(&down));
        assert_eq!(worst([&up, &drain]), Some(&drain));
        assert_eq!(worst([]), None);
    }

    #[test]
    fn runtime_api_never_clears_what_psweb_did_not_set() {
        use LbState::*;
        let srv = "be/s1";
        let none = PushedMarks::default();
        let ours = PushedMarks {
            drained: true,
            downed: false,
        };
        let downed = PushedMarks {
            drained: false,
            downed: true,
        };
        type Row<'a> = (
            &'a str,
            LbState,
            u32,
            PushedMarks,
            Vec<&'a str>,
            PushedMarks,
        );
        let rows: Vec<Row> = vec![
            (
                "drain",
                Drain,
                0,
                none,
                vec!["set server be/s1 state drain"],
                ours,
            ),
            (
                "already drained by someone",
                Drain,
                HAPROXY_FDRAIN,
                none,
                vec![],
                none,
            ),
            (
                "operator maintenance",
                Drain,
                HAPROXY_FMAINT,
                none,
                vec![],
                none,
            ),
            (
                "ready after our drain",
                Up,
                HAPROXY_FDRAIN,
                ours,
                vec!["set server be/s1 state ready"],
                none,
            ),
            (
                "operator's maint kept",
                Up,
                HAPROXY_FDRAIN | HAPROXY_FMAINT,
                ours,
                vec![],
                none,
            ),
            (
                "operator's drain kept",
                Up,
                HAPROXY_FDRAIN,
                none,
                vec![],
                none,
            ),
            (
                "down",
                Down,
                0,
                none,
                vec!["set server be/s1 health down"],
                downed,
            ),
            (
                "up after down",
                Up,
                0,
                downed,
                vec!["set server be/s1 health up"],
                none,
            ),
            ("up, nothing set", Up, 0, none, vec![], none),
        ];
        for (what, state, flags, marks, cmds, after) in rows {
            let (got, m) = runtime_commands(srv, state, flags, marks);
            assert_eq!(got, cmds, "{what}");
            assert_eq!(m, after, "{what}");
        }
        let show = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state\n3 be 1 s1 127.0.0.1 2 8 1 1 0\n3 be 2 s2 127.0.0.1 2 0 1 1 0\n";
        assert_eq!(haproxy_admin_state(show, "be/s1"), Some(8));
        assert_eq!(haproxy_admin_state(show, "be/s2"), Some(0));
        assert_eq!(haproxy_admin_state(show, "be/s3"), None);
    }

    fn entry(stall: bool, retry: u32) -> Entry {
        Entry::new(&ProcEntry {
            pent_id: 1,
            pname: "/usr/sbin/httpd".into(),
            restart_script: "/etc/psweb/httpd.rc".into(),
            script_pos: Default::default(),
            retry_limit: retry,
            pidfile: None,
            user: None,
            owner: None,
            settings: EntrySettings {
                retry_over_action: RetryOverAction::Continue,
                ..EntrySettings::default()
            },
            stall: stall.then(|| StallCheck {
                kind: StallKind::Web,
                block_name: "_bi_webserv".into(),
                pos: Default::default(),
                interval: Duration::from_secs(10),
                duration: Duration::from_secs(10),
                port: 80,
                host: None,
                probe_timeout: None,
                path: None,
                stop_after_detect: false,
                retry_over_on_kill_failure: false,
                evidence: StallEvidence::Probe,
                kernel_window: Duration::from_secs(2),
                kernel_action: KernelAction::Kill,
                tls_verify: TlsVerifyCfg::System,
                status_classes: None,
            }),
            line: 1,
            lb: Default::default(),
        })
    }

    fn state(e: &Entry) -> (LbState, &'static str) {
        let v = decide(&LbInputs::of(e, false));
        (v.state, v.reason)
    }

    fn watch_of(e: &Entry) -> u64 {
        e.watch_id().expect("watched")
    }

    /// One entry through every transition, as the agent feeds it.
    #[test]
    fn an_entry_through_its_transitions() {
        use LbState::*;
        let t = Instant::now();
        let mut e = entry(true, 1);
        assert_eq!(state(&e), (Down, "starting"));
        e.on(
            Evidence::Running {
                pid: 10,
                adopted: true,
            },
            t,
        );
        assert_eq!(
            state(&e),
            (Up, "ready"),
            "adopted: up until a probe says otherwise"
        );
        let w = watch_of(&e);
        e.on(
            Evidence::ProbeFailed {
                watch: w,
                reason: "timeout".into(),
                started: t,
            },
            t,
        );
        assert_eq!(state(&e), (Drain, "stall suspected"));
        e.on(Evidence::ProbeOk { watch: w }, t);
        assert_eq!(state(&e), (Up, "ready"));
        let later = t + Duration::from_secs(10);
        for at in [t, later] {
            e.on(
                Evidence::ProbeFailed {
                    watch: w,
                    reason: "timeout".into(),
                    started: at,
                },
                at,
            );
        }
        assert_eq!(
            state(&e),
            (Down, "stalled"),
            "verdict: down while it is killed"
        );
        e.on(
            Evidence::Died {
                watch: w,
                pid: 10,
                how: DeathKind::Signaled(9),
                source: DeathSource::Pidfd,
            },
            later,
        );
        assert_eq!(state(&e), (Down, "restarting"));
        e.on(
            Evidence::Running {
                pid: 11,
                adopted: false,
            },
            later,
        );
        assert_eq!(state(&e), (Down, "restarted, not answering yet"));
        let w = watch_of(&e);
        e.on(Evidence::ProbeOk { watch: w }, later);
        assert_eq!(state(&e), (Up, "ready"));
        assert_eq!(decide(&LbInputs::of(&e, true)).state, Drain);
        e.on(Evidence::MonitorOff, later);
        assert_eq!(state(&e), (Drain, "monitoring off"));
        e.on(Evidence::MonitorOn, later);
        e.on(
            Evidence::Died {
                watch: w,
                pid: 11,
                how: DeathKind::Signaled(9),
                source: DeathSource::Pidfd,
            },
            later,
        );
        e.on(
            Evidence::StartFailed {
                reason: "exit 1".into(),
            },
            later,
        );
        assert_eq!(state(&e), (Down, "retry over"));
    }

    /// Kernel evidence's suspicion (half a window with no progress) drains the entry
    /// until the server progresses again; one about an older process is ignored.
    #[test]
    fn progress_suspicion_drains_until_progress() {
        use LbState::*;
        let t = Instant::now();
        let mut e = entry(true, 1);
        e.on(
            Evidence::Running {
                pid: 10,
                adopted: true,
            },
            t,
        );
        let w = watch_of(&e);
        e.on(
            Evidence::ProgressSuspect {
                watch: w + 1,
                on: true,
            },
            t,
        );
        assert_eq!(state(&e), (Up, "ready"), "another watch's suspicion");
        e.on(Evidence::ProgressSuspect { watch: w, on: true }, t);
        assert_eq!(state(&e), (Drain, "stall suspected"));
        e.on(
            Evidence::ProgressSuspect {
                watch: w,
                on: false,
            },
            t,
        );
        assert_eq!(state(&e), (Up, "ready"));
        e.on(Evidence::ProgressSuspect { watch: w, on: true }, t);
        e.on(Evidence::MonitorOff, t);
        e.on(Evidence::MonitorOn, t);
        assert_eq!(state(&e), (Up, "ready"), "monitoring off ends a suspicion");
        e.on(Evidence::ProgressSuspect { watch: w, on: true }, t);
        e.on(
            Evidence::Died {
                watch: w,
                pid: 10,
                how: DeathKind::Signaled(9),
                source: DeathSource::Pidfd,
            },
            t,
        );
        e.on(
            Evidence::Running {
                pid: 11,
                adopted: false,
            },
            t,
        );
        let w2 = watch_of(&e);
        e.on(Evidence::ProbeOk { watch: w2 }, t);
        assert_eq!(state(&e), (Up, "ready"), "a new process starts unsuspected");
    }

    #[test]
    fn without_a_stall_check_up_as_soon_as_it_runs() {
        let t = Instant::now();
        let mut e = entry(false, 3);
        e.on(Evidence::NotRunning, t);
        assert_eq!(state(&e), (LbState::Down, "restarting"));
        e.on(
            Evidence::Running {
                pid: 5,
                adopted: false,
            },
            t,
        );
        assert_eq!(state(&e), (LbState::Up, "ready"));
    }
}
