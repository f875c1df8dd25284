//! The views `padmin -c show pent` and `show kernel` print, built from the agent's
//! state.

use crate::admin::{KernelView, PentView, PortView};
use crate::core::{DeathSource, Entry};
use crate::pfile::ProcEntry;
use crate::report::local_time;
use crate::sense::ebpf::{self, LoadReport};
use crate::sense::queue::PortStats;
use std::collections::BTreeMap;
use std::time::{Instant, SystemTime};

/// `show kernel`: the death-evidence source in use, what the eBPF program attached,
/// and each watched port's accept-queue evidence.
pub fn kernel_view(
    source: DeathSource,
    report: Option<&LoadReport>,
    ports: &BTreeMap<u16, PortStats>,
) -> KernelView {
    let kernel_serves_syn = ebpf::serves_syn(report);
    let mut hooks: Vec<(String, String)> = report.map(|r| r.hooks.clone()).unwrap_or_default();
    if source != DeathSource::Ebpf {
        let death = if source == DeathSource::Pidfd {
            "pidfd readiness"
        } else {
            "/proc polling"
        };
        hooks.push((ebpf::EVIDENCE_EXIT.to_string(), death.to_string()));
    }
    if !kernel_serves_syn {
        hooks.push((
            "accept-queue full".to_string(),
            "sock_diag polling, every 1 s".to_string(),
        ));
    }
    KernelView {
        death_evidence: source.name().to_string(),
        transport: report.map_or("none", |r| r.transport.name()).to_string(),
        btf: ebpf::btf_present(),
        load_attach_us: report
            .map(|r| u64::try_from(r.load_attach.as_micros()).unwrap_or(u64::MAX)),
        hooks,
        ports: ports
            .iter()
            .map(|(port, st)| PortView {
                port: *port,
                syn_overflows: st.syn,
                final_ack_overflows: st.final_ack,
                full_polls: st.full_polls,
                backlog: st.backlog,
                max_backlog: st.max_backlog,
                last_seen: st.last.map(local_time),
                source: if kernel_serves_syn {
                    "ebpf"
                } else {
                    "sock_diag"
                }
                .to_string(),
            })
            .collect(),
    }
}

/// `show pent`: one entry's line. `anchor`: one instant on both clocks, to print the
/// monotonic rerun time as a wall-clock time.
pub fn pent_view(
    cfg: &ProcEntry,
    c: &Entry,
    source: DeathSource,
    anchor: (Instant, SystemTime),
) -> PentView {
    let rerun_time = c
        .rerun_at
        .map(|at| local_time(anchor.1 + at.saturating_duration_since(anchor.0)));
    PentView {
        pname: c.pname.clone(),
        pid: c.pid,
        retry_count: c.retry_count,
        retry_limit: c.retry_limit,
        restart_count: c.restart_count,
        proc_sts: c.proc_sts.to_string(),
        stall_chk: cfg
            .stall
            .as_ref()
            .zip(c.stall.as_ref())
            .map(|(cfg, sw)| (cfg.kind.tag().to_string(), sw.sts.to_string())),
        retry_over_act: c.retry_over_action.as_str().to_string(),
        rerun_time,
        pent_id: c.pent_id,
        monitor_sts: if c.monitor_on { "on" } else { "off" }.to_string(),
        evidence: source.name().to_string(),
        lb_state: None,
    }
}
