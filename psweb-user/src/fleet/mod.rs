//! The fleet: this pcheck as one member of a fleet of hosts that coordinate their
//! automatic reboots through etcd (`fleet_*` pfile keys).
//!
//! One task owns the etcd connection. The agent tells it the health of its entries and
//! whether a reboot is due ([`Fleet::gate`], once a tick, never waiting); the task keeps
//! the member key, takes, keeps and gives back the reboot slot, and answers `granted`
//! through a watch channel. With `fleet_max_restarting` it does the same for a held
//! stall kill with a restart slot ([`Fleet::stall_kill_may`]). Monitoring and death
//! restarts never wait for etcd: while it cannot be reached, only reboots (and, with
//! a restart budget, stall kills) are affected (`fleet_unreachable`).

pub mod etcd;

use crate::core::fleet::{self as rules, Health, Held, SlotDecision};
use crate::core::reboot::RebootGuard;
use crate::core::{EventKind, Level, ProcSts};
use crate::pfile::{FleetCfg, FleetUnreachable, Pfile};
use crate::report::events::EventInfo;
use crate::report::metrics::Metrics;
use crate::report::Logger;
use etcd::{Conn, MemberRecord};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

/// What the agent tells the fleet task.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Local {
    entries: Vec<(u32, Health)>,
    /// A reboot is due (fatal fault, under the limit): take or keep a slot.
    want_reboot: bool,
    /// The reboot limit is reached: the host stays up; its slot goes back.
    at_limit: bool,
    /// A stall kill waits for a restart slot (`fleet_max_restarting`).
    want_restart: bool,
    /// Since when (for the grant's log line).
    restart_since: Option<Instant>,
}

/// Asks the fleet for a restart slot the moment a stall kill is held, not at the
/// agent's next tick (the tick keeps asking while the kill waits).
#[derive(Clone)]
pub struct RestartAsk(watch::Sender<Local>);

impl RestartAsk {
    /// `pent_id`'s server stalled: the member key says so before the slot is asked
    /// for, so that the fleet's outage rule counts this host as the tick would.
    pub fn now(&self, pent_id: u32) {
        self.0.send_if_modified(|l| {
            let mut changed = false;
            for (id, h) in &mut l.entries {
                if *id == pent_id && *h == Health::Up {
                    *h = Health::Stalled;
                    changed = true;
                }
            }
            if !l.want_restart {
                l.want_restart = true;
                l.restart_since = Some(Instant::now());
                changed = true;
            }
            changed
        });
    }
}

/// Operator requests (padmin), answered with a message or an error.
pub enum Cmd {
    Show(oneshot::Sender<Result<serde_json::Value, String>>),
    Hold(String, oneshot::Sender<Result<String, String>>),
    Resume(oneshot::Sender<Result<String, String>>),
    Release(String, oneshot::Sender<Result<String, String>>),
    /// The reboot count could not be written: the slot goes back, there is no reboot.
    GiveBack,
}

/// How often a pending reboot looks at the fleet again, and a slot holder checks
/// whether its host is healthy again.
const EVAL: Duration = Duration::from_secs(1);

/// The longest a lease keep-alive waits for etcd's answer.
const KEEPALIVE_WAIT: Duration = Duration::from_secs(3);

pub struct Fleet {
    local: watch::Sender<Local>,
    granted: watch::Receiver<bool>,
    /// A held stall kill may go ahead (it holds a restart slot, or etcd is away and
    /// `fleet_unreachable = proceed`).
    restart_granted: watch::Receiver<bool>,
    /// `fleet_max_restarting` is set: stall kills wait for a restart slot.
    restart_budget: bool,
    cmds: mpsc::Sender<Cmd>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    metrics: Arc<OnceLock<Arc<Metrics>>>,
}

/// This pfile's sub-key under its host: the pfile's path without the leading '/'.
fn pfile_key(p: &Pfile) -> String {
    p.path
        .display()
        .to_string()
        .trim_start_matches('/')
        .to_string()
}

fn host_name(cfg: &FleetCfg, log: &Logger) -> String {
    cfg.host
        .clone()
        .unwrap_or_else(|| log.hostname().to_string())
}

