//! Telling load balancers: the board of what each entry's balancer is told
//! ([`crate::core::lb`] decides it), the HAProxy agent-check server ([`agent`]) and
//! the HTTP health endpoint ([`health`]), and the push to a local HAProxy's runtime
//! API ([`haproxy`]).
//!
//! The agent's main task writes the board after every decision; the listeners read
//! it under a short lock and never wait on the main task, so a slow or hostile client
//! cannot delay monitoring.

pub mod agent;
pub mod haproxy;
pub mod health;

use crate::core::lb::{self as rule, LbState, LbView};
use crate::core::{Entry, ProcSts};
use crate::pfile::{Cidr, Pfile, ProcEntry};
use crate::report::events::{EventInfo, LbChange};
use crate::report::metrics::Metrics;
use crate::report::{local_time, Logger};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// How long a client has to send its question (and to take the answer).
pub const CLIENT_DEADLINE: Duration = Duration::from_secs(1);
/// How long the shared agent-check listener waits for an `agent-send` line.
pub const AGENT_SEND_WAIT: Duration = Duration::from_millis(100);
/// Connections held at once per listener; more wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 256;

/// One entry on the board.
#[derive(Clone, Debug)]
struct Row {
    pent_id: u32,
    pname: String,
    name: Option<String>,
    warmup: Option<Duration>,
    /// BACKEND/SERVER in the local HAProxy, when pushed to.
    haproxy_server: Option<String>,
    view: LbView,
    since: SystemTime,
    /// When it last came up from down after a restart (the warm-up ramp's start).
    up_since: Option<Instant>,
}

/// What each entry's balancer is told now.
pub struct Board {
    rows: Mutex<Vec<Row>>,
    /// Answers given (agent lines and health responses).
    answered: AtomicU64,
    pusher: Option<haproxy::Pusher>,
    /// The pfile asks for a load balancer to be told (any lb_ key): changes are
    /// then logged as `lb_state` events.
    enabled: bool,
    /// Some listener answers agent-check or health questions.
    listening: bool,
}

/// One entry as `padmin -c show lb` and the health endpoint show it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LbEntryView {
    pub pent_id: u32,
    pub pname: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb_name: Option<String>,
    pub state: LbState,
    pub reason: String,
    /// Local time of the last change.
    pub since: String,
    /// The weight (percent) an agent answer carries now, during a warm-up.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<u8>,
}

impl Board {
    /// The board of `pfile`'s entries; starts the runtime-API push when the pfile
    /// names an HAProxy socket (so: within the tokio runtime).
    pub fn new(pfile: &Pfile, log: &Arc<Logger>) -> Self {
        let now = SystemTime::now();
        Self {
            rows: Mutex::new(
                pfile
                    .entries
                    .iter()
                    .map(|e| Row {
                        pent_id: e.pent_id,
                        pname: e.pname.display().to_string(),
                        name: e.lb.name.clone(),
                        warmup: e.lb.warmup,
                        haproxy_server: e.lb.haproxy_server.clone(),
                        view: rule::decide(&rule::LbInputs::default()),
                        since: now,
                        up_since: None,
                    })
                    .collect(),
            ),
            answered: AtomicU64::new(0),
            enabled: pfile.globals.lb.agent_listen.is_some()
                || pfile.globals.lb.health_listen.is_some()
                || pfile.globals.lb.haproxy_socket.is_some()
                || pfile.entries.iter().any(|e| e.lb != Default::default()),
            listening: pfile.globals.lb.agent_listen.is_some()
                || pfile.globals.lb.health_listen.is_some()
                || pfile.entries.iter().any(|e| e.lb.agent_listen.is_some()),
            pusher: pfile
                .globals
                .lb
                .haproxy_socket
                .clone()
                .map(|t| haproxy::Pusher::start(t, Arc::clone(log))),
        }
    }

    /// Waits (at most `limit`) until every runtime-API push queued was sent.
    pub async fn flush(&self, limit: Duration) {
        if let Some(p) = &self.pusher {
            p.flush(limit).await;
        }
    }

