//! The agent: one tokio task owns every entry's decision state; senses and actors run
//! in their own tasks and report back through one channel. Evidence -> core -> actions.

mod dispatch;

use self::dispatch::{feed, kill_stalled};
use crate::act::{self, kill::ServiceId};
use crate::admin::view::{kernel_view, local_time, view};
use crate::admin::{server::Call, server::Control, PentView, Request, Response};
use crate::core::reboot::RebootGuard;
use crate::core::DeathKind;
use crate::core::Source;
use crate::core::{Action, Entry, EventKind, EventSource, Evidence, Level, ProcSts, Tag, WatchId};
use crate::fleet::Fleet;
use crate::pfile::{EvidenceMode, Pfile, ProcEntry, StallEvidence};
use crate::probe::schedule::build_prober;
use crate::probe::Prober;
use crate::report::events::{Bus, EventInfo};
use crate::report::metrics::{self, Metrics};
use crate::report::notify::Notifier;
use crate::report::{webhook, Logger};
use crate::sense::ebpf::{self, KernelEvent, OverflowPath};
use crate::sense::procfs;
use crate::sense::queue::{
    spawn_listener_look, spawn_queue_poller, PortStats, QueueWake, LOOK, LOOK_EBPF,
};
use crate::sense::source::{choose_mode, Mode};
use crate::shutdown::Shutdown;
use crate::state::{self, Store};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

pub struct Options {
    pub pfile: Pfile,
    /// Overrides the pfile's `evidence`.
    pub evidence: Option<EvidenceMode>,
    /// How often /proc is polled when it is the source of death evidence.
    pub poll_interval: Duration,
    /// Where the eBPF object is (default: [`ebpf::locate_object`]).
    pub bpf_object: Option<PathBuf>,
    /// Ring buffer or perf event array (default: whichever the kernel has).
    pub bpf_transport: ebpf::TransportChoice,
    pub log: Arc<Logger>,
}

/// Messages from the agent's helpers to its main task.
pub(crate) enum Msg {
    Evidence(usize, Evidence),
    Started(usize, act::restart::Started),
    /// sock_diag found a watched port's accept queue full: (port, depth, limit).
    QueueFull(u16, u32, u32),
}

pub(crate) struct Slot {
    pub(crate) cfg: ProcEntry,
    pub(crate) core: Entry,
    /// The stall check's probe, built once (TLS configuration included).
    pub(crate) prober: Option<Arc<Prober>>,
    /// Probe loop and kernel-evidence watcher of the current watch.
    pub(crate) stall_tasks: Vec<JoinHandle<()>>,
    /// The running instance, while watched.
    pub(crate) service: Option<ServiceId>,
    /// The last instance that ran: what is left of it is killed before a restart.
    pub(crate) last_service: Option<ServiceId>,
    pub(crate) watcher: Option<JoinHandle<()>>,
    /// `padmin -c drain -n ID` (until `-c ready`): the load balancer is told drain.
    pub(crate) lb_drain: bool,
    /// A stall kill waiting for the fleet's restart budget: (watch, pid).
    pub(crate) held_kill: Option<(WatchId, i32)>,
}

/// The event of one entry: the core's tag, plus the entry and its stall-check port.
pub(crate) fn entry_event(cfg: &ProcEntry, tag: Tag) -> EventInfo {
    EventInfo::from_tag(tag).entry(
        cfg.pent_id,
        &cfg.pname.display().to_string(),
        cfg.stall.as_ref().map(|s| s.port),
    )
}

/// Carries out a log action of an entry (None: not about an entry).
pub(crate) fn log_action(
    log: &Logger,
    level: Level,
    msg: &str,
    tag: Option<Tag>,
    cfg: Option<&ProcEntry>,
) {
    match (tag, cfg) {
        (Some(t), Some(c)) => log.event(level, msg, entry_event(c, t)),
        (Some(t), None) => log.event(level, msg, EventInfo::from_tag(t)),
        (None, _) => log.log(level, msg),
    }
}

/// Runs pcheck until shutdown; returns its exit status. Tells systemd (when it
/// started pcheck with Type=notify) READY once every entry is adopted or started,
/// WATCHDOG from the main loop, and STOPPING at the end.
pub async fn run(opts: Options) -> Result<u8, String> {
    let notifier = Notifier::from_env();
    let fleet = Fleet::start(&opts.pfile, &opts.log);
    let r = run_inner(opts, &notifier, fleet.as_ref()).await;
    if let Some(f) = fleet {
        f.stop().await;
    }
    notifier.stopping();
    r
}

