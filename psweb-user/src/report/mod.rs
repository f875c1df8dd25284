//! Reports: the seed's syslog lines, verbatim (SPEC 6).
//!
//! Every line goes to syslog (a datagram to /dev/log, as glibc's syslog(3) sends it:
//! `<PRI>Mmm dd hh:mm:ss pcheck[PID]: msg`) and, in the foreground, to stderr as the
//! syslog daemon would write it: `Mmm dd hh:mm:ss hostname pcheck[PID]: msg`.
//!
//! Under systemd (or `pcheck --journal PATH`), lines go to the journal's native
//! socket instead, with structured fields (PSWEB_EVENT, PSWEB_ENTRY, PSWEB_PID,
//! PSWEB_PORT, ...) and MESSAGE the same text. A line that is an event
//! ([`Logger::event`]) also goes to the event bus (`events`): `padmin -c events`,
//! webhooks, metrics. Lines written through the `log` facade (the eBPF loader,
//! aya-log, libraries) reach the same outputs through [`facade`].

mod error;
pub mod events;
pub mod facade;
pub mod metrics;
pub mod notify;
pub mod webhook;

pub use error::ReportError;

use crate::core::Level;
use events::{Bus, EventInfo};
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// LOG_DAEMON.
const FACILITY: u8 = 3;

pub struct Logger {
    ident: &'static str,
    pid: u32,
    hostname: String,
    syslog_path: Option<PathBuf>,
    syslog: Mutex<Option<UnixDatagram>>,
    stderr: bool,
    journal: Option<Journal>,
    bus: OnceLock<Arc<Bus>>,
}

/// journald's native protocol (systemd.journal-fields(7)): one datagram of
/// `KEY=value` lines per entry.
struct Journal {
    path: PathBuf,
    sock: Option<UnixDatagram>,
    /// Our stderr is the journal (systemd's JOURNAL_STREAM): do not copy lines there too.
    stderr_is_journal: bool,
}

/// Where the journal is: `--journal auto` (the default) finds it only when systemd
/// started pcheck with its stderr on the journal (JOURNAL_STREAM) and the native
/// socket exists; `none` never; any other value is the socket's path.
pub fn journal_socket(arg: &str) -> Option<(PathBuf, bool)> {
    const NATIVE: &str = "/run/systemd/journal/socket";
    match arg {
        "none" => None,
        "auto" => {
            let stream = std::env::var("JOURNAL_STREAM").ok()?;
            let on_journal = stderr_matches(&stream);
            Path::new(NATIVE)
                .exists()
                .then(|| (PathBuf::from(NATIVE), on_journal))
        }
        p => Some((PathBuf::from(p), false)),
    }
}

/// JOURNAL_STREAM is `device:inode` of the journal stream; true when it is our stderr.
fn stderr_matches(stream: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(meta.dev()) && ino.parse::<u64>().ok() == Some(meta.ino())
}

impl Journal {
    fn send(&self, fields: &[(&str, String)]) -> bool {
        let Some(sock) = &self.sock else {
            return false;
        };
        let mut d = Vec::with_capacity(256);
        for (k, v) in fields {
            d.extend_from_slice(k.as_bytes());
            if v.contains('\n') {
                d.push(b'\n');
                d.extend_from_slice(&(v.len() as u64).to_le_bytes());
                d.extend_from_slice(v.as_bytes());
                d.push(b'\n');
            } else {
                d.push(b'=');
                d.extend_from_slice(v.as_bytes());
                d.push(b'\n');
            }
        }
        sock.send_to(&d, &self.path).is_ok()
    }
}

impl Logger {
    /// `syslog`: the socket to send to (None: no syslog). `stderr`: also write there.
    pub fn new(ident: &'static str, syslog: Option<&Path>, stderr: bool) -> Self {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "localhost".into());
        Self {
            ident,
            pid: std::process::id(),
            hostname,
            syslog_path: syslog.map(Path::to_path_buf),
            syslog: Mutex::new(None),
            stderr,
            journal: None,
            bus: OnceLock::new(),
        }
    }

