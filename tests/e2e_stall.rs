//! Stall checks end to end (SPEC 3): real Apache httpd (HTTP and HTTPS), a plain TCP
//! server, SIGSTOP as the stall, the seed's messages and rules, and kernel evidence.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

mod common;
use common::*;
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Timeouts for the seed-timed tests: interval 10 s, retry-over 10 s.
const STALL_T: Duration = Duration::from_secs(60);

fn signal_all(pids: &[i32], sig: i32) {
    for p in pids {
        // SAFETY: plain kill.
        unsafe { libc::kill(*p, sig) };
    }
}

/// Opens up to `n` connections (each given 50 ms) so that a server that accepts
/// nothing has its accept queue filled. Returns the ones that connected.
fn load(port: u16, n: usize) -> Vec<TcpStream> {
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    (0..n)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(50)).ok())
        .collect()
}

/// All httpd processes SIGSTOPped -> stall after the retry-over time -> the seed's
/// messages -> killed -> restarted -> serving again; show pent DETECT then AVAIL.
fn apache_stall(block: &str, exec: String, extra: &str, tls: Option<(String, String)>) {
    let sb = Sandbox::new();
    let port = free_port();
    let (script, pidfile) = apache_instance(
        &sb,
        port,
        tls.as_ref().map(|(c, k)| (c.as_str(), k.as_str())),
        511,
    );
    // The restart waits 2 s before starting httpd, so that DETECT can be seen.
    let slow = sb.script("slow.rc", &format!("sleep 2\nexec {}", script.display()));
    let ok = |p: u16| {
        if tls.is_some() {
            https_ok(p)
        } else {
            http_ok(p)
        }
    };
    let exec = exec.replace("PORT", &port.to_string());
    let mut pc = watch_stall(&sb, (APACHE, &slow, &pidfile), block, &exec, extra);
    let tag = stall_tag(block);
    assert!(pc.seen.iter().any(|l| l.contains("Started Process")));
    assert_eq!(pc.entry(1)["stall_chk"][1], "AVAIL");
    assert!(ok(port));
    let master = pid_of(&pc.entry(1));
    let t0 = Instant::now();
    let httpd = stop_all(&sb, APACHE, 3);
    let find = pc.wait_for("Find Web Server Stall", STALL_T);
    let took = t0.elapsed();
    assert!(
        find.ends_with(&format!(
            "Find Web Server Stall: pid = {master} : port = {port}"
        )),
        "{find}"
    );
    let killed = pc.wait_for("Killed Process", T);
    assert!(
        killed.ends_with(&format!("Killed Process: pid= {master}")),
        "{killed}"
    );
    assert!(
        pc.seen.iter().any(|l| l.contains("stall evidence (probe)")),
        "the evidence is named"
    );
    let e = pc.entry(1);
    assert_eq!(e["stall_chk"], serde_json::json!([tag, "DETECT"]));
    pc.wait_for("Restarted Process", T);
    // The first probe of the new process (at once, or an interval later if the
    // server was not listening yet).
    pc.wait_for(&format!("stall_chk ({tag}) of pent_id= 1"), STALL_T);
    let e = pc.entry(1);
    assert_eq!(e["stall_chk"], serde_json::json!([tag, "AVAIL"]));
    assert_eq!(e["restart_count"], 1);
    assert_ne!(pid_of(&e), master);
    assert!(ok(port), "HEAD answers again");
    for p in &httpd {
        assert!(dead_within(*p, T), "stopped httpd process {p} was killed");
    }
    // Seed rule: the first failed probe starts the clock, a failed probe at least
    // the retry-over time later is the verdict: 10 s < took < 10 s + 2 intervals.
    println!(
        "{block}: SIGSTOP -> stall verdict in {} ms",
        took.as_millis()
    );
    fault_row(
        3,
        &format!("SIGSTOP of all httpd processes ({block})"),
        "stall after the retry-over time, killed, restarted",
        &format!("verdict after {} ms, restarted, serving", took.as_millis()),
        Some(t0.elapsed()),
    );
    assert!(
        took >= Duration::from_secs(10),
        "not before the retry-over time: {took:?}"
    );
}

