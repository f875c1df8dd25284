//! The fleet's rules, pure: which hosts are unhealthy, when the fleet is in an outage
//! (hold), and whether this host may take a reboot slot. The etcd side (`crate::fleet`)
//! reads the fleet into a [`View`] and carries out the [`SlotDecision`].

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// The health of one entry, as the fleet sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Health {
    Up,
    Stalled,
    Restarting,
    RetryOver,
    Rebooting,
}

impl Health {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Stalled => "stalled",
            Self::Restarting => "restarting",
            Self::RetryOver => "retry-over",
            Self::Rebooting => "rebooting",
        }
    }
}

impl fmt::Display for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One entry's health from its decision state: `down` is whether the entry is not
/// healthy (not running, or its stall check not answering), as the reboot rule sees it.
pub fn entry_health(down: bool, proc_sts: super::ProcSts, rebooting: bool) -> Health {
    if rebooting {
        return Health::Rebooting;
    }
    if !down {
        return Health::Up;
    }
    match proc_sts {
        super::ProcSts::Unavail => Health::RetryOver,
        // Running, but its stall check does not answer.
        super::ProcSts::Avail => Health::Stalled,
        _ => Health::Restarting,
    }
}

/// What the fleet looks like in etcd at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct View {
    /// host -> (pfile -> health of that pfile's worst entry). Only live members
    /// (their lease-bound keys exist).
    pub members: BTreeMap<String, BTreeMap<String, Health>>,
    /// Reboot slot index -> the host holding it.
    pub slots: BTreeMap<u32, String>,
    /// The fleet's reboot budget (as stored in etcd).
    pub max_rebooting: u32,
    /// An operator's hold (`padmin -c fleet hold`): who set it.
    pub operator_hold: Option<String>,
    /// Restart slot index -> the host holding it (stall-restarts in flight).
    pub restart_slots: BTreeMap<u32, String>,
    /// The fleet's restart budget (as stored in etcd; 0 when this host has none).
    pub max_restarting: u32,
}

impl View {
    /// Hosts that are members or hold a slot, each with whether it is unhealthy. A
    /// slot holder without a live member key is rebooting: unhealthy.
    pub fn hosts(&self) -> BTreeMap<&str, bool> {
        let mut out: BTreeMap<&str, bool> = self
            .members
            .iter()
            .map(|(h, pf)| (h.as_str(), pf.values().any(|x| *x != Health::Up)))
            .collect();
        for h in self.slots.values() {
            out.entry(h.as_str()).or_insert(true);
        }
        out
    }

    /// (unhealthy, all) hosts.
    pub fn unhealthy(&self) -> (usize, usize) {
        let hosts = self.hosts();
        (hosts.values().filter(|u| **u).count(), hosts.len())
    }

    /// The reboot slot `host` holds, if any.
    pub fn slot_of(&self, host: &str) -> Option<u32> {
        held_by(&self.slots, host)
    }

    /// The restart slot `host` holds, if any.
    pub fn restart_slot_of(&self, host: &str) -> Option<u32> {
        held_by(&self.restart_slots, host)
    }

    /// Whether every entry of every pcheck of `host` is up (and it has one).
    pub fn host_up(&self, host: &str) -> bool {
        self.members
            .get(host)
            .is_some_and(|pf| !pf.is_empty() && pf.values().all(|x| *x == Health::Up))
    }
}

/// Whether more than `ratio` of the fleet's hosts are unhealthy: Some((k, n)) then.
/// One failing host is never a shared cause (in a fleet of one or two, too): it
/// takes at least two.
pub fn outage(view: &View, ratio: f64) -> Option<(usize, usize)> {
    let (k, n) = view.unhealthy();
    #[allow(clippy::cast_precision_loss)]
    let over = k >= 2 && (k as f64) > ratio * (n as f64);
    over.then_some((k, n))
}

/// Why a reboot waits.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Held {
    /// An operator held reboots fleet-wide.
    Operator(String),
    /// More than the hold ratio of the fleet is unhealthy: a shared cause is suspected.
    Outage { unhealthy: usize, of: usize },
    /// Every slot is taken (by these hosts).
    NoSlot(Vec<String>),
    /// etcd cannot be reached and `fleet_unreachable = hold`.
    Unreachable,
}

