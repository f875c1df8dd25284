//! The agent: one tokio task owns every entry's decision state; senses and actors run
//! in their own tasks and report back through one channel. Evidence -> core -> actions.

use crate::act::{self, kill::ServiceId};
use crate::admin::{
    server::Call, server::Control, KernelView, PentView, PortView, Request, Response,
};
use crate::core::reboot::RebootGuard;
use crate::core::{
    Action, DeathKind, Entry, EventKind, EventSource, Evidence, Level, ProcSts, Source, Tag,
    WatchId,
};
use crate::fleet::Fleet;
use crate::pfile::{
    EvidenceMode, Pfile, ProcEntry, StallCheck, StallEvidence, StallKind, TlsVerifyCfg,
};
use crate::probe::{self, Prober};
use crate::report::events::{Bus, EventInfo};
use crate::report::metrics::{self, Metrics};
use crate::report::notify::Notifier;
use crate::report::{format_local, webhook, Logger};
use crate::sense::ebpf::{self, KernelEvent, KernelEvidence, LoadReport, OverflowPath};
use crate::sense::pidfd::{self, PidFd};
use crate::sense::procfs::{self, Liveness};
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
enum Msg {
    Evidence(usize, Evidence),
    Started(usize, act::restart::Started),
    /// sock_diag found a watched port's accept queue full: (port, depth, limit).
    QueueFull(u16, u32, u32),
}

/// Accept-queue evidence gathered for one watched port.
#[derive(Clone, Debug, Default)]
struct PortStats {
    syn: u64,
    final_ack: u64,
    full_polls: u64,
    backlog: u32,
    max_backlog: u32,
    last: Option<SystemTime>,
    last_logged: Option<Instant>,
    source: &'static str,
}

impl PortStats {
    /// Records one piece of overflow evidence; returns true when it should be logged
    /// (at most once per port every 10 s, so a storm cannot flood syslog).
    fn record(&mut self, backlog: u32, max_backlog: u32, source: &'static str) -> bool {
        self.backlog = backlog;
        self.max_backlog = max_backlog;
        self.last = Some(SystemTime::now());
        self.source = source;
        let now = Instant::now();
        let log = self
            .last_logged
            .is_none_or(|t| now.saturating_duration_since(t) >= Duration::from_secs(10));
        if log {
            self.last_logged = Some(now);
        }
        log
    }
}

struct Slot {
    cfg: ProcEntry,
    core: Entry,
    /// The stall check's probe, built once (TLS configuration included).
    prober: Option<Arc<Prober>>,
    /// Probe loop and kernel-evidence watcher of the current watch.
    stall_tasks: Vec<JoinHandle<()>>,
    /// The running instance, while watched.
    service: Option<ServiceId>,
    /// The last instance that ran: what is left of it is killed before a restart.
    last_service: Option<ServiceId>,
    watcher: Option<JoinHandle<()>>,
    /// `padmin -c drain -n ID` (until `-c ready`): the load balancer is told drain.
    lb_drain: bool,
    /// A stall kill waiting for the fleet's restart budget: (watch, pid).
    held_kill: Option<(WatchId, i32)>,
}

/// The death-evidence source actually in use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Ebpf,
    Pidfd,
    Procfs,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Ebpf => "ebpf",
            Mode::Pidfd => "pidfd",
            Mode::Procfs => "procfs",
        }
    }

    fn source(self) -> EventSource {
        match self {
            Mode::Ebpf => EventSource::Ebpf,
            Mode::Pidfd => EventSource::Pidfd,
            Mode::Procfs => EventSource::Procfs,
        }
    }
}

/// The event of one entry: the core's tag, plus the entry and its stall-check port.
fn entry_event(cfg: &ProcEntry, tag: Tag) -> EventInfo {
    EventInfo::from_tag(tag).entry(
        cfg.pent_id,
        &cfg.pname.display().to_string(),
        cfg.stall.as_ref().map(|s| s.port),
    )
}

