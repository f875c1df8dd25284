//! Automatic reboot (seed 3.4): the decision, pure like the rest of `core`.
//!
//! A fatal fault is an entry that has not been healthy (running and, with a stall
//! check, answering) for `reboot_after`. Then the host is rebooted — at most
//! `reboot_limit` times in a row: the count is persisted across reboots and starts
//! again only after every entry has been healthy for `reboot_reset`. Both durations
//! are measured on the monotonic clock within one boot, so a date change can neither
//! cause nor prevent a reboot.

use super::{event, Action, EventKind, Level, Tag};
use crate::pfile::RebootPolicy;
use std::time::{Duration, Instant};

#[derive(Clone, Debug)]
pub struct RebootGuard {
    pub policy: RebootPolicy,
    /// Automatic reboots in a row (persisted).
    pub count: u32,
    healthy_since: Option<Instant>,
    /// This pcheck has run the reboot command once (a real reboot ends it).
    fired: bool,
    threshold_logged: bool,
}

impl RebootGuard {
    pub fn new(policy: RebootPolicy, count: u32) -> Self {
        Self {
            policy,
            count,
            healthy_since: None,
            fired: false,
            threshold_logged: false,
        }
    }

    /// Whether this pcheck has run the reboot command.
    pub fn fired(&self) -> bool {
        self.fired
    }

    /// Whether the limit stops further reboots.
    pub fn at_limit(&self) -> bool {
        self.count >= self.policy.limit
    }

    /// Called about once a second. `worst`: the entry down longest, and for how long
    /// (None: every entry is healthy).
    pub fn on_tick(&mut self, now: Instant, worst: Option<(u32, Duration)>) -> Vec<Action> {
        let mut out = Vec::new();
        if !self.policy.enabled {
            return out;
        }
        match worst {
            None => {
                let since = *self.healthy_since.get_or_insert(now);
                if self.count > 0 && now.saturating_duration_since(since) >= self.policy.reset {
                    out.push(event(
                        Level::Info,
                        format!(
                            "Auto Reboot: every entry healthy for {} s: reboot count {} reset to 0",
                            self.policy.reset.as_secs(),
                            self.count
                        ),
                        Tag::new(EventKind::RebootReset),
                    ));
                    self.count = 0;
                    self.threshold_logged = false;
                    out.push(Action::Persist);
                }
            }
            Some((pent_id, down)) => {
                self.healthy_since = None;
                if down >= self.policy.after {
                    self.fatal(
                        &format!(
                            "pent_id= {pent_id} not back for {} s (reboot_after {} s)",
                            down.as_secs(),
                            self.policy.after.as_secs()
                        ),
                        &mut out,
                    );
                }
            }
        }
        out
    }

    fn fatal(&mut self, reason: &str, out: &mut Vec<Action>) {
        if self.fired {
            return;
        }
        if self.at_limit() {
            if !self.threshold_logged {
                self.threshold_logged = true;
                out.push(event(
                    Level::Error,
                    format!(
                        "Auto Reboot suppressed: {reason}; {} automatic reboots in a row reached reboot_limit {}: the host stays up",
                        self.count, self.policy.limit
                    ),
                Tag::new(EventKind::RebootThreshold)));
            }
            return;
        }
        self.fired = true;
        self.count += 1;
        out.push(event(
            Level::Error,
            format!(
                "Fatal fault: {reason}: Auto Reboot {}/{}: {}",
                self.count,
                self.policy.limit,
                self.policy.command.join(" ")
            ),
            Tag::new(EventKind::Reboot),
        ));
        // Persisted before the command runs: the count must survive the reboot.
        out.push(Action::Persist);
        out.push(Action::Reboot { count: self.count });
    }
}

/// How many reboot records the state file keeps (the most recent).
pub const REBOOT_HISTORY: usize = 20;

/// Drops the oldest records beyond [`REBOOT_HISTORY`] (records are in the order they
/// happened).
pub fn bound_history<T>(records: &mut Vec<T>) {
    let excess = records.len().saturating_sub(REBOOT_HISTORY);
    records.drain(..excess);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(limit: u32) -> RebootPolicy {
        RebootPolicy {
            enabled: true,
            after: Duration::from_secs(60),
            command: vec!["/bin/true".into()],
            limit,
            reset: Duration::from_secs(600),
        }
    }

    fn kinds(a: &[Action]) -> Vec<Action> {
        a.iter()
            .filter(|a| !matches!(a, Action::Log(..)))
            .cloned()
            .collect()
    }

    #[test]
    fn reboots_once_the_fault_lasts_reboot_after() {
        let t = Instant::now();
        let mut g = RebootGuard::new(policy(3), 0);
        assert!(g.on_tick(t, Some((1, Duration::from_secs(59)))).is_empty());
        let a = g.on_tick(t, Some((1, Duration::from_secs(60))));
        assert_eq!(
            kinds(&a),
            vec![Action::Persist, Action::Reboot { count: 1 }]
        );
        assert_eq!(g.count, 1);
        // One reboot per pcheck: a real reboot ends it.
        assert!(g.on_tick(t, Some((1, Duration::from_secs(120)))).is_empty());
    }

    #[test]
    fn the_limit_keeps_the_host_up_and_says_so_once() {
        let t = Instant::now();
        let mut g = RebootGuard::new(policy(2), 2);
        let a = g.on_tick(t, Some((1, Duration::from_secs(60))));
        assert!(kinds(&a).is_empty());
        assert!(
            matches!(&a[..], [Action::Log(Level::Error, m, _)] if m.contains("reached reboot_limit 2"))
        );
        assert!(g.on_tick(t, Some((1, Duration::from_secs(61)))).is_empty());
    }

    #[test]
    fn a_healthy_run_of_reboot_reset_starts_the_count_again() {
        let t = Instant::now();
        let mut g = RebootGuard::new(policy(2), 2);
        assert!(g.on_tick(t, None).is_empty());
        assert!(g.on_tick(t + Duration::from_secs(599), None).is_empty());
        // A fault in between restarts the healthy clock.
        g.on_tick(
            t + Duration::from_secs(599),
            Some((1, Duration::from_secs(1))),
        );
        assert!(g.on_tick(t + Duration::from_secs(700), None).is_empty());
        let a = g.on_tick(t + Duration::from_secs(1300), None);
        assert_eq!(kinds(&a), vec![Action::Persist]);
        assert_eq!(g.count, 0);
    }

    #[test]
    fn disabled_does_nothing() {
        let mut p = policy(3);
        p.enabled = false;
        let mut g = RebootGuard::new(p, 0);
        assert!(g
            .on_tick(Instant::now(), Some((1, Duration::from_secs(9999))))
            .is_empty());
    }

    #[test]
    fn reboot_history_keeps_the_last_twenty() {
        // (records before, records after, first kept)
        for (before, after, first) in [
            (0, 0, None),
            (1, 1, Some(0)),
            (20, 20, Some(0)),
            (21, 20, Some(1)),
            (45, 20, Some(25)),
        ] {
            let mut v: Vec<usize> = (0..before).collect();
            super::bound_history(&mut v);
            assert_eq!(
                (v.len(), v.first().copied()),
                (after, first),
                "{before} records"
            );
        }
    }
}