    /// Sets what entry `idx` is told; returns the change, if it is one.
    pub fn set(&self, idx: usize, view: LbView, now: Instant) -> Option<(LbView, LbView)> {
        let mut rows = self.rows.lock().ok()?;
        let row = rows.get_mut(idx)?;
        if row.view == view {
            return None;
        }
        let old = std::mem::replace(&mut row.view, view.clone());
        row.since = SystemTime::now();
        if view.state == LbState::Up && old.state == LbState::Down && old.reason != "starting" {
            row.up_since = Some(now);
        }
        if let (Some(p), Some(server)) = (&self.pusher, &row.haproxy_server) {
            if view.state != old.state {
                p.push(server, view.state);
            }
        }
        Some((old, view))
    }

    /// Some listener answers load balancers' questions.
    pub fn listening(&self) -> bool {
        self.listening
    }

    /// Answers given so far.
    pub fn answered(&self) -> u64 {
        self.answered.load(Ordering::Relaxed)
    }

    fn rows(&self) -> Vec<Row> {
        self.rows.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// The rows a question names: a pent_id or an lb_name; `None` asks for all.
    fn select(&self, which: Option<&str>) -> Option<Vec<Row>> {
        let rows = self.rows();
        match which {
            None => Some(rows),
            Some(w) => {
                let hit: Vec<Row> = rows
                    .into_iter()
                    .filter(|r| {
                        r.name.as_deref() == Some(w) || w.parse::<u32>().ok() == Some(r.pent_id)
                    })
                    .collect();
                (!hit.is_empty()).then_some(hit)
            }
        }
    }

    /// The agent-check line for one entry (by pent_id or lb_name) or, with `None`,
    /// for all (the worst state wins).
    pub fn agent_line(&self, which: Option<&str>, now: Instant) -> String {
        self.answered.fetch_add(1, Ordering::Relaxed);
        let Some(rows) = self.select(which) else {
            return "down #unknown entry".to_string();
        };
        match rule::worst(rows.iter().map(|r| &r.view)) {
            None => "down #no entries".to_string(),
            Some(v) => {
                // One entry up: its own warm-up weight. Several: the lowest.
                let weight = rows
                    .iter()
                    .filter_map(|r| rule::weight(r.up_since, r.warmup, now))
                    .min();
                rule::agent_line(v, weight.filter(|_| v.state == LbState::Up))
            }
        }
    }

    /// Every entry (or those a question names), for padmin and the health endpoint.
    pub fn views(&self, which: Option<&str>, now: Instant) -> Option<Vec<LbEntryView>> {
        let rows = self.select(which)?;
        Some(
            rows.into_iter()
                .map(|r| LbEntryView {
                    weight: rule::weight(r.up_since, r.warmup, now)
                        .filter(|_| r.view.state == LbState::Up),
                    pent_id: r.pent_id,
                    pname: r.pname,
                    lb_name: r.name,
                    state: r.view.state,
                    reason: r.view.reason.to_string(),
                    since: local_time(r.since),
                })
                .collect(),
        )
    }

    /// The state entry `idx` is told now.
    pub fn state_of(&self, idx: usize) -> Option<LbState> {
        self.rows.lock().ok()?.get(idx).map(|r| r.view.state)
    }

    fn count(&self) {
        self.answered.fetch_add(1, Ordering::Relaxed);
    }
}

/// Publishes a change: the metric, and (when the pfile uses a load balancer) the
/// `lb_state` event with its log line.
#[allow(clippy::too_many_arguments)]
pub fn report(
    board: &Board,
    log: &Logger,
    metrics: Option<&Metrics>,
    pent_id: u32,
    pname: &str,
    port: Option<u16>,
    old: &LbView,
    new: &LbView,
) {
    if let Some(m) = metrics {
        m.set_lb_state(&Metrics::entry_labels(pent_id, pname), new.state.as_str());
    }
    if !board.enabled {
        return;
    }
    let level = match new.state {
        LbState::Up => crate::core::Level::Info,
        _ => crate::core::Level::Warning,
    };
    let mut info = EventInfo::new(crate::core::EventKind::LbState).entry(pent_id, pname, port);
    info.lb = Some(LbChange {
        old: old.state,
        new: new.state,
        reason: new.reason.to_string(),
    });
    log.event(
        level,
        &format!(
            "load balancer state of pent_id= {pent_id}: {} -> {} ({})",
            old.state, new.state, new.reason
        ),
        info,
    );
}

/// The load-balancer listeners of a pfile, bound but not yet served.
pub struct Listeners {
    agents: Vec<(std::net::SocketAddr, agent::Speaks, std::net::TcpListener)>,
    health: Option<(std::net::SocketAddr, std::net::TcpListener)>,
    allow: Arc<Vec<Cidr>>,
}

/// Binds every load-balancer listener the pfile asks for (an address that cannot be
/// bound ends pcheck's start, before it starts or adopts anything). Questions that
/// arrive before [`serve`] wait in the kernel's backlog.
pub fn bind_all(pfile: &Pfile) -> Result<Listeners, LbError> {
    let mut agents = Vec::new();
    let per_entry = pfile.entries.iter().filter_map(|e| {
        e.lb.agent_listen
            .map(|a| (a, agent::Speaks::Entry(e.pent_id)))
    });
    let shared = pfile
        .globals
        .lb
        .agent_listen
        .map(|a| (a, agent::Speaks::All));
    for (addr, speaks) in per_entry.chain(shared) {
        agents.push((addr, speaks, bind(addr, "lb_agent_listen")?));
    }
    let health = match pfile.globals.lb.health_listen {
        Some(addr) => Some((addr, bind(addr, "lb_health_listen")?)),
        None => None,
    };
    Ok(Listeners {
        agents,
        health,
        allow: Arc::new(pfile.globals.lb.allow.clone()),
    })
}

/// Serves the listeners until pcheck ends; called once adopted processes are known,
/// so that a restarted pcheck never answers `down` for a healthy server.
pub fn serve(listeners: Listeners, board: &Arc<Board>, log: &Arc<Logger>) {
    let allow = listeners.allow;
    for (addr, speaks, l) in listeners.agents {
        let who = match speaks {
            agent::Speaks::Entry(id) => format!("pent_id {id}"),
            agent::Speaks::All => "every entry (agent-send names one)".to_string(),
        };
        log.info(&format!(
            "load balancer: HAProxy agent-check on {addr} for {who}"
        ));
        let b = Arc::clone(board);
        tokio::spawn(accept_loop(
            l,
            Arc::clone(&allow),
            Arc::clone(log),
            format!("lb_agent_listen {addr}"),
            move |s| agent::serve(s, Arc::clone(&b), speaks.clone()),
        ));
    }
    if let Some((addr, l)) = listeners.health {
        log.info(&format!(
            "load balancer: health endpoint on http://{addr}/health"
        ));
        let b = Arc::clone(board);
        tokio::spawn(accept_loop(
            l,
            allow,
            Arc::clone(log),
            format!("lb_health_listen {addr}"),
            move |s| health::serve(s, Arc::clone(&b)),
        ));
    }
}

/// Sets what every entry's balancer is told from its decision state (`drained`:
/// `padmin -c drain`); publishes each change.
pub fn sync<'a>(
    board: &Board,
    log: &Logger,
    metrics: Option<&Metrics>,
    entries: impl Iterator<Item = (&'a ProcEntry, &'a Entry, bool)>,
) {
    let now = Instant::now();
    for (idx, (cfg, core, drained)) in entries.enumerate() {
        let view = rule::decide(&rule::LbInputs::of(core, drained));
        if let Some((old, new)) = board.set(idx, view, now) {
            let port = cfg.stall.as_ref().map(|c| c.port);
            report(
                board,
                log,
                metrics,
                cfg.pent_id,
                &core.pname,
                port,
                &old,
                &new,
            );
        }
    }
}