impl Fleet {
    /// Starts the fleet task when the pfile names a fleet.
    pub fn start(pfile: &Pfile, log: &Arc<Logger>) -> Option<Self> {
        let cfg = pfile.globals.fleet.clone()?;
        let host = host_name(&cfg, log);
        log.info(&format!(
            "fleet: {} as host {host} (etcd {}; at most {} rebooting, hold above {} unhealthy, reboots {} while etcd is unreachable)",
            cfg.name,
            cfg.endpoints.join(","),
            cfg.max_rebooting,
            cfg.hold_ratio,
            match cfg.unreachable {
                FleetUnreachable::Hold => "held",
                FleetUnreachable::Proceed => "go on",
            }
        ));
        let (local, local_rx) = watch::channel(Local::default());
        let (granted_tx, granted) = watch::channel(false);
        let (restart_granted_tx, restart_granted) = watch::channel(false);
        let restart_budget = cfg.max_restarting.is_some();
        let (cmds, cmd_rx) = mpsc::channel(8);
        let (stop, stop_rx) = oneshot::channel();
        let metrics = Arc::new(OnceLock::new());
        let task = Task {
            cfg,
            host,
            pfile: pfile_key(pfile),
            log: Arc::clone(log),
            metrics: Arc::clone(&metrics),
            granted: granted_tx,
            restart_granted: restart_granted_tx,
            restart_budget: 0,
            restart_held: None,
            held: None,
            outage: false,
            reachable: None,
            budget_logged: false,
            established: false,
            due_since: None,
            gave_back: false,
        };
        let task = tokio::spawn(task.run(local_rx, cmd_rx, stop_rx));
        Some(Self {
            local,
            granted,
            restart_granted,
            restart_budget,
            cmds,
            stop: Some(stop),
            task,
            metrics,
        })
    }

    pub fn set_metrics(&self, m: Arc<Metrics>) {
        m.set_fleet_hold(false);
        let _ = self.metrics.set(m);
    }

    /// Called once a tick with every entry (pent_id, down, proc_sts) and the reboot
    /// rule's `worst`; returns the `worst` the reboot rule may see: while the fleet has
    /// not granted a slot, a due reboot is not yet due.
    pub fn gate(
        &self,
        guard: &RebootGuard,
        entries: impl Iterator<Item = (u32, bool, ProcSts)>,
        worst: Option<(u32, Duration)>,
        want_restart: bool,
    ) -> Option<(u32, Duration)> {
        let rebooting = guard.fired();
        let entries: Vec<(u32, Health)> = entries
            .map(|(id, down, sts)| (id, rules::entry_health(down, sts, rebooting)))
            .collect();
        let due = guard.policy.enabled
            && !rebooting
            && !guard.at_limit()
            && worst.is_some_and(|(_, d)| d >= guard.policy.after);
        let at_limit = guard.policy.enabled && guard.at_limit() && worst.is_some();
        let want_restart = want_restart && self.restart_budget;
        self.local.send_if_modified(|l| {
            let new = Local {
                entries,
                want_reboot: due,
                at_limit,
                want_restart,
                restart_since: want_restart.then(|| l.restart_since.unwrap_or_else(Instant::now)),
            };
            let changed = *l != new;
            *l = new;
            changed
        });
        if due && !*self.granted.borrow() {
            return worst.map(|(id, _)| (id, Duration::ZERO));
        }
        worst
    }

    /// With `fleet_max_restarting` (stall kills are held until the fleet grants a
    /// restart slot, [`Fleet::stall_kill_may`]): the handle that asks for a restart slot at once.
    pub fn restart_ask(&self) -> Option<RestartAsk> {
        self.restart_budget.then(|| RestartAsk(self.local.clone()))
    }

    /// Whether a stall kill may go ahead now: always without a restart budget; with
    /// one, once this host holds a restart slot (asked for through [`Fleet::gate`]).
    /// Death restarts never ask.
    pub fn stall_kill_may(&self) -> bool {
        !self.restart_budget || *self.restart_granted.borrow()
    }

    /// An operator request; the answer comes on the request's channel.
    pub fn request(&self, cmd: Cmd) {
        if self.cmds.try_send(cmd).is_err() {
            // The task is busy or gone; the request's channel closes, which padmin
            // reports.
        }
    }

    /// The reboot count could not be written: give the slot back.
    pub fn give_back(&self) {
        self.request(Cmd::GiveBack);
    }

    /// A clean stop: the member lease is revoked (the slot is not: it must outlive
    /// this pcheck across a reboot).
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), &mut self.task).await;
        self.task.abort();
    }
}

struct Task {
    cfg: FleetCfg,
    host: String,
    pfile: String,
    log: Arc<Logger>,
    metrics: Arc<OnceLock<Arc<Metrics>>>,
    granted: watch::Sender<bool>,
    restart_granted: watch::Sender<bool>,
    /// The fleet's restart budget as stored (0 until known, or without one).
    restart_budget: u32,
    /// Why the held stall kill waits, as last logged.
    restart_held: Option<Held>,
    /// Why the due reboot waits, as last logged.
    held: Option<Held>,
    /// `Fleet Outage Suspected` was logged (for a held reboot or stall kill), and
    /// `Fleet outage over` is still to come.
    outage: bool,
    reachable: Option<bool>,
    budget_logged: bool,
    /// The last session got as far as its member key.
    established: bool,
    /// When the pending reboot fell due (for the grant's log line).
    due_since: Option<Instant>,
    /// The slot was given back (no durable count): no new one until the agent says
    /// the reboot is no longer due.
    gave_back: bool,
}

