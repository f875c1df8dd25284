//! Wiring at start: the control socket, the event outputs (metrics, webhooks, the
//! ring padmin reads), the source of death evidence, the ports' accept-queue
//! evidence, the entries with their persisted state; then adoption of what already
//! runs.

use super::{Agent, AgentError, Ctx, Inbox, Kernel, Options, Slot};
use crate::act::{self, kill::ServiceId};
use crate::admin::server::Control;
use crate::core::reboot::RebootGuard;
use crate::core::{DeathSource, Entry, EventKind, Evidence, Level};
use crate::fleet::Fleet;
use crate::pfile::{Pfile, StallEvidence};
use crate::probe::schedule::build_prober;
use crate::procfs;
use crate::report::events::{Bus, EventInfo};
use crate::report::metrics::{self, Metrics};
use crate::report::{webhook, Logger};
use crate::sense::ebpf;
use crate::sense::queue::{
    spawn_listener_look, spawn_queue_poller, PortStats, QueueWake, LOOK, LOOK_EBPF,
};
use crate::sense::source::{self, Chosen};
use crate::shutdown::Shutdown;
use crate::state::{self, Store};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Instant, SystemTime};
use tokio::signal::unix::{Signal, SignalKind};
use tokio::sync::mpsc;

/// Sets everything up, up to (not including) adoption.
pub(super) fn start(opts: Options, fleet: Option<&Fleet>) -> Result<(Agent, Inbox), AgentError> {
    let log = Arc::clone(&opts.log);
    let pfile = &opts.pfile;
    let sock_path = crate::paths::socket_path(&pfile.path, pfile.globals.control_socket.as_deref());
    let control = Control::bind(&sock_path)?;
    act::prepare(&log);
    let sd = Shutdown::new();
    // From the start: a SIGTERM during start-up waits for the main loop, which stops.
    let (sigterm, sigint) = signals()?;
    for w in &pfile.warnings {
        log.warn(&format!("warning: {w}"));
    }
    let metrics = start_reporting(pfile, &log, fleet, &sd)?;
    let (tx, rx) = mpsc::unbounded_channel();
    let (ktx, krx) = mpsc::unbounded_channel();
    let wanted = opts.evidence.unwrap_or(pfile.globals.evidence);
    let mut chosen = source::choose(
        wanted,
        opts.bpf_object.as_deref(),
        opts.bpf_transport,
        ktx,
        &log,
    )?;
    let (ports, queue_wake) = start_queue_evidence(pfile, &mut chosen, &tx, &sd, &log);
    let (calls_tx, calls) = mpsc::channel(16);
    announce(pfile, chosen.source, &control, &log, metrics.as_deref());
    // Not stopped with the other tasks: it holds the pfile's lock until pcheck exits,
    // and while pcheck stops it still serves `events` and answers other requests with
    // "pcheck is shutting down" (`calls` is dropped first).
    tokio::spawn(control.serve(calls_tx, Arc::clone(&log)));
    let anchor = (Instant::now(), SystemTime::now());
    let mut slots = build_slots(pfile)?;
    let lb = Arc::new(crate::lb::Board::new(pfile, &log));
    let lb_listeners = crate::lb::bind_all(pfile)?;
    let (store, guard, reboots) = restore(pfile, &mut slots, &log);
    let ctx = Ctx {
        tx,
        log,
        source: chosen.source,
        poll_interval: opts.poll_interval,
        store,
        guard,
        reboots,
        pfile_path: pfile.path.display().to_string(),
        persist_due: false,
        metrics,
        lb,
        queue_wake,
        shutdown: sd,
        restart_budget: fleet.and_then(Fleet::restart_ask),
    };
    declare_metrics(&ctx, &slots, &ports);
    let agent = Agent {
        slots,
        ctx,
        kernel: Kernel {
            evidence: chosen.kernel,
            by_tgid: HashMap::new(),
            report: chosen.report,
        },
        ports,
        anchor,
        flush_bound: pfile
            .globals
            .shutdown_flush
            .unwrap_or(crate::pfile::DEFAULT_SHUTDOWN_FLUSH),
        lb_listeners: Some(lb_listeners),
    };
    Ok((
        agent,
        Inbox {
            rx,
            krx,
            calls,
            sigterm,
            sigint,
        },
    ))
}

