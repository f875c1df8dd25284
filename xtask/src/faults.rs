//! `cargo xtask faults`: the fault matrix. Runs the end-to-end tests that
//! inject each fault (the same tests `cargo xtask test` runs), collects the
//! `FAULT|n|fault|expected|seen|time to recover` lines they print, and prints one
//! table; writes it as JSON to target/bench/faults.json. A second section, "local
//! attacker", comes from the `ATTACK|...` lines of e2e_attacker (a non-root user
//! trying to turn root's pcheck), written to target/bench/attacker.json.

use crate::util::{root, sh};
use std::process::{Command, Stdio};

pub fn run(_args: &[String]) -> Result<(), String> {
    crate::util::ensure_test_packages()?;
    let obj = crate::ebpf::build(false)?;
    sh(Command::new(cargo()).args(["build", "-p", "psweb", "--bins", "--tests"]))?;
    let out = Command::new(cargo())
        .current_dir(root())
        .env("PSWEB_BPF_OBJECT", &obj)
        .args(["test", "-p", "psweb"])
        .args([
            "--test",
            "e2e_death",
            "--test",
            "e2e_stall",
            "--test",
            "e2e_faults",
        ])
        // Fault 9 (a wall-clock jump) runs inside `cargo xtask vmtest`'s VM only: it
        // moves CLOCK_REALTIME for the whole machine.
        .args([
            "--test",
            "e2e_padmin",
            "--test",
            "e2e_attacker",
            "--",
            "--nocapture",
        ])
        .stderr(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run cargo test: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut rows: Vec<Vec<String>> = text
        .lines()
        .filter_map(|l| l.strip_prefix("FAULT|"))
        .map(|l| l.split('|').map(str::to_string).collect::<Vec<_>>())
        .filter(|r| r.len() == 5)
        .collect();
    rows.sort_by_key(|r| r[0].parse::<u32>().unwrap_or(0));
    let w = |i: usize, min: usize| rows.iter().map(|r| r[i].len()).max().unwrap_or(0).max(min);
    let (w1, w2, w3) = (w(1, 5), w(2, 8), w(3, 4));
    println!(
        "{:>2}  {:<w1$}  {:<w2$}  {:<w3$}  time to recover",
        "#", "fault", "expected", "seen"
    );
    for r in &rows {
        println!(
            "{:>2}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
            r[0], r[1], r[2], r[3], r[4]
        );
    }
    let missing: Vec<u32> = (1..=14)
        .filter(|n| *n != 9)
        .filter(|n| !rows.iter().any(|r| r[0] == n.to_string()))
        .collect();
    if !missing.is_empty() {
        println!("not run or not passed (see cargo test): {missing:?}");
    }
    println!(" 9  wall clock a day forward and back: run by `cargo xtask vmtest` in a VM (docs/kernels.md)");
    let json: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{{\"n\":{},\"fault\":{:?},\"expected\":{:?},\"seen\":{:?},\"recover\":{:?}}}",
                r[0], r[1], r[2], r[3], r[4]
            )
        })
        .collect();
    let dir = root().join("target/bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("faults.json"), format!("[{}]\n", json.join(",\n")));
    let attacks = section(&text, "ATTACK|");
    println!();
    println!("local attacker (a non-root user against root's pcheck)");
    print_rows(&attacks, "attack");
    let expected_attacks = [1, 2, 3, 5, 6, 7, 8, 9, 10, 12];
    let missing_attacks: Vec<u32> = expected_attacks
        .into_iter()
        .filter(|n| !attacks.iter().any(|r| r[0] == n.to_string()))
        .collect();
    if !missing_attacks.is_empty() {
        println!("not run or not passed (see cargo test): {missing_attacks:?}");
    }
    let _ = std::fs::write(
        dir.join("attacker.json"),
        format!("[{}]\n", to_json(&attacks, "attack").join(",\n")),
    );
    if out.status.success() && missing.is_empty() && missing_attacks.is_empty() {
        Ok(())
    } else {
        Err("some fault scenarios failed: run `cargo xtask test` to see which".into())
    }
}

/// The rows of the lines starting with `prefix`, sorted by number.
fn section(text: &str, prefix: &str) -> Vec<Vec<String>> {
    let mut rows: Vec<Vec<String>> = text
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|l| l.split('|').map(str::to_string).collect::<Vec<_>>())
        .filter(|r| r.len() == 5)
        .collect();
    rows.sort_by_key(|r| r[0].parse::<u32>().unwrap_or(0));
    rows
}

fn print_rows(rows: &[Vec<String>], what: &str) {
    let w = |i: usize, min: usize| rows.iter().map(|r| r[i].len()).max().unwrap_or(0).max(min);
    let (w1, w2, w3) = (w(1, what.len()), w(2, 8), w(3, 4));
    println!(
        "{:>2}  {:<w1$}  {:<w2$}  {:<w3$}  time",
        "#", what, "expected", "seen"
    );
    for r in rows {
        println!(
            "{:>2}  {:<w1$}  {:<w2$}  {:<w3$}  {}",
            r[0], r[1], r[2], r[3], r[4]
        );
    }
}

fn to_json(rows: &[Vec<String>], what: &str) -> Vec<String> {
    rows.iter()
        .map(|r| {
            format!(
                "{{\"n\":{},\"{what}\":{:?},\"expected\":{:?},\"seen\":{:?},\"time\":{:?}}}",
                r[0], r[1], r[2], r[3], r[4]
            )
        })
        .collect()
}

fn cargo() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}