/// What a session opens: the budget as stored, the member lease and its keep-alive
/// stream, and the watch of the fleet's prefix.
struct Open {
    budget: u32,
    lease: i64,
    keeper: etcd_client::LeaseKeeper,
    kept: etcd_client::LeaseKeepAliveStream,
    watch: etcd_client::WatchStream,
}

impl Open {
    /// Renews the member lease; an error when etcd does not answer in time or the
    /// lease has expired.
    async fn keep_alive(&mut self) -> etcd::Result<()> {
        // A stream has no request timeout: bound the wait for the answer.
        let answer = tokio::time::timeout(KEEPALIVE_WAIT, async {
            self.keeper.keep_alive().await?;
            self.kept.message().await
        })
        .await
        .map_err(|_| etcd::Error::from("no answer to the member lease keep-alive".to_string()))??;
        if answer.is_none_or(|r| r.ttl() <= 0) {
            return Err(etcd::Error::from("the member lease expired".to_string()));
        }
        Ok(())
    }
}

/// How a session with etcd ended.
enum End {
    Stop,
    Lost(etcd::Error),
}

impl Task {
    async fn run(
        mut self,
        mut local: watch::Receiver<Local>,
        mut cmds: mpsc::Receiver<Cmd>,
        mut stop: oneshot::Receiver<()>,
    ) {
        // An expired auth token ends a working session: connect (and authenticate)
        // again at once, once; etcd only counts as away when that fails too.
        let mut reauth = false;
        loop {
            let connected = tokio::select! {
                c = Conn::connect(&self.cfg) => c,
                _ = &mut stop => return,
            };
            let err = match connected {
                Ok(conn) => match self.session(conn, &mut local, &mut cmds, &mut stop).await {
                    End::Stop => return,
                    End::Lost(e) => e,
                },
                Err(e) => e,
            };
            let established = std::mem::take(&mut self.established);
            if err.unauthenticated && (established || !reauth) {
                reauth = true;
                continue;
            }
            reauth = false;
            self.unreachable(&err, &local.borrow().clone());
            // Until the next try: answer padmin, follow fleet_unreachable for reboots.
            let retry = tokio::time::sleep(EVAL);
            tokio::pin!(retry);
            loop {
                tokio::select! {
                    () = &mut retry => break,
                    _ = &mut stop => return,
                    r = local.changed() => {
                        if r.is_err() { return; }
                        let l = local.borrow_and_update().clone();
                        self.unreachable(&err, &l);
                    }
                    Some(cmd) = cmds.recv() => reply_err(cmd, &format!("etcd cannot be reached: {err}")),
                }
            }
        }
    }

    fn event(&self, level: Level, msg: &str, kind: EventKind) {
        self.log.event(level, msg, EventInfo::new(kind));
    }

    /// etcd is away: one line when it goes, and reboots per `fleet_unreachable`.
    fn unreachable(&mut self, err: &etcd::Error, l: &Local) {
        self.unheld(l);
        if self.reachable != Some(false) {
            self.reachable = Some(false);
            let what = match self.cfg.unreachable {
                FleetUnreachable::Hold => "held",
                FleetUnreachable::Proceed => "go on as on a lone host",
            };
            // With a restart budget, stall restarts follow fleet_unreachable too.
            let (going, waiting) = if self.cfg.max_restarting.is_some() {
                (
                    "monitoring and death restarts go on",
                    "automatic reboots and stall restarts are",
                )
            } else {
                ("monitoring and restarts go on", "automatic reboots are")
            };
            self.event(
                Level::Warning,
                &format!(
                    "Fleet etcd unreachable: fleet= {} etcd= {}: {err}; {going}, {waiting} {what} (fleet_unreachable)",
                    self.cfg.name,
                    self.cfg.endpoints.join(",")
                ),
                EventKind::FleetEtcdLost,
            );
        }
        if l.want_restart {
            match self.cfg.unreachable {
                FleetUnreachable::Proceed => {
                    self.restart_granted.send_replace(true);
                }
                FleetUnreachable::Hold => self.restart_held(Held::Unreachable),
            }
        } else {
            self.restart_granted.send_replace(false);
        }
        if !l.want_reboot {
            self.granted.send_replace(false);
            return;
        }
        match self.cfg.unreachable {
            FleetUnreachable::Proceed => {
                self.granted.send_replace(true);
            }
            FleetUnreachable::Hold => self.held(Held::Unreachable),
        }
    }

    fn held(&mut self, why: Held) {
        self.granted.send_replace(false);
        if self.held.as_ref().is_some_and(|h| h.same_kind(&why)) {
            return;
        }
        if let Some(m) = self.metrics.get() {
            m.set_fleet_hold(matches!(why, Held::Outage { .. } | Held::Operator(_)));
        }
        self.outage_suspected(&why);
        let fleet = &self.cfg.name;
        let reason = why.reason("reboot", "fleet_max_rebooting", self.cfg.hold_ratio);
        self.event(
            Level::Warning,
            &format!(
                "Auto Reboot held: fleet= {fleet} host= {}: {reason}; retrying",
                self.host
            ),
            EventKind::RebootHeld,
        );
        self.held = Some(why);
    }

