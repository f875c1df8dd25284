//! Prometheus metrics (`metrics_listen = ADDR`): the prometheus-client registry, and a
//! tiny HTTP/1.1 server for it on its own task. Updating a metric is an atomic add
//! or store; a slow scraper only ever waits on its own connection.

use super::events::{Event, EventKind};
use super::{Logger, ReportError};
use crate::gate::Gate;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EntryLabels {
    pub pent_id: String,
    pub pname: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    pent_id: String,
    pname: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OverflowLabels {
    port: String,
    path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabels {
    mode: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DropLabels {
    /// `scheme://host:port` only: a path or query may hold a token.
    url: String,
    /// The webhook's place among the pfile's webhooks, from 1.
    index: String,
    reason: String,
}

fn probe_histogram() -> Histogram {
    // 1 ms .. ~16 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

pub struct Metrics {
    registry: Registry,
    up: Family<EntryLabels, Gauge>,
    restarts: Family<EntryLabels, Counter>,
    restart_count: Family<EntryLabels, Gauge>,
    proc_state: Family<StateLabels, Gauge>,
    stall_state: Family<StateLabels, Gauge>,
    lb_state: Family<StateLabels, Gauge>,
    probe: Family<EntryLabels, Histogram, fn() -> Histogram>,
    overflows: Family<OverflowLabels, Counter>,
    full_polls: Family<OverflowLabels, Counter>,
    evidence: Family<ModeLabels, Gauge>,
    reboots: Gauge,
    events: Family<KindLabels, Counter>,
    webhook_dropped: Family<DropLabels, Counter>,
    fleet_hold: Gauge,
    reboot_held: Counter,
}

pub const PROC_STATES: [&str; 4] = ["INIT", "AVAIL", "RESTART", "UNAVAIL"];
pub const STALL_STATES: [&str; 5] = ["INIT", "AVAIL", "DETECT", "UNAVAIL", "UNKNOWN"];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let m = Self {
            registry: Registry::default(),
            up: Family::default(),
            restarts: Family::default(),
            restart_count: Family::default(),
            proc_state: Family::default(),
            stall_state: Family::default(),
            lb_state: Family::default(),
            probe: Family::new_with_constructor(probe_histogram as fn() -> Histogram),
            overflows: Family::default(),
            full_polls: Family::default(),
            evidence: Family::default(),
            reboots: Gauge::default(),
            events: Family::default(),
            webhook_dropped: Family::default(),
            fleet_hold: Gauge::default(),
            reboot_held: Counter::default(),
        };
        m.register_entry_metrics(&mut registry);
        m.register_host_metrics(&mut registry);
        Self { registry, ..m }
    }

    /// The per-entry metrics: up, restarts, states, probe latency.
    fn register_entry_metrics(&self, registry: &mut Registry) {
        registry.register(
            "psweb_up",
            "1 when the entry's process runs and is watched (proc_sts AVAIL)",
            self.up.clone(),
        );
        registry.register(
            "psweb_restarts",
            "Successful restarts since this pcheck started",
            self.restarts.clone(),
        );
        registry.register(
            "psweb_entry_restarts",
            "restart_count as show pent says it (persisted across pcheck restarts)",
            self.restart_count.clone(),
        );
        registry.register(
            "psweb_proc_state",
            "1 for the entry's current proc_sts",
            self.proc_state.clone(),
        );
        registry.register(
            "psweb_stall_state",
            "1 for the entry's current stall_chk state",
            self.stall_state.clone(),
        );
        registry.register(
            "psweb_lb_state",
            "1 for what the load balancer is told of the entry (up, drain or down)",
            self.lb_state.clone(),
        );
        registry.register(
            "psweb_probe_duration_seconds",
            "Stall probe latency",
            self.probe.clone(),
        );
    }

    /// The host's metrics: accept queues, evidence, reboots, events, webhooks, fleet.
    fn register_host_metrics(&self, registry: &mut Registry) {
        registry.register(
            "psweb_accept_queue_overflows",
            "Accept-queue overflows the kernel program saw, per port and path",
            self.overflows.clone(),
        );
        registry.register(
            "psweb_accept_queue_full_polls",
            "sock_diag polls that found a watched port's accept queue full",
            self.full_polls.clone(),
        );
        registry.register(
            "psweb_evidence_mode",
            "1 for the source of death evidence in use",
            self.evidence.clone(),
        );
        registry.register(
            "psweb_auto_reboots",
            "Automatic reboots in a row (the auto-reboot count)",
            self.reboots.clone(),
        );
        registry.register(
            "psweb_events",
            "Events emitted, per kind",
            self.events.clone(),
        );
        registry.register(
            "psweb_webhook_dropped",
            "Events not delivered to a webhook (queue_full or gave_up)",
            self.webhook_dropped.clone(),
        );
        // Every kind's counter exists from the start, at 0: a rule's increase() then
        // sees the first event too.
        for k in EventKind::ALL {
            let _ = self.events.get_or_create(&KindLabels {
                kind: k.as_str().to_string(),
            });
        }
        registry.register(
            "psweb_fleet_hold",
            "1 while the fleet holds automatic reboots (outage suspected, or an operator's hold)",
            self.fleet_hold.clone(),
        );
        registry.register(
            "psweb_fleet_reboot_held",
            "Times a due automatic reboot was held by the fleet (no slot, a hold, etcd away)",
            self.reboot_held.clone(),
        );
    }

    pub fn entry_labels(pent_id: u32, pname: &str) -> EntryLabels {
        EntryLabels {
            pent_id: pent_id.to_string(),
            pname: pname.to_string(),
        }
    }

    /// The state of one entry, as `show pent` has it.
    pub fn set_entry(
        &self,
        l: &EntryLabels,
        proc_sts: &str,
        stall_sts: Option<&str>,
        restart_count: u32,
    ) {
        self.up.get_or_create(l).set(i64::from(proc_sts == "AVAIL"));
        self.restart_count
            .get_or_create(l)
            .set(i64::from(restart_count));
        let state = |s: &str| StateLabels {
            pent_id: l.pent_id.clone(),
            pname: l.pname.clone(),
            state: s.to_string(),
        };
        for s in PROC_STATES {
            self.proc_state
                .get_or_create(&state(s))
                .set(i64::from(s == proc_sts));
        }
        if let Some(cur) = stall_sts {
            for s in STALL_STATES {
                self.stall_state
                    .get_or_create(&state(s))
                    .set(i64::from(s == cur));
            }
        }
    }

    /// What the load balancer is told of an entry: 1 for `state`, 0 for the others.
    pub fn set_lb_state(&self, l: &EntryLabels, state: &str) {
        for s in ["up", "drain", "down"] {
            self.lb_state
                .get_or_create(&StateLabels {
                    pent_id: l.pent_id.clone(),
                    pname: l.pname.clone(),
                    state: s.to_string(),
                })
                .set(i64::from(s == state));
        }
    }

    pub fn observe_probe(&self, l: &EntryLabels, elapsed: Duration) {
        self.probe.get_or_create(l).observe(elapsed.as_secs_f64());
    }

    pub fn overflow(&self, port: u16, path: &str) {
        self.overflows
            .get_or_create(&OverflowLabels {
                port: port.to_string(),
                path: path.to_string(),
            })
            .inc();
    }

    pub fn full_poll(&self, port: u16) {
        self.full_polls
            .get_or_create(&OverflowLabels {
                port: port.to_string(),
                path: "sock_diag".to_string(),
            })
            .inc();
    }

    pub fn set_evidence(&self, mode: &str) {
        for m in ["ebpf", "pidfd", "procfs"] {
            self.evidence
                .get_or_create(&ModeLabels {
                    mode: m.to_string(),
                })
                .set(i64::from(m == mode));
        }
    }

    pub fn set_fleet_hold(&self, on: bool) {
        self.fleet_hold.set(i64::from(on));
    }

    pub fn set_reboots(&self, n: u32) {
        self.reboots.set(i64::from(n));
    }

    pub fn webhook_dropped(&self, url: &str, index: usize, reason: &str) {
        self.webhook_dropped
            .get_or_create(&DropLabels {
                url: url.to_string(),
                index: index.to_string(),
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Declares a watched port's overflow counters at 0 (both kernel paths and the
    /// sock_diag polls), so that dashboards show the port and the first overflow is an
    /// increase.
    pub fn declare_port(&self, port: u16) {
        for path in ["syn", "final ack"] {
            let _ = self.overflows.get_or_create(&OverflowLabels {
                port: port.to_string(),
                path: path.to_string(),
            });
        }
        let _ = self.full_polls.get_or_create(&OverflowLabels {
            port: port.to_string(),
            path: "sock_diag".to_string(),
        });
    }

    /// Declares a webhook's drop counters at 0, so that the first drop is an increase.
    /// `url` as [`Metrics::webhook_dropped`] takes it (without path or query).
    pub fn declare_webhook(&self, url: &str, index: usize) {
        for reason in ["queue_full", "gave_up"] {
            let _ = self.webhook_dropped.get_or_create(&DropLabels {
                url: url.to_string(),
                index: index.to_string(),
                reason: reason.to_string(),
            });
        }
    }

    pub fn on_event(&self, ev: &Event) {
        self.events
            .get_or_create(&KindLabels {
                kind: ev.kind.as_str().to_string(),
            })
            .inc();
        if ev.kind == EventKind::RebootHeld {
            self.reboot_held.inc();
        }
        if ev.kind == EventKind::RestartOk {
            if let (Some(id), Some(p)) = (ev.pent_id, ev.pname.as_deref()) {
                self.restarts
                    .get_or_create(&Self::entry_labels(id, p))
                    .inc();
            }
        }
    }

    /// Declares an entry's series at 0, so that they exist before anything happens.
    pub fn declare_entry(&self, l: &EntryLabels) {
        let _ = self.restarts.get_or_create(l);
    }

    /// The exposition text (OpenMetrics, which Prometheus asks for).
    pub fn render(&self) -> String {
        let mut s = String::new();
        if prometheus_client::encoding::text::encode(&mut s, &self.registry).is_err() {
            s.clear();
        }
        s
    }
}

/// The classic text format (version 0.0.4) of an OpenMetrics exposition, for scrapers
/// and linters that do not ask for OpenMetrics: a counter's `# HELP`/`# TYPE` name its
/// `_total` samples, and `# UNIT`, `# EOF` and `_created` samples go.
pub fn classic_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|t| t.split_once(' '))
        .filter(|(_, ty)| *ty == "counter")
        .map(|(name, _)| name)
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) {
                out.push_str(&format!("{prefix}{name}_total {tail}\n"));
                continue;
            }
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            if name
                .strip_suffix("_created")
                .is_some_and(|c| counters.contains(c))
            {
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// The content type and body a scrape asks for: OpenMetrics when its `Accept` header
/// names it (Prometheus does), else the classic text format.
fn exposition(request_head: &str, metrics: &Metrics) -> (&'static str, String) {
    let wants_om = request_head.lines().any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("accept") && v.contains("application/openmetrics-text")
        })
    });
    if wants_om {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            metrics.render(),
        )
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            classic_text(&metrics.render()),
        )
    }
}