    /// Sends lines to the journal's native socket at `path` (see [`journal_socket`]).
    pub fn with_journal(mut self, path: PathBuf, stderr_is_journal: bool) -> Self {
        self.journal = Some(Journal {
            sock: UnixDatagram::unbound().ok(),
            path,
            stderr_is_journal,
        });
        self
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// From now on, events also go to `bus`.
    pub fn attach(&self, bus: Arc<Bus>) {
        let _ = self.bus.set(bus);
    }

    pub fn bus(&self) -> Option<&Arc<Bus>> {
        self.bus.get()
    }

    /// A log line that is an event: logged as [`Logger::log`] does (with the event's
    /// fields in the journal), then published.
    pub fn event(&self, level: Level, msg: &str, info: EventInfo) {
        self.write(level, msg, Some(&info));
        if let Some(bus) = self.bus.get() {
            bus.emit(level, msg, info);
        }
    }

    pub fn info(&self, msg: &str) {
        self.log(Level::Info, msg);
    }
    pub fn warn(&self, msg: &str) {
        self.log(Level::Warning, msg);
    }
    pub fn error(&self, msg: &str) {
        self.log(Level::Error, msg);
    }

    pub fn log(&self, level: Level, msg: &str) {
        self.write(level, msg, None);
    }

    fn write(&self, level: Level, msg: &str, info: Option<&EventInfo>) {
        let stamp = timestamp();
        let sev: u8 = match level {
            Level::Info => 6,
            Level::Warning => 4,
            Level::Error => 3,
        };
        let mut journaled = false;
        if let Some(j) = &self.journal {
            let mut f: Vec<(&str, String)> = vec![
                ("MESSAGE", msg.to_string()),
                ("PRIORITY", sev.to_string()),
                ("SYSLOG_FACILITY", FACILITY.to_string()),
                ("SYSLOG_IDENTIFIER", self.ident.to_string()),
                ("SYSLOG_PID", self.pid.to_string()),
            ];
            if let Some(i) = info {
                f.push(("PSWEB_EVENT", i.kind.as_str().to_string()));
                if let Some(id) = i.pent_id {
                    f.push(("PSWEB_ENTRY", id.to_string()));
                }
                if let Some(p) = &i.pname {
                    f.push(("PSWEB_PNAME", p.clone()));
                }
                if let Some(p) = i.pid {
                    f.push(("PSWEB_PID", p.to_string()));
                }
                if let Some(p) = i.port {
                    f.push(("PSWEB_PORT", p.to_string()));
                }
                if let Some(e) = i.evidence {
                    if let Ok(serde_json::Value::String(e)) = serde_json::to_value(e) {
                        f.push(("PSWEB_EVIDENCE", e));
                    }
                }
            }
            journaled = j.send(&f);
            if journaled && j.stderr_is_journal {
                // journald forwards to syslog itself; stderr is the journal too.
                return;
            }
        }
        if self.stderr {
            let line = format!(
                "{stamp} {} {}[{}]: {msg}\n",
                self.hostname, self.ident, self.pid
            );
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
        if let Some(path) = self.syslog_path.as_ref().filter(|_| !journaled) {
            let pri = FACILITY * 8 + sev;
            let datagram = format!("<{pri}>{stamp} {}[{}]: {msg}", self.ident, self.pid);
            let Ok(mut guard) = self.syslog.lock() else {
                return;
            };
            if guard.is_none() {
                *guard = UnixDatagram::unbound()
                    .ok()
                    .filter(|s| s.connect(path).is_ok());
            }
            let sent = guard
                .as_ref()
                .is_some_and(|s| s.send(datagram.as_bytes()).is_ok());
            if !sent {
                // The syslog daemon may have restarted: reconnect once next time.
                *guard = None;
            }
        }
    }
}

/// `Mmm dd hh:mm:ss` in local time, as syslog writes it. Wall-clock time appears
/// only here, in log and event timestamps.
pub fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_local(now, "%b %e %H:%M:%S")
}

/// A wall-clock time as padmin prints it (and the state file records it).
pub fn local_time(t: std::time::SystemTime) -> String {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format_local(secs, "%Y/%m/%d %H:%M:%S")
}

/// Formats seconds since the epoch in local time with strftime(3).
pub fn format_local(secs: u64, fmt: &str) -> String {
    let t = libc::time_t::try_from(secs).unwrap_or(0);
    // SAFETY: localtime_r and strftime write only into the buffers we pass.
    unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&t, &mut tm).is_null() {
            return secs.to_string();
        }
        let Ok(cfmt) = std::ffi::CString::new(fmt) else {
            return secs.to_string();
        };
        let mut buf = [0u8; 64];
        let n = libc::strftime(buf.as_mut_ptr().cast(), buf.len(), cfmt.as_ptr(), &tm);
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}