    /// A held stall kill waits: one line per kind of reason.
    fn restart_held(&mut self, why: Held) {
        self.restart_granted.send_replace(false);
        if self
            .restart_held
            .as_ref()
            .is_some_and(|h| h.same_kind(&why))
        {
            return;
        }
        self.outage_suspected(&why);
        let reason = why.reason("restart", "fleet_max_restarting", self.cfg.hold_ratio);
        self.event(
            Level::Warning,
            &format!(
                "Stall Restart held: fleet= {} host= {}: {reason}; the stalled server is killed once a slot is free; retrying",
                self.cfg.name, self.host
            ),
            EventKind::RestartHeld,
        );
        self.restart_held = Some(why);
    }

    /// An outage holds a reboot or a stall kill: one line (and event) per outage,
    /// whichever it holds first.
    fn outage_suspected(&mut self, why: &Held) {
        let Held::Outage { unhealthy, of } = why else {
            return;
        };
        if std::mem::replace(&mut self.outage, true) {
            return;
        }
        if let Some(m) = self.metrics.get() {
            m.set_fleet_hold(true);
        }
        self.event(
            Level::Error,
            &format!(
                "Fleet Outage Suspected: fleet= {} unhealthy= {unhealthy}/{of}",
                self.cfg.name
            ),
            EventKind::FleetHold,
        );
    }

    /// A held reboot that is no longer due, or a held stall kill that no longer waits
    /// (the server came back, or died and was restarted), ends its hold: one line, an
    /// event that resolves its alert, and the next hold is logged again.
    fn unheld(&mut self, l: &Local) {
        let (fleet, host) = (&self.cfg.name, &self.host);
        if !l.want_reboot && self.held.is_some() {
            self.held = None;
            self.event(
                Level::Info,
                &format!("Auto Reboot no longer held: fleet= {fleet} host= {host}: no reboot is due any more"),
                EventKind::FleetSlot,
            );
        }
        if !l.want_restart && self.restart_held.is_some() {
            self.restart_held = None;
            self.event(
                Level::Info,
                &format!("Stall Restart no longer held: fleet= {fleet} host= {host}: no stall kill waits any more"),
                EventKind::RestartSlot,
            );
        }
    }

    /// A grant ends any hold.
    fn not_held(&mut self) {
        if let Some(m) = self.metrics.get() {
            m.set_fleet_hold(false);
        }
        self.held = None;
    }

    /// The outage hold ends when the share of unhealthy hosts falls.
    fn outage_over(&mut self, view: &rules::View) {
        if !self.outage || rules::outage(view, self.cfg.hold_ratio).is_some() {
            return;
        }
        self.outage = false;
        let (k, n) = view.unhealthy();
        if matches!(self.held, Some(Held::Outage { .. })) {
            self.not_held();
        } else if let Some(m) = self.metrics.get() {
            m.set_fleet_hold(view.operator_hold.is_some());
        }
        if matches!(self.restart_held, Some(Held::Outage { .. })) {
            self.restart_held = None;
        }
        let what = if self.cfg.max_restarting.is_some() {
            "automatic reboots and stall restarts go on"
        } else {
            "automatic reboots go on"
        };
        self.event(
            Level::Info,
            &format!(
                "Fleet outage over: fleet= {} unhealthy= {k}/{n}: {what}",
                self.cfg.name
            ),
            EventKind::FleetResume,
        );
    }

    async fn session(
        &mut self,
        mut conn: Conn,
        local: &mut watch::Receiver<Local>,
        cmds: &mut mpsc::Receiver<Cmd>,
        stop: &mut oneshot::Receiver<()>,
    ) -> End {
        let r = match self.open(&mut conn).await {
            Ok(open) => {
                self.now_reachable();
                self.serve_session(&mut conn, open, local, cmds, stop).await
            }
            Err(e) => Err(e),
        };
        match r {
            Ok(end) => end,
            Err(e) => {
                if e.unauthenticated {
                    self.log.warn(&format!(
                        "fleet: etcd refused the authentication token ({e}); connecting again"
                    ));
                }
                End::Lost(e)
            }
        }
    }

    /// The start of a session: the budgets as stored, the member lease with its
    /// keep-alive stream, and the watch of the fleet's prefix.
    async fn open(&mut self, conn: &mut Conn) -> etcd::Result<Open> {
        let budget = conn.budget("max_rebooting", self.cfg.max_rebooting).await?;
        let restart_budget = match self.cfg.max_restarting {
            Some(n) => Some(conn.budget("max_restarting", n).await?),
            None => None,
        };
        self.restart_budget = restart_budget.unwrap_or(0);
        if !self.budget_logged {
            self.budget_logged = true;
            self.log_budget_mismatches(budget, restart_budget);
        }
        let lease = conn.grant(self.cfg.lease_ttl).await?;
        let (keeper, kept) = conn.client.lease_keep_alive(lease).await?;
        let watch = conn
            .client
            .watch(
                conn.prefix.clone(),
                Some(etcd_client::WatchOptions::new().with_prefix()),
            )
            .await?;
        Ok(Open {
            budget,
            lease,
            keeper,
            kept,
            watch,
        })
    }

