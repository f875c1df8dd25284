//! The output of the commands pcheck runs (restart scripts, the reboot command): into
//! the log line by line, for as long as anything holds the pipe. At shutdown, once the
//! restarts are done, each reader logs what is left in its pipe and ends; a server a
//! script left holding the pipe does not hold pcheck up.

use crate::report::Logger;
use crate::shutdown::Shutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::time::Instant;

/// At shutdown, a reader ends when no line came for this long (its command has
/// ended, so the pipe is held, if at all, by something the command left running)...
const DRAIN_GAP: Duration = Duration::from_millis(100);
/// ...or after this long in all: what a finished script left in its pipe (at most
/// the pipe's buffer) is read in milliseconds; a server that keeps writing to the
/// pipe it inherited does not hold the stop up to `shutdown_flush`.
const DRAIN_MAX: Duration = Duration::from_secs(1);

/// The longest line logged, in characters; the rest of the line is dropped.
const LINE_MAX: usize = 1000;

/// Logs what `child` prints on stdout and stderr, each line as `{prefix}: {line}`
/// (see [`spawn_lines`]).
pub fn spawn_child_output(
    child: &mut tokio::process::Child,
    prefix: &str,
    log: &Arc<Logger>,
    sd: &Shutdown,
) {
    if let Some(out) = child.stdout.take() {
        spawn_lines(out, prefix.to_string(), Arc::clone(log), sd);
    }
    if let Some(err) = child.stderr.take() {
        spawn_lines(err, prefix.to_string(), Arc::clone(log), sd);
    }
}

/// Logs each line `r` gives as `{prefix}: {line}` until the pipe closes; at shutdown
/// (see [`Shutdown::commands_done`]) until no more is waiting, for at most
/// [`DRAIN_MAX`].
fn spawn_lines<R>(r: R, prefix: String, log: Arc<Logger>, sd: &Shutdown)
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let stop = sd.clone();
    sd.spawn_command_task(async move {
        let mut lines = BufReader::new(r).lines();
        let mut drain_until: Option<Instant> = None;
        loop {
            let next = if let Some(until) = drain_until {
                let gap = until.min(Instant::now() + DRAIN_GAP);
                match tokio::time::timeout_at(gap, lines.next_line()).await {
                    Ok(next) => next,
                    Err(_) => return,
                }
            } else {
                // `next_line` is cancel safe: a line half read is kept for the next call.
                tokio::select! {
                    next = lines.next_line() => next,
                    () = stop.draining() => {
                        drain_until = Some(Instant::now() + DRAIN_MAX);
                        continue;
                    }
                }
            };
            let Ok(Some(line)) = next else {
                return;
            };
            let line: String = line.chars().take(LINE_MAX).collect();
            log.info(&format!("{prefix}: {line}"));
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test]
    async fn a_pipe_written_to_without_end_does_not_hold_the_stop_past_drain_max() {
        let (r, w) = nix::unistd::pipe().expect("pipe");
        let r = tokio::net::unix::pipe::Receiver::from_owned_fd(r).expect("receiver");
        // A server that inherited the script's output and writes a line every 10 ms
        // until the pipe is closed.
        let writer = std::thread::spawn(move || {
            let mut w = std::fs::File::from(w);
            while writeln!(w, "still serving").is_ok() {
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let sd = Shutdown::new();
        let log = Arc::new(Logger::new("psweb-test", None, false));
        spawn_lines(r, "restart script t".to_string(), log, &sd);
        sd.begin();
        sd.restarts_done().await;
        let at = std::time::Instant::now();
        assert_eq!(sd.commands_done(Duration::from_secs(60)).await, 0);
        let took = at.elapsed();
        // The writer never pauses for DRAIN_GAP: the reader ends at DRAIN_MAX, far
        // within the bound (10 s: a sanity bound for a loaded host).
        assert!(took >= DRAIN_MAX, "{took:?}");
        assert!(took < Duration::from_secs(10), "{took:?}");
        writer
            .join()
            .expect("the writer ends once the reader is gone");
    }
}
