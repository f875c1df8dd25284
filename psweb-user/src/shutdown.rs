//! pcheck's one way to stop. Every task pcheck spawns is handed the same signal and
//! ends when it fires; the tasks whose work must not be cut short are tracked, and
//! the agent waits for them, each group within its bound:
//!
//! 1. [`Shutdown::begin`]: the senses, probe loops, pollers and the metrics server end
//!    at their next await point; a restart sequence that has not started its script yet gives
//!    up (no new work).
//! 2. [`Shutdown::restarts_done`]: a restart script in flight runs to its end, or to
//!    its `restart_timeout` (when `act::restart` kills its process group).
//! 3. Together, within one `shutdown_flush`:
//!    [`Shutdown::flush`]: each webhook sender closes its queue, sends what is in it
//!    and ends; [`Shutdown::commands_done`]: the readers of restart-script output log
//!    what the scripts wrote and end (a server a script left holding the pipe does not
//!    hold pcheck up), and a reboot command still running is waited for.

use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    /// Fires when pcheck starts to stop: no new work.
    work: CancellationToken,
    /// Fires once the restarts are done: the webhook queues close and send what they
    /// hold, the output readers read what is left; each then ends.
    drain: CancellationToken,
    restarts: TaskTracker,
    senders: TaskTracker,
    /// What the commands pcheck ran leave behind: the readers of their output, and
    /// the reboot command.
    commands: TaskTracker,
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

    /// Completes once the restarts are done: the webhook queues are to be sent and the
    /// output readers to read what is left (see [`Shutdown::flush`] and
    /// [`Shutdown::commands_done`]).
    pub async fn draining(&self) {
        self.drain.cancelled().await;
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

    /// Spawns a webhook sender: it ends by itself once [`Shutdown::draining`] fires and
    /// its queue is empty; pcheck waits for that at most the flush bound.
    pub fn spawn_sender<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.senders.spawn(task)
    }

    /// Spawns what a command pcheck ran needs after it started (a reader of its
    /// output, the wait for the reboot command): not stopped with the loops, since a
    /// reader stopped while its script runs would lose the script's output; pcheck
    /// waits for it at most the flush bound, after the restarts.
    pub fn spawn_command_task<F>(&self, task: F) -> JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.commands.spawn(task)
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

    /// Tells the output readers to read what is left and end, and waits for them and
    /// for a reboot command still running, at most `bound`. Returns the number of
    /// those not finished (a reboot command, or a reader of a script that writes on).
    pub async fn commands_done(&self, bound: Duration) -> usize {
        self.drain.cancel();
        unfinished_after(&self.commands, bound).await
    }

    /// Closes the webhook queues and waits for them to be sent, at most `bound`.
    /// Returns the number of senders that had not finished.
    pub async fn flush(&self, bound: Duration) -> usize {
        self.drain.cancel();
        unfinished_after(&self.senders, bound).await
    }
}

/// Closes `group` and waits for its tasks at most `bound`; returns how many had not
/// finished.
async fn unfinished_after(group: &TaskTracker, bound: Duration) -> usize {
    group.close();
    if tokio::time::timeout(bound, group.wait()).await.is_ok() {
        0
    } else {
        group.len()
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
            s.draining().await;
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

    #[tokio::test]
    async fn command_tasks_outlive_the_loops_and_are_waited_for_within_the_bound() {
        let sd = Shutdown::new();
        let drained = Arc::new(AtomicBool::new(false));
        let d = Arc::clone(&drained);
        let s = sd.clone();
        // A reader: ends once told to drain.
        sd.spawn_command_task(async move {
            s.draining().await;
            d.store(true, Ordering::SeqCst);
        });
        // A reboot command that does not end.
        sd.spawn_command_task(std::future::pending());
        sd.begin();
        sd.restarts_done().await;
        assert!(
            !drained.load(Ordering::SeqCst),
            "a command task is not stopped with the loops"
        );
        let before = std::time::Instant::now();
        assert_eq!(sd.commands_done(Duration::from_millis(100)).await, 1);
        let took = before.elapsed();
        assert!(
            drained.load(Ordering::SeqCst),
            "the reader drained and ended"
        );
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
}
