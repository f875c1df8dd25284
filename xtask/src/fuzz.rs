//! `cargo xtask fuzz [--time S | --runs N] [TARGET...]`: the cargo-fuzz targets of
//! fuzz/ (libFuzzer, nightly), each for S seconds (default 60) or N inputs.
//! Installs cargo-fuzz when missing. The pfile target is seeded with every shipped
//! pfile and template; the corpus grows in fuzz/corpus/<target>/. An input that
//! panics, hangs (over 1 s) or runs out of memory (2 GB) is saved by libFuzzer in
//! fuzz/artifacts/<target>/; once fixed, it belongs in fuzz/regressions/<target>/,
//! which tests/fuzz_regressions.rs replays on every `cargo test`.

use crate::suite::{Outcome, TestResult};
use crate::util::{root, sh};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

pub const TARGETS: &[&str] = &[
    "pfile",
    "control_request",
    "http_response",
    "state_file",
    "ring_event",
];

/// How long each target runs.
#[derive(Clone, Copy)]
enum Budget {
    Seconds(u64),
    Runs(u64),
}

/// One target's run.
struct Run {
    inputs: u64,
    per_sec: u64,
    verdict: Result<(), String>,
}

pub fn run(args: &[String]) -> Result<(), String> {
    let mut budget = Budget::Seconds(60);
    let mut targets: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut num = |flag: &str| -> Result<u64, String> {
            it.next()
                .ok_or(format!("{flag} needs a number"))?
                .parse()
                .map_err(|e| format!("{flag}: {e}"))
        };
        match a.as_str() {
            "--time" => budget = Budget::Seconds(num("--time")?),
            "--runs" => budget = Budget::Runs(num("--runs")?),
            t if TARGETS.contains(&t) => targets.push(t.to_string()),
            other => {
                return Err(format!(
                    "fuzz: unknown argument {other:?} (--time S, --runs N, targets: {})",
                    TARGETS.join(" ")
                ))
            }
        }
    }
    if targets.is_empty() {
        targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    prepare()?;
    let mut failed = 0;
    let mut rows = Vec::new();
    for t in &targets {
        let r = run_target(t, budget)?;
        if r.verdict.is_err() {
            failed += 1;
        }
        rows.push((t.clone(), r));
    }
    println!(
        "\n{:<16} {:>12} {:>10}  result",
        "target", "inputs", "inputs/s"
    );
    for (t, r) in &rows {
        let v = match &r.verdict {
            Ok(()) => "0 panics, 0 hangs, 0 out-of-memory".to_string(),
            Err(e) => e.clone(),
        };
        println!("{t:<16} {:>12} {:>10}  {v}", r.inputs, r.per_sec);
    }
    if failed == 0 {
        Ok(())
    } else {
        Err(format!("fuzz: {failed} target(s) found a failing input"))
    }
}

/// `cargo xtask test`'s fuzz smoke: every target for 30 s, as test results.
pub fn smoke() -> Vec<TestResult> {
    if let Err(e) = prepare() {
        return vec![TestResult::new(
            "fuzz",
            "build",
            crate::suite::skipped_or_failed(&e),
        )];
    }
    TARGETS
        .iter()
        .map(|t| {
            let outcome = match run_target(t, Budget::Seconds(30)) {
                Ok(Run {
                    verdict: Ok(()), ..
                }) => Outcome::Passed,
                Ok(Run {
                    verdict: Err(e), ..
                })
                | Err(e) => Outcome::Failed(e),
            };
            TestResult::new("fuzz", t, outcome)
        })
        .collect()
}

fn fuzz_dir() -> PathBuf {
    root().join("fuzz")
}

