//! `cargo xtask bench` (stall): time from SIGSTOP to the stall verdict, the seed's
//! rule vs kernel evidence; stall verdicts under load (stuck servers judged, busy
//! ones never); and what a probe costs (probes per second of one core, for each
//! kind). Prints the tables and writes target/bench/stall.json.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

#[path = "../../tests/common/mod.rs"]
mod common;
#[path = "../../tests/progress_cases/mod.rs"]
mod progress_cases;
use common::*;
use progress_cases::{run_busy, run_stuck, Busy, Stuck};
use psweb::probe::{Kind, Prober, Target, TlsOptions, TlsVerify};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const RUNS: usize = 3;

fn verdict_time(kernel: bool) -> Vec<u64> {
    let mut out = Vec::new();
    for _ in 0..RUNS {
        let sb = Sandbox::new();
        let port = free_port();
        let (script, pidfile) = sb.demo_script_with("web", port, "--workers 2 --backlog 16");
        // The seed's shortest timing (interval 10, retry-over 10): its defaults (60/600)
        // would take ten minutes a run.
        let extra = if kernel {
            "    evidence = kernel\n    probe_timeout = 2s\n"
        } else {
            "    probe_timeout = 2s\n"
        };
        let mut pc = watch_stall(
            &sb,
            (DEMO, &script, &pidfile),
            "_bi_webserv",
            &format!("10:0:2:10:{port}"),
            extra,
        );
        let pids = demo_pids(&sb);
        let t0 = Instant::now();
        for p in &pids {
            kill(*p, libc::SIGSTOP);
        }
        // Clients keep coming (as behind a load balancer): 40 connection attempts.
        let addr = format!("127.0.0.1:{port}").parse().expect("addr");
        let held: Vec<TcpStream> = (0..40)
            .filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(50)).ok())
            .collect();
        pc.wait_for("Find Web Server Stall", Duration::from_secs(60));
        out.push(t0.elapsed().as_millis() as u64);
        drop(held);
    }
    out.sort_unstable();
    out
}

