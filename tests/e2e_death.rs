//! Death watch and restart, end to end: real pcheck, real servers, real signals.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

mod common;
use common::*;
use std::time::{Duration, Instant};

fn demo_pfile(sb: &Sandbox, port: u16, workers: u32, keys: &str) -> std::path::PathBuf {
    let (script, pidfile) = sb.demo_script("web", port, workers);
    sb.pfile(&format!(
        "{DEMO} {} 3 pidfile={} retry_delay=100ms {keys}\n",
        script.display(),
        pidfile.display()
    ))
}

/// kill -9 of the master: restarted, restart_count 1, a new pid, serving again, and
/// the old workers (which kept the port) are gone.
fn kill9_restarts(mode: &str) {
    let sb = Sandbox::new();
    let port = free_port();
    let pfile = demo_pfile(&sb, port, 2, "");
    let mut pc = Pcheck::start(&sb, &pfile, &["--evidence", mode]);
    pc.wait_for("Started Process", T);
    let before = pc.entry(1);
    assert_eq!(before["proc_sts"], "AVAIL");
    assert_eq!(before["evidence"], mode);
    let old = pid_of(&before);
    assert!(http_ok(port), "the demo server answers");
    let workers = demo_pids(&sb);
    assert!(workers.len() >= 3, "master + 2 workers: {workers:?}");

    let t0 = Instant::now();
    kill(old, libc::SIGKILL);
    let down = pc.wait_for("Process Down", T);
    let detect = t0.elapsed();
    assert!(down.contains(&format!("pid= {old}")), "{down}");
    assert!(
        down.contains(&format!("evidence: {mode}")),
        "the evidence source is named: {down}"
    );
    pc.wait_for("Restarted Process", T);
    let recovered = t0.elapsed();
    let after = pc.entry(1);
    assert_eq!(after["restart_count"], 1);
    assert_eq!(after["retry_count"], 0);
    assert_eq!(after["proc_sts"], "AVAIL");
    assert!(after["rerun_time"].is_string(), "rerun_time set: {after}");
    let new = pid_of(&after);
    assert_ne!(new, old);
    assert!(http_ok(port), "serving again");
    for w in workers.iter().filter(|p| **p != old) {
        assert!(
            dead_within(*w, T),
            "old worker {w} was killed before the restart"
        );
    }
    println!(
        "{mode}: kill -9 -> Process Down logged after {} ms",
        detect.as_millis()
    );
    fault_row(
        1,
        &format!("kill -9 of the main server process ({mode})"),
        "detected, remnants killed, restarted",
        &format!(
            "detected in {} us, restarted, old workers gone",
            detect.as_micros()
        ),
        Some(recovered),
    );
    assert!(detect < Duration::from_secs(5), "sanity bound");
}

/// With the eBPF program loaded, the kernel's exit event is the evidence.
#[test]
fn kill9_restarts_ebpf() {
    if root_or_skip("kill9_restarts_ebpf") && bpf_object_or_skip("kill9_restarts_ebpf") {
        kill9_restarts("ebpf");
    }
}

#[test]
fn kill9_restarts_pidfd() {
    if root_or_skip("kill9_restarts_pidfd") {
        kill9_restarts("pidfd");
    }
}

#[test]
fn kill9_restarts_procfs() {
    if root_or_skip("kill9_restarts_procfs") {
        kill9_restarts("procfs");
    }
}

fn failing_pfile(sb: &Sandbox, action: &str, extra_entry: &str) -> std::path::PathBuf {
    let bad = sb.script(
        "bad.rc",
        &format!(
            "echo run >> {}\necho 'cannot start: config error' >&2\nexit 1",
            sb.file("bad.runs").display()
        ),
    );
    sb.pfile(&format!(
        "retry_delay = 50ms\n/usr/sbin/never-runs {} 3 retry_over_action={action}\n{extra_entry}",
        bad.display()
    ))
}

