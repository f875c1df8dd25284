//! systemd's notify protocol (sd_notify(3)) by hand: READY, WATCHDOG and STOPPING
//! datagrams to $NOTIFY_SOCKET. Without the variable, nothing happens.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

pub struct Notifier {
    sock: Option<UnixDatagram>,
    /// Half of $WATCHDOG_USEC: how often to send WATCHDOG=1.
    pub watchdog_every: Option<Duration>,
}

impl Notifier {
    pub fn from_env() -> Self {
        let sock = std::env::var_os("NOTIFY_SOCKET").and_then(|path| {
            let s = UnixDatagram::unbound().ok()?;
            let bytes = path.as_encoded_bytes();
            let connected = if let Some(name) = bytes.strip_prefix(b"@") {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name)
                    .and_then(|a| s.connect_addr(&a))
            } else {
                s.connect(&path)
            };
            connected.ok().map(|()| s)
        });
        // WATCHDOG_PID, when set, must be ours.
        let for_us = std::env::var("WATCHDOG_PID")
            .ok()
            .and_then(|p| p.parse::<u32>().ok())
            .is_none_or(|p| p == std::process::id());
        let watchdog_every = std::env::var("WATCHDOG_USEC")
            .ok()
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            .map(|u| Duration::from_micros(u / 2));
        Self {
            sock,
            watchdog_every,
        }
    }

    pub fn send(&self, msg: &str) {
        if let Some(s) = &self.sock {
            let _ = s.send(msg.as_bytes());
        }
    }
}
