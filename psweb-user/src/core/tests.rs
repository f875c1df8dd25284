use super::*;
use crate::pfile::{EntrySettings, ProcEntry};
use std::path::PathBuf;

fn cfg(retry_limit: u32, act: RetryOverAction) -> ProcEntry {
    ProcEntry {
        pent_id: 1,
        pname: PathBuf::from("/usr/sbin/httpd"),
        restart_script: PathBuf::from("/etc/psweb/httpd.rc"),
        script_pos: Default::default(),
        retry_limit,
        pidfile: None,
        user: None,
        owner: None,
        settings: EntrySettings {
            retry_over_action: act,
            retry_delay: Duration::from_millis(250),
            ..EntrySettings::default()
        },
        stall: None,
        line: 1,
        lb: Default::default(),
    }
}

fn running(e: &mut Entry, pid: i32, t: Instant) -> WatchId {
    let acts = e.on(Evidence::Running { pid, adopted: true }, t);
    match acts.first() {
        Some(Action::Watch { watch, pid: p }) if *p == pid => *watch,
        other => panic!("expected a Watch action, got {other:?}"),
    }
}

fn died(watch: WatchId, pid: i32) -> Evidence {
    Evidence::Died {
        watch,
        pid,
        how: DeathKind::Signaled(9),
        source: DeathSource::Pidfd,
    }
}

fn failed() -> Evidence {
    Evidence::StartFailed {
        reason: "exit status 1".into(),
    }
}

/// The actions that act on the world: without log lines and state writes (those
/// are checked in their own tests).
fn non_log(acts: &[Action]) -> Vec<Action> {
    acts.iter()
        .filter(|a| !matches!(a, Action::Log(..) | Action::Persist))
        .cloned()
        .collect()
}

#[test]
fn adopted_process_is_avail_and_watched() {
    let t = Instant::now();
    let mut e = Entry::new(&cfg(3, RetryOverAction::Continue));
    assert_eq!(e.proc_sts, ProcSts::Init);
    let w = running(&mut e, 100, t);
    assert_eq!(e.proc_sts, ProcSts::Avail);
    assert_eq!(e.pid, Some(100));
    assert_eq!(e.watch_id(), Some(w));
    assert_eq!((e.retry_count, e.restart_count), (0, 0));
}

#[test]
fn not_running_at_start_is_started_not_counted_as_restart() {
    let t = Instant::now();
    let mut e = Entry::new(&cfg(3, RetryOverAction::Continue));
    let acts = non_log(&e.on(Evidence::NotRunning, t));
    assert_eq!(
        acts,
        vec![Action::Restart {
            attempt: 1,
            of: 3,
            delay: Duration::ZERO,
            kill_remnants: false
        }]
    );
    assert_eq!(e.proc_sts, ProcSts::Restart);
    e.on(
        Evidence::Running {
            pid: 7,
            adopted: false,
        },
        t,
    );
    assert_eq!(e.proc_sts, ProcSts::Avail);
    assert_eq!(e.restart_count, 0, "a first start is not a restart");
    assert_eq!(e.rerun_at, None);
}

#[test]
fn death_restarts_and_counts() {
    let t0 = Instant::now();
    let t1 = t0 + Duration::from_secs(5);
    let mut e = Entry::new(&cfg(3, RetryOverAction::Continue));
    let w = running(&mut e, 100, t0);
    let acts = non_log(&e.on(died(w, 100), t1));
    assert_eq!(
        acts,
        vec![
            Action::Unwatch { watch: w },
            Action::Restart {
                attempt: 1,
                of: 3,
                delay: Duration::ZERO,
                kill_remnants: true
            }
        ]
    );
    assert_eq!(e.proc_sts, ProcSts::Restart);
    assert_eq!(e.pid, None);
    let acts = non_log(&e.on(
        Evidence::Running {
            pid: 200,
            adopted: false,
        },
        t1,
    ));
    assert!(matches!(acts[..], [Action::Watch { pid: 200, .. }]));
    assert_eq!(e.proc_sts, ProcSts::Avail);
    assert_eq!((e.retry_count, e.restart_count), (0, 1));
    assert_eq!(e.rerun_at, Some(t1));
}