/// Carries out a log action of an entry (None: not about an entry).
fn log_action(log: &Logger, level: Level, msg: &str, tag: Option<Tag>, cfg: Option<&ProcEntry>) {
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

struct Ctx {
    tx: mpsc::UnboundedSender<Msg>,
    log: Arc<Logger>,
    mode: Mode,
    poll_interval: Duration,
    store: Store,
    guard: RebootGuard,
    reboots: Vec<state::RebootRecord>,
    pfile_path: String,
    /// Something persisted changed: write the state file.
    persist_due: bool,
    metrics: Option<Arc<Metrics>>,
    /// What each entry's load balancer is told.
    lb: Arc<crate::lb::Board>,
    /// Per stall-check port: wakes its kernel-evidence watchers when the queue may be
    /// full (an eBPF overflow event, or the shared look at the listeners).
    queue_wake: QueueWake,
    /// Handed to every task spawned here; see [`stop`].
    shutdown: Shutdown,
    /// The fleet has a restart budget: stall kills wait for its slot (asked for at
    /// once, killed on the tick once granted).
    restart_budget: Option<crate::fleet::RestartAsk>,
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
fn persist(ctx: &mut Ctx, slots: &[Slot]) -> bool {
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

/// Picks the source of death evidence, logging one line for each one that is lost.
fn choose_mode(
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

/// Feeds one piece of evidence to one entry and carries out what it decides.
/// Returns Some(exit status) when pcheck must end.
fn feed(
    slots: &mut [Slot],
    idx: usize,
    ev: Evidence,
    ctx: &mut Ctx,
    kernel: &mut Option<KernelEvidence>,
    by_tgid: &mut HashMap<i32, usize>,
) -> Option<u8> {
    let slot = slots.get_mut(idx)?;
    let actions = slot.core.on(ev, Instant::now());
    let mut exit = None;
    for a in actions {
        match a {
            Action::Log(level, msg, tag) => log_action(&ctx.log, level, &msg, tag, Some(&slot.cfg)),
            Action::Watch { watch, pid } => {
                let Some(service) = slot.service else {
                    continue;
                };
                if let Some(k) = kernel.as_mut() {
                    if let Err(e) = k.watch_pid(pid as u32) {
                        ctx.log.warn(&format!("eBPF: cannot watch pid {pid}: {e}"));
                    }
                    by_tgid.insert(pid, idx);
                }
                slot.watcher = Some(spawn_watcher(idx, watch, service, ctx));
            }
            Action::StallWatch { watch, pid } => {
                let (Some(sc), Some(prober)) = (slot.cfg.stall.as_ref(), slot.prober.as_ref())
                else {
                    continue;
                };
                let observe = ctx
                    .metrics
                    .clone()
                    .map(|m| (m, Metrics::entry_labels(slot.cfg.pent_id, &slot.core.pname)));
                slot.stall_tasks.push(spawn_probe_loop(
                    idx,
                    watch,
                    sc.interval,
                    Arc::clone(prober),
                    sc.status_classes.clone(),
                    observe,
                    ctx,
                ));
                if sc.evidence == StallEvidence::Kernel {
                    slot.stall_tasks.push(spawn_queue_watch(
                        idx,
                        watch,
                        (sc.port, pid),
                        sc.kernel_window,
                        ctx,
                    ));
                }
            }
            Action::StallStop { .. } => {
                for h in slot.stall_tasks.drain(..) {
                    h.abort();
                }
            }
            Action::KillStalled { watch, pid } => {
                if let Some(ask) = &ctx.restart_budget {
                    // The fleet's restart budget: killed once a slot is granted.
                    slot.held_kill = Some((watch, pid));
                    ask.now(slot.cfg.pent_id);
                } else {
                    kill_stalled(idx, slot, watch, pid, ctx);
                }
            }
            Action::Unwatch { .. } => {
                // Gone by itself: a held stall kill has nothing left to kill.
                slot.held_kill = None;
                for h in slot.stall_tasks.drain(..) {
                    h.abort();
                }
                if let Some(h) = slot.watcher.take() {
                    h.abort();
                }
                if let Some(s) = slot.service.take() {
                    if let Some(k) = kernel.as_mut() {
                        let _ = k.unwatch_pid(s.pid as u32);
                        by_tgid.remove(&s.pid);
                    }
                    slot.last_service = Some(s);
                }
            }
            Action::Restart {
                attempt,
                of,
                delay,
                kill_remnants,
            } => {
                let remnants = if kill_remnants {
                    slot.last_service
                } else {
                    None
                };
                spawn_restart(idx, &slot.cfg, attempt, of, delay, remnants, ctx);
            }
            Action::RetryOver(_) | Action::Reboot { .. } => {}
            Action::Persist => ctx.persist_due = true,
            Action::Exit(code) => exit = Some(code),
        }
    }
    if ctx.persist_due {
        persist(ctx, slots);
    }
    if let Some(code) = exit {
        ctx.log.event(
            Level::Info,
            &format!("pcheck shutdown: retry-over action, exit status {code}"),
            EventInfo::new(EventKind::PcheckStop),
        );
    }
    exit
}

fn spawn_watcher(idx: usize, watch: WatchId, service: ServiceId, ctx: &Ctx) -> JoinHandle<()> {
    let tx = ctx.tx.clone();
    let log = Arc::clone(&ctx.log);
    let mode = ctx.mode;
    let poll = ctx.poll_interval;
    let pid = service.pid;
    let died = move |how: DeathKind, source: Source| {
        let _ = tx.send(Msg::Evidence(
            idx,
            Evidence::Died {
                watch,
                pid,
                how,
                source,
            },
        ));
    };
    // Opened now, before the caller logs that the process is watched.
    let pidfd = (mode != Mode::Procfs).then(|| PidFd::open(pid));
    // With eBPF, the kernel's exit event is the evidence and normally arrives first;
    // what the pidfd sees is the backstop, reported only if the kernel stays silent
    // (a later report about the same watch is ignored by the core).
    let backstop = move || async move {
        if mode == Mode::Ebpf {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    ctx.shutdown.spawn(async move {
        if let Some(opened) = pidfd {
            match opened {
                Ok(fd) => {
                    // The pidfd now pins this process; make sure it is the one we found
                    // (the pid could have been recycled between finding and opening).
                    let early = match procfs::alive(pid, service.start_time) {
                        Liveness::Alive => None,
                        Liveness::Zombie => Some(DeathKind::Zombie),
                        Liveness::Gone => Some(DeathKind::Vanished),
                    };
                    if let Some(how) = early {
                        backstop().await;
                        return died(how, Source::Pidfd);
                    }
                    if fd.exited().await.is_ok() {
                        backstop().await;
                        let how = match procfs::alive(pid, service.start_time) {
                            Liveness::Zombie => DeathKind::Zombie,
                            _ => DeathKind::Vanished,
                        };
                        return died(how, Source::Pidfd);
                    }
                    log.event(
                        Level::Warning,
                        &format!("pidfd of pid {pid} failed; polling /proc instead"),
                        EventInfo::new(EventKind::EvidenceMode)
                            .pid(pid)
                            .evidence(EventSource::Procfs),
                    );
                }
                Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {
                    backstop().await;
                    return died(DeathKind::Vanished, Source::Pidfd);
                }
                Err(e) => log.event(
                    Level::Warning,
                    &format!("pidfd_open({pid}): {e}; polling /proc instead"),
                    EventInfo::new(EventKind::EvidenceMode)
                        .pid(pid)
                        .evidence(EventSource::Procfs),
                ),
            }
        }
        let mut tick = tokio::time::interval(poll);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match procfs::alive(pid, service.start_time) {
                Liveness::Alive => {}
                Liveness::Zombie => return died(DeathKind::Zombie, Source::Procfs),
                Liveness::Gone => return died(DeathKind::Vanished, Source::Procfs),
            }
        }
    })
}

fn spawn_restart(
    idx: usize,
    cfg: &ProcEntry,
    attempt: u32,
    of: u32,
    delay: Duration,
    remnants: Option<ServiceId>,
    ctx: &Ctx,
) {
    let tx = ctx.tx.clone();
    let log = Arc::clone(&ctx.log);
    let cfg = cfg.clone();
    let sd = ctx.shutdown.clone();
    ctx.shutdown.spawn_restart(async move {
        // Stopping: a restart still waiting for its delay is not started.
        if !delay.is_zero() {
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = sd.stopping() => return,
            }
        }
        if let Some(id) = remnants {
            let (killed, survivors) = act::kill::kill_service(&id, cfg.settings.kill_wait).await;
            for pid in &killed {
                log.event(
                    Level::Info,
                    &format!(
                        "Killed remaining process of pent_id= {}: pid= {pid}",
                        cfg.pent_id
                    ),
                    entry_event(&cfg, Tag::new(EventKind::Kill).pid(*pid)),
                );
            }
            if !survivors.is_empty() {
                log.error(&format!(
                    "pent_id= {}: processes {survivors:?} survived SIGKILL for {} ms",
                    cfg.pent_id,
                    cfg.settings.kill_wait.as_millis()
                ));
            }
        }
        if let Some(port) = cfg.stall.as_ref().map(|s| s.port) {
            wait_port_free(port, cfg.settings.kill_wait, &log, cfg.pent_id).await;
        }
        // A dead master may stay a zombie for a while (its parent, often pid 1, reaps
        // it late); a start script that checks its pidfile with kill(pid, 0) would
        // think it still runs ("httpd (pid N) already running") and start nothing.
        if let (Some(pf), Some(id)) = (cfg.pidfile.as_deref(), remnants) {
            if procfs::read_pidfile_bounded(pf, FIND_LIMIT).await == Some(id.pid)
                && procfs::alive(id.pid, id.start_time) != Liveness::Alive
                && std::fs::remove_file(pf).is_ok()
            {
                log.info(&format!(
                    "pent_id= {}: removed stale pidfile {} (pid {} is dead)",
                    cfg.pent_id,
                    pf.display(),
                    id.pid
                ));
            }
        }
        log.event(
            Level::Info,
            &format!(
                "Restart Process: pname= {} pent_id= {} attempt {attempt}/{of}: {}",
                cfg.pname.display(),
                cfg.pent_id,
                cfg.restart_script.display()
            ),
            entry_event(&cfg, Tag::new(EventKind::RestartAttempt)),
        );
        let owner = match procfs::uid_of_user(cfg.owner_name()) {
            Ok(uid) => uid,
            Err(reason) => {
                let _ = tx.send(Msg::Evidence(idx, Evidence::StartFailed { reason }));
                return;
            }
        };
        let script = act::restart::Script {
            owner,
            path: &cfg.restart_script,
            pname: &cfg.pname,
            pidfile: cfg.pidfile.as_deref(),
            user: cfg.user.as_deref(),
            pent_id: cfg.pent_id,
            timeout: cfg.settings.restart_timeout,
            start_wait: cfg.settings.start_wait,
        };
        if sd.is_stopping() {
            return;
        }
        let msg = match act::restart::run(&script, &log).await {
            Ok(started) => Msg::Started(idx, started),
            Err(e) => Msg::Evidence(
                idx,
                Evidence::StartFailed {
                    reason: e.to_string(),
                },
            ),
        };
        let _ = tx.send(msg);
    });
}

/// Before a restart, the watched port should have no listener left (a surviving
/// worker holding it makes every start fail with "Address already in use").
async fn wait_port_free(port: u16, wait: Duration, log: &Logger, pent_id: u32) {
    let deadline = Instant::now() + wait;
    while procfs::listeners_on(port) > 0 {
        if Instant::now() >= deadline {
            log.warn(&format!(
                "pent_id= {pent_id}: port {port} still has a listener after {} ms; restarting anyway",
                wait.as_millis()
            ));
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn build_prober(sc: &StallCheck) -> Result<Prober, probe::ProbeError> {
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
fn spawn_probe_loop(
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

/// The longest pcheck waits for a pidfile to be read (a hung file system).
const FIND_LIMIT: Duration = Duration::from_secs(2);

/// How often the listeners are looked at for kernel-evidence watchers.
const LOOK: Duration = Duration::from_millis(250);
/// The same when the eBPF program reports the overflows of the watched ports (SYN
/// path; with the sk_data_ready tracepoint also the moment a completed handshake
/// makes the queue full, with the tcp_conn_request kprobe at the next SYN) and wakes their
/// watchers at once: the look is then only a safety net for a lost event. A dump walks
/// the kernel's whole listener hash table (cold, ~0.2 ms), so it is kept rare.
const LOOK_EBPF: Duration = Duration::from_secs(5);
type QueueWake = Arc<HashMap<u16, tokio::sync::watch::Sender<()>>>;

/// One sock_diag dump of every TCP listener every `every`, for all kernel-evidence
/// watchers together: the watcher of a port whose queue is full is woken. The idle
/// cost does not grow with the number of watched ports (one dump per family per
/// look, and no watcher wakes while its queue is not full).
fn spawn_listener_look(ports: Vec<u16>, every: Duration, wake: QueueWake, sd: &Shutdown) {
    sd.spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Ok(all) = crate::sense::sockdiag::listeners() else {
                continue;
            };
            for l in all.iter().filter(|l| l.depth > l.limit) {
                if ports.contains(&l.port) {
                    if let Some(w) = wake.get(&l.port) {
                        w.send_replace(());
                    }
                }
            }
        }
    });
}

/// Kernel evidence for one watch: `sense::progress` samples the port while there are
/// signs of waiting work; a window with work waiting and no progress by the server
/// is reported to the core, which judges (`core::progress`).
fn spawn_queue_watch(
    idx: usize,
    watch: WatchId,
    (port, pid): (u16, i32),
    window: Duration,
    ctx: &Ctx,
) -> JoinHandle<()> {
    let tx = ctx.tx.clone();
    let log = Arc::clone(&ctx.log);
    let woken = ctx.queue_wake.get(&port).map(|w| w.subscribe());
    ctx.shutdown.spawn(async move {
        let Some(woken) = woken else { return };
        crate::sense::progress::sample_port(port, pid, window, woken, |out| match out {
            crate::sense::progress::Outcome::Stuck(figures) => tx
                .send(Msg::Evidence(idx, Evidence::NoProgress { watch, figures }))
                .is_ok(),
            crate::sense::progress::Outcome::Suspected(on) => tx
                .send(Msg::Evidence(idx, Evidence::ProgressSuspect { watch, on }))
                .is_ok(),
            crate::sense::progress::Outcome::Withheld(figures, why) => {
                log.warn(&format!(
                    "kernel evidence does not judge pid= {pid} port= {port}: {figures}; {why}"
                ));
                true
            }
        })
        .await;
    })
}

/// The kill after a stall verdict; its result goes back to the entry's decision state.
fn kill_stalled(idx: usize, slot: &Slot, watch: WatchId, pid: i32, ctx: &Ctx) {
    let start_time = slot.service.map(|s| s.start_time);
    let result = kill_exact(pid, start_time);
    let _ = ctx.tx.send(Msg::Evidence(
        idx,
        Evidence::KillResult { watch, pid, result },
    ));
}

/// SIGKILLs exactly the process that was watched: through a pidfd opened now and
/// checked against the recorded start time, so a recycled pid is never hit.
fn kill_exact(pid: i32, start_time: Option<u64>) -> Result<(), String> {
    let check = |st: Option<u64>| match st {
        Some(t) if procfs::alive(pid, t) == Liveness::Gone => {
            Err(format!("pid {pid} is no longer the watched process"))
        }
        _ => Ok(()),
    };
    match PidFd::open(pid) {
        Ok(fd) => {
            check(start_time)?;
            fd.send_signal(libc::SIGKILL).map_err(|e| e.to_string())
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            check(start_time)?;
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            )
            .map_err(|e| e.to_string())
        }
        Err(e) => Err(e.to_string()),
    }
}

/// Polls sock_diag once a second for the watched ports; reports full queues.
fn spawn_queue_poller(ports: Vec<u16>, tx: mpsc::UnboundedSender<Msg>, sd: &Shutdown) {
    sd.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Ok(all) = crate::sense::sockdiag::listeners() else {
                continue;
            };
            for port in &ports {
                if let Some(l) = all
                    .iter()
                    .filter(|l| l.port == *port)
                    .max_by_key(|l| l.depth)
                {
                    // The kernel's own test (sk_acceptq_is_full): depth > limit.
                    if l.depth > l.limit
                        && tx.send(Msg::QueueFull(*port, l.depth, l.limit)).is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
}

fn local_time(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_local(secs, "%Y/%m/%d %H:%M:%S")
}

fn kernel_view(
    mode: Mode,
    report: Option<&LoadReport>,
    ports: &BTreeMap<u16, PortStats>,
    kernel_serves_syn: bool,
) -> KernelView {
    let mut hooks: Vec<(String, String)> = report.map(|r| r.hooks.clone()).unwrap_or_default();
    if mode != Mode::Ebpf {
        let death = if mode == Mode::Pidfd {
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
        death_evidence: mode.name().to_string(),
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

fn view(s: &Slot, mode: Mode, anchor: (Instant, SystemTime)) -> PentView {
    let c = &s.core;
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
        stall_chk: s
            .cfg
            .stall
            .as_ref()
            .zip(c.stall.as_ref())
            .map(|(cfg, sw)| (cfg.kind.tag().to_string(), sw.sts.to_string())),
        retry_over_act: c.retry_over_action.as_str().to_string(),
        rerun_time,
        pent_id: c.pent_id,
        monitor_sts: if c.monitor_on { "on" } else { "off" }.to_string(),
        evidence: mode.name().to_string(),
        lb_state: None,
    }
}
