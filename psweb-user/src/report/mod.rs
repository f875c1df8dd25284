//! Reports: the seed's syslog lines, verbatim (SPEC 6).
//!
//! Every line goes to syslog (a datagram to /dev/log, as glibc's syslog(3) sends it:
//! `<PRI>Mmm dd hh:mm:ss pcheck[PID]: msg`) and, in the foreground, to stderr as the
//! syslog daemon would write it: `Mmm dd hh:mm:ss hostname pcheck[PID]: msg`.

pub mod notify;

use crate::core::Level;
use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// LOG_DAEMON.
const FACILITY: u8 = 3;

pub struct Logger {
    ident: &'static str,
    pid: u32,
    hostname: String,
    syslog_path: Option<PathBuf>,
    syslog: Mutex<Option<UnixDatagram>>,
    stderr: bool,
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
        let stamp = timestamp();
        if self.stderr {
            let line = format!(
                "{stamp} {} {}[{}]: {msg}\n",
                self.hostname, self.ident, self.pid
            );
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        }
        if let Some(path) = &self.syslog_path {
            let sev: u8 = match level {
                Level::Info => 6,
                Level::Warning => 4,
                Level::Error => 3,
            };
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
