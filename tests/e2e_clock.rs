//! A wall-clock jump must never cause or hide a stall (SPEC 3.2; the seed warns that
//! changing the date during monitoring makes its stall judgement misfire).
//!
//! This moves CLOCK_REALTIME a day forward and back while probes are failing, which
//! every other program on the machine would see, so `cargo test` leaves this binary
//! out (`test = false`): `cargo xtask vmtest` runs it inside a VM, where the jump
//! touches nothing else. It always puts the clock back, also when it fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

mod common;
use common::*;
use std::time::{Duration, Instant, SystemTime};

fn set_realtime(t: SystemTime) -> std::io::Result<()> {
    let d = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(std::io::Error::other)?;
    let ts = libc::timespec {
        tv_sec: d.as_secs() as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    };
    // SAFETY: a valid timespec.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &ts) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Puts the wall clock back to where it would be without the jump, on drop.
struct ClockGuard {
    wall: SystemTime,
    mono: Instant,
}

impl ClockGuard {
    fn jump(by: Duration) -> std::io::Result<Self> {
        let g = ClockGuard {
            wall: SystemTime::now(),
            mono: Instant::now(),
        };
        set_realtime(g.wall + by)?;
        Ok(g)
    }
}

impl Drop for ClockGuard {
    fn drop(&mut self) {
        let _ = set_realtime(self.wall + self.mono.elapsed());
    }
}

/// Bound on each wait: the test runs in an emulated VM beside other scenarios, where
/// the first answer of the server and each probe interval (10 s) can come late.
const SLOW_T: Duration = Duration::from_secs(90);

fn failing_secs(line: &str) -> u64 {
    line.split("failing for ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no 'failing for' in {line}"))
}

#[test]
fn wall_clock_jump_causes_no_stall_verdict() {
    if !root_or_skip("wall_clock_jump") {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let (script, pidfile) = sb.demo_script("web", port, 0);
    let pfile = entry_pfile(
        &sb,
        DEMO,
        &script,
        &pidfile,
        &stall_block(
            "_bi_webserv",
            &format!("10:0:2:60:{port}"),
            1,
            "    probe_timeout = 2s\n",
        ),
    );
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    pc.wait_for("stall_chk (web) of pent_id= 1", SLOW_T);
    let pid = pid_of(&pc.entry(1));
    kill(pid, libc::SIGSTOP);
    let first = pc.wait_for("stall check (web)", SLOW_T);
    assert_eq!(failing_secs(&first), 0, "{first}");

    let day = Duration::from_secs(86_400);
    let second = {
        let _forward = match ClockGuard::jump(day) {
            Ok(g) => g,
            Err(e) => {
                kill(pid, libc::SIGCONT);
                println!(
                    "SKIPPED wall_clock_jump: cannot set CLOCK_REALTIME ({e}; needs CAP_SYS_TIME)"
                );
                return;
            }
        };
        pc.wait_for("stall check (web)", SLOW_T)
        // the guard puts the clock back here
    };
    assert!(
        failing_secs(&second) < 60,
        "a day forward is not a day of failing: {second}"
    );
    // And a day back (relative to where the jump left it) hides nothing either: the
    // next failure still counts on from the first.
    let third = pc.wait_for("stall check (web)", SLOW_T);
    assert!(
        failing_secs(&third) >= failing_secs(&second),
        "{second} / {third}"
    );
    kill(pid, libc::SIGCONT);
    pc.wait_for("answering again", SLOW_T);
    pc.drain();
    let judged: Vec<&String> = pc.seen.iter().filter(|l| l.contains("Stall")).collect();
    assert!(judged.is_empty(), "{judged:?}");
    assert_eq!(pid_of(&pc.entry(1)), pid, "no restart");
    fault_row(
        9,
        "wall clock a day forward and back",
        "no verdict",
        "no verdict; failures counted on the monotonic clock",
        None,
    );
}
