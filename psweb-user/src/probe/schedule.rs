//! The probe loop of one stall watch: a probe every `interval`, each result sent to
//! the entry's decision state.

use crate::core::status::status_verdict;
use crate::core::{Evidence, WatchId};
use crate::pfile::{StallCheck, StallKind, TlsVerifyCfg};
use crate::probe::{self, Prober};
use crate::report::metrics::{self, Metrics};
use crate::sense::progress::waiting_work_sign;
use crate::sense::queue::{self, QueueWake};
use std::sync::Arc;
use std::time::Duration;

pub fn build_prober(sc: &StallCheck) -> Result<Prober, probe::ProbeError> {
    let kind = match sc.kind {
        StallKind::Web => probe::Kind::Http,
        StallKind::Ssl => probe::Kind::Https,
        StallKind::Socket => probe::Kind::Tcp,
    };
    let tls = (sc.kind == StallKind::Ssl).then(|| probe::TlsOptions {
        verify: match &sc.tls_verify {
            TlsVerifyCfg::System => probe::TlsVerify::SystemRoots,
            TlsVerifyCfg::CaFile(p) => probe::TlsVerify::CaFile(p.clone()),
            TlsVerifyCfg::Off => probe::TlsVerify::Off,
        },
        sni: None,
    });
    let target = probe::Target {
        host: sc.host.clone().unwrap_or_else(|| "localhost".to_string()),
        port: sc.port,
        path: sc.path.clone().unwrap_or_else(|| "/".to_string()),
        timeout: sc.effective_probe_timeout(),
        tls,
    };
    Prober::new(kind, target)
}

/// What the probe loop of one watch needs besides the probe.
pub struct LoopCfg {
    pub watch: WatchId,
    pub interval: Duration,
    /// The required status classes (`status = 2xx,3xx`), if any.
    pub classes: Option<Vec<u8>>,
    /// Where each probe's duration is observed.
    pub observe: Option<(Arc<Metrics>, metrics::EntryLabels)>,
    /// Woken at a failed or slow probe: the port's kernel-evidence sampler.
    pub wake: QueueWake,
}

/// Probes every `interval` (the first at once) and reports each result (`report`,
/// false once nobody listens). Run in its own task, so a slow probe never delays
/// another entry.
pub async fn probe_loop(cfg: LoopCfg, prober: Arc<Prober>, report: impl Fn(Evidence) -> bool) {
    let LoopCfg {
        watch,
        interval,
        classes,
        observe,
        wake,
    } = cfg;
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let started = tick.tick().await.into_std();
        let outcome = prober.run().await;
        if waiting_work_sign(&outcome) {
            queue::wake(&wake, prober.target().port);
        }
        if let Some((m, l)) = &observe {
            m.observe_probe(l, outcome.elapsed);
        }
        let verdict = match outcome.result {
            Ok(answer) => status_verdict(answer.status, classes.as_deref()),
            Err(e) => Err(e.to_string()),
        };
        let ev = match verdict {
            Ok(()) => Evidence::ProbeOk { watch },
            Err(reason) => Evidence::ProbeFailed {
                watch,
                reason,
                started,
            },
        };
        if !report(ev) {
            return;
        }
    }
}
