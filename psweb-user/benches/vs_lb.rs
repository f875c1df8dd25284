//! `cargo xtask bench --vs lb`: what a load balancer's clients see when a backend
//! fails, with HAProxy's own health check alone, with psweb's agent-check answers, and
//! with psweb's runtime-API push on top.
//!
//! Two real Apache httpd instances, both under one pcheck, behind one HAProxy with the
//! fixed configuration `pfiles/haproxy/haproxy-bench.cfg` (the same for all three
//! ways). A steady client sends 20 requests/s through HAProxy. For each fault on
//! backend 1 (kill -9 of the master; SIGSTOP of every httpd process; an
//! infinite-loop mod_lua handler hit directly on backend 1 by one request per worker,
//! so every worker spins in state R) it counts the failed and the slow (> 1 s)
//! requests from the fault on, when the last bad one was sent and ended, and when
//! pcheck first told the balancer `drain`. Prints a table; writes target/bench/vs_lb.json.
//!
//! Needs root, Debian's apache2 and haproxy (installed by `cargo xtask bench`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking
#[path = "../../tests/common/mod.rs"]
mod common;
use common::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The client: one GET every 50 ms (20/s), each in its own thread with a 30 s budget.
const PERIOD: Duration = Duration::from_millis(50);
const BUDGET: Duration = Duration::from_secs(30);
const SLOW: Duration = Duration::from_secs(1);
/// Client traffic before the fault, and after it.
const BEFORE: Duration = Duration::from_secs(3);
const AFTER: Duration = Duration::from_secs(25);

#[derive(Clone, Copy)]
enum Fault {
    Kill9,
    StopAll,
    LoopAll,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill9 => "kill -9 master",
            Fault::StopAll => "SIGSTOP all httpd",
            Fault::LoopAll => "loop handler on all workers",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    Httpchk,
    Agent,
    Push,
}

impl Way {
    fn name(self) -> &'static str {
        match self {
            Way::Httpchk => "httpchk only (inter 2s fall 3)",
            Way::Agent => "+ agent-check (agent-inter 200ms)",
            Way::Push => "+ runtime-API push",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Way::Httpchk => "httpchk",
            Way::Agent => "agent",
            Way::Push => "push",
        }
    }
}

/// One request: (sent after the fault by, latency, ok).
type Sample = (f64, Duration, bool);

fn get(port: u16) -> bool {
    let Ok(mut s) =
        TcpStream::connect_timeout(&format!("127.0.0.1:{port}").parse().expect("addr"), BUDGET)
    else {
        return false;
    };
    let _ = s.set_read_timeout(Some(BUDGET));
    if s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.starts_with("HTTP/1.1 200")
}

/// Workers per Apache instance (`apache_instance`: 2 processes of 8 threads).
const WORKERS: usize = 16;

/// Sends one request for the looping handler straight to a backend and leaves it
/// waiting (the worker that takes it spins until its process is killed).
fn hit_loop(port: u16) {
    std::thread::spawn(move || {
        if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.set_read_timeout(Some(BUDGET));
            let _ = s.write_all(b"GET /loop HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n");
            let mut out = Vec::new();
            let _ = s.read_to_end(&mut out);
        }
    });
}

/// Adds a mod_lua handler for `/loop` that never returns (CPU-bound) to an
/// `apache_instance` configuration.
fn add_loop_handler(sb: &Sandbox) {
    std::fs::write(
        sb.file("loop.lua"),
        "function handle(r)\n  local n = 0\n  while true do n = n + 1 end\nend\n",
    )
    .expect("loop.lua");
    let mut conf = std::fs::read_to_string(sb.file("httpd.conf")).expect("httpd.conf");
    conf.push_str(&format!(
        "LoadModule lua_module /usr/lib/apache2/modules/mod_lua.so\nLuaMapHandler ^/loop$ {} handle\n",
        sb.file("loop.lua").display()
    ));
    std::fs::write(sb.file("httpd.conf"), conf).expect("httpd.conf");
}