/// cargo-fuzz installed, the targets built, the seed corpora written.
fn prepare() -> Result<(), String> {
    let have = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have {
        eprintln!("xtask: installing cargo-fuzz");
        sh(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    sh(Command::new("cargo")
        .args(["+nightly", "fuzz", "build", "-s", "none"])
        .current_dir(fuzz_dir()))
    .map_err(|e| format!("building the fuzz targets: {e}"))?;
    write_seeds()
}

fn seeds_dir(target: &str) -> PathBuf {
    root().join("target/fuzz-seeds").join(target)
}

/// Every shipped pfile and template for the pfile target; a few valid inputs for the
/// others, so the fuzzer starts from what pcheck really reads.
fn write_seeds() -> Result<(), String> {
    let root = root();
    let mut seeds: Vec<(&str, String, Vec<u8>)> = Vec::new();
    let pfiles = root.join("pfiles");
    for dir in std::fs::read_dir(&pfiles)
        .map_err(|e| format!("{}: {e}", pfiles.display()))?
        .flatten()
    {
        for f in std::fs::read_dir(dir.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with("pfile") {
                let body = std::fs::read(f.path()).map_err(|e| e.to_string())?;
                let dir_name = dir.file_name().to_string_lossy().into_owned();
                seeds.push(("pfile", format!("{dir_name}-{name}"), body));
            }
        }
    }
    for (i, req) in [
        r#"{"cmd":"show_pent"}"#,
        r#"{"cmd":"show_kernel"}"#,
        r#"{"cmd":"stop","pent_id":1}"#,
        r#"{"cmd":"start","pent_id":4294967295}"#,
        r#"{"cmd":"events","follow":true}"#,
        r#"{"cmd":"shutdown"}"#,
    ]
    .iter()
    .enumerate()
    {
        seeds.push((
            "control_request",
            format!("seed{i}"),
            req.as_bytes().to_vec(),
        ));
    }
    for (i, resp) in [
        "HTTP/1.1 200 OK\r\nServer: x\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.0 503 Service Unavailable\r\n\r\n",
        "HTTP/1.1 301 Moved\r\nLocation: /x\r\n",
        "SSH-2.0-OpenSSH\r\n",
    ]
    .iter()
    .enumerate()
    {
        for (size, flags) in [(1u8, 0u8), (255, 1)] {
            let mut b = vec![size, flags];
            b.extend_from_slice(resp.as_bytes());
            seeds.push(("http_response", format!("seed{i}-{size}"), b));
        }
    }
    seeds.push((
        "state_file",
        "seed0".into(),
        br#"{"version":1,"pfile":"/etc/psweb/p","reboot_count":1,"reboots":[{"at":"2026-12-01 10:00:00","boot_id":"x","count":1}],"entries":[{"pent_id":1,"pname":"/usr/sbin/httpd","restart_count":2,"last_verdict":"stall"}]}"#.to_vec(),
    ));
    for (i, kind) in [1u32, 2, 3].iter().enumerate() {
        let mut b = kind.to_le_bytes().to_vec();
        b.resize(32, 0);
        seeds.push(("ring_event", format!("seed{i}"), b));
    }
    for (target, name, body) in seeds {
        let d = seeds_dir(target);
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        std::fs::write(d.join(name), body).map_err(|e| e.to_string())?;
    }
    Ok(())
}

fn run_target(target: &str, budget: Budget) -> Result<Run, String> {
    let corpus = fuzz_dir().join("corpus").join(target);
    std::fs::create_dir_all(&corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
    let limit = match budget {
        Budget::Seconds(s) => format!("-max_total_time={s}"),
        Budget::Runs(n) => format!("-runs={n}"),
    };
    let log = root().join(format!("target/fuzz-{target}.log"));
    eprintln!(
        "xtask: fuzzing {target} ({limit}); libFuzzer's log: {}",
        log.display()
    );
    let started = Instant::now();
    let out = Command::new("cargo")
        .args(["+nightly", "fuzz", "run", "-s", "none", target])
        .arg(&corpus)
        .arg(seeds_dir(target))
        .args([
            "--",
            &limit,
            "-timeout=1",
            "-rss_limit_mb=2048",
            "-print_final_stats=1",
        ])
        .current_dir(fuzz_dir())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run cargo fuzz: {e}"))?;
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let _ = std::fs::write(&log, &text);
    let stat = |k: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|v| v.trim().trim_start_matches(':').trim().parse().ok())
            .unwrap_or(0)
    };
    let inputs = stat("stat::number_of_executed_units");
    let secs = started.elapsed().as_secs().max(1);
    let per_sec = match stat("stat::average_exec_per_sec") {
        0 => inputs / secs,
        n => n,
    };
    let verdict = if out.status.success() {
        Ok(())
    } else {
        let what = if text.contains("ERROR: libFuzzer: timeout") {
            "a hang (over 1 s)"
        } else if text.contains("out-of-memory") {
            "out of memory"
        } else if text.contains("deadly signal") || text.contains("panicked") {
            "a panic"
        } else {
            "a failure"
        };
        let artifact = text
            .lines()
            .find_map(|l| l.split("Test unit written to ").nth(1))
            .map_or_else(|| "no input saved".to_string(), |p| p.trim().to_string());
        Err(format!(
            "{what}: input {} (see {})",
            shown(&artifact),
            log.display()
        ))
    };
    Ok(Run {
        inputs,
        per_sec,
        verdict,
    })
}

fn shown(p: &str) -> String {
    let p = Path::new(p);
    if p.is_absolute() {
        p.display().to_string()
    } else {
        fuzz_dir().join(p).display().to_string()
    }
}
