//! padmin against a real pcheck: show pent, stop/start, shutdown, who may connect,
//! and a bad pfile that starts nothing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn started(sb: &Sandbox, port: u16) -> Pcheck {
    let (script, pidfile) = sb.demo_script("web", port, 0);
    let pfile = sb.pfile(&format!(
        "retry_over_action = exit\n{DEMO} {} 2 pidfile={}\n_bi_webserv {{\n    PS_INIT    DLL:/opt/HA/PSWE/lib/lib_bi_webserv.so:DIRECT:-:::0\n    PS_EXEC    DLL:/opt/HA/PSWE/lib/lib_bi_webserv.so:\n                   DIRECT:-:60:0:2:600:{port}\n    PS_ACTION  DLL:/opt/HA/PSWE/lib/lib_bi_webserv.so:DIRECT:-:-:1:0\n    PS_QUIT    DLL:/opt/HA/PSWE/lib/lib_bi_webserv.so:DIRECT:-:::0\n}}\n",
        script.display(),
        pidfile.display()
    ));
    let mut pc = Pcheck::start(sb, &pfile, &[]);
    pc.wait_for("Started Process", T);
    pc
}

#[test]
fn show_pent_prints_the_seed_block() {
    if !root_or_skip("show_pent_prints_the_seed_block") {
        return;
    }
    let sb = Sandbox::new();
    let mut pc = started(&sb, free_port());
    // The first probe runs at once; its answer moves stall_chk from INIT to AVAIL.
    pc.seen_or_wait("stall_chk (web) of pent_id= 1", T);
    let pid = pid_of(&pc.entry(1));
    let out = pc.padmin(&["-c", "show pent"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let expected = format!(
        "pname                = {DEMO}\n\
         pid                  = {pid}\n\
         retry_count          = 0\n\
         restart_count        = 0\n\
         proc_sts             = AVAIL\n\
         stall_chk (web)      = AVAIL\n\
         retry_over_act       = exit\n\
         rerun_time           = -----\n\
         pent_id              = 1\n\
         monitor_sts          = on\n"
    );
    assert_eq!(text, expected);
    // The seed's spelling of the command as separate words works too.
    let out = pc.padmin(&["-c", "show", "pent"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

#[test]
fn stop_and_start_turn_monitoring_off_and_on() {
    if !root_or_skip("stop_and_start") {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let mut pc = started(&sb, port);
    let out = pc.padmin(&["-c", "stop", "-n", "1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(pc.entry(1)["monitor_sts"], "off");
    kill(pid_of(&pc.entry(1)), libc::SIGKILL);
    pc.wait_for("not restarting", T);
    let e = pc.entry(1);
    assert_eq!(e["proc_sts"], "UNAVAIL");
    assert_eq!(sb.runs("web"), 1, "not restarted while monitoring is off");
    let out = pc.padmin(&["-c", "start", "-n", "1"]);
    assert!(out.status.success());
    pc.wait_for("Restarted Process", T);
    let e = pc.entry(1);
    assert_eq!(
        (e["monitor_sts"].as_str(), e["proc_sts"].as_str()),
        (Some("on"), Some("AVAIL"))
    );
    assert!(http_ok(port));
    // An unknown pent_id is a clear error.
    let out = pc.padmin(&["-c", "stop", "-n", "9"]);
    refused(&out, "no process entry with pent_id 9");
}

#[test]
fn shutdown_ends_pcheck_and_leaves_the_server_running() {
    if !root_or_skip("shutdown") {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let mut pc = started(&sb, port);
    let out = pc.padmin(&["-c", "shutdown"]);
    assert!(out.status.success());
    assert_eq!(pc.wait_exit(T), Some(0));
    assert!(
        http_ok(port),
        "ending pcheck does not stop the watched server"
    );
    let out = pc.padmin(&["-c", "show pent"]);
    refused(&out, "no pcheck is running");
}

#[test]
fn non_root_peer_is_refused() {
    if !root_or_skip("non_root_peer_is_refused") {
        return;
    }
    let sb = Sandbox::new();
    let mut pc = started(&sb, free_port());
    let nobody = 65534;
    // The socket is 0600: the file system refuses first.
    let out = padmin_as(&sb.run_dir(), &pc.pfile, &["-c", "show pent"], Some(nobody));
    refused(&out, "permission denied");
    // Even if someone loosens the socket's mode, pcheck checks the peer's uid.
    let sock = std::fs::read_dir(sb.run_dir())
        .expect("run dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "sock"))
        .expect("socket");
    let mode = std::fs::metadata(&sock).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the socket is created 0600");
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let out = padmin_as(&sb.run_dir(), &pc.pfile, &["-c", "shutdown"], Some(nobody));
    refused(&out, "uid 65534 may not control");
    pc.wait_for("refused uid 65534", T);
    assert!(
        pc.child.try_wait().expect("try_wait").is_none(),
        "the refused shutdown did nothing"
    );
}

#[test]
fn bad_pfile_starts_nothing() {
    let sb = Sandbox::new();
    let (script, _) = sb.demo_script("web", free_port(), 0);
    let pfile = sb.pfile(&format!("{DEMO} {} 3 colour=blue\n", script.display()));
    let out = Command::new(PCHECK)
        .arg("-f")
        .arg(&pfile)
        .args(["--syslog", "none"])
        .env("PSWEB_RUN_DIR", sb.run_dir())
        .output()
        .expect("run pcheck");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    let col = DEMO.len() + 1 + script.display().to_string().len() + 4;
    assert!(
        err.contains(&format!(
            "{}:1:{col}: unknown entry setting \"colour\"",
            pfile.display()
        )),
        "{err}"
    );
    assert_eq!(sb.runs("web"), 0, "nothing started");
    fault_row(
        14,
        "bad pfile",
        "clear error, nothing started",
        "file:line:col error, exit 2, nothing started",
        None,
    );
    // --check says the same and also starts nothing.
    let out = Command::new(PCHECK)
        .arg("--check")
        .arg("-f")
        .arg(&pfile)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(sb.runs("web"), 0);
}

#[test]
fn check_accepts_a_good_pfile_and_flags_a_missing_script() {
    let sb = Sandbox::new();
    let (script, _) = sb.demo_script("web", free_port(), 0);
    let good = sb.pfile(&format!("{DEMO} {} 3\n", script.display()));
    let out = Command::new(PCHECK)
        .arg("--check")
        .arg("-f")
        .arg(&good)
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("OK (1 process entry, 0 stall checks)"));
    std::fs::write(
        &good,
        format!("{DEMO} {}/missing.rc 3\n", sb.path().display()),
    )
    .expect("write");
    let out = Command::new(PCHECK)
        .arg("--check")
        .arg("-f")
        .arg(&good)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(":1:{}: restart script", DEMO.len() + 2)),
        "{err}"
    );
}

/// pcheck's lines reach syslog as glibc's syslog(3) would send them:
/// `<PRI>Mmm dd hh:mm:ss pcheck[PID]: msg`, facility daemon.
#[test]
fn log_lines_reach_syslog_in_the_seed_format() {
    if !root_or_skip("log_lines_reach_syslog") {
        return;
    }
    let sb = Sandbox::new();
    let sock_path = sb.file("devlog");
    let syslog = std::os::unix::net::UnixDatagram::bind(&sock_path).expect("bind a syslog socket");
    syslog.set_read_timeout(Some(T)).expect("timeout");
    let port = free_port();
    let (script, pidfile) = sb.demo_script("web", port, 0);
    let pfile = entry_pfile(&sb, DEMO, &script, &pidfile, "");
    let mut child = Command::new(PCHECK)
        .arg("-f")
        .arg(&pfile)
        .arg("--syslog")
        .arg(&sock_path)
        .arg("-q")
        .env("PSWEB_RUN_DIR", sb.run_dir())
        .spawn()
        .expect("spawn pcheck");
    let pid = child.id();
    let mut buf = [0u8; 2048];
    let started = loop {
        let n = syslog
            .recv(&mut buf)
            .expect("a datagram before the timeout");
        let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
        if msg.contains("Started Process") {
            break msg;
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    // <30> = daemon.info; then "Mmm dd hh:mm:ss pcheck[PID]: ".
    assert!(started.starts_with("<30>"), "{started}");
    let rest = &started[4..];
    let stamp = &rest[..15];
    assert_eq!(stamp.as_bytes()[3], b' ', "{stamp}");
    assert_eq!((&stamp[9..10], &stamp[12..13]), (":", ":"), "{stamp}");
    assert!(
        rest[15..].starts_with(&format!(
            " pcheck[{pid}]: Started Process: pname= {DEMO} pid= "
        )),
        "{started}"
    );
}

/// padmin failed, and said `says` on stderr.
fn refused(out: &std::process::Output, says: &str) {
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains(says),
        "padmin should have failed saying {says:?}: {out:?}"
    );
}
