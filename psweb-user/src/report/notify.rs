//! systemd's notify protocol (sd_notify(3)) through the `sd-notify` crate: READY,
//! WATCHDOG and STOPPING datagrams to $NOTIFY_SOCKET (a path or an abstract `@name`).
//! Without the variable, nothing is sent.

use std::time::Duration;

use sd_notify::NotifyState;

pub struct Notifier {
    /// Half of $WATCHDOG_USEC (when $WATCHDOG_PID, if set, is ours): how often to send
    /// WATCHDOG=1.
    pub watchdog_every: Option<Duration>,
}

impl Notifier {
    pub fn from_env() -> Self {
        let watchdog_every = sd_notify::watchdog_enabled()
            .filter(|d| !d.is_zero())
            .map(|d| d / 2);
        Self { watchdog_every }
    }

    /// READY=1, with a STATUS line for `systemctl status`.
    pub fn ready(&self, status: &str) {
        send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// WATCHDOG=1: pcheck's loop is alive.
    pub fn watchdog(&self) {
        send(&[NotifyState::Watchdog]);
    }

    /// STOPPING=1: pcheck is shutting down.
    pub fn stopping(&self) {
        send(&[NotifyState::Stopping]);
    }
}

/// A lost notification is not pcheck's failure: systemd notices a missing READY or
/// WATCHDOG by itself. Said at debug level for whoever looks.
fn send(states: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(states) {
        log::debug!("sd_notify: {e}");
    }
}
