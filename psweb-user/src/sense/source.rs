//! Which source of death evidence pcheck uses ([`DeathSource`]): eBPF if it loads,
//! else pidfd, else /proc polling, as the pfile's `evidence` asks. Each source lost
//! on the way is one log line.

use crate::core::{DeathSource, EventKind, Level};
use crate::pfile::EvidenceMode;
use crate::pidfd;
use crate::report::events::EventInfo;
use crate::report::Logger;
use crate::sense::ebpf::{self, KernelEvent, KernelEvidence, LoadReport};
use std::path::{Path, PathBuf};
use tokio::sync::mpsc;

/// Why no source of death evidence could be had as the pfile asks.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("evidence=pidfd: this kernel has no pidfd_open (Linux 5.3+)")]
    NoPidfd,
    /// `evidence=ebpf` and the program did not load.
    #[error("evidence=ebpf: {0}")]
    Ebpf(LoadError),
}

/// Why the eBPF program is not running.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("no eBPF object found (set PSWEB_BPF_OBJECT or install psweb.bpf.o)")]
    NoObject,
    #[error(transparent)]
    Ebpf(#[from] ebpf::EbpfError),
}

/// The source chosen, and with eBPF the loaded program and what it attached.
pub struct Chosen {
    pub source: DeathSource,
    pub kernel: Option<KernelEvidence>,
    pub report: Option<LoadReport>,
}

impl Chosen {
    fn without_kernel(source: DeathSource) -> Self {
        Self {
            source,
            kernel: None,
            report: None,
        }
    }
}

/// Picks the source of death evidence, logging one line for each one that is lost.
/// With eBPF, the ring-buffer reader is started and sends to `ktx`.
pub fn choose(
    wanted: EvidenceMode,
    object: Option<&Path>,
    transport: ebpf::TransportChoice,
    ktx: mpsc::UnboundedSender<KernelEvent>,
    log: &Logger,
) -> Result<Chosen, SourceError> {
    let pidfd_ok = pidfd::available();
    match wanted {
        EvidenceMode::Only(DeathSource::Procfs) => {
            return Ok(Chosen::without_kernel(DeathSource::Procfs))
        }
        EvidenceMode::Only(DeathSource::Pidfd) if pidfd_ok => {
            return Ok(Chosen::without_kernel(DeathSource::Pidfd))
        }
        EvidenceMode::Only(DeathSource::Pidfd) => return Err(SourceError::NoPidfd),
        EvidenceMode::Only(DeathSource::Ebpf) | EvidenceMode::Auto => {}
    }
    match load(object, transport, ktx) {
        Ok((k, report)) => {
            release_freed_memory();
            log_loaded(&report, log);
            Ok(Chosen {
                source: DeathSource::Ebpf,
                kernel: Some(k),
                report: Some(report),
            })
        }
        Err(why) if wanted == EvidenceMode::Only(DeathSource::Ebpf) => Err(SourceError::Ebpf(why)),
        Err(why) => {
            let fallback = if pidfd_ok {
                DeathSource::Pidfd
            } else {
                DeathSource::Procfs
            };
            let replacement = match fallback {
                DeathSource::Pidfd => {
                    "pidfd exit notification (same verdicts, no kernel exit codes)"
                }
                _ => "/proc polling (same verdicts, detection within the poll interval)",
            };
            log.event(
                Level::Warning,
                &format!(
                    "eBPF evidence unavailable: {why}; death evidence now from {replacement}, accept-queue evidence from sock_diag polling"
                ),
                EventInfo::new(EventKind::EvidenceMode).evidence(fallback.into()),
            );
            Ok(Chosen::without_kernel(fallback))
        }
    }
}

/// Loads the eBPF object (found at `object`, else where it is installed) and starts
/// its reader.
fn load(
    object: Option<&Path>,
    transport: ebpf::TransportChoice,
    ktx: mpsc::UnboundedSender<KernelEvent>,
) -> Result<(KernelEvidence, LoadReport), LoadError> {
    let Some(path) = object.map(PathBuf::from).or_else(ebpf::locate_object) else {
        return Err(LoadError::NoObject);
    };
    let (mut k, report) = KernelEvidence::load_with(&path, transport)?;
    k.spawn_reader(ktx)?;
    Ok((k, report))
}

/// The line that says what was attached (and one for each hook that is missing).
fn log_loaded(report: &LoadReport, log: &Logger) {
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
}

/// Loading the eBPF object parses the kernel's BTF (megabytes, freed once loaded);
/// glibc keeps freed heap for reuse, so give it back to the system. (musl's
/// allocator returns large blocks by itself.)
fn release_freed_memory() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free heap memory.
    unsafe {
        libc::malloc_trim(0);
    }
}
