//! The control socket that `padmin` talks to, and the protocol: one JSON request
//! line, one JSON response line.
//!
//! One socket per pfile, mode 0600, in a root-owned directory; each peer's
//! credentials are checked (root, or pcheck's own uid).

use serde::{Deserialize, Serialize};

/// A request from padmin.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    ShowPent,
    ShowKernel,
    Shutdown,
    Stop {
        pent_id: u32,
    },
    Start {
        pent_id: u32,
    },
    /// Tell the load balancer to drain the entry (until `Ready`).
    Drain {
        pent_id: u32,
    },
    /// Undo `Drain`.
    Ready {
        pent_id: u32,
    },
    /// What each entry's load balancer is told.
    ShowLb,
    /// The recent events; with `follow`, the connection stays open and every later
    /// event follows as one JSON line (the only streaming request).
    Events {
        #[serde(default)]
        follow: bool,
    },
    /// The fleet as etcd holds it (members, reboot slots, holds).
    ShowFleet,
    /// Hold automatic reboots fleet-wide (`who`: the operator, for the log).
    FleetHold {
        who: String,
    },
    FleetResume,
    /// Free the reboot slot a host holds.
    FleetRelease {
        host: String,
    },
}

impl Request {
    /// One request line as padmin sends it (surrounding whitespace ignored).
    pub fn parse(line: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(line.trim())
    }
}

/// Why the control socket could not be set up, or one padmin connection failed. The
/// text is what the operator reads (pcheck's start-up error, a `control socket:` line).
#[derive(thiserror::Error, Debug)]
pub enum AdminError {
    #[error("cannot create {dir}: {source}")]
    CreateDir { dir: String, source: std::io::Error },
    #[error("cannot open {path}: {source}")]
    OpenLock {
        path: String,
        source: std::io::Error,
    },
    #[error("refusing lock {path}: not a plain file of uid {me} (owner {owner}, {links} links)")]
    BadLock {
        path: String,
        me: u32,
        owner: String,
        links: u64,
    },
    #[error("another pcheck (pid {pid}) already watches this pfile (lock {path})")]
    Locked { pid: String, path: String },
    #[error("cannot bind {path}: {source}")]
    Bind {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("peer credentials: {0}")]
    PeerCred(std::io::Error),
    #[error("no request within {ms} ms from pid {pid:?}: closed")]
    NoRequest { ms: u128, pid: Option<i32> },
    #[error("reading a request: {0}")]
    Read(std::io::Error),
}

/// pcheck's answer.
#[derive(Clone, Debug, Serialize, Deserialize, Default)]
pub struct Response {
    pub ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entries: Vec<PentView>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelView>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<crate::report::events::Event>,
    /// `show lb`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lb: Option<Vec<crate::lb::LbEntryView>>,
    /// `show fleet`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<serde_json::Value>,
}

/// `show lb` as text: one block per entry, like `show pent`.
pub fn lb_text(views: &[crate::lb::LbEntryView]) -> String {
    let blocks: Vec<String> = views
        .iter()
        .map(|v| {
            let mut s = String::new();
            let mut line = |k: &str, v: &str| s.push_str(&format!("{k:<21}= {v}\n"));
            line("pent_id", &v.pent_id.to_string());
            line("pname", &v.pname);
            if let Some(n) = &v.lb_name {
                line("lb_name", n);
            }
            let state = match v.weight {
                Some(w) => format!("{} ({w}%)", v.state),
                None => v.state.to_string(),
            };
            line("lb_state", &state);
            line("reason", &v.reason);
            line("since", &v.since);
            s
        })
        .collect();
    blocks.join("\n")
}

/// `show fleet` as text.
pub fn fleet_text(v: &serde_json::Value) -> String {
    let mut s = String::new();
    let mut line = |k: &str, v: &str| s.push_str(&format!("{k:<21}= {v}\n"));
    let str_of = |x: &serde_json::Value| match x {
        serde_json::Value::String(t) => t.clone(),
        serde_json::Value::Null => "-----".to_string(),
        other => other.to_string(),
    };
    line("fleet", &str_of(&v["fleet"]));
    line("host", &str_of(&v["host"]));
    line(
        "unhealthy",
        &format!("{}/{}", str_of(&v["unhealthy"]), str_of(&v["hosts"])),
    );
    line("outage_hold", &str_of(&v["outage_hold"]));
    line("operator_hold", &str_of(&v["operator_hold"]));
    line("max_rebooting", &str_of(&v["max_rebooting"]));
    for m in v["members"].as_array().into_iter().flatten() {
        line(
            "member",
            &format!(
                "{} {} {} (updated {})",
                str_of(&m["host"]),
                str_of(&m["pfile"]),
                str_of(&m["health"]),
                str_of(&m["updated"])
            ),
        );
    }
    let slots = [("slots", "reboot_slot"), ("restart_slots", "restart_slot")];
    for (key, name) in slots {
        if key == "restart_slots" {
            line("max_restarting", &str_of(&v["max_restarting"]));
        }
        for sl in v[key].as_array().into_iter().flatten() {
            line(
                name,
                &format!(
                    "{} held by {} (expires in {} s)",
                    str_of(&sl["slot"]),
                    str_of(&sl["host"]),
                    str_of(&sl["expires_in_s"])
                ),
            );
        }
    }
    s
}

