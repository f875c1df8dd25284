//! Running the test suite and accounting for every test: `cargo xtask test` (one
//! summary across unit, end-to-end, package check, vmtest and the fuzz smoke) and
//! `cargo xtask soak [N]` (the unit and end-to-end tests N times beside CPU burners).
//!
//! Test outcomes come from libtest's `test <name> ... ok|FAILED|ignored` lines. A test
//! that returns early because a prerequisite is missing calls tests/common/skip.rs,
//! which leaves a marker file in `PSWEB_SKIP_DIR`; such a test is counted as skipped,
//! not passed.

use crate::util::root;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::os::fd::FromRawFd;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Passed,
    Failed(String),
    Skipped(String),
}

/// One test's result: `<group>::<name>` (group: the test binary, `package`, `vmtest`
/// or `fuzz`).
#[derive(Clone, Debug)]
pub struct TestResult {
    pub group: String,
    pub name: String,
    pub outcome: Outcome,
}

impl TestResult {
    pub fn new(group: &str, name: &str, outcome: Outcome) -> Self {
        Self {
            group: group.to_string(),
            name: name.to_string(),
            outcome,
        }
    }
    pub fn id(&self) -> String {
        format!("{}::{}", self.group, self.name)
    }
}

/// Runs `cargo test --workspace --no-fail-fast` with `extra` test arguments, echoing
/// its output, and returns every test's outcome (skips from the marker files).
pub fn cargo_tests(obj: &Path, extra: &[String]) -> Result<Vec<TestResult>, String> {
    let skip_dir = root().join("target/test-skips");
    let _ = std::fs::remove_dir_all(&skip_dir);
    std::fs::create_dir_all(&skip_dir).map_err(|e| format!("{}: {e}", skip_dir.display()))?;

    let mut cmd = crate::util::cargo();
    cmd.args(["test", "--workspace", "--no-fail-fast"])
        .env("PSWEB_BPF_OBJECT", obj)
        .env("PSWEB_SKIP_DIR", &skip_dir);
    // The end-to-end tests mostly wait (for intervals, restarts, timeouts): four at a
    // time keeps a 2-core machine's suite short without starving the timed ones.
    if std::env::var_os("RUST_TEST_THREADS").is_none() {
        cmd.env("RUST_TEST_THREADS", "4");
    }
    if !extra.is_empty() {
        cmd.arg("--").args(extra);
    }
    let (text, status) = run_merged(&mut cmd)?;
    let mut results = parse_libtest(&text);
    apply_skips(&mut results, &skip_dir);
    if !status.success()
        && !results
            .iter()
            .any(|r| matches!(r.outcome, Outcome::Failed(_)))
    {
        // A build error, or a binary that died before reporting a test.
        results.push(TestResult::new(
            "cargo",
            "test",
            Outcome::Failed(format!(
                "cargo test ended with {status} and no failed test named"
            )),
        ));
    }
    Ok(results)
}

/// Runs `cmd` with stdout and stderr on one pipe (so cargo's `Running <binary>` lines
/// and the binaries' test lines stay in order), echoing each line; returns the text.
fn run_merged(cmd: &mut Command) -> Result<(String, std::process::ExitStatus), String> {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds on success.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: both fds were just created and are owned here only.
    let (reader, writer) = unsafe {
        (
            std::fs::File::from_raw_fd(fds[0]),
            std::fs::File::from_raw_fd(fds[1]),
        )
    };
    let writer2 = writer.try_clone().map_err(|e| format!("pipe: {e}"))?;
    eprintln!("xtask: running {cmd:?}");
    let mut child = cmd
        .current_dir(root())
        .stdin(Stdio::null())
        .stdout(Stdio::from(writer))
        .stderr(Stdio::from(writer2))
        .spawn()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    // Drop the parent's write ends (moved into the Command) so EOF comes with the child.
    drop(std::mem::replace(cmd, Command::new("true")));
    let mut text = String::new();
    for line in BufReader::new(reader).split(b'\n').map_while(Result::ok) {
        let line = String::from_utf8_lossy(&line).into_owned();
        println!("{line}");
        text.push_str(&line);
        text.push('\n');
    }
    let status = child.wait().map_err(|e| e.to_string())?;
    Ok((text, status))
}

/// `target/debug/deps/e2e_death-0123456789abcdef` -> `e2e_death`.
fn binary_name(path: &str) -> String {
    let stem = path.rsplit('/').next().unwrap_or(path);
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name.to_string()
        }
        _ => stem.to_string(),
    }
}