#[test]
fn apache_http_stall_is_detected_killed_and_restarted() {
    if root_or_skip("apache_http_stall") && apache_or_skip("apache_http_stall") {
        apache_stall("_bi_webserv", "10:0:2:10:PORT".into(), "", None);
    }
}

#[test]
fn apache_https_stall_is_detected_killed_and_restarted() {
    if !root_or_skip("apache_https_stall") || !apache_or_skip("apache_https_stall") {
        return;
    }
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
    let (pem, key) = (cert.cert.pem(), cert.key_pair.serialize_pem());
    let ca = tempfile::NamedTempFile::new().expect("tmp");
    std::fs::write(ca.path(), &pem).expect("write ca");
    // The seed's sample shape: duration:port:host:timeout:path, verified against the
    // server's own certificate.
    let extra = format!("    tls_verify = {}\n", ca.path().display());
    apache_stall(
        "_bi_webservs",
        "10:-:5:10:PORT:localhost:3:/".into(),
        &extra,
        Some((pem, key)),
    );
}

/// `_bi_socket` against a plain TCP server: stopped, its queue filled by clients,
/// connects time out -> "Find Socket Service Stall".
#[test]
fn socket_stall_of_a_plain_tcp_server() {
    if !root_or_skip("socket_stall") {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let (script, pidfile) = sb.demo_script_with("tcp", port, "--backlog 1");
    let mut pc = watch_stall(
        &sb,
        (DEMO, &script, &pidfile),
        "_bi_socket",
        &format!("10:0:2:10:{port}"),
        "    probe_timeout = 2s\n",
    );
    let pid = pid_of(&pc.entry(1));
    kill(pid, libc::SIGSTOP);
    let _held = load(port, 4);
    let find = pc.wait_for("Find Socket Service Stall", STALL_T);
    assert!(
        find.ends_with(&format!(
            "Find Socket Service Stall: pid = {pid} : port = {port}"
        )),
        "{find}"
    );
    pc.wait_for(&format!("Killed Process: pid= {pid}"), T);
    pc.wait_for("Restarted Process", T);
    pc.wait_for("stall_chk (skt) of pent_id= 1", STALL_T);
    assert_eq!(
        pc.entry(1)["stall_chk"],
        serde_json::json!(["skt", "AVAIL"])
    );
}

/// EXEC error 1: after one detection, stall watching stops; death watching goes on.
#[test]
fn exec_error_1_stops_stall_watching_after_one_detection() {
    if !root_or_skip("exec_error_1") {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let (script, pidfile) = sb.demo_script("web", port, 0);
    let mut pc = watch_stall(
        &sb,
        (DEMO, &script, &pidfile),
        "_bi_webserv",
        &format!("10:1:2:10:{port}"),
        "    probe_timeout = 2s\n",
    );
    let first = pid_of(&pc.entry(1));
    kill(first, libc::SIGSTOP);
    pc.wait_for("Find Web Server Stall", STALL_T);
    pc.seen_or_wait("stall watching of pent_id= 1 stops (EXEC error 1)", T);
    pc.wait_for("Restarted Process", T);
    let second = pid_of(&pc.entry(1));
    // Stopped again, for longer than an interval: no probe runs, nothing is judged.
    kill(second, libc::SIGSTOP);
    let quiet_until = Instant::now() + Duration::from_secs(12);
    while Instant::now() < quiet_until {
        pc.drain();
        std::thread::sleep(Duration::from_millis(200));
    }
    pc.drain();
    let after: Vec<&String> = pc
        .seen
        .iter()
        .filter(|l| l.contains(&format!("pid= {second} port=")))
        .collect();
    assert!(
        after.is_empty(),
        "no stall probe of the new process: {after:?}"
    );
    assert_eq!(
        pc.entry(1)["stall_chk"],
        serde_json::json!(["web", "DETECT"])
    );
    // Death watching continues.
    kill(second, libc::SIGKILL);
    pc.wait_for("Restarted Process", T);
    assert_eq!(pc.entry(1)["restart_count"], 2);
}

/// ACTION error 1 and a process pcheck may not kill (pcheck runs as nobody, the server
/// as root): "Can not killed Process", stall watching stops, the retry-over action
/// (exit) ends pcheck with status 3.
#[test]
fn action_error_1_runs_retry_over_when_the_kill_fails() {
    if !root_or_skip("action_error_1") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    let port = free_port();
    let (script, pidfile) = sb.demo_script("web", port, 0);
    let out = std::process::Command::new(&script)
        .output()
        .expect("start the server as root");
    assert!(out.status.success());
    let run = sb.run_dir();
    std::fs::create_dir_all(&run).expect("run dir");
    std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let pfile = sb.pfile(&format!(
        "retry_over_action = exit\n{DEMO} {} 3 pidfile={}\n{}",
        script.display(),
        pidfile.display(),
        stall_block(
            "_bi_webserv",
            &format!("10:0:2:10:{port}"),
            1,
            "    probe_timeout = 2s\n"
        )
    ));
    let mut pc = Pcheck::start_as(&sb, &pfile, &[], Some(65534));
    let adopted = pc.wait_for("Adopted Process", T);
    let pid = pid_of(&pc.entry(1));
    assert!(adopted.contains(&format!("pid= {pid}")));
    pc.wait_for("stall_chk (web) of pent_id= 1", T);
    kill(pid, libc::SIGSTOP);
    pc.wait_for("Find Web Server Stall", STALL_T);
    let cannot = pc.wait_for("Can not killed Process", T);
    assert!(
        cannot.ends_with(&format!("Can not killed Process: pid= {pid}")),
        "{cannot}"
    );
    pc.wait_for("retry_over_action= exit", T);
    assert_eq!(pc.wait_exit(T), Some(3));
    assert!(alive(pid), "the server was not killed (and could not be)");
    kill(pid, libc::SIGKILL);
}

/// Kernel evidence: all httpd processes stopped while clients keep connecting; the
/// accept queue stays full and nothing is accepted -> judged within seconds (the
/// figure: `cargo xtask bench` (stall)), long before the seed's retry-over time (600 s
/// here).
#[test]
fn kernel_evidence_judges_a_stopped_apache_under_load_long_before_the_seed_rule() {
    if !root_or_skip("kernel_evidence_stopped") || !apache_or_skip("kernel_evidence_stopped") {
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
        "    evidence = kernel\n",
    );
    let master = pid_of(&pc.entry(1));
    let t0 = Instant::now();
    stop_all(&sb, APACHE, 3);
    let loader = std::thread::spawn(move || load(port, 40));
    let find = pc.wait_for("Find Web Server Stall", Duration::from_secs(60));
    let took = t0.elapsed();
    assert!(
        find.ends_with(&format!("pid = {master} : port = {port}")),
        "{find}"
    );
    let why = pc.wait_for("stall evidence", T);
    assert!(why.contains("stall evidence (kernel)"), "{why}");
    println!(
        "kernel evidence: SIGSTOP + load -> stall verdict in {} ms",
        took.as_millis()
    );
    // Sanity bound: 10x the ~2 s figure, and far below the seed rule's 600 s.
    assert!(took <= Duration::from_secs(20), "judged in {took:?}");
    drop(loader.join());
    pc.wait_for("Restarted Process", T);
    assert!(http_ok(port));
}

/// Kernel evidence never judges a busy server that drains its queue: a slow server
/// (20 ms a request, 2 workers, backlog 4) under ab with 32 concurrent clients for
/// 60 s. The queue is seen full, and nothing is judged. The window is 10 s, not the
/// default 2 s: on a 2-core machine also running CPU burners (`cargo xtask soak`) the
/// server was once not scheduled to accept for 2.1 s - stuck by the rule's own test.
#[test]
fn kernel_evidence_never_judges_a_slow_but_draining_server() {
    if !root_or_skip("kernel_evidence_draining") {
        return;
    }
    if !std::path::Path::new("/usr/bin/ab").exists() {
        skip(
            "kernel_evidence_draining",
            "ab (apache2-utils) is not installed",
        );
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let (script, pidfile) =
        sb.demo_script_with("slow", port, "--workers 2 --backlog 4 --delay-ms 20");
    let mut pc = watch_stall(
        &sb,
        (DEMO, &script, &pidfile),
        "_bi_webserv",
        &format!("10:0:2:600:{port}"),
        "    evidence = kernel\n    kernel_window = 10s\n",
    );
    let master = pid_of(&pc.entry(1));
    let ab = std::process::Command::new("/usr/bin/ab")
        .args([
            "-q", "-r", "-t", "60", "-n", "1000000", "-c", "32", "-s", "30",
        ])
        .arg(format!("http://127.0.0.1:{port}/"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("ab");
    let mut max_depth = (0, 0);
    let mut full_samples = 0;
    let until = Instant::now() + Duration::from_secs(58);
    while Instant::now() < until {
        if let Ok(Some((d, l))) = psweb::sense::sockdiag::accept_queue(port) {
            if d > l {
                full_samples += 1;
            }
            max_depth = max_depth.max((d, l));
        }
        pc.drain();
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = ab.wait_with_output().expect("ab output");
    let report = String::from_utf8_lossy(&out.stdout);
    let done: u64 = report
        .lines()
        .find(|l| l.starts_with("Complete requests:"))
        .and_then(|l| l.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    pc.drain();
    println!("draining server: {done} requests served, accept queue full in {full_samples} samples (max {max_depth:?})");
    assert!(
        full_samples > 0,
        "the load filled the accept queue at times"
    );
    assert!(done > 1000, "the server was serving: {report}");
    let judged: Vec<&String> = pc.seen.iter().filter(|l| l.contains("Stall")).collect();
    assert!(
        judged.is_empty(),
        "a draining server was judged: {judged:?}"
    );
    assert_eq!(pid_of(&pc.entry(1)), master, "no restart");
}

/// nginx for real with the HTTP check: all nginx processes stopped -> stall ->
/// killed -> restarted -> HEAD answers again.
#[test]
fn nginx_http_stall_is_detected_killed_and_restarted() {
    if !root_or_skip("nginx_http_stall") || !nginx_or_skip("nginx_http_stall") {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let (script, pidfile) = nginx_instance(&sb, port);
    let mut pc = watch_stall(
        &sb,
        (NGINX, &script, &pidfile),
        "_bi_webserv",
        &format!("10:0:2:10:{port}"),
        "    probe_timeout = 2s\n",
    );
    assert!(http_ok(port));
    let master = pid_of(&pc.entry(1));
    // nginx workers rename themselves ("nginx: worker process"): find them by parent.
    let mut all = vec![master];
    all.extend(children_of(master));
    assert!(all.len() >= 3, "master and 2 workers: {all:?}");
    let t0 = Instant::now();
    signal_all(&all, libc::SIGSTOP);
    let find = pc.wait_for("Find Web Server Stall", STALL_T);
    assert!(
        find.ends_with(&format!(
            "Find Web Server Stall: pid = {master} : port = {port}"
        )),
        "{find}"
    );
    pc.wait_for(&format!("Killed Process: pid= {master}"), T);
    pc.wait_for("Restarted Process", T);
    pc.wait_for("stall_chk (web) of pent_id= 1", STALL_T);
    assert!(http_ok(port), "HEAD answers again");
    for p in &all {
        assert!(dead_within(*p, T), "stopped nginx process {p} was killed");
    }
    fault_row(
        3,
        "SIGSTOP of all nginx processes (_bi_webserv)",
        "stall after the retry-over time, killed, restarted",
        "verdict, restarted, serving",
        Some(t0.elapsed()),
    );
}

fn children_of(parent: i32) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat"))
                .ok()
                .and_then(|s| {
                    let rest = s.rsplit(')').next()?.split_whitespace().nth(1)?.to_string();
                    rest.parse::<i32>().ok()
                })
                == Some(parent)
        })
        .collect()
}