fn thread_cpu() -> Duration {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, (t.tv_usec as u32) * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Sequential probes on one current-thread runtime for `secs`: probes per second of
/// the prober's own CPU time.
fn probe_rate(kind: Kind, port: u16, secs: u64) -> (u64, f64, f64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let tls = (kind == Kind::Https).then(|| TlsOptions {
        verify: TlsVerify::Off,
        sni: Some("localhost".into()),
    });
    let target = Target {
        host: "127.0.0.1".into(),
        port,
        path: "/".into(),
        timeout: Duration::from_secs(5),
        tls,
    };
    let prober = Prober::new(kind, target).expect("prober");
    rt.block_on(async {
        let c0 = thread_cpu();
        let t0 = Instant::now();
        let mut ok = 0u64;
        while t0.elapsed() < Duration::from_secs(secs) {
            if prober.run().await.is_alive() {
                ok += 1;
            }
        }
        let cpu = (thread_cpu() - c0).as_secs_f64();
        let wall = t0.elapsed().as_secs_f64();
        (ok, ok as f64 / cpu.max(1e-9), ok as f64 / wall)
    })
}

/// Runs of each stuck case, and how long each busy case is loaded.
const LOAD_RUNS: usize = 5;
const BUSY_SECS: u64 = 60;
/// Goals: a verdict within kernel_window (2 s) + 0.3 s; pcheck's CPU while it
/// samples a full queue at most 0.5 % of a core.
const VERDICT_GOAL_MS: u64 = 2300;
const CPU_GOAL_PCT: f64 = 0.5;

/// The host's load average over 1 minute (/proc/loadavg): the bench shares the host.
fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Stall verdicts under load: each stuck case LOAD_RUNS times (verdict ms, sorted;
/// and the longest set-up: from the first stuck request until every worker was in
/// the handler), and every busy case for BUSY_SECS side by side.
#[allow(clippy::type_complexity)]
fn under_load() -> (
    Vec<(Stuck, Vec<u64>, u64)>,
    Vec<(Busy, progress_cases::BusyRun)>,
) {
    let busy: Vec<_> = Busy::ALL
        .iter()
        .map(|c| (*c, std::thread::spawn(move || run_busy(*c, BUSY_SECS))))
        .collect();
    let busy: Vec<_> = busy
        .into_iter()
        .filter_map(|(c, h)| Some((c, h.join().ok()??)))
        .collect();
    let mut stuck = Vec::new();
    for c in Stuck::ALL {
        let mut ms = Vec::new();
        let mut setup = 0;
        for _ in 0..LOAD_RUNS {
            match run_stuck(c, Duration::from_secs(60)) {
                Some(r) => {
                    ms.push(r.took.as_millis() as u64);
                    setup = setup.max(r.setup.as_millis() as u64);
                }
                None => break,
            }
        }
        ms.sort_unstable();
        if !ms.is_empty() {
            stuck.push((c, ms, setup));
        }
    }
    (stuck, busy)
}

fn main() {
    if !root_or_skip("bench stall") {
        return;
    }
    let load_start = load1();
    let seed = verdict_time(false);
    let kernel = verdict_time(true);
    let (stuck, busy) = under_load();
    let load_end = load1();

    // Probe cost against real Apache httpd (HTTP and HTTPS on two instances).
    let mut rates = Vec::new();
    if apache_or_skip("bench stall: probe cost") {
        let sb = Sandbox::new();
        let http_port = free_port();
        let (script, _) = apache_instance(&sb, http_port, None, 511);
        assert!(std::process::Command::new(&script)
            .status()
            .expect("start httpd")
            .success());
        let sb2 = Sandbox::new();
        let https_port = free_port();
        let cert =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("rcgen");
        let (script2, _) = apache_instance(
            &sb2,
            https_port,
            Some((&cert.cert.pem(), &cert.key_pair.serialize_pem())),
            511,
        );
        assert!(std::process::Command::new(&script2)
            .status()
            .expect("start httpd")
            .success());
        for (kind, port, name) in [
            (Kind::Tcp, http_port, "tcp"),
            (Kind::Http, http_port, "http HEAD"),
            (Kind::Https, https_port, "https HEAD"),
        ] {
            let deadline = Instant::now() + Duration::from_secs(5);
            while !http_ok(http_port) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let (n, per_cpu_s, per_s) = probe_rate(kind, port, 3);
            rates.push((name, n, per_cpu_s, per_s));
        }
    }

    let pct = |v: &[u64], p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    println!("\nSIGSTOP of all server processes (+ 40 clients) -> stall verdict, {RUNS} runs each");
    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "mode", "min ms", "median ms", "max ms"
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "seed rule (interval 10, retry 10)",
        seed[0],
        pct(&seed, 0.5),
        seed[seed.len() - 1]
    );
    println!(
        "{:<34} {:>10} {:>10} {:>10}",
        "kernel evidence (window 2 s)",
        kernel[0],
        pct(&kernel, 0.5),
        kernel[kernel.len() - 1]
    );
    println!(
        "goal: kernel evidence <= 3000 ms: {}",
        if kernel[kernel.len() - 1] <= 3000 {
            "met"
        } else {
            "MISSED"
        }
    );
    println!("\nstall verdicts under load (evidence = kernel, kernel_window 2 s; goal: verdict <= {VERDICT_GOAL_MS} ms, busy: 0 verdicts)");
    let cpus = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    println!("host load average (1 min): {load_start:.1} at the start, {load_end:.1} at the end ({cpus} CPUs)");
    println!(
        "{:<58} {:>5} {:>8} {:>8} {:>9} {:>6}",
        "stuck server", "runs", "p50 ms", "max ms", "set-up ms", "goal"
    );
    for (c, ms, setup) in &stuck {
        let max = ms[ms.len() - 1];
        println!(
            "{:<58} {:>5} {:>8} {:>8} {:>9} {:>6}",
            c.name(),
            ms.len(),
            pct(ms, 0.5),
            max,
            setup,
            if max <= VERDICT_GOAL_MS {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    println!(
        "{:<58} {:>14} {:>16} {:>10} {:>6}",
        "busy server", "verdicts", "full, overflows", "pcheck CPU", "goal"
    );
    for (c, r) in &busy {
        println!(
            "{:<58} {:>14} {:>16} {:>9.2}% {:>6}",
            c.name(),
            format!("{} in {BUSY_SECS} s", r.verdicts.len()),
            format!(
                "{}/{}, {}",
                r.waiting.queue_full, r.waiting.samples, r.waiting.overflows
            ),
            r.pcheck_cpu_pct,
            if r.verdicts.is_empty() && r.waiting.was_full() {
                "met"
            } else {
                "MISSED"
            }
        );
    }
    let sampling_cpu = busy
        .iter()
        .find(|(c, _)| *c == Busy::PreforkKeepAlive)
        .map(|(_, r)| r.pcheck_cpu_pct);
    if let Some(cpu) = sampling_cpu {
        println!(
            "pcheck CPU while it samples a full queue for {BUSY_SECS} s (apache prefork + wrk): {cpu:.2} % of a core (goal <= {CPU_GOAL_PCT} %): {}",
            if cpu <= CPU_GOAL_PCT { "met" } else { "MISSED" }
        );
    }

    println!("\nprobe cost: sequential probes against Apache httpd on loopback, 3 s each");
    println!(
        "{:<12} {:>10} {:>18} {:>14}",
        "probe", "probes", "per CPU-second", "per second"
    );
    for (name, n, c, w) in &rates {
        println!("{name:<12} {n:>10} {c:>18.0} {w:>14.0}");
    }
    let json = serde_json::json!({
        "bench": "stall",
        "verdict_ms": { "seed_rule_interval10_retry10": seed, "kernel_evidence_window2s": kernel },
        "load_average_1min": { "start": load_start, "end": load_end, "cpus": cpus },
        "under_load": {
            "stuck": stuck.iter().map(|(c, ms, setup)| serde_json::json!({
                "case": c.name(), "verdict_ms": ms, "goal_ms": VERDICT_GOAL_MS,
                "max_setup_ms": setup,
                "met": ms.last().is_some_and(|m| *m <= VERDICT_GOAL_MS),
            })).collect::<Vec<_>>(),
            "busy": busy.iter().map(|(c, r)| serde_json::json!({
                "case": c.name(), "seconds": BUSY_SECS, "verdicts": r.verdicts.len(),
                "queue_full_samples": r.waiting.queue_full, "samples": r.waiting.samples,
                "overflows": r.waiting.overflows,
                "withheld": r.withheld.len(), "pcheck_cpu_pct": r.pcheck_cpu_pct,
                "met": r.verdicts.is_empty() && r.waiting.was_full(),
            })).collect::<Vec<_>>(),
            "sampling_cpu_pct": sampling_cpu, "sampling_cpu_goal_pct": CPU_GOAL_PCT,
        },
        "probe_cost": rates.iter().map(|(name, n, c, w)| serde_json::json!({
            "probe": name, "probes": n, "per_cpu_second": c, "per_second": w
        })).collect::<Vec<_>>(),
    });
    write_bench_json("stall", &json);
}