/// Outcomes from cargo test's merged output. A binary that never printed its
/// `test result:` line (it crashed or hung up) is one failure of its own.
pub fn parse_libtest(text: &str) -> Vec<TestResult> {
    let mut out = Vec::new();
    let mut group = String::from("?");
    let mut finished = true;
    let mut pending: Option<String> = None;
    let record = |out: &mut Vec<TestResult>, group: &str, name: &str, verdict: &str| {
        let outcome = if verdict.starts_with("ok") {
            Some(Outcome::Passed)
        } else if verdict.starts_with("FAILED") {
            Some(Outcome::Failed("see its output above".into()))
        } else if let Some(why) = verdict.strip_prefix("ignored") {
            let why = why.trim_start_matches(',').trim();
            Some(Outcome::Skipped(if why.is_empty() {
                "#[ignore]".into()
            } else {
                why.to_string()
            }))
        } else {
            None
        };
        if let Some(o) = outcome {
            out.push(TestResult::new(group, name, o));
            true
        } else {
            false
        }
    };
    for line in text.lines() {
        let t = line.trim();
        if let Some(rest) = t.strip_prefix("Running ").filter(|r| r.ends_with(')')) {
            if !finished {
                out.push(TestResult::new(
                    &group,
                    "(binary)",
                    Outcome::Failed("the test binary ended without its result line".into()),
                ));
            }
            // `Running tests/x.rs (target/debug/deps/x-hash)` or `Running unittests ...`
            let path = rest
                .rsplit_once('(')
                .map(|(_, p)| p.trim_end_matches(')'))
                .unwrap_or(rest);
            group = binary_name(path);
            finished = false;
            pending = None;
        } else if let Some(krate) = t.strip_prefix("Doc-tests ") {
            group = format!("doc-{krate}");
            finished = false;
            pending = None;
        } else if t.starts_with("test result:") {
            finished = true;
            pending = None;
        } else if let Some(rest) = line.strip_prefix("test ") {
            if let Some((name, verdict)) = rest.split_once(" ... ") {
                if !record(&mut out, &group, name.trim(), verdict.trim()) {
                    pending = Some(name.trim().to_string());
                }
            }
        } else if let Some(name) = pending.clone() {
            // One thread: `test x ... ` then the test's uncaptured output, then `ok`.
            for verdict in ["ok", "FAILED", "ignored"] {
                if t.ends_with(verdict) || t.starts_with(verdict) {
                    let v = if t.starts_with(verdict) { t } else { verdict };
                    if record(&mut out, &group, &name, v) {
                        pending = None;
                        break;
                    }
                }
            }
        }
    }
    if !finished {
        out.push(TestResult::new(
            &group,
            "(binary)",
            Outcome::Failed("the test binary ended without its result line".into()),
        ));
    }
    out
}

/// Marks the passed tests that recorded a skip (tests/common/skip.rs) as skipped.
fn apply_skips(results: &mut [TestResult], dir: &Path) {
    let mut skips: BTreeMap<(String, String), String> = BTreeMap::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(text) = std::fs::read_to_string(e.path()) else {
            continue;
        };
        for l in text.lines() {
            let mut f = l.splitn(3, '\t');
            if let (Some(b), Some(n), Some(why)) = (f.next(), f.next(), f.next()) {
                skips.insert((b.to_string(), n.to_string()), why.to_string());
            }
        }
    }
    for r in results.iter_mut() {
        if r.outcome == Outcome::Passed {
            if let Some(why) = skips.get(&(r.group.clone(), r.name.clone())) {
                r.outcome = Outcome::Skipped(why.clone());
            }
        }
    }
}

/// The vmtest rows (`VMTEST|kernel|scenario|PASS|FAIL|N/A|INFO|...`) of the last run.
static VMTEST_ROWS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Called by vmtest with its result rows, so that `cargo xtask test` can count them.
pub fn record_vmtest_rows(lines: &[String]) {
    if let Ok(mut v) = VMTEST_ROWS.lock() {
        v.extend(lines.iter().cloned());
    }
}

/// vmtest's rows as results: PASS passed, FAIL failed, N/A skipped (INFO rows are
/// figures, not tests).
pub fn vmtest_results() -> Vec<TestResult> {
    let rows = VMTEST_ROWS.lock().map(|v| v.clone()).unwrap_or_default();
    rows.iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('|').map(str::trim).collect();
            let (kernel, scenario, verdict) = (f.get(1)?, f.get(2)?, f.get(3)?);
            let detail = f.get(6).copied().unwrap_or("").to_string();
            let outcome = match *verdict {
                "PASS" => Outcome::Passed,
                "FAIL" => Outcome::Failed(detail),
                "N/A" => Outcome::Skipped(detail),
                _ => return None,
            };
            Some(TestResult::new(
                "vmtest",
                &format!("{kernel}::{scenario}"),
                outcome,
            ))
        })
        .collect()
}

