//! pcheck's side of the control socket.

use super::{AdminError, Request, Response};
use crate::gate::Gate;
use crate::report::Logger;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{mpsc, oneshot};

/// A request with the way back to its padmin. `written` resolves once the answer
/// has been written to padmin (so that a shutdown answers before pcheck ends).
pub struct Call {
    pub req: Request,
    pub reply: oneshot::Sender<Response>,
    pub written: oneshot::Receiver<()>,
}

/// padmin connections held at once (`events -f` followers included); more wait in
/// the socket's backlog.
const MAX_CONNECTIONS: usize = 64;
/// How long a connection may take to send its request line.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The bound socket and the lock that makes pcheck one-per-pfile.
pub struct Control {
    listener: UnixListener,
    path: PathBuf,
    _lock: File,
}

impl Drop for Control {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Control {
    /// Takes the pfile's lock (`<socket>.lock`) and binds the socket with mode 0600.
    /// Fails if another pcheck already serves this pfile.
    pub fn bind(path: &Path) -> Result<Self, AdminError> {
        let io = |source| AdminError::Io {
            path: path.display().to_string(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|source| AdminError::CreateDir {
                    dir: dir.display().to_string(),
                    source,
                })?;
        }
        let lock = take_lock(&path.with_extension("lock"))?;
        let _ = std::fs::remove_file(path);
        // Bind under a umask that leaves the socket 0600 from its first moment.
        // SAFETY: umask only swaps the process's file-creation mask.
        let old = unsafe { libc::umask(0o177) };
        let bound = std::os::unix::net::UnixListener::bind(path);
        // SAFETY: as above, restoring the previous mask.
        unsafe { libc::umask(old) };
        let std_listener = bound.map_err(|source| AdminError::Bind {
            path: path.display().to_string(),
            source,
        })?;
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        std_listener.set_nonblocking(true).map_err(io)?;
        let listener = UnixListener::from_std(std_listener).map_err(io)?;
        Ok(Self {
            listener,
            path: path.to_path_buf(),
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Serves padmin connections until the agent goes away.
    pub async fn serve(self, calls: mpsc::Sender<Call>, log: Arc<Logger>) {
        // SAFETY: geteuid cannot fail.
        let my_uid = unsafe { libc::geteuid() };
        let mut gate = Gate::new(MAX_CONNECTIONS, READ_TIMEOUT);
        loop {
            let Some(permit) = gate.slot().await else {
                return;
            };
            let stream = match self.listener.accept().await {
                Ok((s, _)) => {
                    gate.accepted();
                    s
                }
                Err(e) => {
                    if let Some(n) = gate.failed().await {
                        log.warn(&format!(
                            "control socket: accept failed ({n} times so far): {e}; backing off"
                        ));
                    }
                    continue;
                }
            };
            let calls = calls.clone();
            let log = Arc::clone(&log);
            let timeout = gate.read_timeout;
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = handle(stream, my_uid, calls, &log, timeout).await {
                    log.warn(&format!("control socket: {e}"));
                }
            });
        }
    }
}

/// Takes the pfile's lock (`<socket>.lock`, holding pcheck's pid): one pcheck per
/// pfile.
fn take_lock(lock_path: &Path) -> Result<File, AdminError> {
    // Never through a symlink, and only a plain file of our own: a planted name
    // cannot make pcheck write into another file.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(lock_path)
        .map_err(|source| AdminError::OpenLock {
            path: lock_path.display().to_string(),
            source,
        })?;
    {
        use std::os::unix::fs::MetadataExt;
        let m = lock.metadata().map_err(|source| AdminError::Io {
            path: lock_path.display().to_string(),
            source,
        })?;
        // SAFETY: geteuid cannot fail.
        let me = unsafe { libc::geteuid() };
        if !m.is_file() || m.nlink() != 1 || m.uid() != me {
            return Err(AdminError::BadLock {
                path: lock_path.display().to_string(),
                me,
                owner: crate::trust::owner_name(m.uid()),
                links: m.nlink(),
            });
        }
    }
    // SAFETY: flock on an fd we own.
    let r = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r != 0 {
        let owner = std::fs::read_to_string(lock_path).unwrap_or_default();
        return Err(AdminError::Locked {
            pid: owner.trim().to_string(),
            path: lock_path.display().to_string(),
        });
    }
    let _ = lock.set_len(0);
    let _ = std::os::unix::fs::FileExt::write_at(
        &lock,
        format!("{}\n", std::process::id()).as_bytes(),
        0,
    );
    Ok(lock)
}

async fn handle(
    stream: UnixStream,
    my_uid: u32,
    calls: mpsc::Sender<Call>,
    log: &Logger,
    read_timeout: std::time::Duration,
) -> Result<(), AdminError> {
    let cred = stream.peer_cred().map_err(AdminError::PeerCred)?;
    let (r, mut w) = stream.into_split();
    // The request is read first, so that a refused padmin still gets its answer.
    let mut line = String::new();
    let mut reader = BufReader::new(r).take(64 * 1024);
    tokio::time::timeout(read_timeout, reader.read_line(&mut line))
        .await
        .map_err(|_| AdminError::NoRequest {
            ms: read_timeout.as_millis(),
            pid: cred.pid(),
        })?
        .map_err(AdminError::Read)?;
    if cred.uid() != 0 && cred.uid() != my_uid {
        log.warn(&format!(
            "control socket: refused uid {} (pid {:?}): only root or uid {my_uid} may control pcheck",
            cred.uid(),
            cred.pid()
        ));
        send(
            &mut w,
            Response::error(format!(
                "permission denied: uid {} may not control this pcheck (root only)",
                cred.uid()
            )),
        )
        .await;
        return Ok(());
    }
    let req = match Request::parse(&line) {
        Ok(r) => r,
        Err(e) => {
            send(&mut w, Response::error(format!("bad request: {e}"))).await;
            return Ok(());
        }
    };
    if let Request::Events { follow } = req {
        // Served here, from the event bus: the agent's task is not involved.
        return events(reader.into_inner().into_inner(), w, log, follow).await;
    }
    ask_agent(w, calls, req).await;
    Ok(())
}

/// `events` (the recent ones) and `events --follow`, from the event bus.
async fn events(
    r: tokio::net::unix::OwnedReadHalf,
    mut w: tokio::net::unix::OwnedWriteHalf,
    log: &Logger,
    follow: bool,
) -> Result<(), AdminError> {
    let Some(bus) = log.bus() else {
        send(&mut w, Response::error("this pcheck has no event stream")).await;
        return Ok(());
    };
    if !follow {
        send(
            &mut w,
            Response {
                ok: true,
                events: bus.recent(),
                ..Response::default()
            },
        )
        .await;
        return Ok(());
    }
    let (recent, rx) = bus.follow();
    follow_events(r, w, recent, rx).await;
    Ok(())
}

/// Any other request: handed to the agent's loop, whose answer goes back to padmin;
/// `written` then tells the agent it was written.
async fn ask_agent(
    mut w: tokio::net::unix::OwnedWriteHalf,
    calls: mpsc::Sender<Call>,
    req: Request,
) {
    let (tx, rx) = oneshot::channel();
    let (written_tx, written) = oneshot::channel();
    let call = Call {
        req,
        reply: tx,
        written,
    };
    if calls.send(call).await.is_err() {
        send(&mut w, Response::error("pcheck is shutting down")).await;
        return;
    }
    let resp = rx
        .await
        .unwrap_or_else(|_| Response::error("pcheck is shutting down"));
    send(&mut w, resp).await;
    let _ = written_tx.send(());
}

/// `events --follow`: one Response line (`{"ok":true,"message":"following"}`), then
/// every recent event and every later one, one JSON line each, until padmin goes.
async fn follow_events(
    mut r: tokio::net::unix::OwnedReadHalf,
    mut w: tokio::net::unix::OwnedWriteHalf,
    recent: Vec<crate::report::events::Event>,
    mut rx: tokio::sync::broadcast::Receiver<crate::report::events::Event>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let head = serde_json::to_string(&Response::message("following")).unwrap_or_default();
    if write_line(&mut w, head).await.is_err() {
        return;
    }
    for ev in recent {
        if write_line(&mut w, serde_json::to_string(&ev).unwrap_or_default())
            .await
            .is_err()
        {
            return;
        }
    }
    let mut buf = [0u8; 64];
    loop {
        tokio::select! {
            n = r.read(&mut buf) => {
                if !matches!(n, Ok(n) if n > 0) {
                    return; // padmin went away
                }
            }
            ev = rx.recv() => match ev {
                Ok(ev) => {
                    if write_line(&mut w, serde_json::to_string(&ev).unwrap_or_default()).await.is_err() {
                        return;
                    }
                }
                // A follower too slow for 1024 events loses the oldest; it goes on.
                Err(RecvError::Lagged(_)) => {}
                Err(RecvError::Closed) => return,
            }
        }
    }
}

async fn send(w: &mut tokio::net::unix::OwnedWriteHalf, resp: Response) {
    let mut line = serde_json::to_string(&resp).unwrap_or_else(|_| "{\"ok\":false}".into());
    line.push('\n');
    let _ = w.write_all(line.as_bytes()).await;
}

async fn write_line(
    w: &mut tokio::net::unix::OwnedWriteHalf,
    mut line: String,
) -> std::io::Result<()> {
    line.push('\n');
    w.write_all(line.as_bytes()).await
}
