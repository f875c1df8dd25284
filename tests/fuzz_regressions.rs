//! Every input a fuzz target once failed on (fuzz/regressions/<target>/), replayed
//! through the same code the target runs (fuzz/src/harness.rs): each must now come
//! back as a value or a diagnostic, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

#[path = "../fuzz/src/harness.rs"]
mod harness;

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) -> usize {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions")
        .join(target);
    let mut n = 0;
    for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        let input = std::fs::read(e.path()).expect("read a kept input");
        eprintln!("replaying {}", e.path().display());
        run(&input);
        n += 1;
    }
    n
}

#[test]
fn pfile_inputs() {
    assert!(
        replay("pfile", harness::pfile) > 0,
        "fuzz/regressions/pfile is empty"
    );
}

#[test]
fn control_request_inputs() {
    replay("control_request", harness::control_request);
}

#[test]
fn http_response_inputs() {
    replay("http_response", harness::http_response);
}

#[test]
fn state_file_inputs() {
    replay("state_file", harness::state_file);
}

#[test]
fn ring_event_inputs() {
    replay("ring_event", harness::ring_event);
}

/// The input that once made `pcheck --check` panic (exit 101): now a diagnostic with
/// its line and column, and exit 2 like any other bad pfile.
#[test]
fn pcheck_check_diagnoses_the_five_field_ps_action() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/regressions/pfile/ps-action-five-fields");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pcheck"))
        .arg("-f")
        .arg(&file)
        .arg("--check")
        .output()
        .expect("run pcheck");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(":5:") && err.contains("expected PS_ACTION"),
        "{err}"
    );
}
