//! The typed configuration that the rest of the program sees.

use super::{Diagnostic, Pos};
use serde::Serialize;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// One pfile, parsed and validated.
#[derive(Clone, Debug)]
pub struct Pfile {
    pub path: PathBuf,
    pub globals: Globals,
    pub entries: Vec<ProcEntry>,
    /// Things that parse but deserve the operator's eye (e.g. an ambiguous seed line).
    pub warnings: Vec<Diagnostic>,
}

#[derive(Clone, Debug, Default)]
pub struct Globals {
    /// Defaults for every entry (an entry's own key=value wins).
    pub defaults: EntrySettings,
    /// Which source of death evidence to use.
    pub evidence: EvidenceMode,
    /// Where pcheck serves padmin. Default: derived from the pfile's path.
    pub control_socket: Option<PathBuf>,
    /// Where the persisted state file lives: `state_dir`, else $PSWEB_STATE_DIR,
    /// else /var/opt/HA/PSWE/state ([`Globals::state_dir`]).
    pub state_dir: Option<PathBuf>,
    pub reboot: RebootPolicy,
    /// `webhook`: where events are POSTed.
    pub webhooks: Vec<WebhookUrl>,
    pub webhook_format: WebhookFormat,
    /// `webhook_queue`: events waiting per webhook (default [`DEFAULT_WEBHOOK_QUEUE`]).
    pub webhook_queue: Option<usize>,
    /// `metrics_listen`: where Prometheus metrics are served (off when unset).
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `metrics_allow`: the networks a non-loopback metrics listener answers
    /// (empty: any; a non-loopback address without it is a warning).
    pub metrics_allow: Vec<Cidr>,
    /// `webhook_header_file`: a root-only file of `Name: value` lines added to every
    /// webhook request (e.g. `Authorization: Bearer ...`).
    pub webhook_header_file: Option<PathBuf>,
    /// `shutdown_flush`: how long pcheck, stopping, waits for the webhook queues to
    /// empty, a reboot command to end and restart-script output to be logged
    /// (default [`DEFAULT_SHUTDOWN_FLUSH`]).
    pub shutdown_flush: Option<Duration>,
    /// Load-balancer listeners shared by every entry.
    pub lb: LbGlobals,
    /// `fleet_*`: coordination with the other hosts of the fleet through etcd (off
    /// when `fleet_etcd` is unset).
    pub fleet: Option<FleetCfg>,
}

/// `lb_agent_listen`, `lb_health_listen`, `lb_allow` as global keys.
#[derive(Clone, Debug, Default)]
pub struct LbGlobals {
    /// One HAProxy agent-check listener for all entries (`agent-send` names one).
    pub agent_listen: Option<std::net::SocketAddr>,
    /// The HTTP health endpoint (`GET /health`, `GET /health/<pent_id|lb_name>`).
    pub health_listen: Option<std::net::SocketAddr>,
    /// Who may connect to the load-balancer listeners (empty: anyone who can reach them).
    pub allow: Vec<Cidr>,
    /// A local HAProxy's runtime API (stats socket), told of every change at once.
    pub haproxy_socket: Option<HaproxySocket>,
}

/// Where HAProxy's runtime API listens: a UNIX socket path or a TCP address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HaproxySocket {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

impl std::fmt::Display for HaproxySocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unix(p) => write!(f, "{}", p.display()),
            Self::Tcp(a) => write!(f, "{a}"),
        }
    }
}

/// An entry's load-balancer keys.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LbEntry {
    /// An agent-check listener that speaks for this entry only.
    pub agent_listen: Option<std::net::SocketAddr>,
    /// The name an `agent-send` line or a health URL may use for this entry.
    pub name: Option<String>,
    /// After a restart, the weight ramps from 1% to 100% over this.
    pub warmup: Option<Duration>,
    /// `BACKEND/SERVER` in the HAProxy of `lb_haproxy_socket`.
    pub haproxy_server: Option<String>,
}

/// A network: address and prefix length (`10.0.0.0/8`, `::1/128`, `192.0.2.7`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Option<Self> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: std::net::IpAddr = a.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => p.parse().ok()?,
            Some(_) => return None,
            None => max,
        };
        (prefix <= max).then_some(Self { addr, prefix })
    }

    /// Whether `ip` is in this network (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr;
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// What pcheck does about automatic reboots while etcd cannot be reached.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FleetUnreachable {
    /// Hold them until etcd answers again.
    #[default]
    Hold,
    /// Reboot as a lone host would.
    Proceed,
}