/// `show kernel`: where evidence comes from, and what the kernel said of each
/// watched port's accept queue.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct KernelView {
    /// Death evidence in use: ebpf, pidfd or procfs.
    pub death_evidence: String,
    /// How kernel events reach pcheck: "ring buffer", "perf array", or "none" when
    /// the eBPF programs are not loaded.
    #[serde(default)]
    pub transport: String,
    /// Whether the kernel publishes its BTF (/sys/kernel/btf/vmlinux); without it the
    /// eBPF programs cannot be loaded.
    #[serde(default)]
    pub btf: bool,
    /// Load + attach time of the eBPF programs, when loaded.
    pub load_attach_us: Option<u64>,
    /// (evidence kind, what serves it).
    pub hooks: Vec<(String, String)>,
    pub ports: Vec<PortView>,
}

/// Accept-queue evidence for one watched port.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
pub struct PortView {
    pub port: u16,
    /// Overflows seen on the SYN path (queue full where a connection is queued).
    pub syn_overflows: u64,
    /// Overflows seen on the final-ACK path (kfree_skb TCP_LISTEN_OVERFLOW).
    pub final_ack_overflows: u64,
    /// sock_diag polls that found the queue full (when eBPF does not serve this).
    pub full_polls: u64,
    /// Queue depth and limit at the last evidence.
    pub backlog: u32,
    pub max_backlog: u32,
    /// Local time of the last evidence.
    pub last_seen: Option<String>,
    /// ebpf or sock_diag.
    pub source: String,
}

impl KernelView {
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let mut line = |k: &str, v: &str| s.push_str(&format!("{k:<21}= {v}\n"));
        line("death_evidence", &self.death_evidence);
        line("transport", &self.transport);
        line("btf", if self.btf { "present" } else { "absent" });
        if let Some(us) = self.load_attach_us {
            line("load_attach", &format!("{:.1} ms", us as f64 / 1000.0));
        }
        for (what, hook) in &self.hooks {
            line("hook", &format!("{what}: {hook}"));
        }
        for p in &self.ports {
            line("port", &p.port.to_string());
            line("  source", &p.source);
            line("  overflows (syn)", &p.syn_overflows.to_string());
            line("  overflows (ack)", &p.final_ack_overflows.to_string());
            line("  full_polls", &p.full_polls.to_string());
            line(
                "  accept_queue",
                &format!("{}/{}", p.backlog, p.max_backlog),
            );
            line("  last_seen", p.last_seen.as_deref().unwrap_or("-----"));
        }
        s
    }
}

impl Response {
    pub fn error(msg: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(msg.into()),
            ..Self::default()
        }
    }
    pub fn message(msg: impl Into<String>) -> Self {
        Self {
            ok: true,
            message: Some(msg.into()),
            ..Self::default()
        }
    }
}

/// One process entry as `show pent` shows it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PentView {
    pub pname: String,
    pub pid: Option<i32>,
    pub retry_count: u32,
    /// The entry's configured retry count (not in the seed's text block).
    pub retry_limit: u32,
    pub restart_count: u32,
    pub proc_sts: String,
    /// (tag, state): ("web", "AVAIL").
    pub stall_chk: Option<(String, String)>,
    pub retry_over_act: String,
    /// Local time of the last successful restart, `YYYY/MM/DD hh:mm:ss`.
    pub rerun_time: Option<String>,
    pub pent_id: u32,
    pub monitor_sts: String,
    /// Where death evidence comes from for this entry (ebpf, pidfd, procfs).
    pub evidence: String,
    /// What the load balancer is told: up, drain or down (not in the seed's block).
    #[serde(default)]
    pub lb_state: Option<crate::core::lb::LbState>,
}

impl PentView {
    /// The seed's block (SPEC 5), exactly.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let mut line = |k: &str, v: &str| {
            s.push_str(&format!("{k:<21}= {v}\n"));
        };
        line("pname", &self.pname);
        line(
            "pid",
            &self
                .pid
                .map_or_else(|| "-----".to_string(), |p| p.to_string()),
        );
        line("retry_count", &self.retry_count.to_string());
        line("restart_count", &self.restart_count.to_string());
        line("proc_sts", &self.proc_sts);
        if let Some((tag, st)) = &self.stall_chk {
            line(&format!("stall_chk ({tag})"), st);
        }
        line("retry_over_act", &self.retry_over_act);
        line("rerun_time", self.rerun_time.as_deref().unwrap_or("-----"));
        line("pent_id", &self.pent_id.to_string());
        line("monitor_sts", &self.monitor_sts);
        s
    }
}

pub mod server;
pub mod view;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn show_pent_text_is_the_seed_block() {
        let v = PentView {
            pname: "/opt/HA/PS/test_pm".into(),
            pid: Some(26206),
            retry_count: 0,
            retry_limit: 3,
            restart_count: 0,
            proc_sts: "AVAIL".into(),
            stall_chk: Some(("web".into(), "AVAIL".into())),
            retry_over_act: "continue".into(),
            rerun_time: None,
            pent_id: 1,
            monitor_sts: "on".into(),
            evidence: "pidfd".into(),
            lb_state: Some(crate::core::lb::LbState::Up),
        };
        let seed = "\
pname                = /opt/HA/PS/test_pm
pid                  = 26206
retry_count          = 0
restart_count        = 0
proc_sts             = AVAIL
stall_chk (web)      = AVAIL
retry_over_act       = continue
rerun_time           = -----
pent_id              = 1
monitor_sts          = on
";
        assert_eq!(v.to_text(), seed);
    }

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::ShowPent,
            Request::ShowKernel,
            Request::Shutdown,
            Request::Stop { pent_id: 2 },
            Request::Start { pent_id: 1 },
            Request::Events { follow: true },
            Request::Events { follow: false },
            Request::Drain { pent_id: 1 },
            Request::Ready { pent_id: 1 },
            Request::ShowLb,
        ] {
            let s = serde_json::to_string(&r).expect("serialises");
            assert_eq!(serde_json::from_str::<Request>(&s).expect("parses"), r);
        }
    }
}