#[test]
fn stale_death_report_is_ignored() {
    let t = Instant::now();
    let mut e = Entry::new(&cfg(3, RetryOverAction::Continue));
    let w1 = running(&mut e, 100, t);
    e.on(died(w1, 100), t);
    let w2 = match non_log(&e.on(
        Evidence::Running {
            pid: 100,
            adopted: false,
        },
        t,
    ))[..]
    {
        [Action::Watch { watch, .. }] => watch,
        ref other => panic!("{other:?}"),
    };
    assert_ne!(w1, w2, "a recycled pid gets a new watch id");
    // A second report about the first watch (same pid!) must not touch the new process.
    assert!(e.on(died(w1, 100), t).is_empty());
    assert_eq!(e.proc_sts, ProcSts::Avail);
    assert_eq!(e.restart_count, 1);
}

#[test]
fn failures_retry_with_delay_then_retry_over() {
    // (retry count, action, expected trailing actions at retry-over)
    let table: &[(u32, RetryOverAction, &[Action])] = &[
        (
            1,
            RetryOverAction::Continue,
            &[Action::RetryOver(RetryOverAction::Continue)],
        ),
        (
            3,
            RetryOverAction::Continue,
            &[Action::RetryOver(RetryOverAction::Continue)],
        ),
        (
            2,
            RetryOverAction::Shutdown,
            &[
                Action::RetryOver(RetryOverAction::Shutdown),
                Action::Exit(0),
            ],
        ),
        (
            3,
            RetryOverAction::Exit,
            &[
                Action::RetryOver(RetryOverAction::Exit),
                Action::Exit(EXIT_RETRY_OVER),
            ],
        ),
    ];
    for (limit, act, tail) in table {
        let t = Instant::now();
        let mut e = Entry::new(&cfg(*limit, *act));
        let w = running(&mut e, 100, t);
        e.on(died(w, 100), t);
        for n in 1..*limit {
            let acts = non_log(&e.on(failed(), t));
            assert_eq!(
                acts,
                vec![Action::Restart {
                    attempt: n + 1,
                    of: *limit,
                    delay: Duration::from_millis(250),
                    kill_remnants: true
                }],
                "limit {limit}, after failure {n}"
            );
            assert_eq!(e.retry_count, n);
            assert_eq!(e.proc_sts, ProcSts::Restart);
        }
        let acts = non_log(&e.on(failed(), t));
        assert_eq!(acts, tail.to_vec(), "limit {limit} {act:?}");
        assert_eq!(e.retry_count, *limit);
        assert_eq!(e.proc_sts, ProcSts::Unavail);
        // Nothing more happens on late reports.
        assert!(e.on(failed(), t).is_empty());
    }
}

#[test]
fn retry_count_zero_means_retry_over_at_first_death() {
    let t = Instant::now();
    let mut e = Entry::new(&cfg(0, RetryOverAction::Exit));
    let w = running(&mut e, 100, t);
    let acts = non_log(&e.on(died(w, 100), t));
    assert_eq!(
        acts,
        vec![
            Action::Unwatch { watch: w },
            Action::RetryOver(RetryOverAction::Exit),
            Action::Exit(EXIT_RETRY_OVER)
        ]
    );
}

#[test]
fn first_start_gets_one_attempt_even_with_retry_count_zero() {
    let t = Instant::now();
    let mut e = Entry::new(&cfg(0, RetryOverAction::Continue));
    let acts = non_log(&e.on(Evidence::NotRunning, t));
    assert!(matches!(
        acts[..],
        [Action::Restart {
            attempt: 1,
            of: 1,
            ..
        }]
    ));
    let acts = non_log(&e.on(failed(), t));
    assert_eq!(acts, vec![Action::RetryOver(RetryOverAction::Continue)]);
}

#[test]
fn success_after_failures_resets_retry_count() {
    let t = Instant::now();
    let mut e = Entry::new(&cfg(3, RetryOverAction::Continue));
    let w = running(&mut e, 100, t);
    e.on(died(w, 100), t);
    e.on(failed(), t);
    e.on(failed(), t);
    assert_eq!(e.retry_count, 2);
    e.on(
        Evidence::Running {
            pid: 300,
            adopted: false,
        },
        t,
    );
    assert_eq!(
        (e.retry_count, e.restart_count, e.proc_sts),
        (0, 1, ProcSts::Avail)
    );
}

