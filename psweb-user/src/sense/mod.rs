//! Where evidence comes from. Each source degrades on its own.
//!
//! - `procfs` ([`crate::procfs`], shared with `act/`): process identity (pid + start time), zombie state, adoption by pidfile
//!   or by executable, the processes of a service (session / process group).
//! - `pidfd` ([`crate::pidfd`], shared with `act/`): a watched process held by pidfd;
//!   readable the moment it exits.
//! - `ebpf`: the kernel's own exit and accept-queue-overflow events, through a ring
//!   buffer or a perf event array (`ebpf/`).
//! - `source`: which of these is the source of death evidence (`choose`).
//! - `watch`: the death watcher of one process (pidfd, else /proc polling).
//! - `queue`: the watched ports' accept-queue evidence, and the kernel-evidence
//!   sampler of one watch over `progress` and `sockdiag`.

pub mod ebpf;
pub mod progress;
pub mod queue;
pub mod sockdiag;
pub mod source;
pub mod watch;