    /// One warning per budget whose stored value differs from this pfile's.
    fn log_budget_mismatches(&self, budget: u32, restart_budget: Option<u32>) {
        let mismatches = [
            (
                "fleet_max_rebooting",
                Some(self.cfg.max_rebooting),
                Some(budget),
            ),
            (
                "fleet_max_restarting",
                self.cfg.max_restarting,
                restart_budget,
            ),
        ];
        for (key, configured, stored) in mismatches {
            if let (Some(c), Some(s)) = (configured, stored) {
                if let Some(msg) = rules::budget_mismatch(&self.cfg.name, key, c, s) {
                    self.log.warn(&msg);
                }
            }
        }
    }

    /// A session is open: one line if etcd was away, and the holds it caused end.
    fn now_reachable(&mut self) {
        if self.reachable == Some(false) {
            self.event(
                Level::Info,
                &format!(
                    "Fleet etcd reachable again: fleet= {} etcd= {}",
                    self.cfg.name,
                    self.cfg.endpoints.join(",")
                ),
                EventKind::FleetEtcdBack,
            );
            if matches!(self.held, Some(Held::Unreachable)) {
                self.held = None;
            }
            if matches!(self.restart_held, Some(Held::Unreachable)) {
                self.restart_held = None;
            }
            // A stall kill let go while etcd was away asks for a slot again.
            self.restart_granted.send_replace(false);
        }
        self.reachable = Some(true);
        self.established = true;
    }

    /// The session's loop: keeps the lease, publishes the member record, looks at the
    /// fleet when something may have changed, and answers padmin; until stopped or
    /// etcd fails.
    async fn serve_session(
        &mut self,
        conn: &mut Conn,
        mut open: Open,
        local: &mut watch::Receiver<Local>,
        cmds: &mut mpsc::Receiver<Cmd>,
        stop: &mut oneshot::Receiver<()>,
    ) -> etcd::Result<End> {
        let budget = open.budget;
        let mut last: Option<Vec<(u32, Health)>> = None;
        let mut ka = tokio::time::interval(self.cfg.lease_ttl / 3);
        ka.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ka.tick().await;
        let mut eval = tokio::time::interval(EVAL);
        eval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Whether this host may hold a slot (learnt at the first look).
        let mut holding = true;
        local.mark_changed();
        loop {
            let l = local.borrow().clone();
            let look = self.must_look(&l, holding);
            tokio::select! {
                _ = &mut *stop => {
                    let _ = conn.revoke(open.lease).await;
                    return Ok(End::Stop);
                }
                _ = ka.tick() => open.keep_alive().await?,
                r = local.changed() => {
                    if r.is_err() {
                        let _ = conn.revoke(open.lease).await;
                        return Ok(End::Stop);
                    }
                    let l = local.borrow_and_update().clone();
                    self.local_changed(conn, open.lease, &l, &mut last).await?;
                    if self.must_look(&l, holding) {
                        holding = self.look(conn, budget, &l).await?;
                    }
                }
                _ = eval.tick(), if look => {
                    holding = self.look(conn, budget, &l).await?;
                }
                w = open.watch.message() => {
                    let Some(w) = w? else {
                        return Err(etcd::Error::from("etcd ended the watch".to_string()));
                    };
                    self.watched(&conn.prefix, &w);
                    if look {
                        holding = self.look(conn, budget, &l).await?;
                    }
                }
                Some(cmd) = cmds.recv() => self.command(conn, budget, cmd).await?,
            }
        }
    }

    /// Whether the fleet is to be looked at: this host may hold a slot, it announced
    /// an outage (watched until it is over, even when nothing of this host waits any
    /// more: its end is logged and the hold gauge falls back), or a reboot or a stall
    /// restart of it waits for a slot.
    fn must_look(&self, l: &Local, holding: bool) -> bool {
        holding
            || self.outage
            || (l.want_reboot && !*self.granted.borrow())
            || (l.want_restart && !*self.restart_granted.borrow())
    }

