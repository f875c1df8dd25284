//! The fault matrix (issue 5) rows that live here: worker deaths, a port that never
//! returns, a recycled pid, 1,000 crash/restart cycles, the reboot threshold, a
//! corrupt state file and a full disk; plus the safety checks as root and systemd's
//! notify protocol. Each row prints a `FAULT|...` line for `cargo xtask faults`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

/// Fault 2: Killing worker processes only: the master lives and respawns them; pcheck
/// watches the master, so it does not restart anything (documented behaviour).
#[test]
fn fault02_worker_deaths_need_no_restart() {
    if !root_or_skip("fault02") || !apache_or_skip("fault02") {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let (script, pidfile) = apache_instance(&sb, port, None, 511);
    let pfile = entry_pfile(&sb, APACHE, &script, &pidfile, "");
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    pc.wait_for("Started Process", T);
    let master = pid_of(&pc.entry(1));
    let workers: Vec<i32> = sandbox_pids_of(&sb, APACHE)
        .into_iter()
        .filter(|p| *p != master)
        .collect();
    assert!(!workers.is_empty());
    let t0 = Instant::now();
    for w in &workers {
        kill(*w, libc::SIGKILL);
    }
    // Wait for the master to replace them.
    let deadline = Instant::now() + T;
    loop {
        let now: Vec<i32> = sandbox_pids_of(&sb, APACHE)
            .into_iter()
            .filter(|p| *p != master)
            .collect();
        if !now.is_empty() && now.iter().all(|p| !workers.contains(p)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Apache did not respawn its workers"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(http_ok(port));
    let took = t0.elapsed();
    pc.drain();
    assert!(
        !pc.seen.iter().any(|l| l.contains("Process Down")),
        "no restart for worker deaths"
    );
    let e = pc.entry(1);
    assert_eq!((pid_of(&e), e["restart_count"].as_u64()), (master, Some(0)));
    fault_row(
        2,
        "kill of worker processes only",
        "no restart (master respawns workers)",
        "no restart, serving",
        Some(took),
    );
}

/// Fault 7: The server starts but its port never returns: each restart is a failed
/// attempt, then the retry-over action.
#[test]
fn fault07_port_never_returns_ends_in_retry_over() {
    if !root_or_skip("fault07") {
        return;
    }
    let sb = Sandbox::new();
    let (port, wrong) = (free_port(), free_port());
    let (script, pidfile) = sb.demo_script("web", wrong, 0);
    let pfile = sb.pfile(&format!(
        "{DEMO} {} 1 pidfile={} retry_over_action=continue\n{}",
        script.display(),
        pidfile.display(),
        stall_block(
            "_bi_webserv",
            &format!("10:0:2:10:{port}"),
            0,
            "    probe_timeout = 1s\n"
        )
    ));
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    let t0 = Instant::now();
    pc.wait_for("Find Web Server Stall", Duration::from_secs(60));
    let failed = pc.wait_for("Restart Failed", T);
    assert!(
        failed.contains("before it ever answered its stall check"),
        "{failed}"
    );
    pc.wait_for("Retry Over", T);
    let e = pc.entry(1);
    assert_eq!(e["proc_sts"], "UNAVAIL");
    fault_row(
        7,
        "port never returns",
        "retry-over action",
        "Retry Over (continue), UNAVAIL",
        Some(t0.elapsed()),
    );
}

/// Fault 10: The watched pid is reused by an unrelated process before pcheck looks again
/// (/proc polling every 5 s): pcheck still sees the death (another start time), and
/// leaves the unrelated process alone.
#[test]
fn fault10_recycled_pid_is_still_detected_as_dead() {
    if !root_or_skip("fault10") {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let pidfile = sb.file("web.pid");
    // perl reaps the server the moment it dies, so its pid is free at once.
    let script = sb.script(
        "web.rc",
        &format!(
            "perl -e 'if (fork() == 0) {{ exec @ARGV; }} wait; sleep 100000;' {DEMO} --port {port} --pidfile {} >/dev/null 2>&1 &",
            pidfile.display()
        ),
    );
    let pfile = entry_pfile(&sb, DEMO, &script, &pidfile, "");
    let mut pc = Pcheck::start(
        &sb,
        &pfile,
        &["--evidence", "procfs", "--poll-interval", "5s"],
    );
    pc.wait_for("Started Process", T);
    let pid = pid_of(&pc.entry(1));
    let t0 = Instant::now();
    kill(pid, libc::SIGKILL);
    while std::path::Path::new(&format!("/proc/{pid}")).exists() {
        assert!(t0.elapsed() < Duration::from_secs(30), "perl reaps at once");
        std::thread::yield_now();
    }
    // Take the pid for an unrelated process (ns_last_pid: the next pid is +1).
    let mut impostor = None;
    for _ in 0..50 {
        if std::fs::write("/proc/sys/kernel/ns_last_pid", format!("{}", pid - 1)).is_err() {
            break;
        }
        let mut c = Command::new("sleep").arg("300").spawn().expect("spawn");
        if c.id() as i32 == pid {
            impostor = Some(c);
            break;
        }
        let _ = c.kill();
        let _ = c.wait();
    }
    let Some(mut impostor) = impostor else {
        not_run(
            "fault10",
            &format!("could not get pid {pid} again (ns_last_pid)"),
        );
        return;
    };
    if t0.elapsed() >= Duration::from_secs(5) {
        // The case needs the pid taken again between two polls (5 s apart).
        not_run(
            "fault10",
            &format!("taking pid {pid} again took {:?} on this loaded machine, longer than a poll interval", t0.elapsed()),
        );
        return;
    }
    let down = pc.wait_for("Process Down", Duration::from_secs(15));
    assert!(
        down.contains(&format!("pid= {pid} ")) && down.contains("vanished"),
        "{down}"
    );
    pc.wait_for("Restarted Process", T);
    assert!(
        impostor.try_wait().expect("try_wait").is_none(),
        "the unrelated process was not touched"
    );
    let _ = impostor.kill();
    let _ = impostor.wait();
    fault_row(
        10,
        "pid reused by an unrelated process",
        "still detected as dead",
        "detected (start time differs), impostor untouched",
        Some(t0.elapsed()),
    );
}

/// Fault 11: 1,000 crash/restart cycles: pcheck's fd count and RSS stay flat.
#[test]
fn fault11_a_thousand_crash_restart_cycles_leak_nothing() {
    if !root_or_skip("fault11") {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let (script, pidfile) = sb.demo_script("web", port, 0);
    let pfile = sb.pfile(&format!(
        "{DEMO} {} 3 pidfile={} retry_delay=0\n",
        script.display(),
        pidfile.display()
    ));
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    let mut pid = pid_in(&pc.wait_for("Started Process", T));
    let me = pc.child.id();
    let t0 = Instant::now();
    let mut at100 = (0, 0);
    for i in 1..=1000 {
        kill(pid, libc::SIGKILL);
        pid = pid_in(&pc.wait_for("Restarted Process", T));
        pc.seen.clear();
        if i == 100 {
            at100 = fds_and_rss(me);
        }
    }
    let at1000 = fds_and_rss(me);
    let took = t0.elapsed();
    assert_eq!(pc.entry(1)["restart_count"], 1000);
    println!(
        "1000 cycles in {} ms: pcheck fds {} -> {}, RSS {} kB -> {} kB (after 100 -> after 1000)",
        took.as_millis(),
        at100.0,
        at1000.0,
        at100.1,
        at1000.1
    );
    assert!(at1000.0 <= at100.0 + 2, "fds flat: {at100:?} -> {at1000:?}");
    assert!(
        at1000.1 <= at100.1 + 2048,
        "RSS flat (within 2 MB): {at100:?} -> {at1000:?}"
    );
    fault_row(
        11,
        "1,000 crash/restart cycles",
        "fd count and RSS flat",
        &format!(
            "fds {} -> {}, RSS {} -> {} kB",
            at100.0, at1000.0, at100.1, at1000.1
        ),
        Some(took / 1000),
    );
}

/// Fault 12: A fatal fault reboots (the reboot command here appends to a file); the
/// threshold stops the loop, also after a "reboot" (pcheck started again with the
/// same state directory).
#[test]
fn fault12_reboot_threshold_survives_reboots() {
    if !root_or_skip("fault12") {
        return;
    }
    let sb = Sandbox::new();
    let rebooted = sb.file("rebooted");
    let reboot = sb.script(
        "reboot.sh",
        &format!("echo reboot >> {}", rebooted.display()),
    );
    let bad = sb.script("bad.rc", "exit 1");
    let pfile = sb.pfile(&format!(
        "auto_reboot = on\nreboot_after = 1s\nreboot_limit = 2\nreboot_command = {}\nretry_delay = 0\n\
         /usr/sbin/never-runs {} 1 retry_over_action=continue\n",
        reboot.display(),
        bad.display()
    ));
    let reboots = || {
        std::fs::read_to_string(&rebooted)
            .map(|s| s.lines().count())
            .unwrap_or(0)
    };
    for boot in 1..=2 {
        let mut pc = Pcheck::start(&sb, &pfile, &[]);
        let fatal = pc.wait_for("Fatal fault", T);
        assert!(fatal.contains(&format!("Auto Reboot {boot}/2")), "{fatal}");
        pc.wait_for("reboot command", T);
        assert_eq!(reboots(), boot);
        // The "reboot" ends pcheck.
        kill(pc.child.id() as i32, libc::SIGKILL);
        let _ = pc.child.wait();
    }
    let t0 = Instant::now();
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    let held = pc.wait_for("Auto Reboot suppressed", T);
    assert!(held.contains("reached reboot_limit 2"), "{held}");
    assert_eq!(reboots(), 2, "no third reboot");
    let state = std::fs::read_dir(sb.file("state"))
        .expect("state dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "state"))
        .expect("a state file");
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state).expect("read")).expect("json");
    assert_eq!(v["reboot_count"], 2);
    assert_eq!(v["reboots"].as_array().map(Vec::len), Some(2));
    fault_row(
        12,
        "reboot threshold reached",
        "no further reboot, also after a reboot",
        "2 reboots, then suppressed",
        Some(t0.elapsed()),
    );
}

/// Fault 13a: A corrupt state file: reported, kept aside, replaced; monitoring goes on.
#[test]
fn fault13_corrupt_state_file_is_replaced() {
    if !root_or_skip("fault13a") {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let (script, pidfile) = sb.demo_script("web", port, 0);
    let pfile = entry_pfile(&sb, DEMO, &script, &pidfile, "");
    let store = psweb::state::Store::new(&sb.file("state"), &pfile);
    std::fs::create_dir_all(sb.file("state")).expect("mkdir");
    std::fs::write(store.path(), "{\"version\": 1, \"reboot_count\": ").expect("write garbage");
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    let corrupt = pc.seen_or_wait("is corrupt", T);
    assert!(corrupt.contains("replaced by a fresh one"), "{corrupt}");
    pc.seen_or_wait("Started Process", T);
    let t0 = Instant::now();
    kill(pid_of(&pc.entry(1)), libc::SIGKILL);
    pc.wait_for("Restarted Process", T);
    // The state is written right after the restart is logged.
    let deadline = Instant::now() + T;
    loop {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(store.path()).expect("read"))
                .expect("valid JSON again");
        if v["entries"][0]["restart_count"] == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "restart_count 1 persisted: {v}");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(store.path().with_extension("corrupt").exists());
    fault_row(
        13,
        "state file corrupted",
        "clear log, monitoring continues",
        "reported, kept aside, replaced; restart worked",
        Some(t0.elapsed()),
    );
}

/// Fault 13b: A full disk under the state directory: a clear log, monitoring goes on.
#[test]
fn fault13_full_disk_does_not_stop_monitoring() {
    if !root_or_skip("fault13b") {
        return;
    }
    let sb = Sandbox::new();
    let dir = sb.file("state");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "psweb-test-full"])
        .arg(&dir)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        skip("fault13b", "cannot mount a small tmpfs here");
        return;
    }
    struct Umount(std::path::PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _umount = Umount(dir.clone());
    // Fill it.
    let _ = std::fs::write(dir.join("filler"), vec![0u8; 64 * 1024]);
    let port = free_port();
    let (script, pidfile) = sb.demo_script("web", port, 0);
    let pfile = entry_pfile(&sb, DEMO, &script, &pidfile, "");
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    let err = pc.seen_or_wait("cannot write state file", T);
    assert!(
        err.contains("No space left on device") && err.contains("monitoring continues"),
        "{err}"
    );
    pc.seen_or_wait("Started Process", T);
    let t0 = Instant::now();
    kill(pid_of(&pc.entry(1)), libc::SIGKILL);
    pc.wait_for("Restarted Process", T);
    assert!(http_ok(port));
    fault_row(
        13,
        "disk full (state directory)",
        "clear log, monitoring continues",
        "logged once, restart worked",
        Some(t0.elapsed()),
    );
    pc.drain();
    let repeats = pc
        .seen
        .iter()
        .filter(|l| l.contains("cannot write state file"))
        .count();
    assert!(repeats <= 1, "logged once, not at every write: {repeats}");
}

/// Safety as root: a restart script or pfile that a non-root user could change is
/// refused, with the path named; nothing starts.
#[test]
fn strict_modes_refuse_writable_scripts_and_pfiles() {
    if !root_or_skip("strict_modes") {
        return;
    }
    let sb = Sandbox::new();
    let open = sb.file("open");
    std::fs::create_dir_all(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let script = open.join("web.rc");
    std::fs::write(&script, "#!/bin/sh\necho run >> /dev/null\n").expect("write");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let check = |pfile: &std::path::Path| {
        Command::new(PCHECK)
            .args(["--syslog", "none", "-f"])
            .arg(pfile)
            .env("PSWEB_RUN_DIR", sb.run_dir())
            .env("PSWEB_STATE_DIR", sb.file("state"))
            .output()
            .expect("run pcheck")
    };
    let pfile = sb.pfile(&format!("{DEMO} {} 3\n", script.display()));
    let out = check(&pfile);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "directory {} above restart script is writable by group or others",
            open.display()
        )),
        "{err}"
    );
    // A world-writable script in a safe directory.
    let (safe, _) = sb.demo_script("web", free_port(), 0);
    std::fs::set_permissions(&safe, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    std::fs::write(&pfile, format!("{DEMO} {} 3\n", safe.display())).expect("write");
    let err = String::from_utf8_lossy(&check(&pfile).stderr).into_owned();
    assert!(
        err.contains("restart script is writable by group or others (mode 0777)"),
        "{err}"
    );
    // A pfile others can write.
    std::fs::set_permissions(&safe, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::fs::set_permissions(&pfile, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = check(&pfile);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing pfile"),
        "{out:?}"
    );
    assert_eq!(sb.runs("web"), 0, "nothing started");
}

/// `user=`: the restart script runs as that user, with a clean environment.
#[test]
fn restart_script_runs_as_the_configured_user() {
    if !root_or_skip("user") {
        return;
    }
    let sb = Sandbox::new();
    let who = sb.file("who");
    std::fs::write(&who, "").expect("touch");
    std::fs::set_permissions(&who, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let script = sb.script(
        "who.rc",
        &format!("echo \"$(id -u) $USER $PATH\" > {}\nexit 1", who.display()),
    );
    let pfile = sb.pfile(&format!(
        "/usr/sbin/never-runs {} 1 user=nobody\n",
        script.display()
    ));
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    pc.wait_for("Retry Over", T);
    let got = std::fs::read_to_string(&who).expect("read");
    assert_eq!(
        got.trim(),
        "65534 nobody /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    );
}

/// systemd's notify protocol: READY once the entries run, WATCHDOG from the main
/// loop at half of WATCHDOG_USEC, STOPPING at the end.
#[test]
fn notifies_systemd_ready_watchdog_stopping() {
    if !root_or_skip("notify") {
        return;
    }
    let sb = Sandbox::new();
    let sock = sb.file("notify");
    let rx = std::os::unix::net::UnixDatagram::bind(&sock).expect("bind");
    rx.set_read_timeout(Some(T)).expect("timeout");
    let port = free_port();
    let (script, pidfile) = sb.demo_script("web", port, 0);
    let pfile = entry_pfile(&sb, DEMO, &script, &pidfile, "");
    let mut child = Command::new(PCHECK)
        .args(["--syslog", "none", "-q", "-f"])
        .arg(&pfile)
        .env("PSWEB_RUN_DIR", sb.run_dir())
        .env("PSWEB_STATE_DIR", sb.file("state"))
        .env("NOTIFY_SOCKET", &sock)
        .env("WATCHDOG_USEC", "200000")
        .spawn()
        .expect("spawn");
    let mut buf = [0u8; 512];
    let mut next = || {
        let n = rx.recv(&mut buf).expect("a notification");
        // sd_notify(3) datagrams: newline-separated assignments, a trailing newline allowed.
        String::from_utf8_lossy(&buf[..n])
            .trim_end_matches('\n')
            .to_owned()
    };
    let first = next();
    assert!(first.starts_with("READY=1"), "{first}");
    assert!(http_ok(port), "READY comes after the server runs");
    assert_eq!(next(), "WATCHDOG=1");
    assert_eq!(next(), "WATCHDOG=1");
    let out = padmin_as(&sb.run_dir(), &pfile, &["-c", "shutdown"], None);
    assert!(out.status.success());
    loop {
        let m = next();
        if m != "WATCHDOG=1" {
            assert_eq!(m, "STOPPING=1");
            break;
        }
    }
    let _ = child.wait();
}
