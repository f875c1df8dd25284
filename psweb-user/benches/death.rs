//! `cargo xtask bench` (death): how fast pcheck learns that a watched process died,
//! for each source of evidence, and what an exit storm of unrelated processes costs
//! the agent. Prints a table and writes target/bench/death.json.
//!
//! Needs root (and the eBPF object in PSWEB_BPF_OBJECT for the ebpf rows).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

#[path = "../../tests/common/mod.rs"]
mod common;
use common::*;
use std::time::{Duration, Instant};

const KILLS: usize = 200;
const STORM_SECS: u64 = 5;
const STORM_RATE: u64 = 5000;

struct Latency {
    mode: String,
    samples_us: Vec<u64>,
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn start(sb: &Sandbox, mode: &str) -> (Pcheck, i32) {
    let port = free_port();
    let (script, pidfile) = sb.demo_script("web", port, 0);
    let pfile = sb.pfile(&format!(
        "{DEMO} {} 3 pidfile={} retry_delay=0\n",
        script.display(),
        pidfile.display()
    ));
    let mut pc = Pcheck::start(
        sb,
        &pfile,
        &["--evidence", mode, "--poll-interval", "100ms"],
    );
    let line = pc.wait_for("Started Process", T);
    (pc, pid_in(&line))
}

fn latency(mode: &str) -> Latency {
    let sb = Sandbox::new();
    let (mut pc, mut pid) = start(&sb, mode);
    let mut samples_us = Vec::with_capacity(KILLS);
    for i in 0..KILLS {
        // Kill at a varying moment after the restart (0-149 ms), so that a polling
        // source is measured at every phase of its poll interval.
        std::thread::sleep(Duration::from_millis((i as u64 * 37) % 150));
        let t0 = Instant::now();
        kill(pid, libc::SIGKILL);
        let down = pc.wait_for("Process Down", T);
        samples_us.push(t0.elapsed().as_micros() as u64);
        assert!(down.contains(&format!("evidence: {mode}")), "{down}");
        pid = pid_in(&pc.wait_for("Restarted Process", T));
        pc.seen.clear();
    }
    samples_us.sort_unstable();
    Latency {
        mode: mode.into(),
        samples_us,
    }
}

/// Makes `rate` short-lived processes per second for `secs`, from two threads: each
/// a fork whose child exits at once (the exits are what the kernel program filters).
/// Returns how many ran.
fn exit_storm(rate: u64, secs: u64) -> u64 {
    let per_thread = rate / 2;
    let handles: Vec<_> = (0..2)
        .map(|_| {
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut n = 0u64;
                while start.elapsed() < Duration::from_secs(secs) {
                    let due = start.elapsed().as_secs_f64() * per_thread as f64;
                    if (n as f64) < due {
                        // SAFETY: the child calls only _exit.
                        let pid = unsafe { libc::fork() };
                        if pid == 0 {
                            // SAFETY: async-signal-safe exit of the forked child.
                            unsafe { libc::_exit(0) };
                        }
                        if pid > 0 {
                            let mut st = 0;
                            // SAFETY: reaping our own child.
                            unsafe { libc::waitpid(pid, &mut st, 0) };
                            n += 1;
                        }
                    } else {
                        std::thread::sleep(Duration::from_micros(100));
                    }
                }
                n
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
}

struct Storm {
    mode: String,
    procs_per_s: f64,
    cpu_pct: f64,
    events_seen: usize,
}

fn storm(mode: &str) -> Storm {
    let sb = Sandbox::new();
    let (mut pc, _pid) = start(&sb, mode);
    let tick = 100.0; // USER_HZ
    let pcheck_pid = pc.child.id();
    let c0 = cpu_ticks(pcheck_pid);
    let t0 = Instant::now();
    let n = exit_storm(STORM_RATE, STORM_SECS);
    let wall = t0.elapsed().as_secs_f64();
    let c1 = cpu_ticks(pcheck_pid);
    let cpu_pct = (c1 - c0) as f64 / tick / wall * 100.0;
    // Nothing about the storm reaches pcheck's decisions.
    let _ = pc.padmin(&["-c", "show pent"]);
    pc.drain();
    let events_seen = pc
        .seen
        .iter()
        .filter(|l| l.contains("Process Down"))
        .count();
    Storm {
        mode: mode.into(),
        procs_per_s: n as f64 / wall,
        cpu_pct,
        events_seen,
    }
}

fn main() {
    if !root_or_skip("bench death") {
        return;
    }
    let mut modes = vec!["pidfd", "procfs"];
    if std::env::var_os("PSWEB_BPF_OBJECT").is_some_and(|p| std::path::Path::new(&p).exists()) {
        modes.insert(0, "ebpf");
    } else {
        println!("ebpf rows skipped: PSWEB_BPF_OBJECT is not set to a built object (run via cargo xtask bench)");
    }
    let lat: Vec<Latency> = modes.iter().map(|m| latency(m)).collect();
    let storms: Vec<Storm> = modes
        .iter()
        .filter(|m| **m != "procfs")
        .map(|m| storm(m))
        .collect();

    println!("\ndeath -> detected (kill -9 of the watched process until pcheck logs Process Down), {KILLS} kills each");
    println!(
        "{:<8} {:>10} {:>10} {:>10} {:>10}",
        "evidence", "p50 ms", "p99 ms", "max ms", "goal"
    );
    for l in &lat {
        let s = &l.samples_us;
        let goal = if l.mode == "ebpf" {
            if pct(s, 0.99) <= 5000 {
                "p99<=5ms met"
            } else {
                "p99<=5ms MISSED"
            }
        } else {
            "-"
        };
        println!(
            "{:<8} {:>10.3} {:>10.3} {:>10.3} {:>10}",
            l.mode,
            pct(s, 0.5) as f64 / 1000.0,
            pct(s, 0.99) as f64 / 1000.0,
            s.last().copied().unwrap_or(0) as f64 / 1000.0,
            goal
        );
    }
    println!("\nexit storm: unrelated short-lived processes while pcheck watches one server");
    println!("(pcheck CPU from /proc/PID/stat utime+stime, 10 ms resolution over {STORM_SECS} s: 0.00 means < 0.2 %)");
    println!(
        "{:<8} {:>12} {:>12} {:>14} {:>16}",
        "evidence", "procs/s", "pcheck CPU%", "false deaths", "goal (<=2%)"
    );
    for s in &storms {
        println!(
            "{:<8} {:>12.0} {:>12.2} {:>14} {:>16}",
            s.mode,
            s.procs_per_s,
            s.cpu_pct,
            s.events_seen,
            if s.cpu_pct <= 2.0 { "met" } else { "MISSED" }
        );
    }
    let json = serde_json::json!({
        "bench": "death",
        "kills_per_mode": KILLS,
        "latency": lat.iter().map(|l| serde_json::json!({
            "evidence": l.mode,
            "p50_us": pct(&l.samples_us, 0.5),
            "p99_us": pct(&l.samples_us, 0.99),
            "max_us": l.samples_us.last(),
            "samples": l.samples_us.len(),
            "samples_us": l.samples_us,
        })).collect::<Vec<_>>(),
        "exit_storm": storms.iter().map(|s| serde_json::json!({
            "evidence": s.mode,
            "target_procs_per_s": STORM_RATE,
            "procs_per_s": s.procs_per_s,
            "pcheck_cpu_pct": s.cpu_pct,
            "false_deaths": s.events_seen,
        })).collect::<Vec<_>>(),
    });
    write_bench_json("death", &json);
}