/// Prints the failed and skipped tests by name, then the one summary line; Err when
/// anything failed.
pub fn summarize(results: &[TestResult], took: Duration) -> Result<(), String> {
    let failed: Vec<&TestResult> = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
        .collect();
    let skipped: Vec<&TestResult> = results
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Skipped(_)))
        .collect();
    let passed = results.len() - failed.len() - skipped.len();
    println!("\n==== cargo xtask test: {:.0} s ====", took.as_secs_f64());
    if !failed.is_empty() {
        println!("failed:");
        for r in &failed {
            if let Outcome::Failed(why) = &r.outcome {
                println!("  {}  ({why})", r.id());
            }
        }
    }
    if !skipped.is_empty() {
        println!("skipped:");
        for r in &skipped {
            if let Outcome::Skipped(why) = &r.outcome {
                println!("  {}  ({why})", r.id());
            }
        }
    }
    println!(
        "{passed} passed, {} failed, {} skipped",
        failed.len(),
        skipped.len()
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("{} test(s) failed", failed.len()))
    }
}

/// `cargo xtask test`: every test, then one summary.
pub fn test(args: &[String]) -> Result<(), String> {
    let started = Instant::now();
    let args = match args.split_first() {
        Some((first, rest)) if first == "--" => rest,
        _ => args,
    };
    crate::util::ensure_test_packages()?;
    let obj = crate::ebpf::build(false)?;
    crate::util::sh(crate::util::cargo().args(["build", "--workspace", "--bins"]))?;
    let mut results = cargo_tests(&obj, args)?;
    // Test-name filters select unit and end-to-end tests only (`--skip NAME` does not).
    if !has_filter(args) {
        let outcome = match crate::package::check() {
            Ok(()) => Outcome::Passed,
            Err(e) => Outcome::Failed(e),
        };
        results.push(TestResult::new("package", "check", outcome));
        if crate::util::is_root() {
            // The eBPF path on other kernels under qemu, and on this host.
            let run = crate::vmtest::run(&[]);
            let rows = vmtest_results();
            results.extend(rows.iter().cloned());
            if let Err(e) = run {
                if !rows.iter().any(|r| matches!(r.outcome, Outcome::Failed(_))) {
                    results.push(TestResult::new("vmtest", "run", Outcome::Failed(e)));
                }
            }
        } else {
            results.push(TestResult::new(
                "vmtest",
                "run",
                skipped_or_failed("needs root (apt-get, qemu, loading eBPF on the host)"),
            ));
        }
        results.extend(crate::fuzz::smoke());
    }
    summarize(&results, started.elapsed())
}

/// True if libtest arguments name tests to run (a filter), not only tests to skip.
fn has_filter(args: &[String]) -> bool {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--skip" {
            it.next();
        } else if !a.starts_with('-') {
            return true;
        }
    }
    false
}

/// A missing prerequisite: a skip, or under CI (`CI=true`) a failure.
pub fn skipped_or_failed(why: &str) -> Outcome {
    let ci = std::env::var("CI")
        .is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"));
    if ci {
        Outcome::Failed(format!("missing prerequisite under CI: {why}"))
    } else {
        Outcome::Skipped(why.to_string())
    }
}

/// `cargo xtask soak [N]`: the unit and end-to-end tests N times (default 3) beside two
/// CPU burners (stress-ng); prints runs and failures per test.
pub fn soak(args: &[String]) -> Result<(), String> {
    // `soak [N] [-- LIBTEST ARGS]`, e.g. `soak 3 -- --skip wall_clock`.
    let (mine, libtest) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], &args[i + 1..]),
        None => (args, &[][..]),
    };
    let n: u32 = match mine {
        [] => 3,
        [n] => n.parse().map_err(|e| format!("soak: N: {e}"))?,
        _ => return Err("usage: cargo xtask soak [N] [-- LIBTEST ARGS]".into()),
    };
    crate::util::ensure_test_packages()?;
    crate::util::ensure_package("/usr/bin/stress-ng", "stress-ng")?;
    let obj = crate::ebpf::build(false)?;
    crate::util::sh(crate::util::cargo().args(["build", "--workspace", "--bins", "--tests"]))?;
    let burners = Burners::start()?;
    let mut table: BTreeMap<String, (u32, u32, u32)> = BTreeMap::new();
    let mut runs_done = 0;
    let started = Instant::now();
    for i in 1..=n {
        eprintln!("xtask: soak run {i} of {n} (beside two CPU burners)");
        let results = cargo_tests(&obj, libtest)?;
        runs_done += 1;
        for r in &results {
            let e = table.entry(r.id()).or_default();
            e.0 += 1;
            match r.outcome {
                Outcome::Failed(_) => e.1 += 1,
                Outcome::Skipped(_) => e.2 += 1,
                Outcome::Passed => {}
            }
        }
        let failed: BTreeSet<String> = results
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
            .map(TestResult::id)
            .collect();
        eprintln!(
            "xtask: soak run {i}: {} failed {:?} ({:.0} s so far)",
            failed.len(),
            failed,
            started.elapsed().as_secs_f64()
        );
    }
    drop(burners);
    let width = table.keys().map(String::len).max().unwrap_or(4).max(4);
    println!("\n{:<width$}  runs  failures  skips", "test");
    for (name, (runs, fails, skips)) in &table {
        println!("{name:<width$}  {runs:>4}  {fails:>8}  {skips:>5}");
    }
    let total_fail: u32 = table.values().map(|v| v.1).sum();
    let flaky = table.values().filter(|v| v.1 > 0).count();
    println!(
        "soak: {runs_done} run(s) of {} tests in {:.0} s beside two CPU burners: {total_fail} failure(s) in {flaky} test(s)",
        table.len(),
        started.elapsed().as_secs_f64()
    );
    if total_fail == 0 {
        Ok(())
    } else {
        Err(format!("soak: {total_fail} failure(s)"))
    }
}