impl Held {
    /// Held for the same kind of reason (a change of holders is not news).
    pub fn same_kind(&self, other: &Held) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
    }

    /// The reason as the held line says it; `slot` names the kind of slot
    /// ("reboot", "restart") and `budget_key` the pfile key that sizes it.
    pub fn reason(&self, slot: &str, budget_key: &str, hold_ratio: f64) -> String {
        match self {
            Held::Operator(who) => format!("held fleet-wide by an operator ({who})"),
            Held::Outage { unhealthy, of } => format!(
                "{unhealthy} of {of} hosts are unhealthy (more than fleet_hold_ratio {hold_ratio}): a shared cause is suspected"
            ),
            Held::NoSlot(holders) if holders.is_empty() => {
                format!("every {slot} slot is taken (by nobody: {budget_key} is 0)")
            }
            Held::NoSlot(holders) => {
                format!("every {slot} slot is taken (by {})", holders.join(", "))
            }
            Held::Unreachable => "etcd cannot be reached (fleet_unreachable = hold)".to_string(),
        }
    }
}

/// What a host that needs a slot (a reboot slot for a due reboot, a restart slot for
/// a held stall kill) may do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlotDecision {
    /// It already holds this slot (a repeated reboot, a kill already granted): go on.
    Keep(u32),
    /// Try to take one of these free slots, in order.
    Take(Vec<u32>),
    /// It waits: an operator's or an outage hold, or every slot taken.
    Held(Held),
}

/// The slot of `slots` that `host` holds, if any.
fn held_by(slots: &BTreeMap<u32, String>, host: &str) -> Option<u32> {
    slots
        .iter()
        .find(|(_, h)| h.as_str() == host)
        .map(|(i, _)| *i)
}

/// `host`'s claim on one of `max` slots: the one it holds, else the free ones, else
/// held by their holders.
fn claim(slots: &BTreeMap<u32, String>, max: u32, host: &str) -> SlotDecision {
    if let Some(i) = held_by(slots, host) {
        return SlotDecision::Keep(i);
    }
    let free: Vec<u32> = (0..max).filter(|i| !slots.contains_key(i)).collect();
    if free.is_empty() {
        SlotDecision::Held(Held::NoSlot(slots.values().cloned().collect()))
    } else {
        SlotDecision::Take(free)
    }
}

/// The reboot rule of the fleet: an operator hold and an outage hold every reboot;
/// otherwise a host keeps the slot it holds, or takes a free one of `max_rebooting`.
pub fn decide_reboot(view: &View, host: &str, ratio: f64) -> SlotDecision {
    if let Some(who) = &view.operator_hold {
        return SlotDecision::Held(Held::Operator(who.clone()));
    }
    if let Some((unhealthy, of)) = outage(view, ratio) {
        return SlotDecision::Held(Held::Outage { unhealthy, of });
    }
    claim(&view.slots, view.max_rebooting, host)
}

/// Whether `host` gives its slot back: its entries are all up again, or it reached
/// `reboot_limit` and stays up (`at_limit`). Without a slot there is nothing to give.
pub fn release_slot(view: &View, host: &str, at_limit: bool) -> Option<u32> {
    let slot = view.slot_of(host)?;
    (view.host_up(host) || at_limit).then_some(slot)
}

/// The restart budget's rule: a stall-restart (the kill after a stall verdict and the
/// restart after it) needs one of `max_restarting` slots, and an outage holds it like a
/// reboot. An operator's hold is about reboots only. Death restarts never ask.
pub fn decide_restart(view: &View, host: &str, ratio: f64) -> SlotDecision {
    if let Some((unhealthy, of)) = outage(view, ratio) {
        return SlotDecision::Held(Held::Outage { unhealthy, of });
    }
    claim(&view.restart_slots, view.max_restarting, host)
}