/// On a clean stop: entries whose server still runs are told `up ready`, so that a
/// balancer keeping the agent's last word never keeps a healthy server drained.
/// When that changed anything, waits (at most 1 s) for the runtime-API push and (at
/// most 2 s) for the balancers to ask once more.
pub async fn leave_up<'a>(
    board: &Board,
    log: &Logger,
    metrics: Option<&Metrics>,
    entries: impl Iterator<Item = (&'a ProcEntry, &'a Entry)>,
) {
    let now = Instant::now();
    let mut changed = 0;
    for (idx, (cfg, core)) in entries.enumerate() {
        if core.proc_sts != ProcSts::Avail || core.pid.is_none() {
            continue;
        }
        let up = LbView {
            state: LbState::Up,
            reason: "ready",
        };
        if let Some((old, new)) = board.set(idx, up, now) {
            changed += 1;
            let port = cfg.stall.as_ref().map(|c| c.port);
            report(
                board,
                log,
                metrics,
                cfg.pent_id,
                &core.pname,
                port,
                &old,
                &new,
            );
        }
    }
    if changed == 0 {
        return;
    }
    board.flush(Duration::from_secs(1)).await;
    if !board.listening() {
        return;
    }
    let before = board.answered();
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while board.answered() < before + changed {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
}

/// Whether a peer may connect: anyone when `allow` is empty.
pub fn allowed(allow: &[Cidr], peer: IpAddr) -> bool {
    allow.is_empty() || allow.iter().any(|n| n.contains(peer))
}

/// Binds a load-balancer listener (an error ends pcheck's start: the operator asked
/// for it).
pub fn bind(addr: std::net::SocketAddr, what: &str) -> Result<std::net::TcpListener, LbError> {
    let l = std::net::TcpListener::bind(addr).map_err(|source| LbError::Listen {
        what: what.to_string(),
        addr,
        source,
    })?;
    l.set_nonblocking(true).map_err(|source| LbError::Socket {
        what: what.to_string(),
        addr,
        source,
    })?;
    Ok(l)
}

/// Why a load-balancer listener could not be set up, or a push to HAProxy failed.
#[derive(thiserror::Error, Debug)]
pub enum LbError {
    #[error("{what} {addr}: cannot listen: {source}")]
    Listen {
        what: String,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{what} {addr}: {source}")]
    Socket {
        what: String,
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("{0}")]
    HaproxyIo(std::io::Error),
    #[error("no answer within {0} s")]
    HaproxySilent(u64),
    #[error("HAProxy does not know the server {0}")]
    UnknownServer(String),
    /// HAProxy's answer to a command, which should have been empty.
    #[error("HAProxy answered {0:?}")]
    HaproxyRefused(String),
}

/// The accept loop every load-balancer listener shares: at most
/// [`MAX_CONNECTIONS`] held, peers outside `allow` closed at once, a back-off after a
/// failed accept, and `serve` run in its own task under [`CLIENT_DEADLINE`].
pub async fn accept_loop<F, Fut>(
    listener: std::net::TcpListener,
    allow: Arc<Vec<Cidr>>,
    log: Arc<Logger>,
    what: String,
    serve: F,
) where
    F: Fn(tokio::net::TcpStream) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = match tokio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log.error(&format!("{what}: {e}"));
            return;
        }
    };
    let mut gate = crate::gate::Gate::new(MAX_CONNECTIONS, CLIENT_DEADLINE);
    loop {
        let Some(permit) = gate.slot().await else {
            return;
        };
        match listener.accept().await {
            Ok((s, peer)) => {
                gate.accepted();
                if !allowed(&allow, peer.ip()) {
                    drop(s);
                    continue;
                }
                let task = serve(s);
                tokio::spawn(async move {
                    let _ = tokio::time::timeout(CLIENT_DEADLINE, task).await;
                    drop(permit);
                });
            }
            Err(e) => {
                if let Some(n) = gate.failed().await {
                    log.warn(&format!("{what}: accept failed ({n} so far): {e}"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allow_lists() {
        let nets = vec![
            Cidr::parse("10.0.0.0/8").expect("cidr"),
            Cidr::parse("::1").expect("cidr"),
        ];
        assert!(allowed(&[], "192.0.2.1".parse().expect("ip")));
        assert!(allowed(&nets, "10.1.2.3".parse().expect("ip")));
        assert!(allowed(&nets, "::ffff:10.1.2.3".parse().expect("ip")));
        assert!(allowed(&nets, "::1".parse().expect("ip")));
        assert!(!allowed(&nets, "127.0.0.1".parse().expect("ip")));
    }
}