struct Cell {
    fault: Fault,
    way: Way,
    total: usize,
    failed: usize,
    slow: usize,
    last_slow_s: Option<f64>,
    /// When the last failed or slow request was sent, after the fault.
    last_bad_sent_s: Option<f64>,
    /// When pcheck first said `drain` (or `down`) for entry 1, after the fault.
    drain_s: Option<f64>,
    /// When pcheck first acted on the fault (a death, a probe failure, a verdict, or
    /// what it told the balancer), after the fault.
    psweb_first_s: Option<f64>,
    psweb_first: String,
}

/// CLOCK_MONOTONIC in nanoseconds (the clock of the events' `mono_ns`).
fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct we pass.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// The first event of entry 1 at or after `since` that shows pcheck noticed.
fn first_reaction(pc: &Pcheck, since: u64) -> Option<(f64, String)> {
    let out = pc.padmin(&["-c", "events"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["pent_id"] == 1 && e["mono_ns"].as_u64().is_some_and(|t| t >= since))
        .find(|e| {
            matches!(
                e["kind"].as_str(),
                Some("process_down" | "probe_failed" | "stall_detected" | "lb_state")
            )
        })
        .map(|e| {
            let t = e["mono_ns"].as_u64().unwrap_or(since) - since;
            let kind = e["kind"].as_str().unwrap_or("").to_string();
            let what = match e["lb"]["new"].as_str() {
                Some(new) => format!("{kind} {new}"),
                None => kind,
            };
            (t as f64 / 1e9, what)
        })
}

/// When pcheck's load-balancer state of entry 1 first left `up` at or after `since`
/// (`lb_state` events; pcheck keeps the state even when nothing listens for it).
fn first_not_up(pc: &Pcheck, since: u64) -> Option<(f64, String)> {
    let out = pc.padmin(&["-c", "events"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|e| e["pent_id"] == 1 && e["mono_ns"].as_u64().is_some_and(|t| t >= since))
        .find(|e| e["kind"] == "lb_state" && e["lb"]["new"].as_str().is_some_and(|n| n != "up"))
        .map(|e| {
            let t = e["mono_ns"].as_u64().unwrap_or(since) - since;
            (
                t as f64 / 1e9,
                e["lb"]["new"].as_str().unwrap_or("").to_string(),
            )
        })
}

fn run(fault: Fault, way: Way) -> Cell {
    let sb1 = Sandbox::new();
    let sb2 = Sandbox::new();
    let (b1, b2, a1, a2, fe) = (
        free_port(),
        free_port(),
        free_port(),
        free_port(),
        free_port(),
    );
    let (s1, p1) = apache_instance(&sb1, b1, None, 16);
    let (s2, p2) = apache_instance(&sb2, b2, None, 16);
    add_loop_handler(&sb1);
    let sock = sb1.file("haproxy.sock");
    let stall = |port: u16| {
        stall_block(
            "_bi_webserv",
            &format!("10:0:2:10:{port}"),
            0,
            "    evidence = kernel\n",
        )
    };
    let lb = |agent: u16, server: &str| match way {
        Way::Httpchk => String::new(),
        Way::Agent => format!(" lb_agent_listen=127.0.0.1:{agent}"),
        Way::Push => format!(" lb_agent_listen=127.0.0.1:{agent} lb_haproxy_server=be/{server}"),
    };
    let global = if way == Way::Push {
        format!("lb_haproxy_socket = {}\n", sock.display())
    } else {
        String::new()
    };
    let pfile = sb1.pfile(&format!(
        "{global}{APACHE} {} 3 pidfile={}{}\n{}{APACHE} {} 3 pidfile={}{}\n{}",
        s1.display(),
        p1.display(),
        lb(a1, "s1"),
        stall(b1),
        s2.display(),
        p2.display(),
        lb(a2, "s2"),
        stall(b2),
    ));
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../pfiles/haproxy/haproxy-bench.cfg"),
    )
    .expect("pfiles/haproxy/haproxy-bench.cfg");
    let cfg = sb1.file("haproxy.cfg");
    std::fs::write(
        &cfg,
        template
            .replace("@SOCK@", &sock.display().to_string())
            .replace("@FE@", &fe.to_string())
            .replace("@B1@", &b1.to_string())
            .replace("@B2@", &b2.to_string())
            .replace("@A1@", &a1.to_string())
            .replace("@A2@", &a2.to_string()),
    )
    .expect("haproxy.cfg");
    let mut pc = Pcheck::start(&sb1, &pfile, &[]);
    pc.wait_for("Started Process: pname= /usr/sbin/apache2", T);
    pc.wait_for("stall_chk (web) of pent_id= 2", Duration::from_secs(60));
    let mut haproxy = std::process::Command::new(HAPROXY)
        .arg("-q")
        .arg("-db")
        .arg("-f")
        .arg(&cfg)
        .stdin(std::process::Stdio::null())
        .spawn()
        .expect("start haproxy");
    // Both servers up in HAProxy's eyes (rise 2, inter 2s).
    let t = Instant::now();
    while !get(fe) && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_secs(5));

    let samples: Arc<Mutex<Vec<Sample>>> = Arc::new(Mutex::new(Vec::new()));
    let fault_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let start = Instant::now();
    let mut threads = Vec::new();
    let mut next = start;
    let mut injected = false;
    let mut fault_mono = 0;
    while start.elapsed() < BEFORE + AFTER {
        if !injected && start.elapsed() >= BEFORE {
            injected = true;
            let entry = pc.entry(1);
            fault_mono = mono_ns();
            *fault_at.lock().expect("lock") = Some(Instant::now());
            match fault {
                Fault::Kill9 => kill(pid_of(&entry), libc::SIGKILL),
                Fault::StopAll => {
                    for p in sandbox_pids_of(&sb1, APACHE) {
                        kill(p, libc::SIGSTOP);
                    }
                }
                Fault::LoopAll => {
                    for _ in 0..WORKERS {
                        hit_loop(b1);
                    }
                }
            }
        }
        let (samples, fault_at) = (Arc::clone(&samples), Arc::clone(&fault_at));
        threads.push(std::thread::spawn(move || {
            let sent = Instant::now();
            let ok = get(fe);
            let took = sent.elapsed();
            let f = *fault_at.lock().expect("lock");
            let after = f.map_or(-1.0, |f| {
                if sent >= f {
                    (sent - f).as_secs_f64()
                } else {
                    -(f - sent).as_secs_f64()
                }
            });
            samples.lock().expect("lock").push((after, took, ok));
        }));
        next += PERIOD;
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
    for t in threads {
        let _ = t.join();
    }
    let reaction = first_reaction(&pc, fault_mono);
    let not_up = first_not_up(&pc, fault_mono);
    let _ = haproxy.kill();
    let _ = haproxy.wait();
    drop(pc);
    let s = samples.lock().expect("lock").clone();
    let after: Vec<&Sample> = s.iter().filter(|x| x.0 >= 0.0).collect();
    let slow: Vec<&&Sample> = after.iter().filter(|x| x.2 && x.1 > SLOW).collect();
    Cell {
        fault,
        way,
        total: after.len(),
        failed: after.iter().filter(|x| !x.2).count(),
        slow: slow.len(),
        last_slow_s: after
            .iter()
            .filter(|x| !x.2 || x.1 > SLOW)
            .map(|x| x.0 + x.1.as_secs_f64())
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v)))),
        last_bad_sent_s: after
            .iter()
            .filter(|x| !x.2 || x.1 > SLOW)
            .map(|x| x.0)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v)))),
        drain_s: not_up.as_ref().map(|d| d.0),
        psweb_first_s: reaction.as_ref().map(|r| r.0),
        psweb_first: reaction.map(|r| r.1).unwrap_or_default(),
    }
}