/// Whether `host` gives its restart slot back: no stall kill of it waits
/// (`want_restart`) and none of its entries is still stalled or restarting (every one is
/// up again, or gave up at retry-over: the restart is no longer in flight).
pub fn release_restart_slot(view: &View, host: &str, want_restart: bool) -> Option<u32> {
    let i = view.restart_slot_of(host)?;
    let settled = view.members.get(host).is_some_and(|pf| {
        !pf.is_empty()
            && pf
                .values()
                .all(|x| matches!(x, Health::Up | Health::RetryOver))
    });
    (!want_restart && settled).then_some(i)
}

/// The stored budget wins over this host's configuration: Some(message) when they
/// differ, for one log line. `key` names the pfile key (`fleet_max_rebooting`).
pub fn budget_mismatch(fleet: &str, key: &str, configured: u32, stored: u32) -> Option<String> {
    (configured != stored).then(|| {
        format!(
            "fleet: {key} = {configured} here, but fleet {fleet} was set up with {stored}: using {stored}"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use Health::*;

    fn view(members: &[(&str, &[Health])], slots: &[(u32, &str)], max: u32) -> View {
        View {
            members: members
                .iter()
                .map(|(h, hs)| {
                    (
                        (*h).to_string(),
                        hs.iter()
                            .enumerate()
                            .map(|(i, x)| (format!("/etc/psweb/p{i}"), *x))
                            .collect(),
                    )
                })
                .collect(),
            slots: slots.iter().map(|(i, h)| (*i, (*h).to_string())).collect(),
            max_rebooting: max,
            operator_hold: None,
            restart_slots: BTreeMap::new(),
            max_restarting: 0,
        }
    }

    fn restarting(mut v: View, slots: &[(u32, &str)], max: u32) -> View {
        v.restart_slots = slots.iter().map(|(i, h)| (*i, (*h).to_string())).collect();
        v.max_restarting = max;
        v
    }

    #[test]
    fn restart_decisions() {
        let two_stalled: &[(&str, &[Health])] = &[("a", &[Stalled]), ("b", &[Stalled])];
        let one_of_four: &[(&str, &[Health])] =
            &[("a", &[Stalled]), ("b", &[Up]), ("c", &[Up]), ("d", &[Up])];
        // (view, host, ratio, decision)
        let table: Vec<(View, &str, f64, SlotDecision)> = vec![
            (
                restarting(view(two_stalled, &[], 1), &[], 1),
                "a",
                2.0,
                SlotDecision::Take(vec![0]),
            ),
            // The first host's stall-restart is in flight: the second waits for it.
            (
                restarting(view(two_stalled, &[], 1), &[(0, "a")], 1),
                "b",
                2.0,
                SlotDecision::Held(Held::NoSlot(vec!["a".into()])),
            ),
            (
                restarting(view(two_stalled, &[], 1), &[(0, "a")], 1),
                "a",
                2.0,
                SlotDecision::Keep(0),
            ),
            (
                restarting(view(two_stalled, &[], 1), &[(0, "a")], 2),
                "b",
                2.0,
                SlotDecision::Take(vec![1]),
            ),
            // Both stalled at once, with the default ratio: an outage holds both.
            (
                restarting(view(two_stalled, &[], 1), &[], 1),
                "a",
                0.5,
                SlotDecision::Held(Held::Outage {
                    unhealthy: 2,
                    of: 2,
                }),
            ),
            (
                restarting(view(one_of_four, &[], 1), &[], 1),
                "a",
                0.5,
                SlotDecision::Take(vec![0]),
            ),
            // The reboot slots are a budget of their own.
            (
                restarting(view(one_of_four, &[(0, "b")], 1), &[], 1),
                "a",
                2.0,
                SlotDecision::Take(vec![0]),
            ),
            (
                restarting(view(one_of_four, &[], 1), &[], 0),
                "a",
                2.0,
                SlotDecision::Held(Held::NoSlot(vec![])),
            ),
        ];
        for (v, host, ratio, want) in table {
            assert_eq!(decide_restart(&v, host, ratio), want, "{v:?}");
        }
        // An operator's hold is about reboots: stall-restarts go on.
        let mut v = restarting(view(one_of_four, &[], 1), &[], 1);
        v.operator_hold = Some("padmin on ops1".into());
        assert_eq!(decide_restart(&v, "a", 2.0), SlotDecision::Take(vec![0]));
    }

    #[test]
    fn restart_slots_are_given_back_once_the_restart_settles() {
        // (a's entries, a kill still waits, released)
        let table: &[(&[Health], bool, bool)] = &[
            (&[Up], false, true),
            (&[Up], true, false),
            (&[Stalled], false, false),
            (&[Restarting], false, false),
            (&[Up, Restarting], false, false),
            (&[RetryOver], false, true),
            (&[Up, RetryOver], false, true),
            (&[], false, false),
        ];
        for (entries, want_restart, released) in table {
            let v = restarting(view(&[("a", entries)], &[], 1), &[(0, "a")], 1);
            assert_eq!(
                release_restart_slot(&v, "a", *want_restart).is_some(),
                *released,
                "{entries:?} {want_restart}"
            );
        }
        let v = restarting(view(&[("a", &[Up])], &[], 1), &[(0, "b")], 1);
        assert_eq!(release_restart_slot(&v, "a", false), None, "not a's slot");
    }

    #[test]
    fn a_host_is_one_member_however_many_pfiles() {
        let v = view(
            &[("a", &[Up, RetryOver]), ("b", &[Up, Up]), ("c", &[Up])],
            &[],
            1,
        );
        assert_eq!(v.unhealthy(), (1, 3));
        assert!(!v.host_up("a"));
        assert!(v.host_up("b"));
        assert!(!v.host_up("zz"), "an unknown host is not up");
    }

    #[test]
    fn a_slot_holder_without_a_member_key_is_rebooting() {
        let v = view(&[("a", &[Up]), ("b", &[Up])], &[(0, "c")], 1);
        assert_eq!(v.unhealthy(), (1, 3));
    }

    #[test]
    fn outage_is_more_than_the_ratio() {
        // (unhealthy of 4, ratio, held)
        let table: &[(usize, f64, bool)] = &[
            (0, 0.5, false),
            (1, 0.5, false),
            (2, 0.5, false), // exactly half: not more than
            (3, 0.5, true),
            (4, 0.5, true),
            (4, 1.0, false), // a ratio of 1 or more never holds
            (4, 1.5, false),
            (2, 0.0, true),
            (1, 0.0, false), // one host alone is never an outage
            (0, 0.0, false),
        ];
        for (k, ratio, held) in table {
            let hs: Vec<(String, Vec<Health>)> = (0..4)
                .map(|i| (format!("h{i}"), vec![if i < *k { Stalled } else { Up }]))
                .collect();
            let members: Vec<(&str, &[Health])> =
                hs.iter().map(|(h, x)| (h.as_str(), x.as_slice())).collect();
            let v = view(&members, &[], 1);
            assert_eq!(outage(&v, *ratio).is_some(), *held, "{k}/4 at {ratio}");
        }
        assert_eq!(outage(&View::default(), 0.5), None, "an empty fleet");
        let one = view(&[("a", &[RetryOver])], &[], 1);
        assert_eq!(outage(&one, 0.5), None, "a fleet of one");
    }

    #[test]
    fn reboot_decisions() {
        let all_down: &[(&str, &[Health])] = &[
            ("a", &[RetryOver]),
            ("b", &[RetryOver]),
            ("c", &[RetryOver]),
            ("d", &[RetryOver]),
        ];
        // (view, host, ratio, decision)
        let table: Vec<(View, &str, f64, SlotDecision)> = vec![
            (
                view(all_down, &[], 1),
                "a",
                2.0,
                SlotDecision::Take(vec![0]),
            ),
            (
                view(all_down, &[], 2),
                "a",
                2.0,
                SlotDecision::Take(vec![0, 1]),
            ),
            (
                view(all_down, &[(0, "b")], 2),
                "a",
                2.0,
                SlotDecision::Take(vec![1]),
            ),
            (
                view(all_down, &[(0, "b")], 1),
                "a",
                2.0,
                SlotDecision::Held(Held::NoSlot(vec!["b".into()])),
            ),
            // A host rebooting again keeps its slot.
            (
                view(all_down, &[(0, "a")], 1),
                "a",
                2.0,
                SlotDecision::Keep(0),
            ),
            (
                view(all_down, &[], 1),
                "a",
                0.5,
                SlotDecision::Held(Held::Outage {
                    unhealthy: 4,
                    of: 4,
                }),
            ),
            // Two of four back: not more than half: the reboots go on.
            (
                view(
                    &[
                        ("a", &[RetryOver]),
                        ("b", &[RetryOver]),
                        ("c", &[Up]),
                        ("d", &[Up]),
                    ],
                    &[],
                    1,
                ),
                "a",
                0.5,
                SlotDecision::Take(vec![0]),
            ),
            // A budget of 0 never reboots.
            (
                view(&[("a", &[RetryOver])], &[], 0),
                "a",
                2.0,
                SlotDecision::Held(Held::NoSlot(vec![])),
            ),
        ];
        for (v, host, ratio, want) in table {
            assert_eq!(decide_reboot(&v, host, ratio), want, "{v:?}");
        }
        let mut v = view(all_down, &[], 1);
        v.operator_hold = Some("padmin on ops1".into());
        assert_eq!(
            decide_reboot(&v, "a", 2.0),
            SlotDecision::Held(Held::Operator("padmin on ops1".into()))
        );
    }

    #[test]
    fn slots_are_given_back_when_healthy_or_at_the_limit() {
        let v = view(
            &[("a", &[Up, Up]), ("b", &[RetryOver])],
            &[(0, "a"), (1, "b")],
            2,
        );
        assert_eq!(release_slot(&v, "a", false), Some(0));
        assert_eq!(release_slot(&v, "b", false), None);
        assert_eq!(release_slot(&v, "b", true), Some(1));
        assert_eq!(release_slot(&v, "c", true), None);
        // Back from the reboot, but one pfile of the host is not up yet.
        let v = view(&[("a", &[Up, Restarting])], &[(0, "a")], 1);
        assert_eq!(release_slot(&v, "a", false), None);
    }

    #[test]
    fn entry_health_table() {
        use super::super::ProcSts::*;
        let table = [
            (false, Avail, false, Up),
            (true, Avail, false, Stalled),
            (true, Restart, false, Restarting),
            (true, Init, false, Restarting),
            (true, Unavail, false, RetryOver),
            (true, Unavail, true, Rebooting),
        ];
        for (down, sts, reb, want) in table {
            assert_eq!(entry_health(down, sts, reb), want);
        }
    }

    #[test]
    fn held_kinds_and_budget() {
        assert!(Held::NoSlot(vec!["a".into()]).same_kind(&Held::NoSlot(vec!["b".into()])));
        assert!(!Held::NoSlot(vec![]).same_kind(&Held::Unreachable));
        assert_eq!(budget_mismatch("web", "fleet_max_rebooting", 1, 1), None);
        assert!(budget_mismatch("web", "fleet_max_restarting", 2, 1)
            .is_some_and(|m| m.contains("fleet_max_restarting = 2") && m.contains("using 1")));
    }

    #[test]
    fn held_reasons_as_the_lines_say_them() {
        let rows = [
            (Held::Operator("ops".into()), "held fleet-wide by an operator (ops)"),
            (
                Held::Outage { unhealthy: 3, of: 4 },
                "3 of 4 hosts are unhealthy (more than fleet_hold_ratio 0.5): a shared cause is suspected",
            ),
            (Held::NoSlot(vec!["a".into(), "b".into()]), "every restart slot is taken (by a, b)"),
            (
                Held::NoSlot(vec![]),
                "every restart slot is taken (by nobody: fleet_max_restarting is 0)",
            ),
            (Held::Unreachable, "etcd cannot be reached (fleet_unreachable = hold)"),
        ];
        for (held, want) in rows {
            assert_eq!(held.reason("restart", "fleet_max_restarting", 0.5), want);
        }
    }
}
