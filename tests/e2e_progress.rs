//! Kernel evidence judges by the server's progress, end to end: real Apache (prefork
//! and event MPM) and nginx under real load generators (wrk with keep-alive, ab
//! without). Busy servers with work waiting are never judged; stuck ones are, with
//! the figures that decided it.
//!
//! Each busy case runs at least 20 s; the cases are separate tests on their own
//! ports so that they run side by side. The cases themselves live in
//! tests/progress_cases (the bench runs them too).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

mod common;
mod progress_cases;
use progress_cases::*;
use std::time::Duration;

/// How long each busy case is loaded.
const BUSY_SECS: u64 = 22;
/// Sanity bound for a verdict: >= 10x the ~2.2 s measured (kernel_window 2 s; the
/// figure is in the bench).
const VERDICT_BOUND: Duration = Duration::from_secs(25);

fn never_judged(case: Busy) -> Option<BusyRun> {
    let r = run_busy(case, BUSY_SECS)?;
    println!(
        "{}: waiting work {:?}; {} answers; pcheck CPU {:.2} %; kernel evidence withheld: {:?}",
        case.name(),
        r.waiting,
        r.answered,
        r.pcheck_cpu_pct,
        r.withheld
    );
    assert!(
        r.waiting.was_full(),
        "{}: the accept queue was full at times (work was waiting): {:?}",
        case.name(),
        r.waiting
    );
    assert!(
        r.verdicts.is_empty(),
        "{}: a busy server was judged: {:?}",
        case.name(),
        r.verdicts
    );
    assert!(r.same_process, "{}: no restart", case.name());
    Some(r)
}

fn judged(case: Stuck) -> Option<StuckRun> {
    let r = run_stuck(case, VERDICT_BOUND)?;
    println!(
        "{}: judged in {} ms (set-up {} ms): {}",
        case.name(),
        r.took.as_millis(),
        r.setup.as_millis(),
        r.why
    );
    assert!(
        r.find
            .ends_with(&format!("pid = {} : port = {}", r.master, r.port)),
        "{}",
        r.find
    );
    assert!(
        r.why.contains("server accepted 0, wrote 0 B, read 0 B"),
        "{}",
        r.why
    );
    assert!(r.why.contains("accept queue "), "{}", r.why);
    assert!(r.took < VERDICT_BOUND, "judged in {:?}", r.took);
    Some(r)
}

/// The report: Debian's Apache prefork (4 children, ListenBacklog 16), a CGI that
/// takes 0.2 s, wrk with 200 keep-alive connections. The children answer request
/// after request on connections they hold and accept nothing for seconds: busy, not
/// stuck, and never judged.
#[test]
fn keep_alive_load_on_apache_prefork_is_never_judged() {
    never_judged(Busy::PreforkKeepAlive);
}

#[test]
fn ab_load_on_apache_event_is_never_judged() {
    never_judged(Busy::EventAb);
}

#[test]
fn keep_alive_load_on_nginx_with_a_slow_handler_is_never_judged() {
    never_judged(Busy::NginxSlowHandler);
}

/// The children wait on clients that read slowly: not judged (the progress rule may
/// see no progress for a window; the threads say why).
#[test]
fn slow_downloaders_on_apache_prefork_are_never_judged() {
    if let Some(r) = never_judged(Busy::SlowDownloaders) {
        assert!(r.answered > 0, "the downloaders got data");
    }
}

#[test]
fn idle_keep_alive_connections_on_apache_prefork_are_never_judged() {
    if let Some(r) = never_judged(Busy::IdleKeepAlive) {
        assert!(r.answered > 0, "the idle clients were served");
    }
}

/// Kernel evidence cannot tell workers waiting on a silent upstream from a hung
/// server, so it says so and does not judge.
#[test]
fn workers_waiting_on_a_slow_upstream_are_never_judged() {
    if let Some(r) = never_judged(Busy::SlowUpstream) {
        assert!(
            r.withheld.iter().any(|l| l.contains("another server")),
            "the upstream wait was recognised: {:?}",
            r.withheld
        );
    }
}

#[test]
fn stopped_apache_prefork_under_keep_alive_load_is_judged() {
    if let Some(r) = judged(Stuck::PreforkStopped) {
        assert!(r.why.contains("T:"), "stopped threads: {}", r.why);
    }
}

#[test]
fn stopped_apache_event_under_keep_alive_load_is_judged() {
    if let Some(r) = judged(Stuck::EventStopped) {
        assert!(r.why.contains("T:"), "stopped threads: {}", r.why);
    }
}

#[test]
fn a_looping_handler_on_every_apache_prefork_child_is_judged() {
    if let Some(r) = judged(Stuck::PreforkLoop) {
        assert!(r.why.contains("R:"), "running workers: {}", r.why);
    }
}

#[test]
fn a_looping_handler_on_every_apache_event_thread_is_judged() {
    if let Some(r) = judged(Stuck::EventLoop) {
        assert!(r.why.contains("R:"), "running workers: {}", r.why);
    }
}

#[test]
fn a_looping_handler_on_nginx_is_judged() {
    if let Some(r) = judged(Stuck::NginxLoop) {
        assert!(r.why.contains("R:"), "a running worker: {}", r.why);
    }
}