/// The fleet settings of a pfile.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetCfg {
    /// `fleet_etcd`: http:// or https:// endpoints.
    pub endpoints: Vec<String>,
    pub tls_ca: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub user: Option<String>,
    pub password_file: Option<PathBuf>,
    /// `fleet_name`: the fleet's key prefix.
    pub name: String,
    /// `fleet_host`: this host's member name (default: the host name).
    pub host: Option<String>,
    /// `fleet_lease_ttl`: the member key lives this long after pcheck stops refreshing it.
    pub lease_ttl: Duration,
    /// `fleet_max_rebooting`: hosts rebooting at once (the first host's value is stored).
    pub max_rebooting: u32,
    /// `fleet_max_restarting`: stall-restarts in flight at once across the fleet (the
    /// first host's value is stored); None: no restart budget.
    pub max_restarting: Option<u32>,
    /// `fleet_reboot_ttl`: a reboot slot is freed this long after it was taken, should
    /// its host never come back.
    pub reboot_ttl: Duration,
    /// `fleet_hold_ratio`: more than this share of unhealthy hosts holds reboots.
    pub hold_ratio: f64,
    pub unreachable: FleetUnreachable,
}

impl Default for FleetCfg {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            tls_ca: None,
            tls_cert: None,
            tls_key: None,
            user: None,
            password_file: None,
            name: String::new(),
            host: None,
            lease_ttl: Duration::from_secs(30),
            max_rebooting: 1,
            max_restarting: None,
            reboot_ttl: Duration::from_secs(15 * 60),
            hold_ratio: 0.5,
            unreachable: FleetUnreachable::Hold,
        }
    }
}

pub const DEFAULT_WEBHOOK_QUEUE: usize = 1000;
pub const DEFAULT_SHUTDOWN_FLUSH: Duration = Duration::from_secs(5);

/// The body of a webhook POST.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WebhookFormat {
    /// One event, as `padmin -c events` prints it.
    #[default]
    Json,
    /// An Alertmanager v2 `/api/v2/alerts` array of one alert.
    Alertmanager,
}

/// A value the pfile cannot use, before it has a place: the parser adds file, line
/// and column ([`super::Diagnostic`]).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// A webhook URL; `url` is redacted (no path or query, which may hold a token).
    #[error("bad webhook URL {url:?}: {why}")]
    WebhookUrl { url: String, why: &'static str },
    /// An `evidence` value.
    #[error("expected auto, ebpf, pidfd or procfs, found {0:?}")]
    EvidenceMode(String),
}

/// A webhook URL: `http://host[:port][/path]` or `https://...`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WebhookUrl {
    pub raw: String,
    pub https: bool,
    /// Without brackets for an IPv6 literal.
    pub host: String,
    pub port: u16,
    /// Path and query, starting with '/'.
    pub path: String,
}

impl WebhookUrl {
    pub fn parse(url: &str) -> Result<Self, ValueError> {
        let bad = |why: &'static str| ValueError::WebhookUrl {
            url: redact_url(url),
            why,
        };
        let (https, rest) = if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else {
            return Err(bad("expected http:// or https://"));
        };
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest[i..].starts_with('/') => (&rest[..i], rest[i..].to_string()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_string()),
        };
        if authority.contains('@') {
            return Err(bad("credentials in the URL are not supported"));
        }
        let default_port = if https { 443 } else { 80 };
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let Some((h, tail)) = r.split_once(']') else {
                return Err(bad("unclosed '[' in the host"));
            };
            let port = match tail.strip_prefix(':') {
                Some(p) => p
                    .parse()
                    .map_err(|_| bad("expected a port number after ':'"))?,
                None if tail.is_empty() => default_port,
                None => return Err(bad("unexpected text after the host")),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (
                    h.to_string(),
                    p.parse()
                        .map_err(|_| bad("expected a port number after ':'"))?,
                ),
                None => (authority.to_string(), default_port),
            }
        };
        if host.is_empty() || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("expected a host name"));
        }
        if port == 0 {
            return Err(bad("port 0"));
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("spaces in the path (encode them as %20)"));
        }
        Ok(Self {
            raw: url.to_string(),
            https,
            host,
            port,
            path,
        })
    }

    /// What may be shown of the URL (logs, metrics, errors): `scheme://host:port`.
    /// The path and query may hold a token; they never leave pcheck.
    pub fn safe(&self) -> String {
        let h = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{h}:{}", self.port)
    }

    /// The `Host:` header value.
    pub fn host_header(&self) -> String {
        let h = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let default = if self.https { 443 } else { 80 };
        if self.port == default {
            h
        } else {
            format!("{h}:{}", self.port)
        }
    }
}