/// Binds the metrics address (an error ends pcheck's start: the operator asked for it).
pub fn bind(addr: SocketAddr) -> Result<std::net::TcpListener, ReportError> {
    let l = std::net::TcpListener::bind(addr)
        .map_err(|source| ReportError::MetricsListen { addr, source })?;
    l.set_nonblocking(true)
        .map_err(|source| ReportError::MetricsSocket { addr, source })?;
    Ok(l)
}

/// Scrapes served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 16;

/// Serves `GET /metrics` (and `/`) until pcheck ends; each connection in its own task
/// (at most [`MAX_CONNECTIONS`], each with 5 s to send its request). With `allow`
/// set, a peer outside those networks is closed at once.
pub async fn serve(
    listener: std::net::TcpListener,
    metrics: Arc<Metrics>,
    log: Arc<Logger>,
    allow: Vec<crate::pfile::Cidr>,
) {
    let listener = match TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            log.error(&format!("metrics: {e}"));
            return;
        }
    };
    let mut gate = Gate::new(MAX_CONNECTIONS, Duration::from_secs(5));
    loop {
        let Some(permit) = gate.slot().await else {
            return;
        };
        let (s, peer) = match listener.accept().await {
            Ok(c) => {
                gate.accepted();
                c
            }
            Err(e) => {
                if let Some(n) = gate.failed().await {
                    log.warn(&format!(
                        "metrics: accept failed ({n} times so far): {e}; backing off"
                    ));
                }
                continue;
            }
        };
        if !allow.is_empty() && !allow.iter().any(|n| n.contains(peer.ip())) {
            continue;
        }
        let read_timeout = gate.read_timeout;
        let metrics = Arc::clone(&metrics);
        tokio::spawn(async move {
            let _permit = permit;
            answer(s, &metrics, read_timeout).await;
        });
    }
}

