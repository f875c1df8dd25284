//! `cargo xtask bench` (events): how soon a webhook receiver on loopback gets each
//! event of a kill -9 / restart cycle after pcheck decided it (the event's `mono_ns`
//! to the POST's arrival, both CLOCK_MONOTONIC). The end-to-end test only bounds this
//! loosely. Prints a table (goal met or missed) and writes target/bench/events.json.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

#[path = "../../tests/common/mod.rs"]
mod common;
use common::*;
use std::time::Duration;

const CYCLES: usize = 20;
const GOAL: Duration = Duration::from_millis(100);

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
    let (hook_port, hook) = webhook_receiver();
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
    write_bench_json("events", &json);
}
