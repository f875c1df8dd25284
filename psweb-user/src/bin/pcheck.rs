//! pcheck: the monitoring daemon, one per pfile. Argument parsing and wiring only.

use clap::Parser;
use psweb::agent::{self, Options};
use psweb::cli::PcheckArgs as Args;
use psweb::pfile;
use psweb::report::Logger;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

fn main() -> ExitCode {
    let args = Args::parse();
    let mut pf = match pfile::load(&args.pfile) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("pcheck: {e}");
            return ExitCode::from(2);
        }
    };
    let file_errors = pfile::check_files(&pf);
    let file_warnings = pfile::check_warnings(&pf);
    pf.warnings.extend(file_warnings);
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
    let mut logger = Logger::new("pcheck", syslog.as_deref(), !args.quiet);
    if let Some((path, stderr_is_journal)) = psweb::report::journal_socket(&args.journal) {
        logger = logger.with_journal(path, stderr_is_journal);
    }
    let log = Arc::new(logger);
    psweb::report::facade::install(Arc::clone(&log));
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
        bpf_transport: args.bpf_transport,
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
