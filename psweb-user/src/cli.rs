//! The command lines of `pcheck` and `padmin`, as clap definitions.
//!
//! They live in the library (not in the binaries) so that the man pages and shell
//! completions are generated from the very definitions the programs parse with
//! (`cargo xtask package`, through the `psweb-gendoc` example).

use crate::pfile::{self, EvidenceMode};
use clap::Parser;
use std::path::PathBuf;
use std::time::Duration;

/// Keep web servers and TCP services alive: watch the processes of a pfile, restart
/// them when they die, and act when they cannot be brought back.
#[derive(Parser, Debug)]
#[command(name = "pcheck", version)]
pub struct PcheckArgs {
    /// The pfile (configuration) to run.
    #[arg(short = 'f', long = "file", value_name = "PFILE")]
    pub pfile: PathBuf,
    /// Validate the pfile (and that its restart scripts exist) and exit; start nothing.
    #[arg(long)]
    pub check: bool,
    /// Where death evidence comes from: auto, ebpf, pidfd or procfs (overrides the pfile).
    #[arg(long, value_name = "MODE")]
    pub evidence: Option<EvidenceMode>,
    /// /proc poll interval when /proc is the evidence source, e.g. 100ms.
    #[arg(long, default_value = "100ms", value_parser = parse_duration)]
    pub poll_interval: Duration,
    /// Syslog socket; "none" to log to stderr only.
    #[arg(long, default_value = "/dev/log", value_name = "PATH")]
    pub syslog: String,
    /// The eBPF object to load (default: psweb.bpf.o next to pcheck, then /usr/lib/psweb).
    #[arg(long, value_name = "PATH")]
    pub bpf_object: Option<PathBuf>,
    /// How kernel events reach pcheck: auto (the ring buffer where the kernel has one,
    /// else a perf event array), ring-buffer, or perf-array (psweb-perf.bpf.o, beside
    /// the ring-buffer object).
    #[arg(
        long,
        default_value = "auto",
        value_name = "auto|ring-buffer|perf-array"
    )]
    pub bpf_transport: crate::sense::ebpf::TransportChoice,
    /// Do not copy log lines to stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    /// journald's native socket: "auto" (used when systemd runs pcheck with its
    /// stderr on the journal), "none", or the socket's path. Lines sent there carry
    /// structured fields (PSWEB_EVENT, PSWEB_ENTRY, PSWEB_PID, PSWEB_PORT).
    #[arg(long, default_value = "auto", value_name = "auto|none|PATH")]
    pub journal: String,
}

/// Control the pcheck that runs a pfile.
#[derive(Parser, Debug)]
#[command(name = "padmin", version)]
pub struct PadminArgs {
    /// The pfile pcheck was started with.
    #[arg(short = 'f', long = "file", value_name = "PFILE")]
    pub pfile: PathBuf,
    /// The command: "show pent", "show kernel", "show lb", "show fleet", "events", "shutdown", "stop", "start", "drain" or "ready" (the last four with -n), "fleet hold", "fleet resume" or "fleet release" (with --host).
    #[arg(short = 'c', long = "command", num_args = 1.., value_name = "COMMAND", required = true)]
    pub command: Vec<String>,
    /// With -c events: keep printing events as they happen (as does -c "events --follow").
    #[arg(long)]
    pub follow: bool,
    /// pent_id of the entry for stop / start.
    #[arg(short = 'n', value_name = "PENT_ID")]
    pub pent_id: Option<u32>,
    /// Print JSON instead of the seed's text.
    #[arg(long)]
    pub json: bool,
    /// With -c "fleet release": the host whose reboot and restart slots are freed.
    #[arg(long, value_name = "NAME")]
    pub host: Option<String>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    pfile::parse_duration_text(s)
        .filter(|d| !d.is_zero())
        .ok_or_else(|| format!("expected a duration such as 100ms or 1s, found {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn definitions_are_consistent() {
        PcheckArgs::command().debug_assert();
        PadminArgs::command().debug_assert();
    }
}
