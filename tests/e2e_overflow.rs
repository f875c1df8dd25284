//! Accept-queue evidence per watched port, through the agent: from the kernel
//! program, and from sock_diag polling when eBPF is not used.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

mod common;
use common::*;
use std::net::TcpStream;
use std::time::Duration;

/// A demo server with backlog 1 on a stall-check port, under pcheck.
fn setup(sb: &Sandbox, port: u16, mode: &str) -> (Pcheck, i32) {
    let (script, pidfile) = sb.demo_script_with("web", port, "--backlog 1");
    let pfile = sb.pfile(&format!(
        "{DEMO} {} 3 pidfile={}\n_bi_socket{{\n PS_INIT DLL:/opt/HA/PSWE/lib/lib_bi_socket.so:DIRECT:-:-:0\n PS_EXEC DLL:/opt/HA/PSWE/lib/lib_bi_socket.so:DIRECT:-:60:-:2:600:{port}\n PS_ACTION DLL:/opt/HA/PSWE/lib/lib_bi_socket.so:DIRECT:-:-:1:0\n}}\n",
        script.display(),
        pidfile.display()
    ));
    let mut pc = Pcheck::start(sb, &pfile, &["--evidence", mode]);
    pc.wait_for("Started Process", T);
    let pid = pid_of(&pc.entry(1));
    (pc, pid)
}

/// SIGSTOPs `pid` and waits until every thread of it is stopped: kill() returns
/// before a process running on another CPU has stopped, and it may still accept a
/// connection meanwhile.
fn stop(pid: i32) {
    kill(pid, libc::SIGSTOP);
    let stopped = || {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .map(|d| {
                d.flatten().all(|t| {
                    std::fs::read_to_string(t.path().join("stat"))
                        .ok()
                        .and_then(|text| psweb::procfs::parse_stat(&text))
                        .is_none_or(|st| st.state == 'T')
                })
            })
            .unwrap_or(true)
    };
    let deadline = std::time::Instant::now() + T;
    while !stopped() {
        assert!(
            std::time::Instant::now() < deadline,
            "pid {pid} never stopped"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Stops the server (it accepts nothing) and connects until the queue is full.
fn fill(port: u16, pid: i32) -> Vec<TcpStream> {
    stop(pid);
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    (0..6)
        .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(100)).ok())
        .collect()
}

fn port_view(pc: &Pcheck, port: u16) -> serde_json::Value {
    let out = pc.padmin(&["-c", "show kernel", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    v["kernel"]["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["port"] == port).cloned())
        .unwrap_or_else(|| panic!("port {port} not in {v}"))
}

#[test]
fn overflow_on_a_watched_port_from_the_kernel() {
    if !root_or_skip("overflow_from_the_kernel") || !bpf_object_or_skip("overflow_from_the_kernel")
    {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let (mut pc, pid) = setup(&sb, port, "ebpf");
    let _held = fill(port, pid);
    let line = pc.wait_for(&format!("Accept Queue Overflow: port= {port}"), T);
    assert!(line.contains("evidence: ebpf, syn path"), "{line}");
    let v = port_view(&pc, port);
    assert_eq!(v["source"], "ebpf");
    assert!(v["syn_overflows"].as_u64() >= Some(1), "{v}");
    assert_eq!(v["max_backlog"], 1);
    assert!(v["last_seen"].is_string());
    let text = String::from_utf8_lossy(&pc.padmin(&["-c", "show kernel"]).stdout).into_owned();
    assert!(text.contains("death_evidence       = ebpf"), "{text}");
    // This host's kernel has the BPF ring buffer and BTF.
    assert!(
        text.contains("transport            = ring buffer"),
        "{text}"
    );
    assert!(text.contains("btf                  = present"), "{text}");
    assert!(
        text.contains(&format!("port                 = {port}")),
        "{text}"
    );
    kill(pid, libc::SIGCONT);
}

/// The kernel program reports the moment a completed handshake makes the queue full,
/// not only the SYNs dropped after it: kernel evidence needs no frequent polling to
/// see a queue that filled up and then got no new client.
#[test]
fn the_connection_that_fills_the_queue_is_reported() {
    if !root_or_skip("fills_the_queue") || !bpf_object_or_skip("fills_the_queue") {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let (mut pc, pid) = setup(&sb, port, "ebpf");
    pc.wait_for(&format!("port= {port}: AVAIL"), T);
    stop(pid);
    // Backlog 1: connect one at a time until the queue is full (depth 2 > limit 1,
    // normally at the second connection) and send no further SYN, so none is dropped.
    let addr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut held: Vec<TcpStream> = Vec::new();
    loop {
        held.push(TcpStream::connect_timeout(&addr, Duration::from_secs(2)).expect("queued"));
        // The server side of the handshake may complete a moment after connect() (on
        // a loaded machine, many ms): one more connect then would have its SYN dropped.
        let settle = std::time::Instant::now() + Duration::from_secs(1);
        let full = loop {
            let (depth, limit) = psweb::sense::sockdiag::accept_queue(port)
                .expect("sock_diag")
                .expect("the listener");
            if depth > limit || std::time::Instant::now() >= settle {
                break depth > limit;
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        if full {
            break;
        }
        assert!(held.len() < 10, "the queue never filled");
    }
    let line = pc.wait_for(&format!("Accept Queue Overflow: port= {port}"), T);
    assert!(
        line.contains("depth= 2/1 (evidence: ebpf, syn path)"),
        "{line}"
    );
    drop(held);
    kill(pid, libc::SIGCONT);
}

#[test]
fn queue_full_from_sock_diag_without_ebpf() {
    if !root_or_skip("queue_full_from_sock_diag") {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let (mut pc, pid) = setup(&sb, port, "pidfd");
    pc.seen_or_wait("from sock_diag polling", T);
    let _held = fill(port, pid);
    let line = pc.wait_for(&format!("Accept Queue Full: port= {port}"), T);
    assert!(line.contains("depth= 2/1"), "{line}");
    let v = port_view(&pc, port);
    assert_eq!(v["source"], "sock_diag");
    assert!(v["full_polls"].as_u64() >= Some(1), "{v}");
    assert_eq!(v["syn_overflows"], 0);
    kill(pid, libc::SIGCONT);
}