async fn run_inner(
    opts: Options,
    notifier: &Notifier,
    fleet: Option<&Fleet>,
) -> Result<u8, String> {
    let log = Arc::clone(&opts.log);
    let pfile = opts.pfile;
    let sock_path = crate::admin::socket_path(&pfile.path, pfile.globals.control_socket.as_deref());
    let control = Control::bind(&sock_path)?;
    act::prepare(&log);
    let sd = Shutdown::new();
    // From the start: a SIGTERM during start-up waits for the main loop, which stops.
    let mut sigterm = signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut sigint = signal(tokio::signal::unix::SignalKind::interrupt())?;
    for w in &pfile.warnings {
        log.warn(&format!("warning: {w}"));
    }

    // Events: metrics, webhooks and the ring padmin reads, before the first event.
    let metrics = match pfile.globals.metrics_listen {
        Some(addr) => {
            let listener = metrics::bind(addr)?;
            let m = Arc::new(Metrics::new());
            let allow = pfile.globals.metrics_allow.clone();
            sd.spawn(metrics::serve(
                listener,
                Arc::clone(&m),
                Arc::clone(&log),
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
        &log,
        metrics.clone(),
        &sd,
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

    let (tx, mut rx) = mpsc::unbounded_channel::<Msg>();
    let (ktx, mut krx) = mpsc::unbounded_channel::<KernelEvent>();
    let wanted = opts.evidence.unwrap_or(pfile.globals.evidence);
    let (mode, mut kernel, load_report) = choose_mode(
        wanted,
        opts.bpf_object.as_deref(),
        opts.bpf_transport,
        ktx,
        &log,
    )?;

    // Accept-queue evidence for every stall-check port: from the kernel program where
    // it serves the SYN path, else from sock_diag polling.
    let mut ports: BTreeMap<u16, PortStats> = pfile
        .entries
        .iter()
        .filter_map(|e| e.stall.as_ref().map(|s| (s.port, PortStats::default())))
        .collect();
    let kernel_serves_syn = load_report
        .as_ref()
        .is_some_and(|r| r.serves(ebpf::EVIDENCE_OVERFLOW_SYN));
    if let Some(k) = kernel.as_mut() {
        for port in ports.keys() {
            if let Err(e) = k.watch_port(*port) {
                log.warn(&format!("eBPF: cannot watch port {port}: {e}"));
            }
        }
    }
    if !ports.is_empty() && !kernel_serves_syn {
        log.warn(&format!(
            "accept-queue evidence for ports {:?} from sock_diag polling every second (the kernel program does not serve it)",
            ports.keys().collect::<Vec<_>>()
        ));
        spawn_queue_poller(ports.keys().copied().collect(), tx.clone(), &sd);
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
        let every = if kernel_serves_syn { LOOK_EBPF } else { LOOK };
        spawn_listener_look(kernel_ports, every, Arc::clone(&queue_wake), &sd);
    }

    let (calls_tx, mut calls) = mpsc::channel::<Call>(16);
    log.event(
        Level::Info,
        &format!(
            "pcheck started: pfile= {} entries= {} evidence= {} control= {}",
            pfile.path.display(),
            pfile.entries.len(),
            mode.name(),
            control.path().display()
        ),
        EventInfo::new(EventKind::PcheckStart).evidence(mode.source()),
    );
    if let Some(m) = &metrics {
        m.set_evidence(mode.name());
    }
    // Not stopped with the other tasks: it holds the pfile's lock until pcheck exits,
    // and while pcheck stops it still serves `events` and answers other requests with
    // "pcheck is shutting down" (`calls` is dropped first).
    tokio::spawn(control.serve(calls_tx, Arc::clone(&log)));

    let anchor = (Instant::now(), SystemTime::now());
    let mut slots: Vec<Slot> = Vec::with_capacity(pfile.entries.len());
    for cfg in &pfile.entries {
        let prober = match &cfg.stall {
            Some(sc) => Some(Arc::new(build_prober(sc).map_err(|e| {
                format!(
                    "pent_id {}: the {} check cannot be set up: {e}",
                    cfg.pent_id, sc.block_name
                )
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
    let mut by_tgid: HashMap<i32, usize> = HashMap::new();
    let flush_bound = pfile
        .globals
        .shutdown_flush
        .unwrap_or(crate::pfile::DEFAULT_SHUTDOWN_FLUSH);
    let lb_board = Arc::new(crate::lb::Board::new(&pfile, &log));
    let lb_listeners = crate::lb::bind_all(&pfile)?;

    // Persisted state: restart counts and the reboot count survive restarts and reboots.
    let store = Store::new(&pfile.globals.state_dir(), &pfile.path);
    let (saved, problem) = store.load(&pfile.path);
    // The reboots also come from the second record, should the state file be lost.
    let saved = store.with_recorded_reboots(saved);
    if let Some(p) = problem {
        log.error(&p);
    }
    for slot in &mut slots {
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
    let mut ctx = Ctx {
        tx: tx.clone(),
        log: Arc::clone(&log),
        mode,
        poll_interval: opts.poll_interval,
        store,
        guard,
        reboots: saved.reboots,
        pfile_path: pfile.path.display().to_string(),
        persist_due: false,
        metrics,
        lb: Arc::clone(&lb_board),
        queue_wake,
        shutdown: sd,
        restart_budget: fleet.and_then(Fleet::restart_ask),
    };
    if let Some(m) = &ctx.metrics {
        m.set_reboots(ctx.guard.count);
        for s in &slots {
            m.declare_entry(&Metrics::entry_labels(s.cfg.pent_id, &s.core.pname));
        }
        for port in ports.keys() {
            m.declare_port(*port);
        }
    }

    // Adopt what already runs; start what does not.
    for idx in 0..slots.len() {
        let cfg = &slots[idx].cfg;
        let owner = procfs::uid_of_user(cfg.owner_name())
            .map_err(|e| format!("pent_id {}: owner: {e}", cfg.pent_id))?;
        let found =
            procfs::find_bounded(&cfg.pname, cfg.pidfile.as_deref(), owner, FIND_LIMIT).await;
        let ev = match found {
            Some(st) => {
                slots[idx].service = Some(ServiceId::of(&st, None));
                Evidence::Running {
                    pid: st.pid,
                    adopted: true,
                }
            }
            None => Evidence::NotRunning,
        };
        if let Some(code) = feed(&mut slots, idx, ev, &mut ctx, &mut kernel, &mut by_tgid) {
            drop(calls);
            stop(&mut ctx, &slots, flush_bound).await;
            return Ok(code);
        }
    }

    persist(&mut ctx, &slots);
    // Listen once adopted processes are known up: a restarted pcheck never answers
    // `down` for a healthy server.
    sync_lb(&ctx, &slots);
    crate::lb::serve(lb_listeners, &ctx.lb, &log);
    // READY once every entry has settled (running, or given up), so that units
    // ordered after pcheck find the servers up; at the latest after a minute.
    let started_at = Instant::now();
    let mut ready = false;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut watchdog =
        tokio::time::interval(notifier.watchdog_every.unwrap_or(Duration::from_secs(3600)));
    watchdog.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);

    let code = loop {
        if !ready
            && (slots
                .iter()
                .all(|s| matches!(s.core.proc_sts, ProcSts::Avail | ProcSts::Unavail))
                || started_at.elapsed() >= Duration::from_secs(60))
        {
            ready = true;
            notifier.ready(&format!("watching {} entries", slots.len()));
        }
        tokio::select! {
            _ = watchdog.tick(), if ready && notifier.watchdog_every.is_some() => {
                // From the main loop: a hung loop stops the pings and systemd acts.
                notifier.watchdog();
            }
            _ = tick.tick(), if ctx.guard.policy.enabled || !ready || fleet.is_some() => {
                let now = Instant::now();
                let mut worst = slots
                    .iter()
                    .filter(|s| s.core.monitor_on)
                    .filter_map(|s| s.core.down_for(now).map(|d| (s.cfg.pent_id, d)))
                    .max_by_key(|(_, d)| *d);
                if let Some(f) = fleet {
                    // The fleet's health, and its reboot slot before a reboot.
                    let health = slots.iter().map(|s| {
                        (s.cfg.pent_id, s.core.monitor_on && s.core.down_for(now).is_some(), s.core.proc_sts)
                    });
                    let want_restart = slots.iter().any(|s| s.held_kill.is_some());
                    worst = f.gate(&ctx.guard, health, worst, want_restart);
                    if want_restart && f.stall_kill_may() {
                        for (idx, s) in slots.iter_mut().enumerate() {
                            if let Some((watch, pid)) = s.held_kill.take() {
                                kill_stalled(idx, s, watch, pid, &ctx);
                            }
                        }
                    }
                }
                if !ctx.guard.policy.enabled {
                    continue;
                }
                for a in ctx.guard.on_tick(now, worst) {
                    match a {
                        Action::Log(level, msg, tag) => log_action(&log, level, &msg, tag, None),
                        Action::Persist => ctx.persist_due = true,
                        Action::Reboot { count } => {
                            ctx.reboots.push(state::RebootRecord {
                                at: local_time(SystemTime::now()),
                                boot_id: state::boot_id(),
                                count,
                            });
                            let keep = ctx.reboots.len().saturating_sub(20);
                            ctx.reboots.drain(..keep);
                            if persist(&mut ctx, &slots) {
                                act::reboot::spawn(ctx.guard.policy.command.clone(), Arc::clone(&log));
                            } else {
                                log.event(
                                    Level::Error,
                                    &format!(
                                        "Auto Reboot cancelled: the reboot count could not be written to {}; without a durable count reboots could loop: the host stays up",
                                        ctx.store.path().display()
                                    ),
                                    EventInfo::new(EventKind::RebootThreshold),
                                );
                                // The fleet's slot was taken before the count: it goes back.
                                if let Some(f) = fleet {
                                    f.give_back();
                                }
                            }
                        }
                        _ => {}
                    }
                }
                if ctx.persist_due {
                    persist(&mut ctx, &slots);
                }
                sync_metrics(&ctx, &slots);
            }
            Some(msg) = rx.recv() => {
                let (idx, ev) = match msg {
                    Msg::Evidence(idx, ev) => (idx, ev),
                    Msg::QueueFull(port, depth, limit) => {
                        if let Some(st) = ports.get_mut(&port) {
                            st.full_polls += 1;
                            if let Some(m) = &ctx.metrics {
                                m.full_poll(port);
                            }
                            if st.record(depth, limit, "sock_diag") {
                                log.event(
                                    Level::Warning,
                                    &format!("Accept Queue Full: port= {port} depth= {depth}/{limit} (evidence: sock_diag)"),
                                    EventInfo::new(EventKind::Overflow).port(port).evidence(EventSource::SockDiag),
                                );
                            }
                        }
                        continue;
                    }
                    Msg::Started(idx, started) => {
                        let st = started.stat;
                        if let Some(slot) = slots.get_mut(idx) {
                            slot.service = Some(ServiceId::of(&st, Some(started.script_sid)));
                        }
                        (idx, Evidence::Running { pid: st.pid, adopted: false })
                    }
                };
                let code = feed(&mut slots, idx, ev, &mut ctx, &mut kernel, &mut by_tgid);
                sync_metrics(&ctx, &slots);
                if let Some(code) = code {
                    break code;
                }
            }
            Some(kev) = krx.recv() => {
                if let KernelEvent::Overflow { port, path, backlog, max_backlog, .. } = kev {
                    if let Some(w) = ctx.queue_wake.get(&port) {
                        w.send_replace(());
                    }
                    if let Some(st) = ports.get_mut(&port) {
                        let which = match path {
                            OverflowPath::Syn => { st.syn += 1; "syn" }
                            OverflowPath::FinalAck => { st.final_ack += 1; "final ack" }
                        };
                        if let Some(m) = &ctx.metrics {
                            m.overflow(port, which);
                        }
                        if st.record(backlog, max_backlog, "ebpf") {
                            log.event(
                                Level::Warning,
                                &format!("Accept Queue Overflow: port= {port} depth= {backlog}/{max_backlog} (evidence: ebpf, {which} path)"),
                                EventInfo::new(EventKind::Overflow).port(port).evidence(EventSource::Ebpf),
                            );
                        }
                    }
                }
                if let KernelEvent::Exit { tgid, exit_code, .. } = kev {
                    let Ok(pid) = i32::try_from(tgid) else { continue };
                    let Some(&idx) = by_tgid.get(&pid) else { continue };
                    if slots[idx].core.pid != Some(pid) { continue }
                    let Some(watch) = slots[idx].core.watch_id() else { continue };
                    let sig = (exit_code & 0x7f) as i32;
                    let how = if sig != 0 { DeathKind::Signaled(sig) } else { DeathKind::Exited(((exit_code >> 8) & 0xff) as i32) };
                    let ev = Evidence::Died { watch, pid, how, source: Source::Ebpf };
                    let code = feed(&mut slots, idx, ev, &mut ctx, &mut kernel, &mut by_tgid);
                    sync_metrics(&ctx, &slots);
                    if let Some(code) = code {
                        break code;
                    }
                }
            }
            Some(Call { req, reply, written }) = calls.recv() => {
                match req {
                    Request::ShowPent => {
                        let entries = slots.iter().enumerate().map(|(i, s)| PentView { lb_state: ctx.lb.state_of(i), ..view(s, mode, anchor) }).collect();
                        let _ = reply.send(Response { ok: true, entries, ..Response::default() });
                    }
                    Request::Events { .. } => {
                        // Served by the control socket's own task, from the event bus.
                        let _ = reply.send(Response::error("events are served by the control socket"));
                    }
                    Request::ShowKernel => {
                        let kv = kernel_view(mode, load_report.as_ref(), &ports, kernel_serves_syn);
                        let _ = reply.send(Response { ok: true, kernel: Some(kv), ..Response::default() });
                    }
                    Request::ShowLb => {
                        let lb = ctx.lb.views(None, Instant::now());
                        let _ = reply.send(Response { ok: true, lb, ..Response::default() });
                    }
                    Request::Drain { pent_id } | Request::Ready { pent_id } => {
                        let drain = matches!(req, Request::Drain { .. });
                        let Some(slot) = slots.iter_mut().find(|s| s.cfg.pent_id == pent_id) else {
                            let _ = reply.send(Response::error(format!("no process entry with pent_id {pent_id} (this pfile has {})", slots.len())));
                            continue;
                        };
                        slot.lb_drain = drain;
                        log.info(&format!("load balancer drain of pent_id= {pent_id} {} by padmin", if drain { "set" } else { "undone" }));
                        sync_metrics(&ctx, &slots);
                        let _ = reply.send(Response::message(format!("pent_id {pent_id}: the load balancer is told {}", if drain { "drain" } else { "ready (when healthy)" })));
                    }
                    Request::ShowFleet | Request::FleetHold { .. } | Request::FleetResume | Request::FleetRelease { .. } => {
                        crate::fleet::serve(fleet, req, reply);
                    }
                    Request::Shutdown => {
                        log.event(Level::Info, "pcheck shutdown: requested by padmin", EventInfo::new(EventKind::PcheckStop));
                        let _ = reply.send(Response::message("pcheck shut down"));
                        let _ = tokio::time::timeout(Duration::from_secs(1), written).await;
                        break 0;
                    }
                    Request::Stop { pent_id } | Request::Start { pent_id } => {
                        let on = matches!(req, Request::Start { .. });
                        let Some(idx) = slots.iter().position(|s| s.cfg.pent_id == pent_id) else {
                            let _ = reply.send(Response::error(format!("no process entry with pent_id {pent_id} (this pfile has {})", slots.len())));
                            continue;
                        };
                        let ev = if on { Evidence::MonitorOn } else { Evidence::MonitorOff };
                        let code = feed(&mut slots, idx, ev, &mut ctx, &mut kernel, &mut by_tgid);
                        sync_metrics(&ctx, &slots);
                        let _ = reply.send(Response::message(format!("monitor_sts of pent_id {pent_id} is {}", if on { "on" } else { "off" })));
                        if let Some(code) = code {
                            break code;
                        }
                    }
                }
            }
            _ = sigterm.recv() => {
                log.event(Level::Info, "pcheck shutdown: SIGTERM", EventInfo::new(EventKind::PcheckStop));
                break 0;
            }
            _ = sigint.recv() => {
                log.event(Level::Info, "pcheck shutdown: SIGINT", EventInfo::new(EventKind::PcheckStop));
                break 0;
            }
        }
    };
    drop(calls);
    stop(&mut ctx, &slots, flush_bound).await;
    Ok(code)
}

/// The one way out, after the `pcheck_stop` event: running servers are left `up
/// ready` for load balancers; no new work; a restart script in
/// flight ends or is killed at its `restart_timeout`; the state file is written (before
/// the flush, so a receiver that hangs cannot lose it); each webhook queue is sent
/// for at most `flush`. The caller then says STOPPING to systemd.
async fn stop(ctx: &mut Ctx, slots: &[Slot], flush: Duration) {
    lb_leave_up(ctx, slots).await;
    ctx.shutdown.begin();
    ctx.shutdown.restarts_done().await;
    persist(ctx, slots);
    let left = ctx.shutdown.flush(flush).await;
    if left > 0 {
        ctx.log.warn(&format!(
            "webhook: {left} queue{} not sent within shutdown_flush ({} ms); the events left are dropped",
            if left == 1 { " was" } else { "s were" },
            flush.as_millis()
        ));
    }
}

fn signal(kind: tokio::signal::unix::SignalKind) -> Result<tokio::signal::unix::Signal, String> {
    tokio::signal::unix::signal(kind).map_err(|e| format!("cannot handle signals: {e}"))
}

pub(crate) struct Ctx {
    pub(crate) tx: mpsc::UnboundedSender<Msg>,
    pub(crate) log: Arc<Logger>,
    pub(crate) mode: Mode,
    pub(crate) poll_interval: Duration,
    pub(crate) store: Store,
    pub(crate) guard: RebootGuard,
    pub(crate) reboots: Vec<state::RebootRecord>,
    pub(crate) pfile_path: String,
    /// Something persisted changed: write the state file.
    pub(crate) persist_due: bool,
    pub(crate) metrics: Option<Arc<Metrics>>,
    /// What each entry's load balancer is told.
    pub(crate) lb: Arc<crate::lb::Board>,
    /// Per stall-check port: wakes its kernel-evidence watchers when the queue may be
    /// full (an eBPF overflow event, or the shared look at the listeners).
    pub(crate) queue_wake: QueueWake,
    /// Handed to every task spawned here; see [`stop`].
    pub(crate) shutdown: Shutdown,
    /// The fleet has a restart budget: stall kills wait for its slot (asked for at
    /// once, killed on the tick once granted).
    pub(crate) restart_budget: Option<crate::fleet::RestartAsk>,
}

/// Metrics of every entry from its decision state (cheap: a few atomic stores).
fn sync_metrics(ctx: &Ctx, slots: &[Slot]) {
    sync_lb(ctx, slots);
    let Some(m) = &ctx.metrics else { return };
    m.set_reboots(ctx.guard.count);
    for s in slots {
        let stall = s.core.stall.as_ref().map(|sw| sw.sts.to_string());
        m.set_entry(
            &Metrics::entry_labels(s.cfg.pent_id, &s.core.pname),
            &s.core.proc_sts.to_string(),
            stall.as_deref(),
            s.core.restart_count,
        );
    }
}

/// What the load balancer is told of every entry, from its decision state.
fn sync_lb(ctx: &Ctx, slots: &[Slot]) {
    let entries = slots.iter().map(|s| (&s.cfg, &s.core, s.lb_drain));
    crate::lb::sync(&ctx.lb, &ctx.log, ctx.metrics.as_deref(), entries);
}

/// On a clean stop: running servers are left `up ready` (see [`crate::lb::leave_up`]).
async fn lb_leave_up(ctx: &Ctx, slots: &[Slot]) {
    let entries = slots.iter().map(|s| (&s.cfg, &s.core));
    crate::lb::leave_up(&ctx.lb, &ctx.log, ctx.metrics.as_deref(), entries).await;
}

/// Writes the state file. A failure (disk full, read-only file system) is logged
/// once, and monitoring goes on; the next success is logged too. Returns whether the
/// state is on disk (fsync'ed).
pub(crate) fn persist(ctx: &mut Ctx, slots: &[Slot]) -> bool {
    ctx.persist_due = false;
    let st = state::State {
        version: state::VERSION,
        pfile: ctx.pfile_path.clone(),
        reboot_count: ctx.guard.count,
        reboots: ctx.reboots.clone(),
        entries: slots
            .iter()
            .map(|s| state::EntryState {
                pent_id: s.cfg.pent_id,
                pname: s.core.pname.clone(),
                restart_count: s.core.restart_count,
                last_verdict: s.core.last_verdict.clone(),
            })
            .collect(),
    };
    match ctx.store.save(&st) {
        Ok(()) if ctx.store.failing => {
            ctx.store.failing = false;
            ctx.log.info(&format!(
                "state file {} written again",
                ctx.store.path().display()
            ));
            true
        }
        Ok(()) => true,
        Err(e) if !ctx.store.failing => {
            ctx.store.failing = true;
            ctx.log.error(&format!(
                "cannot write state file {}: {e}; monitoring continues (counts are kept in memory)",
                ctx.store.path().display()
            ));
            false
        }
        Err(_) => false,
    }
}

/// The longest pcheck waits for a pidfile to be read (a hung file system).
pub(crate) const FIND_LIMIT: Duration = Duration::from_secs(2);
