//! Which source of death evidence pcheck uses: eBPF if it loads, else pidfd, else
//! /proc polling, as the pfile's `evidence` asks.

use crate::core::{EventKind, EventSource, Level};
use crate::pfile::EvidenceMode;
use crate::report::events::EventInfo;
use crate::report::Logger;
use crate::sense::ebpf::{self, KernelEvent, KernelEvidence, LoadReport};
use crate::sense::pidfd;
use std::path::PathBuf;
use tokio::sync::mpsc;

/// The death-evidence source actually in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    Ebpf,
    Pidfd,
    Procfs,
}

impl Mode {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Ebpf => "ebpf",
            Mode::Pidfd => "pidfd",
            Mode::Procfs => "procfs",
        }
    }

    pub(crate) fn source(self) -> EventSource {
        match self {
            Mode::Ebpf => EventSource::Ebpf,
            Mode::Pidfd => EventSource::Pidfd,
            Mode::Procfs => EventSource::Procfs,
        }
    }
}

/// Loading the eBPF object parses the kernel's BTF (megabytes, freed once loaded);
/// glibc keeps freed heap for reuse, so give it back to the system. (musl's
/// allocator returns large blocks by itself.)
pub(crate) fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Picks the source of death evidence, logging one line for each one that is lost.
pub(crate) fn choose_mode(
    wanted: EvidenceMode,
    object: Option<&std::path::Path>,
    transport: ebpf::TransportChoice,
    ktx: mpsc::UnboundedSender<KernelEvent>,
    log: &Logger,
) -> Result<(Mode, Option<KernelEvidence>, Option<LoadReport>), String> {
    let pidfd_ok = pidfd::available();
    match wanted {
        EvidenceMode::Procfs => return Ok((Mode::Procfs, None, None)),
        EvidenceMode::Pidfd if pidfd_ok => return Ok((Mode::Pidfd, None, None)),
        EvidenceMode::Pidfd => {
            return Err("evidence=pidfd: this kernel has no pidfd_open (Linux 5.3+)".into())
        }
        EvidenceMode::Ebpf | EvidenceMode::Auto => {}
    }
    let loaded = match object.map(PathBuf::from).or_else(ebpf::locate_object) {
        None => {
            Err("no eBPF object found (set PSWEB_BPF_OBJECT or install psweb.bpf.o)".to_string())
        }
        Some(path) => KernelEvidence::load_with(&path, transport)
            .map_err(|e| e.to_string())
            .and_then(|(mut k, report)| {
                k.spawn_reader(ktx).map_err(|e| e.to_string())?;
                Ok((k, report))
            }),
    };
    match loaded {
        Ok((k, report)) => {
            release_freed_memory();
            let hooks: Vec<String> = report
                .hooks
                .iter()
                .map(|(what, hook)| format!("{what}: {hook}"))
                .collect();
            log.info(&format!(
                "eBPF loaded in {} us ({}) events through the {}",
                report.load_attach.as_micros(),
                hooks.join("; "),
                report.transport.name()
            ));
            for (what, why) in &report.unavailable {
                log.warn(&format!("eBPF: no hook for {what}: {why}"));
            }
            Ok((Mode::Ebpf, Some(k), Some(report)))
        }
        Err(why) if wanted == EvidenceMode::Ebpf => Err(format!("evidence=ebpf: {why}")),
        Err(why) => {
            let fallback = if pidfd_ok { Mode::Pidfd } else { Mode::Procfs };
            let replacement = match fallback {
                Mode::Pidfd => "pidfd exit notification (same verdicts, no kernel exit codes)",
                _ => "/proc polling (same verdicts, detection within the poll interval)",
            };
            log.event(
                Level::Warning,
                &format!(
                    "eBPF evidence unavailable: {why}; death evidence now from {replacement}, accept-queue evidence from sock_diag polling"
                ),
                EventInfo::new(EventKind::EvidenceMode).evidence(fallback.source()),
            );
            Ok((fallback, None, None))
        }
    }
}