#[test]
fn failing_script_retry_over_continue_keeps_watching_others() {
    if !root_or_skip("failing_script_retry_over_continue") {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let (good, pidfile) = sb.demo_script("web", port, 0);
    let pfile = failing_pfile(
        &sb,
        "continue",
        &format!(
            "{DEMO} {} 3 pidfile={}\n",
            good.display(),
            pidfile.display()
        ),
    );
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    let over = pc.wait_for("Retry Over", T);
    assert!(over.contains("retry_over_action= continue"), "{over}");
    fault_row(
        6,
        "restart script fails",
        "retries, then the retry-over action",
        "3 attempts, Retry Over (continue), others watched",
        None,
    );
    assert!(
        pc.seen.iter().any(|l| l.contains("exited with status 1")),
        "the failure reason is logged"
    );
    assert!(
        pc.seen
            .iter()
            .any(|l| l.contains("cannot start: config error")),
        "script output is logged"
    );
    assert_eq!(sb.runs("bad"), 3, "three attempts, then retry-over");
    let bad = pc.entry(1);
    assert_eq!(bad["proc_sts"], "UNAVAIL");
    assert_eq!(bad["retry_count"], 3);
    // The other entry is still watched: kill it, it comes back.
    pc.seen_or_wait("Started Process", T);
    let web = pc.entry(2);
    kill(pid_of(&web), libc::SIGKILL);
    pc.wait_for("Restarted Process", T);
    assert_eq!(pc.entry(2)["restart_count"], 1);
    assert!(
        pc.child.try_wait().expect("try_wait").is_none(),
        "pcheck still runs"
    );
}

#[test]
fn failing_script_retry_over_shutdown_ends_pcheck() {
    if !root_or_skip("failing_script_retry_over_shutdown") {
        return;
    }
    let sb = Sandbox::new();
    let pfile = failing_pfile(&sb, "shutdown", "");
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    pc.wait_for("retry_over_action= shutdown", T);
    assert_eq!(pc.wait_exit(T), Some(0));
    assert_eq!(sb.runs("bad"), 3);
}

#[test]
fn failing_script_retry_over_exit_ends_pcheck_with_status_3() {
    if !root_or_skip("failing_script_retry_over_exit") {
        return;
    }
    let sb = Sandbox::new();
    let pfile = failing_pfile(&sb, "exit", "");
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    pc.wait_for("retry_over_action= exit", T);
    assert_eq!(
        pc.wait_exit(T),
        Some(3),
        "the distinct exit status of the exit action"
    );
}

/// The watched server's parent never reaps it: once killed, it is a zombie, and that
/// is death all the same.
fn zombie_is_detected(mode: &str) {
    let sb = Sandbox::new();
    let port = free_port();
    let pidfile = sb.file("web.pid");
    // perl forks the server and then sleeps without ever calling wait().
    let script = sb.script(
        "web.rc",
        &format!(
            "perl -e 'if (fork() == 0) {{ exec @ARGV; }} sleep 100000;' {DEMO} --port {port} --pidfile {} >/dev/null 2>&1 &",
            pidfile.display()
        ),
    );
    let pfile = entry_pfile(&sb, DEMO, &script, &pidfile, "");
    let mut pc = Pcheck::start(&sb, &pfile, &["--evidence", mode]);
    pc.wait_for("Started Process", T);
    let pid = pid_of(&pc.entry(1));
    kill(pid, libc::SIGKILL);
    let down = pc.wait_for("Process Down", T);
    assert!(down.contains(&format!("pid= {pid}")), "{down}");
    // The parent never reaps it, so pcheck saw it as a zombie (not yet gone).
    assert!(down.contains("zombie"), "{down}");
    let t0 = Instant::now();
    pc.wait_for("Restarted Process", T);
    fault_row(
        4,
        &format!("zombie ({mode})"),
        "dead at once, restarted",
        "detected as zombie, restarted",
        Some(t0.elapsed()),
    );
}

#[test]
fn zombie_is_detected_pidfd() {
    if root_or_skip("zombie_is_detected_pidfd") {
        zombie_is_detected("pidfd");
    }
}

#[test]
fn zombie_is_detected_procfs() {
    if root_or_skip("zombie_is_detected_procfs") {
        zombie_is_detected("procfs");
    }
}

#[test]
fn hung_restart_script_is_killed_at_its_timeout() {
    if !root_or_skip("hung_restart_script") {
        return;
    }
    let sb = Sandbox::new();
    let children = sb.file("children");
    let script = sb.script(
        "hang.rc",
        &format!(
            "sleep 100000 &\necho $! >> {c}\necho $$ >> {c}\nsleep 100000\n",
            c = children.display()
        ),
    );
    let pfile = sb.pfile(&format!(
        "/usr/sbin/never-runs {} 1 restart_timeout=500ms\n",
        script.display()
    ));
    let t0 = Instant::now();
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    let line = pc.wait_for("did not finish within 500 ms", T);
    assert!(line.contains("killed its process group"), "{line}");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(500),
        "not before the timeout: {took:?}"
    );
    pc.wait_for("Retry Over", T);
    let pids: Vec<i32> = std::fs::read_to_string(&children)
        .expect("the script recorded its pids")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(pids.len(), 2);
    for p in pids {
        assert!(
            dead_within(p, T),
            "process {p} of the hung script's group was killed"
        );
    }
    fault_row(
        5,
        "restart script hangs",
        "killed with its process group at the timeout",
        "killed at 500 ms, its group gone, counted as failed",
        Some(took),
    );
}

