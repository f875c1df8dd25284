//! Which events are alerts (`webhook_format = alertmanager`): a problem event fires
//! the alert named after it; a recovery event resolves the problems it ends, with the
//! same labels, so Alertmanager sees one alert per problem, from its start to its end.
//! Other events (starts, attempts, probes) are not alerts.

use super::EventKind;

/// Whether an alert is about one process entry or about the whole pcheck.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    Entry,
    Host,
}

/// A problem that is an alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Problem {
    pub kind: EventKind,
    /// The `severity` label: fixed per problem, so that its resolution has the same.
    pub severity: &'static str,
    pub scope: Scope,
    /// The events that end it. Empty: nothing does; Alertmanager's `resolve_timeout`
    /// ends it.
    pub resolved_by: &'static [EventKind],
}

/// An entry's process runs again under watch.
const RUNS_AGAIN: &[EventKind] = &[
    EventKind::RestartOk,
    EventKind::ProcessStart,
    EventKind::ProcessAdopt,
];

const STALL_ENDS: &[EventKind] = &[
    EventKind::StallRecovered,
    EventKind::RestartOk,
    EventKind::ProcessStart,
    EventKind::ProcessAdopt,
];

pub const PROBLEMS: [Problem; 12] = [
    Problem {
        kind: EventKind::ProcessDown,
        severity: "warning",
        scope: Scope::Entry,
        resolved_by: RUNS_AGAIN,
    },
    Problem {
        kind: EventKind::RetryOver,
        severity: "critical",
        scope: Scope::Entry,
        resolved_by: RUNS_AGAIN,
    },
    Problem {
        kind: EventKind::StallDetected,
        severity: "critical",
        scope: Scope::Entry,
        resolved_by: STALL_ENDS,
    },
    Problem {
        kind: EventKind::KillFailed,
        severity: "critical",
        scope: Scope::Entry,
        resolved_by: STALL_ENDS,
    },
    Problem {
        kind: EventKind::Reboot,
        severity: "critical",
        scope: Scope::Host,
        resolved_by: &[EventKind::PcheckStart, EventKind::RebootReset],
    },
    Problem {
        kind: EventKind::RebootThreshold,
        severity: "critical",
        scope: Scope::Host,
        resolved_by: &[EventKind::RebootReset],
    },
    Problem {
        kind: EventKind::EvidenceMode,
        severity: "warning",
        scope: Scope::Host,
        // A new pcheck asks for its evidence again (and says so if it falls back).
        resolved_by: &[EventKind::PcheckStart],
    },
    Problem {
        kind: EventKind::Overflow,
        severity: "warning",
        scope: Scope::Host,
        resolved_by: &[],
    },
    // The fleet: a due reboot waits (until it gets its reboot slot, or pcheck starts
    // again). A restart slot is no answer to it.
    Problem {
        kind: EventKind::RebootHeld,
        severity: "warning",
        scope: Scope::Host,
        resolved_by: &[EventKind::FleetSlot, EventKind::PcheckStart],
    },
    // The fleet: a stall kill waits for a restart slot (until it gets one, or pcheck
    // starts again). A reboot slot is no answer to it.
    Problem {
        kind: EventKind::RestartHeld,
        severity: "warning",
        scope: Scope::Host,
        resolved_by: &[EventKind::RestartSlot, EventKind::PcheckStart],
    },
    // An outage is suspected, or an operator holds the fleet's reboots.
    Problem {
        kind: EventKind::FleetHold,
        severity: "critical",
        scope: Scope::Host,
        resolved_by: &[EventKind::FleetResume, EventKind::PcheckStart],
    },
    Problem {
        kind: EventKind::FleetEtcdLost,
        severity: "warning",
        scope: Scope::Host,
        resolved_by: &[EventKind::FleetEtcdBack, EventKind::PcheckStart],
    },
];

/// How long a problem's alert stays active in Alertmanager without its recovery (its
/// `endsAt`): pcheck posts each alert once, and Alertmanager would otherwise end it
/// after its `resolve_timeout` (5 minutes by default) while the problem lasts.
pub const HORIZON_SECS: u64 = 24 * 3600;

/// What an event does to the alerts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AlertAction {
    /// Fires this problem's alert.
    Fire(Problem),
    /// Resolves these problems' alerts.
    Resolve(Vec<Problem>),
    /// Not an alert.
    None,
}