/// A URL as it may be shown in an error: credentials replaced by `***`, and a path
/// or query (which may hold a token) by `/...`.
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (format!("{s}://"), r),
        None => (String::new(), url),
    };
    let cut = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(cut);
    let authority = match authority.rsplit_once('@') {
        Some((_, host)) => format!("***@{host}"),
        None => authority.to_string(),
    };
    let tail = if tail.is_empty() || tail == "/" {
        tail
    } else {
        "/..."
    };
    format!("{scheme}{authority}{tail}")
}

impl Globals {
    pub fn state_dir(&self) -> PathBuf {
        self.state_dir
            .clone()
            .or_else(|| std::env::var_os("PSWEB_STATE_DIR").map(PathBuf::from))
            .unwrap_or_else(|| PathBuf::from("/var/opt/HA/PSWE/state"))
    }
}

/// Automatic reboot (seed 3.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RebootPolicy {
    pub enabled: bool,
    /// A watched server not back (AVAIL and, with a stall check, answering) for this
    /// long is a fatal fault.
    pub after: Duration,
    /// The command, run without a shell.
    pub command: Vec<String>,
    /// At most this many automatic reboots in a row...
    pub limit: u32,
    /// ...where a run with every entry healthy for this long starts the count again.
    pub reset: Duration,
}

impl Default for RebootPolicy {
    fn default() -> Self {
        Self {
            enabled: false,
            after: Duration::from_secs(300),
            command: vec!["/usr/bin/systemctl".into(), "reboot".into()],
            limit: 3,
            reset: Duration::from_secs(3600),
        }
    }
}

/// What to do when a process cannot be restarted within its retry count (seed 3.2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RetryOverAction {
    /// Drop that process from watching; keep watching the others.
    #[default]
    Continue,
    /// End pcheck (exit status 0).
    Shutdown,
    /// End pcheck with exit status [`EXIT_RETRY_OVER`], so that a cluster product or
    /// the auto-reboot feature can take over.
    Exit,
}

/// pcheck's exit status after the `exit` retry-over action.
pub const EXIT_RETRY_OVER: u8 = 3;

impl RetryOverAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Continue => "continue",
            Self::Shutdown => "shutdown",
            Self::Exit => "exit",
        }
    }
}

/// A source of death evidence: the one pcheck uses, and the one behind each death
/// report (with eBPF in use, the pidfd backstop or /proc can be the one that saw a
/// death). Its name is the pfile's word and the events' `evidence` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeathSource {
    /// The kernel's exit event (`sched_process_exit`), with the exit code.
    Ebpf,
    /// pidfd readiness.
    Pidfd,
    /// /proc polling.
    Procfs,
}

impl DeathSource {
    pub fn name(self) -> &'static str {
        match self {
            Self::Ebpf => "ebpf",
            Self::Pidfd => "pidfd",
            Self::Procfs => "procfs",
        }
    }
}

impl std::fmt::Display for DeathSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The pfile's `evidence` key (and `pcheck --evidence`): which [`DeathSource`] to
/// use. Not a source itself: `auto` asks pcheck to choose one at start.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum EvidenceMode {
    /// eBPF if it loads, else pidfd, else /proc polling.
    #[default]
    Auto,
    /// This source only (pcheck refuses to start if it cannot have it).
    Only(DeathSource),
}

impl FromStr for EvidenceMode {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, ValueError> {
        match s {
            "auto" => Ok(Self::Auto),
            "ebpf" => Ok(Self::Only(DeathSource::Ebpf)),
            "pidfd" => Ok(Self::Only(DeathSource::Pidfd)),
            "procfs" => Ok(Self::Only(DeathSource::Procfs)),
            other => Err(ValueError::EvidenceMode(other.to_string())),
        }
    }
}

/// Settings an entry may override; the pfile's globals supply the rest.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntrySettings {
    pub retry_over_action: RetryOverAction,
    /// A restart script still running after this is killed with its process group,
    /// and the attempt counts as failed.
    pub restart_timeout: Duration,
    /// After the script exits 0, how long the process has to appear (pidfile / exe).
    pub start_wait: Duration,
    /// Pause between a failed attempt and the next.
    pub retry_delay: Duration,
    /// How long the remnants of a dead service have to vanish after SIGKILL.
    pub kill_wait: Duration,
}