#[test]
fn pcheck_restarted_adopts_the_running_server() {
    if !root_or_skip("pcheck_restarted_adopts") {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let pfile = demo_pfile(&sb, port, 1, "");
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    pc.wait_for("Started Process", T);
    let pid = pid_of(&pc.entry(1));

    // A second pcheck on the same pfile refuses to start.
    let mut twin = Pcheck::start(&sb, &pfile, &[]);
    twin.wait_for("already watches this pfile", T);
    assert_ne!(twin.wait_exit(T), Some(0));

    // pcheck crashes; a new one adopts the server instead of starting another.
    kill(pc.child.id() as i32, libc::SIGKILL);
    let _ = pc.child.wait();
    let mut pc2 = Pcheck::start(&sb, &pfile, &[]);
    let adopted = pc2.wait_for("Adopted Process", T);
    assert!(adopted.contains(&format!("pid= {pid}")), "{adopted}");
    assert_eq!(sb.runs("web"), 1, "the restart script ran once only");
    assert_eq!(pid_of(&pc2.entry(1)), pid);
    assert!(http_ok(port));
    fault_row(
        8,
        "pcheck killed and restarted",
        "adopts, no second copy",
        "adopted the same pid, script ran once",
        None,
    );
    // And the adopted server is really watched.
    kill(pid, libc::SIGKILL);
    pc2.wait_for("Restarted Process", T);
    assert_eq!(sb.runs("web"), 2);
    assert_eq!(pc2.entry(1)["restart_count"], 1);
    // Restarted again (as systemd would after a crash): it adopts, and keeps its
    // counters (persisted state).
    let new_pid = pid_of(&pc2.entry(1));
    kill(pc2.child.id() as i32, libc::SIGKILL);
    let _ = pc2.child.wait();
    let mut pc3 = Pcheck::start(&sb, &pfile, &[]);
    let adopted = pc3.wait_for("Adopted Process", T);
    assert!(adopted.contains(&format!("pid= {new_pid}")), "{adopted}");
    assert_eq!(pc3.entry(1)["restart_count"], 1, "the count survived");
    assert_eq!(sb.runs("web"), 2);
}

#[test]
fn stale_pidfile_with_a_recycled_pid_is_not_adopted() {
    if !root_or_skip("stale_pidfile") {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let (script, pidfile) = sb.demo_script("web", port, 0);
    // The pidfile names a live process that is not the server (this test itself).
    std::fs::write(&pidfile, format!("{}\n", std::process::id())).expect("write");
    let pfile = entry_pfile(&sb, DEMO, &script, &pidfile, "");
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    let started = pc.wait_for("Started Process", T);
    assert!(
        !started.contains(&format!("pid= {} ", std::process::id())),
        "{started}"
    );
    assert_eq!(sb.runs("web"), 1);
}
