//! Push to a local HAProxy through its runtime API (the stats socket): at each change
//! of an entry's state, `set server B/S state drain|ready` and `set server B/S health
//! down|up` ([`crate::core::lb::runtime_commands`] decides which), so HAProxy reacts
//! without waiting for its next check. One task sends, in order; the main task only
//! queues.

use super::LbError;
use crate::core::lb::{self as rule, LbState, PushedMarks};
use crate::pfile::HaproxySocket;
use crate::report::Logger;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;

/// One exchange with HAProxy may take this long.
const EXCHANGE: Duration = Duration::from_secs(1);

pub struct Pusher {
    tx: mpsc::UnboundedSender<(String, LbState)>,
    pending: Arc<AtomicUsize>,
}

impl Pusher {
    pub fn start(target: HaproxySocket, log: Arc<Logger>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let pending = Arc::new(AtomicUsize::new(0));
        tokio::spawn(run(target, rx, Arc::clone(&pending), log));
        Self { tx, pending }
    }

    /// Queues telling `server` (BACKEND/SERVER) the new state.
    pub fn push(&self, server: &str, state: LbState) {
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.tx.send((server.to_string(), state)).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Waits (at most `limit`) until everything queued was sent.
    pub async fn flush(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            while self.pending.load(Ordering::SeqCst) > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
    }
}

async fn run(
    target: HaproxySocket,
    mut rx: mpsc::UnboundedReceiver<(String, LbState)>,
    pending: Arc<AtomicUsize>,
    log: Arc<Logger>,
) {
    let mut marks: HashMap<String, PushedMarks> = HashMap::new();
    let mut failing = false;
    while let Some((server, state)) = rx.recv().await {
        let m = marks.get(&server).copied().unwrap_or_default();
        let r = push_one(&target, &server, state, m).await;
        pending.fetch_sub(1, Ordering::SeqCst);
        match r {
            Ok((cmds, m, kept)) => {
                marks.insert(server.clone(), m);
                if failing {
                    failing = false;
                    log.info(&format!("HAProxy runtime API {target}: reachable again"));
                }
                if !cmds.is_empty() {
                    log.info(&format!(
                        "HAProxy runtime API {target}: {} ({state})",
                        cmds.join("; ")
                    ));
                } else if kept {
                    log.info(&format!(
                        "HAProxy runtime API {target}: {server} left as it is ({state}): psweb does not clear a DRAIN or MAINT it did not set"
                    ));
                }
            }
            Err(e) if !failing => {
                failing = true;
                log.warn(&format!(
                    "HAProxy runtime API {target}: cannot tell {server} {state}: {e} (the agent-check and health answers go on)"
                ));
            }
            Err(_) => {}
        }
    }
}

/// Reads the server's admin state, then sends what the rule asks for.
/// Returns the commands sent, what psweb has set now, and whether a DRAIN or MAINT
/// that psweb did not set was left in place.
async fn push_one(
    target: &HaproxySocket,
    server: &str,
    state: LbState,
    marks: PushedMarks,
) -> Result<(Vec<String>, PushedMarks, bool), LbError> {
    let backend = server.split('/').next().unwrap_or(server);
    let show = exchange(target, &format!("show servers state {backend}")).await?;
    let flags = rule::haproxy_admin_state(&show, server)
        .ok_or_else(|| LbError::UnknownServer(server.to_string()))?;
    let (cmds, m) = rule::runtime_commands(server, state, flags, marks);
    let forced = flags & (rule::HAPROXY_FMAINT | rule::HAPROXY_FDRAIN) != 0;
    let kept = cmds.is_empty() && forced && state != LbState::Down;
    if !cmds.is_empty() {
        let answer = exchange(target, &cmds.join("; ")).await?;
        let answer = answer.trim();
        if !answer.is_empty() {
            return Err(LbError::HaproxyRefused(answer.to_string()));
        }
    }
    Ok((cmds, m, kept))
}

/// One command line, one answer (HAProxy closes after answering).
async fn exchange(target: &HaproxySocket, cmd: &str) -> Result<String, LbError> {
    let r = tokio::time::timeout(EXCHANGE, async {
        match target {
            HaproxySocket::Unix(p) => {
                let s = tokio::net::UnixStream::connect(p).await?;
                talk(s, cmd).await
            }
            HaproxySocket::Tcp(a) => {
                let s = tokio::net::TcpStream::connect(a).await?;
                talk(s, cmd).await
            }
        }
    })
    .await;
    match r {
        Ok(Ok(s)) => Ok(s),
        Ok(Err(e)) => Err(LbError::HaproxyIo(e)),
        Err(_) => Err(LbError::HaproxySilent(EXCHANGE.as_secs())),
    }
}

async fn talk<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, cmd: &str) -> std::io::Result<String> {
    s.write_all(format!("{cmd}\n").as_bytes()).await?;
    let mut out = Vec::new();
    // The answer is small; cap what is read in case of a wrong peer.
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 || out.len() > 1 << 20 {
            break;
        }
        out.extend_from_slice(&chunk[..n]);
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}
