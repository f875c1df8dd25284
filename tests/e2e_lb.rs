//! Load balancers end to end: the HAProxy agent-check answers and the HTTP health
//! endpoint through every transition of one entry, bad clients, and a real HAProxy
//! that marks the server DRAIN and DOWN from the agent's answers.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking
mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Seed-timed stall checks: interval 10 s, retry-over 10 s.
const STALL_T: Duration = Duration::from_secs(60);

/// One agent-check exchange: connect, send `send` (if any), read the line.
fn agent(port: u16, send: Option<&str>) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect agent");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    if let Some(l) = send {
        s.write_all(l.as_bytes()).expect("agent-send");
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.ends_with('\n'), "one line: {out:?}");
    assert_eq!(out.matches('\n').count(), 1, "one line: {out:?}");
    out.trim_end().to_string()
}

/// `GET path` on the health endpoint: (status, JSON body).
fn health(port: u16, path: &str) -> (u16, serde_json::Value) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect health");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .expect("request");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("");
    (
        status,
        serde_json::from_str(body.trim()).unwrap_or_default(),
    )
}

struct Lb {
    entry: u16,
    shared: u16,
    health: u16,
}

impl Lb {
    /// Every way of asking says `want` (an agent line, or its start for `down #`).
    fn says(&self, want: &str) {
        for (how, got) in [
            ("entry listener", agent(self.entry, None)),
            ("shared, by name", agent(self.shared, Some("web1\n"))),
            ("shared, by pent_id", agent(self.shared, Some("1\n"))),
            ("shared, all", agent(self.shared, None)),
        ] {
            assert!(got.starts_with(want), "{how}: {got:?}, expected {want:?}");
        }
        let (code, body) = health(self.health, "/health/web1");
        let up = want.starts_with("up");
        assert_eq!(code, if up { 200 } else { 503 }, "{body}");
        assert_eq!(
            body["state"],
            want.split_whitespace().next().unwrap_or(""),
            "{body}"
        );
        assert!(body["since"].is_string(), "{body}");
        assert_eq!(health(self.health, "/health").0, code);
        assert_eq!(health(self.health, "/health/1").0, code);
    }
}

fn signal_all(pids: &[i32], sig: i32) {
    for p in pids {
        // SAFETY: plain kill.
        unsafe { libc::kill(*p, sig) };
    }
}