#[test]
fn monitor_off_death_is_not_restarted_until_on() {
    let t = Instant::now();
    let mut e = Entry::new(&cfg(3, RetryOverAction::Continue));
    let w = running(&mut e, 100, t);
    e.on(Evidence::MonitorOff, t);
    assert!(!e.monitor_on);
    let acts = non_log(&e.on(died(w, 100), t));
    assert_eq!(acts, vec![Action::Unwatch { watch: w }]);
    assert_eq!(e.proc_sts, ProcSts::Unavail);
    let acts = non_log(&e.on(Evidence::MonitorOn, t));
    assert!(matches!(
        acts[..],
        [Action::Restart {
            attempt: 1,
            kill_remnants: true,
            ..
        }]
    ));
    assert_eq!(e.proc_sts, ProcSts::Restart);
}

#[test]
fn monitor_on_twice_does_nothing() {
    let t = Instant::now();
    let mut e = Entry::new(&cfg(3, RetryOverAction::Continue));
    running(&mut e, 100, t);
    assert!(e.on(Evidence::MonitorOn, t).is_empty());
    assert_eq!(e.proc_sts, ProcSts::Avail);
}

#[test]
fn stall_state_starts_at_init_only_with_a_block() {
    let e = Entry::new(&cfg(3, RetryOverAction::Continue));
    assert!(e.stall.is_none());
}

#[test]
fn log_lines_name_the_entry_and_evidence() {
    let t = Instant::now();
    let mut e = Entry::new(&cfg(3, RetryOverAction::Continue));
    let w = running(&mut e, 100, t);
    let acts = e.on(
        Evidence::Died {
            watch: w,
            pid: 100,
            how: DeathKind::Zombie,
            source: DeathSource::Procfs,
        },
        t,
    );
    let logs: Vec<&String> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Log(_, m, _) => Some(m),
            _ => None,
        })
        .collect();
    assert_eq!(
        logs,
        vec!["Process Down: pname= /usr/sbin/httpd pid= 100 pent_id= 1 (zombie; evidence: procfs)"]
    );
}

mod stall {
    use super::*;
    use crate::pfile::{KernelAction, StallCheck, StallEvidence, StallKind, TlsVerifyCfg};

    fn with_stall(
        stop_after_detect: bool,
        kill_fail_retry_over: bool,
        act: RetryOverAction,
    ) -> Entry {
        let mut c = cfg(3, act);
        c.stall = Some(StallCheck {
            kind: StallKind::Web,
            block_name: "_bi_webserv".into(),
            pos: Default::default(),
            interval: Duration::from_secs(10),
            duration: Duration::from_secs(30),
            port: 8080,
            host: None,
            probe_timeout: None,
            path: None,
            stop_after_detect,
            retry_over_on_kill_failure: kill_fail_retry_over,
            evidence: StallEvidence::Probe,
            kernel_window: Duration::from_secs(2),
            kernel_action: KernelAction::Kill,
            tls_verify: TlsVerifyCfg::System,
            status_classes: None,
        });
        Entry::new(&c)
    }

    /// A probe due at `started` that failed.
    fn fail(w: WatchId, started: Instant) -> Evidence {
        Evidence::ProbeFailed {
            watch: w,
            reason: "timeout".into(),
            started,
        }
    }

    fn sts(e: &Entry) -> StallSts {
        e.stall.as_ref().map(|s| s.sts).unwrap_or(StallSts::Unknown)
    }

    #[test]
    fn running_starts_the_stall_watch() {
        let t = Instant::now();
        let mut e = with_stall(false, false, RetryOverAction::Continue);
        let acts = non_log(&e.on(
            Evidence::Running {
                pid: 5,
                adopted: true,
            },
            t,
        ));
        assert!(
            matches!(
                acts[..],
                [Action::Watch { .. }, Action::StallWatch { pid: 5, .. }]
            ),
            "{acts:?}"
        );
        assert_eq!(sts(&e), StallSts::Init);
    }