/// SIGTERM and SIGINT, as streams the main loop waits on.
fn signals() -> Result<(Signal, Signal), AgentError> {
    let signal = |kind| tokio::signal::unix::signal(kind).map_err(AgentError::Signals);
    Ok((
        signal(SignalKind::terminate())?,
        signal(SignalKind::interrupt())?,
    ))
}

/// Events: metrics, webhooks and the ring padmin reads, before the first event.
fn start_reporting(
    pfile: &Pfile,
    log: &Arc<Logger>,
    fleet: Option<&Fleet>,
    sd: &Shutdown,
) -> Result<Option<Arc<Metrics>>, AgentError> {
    let metrics = match pfile.globals.metrics_listen {
        Some(addr) => {
            let listener = metrics::bind(addr)?;
            let m = Arc::new(Metrics::new());
            let allow = pfile.globals.metrics_allow.clone();
            sd.spawn(metrics::serve(
                listener,
                Arc::clone(&m),
                Arc::clone(log),
                allow,
            ));
            log.info(&format!(
                "metrics: serving Prometheus metrics on http://{addr}/metrics"
            ));
            Some(m)
        }
        None => None,
    };
    if let (Some(f), Some(m)) = (fleet, &metrics) {
        f.set_metrics(Arc::clone(m));
    }
    let hooks = webhook::start(
        &pfile.globals.webhooks,
        pfile.globals.webhook_format,
        pfile
            .globals
            .webhook_queue
            .unwrap_or(crate::pfile::DEFAULT_WEBHOOK_QUEUE),
        pfile.globals.webhook_header_file.as_deref(),
        log,
        metrics.clone(),
        sd,
    )?;
    for h in &hooks {
        log.info(&format!(
            "webhook {}: events are POSTed to {}",
            h.index, h.url
        ));
    }
    log.attach(Arc::new(Bus::new(
        hooks,
        metrics.clone(),
        log.hostname().to_string(),
    )));
    Ok(metrics)
}

/// Accept-queue evidence for every stall-check port: from the kernel program where
/// it serves the SYN path, else from sock_diag polling; and the shared look at the
/// listeners for kernel-evidence watchers. Returns the ports' statistics and their
/// wake-ups.
fn start_queue_evidence(
    pfile: &Pfile,
    chosen: &mut Chosen,
    tx: &mpsc::UnboundedSender<super::Msg>,
    sd: &Shutdown,
    log: &Logger,
) -> (BTreeMap<u16, PortStats>, QueueWake) {
    let ports: BTreeMap<u16, PortStats> = pfile
        .entries
        .iter()
        .filter_map(|e| e.stall.as_ref().map(|s| (s.port, PortStats::default())))
        .collect();
    let serves_syn = ebpf::serves_syn(chosen.report.as_ref());
    if let Some(k) = chosen.kernel.as_mut() {
        for port in ports.keys() {
            if let Err(e) = k.watch_port(*port) {
                log.warn(&format!("eBPF: cannot watch port {port}: {e}"));
            }
        }
    }
    if !ports.is_empty() && !serves_syn {
        log.warn(&format!(
            "accept-queue evidence for ports {:?} from sock_diag polling every second (the kernel program does not serve it)",
            ports.keys().collect::<Vec<_>>()
        ));
        let tx = tx.clone();
        let report =
            move |port, depth, limit| tx.send(super::Msg::QueueFull(port, depth, limit)).is_ok();
        spawn_queue_poller(ports.keys().copied().collect(), report, sd);
    }
    let queue_wake: QueueWake = Arc::new(
        ports
            .keys()
            .map(|p| (*p, tokio::sync::watch::channel(()).0))
            .collect(),
    );
    let kernel_ports: Vec<u16> = pfile
        .entries
        .iter()
        .filter_map(|e| e.stall.as_ref())
        .filter(|s| s.evidence == StallEvidence::Kernel)
        .map(|s| s.port)
        .collect();
    if !kernel_ports.is_empty() {
        let every = if serves_syn { LOOK_EBPF } else { LOOK };
        spawn_listener_look(kernel_ports, every, Arc::clone(&queue_wake), sd);
    }
    (ports, queue_wake)
}