    /// The agent's view changed: when a reboot fell due, the member record if the
    /// entries' health changed, and grants it no longer wants go back.
    async fn local_changed(
        &mut self,
        conn: &mut Conn,
        lease: i64,
        l: &Local,
        last: &mut Option<Vec<(u32, Health)>>,
    ) -> etcd::Result<()> {
        if !l.want_reboot {
            self.due_since = None;
            self.gave_back = false;
        } else if self.due_since.is_none() {
            self.due_since = Some(Instant::now());
        }
        if last.as_ref() != Some(&l.entries) {
            let health = l
                .entries
                .iter()
                .map(|(_, h)| *h)
                .find(|h| *h != Health::Up)
                .unwrap_or(Health::Up);
            let rec = MemberRecord {
                health,
                entries: l.entries.clone(),
                updated: etcd::unix_now(),
            };
            conn.put_member(&self.host, &self.pfile, &rec, lease)
                .await?;
            *last = Some(l.entries.clone());
        }
        if !l.want_reboot {
            self.granted.send_replace(false);
        }
        if !l.want_restart {
            self.restart_granted.send_replace(false);
        }
        self.unheld(l);
        Ok(())
    }

    /// Logs, on every member, what operators did to the fleet.
    fn watched(&mut self, prefix: &str, w: &etcd_client::WatchResponse) {
        let fleet = self.cfg.name.clone();
        for ev in w.events() {
            let Some(kv) = ev.kv() else { continue };
            let Some(rest) = kv.key_str().ok().and_then(|k| k.strip_prefix(prefix)) else {
                continue;
            };
            let value = kv.value_str().unwrap_or("");
            match (ev.event_type(), rest) {
                (etcd_client::EventType::Put, "hold") => {
                    self.event(
                        Level::Warning,
                        &format!("Fleet hold: fleet= {fleet}: automatic reboots held fleet-wide by {value}"),
                        EventKind::FleetHold,
                    );
                    if let Some(m) = self.metrics.get() {
                        m.set_fleet_hold(true);
                    }
                }
                (etcd_client::EventType::Delete, "hold") => {
                    self.event(
                        Level::Info,
                        &format!("Fleet resume: fleet= {fleet}: the operator's hold is lifted"),
                        EventKind::FleetResume,
                    );
                    if let Some(m) = self.metrics.get() {
                        m.set_fleet_hold(false);
                    }
                }
                (etcd_client::EventType::Put, r) => {
                    if let Some(host) = r.strip_prefix("released/") {
                        self.event(
                            Level::Warning,
                            &format!("Fleet reboot slot released: fleet= {fleet} host= {host}: by an operator ({value})"),
                            EventKind::FleetSlot,
                        );
                    } else if let Some(host) = r.strip_prefix("released-restart/") {
                        self.event(
                            Level::Warning,
                            &format!("Fleet restart slot released: fleet= {fleet} host= {host}: by an operator ({value})"),
                            EventKind::RestartSlot,
                        );
                    }
                }
                _ => {}
            }
        }
    }

    /// One look at the fleet: gives slots back when due, and decides a due reboot and a
    /// held stall kill. Returns whether this host (still) holds a slot.
    async fn look(&mut self, conn: &mut Conn, budget: u32, l: &Local) -> etcd::Result<bool> {
        let started = Instant::now();
        let mut view = conn.view(budget).await?;
        view.max_restarting = self.restart_budget;
        self.outage_over(&view);
        let restarting = self.look_restart(conn, &view, l).await?;
        let rebooting = self.look_reboot(conn, budget, l, &view, started).await?;
        Ok(restarting || rebooting)
    }

    /// The restart budget's part of a look: returns whether this host holds a restart
    /// slot afterwards.
    async fn look_restart(
        &mut self,
        conn: &mut Conn,
        view: &rules::View,
        l: &Local,
    ) -> etcd::Result<bool> {
        if let Some(i) = rules::release_restart_slot(view, &self.host, l.want_restart) {
            if conn.release_slot("restart", i, Some(&self.host)).await? {
                let why = if view.host_up(&self.host) {
                    "the restarted server is healthy again"
                } else {
                    "the restart gave up (retry-over)"
                };
                self.event(
                    Level::Info,
                    &format!(
                        "Fleet restart slot released: fleet= {} host= {} slot= {i}: {why}",
                        self.cfg.name, self.host
                    ),
                    EventKind::RestartSlot,
                );
            }
            return Ok(false);
        }
        let holding = view.restart_slot_of(&self.host).is_some();
        if !l.want_restart || *self.restart_granted.borrow() {
            return Ok(holding);
        }
        let granted = match rules::decide_restart(view, &self.host, self.cfg.hold_ratio) {
            SlotDecision::Keep(i) => Some(i),
            SlotDecision::Take(free) => {
                match conn
                    .take_slot("restart", &self.host, &free, self.cfg.reboot_ttl)
                    .await?
                {
                    Some(i) => Some(i),
                    None => {
                        let again = conn.view(view.max_rebooting).await?;
                        self.restart_held(Held::NoSlot(
                            again.restart_slots.values().cloned().collect(),
                        ));
                        None
                    }
                }
            }
            SlotDecision::Held(why) => {
                self.restart_held(why);
                None
            }
        };
        let Some(i) = granted else {
            return Ok(holding);
        };
        self.restart_held = None;
        self.event(
            Level::Warning,
            &format!(
                "Fleet restart slot granted: fleet= {} host= {} slot= {i}/{} ({} ms after the stall kill fell due): the stalled server is killed and restarted (freed when it is healthy again, or after fleet_reboot_ttl {} s)",
                self.cfg.name,
                self.host,
                view.max_restarting,
                l.restart_since.map_or(0, |t| t.elapsed().as_millis()),
                self.cfg.reboot_ttl.as_secs()
            ),
            EventKind::RestartSlot,
        );
        self.restart_granted.send_replace(true);
        Ok(true)
    }

