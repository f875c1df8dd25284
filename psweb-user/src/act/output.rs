//! The output of the commands pcheck runs (restart scripts, the reboot command): into
//! the log line by line, for as long as anything holds the pipe. At shutdown, once the
//! restarts are done, each reader logs what is left in its pipe and ends; a server a
//! script left holding the pipe does not hold pcheck up.

use crate::report::Logger;
use crate::shutdown::Shutdown;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// At shutdown, a reader ends when no line came for this long (its command has
/// ended, so the pipe is held, if at all, by something the command left running).
const DRAIN_GAP: Duration = Duration::from_millis(100);

/// The longest line logged, in characters; the rest of the line is dropped.
const LINE_MAX: usize = 1000;

/// Logs each line `r` gives as `{prefix}: {line}` until the pipe closes; at shutdown
/// (see [`Shutdown::commands_done`]) until no more is waiting.
pub fn spawn_lines<R>(r: R, prefix: String, log: Arc<Logger>, sd: &Shutdown)
where
    R: AsyncRead + Unpin + Send + 'static,
{
    let stop = sd.clone();
    sd.spawn_command_task(async move {
        let mut lines = BufReader::new(r).lines();
        let mut draining = false;
        loop {
            let next = if draining {
                match tokio::time::timeout(DRAIN_GAP, lines.next_line()).await {
                    Ok(next) => next,
                    Err(_) => return,
                }
            } else {
                // `next_line` is cancel safe: a line half read is kept for the next call.
                tokio::select! {
                    next = lines.next_line() => next,
                    () = stop.draining() => {
                        draining = true;
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