fn first(c: &Cell) -> String {
    match c.psweb_first_s {
        Some(t) => format!("{} at {:.0} ms", c.psweb_first, t * 1e3),
        None => "none".to_string(),
    }
}

fn secs(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:.1} s"))
}

/// Slow or failed requests sent only up to one agent-inter (200 ms) after pcheck said
/// `drain` (or `down`); a request sent later would have gone to a drained server.
fn only_first_inter(c: &Cell) -> bool {
    match (c.last_bad_sent_s, c.drain_s) {
        (None, _) => true,
        (Some(bad), Some(drain)) => bad <= drain + 0.2,
        (Some(_), None) => false,
    }
}

fn main() {
    if !root_or_skip("bench vs_lb")
        || !apache_or_skip("bench vs_lb")
        || !haproxy_or_skip("bench vs_lb")
    {
        return;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut cells = Vec::new();
    for fault in [Fault::Kill9, Fault::StopAll, Fault::LoopAll] {
        for way in [Way::Httpchk, Way::Agent, Way::Push] {
            let c = run(fault, way);
            println!(
                "{:<27} {:<34} requests {:>4}  failed {:>3}  slow {:>3}  last bad sent {} ends {}  not up at {}  pcheck first: {}",
                c.fault.name(),
                c.way.name(),
                c.total,
                c.failed,
                c.slow,
                secs(c.last_bad_sent_s),
                secs(c.last_slow_s),
                secs(c.drain_s),
                first(&c)
            );
            cells.push(c);
        }
    }
    println!("\n| fault | way | requests | failed | slow (> 1 s) | last failed/slow sent | ... ends | pcheck: not up | pcheck's first reaction |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for c in &cells {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            c.fault.name(),
            c.way.name(),
            c.total,
            c.failed,
            c.slow,
            secs(c.last_bad_sent_s),
            secs(c.last_slow_s),
            secs(c.drain_s),
            first(c)
        );
    }
    let goal_kill = cells
        .iter()
        .filter(|c| matches!(c.fault, Fault::Kill9) && c.way != Way::Httpchk)
        .all(|c| c.failed == 0);
    let goal_stall = cells
        .iter()
        .filter(|c| !matches!(c.fault, Fault::Kill9) && c.way != Way::Httpchk)
        .all(|c| c.failed <= 1);
    let goal_slow = cells
        .iter()
        .filter(|c| !matches!(c.fault, Fault::Kill9) && c.way != Way::Httpchk)
        .all(only_first_inter);
    let word = |b: bool| if b { "met" } else { "missed" };
    println!(
        "\ngoal: 0 failed on kill -9 with the agent: {}; <= 1 failed per stall: {}; \
         slow only in the first agent-inter after suspicion: {}",
        word(goal_kill),
        word(goal_stall),
        word(goal_slow)
    );
    println!("load average at the start: {}", load.trim());
    let json = serde_json::json!({
        "loadavg_at_start": load.trim(),
        "haproxy_config": "pfiles/haproxy/haproxy-bench.cfg",
        "client": {"rate_per_s": 20, "slow_s": SLOW.as_secs_f64(), "after_fault_s": AFTER.as_secs()},
        "goal_kill9_zero_failed": goal_kill,
        "goal_stall_at_most_one_failed": goal_stall,
        "goal_slow_only_first_agent_inter": goal_slow,
        "cells": cells.iter().map(|c| serde_json::json!({
            "fault": c.fault.name(), "way": c.way.key(), "requests": c.total,
            "failed": c.failed, "slow": c.slow, "last_bad_s": c.last_slow_s,
            "last_bad_sent_s": c.last_bad_sent_s, "not_up_s": c.drain_s,
            "pcheck_first_s": c.psweb_first_s, "pcheck_first": c.psweb_first,
        })).collect::<Vec<_>>(),
    });
    write_bench_json("vs_lb", &json);
}
