//! The event model: every verdict and action that people or systems page on, as one
//! typed record with a stable JSON schema (docs/events.md).
//!
//! Events are typed where they are decided (`core::Action::Log` carries a
//! [`crate::core::Tag`]); the [`Bus`] stamps them (sequence, CLOCK_MONOTONIC, wall
//! clock) and hands them on without ever waiting: to a bounded ring for
//! `padmin -c events`, to live followers (`--follow`), to each webhook's bounded
//! queue (`try_send`: a full queue drops the event and counts it), and to metrics.

pub use crate::core::{EventKind, EventSource};
use crate::core::{Level, Tag};
use crate::report::metrics::Metrics;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc};

/// How many recent events `padmin -c events` can show.
pub const RING: usize = 1000;

/// One event. Every key is always present (null when unknown).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Event {
    /// 1, 2, 3, ... in the order pcheck emitted them (since pcheck started).
    pub seq: u64,
    pub kind: EventKind,
    /// info, warning or error: the log line's severity.
    pub level: String,
    pub pent_id: Option<u32>,
    pub pname: Option<String>,
    pub pid: Option<i32>,
    /// The entry's stall-check port, or the port of an overflow.
    pub port: Option<u16>,
    pub evidence: Option<EventSource>,
    /// CLOCK_MONOTONIC in nanoseconds: for ordering and measuring.
    pub mono_ns: u64,
    /// Wall clock, RFC 3339 (UTC, milliseconds): for people only.
    pub time: String,
    pub host: String,
    /// The log line, exactly as syslog got it.
    pub message: String,
    /// `lb_state` events only: what the load balancer was told before, now, and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb: Option<LbChange>,
}

/// A change of what the load balancer is told of an entry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct LbChange {
    pub old: crate::core::lb::LbState,
    pub new: crate::core::lb::LbState,
    pub reason: String,
}

/// What the emitter knows of an event; the bus adds the rest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventInfo {
    pub kind: EventKind,
    pub pent_id: Option<u32>,
    pub pname: Option<String>,
    pub pid: Option<i32>,
    pub port: Option<u16>,
    pub evidence: Option<EventSource>,
    pub lb: Option<LbChange>,
}

impl EventInfo {
    pub fn new(kind: EventKind) -> Self {
        Self {
            kind,
            pent_id: None,
            pname: None,
            pid: None,
            port: None,
            evidence: None,
            lb: None,
        }
    }
    pub fn from_tag(tag: Tag) -> Self {
        Self {
            pid: tag.pid,
            evidence: tag.evidence,
            ..Self::new(tag.kind)
        }
    }
    /// The entry the event is about.
    pub fn entry(mut self, pent_id: u32, pname: &str, port: Option<u16>) -> Self {
        self.pent_id = Some(pent_id);
        self.pname = Some(pname.to_string());
        self.port = self.port.or(port);
        self
    }
    /// The process entry the event is about: its id, name and stall-check port.
    pub fn for_entry(self, cfg: &crate::pfile::ProcEntry) -> Self {
        self.entry(
            cfg.pent_id,
            &cfg.pname.display().to_string(),
            cfg.stall.as_ref().map(|s| s.port),
        )
    }
    pub fn pid(mut self, pid: i32) -> Self {
        self.pid = Some(pid);
        self
    }
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }
    pub fn evidence(mut self, e: EventSource) -> Self {
        self.evidence = Some(e);
        self
    }
}

/// One webhook's queue, as the bus sees it.
pub struct HookQueue {
    /// `scheme://host:port` only (what may be logged and labelled).
    pub url: String,
    /// Its place among the pfile's webhooks, from 1.
    pub index: usize,
    pub tx: mpsc::Sender<Event>,
    /// Events dropped because the queue was full (not yet reported in the log).
    pub dropped_full: AtomicU64,
}

struct Ring {
    seq: u64,
    events: VecDeque<Event>,
}

pub struct Bus {
    ring: Mutex<Ring>,
    live: broadcast::Sender<Event>,
    hooks: Vec<Arc<HookQueue>>,
    metrics: Option<Arc<Metrics>>,
    host: String,
}

impl Bus {
    pub fn new(hooks: Vec<Arc<HookQueue>>, metrics: Option<Arc<Metrics>>, host: String) -> Self {
        let (live, _) = broadcast::channel(1024);
        Self {
            ring: Mutex::new(Ring {
                seq: 0,
                events: VecDeque::with_capacity(RING),
            }),
            live,
            hooks,
            metrics,
            host,
        }
    }

