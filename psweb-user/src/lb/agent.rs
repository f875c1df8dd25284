//! HAProxy's agent-check protocol: the balancer connects, may send one line
//! (`agent-send`), and reads one line (`up ready`, `drain #reason`, `down #reason`,
//! optionally a weight `up ready 25%`); then the connection closes.

use super::{Board, AGENT_SEND_WAIT};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest `agent-send` line read; anything longer is not a name.
const MAX_LINE: usize = 256;

/// Whom a listener speaks for.
#[derive(Clone, Debug)]
pub enum Speaks {
    /// One entry (an entry's own `lb_agent_listen`): answers at once.
    Entry(u32),
    /// Every entry (the global `lb_agent_listen`): an `agent-send` line may name one.
    All,
}

/// Serves one agent-check connection.
pub async fn serve(mut s: TcpStream, board: Arc<Board>, speaks: Speaks) {
    let which = match speaks {
        Speaks::Entry(id) => Some(id.to_string()),
        Speaks::All => read_name(&mut s).await,
    };
    let line = board.agent_line(which.as_deref(), Instant::now());
    let _ = s.write_all(format!("{line}\n").as_bytes()).await;
    let _ = s.shutdown().await;
    // Read what the balancer sent until it closes (bounded by the caller's deadline),
    // so that unread input cannot turn the close into a reset that loses the answer.
    let mut sink = [0u8; 512];
    while let Ok(n) = s.read(&mut sink).await {
        if n == 0 {
            break;
        }
    }
}

/// The name an `agent-send` line gives, if one arrives within [`AGENT_SEND_WAIT`].
/// Garbage or a line too long names nothing (the answer is then for all entries).
async fn read_name(s: &mut TcpStream) -> Option<String> {
    let mut buf = Vec::with_capacity(64);
    let mut chunk = [0u8; 128];
    let deadline = tokio::time::Instant::now() + AGENT_SEND_WAIT;
    loop {
        let n = tokio::time::timeout_at(deadline, s.read(&mut chunk))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.contains(&b'\n') || buf.len() > MAX_LINE {
            break;
        }
    }
    let line = buf.split(|b| *b == b'\n').next()?;
    if line.len() > MAX_LINE {
        return None;
    }
    let name = std::str::from_utf8(line).ok()?.trim();
    (!name.is_empty()).then(|| name.to_string())
}