impl Default for EntrySettings {
    fn default() -> Self {
        Self {
            retry_over_action: RetryOverAction::Continue,
            restart_timeout: Duration::from_secs(60),
            start_wait: Duration::from_secs(10),
            retry_delay: Duration::from_secs(1),
            kill_wait: Duration::from_secs(5),
        }
    }
}

/// One process entry.
#[derive(Clone, Debug)]
pub struct ProcEntry {
    /// 1-based position among the entries (`pent_id` in `show pent`).
    pub pent_id: u32,
    /// The program watched: matched against /proc/PID/exe (or argv[0]).
    pub pname: PathBuf,
    pub restart_script: PathBuf,
    pub script_pos: Pos,
    /// How many restart attempts before the retry-over action.
    pub retry_limit: u32,
    pub pidfile: Option<PathBuf>,
    /// Run the restart script as this user (default: pcheck's own, root).
    pub user: Option<String>,
    /// `owner=`: the user the watched process runs as (default: `user`, else root).
    /// A process owned by anyone else is never adopted.
    pub owner: Option<String>,
    pub settings: EntrySettings,
    pub stall: Option<StallCheck>,
    pub line: usize,
    pub lb: LbEntry,
}

impl ProcEntry {
    /// The user the watched process must run as.
    pub fn owner_name(&self) -> &str {
        self.owner
            .as_deref()
            .or(self.user.as_deref())
            .unwrap_or("root")
    }
}

/// The three stall-check kinds (seed 3.3, 3.5, 4.2-4.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StallKind {
    /// `_bi_webserv`: HTTP HEAD.
    Web,
    /// `_bi_webservs`: HTTP HEAD over TLS.
    Ssl,
    /// `_bi_socket`: TCP connect.
    Socket,
}

impl StallKind {
    /// The tag `show pent` prints: `stall_chk (web)`.
    pub fn tag(self) -> &'static str {
        match self {
            Self::Web => "web",
            Self::Ssl => "ssl",
            Self::Socket => "skt",
        }
    }
}

/// A stall check block, typed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StallCheck {
    pub kind: StallKind,
    /// The block's name as written (`_bi_webserv`, `_bi_websevr`, ...).
    pub block_name: String,
    pub pos: Pos,
    /// Seconds between probes (>= 10, default 60).
    pub interval: Duration,
    /// Retry-over time: probes failing this long mean a stall (>= interval, default 600).
    pub duration: Duration,
    pub port: u16,
    /// Host to probe (default localhost).
    pub host: Option<String>,
    /// HTTPS probe timeout (argv[3]).
    pub probe_timeout: Option<Duration>,
    /// HTTPS HEAD path (argv[4]).
    pub path: Option<String>,
    /// EXEC error: after a stall was detected, stop stall-watching this process.
    pub stop_after_detect: bool,
    /// ACTION error: when the kill fails, run the entry's retry-over action.
    pub retry_over_on_kill_failure: bool,
    /// psweb: what may judge a stall (`evidence = probe | kernel`).
    pub evidence: StallEvidence,
    /// psweb: with kernel evidence, how long work must wait with no progress by the
    /// server before it is judged stalled (default 2 s).
    pub kernel_window: Duration,
    /// psweb: what a kernel-evidence verdict does (`kernel_action = kill | observe`).
    pub kernel_action: KernelAction,
    /// psweb: how the HTTPS check verifies the server certificate.
    pub tls_verify: TlsVerifyCfg,
    /// psweb: status classes that count as alive (None: any status line).
    pub status_classes: Option<Vec<u8>>,
}

impl StallCheck {
    /// The probe's hard timeout: argv[3] / `probe_timeout`, else the interval, at most 10 s.
    pub fn effective_probe_timeout(&self) -> Duration {
        self.probe_timeout
            .unwrap_or_else(|| self.interval.min(Duration::from_secs(10)))
    }
}

/// What may judge a stall.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StallEvidence {
    /// The seed's rule only: probes failing for the retry-over time.
    Probe,
    /// Also: work waits and the server makes no progress for `kernel_window`.
    Kernel,
}

/// What a kernel-evidence stall verdict does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KernelAction {
    /// Judge the stall: the seed's line and the forced kill.
    Kill,
    /// Only log and emit `Stall Suspected (observe only): ...`; the probe rule acts.
    Observe,
}

/// Certificate verification of the HTTPS check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TlsVerifyCfg {
    /// Against the system's trusted roots.
    System,
    /// Against this CA file (PEM).
    CaFile(PathBuf),
    /// Not verified (self-signed localhost certificates).
    Off,
}
