//! Developer tasks: `cargo xtask <build-ebpf | run | test | soak | fuzz | bench | ...>`.
//!
//! Each task installs what it needs (apt packages, rust-src, bpf-linker) on a fresh
//! machine and says what it is doing, so that a newcomer needs only the command.

mod charts;
mod ebpf;
mod faults;
mod fuzz;
mod package;
mod suite;
mod util;
mod vmtest;

use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  build-ebpf [--release]   build the eBPF objects, ring buffer and perf array (installs nightly rust-src and bpf-linker if missing)
  run                      build everything, then run pcheck in the foreground on the demo pfile
  test [FILTER...]         install what the tests need, build, run every test (unit, end-to-end,
                           package check, vmtest, 30 s per fuzz target); ends with one line
                           `N passed, N failed, N skipped` (with FILTER: unit and end-to-end only;
                           `-- --skip NAME` leaves tests out and runs the rest)
  soak [N] [-- ARGS]       the unit and end-to-end tests N times (default 3) beside two CPU
                           burners (stress-ng); prints runs and failures per test
  fuzz [--time S | --runs N] [TARGET...]
                           the cargo-fuzz targets (nightly; installs cargo-fuzz), each S seconds
                           (default 60) or N inputs; prints inputs, inputs/s and the result
  bench [--vs monit|lb]    run the benchmarks (or the side-by-side with monit, or HAProxy); tables + JSON in target/bench/,
                           SVG charts in docs/bench/
  charts                   redraw docs/bench/*.svg from the JSON in target/bench/
  package                  build the x86_64 RPM (static musl binaries, eBPF object, unit, templates,
                           man pages, completions) under target/generate-rpm/, then check it
  faults                   run the fault matrix; prints fault, expected, seen, time to recover
  vmtest [--no-host] [--kernel 5.10|6.1|6.12]...
                           boot Debian's Linux 5.10, 6.1 and 6.12 under qemu, run the eBPF scenarios
                           there (ring buffer and perf array, BTF hidden, the wall-clock jump) and on
                           this host; prints PASS / N/A / FAIL per kernel, writes docs/kernels.md
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(cmd) = args.first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let rest = &args[1..];
    let result = match cmd.as_str() {
        "build-ebpf" => ebpf::build(rest.iter().any(|a| a == "--release")).map(|_| ()),
        "run" => util::run_demo(rest),
        "test" => suite::test(rest),
        "soak" => suite::soak(rest),
        "fuzz" => fuzz::run(rest),
        "bench" => util::bench(rest),
        "charts" => charts::run(rest),
        "package" => package::package(rest),
        "faults" => faults::run(rest),
        "vmtest" => vmtest::run(rest),
        "-h" | "--help" | "help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
