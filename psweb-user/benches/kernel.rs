//! `cargo xtask bench` (kernel): the figures of the kernel evidence that the
//! end-to-end tests only bound loosely: eBPF load + attach time, and the time from the
//! kernel program's accept-queue overflow event (its bpf_ktime_get_ns) to its arrival
//! in userspace (CLOCK_MONOTONIC, the same clock). Prints a
//! table (goal met or missed) and writes target/bench/kernel.json.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

#[path = "../../tests/common/mod.rs"]
mod common;
use common::write_bench_json;
use psweb::sense::ebpf::{KernelEvent, KernelEvidence};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::Duration;

const LOADS: usize = 10;
const OVERFLOWS: usize = 20;
/// Goals: the old end-to-end test's fixed figures.
const LOAD_GOAL: Duration = Duration::from_millis(200);
const OVERFLOW_GOAL: Duration = Duration::from_millis(100);

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// A listener with an accept queue of 1 that never accepts.
fn tiny_listener() -> (TcpListener, u16) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    // listen() again shrinks the backlog of a listening socket.
    // SAFETY: a valid listening fd.
    assert_eq!(unsafe { libc::listen(l.as_raw_fd(), 1) }, 0, "listen");
    let port = l.local_addr().expect("addr").port();
    (l, port)
}

/// CLOCK_MONOTONIC, the clock of the kernel program's `bpf_ktime_get_ns()`.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Connects until one SYN is dropped (the connect does not complete at once on
/// loopback); returns the open sockets.
fn overflow(port: u16) -> Vec<TcpStream> {
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut socks = Vec::new();
    for _ in 0..16 {
        match TcpStream::connect_timeout(&addr, Duration::from_millis(20)) {
            Ok(s) => socks.push(s),
            Err(_) => return socks,
        }
    }
    panic!("16 connects to port {port} all completed: the accept queue never filled");
}

fn main() {
    let obj = std::env::var_os("PSWEB_BPF_OBJECT").map(PathBuf::from);
    // SAFETY: geteuid cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let Some(obj) = obj.filter(|p| p.is_file() && root) else {
        println!(
            "bench kernel skipped: needs root and PSWEB_BPF_OBJECT (run via cargo xtask bench)"
        );
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");

    let mut loads: Vec<u64> = (0..LOADS)
        .map(|_| {
            let (ke, report) = KernelEvidence::load(&obj).expect("load the eBPF object");
            drop(ke);
            report.load_attach.as_micros() as u64
        })
        .collect();
    loads.sort_unstable();

    let mut lat: Vec<u64> = rt.block_on(async {
        let (mut ke, _) = KernelEvidence::load(&obj).expect("load the eBPF object");
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        ke.spawn_reader(tx).expect("ring buffer reader");
        let mut out = Vec::new();
        for _ in 0..OVERFLOWS {
            let (l, port) = tiny_listener();
            ke.watch_port(port).expect("watch port");
            // The connects block (the dropped one until its timeout): on a thread of
            // their own, so the event is taken the moment it arrives.
            let connects = std::thread::spawn(move || overflow(port));
            let arrived = loop {
                match tokio::time::timeout(Duration::from_secs(5), rx.recv()).await {
                    Ok(Some(KernelEvent::Overflow {
                        port: p, ktime_ns, ..
                    })) if p == port => {
                        break monotonic_ns().saturating_sub(ktime_ns);
                    }
                    Ok(Some(_)) => {}
                    _ => panic!("no overflow event for port {port} within 5 s"),
                }
            };
            let socks = connects.join().expect("connect thread");
            out.push(arrived / 1000);
            let _ = ke.unwatch_port(port);
            drop((socks, l));
        }
        out
    });
    lat.sort_unstable();

    let met = |v: u64, goal: Duration| {
        if v <= goal.as_micros() as u64 {
            "met"
        } else {
            "MISSED"
        }
    };
    println!("\nkernel evidence (this host; timings include whatever else the machine runs)");
    println!(
        "{:<40} {:>9} {:>9} {:>9}  goal",
        "figure", "p50 ms", "p99 ms", "max ms"
    );
    let row = |name: &str, s: &[u64], goal: Duration| {
        println!(
            "{name:<40} {:>9.3} {:>9.3} {:>9.3}  p99 <= {} ms {}",
            pct(s, 0.5) as f64 / 1000.0,
            pct(s, 0.99) as f64 / 1000.0,
            s.last().copied().unwrap_or(0) as f64 / 1000.0,
            goal.as_millis(),
            met(pct(s, 0.99), goal)
        );
    };
    row(
        &format!("eBPF load + attach ({LOADS} loads)"),
        &loads,
        LOAD_GOAL,
    );
    row(
        &format!("queue overflow -> event in userspace ({OVERFLOWS})"),
        &lat,
        OVERFLOW_GOAL,
    );
    let json = serde_json::json!({
        "bench": "kernel",
        "load_attach_us": { "p50": pct(&loads, 0.5), "p99": pct(&loads, 0.99), "max": loads.last(),
            "samples": loads.len(), "goal_us": LOAD_GOAL.as_micros() as u64,
            "met": pct(&loads, 0.99) <= LOAD_GOAL.as_micros() as u64 },
        "overflow_event_us": { "p50": pct(&lat, 0.5), "p99": pct(&lat, 0.99), "max": lat.last(),
            "samples": lat.len(), "goal_us": OVERFLOW_GOAL.as_micros() as u64,
            "met": pct(&lat, 0.99) <= OVERFLOW_GOAL.as_micros() as u64 },
    });
    write_bench_json("kernel", &json);
}
