//! pcheck: the monitoring daemon, one per pfile. Argument parsing and wiring only.

use clap::Parser;
use psweb::agent::{self, Options};
use psweb::pfile::{self, EvidenceMode};
use psweb::report::Logger;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Keep web servers and TCP services alive: watch the processes of a pfile, restart
/// them when they die, and act when they cannot be brought back.
#[derive(Parser, Debug)]
#[command(name = "pcheck", version)]
struct Args {
    /// The pfile (configuration) to run.
    #[arg(short = 'f', long = "file", value_name = "PFILE")]
    pfile: PathBuf,
    /// Validate the pfile (and that its restart scripts exist) and exit; start nothing.
    #[arg(long)]
    check: bool,
    /// Where death evidence comes from: auto, ebpf, pidfd or procfs (overrides the pfile).
    #[arg(long, value_name = "MODE")]
    evidence: Option<EvidenceMode>,
    /// /proc poll interval when /proc is the evidence source, e.g. 100ms.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    poll_interval: Duration,
    /// Syslog socket; "none" to log to stderr only.
    #[arg(long, default_value = "/dev/log", value_name = "PATH")]
    syslog: String,
    /// The eBPF object to load (default: psweb.bpf.o next to pcheck, then /usr/lib/psweb).
    #[arg(long, value_name = "PATH")]
    bpf_object: Option<PathBuf>,
    /// Do not copy log lines to stderr.
    #[arg(long, short = 'q')]
    quiet: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    pfile::parse_duration_text(s)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("expected a duration such as 100ms or 1s, found {s:?}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let pf = match pfile::load(&args.pfile) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("pcheck: {e}");
            return ExitCode::from(2);
        }
    };
    let file_errors = pfile::check_files(&pf);
    if args.check {
        for w in &pf.warnings {
            eprintln!("pcheck: warning: {w}");
        }
        for e in &file_errors {
            eprintln!("pcheck: {e}");
        }
        if !file_errors.is_empty() {
            return ExitCode::from(2);
        }
        println!(
            "{}: OK ({} process entr{}, {} stall check{})",
            args.pfile.display(),
            pf.entries.len(),
            if pf.entries.len() == 1 { "y" } else { "ies" },
            pf.entries.iter().filter(|e| e.stall.is_some()).count(),
            if pf.entries.iter().filter(|e| e.stall.is_some()).count() == 1 {
                ""
            } else {
                "s"
            },
        );
        return ExitCode::SUCCESS;
    }
    if let Some(e) = file_errors.first() {
        eprintln!("pcheck: {e}");
        return ExitCode::from(2);
    }
    let syslog = (args.syslog != "none").then(|| PathBuf::from(&args.syslog));
    let log = Arc::new(Logger::new("pcheck", syslog.as_deref(), !args.quiet));
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pcheck: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let opts = Options {
        pfile: pf,
        evidence: args.evidence,
        poll_interval: args.poll_interval,
        bpf_object: args.bpf_object,
        log: Arc::clone(&log),
    };
    match rt.block_on(agent::run(opts)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            log.error(&format!("pcheck: {e}"));
            ExitCode::FAILURE
        }
    }
}