/// The `pcheck started` line.
fn announce(
    pfile: &Pfile,
    source: DeathSource,
    control: &Control,
    log: &Logger,
    metrics: Option<&Metrics>,
) {
    log.event(
        Level::Info,
        &format!(
            "pcheck started: pfile= {} entries= {} evidence= {} control= {}",
            pfile.path.display(),
            pfile.entries.len(),
            source.name(),
            control.path().display()
        ),
        EventInfo::new(EventKind::PcheckStart).evidence(source.into()),
    );
    if let Some(m) = metrics {
        m.set_evidence(source.name());
    }
}

/// One slot per entry, its stall probe built once.
fn build_slots(pfile: &Pfile) -> Result<Vec<Slot>, AgentError> {
    let mut slots = Vec::with_capacity(pfile.entries.len());
    for cfg in &pfile.entries {
        let prober = match &cfg.stall {
            Some(sc) => Some(Arc::new(build_prober(sc).map_err(|source| {
                AgentError::Prober {
                    pent_id: cfg.pent_id,
                    block: sc.block_name.clone(),
                    source,
                }
            })?)),
            None => None,
        };
        slots.push(Slot {
            cfg: cfg.clone(),
            core: Entry::new(cfg),
            prober,
            stall_tasks: Vec::new(),
            service: None,
            last_service: None,
            watcher: None,
            lb_drain: false,
            held_kill: None,
        });
    }
    Ok(slots)
}

/// Persisted state: restart counts and the reboot count survive restarts and reboots.
fn restore(
    pfile: &Pfile,
    slots: &mut [Slot],
    log: &Logger,
) -> (Store, RebootGuard, Vec<state::RebootRecord>) {
    let store = Store::new(&pfile.globals.state_dir(), &pfile.path);
    let (saved, problem) = store.load(&pfile.path);
    // The reboots also come from the second record, should the state file be lost.
    let saved = store.with_recorded_reboots(saved);
    if let Some(p) = problem {
        log.error(&p);
    }
    for slot in slots.iter_mut() {
        if let Some(e) = saved.entry(slot.cfg.pent_id, &slot.core.pname) {
            slot.core.restart_count = e.restart_count;
            slot.core.last_verdict.clone_from(&e.last_verdict);
        }
    }
    let guard = RebootGuard::new(pfile.globals.reboot.clone(), saved.reboot_count);
    if guard.policy.enabled {
        log.info(&format!(
            "auto reboot on: after {} s of fatal fault, at most {} in a row (now {}); state {}",
            guard.policy.after.as_secs(),
            guard.policy.limit,
            guard.count,
            store.path().display()
        ));
    }
    (store, guard, saved.reboots)
}

fn declare_metrics(ctx: &Ctx, slots: &[Slot], ports: &BTreeMap<u16, PortStats>) {
    if let Some(m) = &ctx.metrics {
        m.set_reboots(ctx.guard.count);
        for s in slots {
            m.declare_entry(&Metrics::entry_labels(s.cfg.pent_id, &s.core.pname));
        }
        for port in ports.keys() {
            m.declare_port(*port);
        }
    }
}

impl Agent {
    /// Adopts what already runs and starts what does not. Some(exit status) when
    /// pcheck must end (a retry-over action).
    pub(super) async fn adopt_all(&mut self) -> Result<Option<u8>, AgentError> {
        for idx in 0..self.slots.len() {
            let cfg = &self.slots[idx].cfg;
            let owner =
                procfs::uid_of_user(cfg.owner_name()).map_err(|source| AgentError::Owner {
                    pent_id: cfg.pent_id,
                    source,
                })?;
            let found = procfs::find_bounded(&cfg.pname, cfg.pidfile.as_deref(), owner).await;
            let ev = match found {
                Some(st) => {
                    self.slots[idx].service = Some(ServiceId::of(&st, None));
                    Evidence::Running {
                        pid: st.pid,
                        adopted: true,
                    }
                }
                None => Evidence::NotRunning,
            };
            if let Some(code) = self.feed(idx, ev) {
                return Ok(Some(code));
            }
        }
        Ok(None)
    }

    /// After adoption: the state written, and the load balancers served. Listening
    /// once adopted processes are known up, a restarted pcheck never answers `down`
    /// for a healthy server.
    pub(super) fn go_live(&mut self) {
        self.persist();
        self.sync_lb();
        if let Some(listeners) = self.lb_listeners.take() {
            crate::lb::serve(listeners, &self.ctx.lb, &self.ctx.log);
        }
    }
}