    /// Stamps and publishes one event. Never blocks (a short lock on the ring only).
    pub fn emit(&self, level: Level, message: &str, info: EventInfo) {
        let Ok(mut ring) = self.ring.lock() else {
            return;
        };
        ring.seq += 1;
        let ev = Event {
            seq: ring.seq,
            kind: info.kind,
            level: level_name(level).to_string(),
            pent_id: info.pent_id,
            pname: info.pname,
            pid: info.pid,
            port: info.port,
            evidence: info.evidence,
            mono_ns: mono_ns(),
            time: rfc3339_now(),
            host: self.host.clone(),
            message: message.to_string(),
            lb: info.lb,
        };
        if ring.events.len() >= RING {
            ring.events.pop_front();
        }
        ring.events.push_back(ev.clone());
        // No follower is not an error.
        let _ = self.live.send(ev.clone());
        drop(ring);
        for h in &self.hooks {
            if let Err(mpsc::error::TrySendError::Full(_)) = h.tx.try_send(ev.clone()) {
                h.dropped_full.fetch_add(1, Ordering::Relaxed);
                if let Some(m) = &self.metrics {
                    m.webhook_dropped(&h.url, h.index, "queue_full");
                }
            }
        }
        if let Some(m) = &self.metrics {
            m.on_event(&ev);
        }
    }

    /// The recent events, oldest first.
    pub fn recent(&self) -> Vec<Event> {
        self.ring
            .lock()
            .map(|r| r.events.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// The recent events and a receiver of every later one: no gap, no repeat.
    pub fn follow(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        match self.ring.lock() {
            Ok(r) => (r.events.iter().cloned().collect(), self.live.subscribe()),
            Err(_) => (Vec::new(), self.live.subscribe()),
        }
    }

    pub fn hooks(&self) -> &[Arc<HookQueue>] {
        &self.hooks
    }
}

pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::Info => "info",
        Level::Warning => "warning",
        Level::Error => "error",
    }
}

/// CLOCK_MONOTONIC now, in nanoseconds (the clock `Instant` uses on Linux).
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into `ts`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// The wall clock as RFC 3339 in UTC with milliseconds: `2025-01-31T08:15:02.123Z`.
pub fn rfc3339_now() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(d.as_secs(), d.subsec_millis())
}