    /// The reboot budget's part of a look: returns whether this host holds a reboot
    /// slot afterwards.
    async fn look_reboot(
        &mut self,
        conn: &mut Conn,
        budget: u32,
        l: &Local,
        view: &rules::View,
        started: Instant,
    ) -> etcd::Result<bool> {
        if let Some(i) = rules::release_slot(view, &self.host, l.at_limit && !l.want_reboot) {
            if conn.release_slot("reboot", i, Some(&self.host)).await? {
                let why = if view.host_up(&self.host) {
                    "the host is healthy again"
                } else {
                    "the host reached reboot_limit and stays up"
                };
                self.event(
                    Level::Info,
                    &format!(
                        "Fleet reboot slot released: fleet= {} host= {} slot= {i}: {why}",
                        self.cfg.name, self.host
                    ),
                    EventKind::FleetSlot,
                );
            }
            return Ok(false);
        }
        let holding = view.slot_of(&self.host).is_some();
        if !l.want_reboot || *self.granted.borrow() || self.gave_back {
            return Ok(holding);
        }
        match rules::decide_reboot(view, &self.host, self.cfg.hold_ratio) {
            SlotDecision::Keep(i) => {
                if conn.refresh_slot("reboot", i, &self.host).await? {
                    self.grant(i, view, "kept from the last reboot", started);
                    return Ok(true);
                }
                Ok(false)
            }
            SlotDecision::Take(free) => {
                match conn
                    .take_slot("reboot", &self.host, &free, self.cfg.reboot_ttl)
                    .await?
                {
                    Some(i) => {
                        self.grant(i, view, "taken", started);
                        Ok(true)
                    }
                    None => {
                        let again = conn.view(budget).await?;
                        self.held(Held::NoSlot(again.slots.values().cloned().collect()));
                        Ok(false)
                    }
                }
            }
            SlotDecision::Held(why) => {
                self.held(why);
                Ok(holding)
            }
        }
    }

    fn grant(&mut self, i: u32, view: &rules::View, how: &str, started: Instant) {
        self.not_held();
        let started = self.due_since.unwrap_or(started);
        self.event(
            Level::Warning,
            &format!(
                "Fleet reboot slot granted: fleet= {} host= {} slot= {i}/{} ({how}, {} ms after the reboot fell due; freed when the host is healthy again, or after fleet_reboot_ttl {} s)",
                self.cfg.name,
                self.host,
                view.max_rebooting,
                started.elapsed().as_millis(),
                self.cfg.reboot_ttl.as_secs()
            ),
            EventKind::FleetSlot,
        );
        self.granted.send_replace(true);
    }

    async fn command(&mut self, conn: &mut Conn, budget: u32, cmd: Cmd) -> etcd::Result<()> {
        match cmd {
            Cmd::Show(reply) => {
                let restart_budget = self.cfg.max_restarting.map(|_| self.restart_budget);
                let v = show(conn, (budget, restart_budget), &self.cfg, &self.host).await?;
                let _ = reply.send(Ok(v));
            }
            Cmd::Hold(who, reply) => {
                conn.set_hold(&who).await?;
                let _ = reply.send(Ok(format!(
                    "fleet {}: automatic reboots are held fleet-wide until \"fleet resume\"",
                    self.cfg.name
                )));
            }
            Cmd::Resume(reply) => {
                let was = conn.clear_hold().await?;
                let _ = reply.send(Ok(if was {
                    format!("fleet {}: the operator's hold is lifted", self.cfg.name)
                } else {
                    format!("fleet {}: there was no operator hold", self.cfg.name)
                }));
            }
            Cmd::Release(host, reply) => {
                // Both kinds of slot: a host whose pcheck is gone holds either until
                // its fleet_reboot_ttl.
                let view = conn.view(budget).await?;
                let held = [
                    ("reboot", view.slot_of(&host)),
                    ("restart", view.restart_slot_of(&host)),
                ];
                let who = format!("padmin on {}", self.host);
                let mut freed = Vec::new();
                for (kind, slot) in held {
                    let Some(i) = slot else { continue };
                    conn.release_slot(kind, i, Some(&host)).await?;
                    conn.note_release(kind, &host, &who).await?;
                    freed.push(format!("{kind} slot {i}"));
                }
                let _ = reply.send(if freed.is_empty() {
                    Err(format!(
                        "host {host} holds no reboot or restart slot of fleet {}",
                        self.cfg.name
                    ))
                } else {
                    Ok(format!(
                        "fleet {}: {} of host {host} free",
                        self.cfg.name,
                        freed.join(" and ")
                    ))
                });
            }
            Cmd::GiveBack => {
                let view = conn.view(budget).await?;
                if let Some(i) = view.slot_of(&self.host) {
                    conn.release_slot("reboot", i, Some(&self.host)).await?;
                    self.event(
                        Level::Error,
                        &format!(
                            "Fleet reboot slot released: fleet= {} host= {} slot= {i}: the reboot count could not be written, so there is no reboot",
                            self.cfg.name, self.host
                        ),
                        EventKind::FleetSlot,
                    );
                }
                self.granted.send_replace(false);
                self.gave_back = true;
            }
        }
        Ok(())
    }
}