/// Two CPU-burning processes (stress-ng), ended when dropped.
struct Burners(std::process::Child);

impl Burners {
    fn start() -> Result<Self, String> {
        let child = Command::new("stress-ng")
            .args(["--cpu", "2", "--cpu-method", "matrixprod", "--quiet"])
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start stress-ng: {e}"))?;
        Ok(Self(child))
    }
}

impl Drop for Burners {
    fn drop(&mut self) {
        // stress-ng ends its workers when its parent gets SIGTERM.
        // SAFETY: plain kill of our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libtest_output_is_counted_per_binary() {
        let text = "\
     Running unittests src/lib.rs (target/debug/deps/psweb-0123456789abcdef)
running 2 tests
test core::tests::a ... ok
test core::tests::b ... FAILED
test result: FAILED. 1 passed; 1 failed; 0 ignored
     Running tests/e2e_death.rs (target/debug/deps/e2e_death-fedcba9876543210)
running 3 tests
test killed_is_restarted ... ok
test slow ... ignored, needs a VM
test single ... 
[pcheck] noise
ok
test result: ok. 2 passed; 0 failed; 1 ignored
     Running tests/e2e_x.rs (target/debug/deps/e2e_x-fedcba9876543210)
running 1 test
";
        let r = parse_libtest(text);
        let ids: Vec<(String, &Outcome)> = r.iter().map(|r| (r.id(), &r.outcome)).collect();
        assert_eq!(ids.len(), 6, "{ids:?}");
        assert_eq!(ids[0], ("psweb::core::tests::a".into(), &Outcome::Passed));
        assert!(matches!(ids[1].1, Outcome::Failed(_)));
        assert_eq!(ids[2].0, "e2e_death::killed_is_restarted");
        assert_eq!(ids[3].1, &Outcome::Skipped("needs a VM".into()));
        assert_eq!(ids[4], ("e2e_death::single".into(), &Outcome::Passed));
        assert_eq!(ids[5].0, "e2e_x::(binary)");
    }

    #[test]
    fn only_names_are_filters() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(!has_filter(&v(&[])));
        assert!(!has_filter(&v(&["--skip", "wall_clock"])));
        assert!(has_filter(&v(&["stall"])));
        assert!(has_filter(&v(&["--skip", "x", "stall"])));
    }

    #[test]
    fn skip_markers_turn_passes_into_skips() {
        let dir = std::env::temp_dir().join(format!("xtask-skips-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("m"), "e2e_death\tkilled\tneeds root\n").unwrap();
        let mut r = vec![
            TestResult::new("e2e_death", "killed", Outcome::Passed),
            TestResult::new("e2e_padmin", "killed", Outcome::Passed),
        ];
        apply_skips(&mut r, &dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(r[0].outcome, Outcome::Skipped("needs root".into()));
        assert_eq!(r[1].outcome, Outcome::Passed);
    }

    #[test]
    fn vmtest_rows_count_pass_fail_and_na() {
        record_vmtest_rows(&[
            "VMTEST|6.1|load|PASS|-|40 us|ok|kvm".into(),
            "VMTEST|6.1|overflow|N/A|-|-|no final-ACK hook|kvm".into(),
            "VMTEST|6.1|exit|FAIL|-|-|no line|kvm".into(),
            "VMTEST|6.1|powers|INFO|-|-|x|kvm".into(),
        ]);
        let r = vmtest_results();
        assert_eq!(r.len(), 3);
        assert_eq!(r[0].id(), "vmtest::6.1::load");
        assert!(matches!(r[1].outcome, Outcome::Skipped(_)));
        assert!(matches!(r[2].outcome, Outcome::Failed(_)));
    }
}
