//! pcheck's start and stop, end to end: a line the eBPF loader writes through the
//! `log` facade reaches pcheck's output; on SIGTERM the `pcheck_stop` event reaches a
//! webhook receiver, a receiver that hangs delays the exit by at most
//! `shutdown_flush`, and a restart script in flight is waited for, or killed at its
//! `restart_timeout`; what the script writes is logged to its end, and a reboot
//! command still running is waited for at most `shutdown_flush`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

mod common;
use common::*;
use std::path::Path;
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

/// A webhook receiver: the `kind` of every event POSTed to it.
fn receiver() -> (u16, Receiver<String>) {
    let (port, bodies) = webhook_receiver();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for (_, v) in bodies {
            let kind = v["kind"].as_str().unwrap_or("").to_string();
            if tx.send(kind).is_err() {
                return;
            }
        }
    });
    (port, rx)
}

/// A pfile watching a demo server on a free port, with `globals` first.
fn demo_pfile(sb: &Sandbox, globals: &str) -> std::path::PathBuf {
    let (script, pidfile) = sb.demo_script("web", free_port(), 1);
    sb.pfile(&format!(
        "{globals}{DEMO} {} 3 pidfile={}\n",
        script.display(),
        pidfile.display()
    ))
}

/// SIGTERMs pcheck; returns its exit code and how long it took to exit.
fn terminate(pc: &mut Pcheck, within: Duration) -> (Option<i32>, Duration) {
    let at = Instant::now();
    kill(pc.child.id() as i32, libc::SIGTERM);
    let code = pc.wait_exit(within);
    (code, at.elapsed())
}

#[test]
fn ebpf_attach_failure_reaches_pcheck_output() {
    let name = "ebpf_attach_failure_reaches_pcheck_output";
    if !root_or_skip(name) || !bpf_object_or_skip(name) {
        return;
    }
    let obj = std::env::var_os("PSWEB_BPF_OBJECT")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Path::new(PCHECK).with_file_name("psweb.bpf.o"));
    let sb = Sandbox::new();
    // The same object with its optional programs renamed: the loader finds no program
    // for those hooks, and says so through the `log` facade.
    let mut bytes = std::fs::read(&obj).expect("read the eBPF object");
    for (from, to) in [
        (&b"psweb_kfree_skb"[..], &b"xsweb_kfree_skb"[..]),
        (b"psweb_sk_data_ready", b"xsweb_sk_data_ready"),
        (b"psweb_tcp_conn_request", b"xsweb_tcp_conn_request"),
    ] {
        let at = bytes
            .windows(from.len())
            .position(|w| w == from)
            .expect("the object names its program");
        bytes[at..at + to.len()].copy_from_slice(to);
    }
    let bad = sb.file("renamed.bpf.o");
    std::fs::write(&bad, bytes).expect("write the object");
    let pfile = demo_pfile(&sb, "");
    let mut pc = Pcheck::start(&sb, &pfile, &["--bpf-object", &bad.display().to_string()]);
    pc.wait_for("pcheck started", Duration::from_secs(60));
    // The loader's own line (sense/ebpf/loader.rs, `log::warn!`), not the agent's summary of it
    // ("eBPF: no hook for ...") nor the load line.
    let facade: Vec<&String> = pc
        .seen
        .iter()
        .filter(|l| l.contains("has no program xsweb_") || l.contains("has no program psweb_"))
        .filter(|l| !l.contains("no hook for") && !l.contains("eBPF loaded"))
        .collect();
    assert!(
        !facade.is_empty(),
        "no line from the eBPF loader about the missing programs; seen:\n{}",
        pc.seen.join("\n")
    );
    let (code, _) = terminate(&mut pc, Duration::from_secs(60));
    assert_eq!(code, Some(0));
}