/// A padmin request about the fleet: answered from a task of its own, so the agent's
/// loop never waits for etcd.
pub fn serve(
    fleet: Option<&Fleet>,
    req: crate::admin::Request,
    reply: oneshot::Sender<crate::admin::Response>,
) {
    use crate::admin::{Request, Response};
    let Some(f) = fleet else {
        let _ = reply.send(Response::error(
            "this pfile names no fleet (fleet_etcd, fleet_name)",
        ));
        return;
    };
    let (tx, rx) = oneshot::channel();
    let (show_tx, show_rx) = oneshot::channel();
    let show = matches!(req, Request::ShowFleet);
    match req {
        Request::ShowFleet => f.request(Cmd::Show(show_tx)),
        Request::FleetHold { who } => f.request(Cmd::Hold(who, tx)),
        Request::FleetResume => f.request(Cmd::Resume(tx)),
        Request::FleetRelease { host } => f.request(Cmd::Release(host, tx)),
        _ => return,
    }
    tokio::spawn(async move {
        let wait = Duration::from_secs(10);
        let answer = if show {
            match tokio::time::timeout(wait, show_rx).await {
                Ok(Ok(Ok(v))) => Response {
                    ok: true,
                    fleet: Some(v),
                    ..Response::default()
                },
                Ok(Ok(Err(e))) => Response::error(e),
                _ => Response::error("the fleet did not answer (etcd busy or away)"),
            }
        } else {
            match tokio::time::timeout(wait, rx).await {
                Ok(Ok(Ok(m))) => Response::message(m),
                Ok(Ok(Err(e))) => Response::error(e),
                _ => Response::error("the fleet did not answer (etcd busy or away)"),
            }
        };
        let _ = reply.send(answer);
    });
}

fn reply_err(cmd: Cmd, why: &str) {
    match cmd {
        Cmd::Show(r) => {
            let _ = r.send(Err(why.to_string()));
        }
        Cmd::Hold(_, r) | Cmd::Resume(r) | Cmd::Release(_, r) => {
            let _ = r.send(Err(why.to_string()));
        }
        Cmd::GiveBack => {}
    }
}

/// `padmin -c show fleet`: members with their health and last update, slot holders
/// with their expiry, the hold state.
/// `budgets`: the reboot budget, and the restart budget when this host has one.
async fn show(
    conn: &mut Conn,
    (budget, restart_budget): (u32, Option<u32>),
    cfg: &FleetCfg,
    me: &str,
) -> etcd::Result<serde_json::Value> {
    let view = conn.view(budget).await?;
    let records = conn.members().await?;
    let slots = slots_json(conn, "reboot", &view.slots).await?;
    let restart_slots = slots_json(conn, "restart", &view.restart_slots).await?;
    let (k, n) = view.unhealthy();
    Ok(serde_json::json!({
        "fleet": cfg.name,
        "host": me,
        "max_rebooting": budget,
        "hold_ratio": cfg.hold_ratio,
        "members": records.iter().map(|(host, pfile, rec)| serde_json::json!({
            "host": host, "pfile": format!("/{pfile}"), "health": rec.health,
            "entries": rec.entries.iter().map(|(id, h)| serde_json::json!({"pent_id": id, "health": h})).collect::<Vec<_>>(),
            "updated": crate::report::format_local(rec.updated, "%Y/%m/%d %H:%M:%S"),
        })).collect::<Vec<_>>(),
        "slots": slots,
        "max_restarting": restart_budget,
        "restart_slots": restart_slots,
        "unhealthy": k,
        "hosts": n,
        "outage_hold": rules::outage(&view, cfg.hold_ratio).is_some(),
        "operator_hold": view.operator_hold,
    }))
}

/// The slots of one kind (reboot or restart) for `show fleet`: holder and expiry.
async fn slots_json(
    conn: &mut Conn,
    kind: &str,
    held: &std::collections::BTreeMap<u32, String>,
) -> etcd::Result<Vec<serde_json::Value>> {
    let mut slots = Vec::new();
    for (i, host) in held {
        let ttl = conn.slot_ttl(kind, *i).await?;
        slots.push(serde_json::json!({"slot": i, "host": host, "expires_in_s": ttl}));
    }
    Ok(slots)
}