/// A deadlock: the worker blocks on a lock (a futex no one wakes), no socket I/O.
#[test]
fn a_worker_deadlocked_on_a_lock_is_judged() {
    if let Some(r) = judged(Stuck::NginxDeadlock) {
        assert!(r.why.contains("S:"), "a sleeping worker: {}", r.why);
    }
}

/// A deadlock on Apache: a mod_perl handler blocks every prefork child on a futex
/// no one wakes; no socket I/O is pending.
#[test]
fn apache_prefork_children_deadlocked_on_a_lock_are_judged() {
    if let Some(r) = judged(Stuck::PreforkDeadlock) {
        assert!(r.why.contains("S:"), "sleeping workers: {}", r.why);
        assert!(!r.why.contains("R:"), "no running worker: {}", r.why);
    }
}

/// The same on the event MPM: both worker threads on the lock, the listener thread
/// asleep in epoll_wait.
#[test]
fn apache_event_threads_deadlocked_on_a_lock_are_judged() {
    if let Some(r) = judged(Stuck::EventDeadlock) {
        assert!(r.why.contains("S:"), "sleeping threads: {}", r.why);
    }
}

/// IPv6: Apache listens on 127.0.0.1 and [::1]; the load comes over [::1]. The
/// progress sampling sees the IPv6 listener's queue and connections.
#[test]
fn stopped_apache_listening_on_both_families_is_judged_under_ipv6_load() {
    if let Some(r) = judged(Stuck::PreforkStoppedV6) {
        assert!(r.why.contains("T:"), "stopped threads: {}", r.why);
        assert!(
            r.why.contains("accept queue 17/16"),
            "the [::1] queue: {}",
            r.why
        );
    }
}

/// A CGI slower than the window on every child: the children wait on a handler
/// process, which kernel evidence cannot tell from a hung one.
#[test]
fn every_child_waiting_on_a_slow_cgi_is_never_judged() {
    if let Some(r) = never_judged(Busy::SlowCgi) {
        assert!(r.answered > 0, "the slow page was served");
    }
}

/// The event MPM's worker threads wait on mod_cgid's daemon, which runs the CGIs.
#[test]
fn every_event_thread_waiting_on_a_slow_cgi_is_never_judged() {
    if let Some(r) = never_judged(Busy::SlowCgiEvent) {
        assert!(r.answered > 0, "the slow page was served");
    }
}

#[test]
fn keep_alive_load_over_ipv6_on_apache_prefork_is_never_judged() {
    never_judged(Busy::PreforkKeepAliveV6);
}

/// The accept queue never fills (keep-alive clients send their next requests on
/// the connections the stopped children hold): a failed probe starts the sampling,
/// and the requests unread on held connections are the waiting work. Bound: the
/// next probe is up to 10 s away (interval 10, probe timeout 1 s), then the window.
#[test]
fn requests_waiting_on_held_connections_of_a_stopped_server_are_judged() {
    let Some(r) = run_stuck(Stuck::HeldConnectionsOnly, Duration::from_secs(120)) else {
        return;
    };
    println!(
        "{}: judged in {} ms: {}",
        Stuck::HeldConnectionsOnly.name(),
        r.took.as_millis(),
        r.why
    );
    assert!(r.why.contains("4 connections held (4 with"), "{}", r.why);
    assert!(
        r.why.contains("server accepted 0, wrote 0 B, read 0 B"),
        "{}",
        r.why
    );
    assert!(
        !r.why.contains("accept queue 17/16"),
        "the queue never filled: {}",
        r.why
    );
}

/// `kernel_action = observe`: the same evidence is logged as a suspicion, and
/// nothing is killed.
#[test]
fn kernel_action_observe_logs_and_does_not_kill() {
    use common::*;
    let name = "kernel_action_observe";
    if !root_or_skip(name) || !apache_or_skip(name) {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let (script, pidfile) = apache_instance(&sb, port, None, 16);
    let mut pc = watch_stall(
        &sb,
        (APACHE, &script, &pidfile),
        "_bi_webserv",
        &format!("10:0:2:600:{port}"),
        "    evidence = kernel\n    kernel_action = observe\n",
    );
    let master = pid_of(&pc.entry(1));
    let httpd = sandbox_pids_of(&sb, APACHE);
    for p in &httpd {
        kill(*p, libc::SIGSTOP);
    }
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let _held: Vec<std::net::TcpStream> = (0..40)
        .filter_map(|_| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(50)).ok())
        .collect();
    let line = pc.wait_for("Stall Suspected (observe only)", VERDICT_BOUND);
    assert!(
        line.contains("stall evidence (kernel): pent_id= 1") && line.contains("threads T:"),
        "{line}"
    );
    for p in &httpd {
        kill(*p, libc::SIGCONT);
    }
    pc.drain();
    let acted: Vec<&String> = pc
        .seen
        .iter()
        .filter(|l| l.contains("Find Web Server Stall") || l.contains("Killed Process"))
        .collect();
    assert!(acted.is_empty(), "observe only: {acted:?}");
    assert!(alive(master), "the server was not killed");
    assert_eq!(pid_of(&pc.entry(1)), master);
}
