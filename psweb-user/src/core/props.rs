//! Properties of the decisions, for any sequence of evidence and times (proptest).
//!
//! A small world drives one entry: restart outcomes arrive only after a Restart
//! action, kill results only after a KillStalled, probe and death reports name the
//! current watch (or, sometimes, a stale one), and time moves on by random steps,
//! now and then by hours (a suspended host).

use super::*;
use crate::pfile::{
    EntrySettings, KernelAction, ProcEntry, StallCheck, StallEvidence, StallKind, TlsVerifyCfg,
};
use proptest::prelude::*;
use std::path::PathBuf;

#[derive(Clone, Debug)]
enum Step {
    /// The pending restart's process appears.
    RestartOk,
    /// The pending restart fails.
    RestartFails,
    /// The watched process dies.
    Dies,
    /// A death report about an earlier watch.
    StaleDeath,
    ProbeOk,
    ProbeFails,
    QueueStuck,
    /// The pending forced kill succeeds / fails.
    KillOk,
    KillFails,
    MonitorOff,
    MonitorOn,
    /// Time passes: milliseconds.
    Wait(u64),
    /// The host is suspended: hours pass.
    Suspend(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => Just(Step::RestartOk),
        2 => Just(Step::RestartFails),
        2 => Just(Step::Dies),
        1 => Just(Step::StaleDeath),
        3 => Just(Step::ProbeOk),
        5 => Just(Step::ProbeFails),
        1 => Just(Step::QueueStuck),
        2 => Just(Step::KillOk),
        1 => Just(Step::KillFails),
        1 => Just(Step::MonitorOff),
        1 => Just(Step::MonitorOn),
        6 => (0u64..30_000).prop_map(Step::Wait),
        1 => (1u64..48).prop_map(Step::Suspend),
    ]
}

#[derive(Clone, Debug)]
struct Config {
    retry_limit: u32,
    act: RetryOverAction,
    stall: Option<(u64, u64, bool, bool, bool)>,
    adopted_at_start: bool,
}

fn config() -> impl Strategy<Value = Config> {
    let act = prop_oneof![
        Just(RetryOverAction::Continue),
        Just(RetryOverAction::Shutdown),
        Just(RetryOverAction::Exit),
    ];
    // (interval s, duration s, EXEC error 1, ACTION error 1, kernel evidence)
    let stall = proptest::option::of((
        10u64..30,
        10u64..120,
        any::<bool>(),
        any::<bool>(),
        any::<bool>(),
    ));
    (0u32..5, act, stall, any::<bool>()).prop_map(|(retry_limit, act, stall, adopted_at_start)| {
        Config {
            retry_limit,
            act,
            stall,
            adopted_at_start,
        }
    })
}

fn entry(c: &Config) -> Entry {
    Entry::new(&ProcEntry {
        pent_id: 1,
        pname: PathBuf::from("/usr/sbin/httpd"),
        restart_script: PathBuf::from("/etc/psweb/httpd.rc"),
        script_pos: Default::default(),
        retry_limit: c.retry_limit,
        pidfile: None,
        user: None,
        owner: None,
        lb: Default::default(),
        settings: EntrySettings {
            retry_over_action: c.act,
            retry_delay: Duration::from_millis(250),
            ..EntrySettings::default()
        },
        stall: c
            .stall
            .map(|(interval, duration, stop, kill_fail, kernel)| StallCheck {
                kind: StallKind::Web,
                block_name: "_bi_webserv".into(),
                pos: Default::default(),
                interval: Duration::from_secs(interval),
                duration: Duration::from_secs(duration.max(interval)),
                port: 8080,
                host: None,
                probe_timeout: None,
                path: None,
                stop_after_detect: stop,
                retry_over_on_kill_failure: kill_fail,
                evidence: if kernel {
                    StallEvidence::Kernel
                } else {
                    StallEvidence::Probe
                },
                kernel_window: Duration::from_secs(2),
                kernel_action: KernelAction::Kill,
                tls_verify: TlsVerifyCfg::System,
                status_classes: None,
            }),
        line: 1,
    })
}

fn verdicts(acts: &[Action]) -> Vec<Option<EventSource>> {
    acts.iter()
        .filter_map(|a| match a {
            Action::Log(_, _, Some(t)) if t.kind == EventKind::StallDetected => Some(t.evidence),
            _ => None,
        })
        .collect()
}

