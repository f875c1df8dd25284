//! The door of every listener pcheck serves (control socket, metrics, load-balancer
//! listeners): at most `max` connections held at once, a deadline for reading a
//! request, and a backoff after a failed accept (EMFILE, ENFILE, ENOBUFS...), so
//! that clients can neither take the file descriptors a restart needs nor make the
//! accept loop spin.
//!
//! Use: `let permit = gate.slot().await;` before `accept()` (while every slot is
//! taken, new connections wait in the kernel's backlog and hold none of pcheck's
//! fds), then `gate.accepted()` or `gate.failed(&err).await`; move the permit into
//! the connection's task and read under `gate.read_timeout`.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Backoff after failed accepts: doubles from the first to the last.
const BACKOFF_FIRST: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);

pub struct Gate {
    slots: Arc<Semaphore>,
    /// How long a connection may take to send its request.
    pub read_timeout: Duration,
    backoff: Duration,
    failures: u64,
}

impl Gate {
    pub fn new(max: usize, read_timeout: Duration) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max.max(1))),
            read_timeout,
            backoff: Duration::ZERO,
            failures: 0,
        }
    }

    /// Waits until fewer than `max` connections are held; the permit frees the slot
    /// when dropped (with the connection).
    pub async fn slot(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.slots).acquire_owned().await.ok()
    }

    /// An accept succeeded: the backoff starts again from the first step.
    pub fn accepted(&mut self) {
        self.backoff = Duration::ZERO;
    }

    /// An accept failed: waits (10 ms, doubling to 1 s while failures go on).
    /// Returns Some(count) when the failure should be logged: the first one and
    /// then every 1000th, so that a storm cannot flood the log.
    pub async fn failed(&mut self) -> Option<u64> {
        self.failures += 1;
        self.backoff = if self.backoff.is_zero() {
            BACKOFF_FIRST
        } else {
            (self.backoff * 2).min(BACKOFF_MAX)
        };
        tokio::time::sleep(self.backoff).await;
        (self.failures == 1 || self.failures.is_multiple_of(1000)).then_some(self.failures)
    }

    /// Connections held now.
    pub fn held(&self, max: usize) -> usize {
        max.saturating_sub(self.slots.available_permits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn slots_are_capped_and_backoff_doubles_to_a_second() {
        let mut g = Gate::new(2, Duration::from_secs(5));
        let a = g.slot().await;
        let _b = g.slot().await;
        assert_eq!(g.held(2), 2);
        assert!(
            tokio::time::timeout(Duration::from_millis(10), g.slot())
                .await
                .is_err(),
            "a third connection waits"
        );
        drop(a);
        assert!(g.slot().await.is_some(), "a freed slot is taken again");
        let t = std::time::Instant::now();
        assert_eq!(g.failed().await, Some(1));
        assert_eq!(g.failed().await, None);
        g.failed().await;
        assert!(t.elapsed() >= Duration::from_millis(70), "10 + 20 + 40 ms");
        assert_eq!(g.backoff, Duration::from_millis(40));
        g.accepted();
        assert_eq!(g.backoff, Duration::ZERO);
    }
}
