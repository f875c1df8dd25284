//! The probe loop of one stall watch: a probe every `interval`, each result sent to
//! the entry's decision state.

use crate::agent::{Ctx, Msg};
use crate::core::{Evidence, WatchId};
use crate::pfile::{StallCheck, StallKind, TlsVerifyCfg};
use crate::probe::{self, Prober};
use crate::report::metrics::{self, Metrics};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;

pub(crate) fn build_prober(sc: &StallCheck) -> Result<Prober, probe::ProbeError> {
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

/// Probes every `interval` (the first at once) and reports each result. Probes run
/// in their own task, so a slow one never delays another entry.
pub(crate) fn spawn_probe_loop(
    idx: usize,
    watch: WatchId,
    interval: Duration,
    prober: Arc<Prober>,
    classes: Option<Vec<u8>>,
    observe: Option<(Arc<Metrics>, metrics::EntryLabels)>,
    ctx: &Ctx,
) -> JoinHandle<()> {
    let tx = ctx.tx.clone();
    let wake = Arc::clone(&ctx.queue_wake);
    ctx.shutdown.spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let started = tick.tick().await.into_std();
            let outcome = prober.run().await;
            if crate::sense::progress::waiting_work_sign(&outcome) {
                if let Some(w) = wake.get(&prober.target().port) {
                    w.send_replace(());
                }
            }
            if let Some((m, l)) = &observe {
                m.observe_probe(l, outcome.elapsed);
            }
            let ev = match outcome.result {
                Ok(answer) => match (answer.status, &classes) {
                    (Some(code), Some(cls))
                        if !cls.contains(&u8::try_from(code / 100).unwrap_or(0)) =>
                    {
                        Evidence::ProbeFailed {
                            watch,
                            reason: format!(
                                "status {code} is not in the required classes {}",
                                cls.iter()
                                    .map(|c| format!("{c}xx"))
                                    .collect::<Vec<_>>()
                                    .join(",")
                            ),
                            started,
                        }
                    }
                    _ => Evidence::ProbeOk { watch },
                },
                Err(e) => Evidence::ProbeFailed {
                    watch,
                    reason: e.to_string(),
                    started,
                },
            };
            if tx.send(Msg::Evidence(idx, ev)).is_err() {
                return;
            }
        }
    })
}