pub fn rfc3339(secs: u64, millis: u32) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(0));
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day) (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let m = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The Alertmanager v2 `/api/v2/alerts` body for one event, or None when the event
/// is not an alert ([`crate::core::alerts`]): a problem fires its alert (`endsAt` a
/// day after `now_secs`, the wall clock in seconds, when a recovery event ends it;
/// none when nothing does, so that Alertmanager's `resolve_timeout` ends it); a
/// recovery resolves the alerts of the problems it ends (`endsAt` its time), with the
/// labels they fired with.
pub fn alertmanager(ev: &Event, now_secs: u64) -> Option<serde_json::Value> {
    use crate::core::alerts::{alert_action, AlertAction, Problem, Scope, HORIZON_SECS};
    let labels = |p: &Problem| {
        let mut l = serde_json::Map::new();
        l.insert("alertname".into(), format!("psweb_{}", p.kind).into());
        l.insert("kind".into(), p.kind.as_str().into());
        l.insert("severity".into(), p.severity.into());
        l.insert("instance".into(), ev.host.clone().into());
        l.insert("job".into(), "psweb".into());
        if p.scope == Scope::Entry {
            if let Some(id) = ev.pent_id {
                l.insert("pent_id".into(), id.to_string().into());
            }
            if let Some(n) = &ev.pname {
                l.insert("pname".into(), n.clone().into());
            }
        }
        if p.kind == EventKind::Overflow {
            if let Some(port) = ev.port {
                l.insert("port".into(), port.to_string().into());
            }
        }
        l
    };
    let mut ann = serde_json::Map::new();
    ann.insert("summary".into(), ev.message.clone().into());
    if let Some(pid) = ev.pid {
        ann.insert("pid".into(), pid.to_string().into());
    }
    if let Some(port) = ev.port {
        ann.insert("port".into(), port.to_string().into());
    }
    if let Some(e) = ev.evidence {
        ann.insert(
            "evidence".into(),
            serde_json::to_value(e).unwrap_or_default(),
        );
    }
    ann.insert("seq".into(), ev.seq.to_string().into());
    match alert_action(ev.kind) {
        AlertAction::None => None,
        AlertAction::Fire(p) => {
            let mut alert = serde_json::json!({
                "labels": labels(&p),
                "annotations": ann,
                "startsAt": ev.time,
            });
            if !p.resolved_by.is_empty() {
                alert["endsAt"] = rfc3339(now_secs.saturating_add(HORIZON_SECS), 0).into();
            }
            Some(serde_json::json!([alert]))
        }
        AlertAction::Resolve(ps) => Some(serde_json::Value::Array(
            ps.iter()
                .filter(|p| p.scope == Scope::Host || ev.pent_id.is_some())
                .map(|p| {
                    serde_json::json!({
                        "labels": labels(p),
                        "annotations": ann,
                        "startsAt": ev.time,
                        "endsAt": ev.time,
                    })
                })
                .collect(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0, 0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_782_400, 5), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(1_735_689_599, 999), "2024-12-31T23:59:59.999Z");
    }

    #[test]
    fn ring_is_bounded_and_follow_has_no_gap() {
        let bus = Bus::new(Vec::new(), None, "h".into());
        for i in 0..(RING + 5) {
            bus.emit(
                Level::Info,
                &format!("m{i}"),
                EventInfo::new(EventKind::Kill),
            );
        }
        let (recent, mut rx) = bus.follow();
        assert_eq!(recent.len(), RING);
        assert_eq!(recent[0].seq, 6);
        bus.emit(
            Level::Warning,
            "next",
            EventInfo::new(EventKind::ProcessDown).pid(7),
        );
        let ev = rx.try_recv().expect("live event");
        assert_eq!(ev.seq, RING as u64 + 6);
        assert_eq!(ev.pid, Some(7));
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let (tx, _rx) = mpsc::channel(1);
        let q = Arc::new(HookQueue {
            url: "http://x:80".into(),
            index: 1,
            tx,
            dropped_full: AtomicU64::new(0),
        });
        let bus = Bus::new(vec![Arc::clone(&q)], None, "h".into());
        for _ in 0..3 {
            bus.emit(Level::Info, "m", EventInfo::new(EventKind::Kill));
        }
        assert_eq!(q.dropped_full.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn schema_has_every_key() {
        let bus = Bus::new(Vec::new(), None, "h".into());
        bus.emit(Level::Error, "m", EventInfo::new(EventKind::RetryOver));
        let v = serde_json::to_value(&bus.recent()[0]).expect("json");
        for k in [
            "seq", "kind", "level", "pent_id", "pname", "pid", "port", "evidence", "mono_ns",
            "time", "host", "message",
        ] {
            assert!(v.get(k).is_some(), "{k} missing in {v}");
        }
        assert_eq!(v["kind"], "retry_over");
        let am = alertmanager(&bus.recent()[0], 0).expect("retry_over is an alert");
        assert_eq!(am[0]["labels"]["alertname"], "psweb_retry_over");
    }

    #[test]
    fn a_recovery_resolves_its_problem_with_the_same_labels() {
        let bus = Bus::new(Vec::new(), None, "web1".into());
        let entry = |k| EventInfo::new(k).entry(1, "/usr/sbin/httpd", Some(80));
        bus.emit(Level::Info, "start", entry(EventKind::ProcessStart).pid(10));
        bus.emit(
            Level::Warning,
            "down",
            entry(EventKind::ProcessDown).pid(10),
        );
        bus.emit(Level::Info, "attempt", entry(EventKind::RestartAttempt));
        bus.emit(Level::Info, "ok", entry(EventKind::RestartOk).pid(11));
        let evs = bus.recent();
        // 2025-01-31T08:16:12Z
        let now = 1_738_311_372;
        let down = alertmanager(&evs[1], now).expect("down fires");
        assert_eq!(down.as_array().map(Vec::len), Some(1));
        assert_eq!(down[0]["endsAt"], "2025-02-01T08:16:12.000Z", "a day on");
        assert_eq!(down[0]["labels"]["severity"], "warning");
        assert_eq!(
            alertmanager(&evs[2], now),
            None,
            "an attempt is not an alert"
        );
        let ok = alertmanager(&evs[3], now).expect("restart_ok resolves");
        let resolved: Vec<&serde_json::Value> = ok
            .as_array()
            .expect("array")
            .iter()
            .filter(|a| a["labels"]["alertname"] == "psweb_process_down")
            .collect();
        assert_eq!(resolved.len(), 1, "{ok}");
        assert_eq!(resolved[0]["labels"], down[0]["labels"]);
        assert_eq!(resolved[0]["endsAt"], evs[3].time);
        // A host-wide recovery without an entry resolves only host-wide problems.
        bus.emit(Level::Info, "reset", EventInfo::new(EventKind::RebootReset));
        let reset = alertmanager(&bus.recent()[4], now).expect("reset resolves");
        assert!(reset
            .as_array()
            .expect("array")
            .iter()
            .all(|a| a["labels"].get("pent_id").is_none()));
        // A problem nothing resolves is left to Alertmanager's resolve_timeout.
        bus.emit(
            Level::Warning,
            "overflow",
            EventInfo::new(EventKind::Overflow).port(80),
        );
        let over = alertmanager(&bus.recent()[5], now).expect("overflow fires");
        assert!(over[0].get("endsAt").is_none(), "{over}");
        assert_eq!(over[0]["labels"]["port"], "80");
    }
}
