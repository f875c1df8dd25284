//! pcheck's one way to stop. Every task pcheck spawns is handed the same signal and
//! ends when it fires; the tasks whose work must not be cut short are tracked, and
//! the agent waits for them, each group within its bound:
//!
//! 1. [`Shutdown::begin`]: the senses, probe loops, pollers and the metrics server end
//!    at their next await point; a restart sequence that has not started its script yet gives
//!    up (no new work).
//! 2. [`Shutdown::restarts_done`]: a restart script in flight runs to its end, or to
//!    its `restart_timeout` (when `act::restart` kills its process group).
//! 3. [`Shutdown::flush`]: each webhook sender closes its queue, sends what is in it
//!    and ends; the agent waits for that at most `shutdown_flush`.

use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    /// Fires when pcheck starts to stop: no new work.
    work: CancellationToken,
    /// Fires once the restarts are done: the webhook queues close and drain.
    flush: CancellationToken,
    restarts: TaskTracker,
    senders: TaskTracker,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// True once pcheck has started to stop.
    pub fn is_stopping(&self) -> bool {
        self.work.is_cancelled()
    }

    /// Completes when pcheck starts to stop.
    pub async fn stopping(&self) {
        self.work.cancelled().await;
    }

    /// Completes when the webhook queues are to be flushed (after the restarts).
    pub async fn flushing(&self) {
        self.flush.cancelled().await;
    }

    /// Spawns a task that is stopped when pcheck stops (a sense, a probe loop, a
    /// poller, a server): it is dropped at its next await point.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.work.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = task => {}
            }
        })
    }

    /// Spawns a restart sequence: pcheck waits for it when stopping. The task itself
    /// checks [`Shutdown::is_stopping`] before it starts a script.
    pub fn spawn_restart<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.restarts.spawn(task)
    }

    /// Spawns a webhook sender: it ends by itself once [`Shutdown::flushing`] fires and
    /// its queue is empty; pcheck waits for that at most the flush bound.
    pub fn spawn_sender<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.senders.spawn(task)
    }

    /// Starts the shutdown: no new work from now on.
    pub fn begin(&self) {
        self.work.cancel();
        self.restarts.close();
    }

    /// Waits for every restart sequence (each is bounded by its script's
    /// `restart_timeout` and `start_wait`).
    pub async fn restarts_done(&self) {
        self.restarts.wait().await;
    }

    /// Closes the webhook queues and waits for them to be sent, at most `bound`.
    /// Returns the number of senders that had not finished.
    pub async fn flush(&self, bound: Duration) -> usize {
        self.flush.cancel();
        self.senders.close();
        if tokio::time::timeout(bound, self.senders.wait())
            .await
            .is_ok()
        {
            0
        } else {
            self.senders.len()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[tokio::test]
    async fn stops_loops_waits_for_restarts_and_bounds_the_flush() {
        let sd = Shutdown::new();
        let looped = sd.spawn(std::future::pending());
        let finished = Arc::new(AtomicBool::new(false));
        let f = Arc::clone(&finished);
        sd.spawn_restart(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            f.store(true, Ordering::SeqCst);
        });
        let s = sd.clone();
        sd.spawn_sender(async move {
            s.flushing().await;
            std::future::pending::<()>().await; // a receiver that hangs
        });
        sd.begin();
        assert!(sd.is_stopping());
        looped.await.expect("the loop ends at shutdown");
        sd.restarts_done().await;
        assert!(
            finished.load(Ordering::SeqCst),
            "the restart ran to its end"
        );
        let before = std::time::Instant::now();
        assert_eq!(sd.flush(Duration::from_millis(100)).await, 1);
        let took = before.elapsed();
        // The bound is waited for, and not much more (a sanity bound for a loaded host).
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
}