    /// The failing time is measured between the probes' due times, not between the
    /// moments their failures arrived: a timeout that fires a little late on the first
    /// probe and on time on the last must not cost a whole extra interval.
    #[test]
    fn failing_time_is_counted_on_the_probe_schedule() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        let mut e = with_stall(false, false, RetryOverAction::Continue);
        let w = running(&mut e, 5, t0);
        e.on(Evidence::ProbeOk { watch: w }, t0);
        // Probes due at +10, +20, +30 s (retry-over 30 s), each failing after a 2 s
        // timeout; the first failure arrives 3 ms late.
        assert!(non_log(&e.on(fail(w, t0 + s(10)), t0 + s(12) + ms(3))).is_empty());
        assert!(non_log(&e.on(fail(w, t0 + s(20)), t0 + s(22))).is_empty());
        assert!(non_log(&e.on(fail(w, t0 + s(30)), t0 + s(32))).is_empty());
        let acts = e.on(fail(w, t0 + s(40)), t0 + s(42));
        assert_eq!(
            non_log(&acts),
            vec![Action::KillStalled { watch: w, pid: 5 }],
            "30 s of failing probes (due +10 .. +40 s) is the retry-over time"
        );
    }

    /// The seed's rule on the monotonic clock: a stall when probes have failed for
    /// the retry-over time, counted from the first failure; a success resets it.
    #[test]
    fn stall_after_retry_over_time_of_failures_only() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut e = with_stall(false, false, RetryOverAction::Continue);
        let w = running(&mut e, 5, t0);
        e.on(Evidence::ProbeOk { watch: w }, t0);
        assert_eq!(sts(&e), StallSts::Avail);
        assert!(non_log(&e.on(fail(w, t0 + s(10)), t0 + s(10))).is_empty());
        assert!(non_log(&e.on(fail(w, t0 + s(20)), t0 + s(20))).is_empty());
        // Recovery resets the clock.
        e.on(Evidence::ProbeOk { watch: w }, t0 + s(30));
        assert!(non_log(&e.on(fail(w, t0 + s(40)), t0 + s(40))).is_empty());
        assert!(
            non_log(&e.on(fail(w, t0 + s(60)), t0 + s(60))).is_empty(),
            "20 s of 30"
        );
        let acts = e.on(fail(w, t0 + s(70)), t0 + s(70));
        assert_eq!(
            non_log(&acts),
            vec![Action::KillStalled { watch: w, pid: 5 }]
        );
        assert!(acts.contains(&Action::Log(
            Level::Error,
            "Find Web Server Stall: pid = 5 : port = 8080".into(),
            Some(
                Tag::new(EventKind::StallDetected)
                    .pid(5)
                    .evidence(EventSource::Probe)
            )
        )));
        assert_eq!(sts(&e), StallSts::Detect);
        let acts = e.on(
            Evidence::KillResult {
                watch: w,
                pid: 5,
                result: Ok(()),
            },
            t0 + s(70),
        );
        assert_eq!(
            acts,
            vec![Action::Log(
                Level::Warning,
                "Killed Process: pid= 5".into(),
                Some(Tag::new(EventKind::Kill).pid(5))
            )]
        );
    }

    #[test]
    fn exec_error_1_stops_stall_watching_for_good() {
        let t0 = Instant::now();
        let mut e = with_stall(true, false, RetryOverAction::Continue);
        let w = running(&mut e, 5, t0);
        e.on(fail(w, t0), t0);
        let acts = non_log(&e.on(
            fail(w, t0 + Duration::from_secs(30)),
            t0 + Duration::from_secs(30),
        ));
        assert_eq!(
            acts,
            vec![
                Action::StallStop { watch: w },
                Action::KillStalled { watch: w, pid: 5 }
            ]
        );
        e.on(died(w, 5), t0);
        let acts = non_log(&e.on(
            Evidence::Running {
                pid: 6,
                adopted: false,
            },
            t0,
        ));
        assert!(
            matches!(acts[..], [Action::Watch { .. }]),
            "no StallWatch after a restart: {acts:?}"
        );
        assert_eq!(sts(&e), StallSts::Detect);
    }

    #[test]
    fn kill_failure_with_action_error_1_runs_the_retry_over_action() {
        let t0 = Instant::now();
        for (act, tail) in [
            (
                RetryOverAction::Exit,
                vec![
                    Action::RetryOver(RetryOverAction::Exit),
                    Action::Exit(EXIT_RETRY_OVER),
                ],
            ),
            (
                RetryOverAction::Shutdown,
                vec![
                    Action::RetryOver(RetryOverAction::Shutdown),
                    Action::Exit(0),
                ],
            ),
        ] {
            let mut e = with_stall(false, true, act);
            let w = running(&mut e, 5, t0);
            let r = Evidence::KillResult {
                watch: w,
                pid: 5,
                result: Err("EPERM".into()),
            };
            let acts = e.on(r, t0);
            assert!(acts.contains(&Action::Log(
                Level::Error,
                "Can not killed Process: pid= 5".into(),
                Some(Tag::new(EventKind::KillFailed).pid(5))
            )));
            let mut want = vec![Action::StallStop { watch: w }];
            want.extend(tail);
            assert_eq!(non_log(&acts), want);
            assert_eq!(sts(&e), StallSts::Unavail);
        }
        // continue: the process is dropped from watching.
        let mut e = with_stall(false, true, RetryOverAction::Continue);
        let w = running(&mut e, 5, t0);
        let acts = non_log(&e.on(
            Evidence::KillResult {
                watch: w,
                pid: 5,
                result: Err("EPERM".into()),
            },
            t0,
        ));
        assert_eq!(
            acts,
            vec![
                Action::StallStop { watch: w },
                Action::Unwatch { watch: w },
                Action::RetryOver(RetryOverAction::Continue)
            ]
        );
        assert_eq!(e.proc_sts, ProcSts::Unavail);
    }

    #[test]
    fn kill_failure_with_action_error_0_does_nothing_more() {
        let t0 = Instant::now();
        let mut e = with_stall(false, false, RetryOverAction::Exit);
        let w = running(&mut e, 5, t0);
        let acts = non_log(&e.on(
            Evidence::KillResult {
                watch: w,
                pid: 5,
                result: Err("EPERM".into()),
            },
            t0,
        ));
        assert_eq!(acts, vec![Action::StallStop { watch: w }]);
        assert_eq!(e.proc_sts, ProcSts::Avail, "death watching goes on");
    }

    #[test]
    fn kernel_evidence_only_counts_when_configured() {
        let t0 = Instant::now();
        let mut e = with_stall(false, false, RetryOverAction::Continue);
        let w = running(&mut e, 5, t0);
        let q = Evidence::NoProgress {
            watch: w,
            figures: progress::Figures {
                window_ms: 2000,
                depth: 17,
                limit: 16,
                ..progress::Figures::default()
            },
        };
        assert!(
            e.on(q.clone(), t0).is_empty(),
            "evidence = probe ignores the kernel"
        );
        if let Some(sw) = e.stall.as_mut() {
            sw.kernel = true;
        }
        let acts = e.on(q, t0);
        assert_eq!(
            non_log(&acts),
            vec![Action::KillStalled { watch: w, pid: 5 }]
        );
        assert!(
            acts.iter().any(|a| matches!(a, Action::Log(_, m, Some(t))
                if m.contains("stall evidence (kernel)") && m.contains("accept queue 17/16")
                    && t.kind == EventKind::StallEvidence)),
            "the figures that decided it are an event: {acts:?}"
        );
    }

    #[test]
    fn kernel_action_observe_logs_the_suspicion_and_does_not_kill() {
        let t0 = Instant::now();
        let mut e = with_stall(false, false, RetryOverAction::Continue);
        if let Some(sw) = e.stall.as_mut() {
            sw.kernel = true;
            sw.kernel_observe = true;
        }
        let w = running(&mut e, 5, t0);
        let figures = progress::Figures {
            window_ms: 2100,
            depth: 17,
            limit: 16,
            ..progress::Figures::default()
        };
        let acts = e.on(Evidence::NoProgress { watch: w, figures }, t0);
        assert!(non_log(&acts).is_empty(), "nothing is killed: {acts:?}");
        let [Action::Log(Level::Warning, m, Some(tag))] = acts.as_slice() else {
            panic!("one warning event: {acts:?}")
        };
        assert_eq!(tag.kind, EventKind::StallSuspected);
        assert!(
            m.starts_with("Stall Suspected (observe only): stall evidence (kernel): pent_id= 1")
                && m.contains("accept queue 17/16")
                && m.contains("no progress for 2100 ms"),
            "{m}"
        );
        assert_ne!(e.stall.as_ref().map(|s| s.sts), Some(StallSts::Detect));
    }

    #[test]
    fn reports_about_another_watch_or_while_monitoring_is_off_are_ignored() {
        let t0 = Instant::now();
        let mut e = with_stall(false, false, RetryOverAction::Continue);
        let w = running(&mut e, 5, t0);
        assert!(e.on(fail(w + 1, t0), t0).is_empty());
        e.on(Evidence::MonitorOff, t0);
        assert_eq!(sts(&e), StallSts::Unknown);
        assert!(e.on(fail(w, t0), t0).is_empty());
        assert!(e
            .on(
                fail(w, t0 + Duration::from_secs(100)),
                t0 + Duration::from_secs(100)
            )
            .is_empty());
    }

    /// A restarted process that never answers its stall check is a failed restart
    /// attempt: "the port never returns" ends in the retry-over action, and the entry
    /// stays down (for auto-reboot) all along.
    #[test]
    fn port_never_returns_is_a_failed_attempt_and_ends_in_retry_over() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = cfg(2, RetryOverAction::Continue);
        c.stall = with_stall(false, false, RetryOverAction::Continue)
            .stall
            .map(|_| StallCheck {
                kind: StallKind::Web,
                block_name: "_bi_webserv".into(),
                pos: Default::default(),
                interval: s(10),
                duration: s(10),
                port: 8080,
                host: None,
                probe_timeout: None,
                path: None,
                stop_after_detect: false,
                retry_over_on_kill_failure: false,
                evidence: StallEvidence::Probe,
                kernel_window: s(2),
                kernel_action: KernelAction::Kill,
                tls_verify: TlsVerifyCfg::System,
                status_classes: None,
            });
        let mut e = Entry::new(&c);
        let w = running(&mut e, 5, t0);
        e.on(Evidence::ProbeOk { watch: w }, t0);
        assert_eq!(e.down_for(t0), None);
        // Stalls; killed; dies: a proven process, so attempt 1 of a fresh outage.
        e.on(fail(w, t0 + s(10)), t0 + s(10));
        e.on(fail(w, t0 + s(20)), t0 + s(20));
        let acts = non_log(&e.on(died(w, 5), t0 + s(20)));
        assert!(
            matches!(
                acts[..],
                [Action::Unwatch { .. }, Action::Restart { attempt: 1, .. }]
            ),
            "{acts:?}"
        );
        assert_eq!(
            e.down_for(t0 + s(30)),
            Some(s(10)),
            "down since the stall verdict"
        );
        // The restart runs, but never answers: stalled again, killed, dies.
        let w2 = match non_log(&e.on(
            Evidence::Running {
                pid: 6,
                adopted: false,
            },
            t0 + s(21),
        ))[..]
        {
            [Action::Watch { watch, .. }, ..] => watch,
            ref o => panic!("{o:?}"),
        };
        assert_eq!(e.retry_count, 0);
        e.on(fail(w2, t0 + s(21)), t0 + s(21));
        e.on(fail(w2, t0 + s(31)), t0 + s(31));
        let acts = non_log(&e.on(died(w2, 6), t0 + s(31)));
        assert!(
            matches!(
                acts[..],
                [Action::Unwatch { .. }, Action::Restart { attempt: 2, .. }]
            ),
            "{acts:?}"
        );
        assert_eq!(e.retry_count, 1);
        let w3 = match non_log(&e.on(
            Evidence::Running {
                pid: 7,
                adopted: false,
            },
            t0 + s(32),
        ))[..]
        {
            [Action::Watch { watch, .. }, ..] => watch,
            ref o => panic!("{o:?}"),
        };
        e.on(fail(w3, t0 + s(32)), t0 + s(32));
        e.on(fail(w3, t0 + s(42)), t0 + s(42));
        let acts = non_log(&e.on(died(w3, 7), t0 + s(42)));
        assert_eq!(
            acts,
            vec![
                Action::Unwatch { watch: w3 },
                Action::RetryOver(RetryOverAction::Continue)
            ]
        );
        assert_eq!(
            e.down_for(t0 + s(50)),
            Some(s(30)),
            "still down since the first verdict"
        );
        assert_eq!(e.restart_count, 2);
    }

    #[test]
    fn counters_and_verdicts_ask_for_a_state_write() {
        let t0 = Instant::now();
        let mut e = with_stall(false, false, RetryOverAction::Continue);
        let w = running(&mut e, 5, t0);
        assert!(e.on(died(w, 5), t0).contains(&Action::Persist));
        assert!(e
            .last_verdict
            .as_deref()
            .is_some_and(|v| v.contains("killed by signal 9")));
        assert!(e
            .on(
                Evidence::Running {
                    pid: 6,
                    adopted: false
                },
                t0
            )
            .contains(&Action::Persist));
    }
}