/// up -> drain on suspicion -> down on the stall verdict -> up after the restart ->
/// drain/ready by padmin -> drain while monitoring is off -> down on death -> up ->
/// down after retry-over; the health endpoint the same; events and metrics follow.
#[test]
fn agent_and_health_through_every_transition() {
    if !root_or_skip("agent_and_health_through_every_transition") {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let lb = Lb {
        entry: free_port(),
        shared: free_port(),
        health: free_port(),
    };
    let metrics = free_port();
    let (demo, pidfile) = sb.demo_script("demo", port, 2);
    // The restart waits 2 s, so the down state can be asked during it; a `fail` file
    // makes it fail (retry-over).
    let fail = sb.file("fail");
    let slow = sb.script(
        "slow.rc",
        &format!(
            "[ -e {} ] && exit 1\nsleep 2\nexec {}",
            fail.display(),
            demo.display()
        ),
    );
    let pfile = sb.pfile(&format!(
        "lb_agent_listen = 127.0.0.1:{shared}\nlb_health_listen = 127.0.0.1:{health}\nmetrics_listen = 127.0.0.1:{metrics}\n\
         {DEMO} {slow} 1 pidfile={pid} lb_agent_listen=127.0.0.1:{entry} lb_name=web1\n{block}",
        shared = lb.shared,
        health = lb.health,
        entry = lb.entry,
        slow = slow.display(),
        pid = pidfile.display(),
        block = stall_block("_bi_webserv", &format!("10:0:2:10:{port}"), 1, ""),
    ));
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    pc.wait_for("Started Process", T);
    pc.wait_for(
        "load balancer state of pent_id= 1: down -> up (ready)",
        STALL_T,
    );
    lb.says("up ready");
    assert_eq!(health(lb.health, "/health/nope").0, 404);
    assert_eq!(pc.entry(1)["lb_state"], "up");

    // Operator drain, then ready.
    assert!(pc.padmin(&["-c", "drain", "-n", "1"]).status.success());
    lb.says("drain #drained by operator");
    let show = pc.padmin(&["-c", "show lb"]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("lb_state             = drain"), "{text}");
    assert!(
        text.contains("reason               = drained by operator"),
        "{text}"
    );
    assert!(pc.padmin(&["-c", "ready", "-n", "1"]).status.success());
    lb.says("up ready");
    // Monitoring off drains too.
    assert!(pc.padmin(&["-c", "stop", "-n", "1"]).status.success());
    lb.says("drain #monitoring off");
    assert!(pc.padmin(&["-c", "start", "-n", "1"]).status.success());
    lb.says("up ready");

    // A stall: drain at the first failed probe, down at the verdict, through the
    // restart, up once the new process answers.
    let demo_pids = demo_pids(&sb);
    signal_all(&demo_pids, libc::SIGSTOP);
    pc.wait_for(
        "load balancer state of pent_id= 1: up -> drain (stall suspected)",
        STALL_T,
    );
    lb.says("drain #stall suspected");
    pc.wait_for("Find Web Server Stall", STALL_T);
    lb.says("down #");
    pc.wait_for("Restarted Process", T);
    pc.wait_for("-> up (ready)", STALL_T);
    lb.says("up ready");

    // A death: down at once, through the restart, up again.
    let pid = pid_of(&pc.entry(1));
    kill(pid, libc::SIGKILL);
    pc.wait_for("load balancer state of pent_id= 1: up -> down", T);
    lb.says("down #restarting");
    pc.wait_for("-> up (ready)", STALL_T);
    lb.says("up ready");

    // Retry over: down for good.
    std::fs::write(&fail, "").expect("fail file");
    let pid = pid_of(&pc.entry(1));
    kill(pid, libc::SIGKILL);
    pc.wait_for("Retry Over", T);
    lb.says("down #retry over");

    // Every change was an lb_state event with old, new and reason, and the metric
    // says the current state.
    let ev = pc.padmin(&["-c", "events"]);
    let changes: Vec<serde_json::Value> = String::from_utf8_lossy(&ev.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["kind"] == "lb_state")
        .collect();
    let seq: Vec<String> = changes
        .iter()
        .map(|e| {
            format!(
                "{}>{}",
                e["lb"]["old"].as_str().unwrap_or("?"),
                e["lb"]["new"].as_str().unwrap_or("?")
            )
        })
        .collect();
    assert!(seq.len() >= 10, "{seq:?}");
    assert_eq!(
        changes.last().expect("events")["lb"]["reason"],
        "retry over"
    );
    assert!(changes.iter().all(|e| e["pent_id"] == 1));
    let mut m = TcpStream::connect(("127.0.0.1", metrics)).expect("metrics");
    m.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").expect("get");
    let mut body = String::new();
    let _ = m.read_to_string(&mut body);
    assert!(
        body.lines().any(|l| l.starts_with("psweb_lb_state{")
            && l.contains("state=\"down\"")
            && l.ends_with(" 1")),
        "{body}"
    );
}

/// A clean stop leaves a drained, still running server `up ready`.
#[test]
fn clean_stop_leaves_running_servers_up() {
    if !root_or_skip("clean_stop_leaves_running_servers_up") {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let agent_port = free_port();
    let (demo, pidfile) = sb.demo_script("demo", port, 1);
    let pfile = sb.pfile(&format!(
        "{DEMO} {} 3 pidfile={} lb_agent_listen=[::1]:{agent_port}\n",
        demo.display(),
        pidfile.display()
    ));
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    pc.wait_for("-> up (ready)", T);
    assert!(pc.padmin(&["-c", "drain", "-n", "1"]).status.success());
    let ask = || {
        let mut s = TcpStream::connect(("::1", agent_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).ok()?;
        Some(out)
    };
    assert_eq!(ask().as_deref(), Some("drain #drained by operator\n"));
    // SAFETY: plain kill of the pcheck we started.
    unsafe { libc::kill(pc.child.id() as i32, libc::SIGTERM) };
    pc.wait_for("pcheck shutdown: SIGTERM", T);
    let deadline = Instant::now() + T;
    let mut last = None;
    while Instant::now() < deadline {
        last = ask();
        if last.as_deref() != Some("drain #drained by operator\n") {
            break;
        }
    }
    assert_eq!(
        last.as_deref(),
        Some("up ready\n"),
        "the last word before pcheck ends"
    );
    assert_eq!(pc.wait_exit(T), Some(0));
}

/// Clients that send garbage, a huge line, or nothing at all get at most a 1 s wait
/// and a close; 1,000 of them at once delay neither monitoring nor a real question;
/// a peer outside lb_allow is closed at once.
#[test]
fn bad_clients_are_bounded() {
    if !root_or_skip("bad_clients_are_bounded") {
        return;
    }
    raise_fd_limit();
    let sb = Sandbox::new();
    let port = free_port();
    let (shared, health_port, closed) = (free_port(), free_port(), free_port());
    let (demo, pidfile) = sb.demo_script("demo", port, 1);
    let pfile = sb.pfile(&format!(
        "lb_agent_listen = 127.0.0.1:{shared}\nlb_health_listen = 127.0.0.1:{health_port}\n\
         {DEMO} {} 3 pidfile={}\n",
        demo.display(),
        pidfile.display()
    ));
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    pc.wait_for("-> up (ready)", T);

    // A huge line, then garbage: closed, without an answer naming anything.
    let mut s = TcpStream::connect(("127.0.0.1", health_port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("t");
    let _ = s.write_all(&vec![b'A'; 64 * 1024]);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let out = String::from_utf8_lossy(&out);
    assert!(out.is_empty() || out.starts_with("HTTP/1.1 431"), "{out}");
    assert_eq!(
        agent(shared, Some("\x00\x01garbage\n")),
        "down #unknown entry"
    );

    // 1,000 silent clients, half on each listener.
    let t0 = Instant::now();
    let mut held: Vec<TcpStream> = (0..1000)
        .filter_map(|i| {
            TcpStream::connect(("127.0.0.1", if i % 2 == 0 { shared } else { health_port })).ok()
        })
        .collect();
    println!(
        "{} silent connections open after {:?}",
        held.len(),
        t0.elapsed()
    );
    assert!(held.len() >= 900, "only {} connected", held.len());
    // Monitoring goes on meanwhile: a death is seen and the entry restarted.
    let pid = pid_of(&pc.entry(1));
    let t1 = Instant::now();
    kill(pid, libc::SIGKILL);
    pc.wait_for("Process Down", T);
    println!(
        "death seen {:?} after the kill, with 1,000 clients held",
        t1.elapsed()
    );
    pc.wait_for("-> up (ready)", T);
    // Every silent client is closed within its bound (1 s each; the listener holds
    // 256 at once, so the last are served a few seconds later).
    let t2 = Instant::now();
    for s in &mut held {
        s.set_read_timeout(Some(Duration::from_secs(60)))
            .expect("t");
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
    }
    let all_closed = t2.elapsed();
    println!("1,000 silent clients all closed {all_closed:?} later");
    assert!(all_closed < Duration::from_secs(60), "{all_closed:?}");
    drop(held);
    assert_eq!(agent(shared, None), "up ready");

    // lb_allow: a peer outside it is closed at once, with no answer.
    drop(pc);
    let pfile = sb.pfile(&format!(
        "lb_allow = 10.0.0.0/8\n{DEMO} {} 3 pidfile={} lb_agent_listen=127.0.0.1:{closed}\n",
        demo.display(),
        pidfile.display()
    ));
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    pc.wait_for("HAProxy agent-check on", T);
    let mut s = TcpStream::connect(("127.0.0.1", closed)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .expect("t");
    let mut out = Vec::new();
    let t3 = Instant::now();
    let _ = s.read_to_end(&mut out);
    assert!(out.is_empty(), "{:?}", String::from_utf8_lossy(&out));
    assert!(t3.elapsed() < Duration::from_secs(10));
}

fn raise_fd_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on this process.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max.max(r.rlim_cur);
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
}

/// HAProxy's view of one server, from `show stat` on its stats socket: the status
/// column (UP, DRAIN, DOWN...), and the `show servers state` line for the record.
fn haproxy_status(sock: &std::path::Path) -> (String, String) {
    let ask = |cmd: &str| {
        let Ok(mut s) = std::os::unix::net::UnixStream::connect(sock) else {
            return String::new();
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.write_all(format!("{cmd}\n").as_bytes());
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let stat = ask("show stat");
    let status = stat
        .lines()
        .find(|l| l.starts_with("be,s1,"))
        .and_then(|l| l.split(',').nth(17))
        .unwrap_or("")
        .to_string();
    let state = ask("show servers state be");
    let line = state
        .lines()
        .find(|l| l.contains(" s1 "))
        .unwrap_or("")
        .to_string();
    (status, line)
}

/// Polls HAProxy until the server's status starts with `want`; returns how long it took.
fn haproxy_until(sock: &std::path::Path, want: &str, timeout: Duration) -> Duration {
    let t0 = Instant::now();
    let mut last = (String::new(), String::new());
    while t0.elapsed() < timeout {
        last = haproxy_status(sock);
        if last.0.starts_with(want) {
            println!("haproxy: {want} after {:?} ({})", t0.elapsed(), last.1);
            return t0.elapsed();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("haproxy did not show {want} within {timeout:?}: {last:?}");
}

/// A real HAProxy (agent-check, agent-inter 200ms) marks the server DRAIN when it is
/// drained, UP when it is ready again, and DOWN when its process died for good.
#[test]
fn real_haproxy_follows_the_agent() {
    if !root_or_skip("real_haproxy_follows_the_agent")
        || !haproxy_or_skip("real_haproxy_follows_the_agent")
    {
        return;
    }
    let sb = Sandbox::new();
    let (port, agent_port, fe) = (free_port(), free_port(), free_port());
    let (demo, pidfile) = sb.demo_script("demo", port, 1);
    let fail = sb.file("fail");
    let script = sb.script(
        "fail.rc",
        &format!(
            "[ -e {} ] && exit 1\nexec {}",
            fail.display(),
            demo.display()
        ),
    );
    let pfile = sb.pfile(&format!(
        "{DEMO} {} 1 pidfile={} lb_agent_listen=127.0.0.1:{agent_port}\n",
        script.display(),
        pidfile.display()
    ));
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    pc.wait_for("-> up (ready)", T);

    let sock = sb.file("haproxy.sock");
    let cfg = sb.file("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n    stats socket {sock} mode 600 level admin\n\
             defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n\
             frontend fe\n    bind 127.0.0.1:{fe}\n    default_backend be\n\
             backend be\n    server s1 127.0.0.1:{port} check inter 2s fall 3 agent-check agent-addr 127.0.0.1 agent-port {agent_port} agent-inter 200ms\n",
            sock = sock.display()
        ),
    )
    .expect("haproxy.cfg");
    let mut haproxy = std::process::Command::new(HAPROXY)
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start haproxy");
    let bound = Duration::from_secs(30);
    haproxy_until(&sock, "UP", bound);

    assert!(pc.padmin(&["-c", "drain", "-n", "1"]).status.success());
    let drain = haproxy_until(&sock, "DRAIN", bound);
    assert!(pc.padmin(&["-c", "ready", "-n", "1"]).status.success());
    haproxy_until(&sock, "UP", bound);

    std::fs::write(&fail, "").expect("fail file");
    kill(pid_of(&pc.entry(1)), libc::SIGKILL);
    let down = haproxy_until(&sock, "DOWN", bound);
    pc.seen_or_wait("Retry Over", T);
    println!("haproxy marked the server DRAIN {drain:?} after padmin, DOWN {down:?} after kill -9 (machine shared and loaded)");
    let _ = haproxy.kill();
    let _ = haproxy.wait();
}

/// One command on HAProxy's stats socket.
fn haproxy_cmd(sock: &std::path::Path, cmd: &str) -> String {
    let mut s = std::os::unix::net::UnixStream::connect(sock).expect("stats socket");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    s.write_all(format!("{cmd}\n").as_bytes()).expect("send");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// The runtime-API push: a local HAProxy without agent-check is told drain, ready
/// and down at once; an operator's MAINT survives psweb's drain and ready.
#[test]
fn real_haproxy_runtime_push() {
    if !root_or_skip("real_haproxy_runtime_push") || !haproxy_or_skip("real_haproxy_runtime_push") {
        return;
    }
    let sb = Sandbox::new();
    let (port, fe) = (free_port(), free_port());
    let sock = sb.file("haproxy.sock");
    let cfg = sb.file("haproxy.cfg");
    std::fs::write(
        &cfg,
        format!(
            "global\n    stats socket {sock} mode 600 level admin\n\
             defaults\n    mode http\n    timeout connect 1s\n    timeout client 5s\n    timeout server 5s\n\
             frontend fe\n    bind 127.0.0.1:{fe}\n    default_backend be\n\
             backend be\n    server s1 127.0.0.1:{port} check inter 2s fall 3\n",
            sock = sock.display()
        ),
    )
    .expect("haproxy.cfg");
    let mut haproxy = std::process::Command::new(HAPROXY)
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start haproxy");
    let (demo, pidfile) = sb.demo_script("demo", port, 1);
    let fail = sb.file("fail");
    let script = sb.script(
        "fail.rc",
        &format!(
            "[ -e {} ] && exit 1\nexec {}",
            fail.display(),
            demo.display()
        ),
    );
    let pfile = sb.pfile(&format!(
        "lb_haproxy_socket = {}\n{DEMO} {} 1 pidfile={} lb_haproxy_server=be/s1\n",
        sock.display(),
        script.display(),
        pidfile.display()
    ));
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    pc.wait_for("-> up (ready)", T);
    let bound = Duration::from_secs(30);
    haproxy_until(&sock, "UP", bound);

    assert!(pc.padmin(&["-c", "drain", "-n", "1"]).status.success());
    pc.wait_for("set server be/s1 state drain", T);
    haproxy_until(&sock, "DRAIN", bound);
    assert!(pc.padmin(&["-c", "ready", "-n", "1"]).status.success());
    pc.wait_for("set server be/s1 state ready", T);
    haproxy_until(&sock, "UP", bound);

    // An operator's maintenance: psweb's drain and ready leave it alone.
    assert_eq!(
        haproxy_cmd(&sock, "set server be/s1 state maint").trim(),
        ""
    );
    haproxy_until(&sock, "MAINT", bound);
    assert!(pc.padmin(&["-c", "drain", "-n", "1"]).status.success());
    pc.wait_for("be/s1 left as it is (drain)", T);
    assert!(pc.padmin(&["-c", "ready", "-n", "1"]).status.success());
    pc.wait_for("be/s1 left as it is (up)", T);
    assert!(haproxy_status(&sock).0.starts_with("MAINT"));
    assert_eq!(
        haproxy_cmd(&sock, "set server be/s1 state ready").trim(),
        ""
    );
    haproxy_until(&sock, "UP", bound);

    // Death for good: down at once (HAProxy's own check would take 3 x 2 s).
    std::fs::write(&fail, "").expect("fail file");
    let t0 = Instant::now();
    kill(pid_of(&pc.entry(1)), libc::SIGKILL);
    let down = haproxy_until(&sock, "DOWN", bound);
    println!(
        "runtime push: HAProxy shows DOWN {:?} after kill -9 (polled every 20 ms; machine shared and loaded)",
        t0.elapsed().max(down)
    );
    pc.wait_for("set server be/s1 health down", T);
    let _ = haproxy.kill();
    let _ = haproxy.wait();
}

/// Kernel evidence drains before it kills: every Apache process stopped while clients
/// wait. Half the window with no progress (and stopped threads) makes the agent answer
/// `drain #stall suspected`, and only the verdict at the whole window makes it `down`.
#[test]
fn kernel_evidence_drains_before_the_verdict() {
    let name = "kernel_evidence_drains_before_the_verdict";
    if !root_or_skip(name) || !apache_or_skip(name) {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let entry = free_port();
    let (script, pidfile) = apache_instance(&sb, port, None, 16);
    let pfile = sb.pfile(&format!(
        "{APACHE} {} 3 pidfile={} lb_agent_listen=127.0.0.1:{entry}\n{}",
        script.display(),
        pidfile.display(),
        stall_block(
            "_bi_webserv",
            &format!("10:0:2:600:{port}"),
            1,
            "    evidence = kernel\n    kernel_window = 6s\n",
        ),
    ));
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    pc.wait_for("stall_chk (web) of pent_id= 1", T);
    pc.seen_or_wait("pent_id= 1: down -> up (ready)", T);
    assert!(agent(entry, None).starts_with("up"));
    stop_all(&sb, APACHE, 3);
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let clients: Vec<TcpStream> = (0..40)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(50)).ok())
        .collect();
    assert!(!clients.is_empty(), "no client connected");
    // The agent's answers in order, each once, until the verdict. The verdict is read
    // from the log: the `down` answer lasts only until the restarted server answers,
    // which can be shorter than one poll.
    let verdict = "pent_id= 1: drain -> down (stalled)";
    let mut seen: Vec<String> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let a = agent(entry, None);
        if seen.last() != Some(&a) {
            seen.push(a);
        }
        pc.drain();
        if pc.seen.iter().any(|l| l.contains(verdict)) {
            break;
        }
        assert!(Instant::now() < deadline, "no verdict; answers: {seen:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    let drained = seen
        .iter()
        .position(|a| a == "drain #stall suspected")
        .unwrap_or_else(|| panic!("no drain before the verdict: {seen:?}"));
    assert!(
        seen[..drained].iter().all(|a| a.starts_with("up")),
        "only `up` before the drain: {seen:?}"
    );
    let at = |needle: &str| {
        pc.seen
            .iter()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no log line with {needle:?}"))
    };
    let drain_at = at("pent_id= 1: up -> drain (stall suspected)");
    let find_at = at("Find Web Server Stall");
    let down_at = at(verdict);
    assert!(
        drain_at < find_at && find_at < down_at,
        "drain, then the verdict, then down: lines {drain_at}, {find_at}, {down_at}"
    );
    let find = &pc.seen[find_at];
    assert!(find.contains(&format!("port = {port}")), "{find}");
    println!("{name}: answers {seen:?}; {}", pc.seen[drain_at]);
    drop(clients);
    pc.seen_or_wait("Restarted Process", T);
}
