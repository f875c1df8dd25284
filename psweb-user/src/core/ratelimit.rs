//! How often a repeated warning is logged: a storm (an accept-queue overflow on
//! every SYN) must not flood syslog.

use std::time::{Duration, Instant};

/// At most one line per this much time, per subject (a port).
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// When a subject was last logged.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogLimit {
    last_logged: Option<Instant>,
}

impl LogLimit {
    /// Whether a line about this subject is logged `now` (and, if so, counts it).
    pub fn allow(&mut self, now: Instant) -> bool {
        let log = self
            .last_logged
            .is_none_or(|t| now.saturating_duration_since(t) >= LOG_EVERY);
        if log {
            self.last_logged = Some(now);
        }
        log
    }
}

#[cfg(test)]
mod tests {
    use super::{LogLimit, LOG_EVERY};
    use std::time::{Duration, Instant};

    #[test]
    fn one_line_per_ten_seconds() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        // (offset from t0, logged?)
        let cases = [
            (ms(0), true),
            (ms(1), false),
            (LOG_EVERY - ms(1), false),
            (LOG_EVERY, true),
            (LOG_EVERY + ms(500), false),
            (LOG_EVERY * 3, true),
            // An earlier instant (never the case on a monotonic clock) is no reason to log.
            (LOG_EVERY * 2, false),
        ];
        let mut limit = LogLimit::default();
        for (at, want) in cases {
            assert_eq!(limit.allow(t0 + at), want, "at {at:?}");
        }
    }
}