#[test]
fn every_way_to_stop_sends_pcheck_stop_to_the_webhook() {
    if !root_or_skip("every_way_to_stop_sends_pcheck_stop_to_the_webhook") {
        return;
    }
    for how in ["SIGTERM", "SIGINT", "padmin -c shutdown"] {
        let sb = Sandbox::new();
        let (rport, events) = receiver();
        let pfile = demo_pfile(&sb, &format!("webhook = http://127.0.0.1:{rport}/hook\n"));
        let mut pc = Pcheck::start(&sb, &pfile, &["--evidence", "pidfd"]);
        pc.wait_for("Started Process", Duration::from_secs(60));
        let at = Instant::now();
        match how {
            "SIGTERM" => kill(pc.child.id() as i32, libc::SIGTERM),
            "SIGINT" => kill(pc.child.id() as i32, libc::SIGINT),
            _ => {
                let out = pc.padmin(&["-c", "shutdown"]);
                assert!(out.status.success(), "padmin -c shutdown failed: {out:?}");
            }
        }
        let code = pc.wait_exit(Duration::from_secs(60));
        let took = at.elapsed();
        assert_eq!(code, Some(0), "exit status after {how}");
        let mut kinds = Vec::new();
        while let Ok(k) = events.recv_timeout(Duration::from_secs(10)) {
            let stop = k == "pcheck_stop";
            kinds.push(k);
            if stop {
                break;
            }
        }
        println!("{how} -> exit {took:?} (loaded host); webhook got {kinds:?}");
        assert_eq!(
            kinds.first().map(String::as_str),
            Some("pcheck_start"),
            "{how}: {kinds:?}"
        );
        assert_eq!(
            kinds.last().map(String::as_str),
            Some("pcheck_stop"),
            "{how}: {kinds:?}"
        );
        // The server pcheck started keeps running; the sandbox ends it.
        assert!(!demo_pids(&sb).is_empty(), "{how} stopped the server too");
    }
}

#[test]
fn hanging_receiver_delays_the_exit_by_at_most_shutdown_flush() {
    if !root_or_skip("hanging_receiver_delays_the_exit_by_at_most_shutdown_flush") {
        return;
    }
    let sb = Sandbox::new();
    let hang = hanging_receiver();
    let flush = Duration::from_secs(2);
    let pfile = demo_pfile(
        &sb,
        &format!("webhook = http://127.0.0.1:{hang}/hook\nshutdown_flush = 2s\n"),
    );
    let mut pc = Pcheck::start(&sb, &pfile, &["--evidence", "pidfd"]);
    pc.wait_for("Started Process", Duration::from_secs(60));
    let (code, took) = terminate(&mut pc, Duration::from_secs(60));
    println!("hanging receiver, shutdown_flush = 2s: SIGTERM -> exit {took:?} (loaded host)");
    assert_eq!(code, Some(0));
    // The queue holds events the receiver never takes: pcheck waits the bound...
    assert!(
        took >= flush,
        "exited after {took:?}, before the flush bound"
    );
    // ...and not much more (everything else in a stop takes milliseconds; 5 s is a
    // sanity bound for a loaded 2-core host).
    assert!(
        took < flush + Duration::from_secs(5),
        "exited after {took:?}; the bound is {flush:?}"
    );
    assert!(
        pc.seen
            .iter()
            .any(|l| l.contains("not sent within shutdown_flush (2000 ms)")),
        "no line about the unsent queue; seen:\n{}",
        pc.seen.join("\n")
    );
}

/// A pfile whose one entry is never running and whose restart script is `body`.
fn script_pfile(sb: &Sandbox, body: &str, (globals, settings): (&str, &str)) -> std::path::PathBuf {
    let script = sb.script("slow.rc", body);
    sb.pfile(&format!(
        "{globals}{DEMO} {} 1 pidfile={} {settings}\n",
        script.display(),
        sb.file("never.pid").display()
    ))
}