/// One scrape: reads the request head (within `read_timeout`), answers `GET /metrics`
/// (or `/`) with the exposition and anything else with 404, and closes.
async fn answer(mut s: tokio::net::TcpStream, metrics: &Metrics, read_timeout: Duration) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let head = tokio::time::timeout(read_timeout, async {
        loop {
            let n = s.read(&mut chunk).await.ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&chunk[..n]);
            if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.len() > 16 * 1024 {
                return Some(());
            }
        }
    })
    .await;
    if !matches!(head, Ok(Some(()))) {
        return;
    }
    let line = String::from_utf8_lossy(&buf);
    let mut words = line.split_whitespace();
    let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let (status, ctype, body) = if method == "GET" && (path == "/metrics" || path == "/") {
        let (ctype, body) = exposition(&line, metrics);
        ("200 OK", ctype, body)
    } else {
        (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found: GET /metrics\n".to_string(),
        )
    };
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), s.write_all(resp.as_bytes())).await;
    let _ = s.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_names_counters_by_their_samples() {
        let m = Metrics::new();
        let l = Metrics::entry_labels(1, "/usr/sbin/httpd");
        m.declare_entry(&l);
        m.set_entry(&l, "AVAIL", None, 2);
        m.webhook_dropped("http://h:80", 1, "gave_up");
        let om = m.render();
        assert!(om.contains("# TYPE psweb_restarts counter\n"), "{om}");
        assert!(om.ends_with("# EOF\n"), "{om}");
        let c = classic_text(&om);
        assert!(c.contains("# TYPE psweb_restarts_total counter\n"), "{c}");
        assert!(c.contains("# HELP psweb_restarts_total "), "{c}");
        assert!(
            c.contains("# TYPE psweb_webhook_dropped_total counter\n"),
            "{c}"
        );
        assert!(c.contains("# TYPE psweb_entry_restarts gauge\n"), "{c}");
        assert!(
            c.contains("psweb_entry_restarts{pent_id=\"1\",pname=\"/usr/sbin/httpd\"} 2\n"),
            "{c}"
        );
        assert!(!c.contains("# EOF"), "{c}");
        let p = prometheus_parse::Scrape::parse(c.lines().map(|l| Ok(l.to_string())))
            .expect("classic text parses");
        assert!(p.docs.contains_key("psweb_restarts_total"), "{:?}", p.docs);
    }

    #[test]
    fn openmetrics_only_when_asked_for() {
        let m = Metrics::new();
        let prom = "GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n";
        assert!(exposition(prom, &m)
            .0
            .starts_with("application/openmetrics-text"));
        let curl = "GET /metrics HTTP/1.1\r\naccept: */*\r\n\r\n";
        let (ctype, body) = exposition(curl, &m);
        assert!(ctype.starts_with("text/plain; version=0.0.4"));
        assert!(!body.contains("# EOF"));
    }
}