pub fn alert_action(kind: EventKind) -> AlertAction {
    if let Some(p) = PROBLEMS.iter().find(|p| p.kind == kind) {
        return AlertAction::Fire(*p);
    }
    let ends: Vec<Problem> = PROBLEMS
        .iter()
        .filter(|p| p.resolved_by.contains(&kind))
        .copied()
        .collect();
    if ends.is_empty() {
        AlertAction::None
    } else {
        AlertAction::Resolve(ends)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(a: &AlertAction) -> Vec<&'static str> {
        match a {
            AlertAction::Fire(p) => vec![p.kind.as_str()],
            AlertAction::Resolve(ps) => ps.iter().map(|p| p.kind.as_str()).collect(),
            AlertAction::None => vec![],
        }
    }

    #[test]
    fn every_kind_has_its_role() {
        use EventKind::*;
        let table: &[(EventKind, &str, &[&str])] = &[
            (
                PcheckStart,
                "resolve",
                &[
                    "reboot",
                    "evidence_mode",
                    "reboot_held",
                    "restart_held",
                    "fleet_hold",
                    "fleet_etcd_lost",
                ],
            ),
            (PcheckStop, "none", &[]),
            (
                ProcessStart,
                "resolve",
                &[
                    "process_down",
                    "retry_over",
                    "stall_detected",
                    "kill_failed",
                ],
            ),
            (
                ProcessAdopt,
                "resolve",
                &[
                    "process_down",
                    "retry_over",
                    "stall_detected",
                    "kill_failed",
                ],
            ),
            (ProcessDown, "fire", &["process_down"]),
            (RestartAttempt, "none", &[]),
            (
                RestartOk,
                "resolve",
                &[
                    "process_down",
                    "retry_over",
                    "stall_detected",
                    "kill_failed",
                ],
            ),
            (RestartFailed, "none", &[]),
            (RetryOver, "fire", &["retry_over"]),
            (ProbeFailed, "none", &[]),
            (StallDetected, "fire", &["stall_detected"]),
            (
                StallRecovered,
                "resolve",
                &["stall_detected", "kill_failed"],
            ),
            (StallEvidence, "none", &[]),
            (StallSuspected, "none", &[]),
            (Kill, "none", &[]),
            (KillFailed, "fire", &["kill_failed"]),
            (Reboot, "fire", &["reboot"]),
            (RebootThreshold, "fire", &["reboot_threshold"]),
            (RebootReset, "resolve", &["reboot", "reboot_threshold"]),
            (EvidenceMode, "fire", &["evidence_mode"]),
            (Overflow, "fire", &["overflow"]),
            (MonitorOn, "none", &[]),
            (MonitorOff, "none", &[]),
            (LbState, "none", &[]),
            (RebootHeld, "fire", &["reboot_held"]),
            (FleetHold, "fire", &["fleet_hold"]),
            (FleetResume, "resolve", &["fleet_hold"]),
            (FleetSlot, "resolve", &["reboot_held"]),
            (FleetEtcdLost, "fire", &["fleet_etcd_lost"]),
            (FleetEtcdBack, "resolve", &["fleet_etcd_lost"]),
            (RestartHeld, "fire", &["restart_held"]),
            (RestartSlot, "resolve", &["restart_held"]),
        ];
        assert_eq!(table.len(), EventKind::ALL.len());
        for (kind, role, problems) in table {
            let a = alert_action(*kind);
            let got = match a {
                AlertAction::Fire(_) => "fire",
                AlertAction::Resolve(_) => "resolve",
                AlertAction::None => "none",
            };
            assert_eq!((got, names(&a).as_slice()), (*role, *problems), "{kind}");
        }
    }

    #[test]
    fn a_resolution_has_the_scope_of_its_problem() {
        for p in PROBLEMS {
            for r in p.resolved_by {
                let host_wide = matches!(
                    r,
                    EventKind::PcheckStart
                        | EventKind::RebootReset
                        | EventKind::FleetResume
                        | EventKind::FleetSlot
                        | EventKind::RestartSlot
                        | EventKind::FleetEtcdBack
                );
                assert_eq!(host_wide, p.scope == Scope::Host, "{} by {r}", p.kind);
            }
        }
    }

    #[test]
    fn each_slot_resolves_its_own_held_alert() {
        use EventKind::*;
        // (held alert, a slot event, resolves it)
        let table = [
            (RebootHeld, FleetSlot, true),
            (RebootHeld, RestartSlot, false),
            (RestartHeld, RestartSlot, true),
            (RestartHeld, FleetSlot, false),
        ];
        for (held, slot, resolves) in table {
            let ends = match alert_action(slot) {
                AlertAction::Resolve(ps) => ps.iter().any(|p| p.kind == held),
                _ => false,
            };
            assert_eq!(ends, resolves, "{slot} resolves {held}");
        }
    }
}
