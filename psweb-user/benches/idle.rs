//! `cargo xtask bench` (idle): what pcheck costs while nothing happens. 20 demo
//! servers, each with a `_bi_webserv` block (interval 10 s, the seed's minimum), once
//! with probes only and once with `evidence = kernel`; 60 s each once every entry's
//! stall check is AVAIL. Beside each window, an empty thread of this bench that wakes
//! five times a second gives the cost of a wake-up alone on this machine (the floor:
//! on a virtual machine it has been seen anywhere from 0.2 to 0.9 ms, and it moves
//! with the host's load), so that pcheck's own work can be read apart from it.
//! Prints a table (goal met or missed) and writes target/bench/idle.json.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a bench fails by panicking

#[path = "../../tests/common/mod.rs"]
mod common;
use common::*;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const ENTRIES: usize = 20;
const WINDOW: Duration = Duration::from_secs(60);
/// How often the floor thread wakes.
const FLOOR_EVERY: Duration = Duration::from_millis(200);
/// Idle CPU above the wake-up floor, % of one core.
const GOAL_PCT: f64 = 0.1;

/// CPU time of the calling thread in ns (`schedstat`'s first field).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// Context switches of every live thread of `pid` (voluntary + not): its wake-ups.
fn wakes(pid: u32) -> u64 {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    dir.flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("status")).ok())
        .map(|s| {
            s.lines()
                .filter(|l| l.contains("ctxt_switches:"))
                .filter_map(|l| {
                    l.split_whitespace()
                        .nth(1)
                        .and_then(|v| v.parse::<u64>().ok())
                })
                .sum::<u64>()
        })
        .sum()
}

struct Window {
    config: &'static str,
    cpu_ms: u64,
    wakes: u64,
    floor_ns_per_wake: u64,
    events: usize,
}

impl Window {
    fn pct(ms: f64) -> f64 {
        ms / WINDOW.as_millis() as f64 * 100.0
    }
    fn floor_ms(&self) -> f64 {
        (self.wakes * self.floor_ns_per_wake) as f64 / 1e6
    }
    fn above_floor_pct(&self) -> f64 {
        Self::pct((self.cpu_ms as f64 - self.floor_ms()).max(0.0))
    }
}

/// An empty thread that wakes every [`FLOOR_EVERY`] until `stop`; returns its CPU
/// time per wake-up in ns.
fn floor_thread(stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let c0 = thread_cpu_ns();
        let mut n = 0u64;
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(FLOOR_EVERY);
            n += 1;
        }
        thread_cpu_ns().saturating_sub(c0) / n.max(1)
    })
}

fn measure(config: &'static str, kernel: bool) -> Window {
    let sb = Sandbox::new();
    let extra = if kernel {
        "    evidence = kernel\n"
    } else {
        ""
    };
    let mut pfile = String::new();
    let mut ports = std::collections::HashSet::new();
    while ports.len() < ENTRIES {
        ports.insert(free_port());
    }
    for (i, port) in ports.into_iter().enumerate() {
        let (script, pidfile) = sb.demo_script(&format!("web{i}"), port, 1);
        pfile.push_str(&format!(
            "{DEMO} {} 3 pidfile={}\n{}",
            script.display(),
            pidfile.display(),
            stall_block("_bi_webserv", &format!("10:0:2:600:{port}"), 1, extra)
        ));
    }
    let pfile = sb.pfile(&pfile);
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    for id in 1..=ENTRIES {
        pc.seen_or_wait(&format!("stall_chk (web) of pent_id= {id} "), T);
    }
    pc.drain();
    let mark = pc.seen.len();
    let pid = pc.child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let floor = floor_thread(Arc::clone(&stop));
    let (c0, w0) = (cpu_ticks(pid), wakes(pid));
    let t0 = Instant::now();
    while t0.elapsed() < WINDOW {
        pc.drain();
        std::thread::sleep(Duration::from_secs(1));
    }
    let (c1, w1) = (cpu_ticks(pid), wakes(pid));
    // A pcheck that ended would read as 0 ms: a window is measured only on a live one.
    assert!(
        matches!(pc.child.try_wait(), Ok(None)),
        "pcheck ended during the {config} window"
    );
    stop.store(true, Ordering::SeqCst);
    let floor_ns_per_wake = floor.join().unwrap_or(0);
    pc.drain();
    // Anything logged in the window means it was not idle.
    let events = pc.seen[mark..].len();
    Window {
        config,
        cpu_ms: (c1 - c0) * 10,
        wakes: w1.saturating_sub(w0),
        floor_ns_per_wake,
        events,
    }
}

fn main() {
    if !root_or_skip("bench idle") {
        return;
    }
    let windows = [
        measure("probes only", false),
        measure("evidence = kernel", true),
    ];
    println!(
        "\npcheck idle, {ENTRIES} demo servers with a _bi_webserv block (interval 10 s), {} s each; CPU = utime + stime (10 ms ticks); floor = the CPU an empty thread spends per wake-up on this machine, times pcheck's wake-ups",
        WINDOW.as_secs()
    );
    println!(
        "{:<18} {:>8} {:>8} {:>7} {:>14} {:>10} {:>8}  goal",
        "config", "CPU ms", "CPU %", "wakes", "floor us/wake", "floor ms", "lines"
    );
    let mut json = Vec::new();
    for w in &windows {
        let met = w.above_floor_pct() <= GOAL_PCT && w.events == 0;
        println!(
            "{:<18} {:>8} {:>8.3} {:>7} {:>14.1} {:>10.1} {:>8}  above floor {:.3} % <= {GOAL_PCT} % and nothing logged: {}",
            w.config,
            w.cpu_ms,
            Window::pct(w.cpu_ms as f64),
            w.wakes,
            w.floor_ns_per_wake as f64 / 1000.0,
            w.floor_ms(),
            w.events,
            w.above_floor_pct(),
            if met { "met" } else { "MISSED" }
        );
        json.push(serde_json::json!({
            "config": w.config, "entries": ENTRIES, "window_s": WINDOW.as_secs(),
            "cpu_ms": w.cpu_ms, "wakes": w.wakes, "floor_ns_per_wake": w.floor_ns_per_wake,
            "above_floor_pct": w.above_floor_pct(), "lines_logged": w.events,
            "goal_pct": GOAL_PCT, "met": met,
        }));
    }
    let json = serde_json::json!({ "bench": "idle", "windows": json });
    write_bench_json("idle", &json);
}