/// Runs the world; checks every property after every step. Returns when each stall
/// verdict was given.
fn check(c: &Config, steps: &[Step]) -> Result<Vec<Instant>, TestCaseError> {
    let mut given = Vec::new();
    let mut e = entry(&c.clone());
    let duration = e.stall.as_ref().map(|s| s.duration);
    let t0 = Instant::now();
    let mut now = t0;
    let mut next_pid = 100;
    let mut monitor_on = true;
    let mut restart_pending = false;
    let mut kill_pending: Option<(WatchId, i32)> = None;
    let mut old_watches: Vec<WatchId> = Vec::new();
    // Restart actions since the entry was last healthy (or an operator asked anew).
    let mut restarts = 0u32;
    let allowed = c.retry_limit.max(1);
    let mut retried_over_continue = false;
    let mut exited = false;
    // The current run of failed probes of the current watch: when the first was due.
    let mut failing_since: Option<Instant> = None;
    let mut last_probe_verdict: Option<(WatchId, Instant)> = None;

    let first = if c.adopted_at_start {
        next_pid += 1;
        Evidence::Running {
            pid: next_pid,
            adopted: true,
        }
    } else {
        Evidence::NotRunning
    };
    let mut pending = vec![(first, None::<&Step>)];
    let mut it = steps.iter();
    loop {
        for (ev, step) in pending.drain(..) {
            if exited {
                return Ok(given);
            }
            let watch_before = e.watch_id();
            let operator = matches!(ev, Evidence::MonitorOn | Evidence::MonitorOff);
            let probe_failed_at = match &ev {
                Evidence::ProbeFailed { started, .. } => Some(*started),
                _ => None,
            };
            if let Evidence::ProbeOk { watch } = &ev {
                if Some(*watch) == watch_before && monitor_on {
                    failing_since = None;
                }
            }
            if let Some(at) = probe_failed_at {
                failing_since.get_or_insert(at);
            }
            let acts = e.on(ev.clone(), now);
            match &ev {
                Evidence::MonitorOff => monitor_on = false,
                Evidence::MonitorOn => monitor_on = true,
                _ => {}
            }

            // Nothing is restarted while monitor_sts is off.
            let n_restarts = acts
                .iter()
                .filter(|a| matches!(a, Action::Restart { .. }))
                .count() as u32;
            if !monitor_on {
                prop_assert_eq!(
                    n_restarts,
                    0,
                    "restart while monitoring is off: {:?} -> {:?}",
                    ev,
                    acts
                );
            }
            // An entry that retried over with `continue` emits nothing more (but for
            // an operator's monitor on/off).
            if retried_over_continue && !operator {
                prop_assert!(
                    acts.is_empty(),
                    "after retry-over (continue), {:?} -> {:?}",
                    ev,
                    acts
                );
            }
            // Restarts never exceed the retry count before the retry-over action.
            if matches!(ev, Evidence::MonitorOn) && n_restarts > 0 {
                restarts = 0;
                retried_over_continue = false;
            }
            restarts += n_restarts;
            for a in &acts {
                if let Action::Restart { attempt, of, .. } = a {
                    prop_assert!(*attempt >= 1 && attempt <= of && *of <= allowed, "{:?}", a);
                }
            }
            prop_assert!(
                restarts <= allowed,
                "{} restarts in one outage with retry count {}: {:?} -> {:?}",
                restarts,
                c.retry_limit,
                ev,
                acts
            );
            // A stall verdict by the seed rule needs failing probes spanning `duration`;
            // two verdicts of one watch are at least `duration` apart, however long
            // the host slept in between.
            for v in verdicts(&acts) {
                if v == Some(EventSource::Probe) {
                    let (Some(since), Some(at), Some(d)) =
                        (failing_since, probe_failed_at, duration)
                    else {
                        return Err(TestCaseError::fail(format!(
                            "probe verdict without failing probes: {ev:?}"
                        )));
                    };
                    prop_assert!(
                        at.saturating_duration_since(since) >= d,
                        "verdict after {:?} of failures (duration {:?})",
                        at - since,
                        d
                    );
                    if let (Some((w, t)), Some(cur)) = (last_probe_verdict, watch_before) {
                        prop_assert!(
                            w != cur || now.saturating_duration_since(t) >= d,
                            "two verdicts of watch {} {:?} apart",
                            w,
                            now - t
                        );
                    }
                    last_probe_verdict = watch_before.map(|w| (w, now));
                    failing_since = None;
                }
            }
            prop_assert!(verdicts(&acts).len() <= 1, "{:?} -> {:?}", ev, acts);
            given.extend(verdicts(&acts).iter().map(|_| now));

            // The world reacts.
            for a in &acts {
                match a {
                    Action::Restart { .. } => restart_pending = true,
                    Action::KillStalled { watch, pid } => kill_pending = Some((*watch, *pid)),
                    Action::RetryOver(RetryOverAction::Continue) => retried_over_continue = true,
                    Action::Exit(_) => exited = true,
                    _ => {}
                }
            }
            if e.watch_id() != watch_before {
                failing_since = None;
                if let Some(w) = watch_before {
                    old_watches.push(w);
                }
            }
            if e.proc_sts == ProcSts::Avail && e.retry_count == 0 {
                restarts = 0;
            }
            let _ = step;
        }
        let Some(s) = it.next() else {
            return Ok(given);
        };
        let watch = e.watch_id();
        let ev = match s {
            Step::RestartOk if restart_pending => {
                restart_pending = false;
                next_pid += 1;
                Some(Evidence::Running {
                    pid: next_pid,
                    adopted: false,
                })
            }
            Step::RestartFails if restart_pending => {
                restart_pending = false;
                Some(Evidence::StartFailed {
                    reason: "exit status 1".into(),
                })
            }
            Step::Dies => watch.zip(e.pid).map(|(w, pid)| Evidence::Died {
                watch: w,
                pid,
                how: DeathKind::Signaled(9),
                source: DeathSource::Pidfd,
            }),
            Step::StaleDeath => old_watches.last().map(|w| Evidence::Died {
                watch: *w,
                pid: 1,
                how: DeathKind::Vanished,
                source: DeathSource::Procfs,
            }),
            Step::ProbeOk => watch.map(|w| Evidence::ProbeOk { watch: w }),
            Step::ProbeFails => watch.map(|w| Evidence::ProbeFailed {
                watch: w,
                reason: "timeout".into(),
                started: now,
            }),
            Step::QueueStuck => watch.map(|w| Evidence::NoProgress {
                watch: w,
                figures: progress::Figures {
                    window_ms: 2000,
                    depth: 17,
                    limit: 16,
                    samples: 20,
                    ..progress::Figures::default()
                },
            }),
            Step::KillOk | Step::KillFails => {
                kill_pending.take().map(|(w, pid)| Evidence::KillResult {
                    watch: w,
                    pid,
                    result: if matches!(s, Step::KillOk) {
                        Ok(())
                    } else {
                        Err("EPERM".into())
                    },
                })
            }
            Step::MonitorOff => Some(Evidence::MonitorOff),
            Step::MonitorOn => Some(Evidence::MonitorOn),
            Step::Wait(ms) => {
                now += Duration::from_millis(*ms);
                None
            }
            Step::Suspend(h) => {
                now += Duration::from_secs(h * 3600);
                None
            }
            _ => None,
        };
        if let Some(ev) = ev {
            pending.push((ev, Some(s)));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn decisions_keep_their_promises(c in config(), steps in proptest::collection::vec(step(), 0..120)) {
        check(&c, &steps)?;
    }
}

// With only failing probes and suspends (the host sleeping between probes), one
// verdict per wake-up at most, and only after `duration` of failures.
proptest! {
    #![proptest_config(ProptestConfig { cases: 500, ..ProptestConfig::default() })]

    #[test]
    fn a_long_gap_yields_at_most_one_verdict(
        hours in proptest::collection::vec(1u64..72, 1..20),
        kernel in any::<bool>(),
    ) {
        let c = Config {
            retry_limit: 3,
            act: RetryOverAction::Continue,
            stall: Some((10, 30, false, false, kernel)),
            adopted_at_start: true,
        };
        let mut steps = Vec::new();
        for h in hours {
            steps.push(Step::ProbeFails);
            steps.push(Step::Suspend(h));
            steps.push(Step::ProbeFails);
            steps.push(Step::QueueStuck);
            steps.push(Step::Wait(10_000));
            steps.push(Step::ProbeFails);
        }
        let given = check(&c, &steps)?;
        // Each wake-up spans 10 s; the next one is hours later.
        for pair in given.windows(2) {
            prop_assert!(pair[1] - pair[0] >= Duration::from_secs(3600), "two verdicts {:?} apart", pair[1] - pair[0]);
        }
    }
}
