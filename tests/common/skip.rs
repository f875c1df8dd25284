//! Skips that count. A test whose prerequisite is missing calls [`skip`]: the reason
//! is printed and, when `cargo xtask test` passes a directory in `PSWEB_SKIP_DIR`, a
//! marker file names the test, so the suite counts it as skipped rather than passed.
//! Under CI (`CI=true`, root, everything installed) a missing prerequisite is a bug of
//! the machine or of xtask, so [`skip`] fails the test instead.
#![allow(dead_code)]

use std::path::PathBuf;

/// Records that the running test is skipped for `reason`; panics under CI.
pub fn skip(test: &str, reason: &str) {
    if under_ci() {
        panic!("{test}: missing prerequisite under CI (CI=true): {reason}");
    }
    not_run(test, reason);
}

/// Records a skip even under CI: for a test that could not set up a rare condition
/// this time (a chance of the machine, not a missing prerequisite).
pub fn not_run(test: &str, reason: &str) {
    println!("SKIPPED {test}: {reason}");
    let Some(dir) = std::env::var_os("PSWEB_SKIP_DIR").map(PathBuf::from) else {
        return;
    };
    // libtest names each test's thread after the test's path in its binary.
    let thread = std::thread::current();
    let name = thread.name().unwrap_or(test).to_string();
    let binary = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .map(|s| strip_hash(&s).to_string())
        .unwrap_or_default();
    let file = dir.join(format!(
        "{binary}--{}--{}",
        name.replace(['/', ':'], "_"),
        std::process::id()
    ));
    let _ = std::fs::create_dir_all(&dir);
    if let Err(e) = std::fs::write(&file, format!("{binary}\t{name}\t{reason}\n")) {
        println!("cannot record the skip in {}: {e}", file.display());
    }
}

/// True under CI (`CI` set to anything but empty, 0 or false).
pub fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && !v.eq_ignore_ascii_case("false"))
}

/// `e2e_death-0123456789abcdef` -> `e2e_death` (cargo's hash suffix off).
fn strip_hash(stem: &str) -> &str {
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name
        }
        _ => stem,
    }
}