/// pcheck whose only entry's start script is running: it touches `started`, runs
/// `work`, touches the returned `finished` file, then runs `then`. Returns once the
/// script has started. `settings`: the pfile's global lines, and the entry's settings.
fn script_in_flight(
    sb: &Sandbox,
    work: &str,
    then: &str,
    settings: (&str, &str),
) -> (Pcheck, std::path::PathBuf, std::path::PathBuf) {
    let (started, finished) = (sb.file("started"), sb.file("finished"));
    let pfile = script_pfile(
        sb,
        &format!(
            "touch {}\n{work}\ntouch {}\n{then}",
            started.display(),
            finished.display()
        ),
        settings,
    );
    let pc = Pcheck::start(sb, &pfile, &["--evidence", "pidfd"]);
    wait_file(&started, Duration::from_secs(60));
    (pc, pfile, finished)
}

/// Waits for `path` to exist.
fn wait_file(path: &Path, within: Duration) {
    let deadline = Instant::now() + within;
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} did not appear within {within:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn restart_script_in_flight_at_sigterm_is_waited_for() {
    if !root_or_skip("restart_script_in_flight_at_sigterm_is_waited_for") {
        return;
    }
    let sb = Sandbox::new();
    let (mut pc, pfile, finished) =
        script_in_flight(&sb, "sleep 2", "exit 1", ("", "restart_timeout=60s"));
    let at = Instant::now();
    kill(pc.child.id() as i32, libc::SIGTERM);
    pc.wait_for("pcheck shutdown: SIGTERM", Duration::from_secs(60));
    // While it waits, pcheck still holds the pfile (a second pcheck is refused) and
    // tells padmin that it is stopping.
    let out = pc.padmin(&["-c", "show pent"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("pcheck is shutting down"),
        "padmin while stopping: {out:?}"
    );
    let second = std::process::Command::new(PCHECK)
        .args(["--syslog", "none", "-f"])
        .arg(&pfile)
        .env("PSWEB_RUN_DIR", sb.run_dir())
        .env("PSWEB_STATE_DIR", sb.file("state"))
        .output()
        .expect("run a second pcheck");
    assert!(
        !second.status.success()
            && String::from_utf8_lossy(&second.stderr).contains("already watches this pfile"),
        "a second pcheck while the first stops: {second:?}"
    );
    let code = pc.wait_exit(Duration::from_secs(60));
    let took = at.elapsed();
    println!("restart script in flight (2 s left): SIGTERM -> exit {took:?}");
    assert_eq!(code, Some(0));
    assert!(
        finished.exists(),
        "pcheck exited after {took:?} without waiting for the restart script"
    );
}

#[test]
fn restart_script_in_flight_at_sigterm_is_killed_at_its_timeout() {
    if !root_or_skip("restart_script_in_flight_at_sigterm_is_killed_at_its_timeout") {
        return;
    }
    let sb = Sandbox::new();
    let (mut pc, _pfile, finished) =
        script_in_flight(&sb, "sleep 60", "", ("", "restart_timeout=2s"));
    let (code, took) = terminate(&mut pc, Duration::from_secs(60));
    println!("restart script in flight (restart_timeout = 2 s): SIGTERM -> exit {took:?}");
    assert_eq!(code, Some(0));
    // Killed at its timeout (2 s after it started), far before its 60 s sleep ends:
    // 30 s is a sanity bound.
    assert!(took < Duration::from_secs(30), "exited after {took:?}");
    let script = sb.file("slow.rc").display().to_string();
    assert!(
        dead_within_all(&script, Duration::from_secs(10)),
        "the restart script still runs after pcheck exited"
    );
    assert!(!finished.exists(), "the script ran to its end");
}

#[test]
fn restart_script_output_is_logged_to_its_end_and_a_server_holding_the_pipe_does_not_hold_the_stop()
{
    let name = "restart_script_output_is_logged_to_its_end_and_a_server_holding_the_pipe_does_not_hold_the_stop";
    if !root_or_skip(name) {
        return;
    }
    let sb = Sandbox::new();
    let bg = sb.file("bg.pid");
    // At SIGTERM the script is still in its first second; then it writes 3,000 lines
    // at once (they fit in the pipe: the script ends at once and pcheck has them all
    // still to log), leaves a process holding its output pipe, as a server started
    // without redirecting its output would, and fails.
    let then = format!(
        "seq -f 'script line %g' 1 3000\nsleep 600 &\necho $! > {}\nexit 1",
        bg.display()
    );
    let (mut pc, _pfile, finished) = script_in_flight(
        &sb,
        "sleep 1",
        &then,
        ("shutdown_flush = 30s\n", "restart_timeout=60s"),
    );
    let (code, took) = terminate(&mut pc, Duration::from_secs(60));
    let holder = kill_pid_in(&bg);
    println!("restart script writing 3,000 lines at SIGTERM, pipe held after it: exit {took:?}");
    assert_eq!(code, Some(0));
    assert!(finished.exists(), "pcheck did not wait for the script");
    assert!(holder.is_some(), "the script did not leave its pipe holder");
    let last = pc.seen_or_wait("script line 3000", Duration::from_secs(10));
    assert!(last.contains("restart script "), "{last}");
    let lines = pc
        .seen
        .iter()
        .filter(|l| l.contains(": script line "))
        .count();
    assert_eq!(lines, 3000, "every line the script wrote is logged once");
    // The holder never closes the pipe: pcheck ends the reader once nothing more is
    // waiting, not at shutdown_flush (30 s). Expected about 1 s; 15 s is a sanity bound.
    assert!(took < Duration::from_secs(15), "exited after {took:?}");
    assert!(
        !pc.seen
            .iter()
            .any(|l| l.contains("still running or writing")),
        "a reader counted as unfinished: {:?}",
        pc.seen
    );
}

#[test]
fn a_reboot_command_still_running_at_sigterm_is_logged_as_it_prints_and_waited_for_at_most_shutdown_flush(
) {
    let name = "a_reboot_command_still_running_at_sigterm_is_logged_as_it_prints_and_waited_for_at_most_shutdown_flush";
    if !root_or_skip(name) {
        return;
    }
    let sb = Sandbox::new();
    let hung = sb.file("reboot.pid");
    // A harmless reboot command that says what it does and then does not return.
    let cmd = sb.script(
        "reboot.sh",
        &format!(
            "echo $$ > {}\necho rebooting the host\nexec sleep 600",
            hung.display()
        ),
    );
    let never = sb.script("never.rc", "exit 1");
    let pfile = sb.pfile(&format!(
        "auto_reboot = on\nreboot_after = 1s\nreboot_limit = 1\nreboot_command = {}\n\
         shutdown_flush = 1s\n/usr/sbin/psweb-never {} 0\n",
        cmd.display(),
        never.display()
    ));
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    // Its output is logged as it comes, not when it returns.
    pc.wait_for(
        "reboot command: rebooting the host",
        Duration::from_secs(60),
    );
    let (code, took) = terminate(&mut pc, Duration::from_secs(60));
    let hung_pid = kill_pid_in(&hung);
    assert!(hung_pid.is_some(), "the reboot command wrote no pid");
    println!("reboot command still running, shutdown_flush = 1s: SIGTERM -> exit {took:?}");
    assert_eq!(code, Some(0));
    let said = pc.seen_or_wait(
        "shutdown_flush (1000 ms) passed with",
        Duration::from_secs(10),
    );
    assert!(said.contains("still running or writing"), "{said}");
    // Waited for the flush bound (1 s), not the command's 600 s: 15 s is a sanity bound.
    assert!(took >= Duration::from_secs(1), "exited after {took:?}");
    assert!(took < Duration::from_secs(15), "exited after {took:?}");
}

/// SIGKILLs the process whose pid the file at `path` holds; returns that pid.
fn kill_pid_in(path: &Path) -> Option<i32> {
    let pid = std::fs::read_to_string(path)
        .ok()
        .and_then(|p| p.trim().parse::<i32>().ok())?;
    kill(pid, libc::SIGKILL);
    Some(pid)
}

/// True once no process names `needle` in its command line.
fn dead_within_all(needle: &str, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while !pids_with_cmdline(needle).is_empty() {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}
