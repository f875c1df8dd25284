//! `cargo xtask bench` (events): how soon a webhook receiver on loopback gets each
//! event of a kill -9 / restart cycle after pcheck decided it (the event's `mono_ns`
//! to the POST's arrival, both CLOCK_MONOTONIC). The end-to-end test only bounds this
//! loosely. Prints a table (goal met or missed) and writes target/bench/events.json.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

#[path = "../../tests/common/mod.rs"]
mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc::{channel, Receiver};
use std::time::Duration;

const CYCLES: usize = 20;
const GOAL: Duration = Duration::from_millis(100);

fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into ts.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A webhook receiver: every POST's body, with CLOCK_MONOTONIC at its arrival.
fn receiver() -> (u16, Receiver<(u64, serde_json::Value)>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let mut r = BufReader::new(s);
            let mut len = 0usize;
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; len];
            if r.read_exact(&mut body).is_err() {
                continue;
            }
            let at = mono_ns();
            let _ = r
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            if let Ok(v) = serde_json::from_slice(&body) {
                if tx.send((at, v)).is_err() {
                    return;
                }
            }
        }
    });
    (port, rx)
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    if !root_or_skip("bench events") {
        return;
    }
    let (hook_port, hook) = receiver();
    let sb = Sandbox::new();
    let port = free_port();
    let (script, pidfile) = sb.demo_script("web", port, 1);
    let pfile = sb.pfile(&format!(
        "webhook = http://127.0.0.1:{hook_port}/hook\n{DEMO} {} 3 pidfile={} retry_delay=100ms\n",
        script.display(),
        pidfile.display()
    ));
    let mut pc = Pcheck::start(&sb, &pfile, &["--evidence", "pidfd"]);
    pc.wait_for("Started Process", T);
    let mut lat_us: Vec<u64> = Vec::new();
    for _ in 0..CYCLES {
        let old = pid_of(&pc.entry(1));
        kill(old, libc::SIGKILL);
        pc.wait_for("Restarted Process", T);
        // The cycle's three events: down, attempt, ok.
        let mut got = 0;
        while got < 3 {
            let Ok((at, ev)) = hook.recv_timeout(T) else {
                panic!("the webhook got {got} of the cycle's 3 events");
            };
            let kind = ev["kind"].as_str().unwrap_or("");
            if ["process_down", "restart_attempt", "restart_ok"].contains(&kind) {
                got += 1;
                let at_ns = ev["mono_ns"].as_u64().unwrap_or(at);
                lat_us.push(at.saturating_sub(at_ns) / 1000);
            }
        }
    }
    lat_us.sort_unstable();
    let p99 = pct(&lat_us, 0.99);
    let met = p99 <= GOAL.as_micros() as u64;
    println!("\nevent -> webhook arrival on loopback ({CYCLES} kill -9 cycles, 3 events each; timings include whatever else the machine runs)");
    println!("{:>9} {:>9} {:>9}  goal", "p50 ms", "p99 ms", "max ms");
    println!(
        "{:>9.3} {:>9.3} {:>9.3}  p99 <= {} ms {}",
        pct(&lat_us, 0.5) as f64 / 1000.0,
        p99 as f64 / 1000.0,
        lat_us.last().copied().unwrap_or(0) as f64 / 1000.0,
        GOAL.as_millis(),
        if met { "met" } else { "MISSED" }
    );
    let json = serde_json::json!({
        "bench": "events",
        "webhook_delivery_us": { "p50": pct(&lat_us, 0.5), "p99": p99, "max": lat_us.last(),
            "samples": lat_us.len(), "goal_us": GOAL.as_micros() as u64, "met": met },
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let out = dir.join("events.json");
    match std::fs::write(
        &out,
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    ) {
        Ok(()) => println!("\nwrote {}", out.display()),
        Err(e) => println!("\ncannot write {}: {e}", out.display()),
    }
}
