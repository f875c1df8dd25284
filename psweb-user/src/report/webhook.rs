//! Webhooks: each URL has its own bounded queue and its own sender task, which POSTs
//! one event per request (HTTP/1.1 by hand on tokio; HTTPS through rustls), retrying
//! with backoff. The agent only ever `try_send`s into the queue (see `events::Bus`),
//! so a receiver that is down, slow or hanging never delays a verdict or a restart:
//! its queue fills and further events are dropped, counted and logged.
//! When pcheck stops, each sender closes its queue, sends what is left and ends; the
//! agent waits for that at most `shutdown_flush` (see `crate::shutdown`).

use super::events::{alertmanager, Event, HookQueue};
use super::metrics::Metrics;
use super::{Logger, ReportError};
use crate::core::ratelimit::{LogLimit, LOG_EVERY};
use crate::pfile::{WebhookFormat, WebhookUrl};
use crate::shutdown::Shutdown;
use rustls::pki_types::ServerName;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Connect + send + the response's status line, per attempt.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per event (the first and the retries).
pub const ATTEMPTS: u32 = 4;

/// Creates the queue of each webhook and starts its sender; returns the queues for
/// the bus. Must run inside the tokio runtime.
pub fn start(
    urls: &[WebhookUrl],
    format: WebhookFormat,
    queue: usize,
    header_file: Option<&std::path::Path>,
    log: &Arc<Logger>,
    metrics: Option<Arc<Metrics>>,
    sd: &Shutdown,
) -> Result<Vec<Arc<HookQueue>>, ReportError> {
    let headers: Arc<str> = match header_file {
        Some(p) => load_headers(p)?.into(),
        None => "".into(),
    };
    let mut out = Vec::new();
    let mut tls = None;
    for (index, url) in urls.iter().enumerate() {
        let config = if url.https {
            if tls.is_none() {
                let opts = crate::tls::TlsOptions {
                    verify: crate::tls::TlsVerify::SystemRoots,
                    sni: None,
                };
                tls = Some(crate::tls::tls_config(&opts).map_err(|source| {
                    ReportError::WebhookTls {
                        url: url.safe(),
                        source,
                    }
                })?);
            }
            tls.clone()
        } else {
            None
        };
        if let Some(m) = &metrics {
            m.declare_webhook(&url.safe(), index + 1);
        }
        let (tx, rx) = mpsc::channel(queue.max(1));
        let q = Arc::new(HookQueue {
            url: url.safe(),
            index: index + 1,
            tx,
            dropped_full: AtomicU64::new(0),
        });
        sd.spawn_sender(sender(
            Hook {
                index: index + 1,
                headers: Arc::clone(&headers),
                url: url.clone(),
            },
            format,
            config,
            rx,
            Arc::clone(log),
            metrics.clone(),
            sd.clone(),
        ));
        out.push(q);
    }
    if !out.is_empty() {
        sd.spawn(report_full(out.clone(), queue, Arc::clone(log)));
    }
    Ok(out)
}

/// Logs the events dropped because a queue was full: at once for the first, then at
/// most every 10 s per webhook, with the count.
async fn report_full(hooks: Vec<Arc<HookQueue>>, queue: usize, log: Arc<Logger>) {
    let mut last: Vec<Option<Instant>> = vec![None; hooks.len()];
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        for (h, last) in hooks.iter().zip(last.iter_mut()) {
            if last.is_some_and(|t| now.saturating_duration_since(t) < LOG_EVERY) {
                continue;
            }
            let n = h.dropped_full.swap(0, Ordering::Relaxed);
            if n > 0 {
                *last = Some(now);
                log.warn(&format!(
                    "webhook {} ({}): queue full ({queue} events waiting): {n} event{} dropped (the receiver is down or slow; monitoring is not affected)",
                    h.index,
                    h.url,
                    if n == 1 { "" } else { "s" }
                ));
            }
        }
    }
}

/// One webhook: its place in the pfile (from 1), the extra header lines, the URL.
struct Hook {
    index: usize,
    headers: Arc<str>,
    url: WebhookUrl,
}

async fn sender(
    hook: Hook,
    format: WebhookFormat,
    tls: Option<Arc<rustls::ClientConfig>>,
    mut rx: mpsc::Receiver<Event>,
    log: Arc<Logger>,
    metrics: Option<Arc<Metrics>>,
    sd: Shutdown,
) {
    let Hook {
        index,
        headers,
        url,
    } = hook;
    let mut gave_up: u64 = 0;
    let mut gave_up_log = LogLimit::default();
    let mut closed = false;
    loop {
        let ev = tokio::select! {
            biased;
            ev = rx.recv() => ev,
            () = sd.draining(), if !closed => {
                // No new events; what is queued is still sent, then recv ends.
                rx.close();
                closed = true;
                continue;
            }
        };
        let Some(ev) = ev else { break };
        let body = match format {
            WebhookFormat::Json => serde_json::to_vec(&ev),
            WebhookFormat::Alertmanager => match alertmanager(&ev, wall_secs()) {
                Some(alerts) => serde_json::to_vec(&alerts),
                // Not an alert: nothing to send.
                None => continue,
            },
        };
        let Ok(body) = body else { continue };
        let mut backoff = Duration::from_millis(200);
        let mut failure = None;
        for attempt in 1..=ATTEMPTS {
            match tokio::time::timeout(TIMEOUT, post(&url, &headers, tls.as_ref(), &body)).await {
                Ok(Ok(code)) if (200..300).contains(&code) => {
                    failure = None;
                    break;
                }
                // The receiver refuses this event: retrying will not help.
                Ok(Ok(code)) if (400..500).contains(&code) && code != 408 && code != 429 => {
                    failure = Some(format!("HTTP status {code}"));
                    break;
                }
                Ok(Ok(code)) => failure = Some(format!("HTTP status {code}")),
                Ok(Err(e)) => failure = Some(e.to_string()),
                Err(_) => failure = Some(format!("no answer within {} s", TIMEOUT.as_secs())),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
        if let Some(why) = failure {
            gave_up += 1;
            if let Some(m) = &metrics {
                m.webhook_dropped(&url.safe(), index, "gave_up");
            }
            if gave_up_log.allow(Instant::now()) {
                log.warn(&format!(
                    "webhook {} ({}): event {} ({}) dropped after {ATTEMPTS} attempts: {why} ({gave_up} dropped so far)",
                    index, url.safe(), ev.seq, ev.kind
                ));
            }
        }
    }
}

/// The wall clock in seconds since the epoch (for Alertmanager's `endsAt`).
fn wall_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// One POST; returns the response's status code.
async fn post(
    url: &WebhookUrl,
    headers: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    body: &[u8],
) -> Result<u16, ReportError> {
    let tcp = TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(ReportError::Connect)?;
    let _ = tcp.set_nodelay(true);
    match tls {
        None => exchange(tcp, url, headers, body).await,
        Some(cfg) => {
            let name =
                ServerName::try_from(url.host.clone()).map_err(|e| ReportError::ServerName {
                    host: url.host.clone(),
                    why: e.to_string(),
                })?;
            let conn = tokio_rustls::TlsConnector::from(Arc::clone(cfg))
                .connect(name, tcp)
                .await
                .map_err(ReportError::Tls)?;
            exchange(conn, url, headers, body).await
        }
    }
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut s: S,
    url: &WebhookUrl,
    headers: &str,
    body: &[u8],
) -> Result<u16, ReportError> {
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: psweb-pcheck/{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{headers}Connection: close\r\n\r\n",
        url.path,
        url.host_header(),
        env!("CARGO_PKG_VERSION"),
        body.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req).await.map_err(ReportError::Send)?;
    s.flush().await.map_err(ReportError::Send)?;
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    loop {
        let n = s.read(&mut chunk).await.map_err(ReportError::Read)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(2).any(|w| w == b"\r\n") || buf.len() > 4096 {
            break;
        }
    }
    status_code(&buf)
}

/// The status code of an HTTP/1.x response whose status line (at least) is in `buf`.
fn status_code(buf: &[u8]) -> Result<u16, ReportError> {
    let mut headers = [httparse::EMPTY_HEADER; 16];
    let mut res = httparse::Response::new(&mut headers);
    // The status line is parsed before the headers: a partial head (or more headers
    // than there is room for) still has its code.
    let parsed = res.parse(buf);
    match (parsed, res.code) {
        (Ok(_) | Err(httparse::Error::TooManyHeaders), Some(code)) => Ok(code),
        _ => {
            let line = String::from_utf8_lossy(buf);
            Err(ReportError::NotHttp(
                line.lines().next().unwrap_or("").to_string(),
            ))
        }
    }
}

/// Reads `webhook_header_file`: `Name: value` lines (blank lines and `#` comments
/// skipped), returned as header lines ending in CRLF. Errors name the file and line,
/// never a value (it is usually a secret).
pub fn load_headers(path: &std::path::Path) -> Result<String, ReportError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let what = |line: usize, why: &str| ReportError::HeaderLine {
        path: path.display().to_string(),
        line,
        why: why.to_string(),
    };
    let io = |source| ReportError::HeaderFile {
        path: path.display().to_string(),
        source,
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let m = f.metadata().map_err(io)?;
    if !m.is_file() {
        return Err(what(0, "not a regular file"));
    }
    if crate::trust::is_root() {
        use std::os::unix::fs::MetadataExt;
        if m.mode() & 0o077 != 0 {
            return Err(what(
                0,
                &format!(
                    "readable or writable by others (mode {:04o}): it holds secrets; chmod 600 it",
                    m.mode() & 0o7777
                ),
            ));
        }
    }
    let mut text = String::new();
    f.take(64 * 1024).read_to_string(&mut text).map_err(io)?;
    let mut out = String::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(what(i + 1, "expected Name: value"));
        };
        let name = name.trim();
        let token = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if name.is_empty() || !name.chars().all(token) {
            return Err(what(
                i + 1,
                "expected a header name (letters, digits, '-') before ':'",
            ));
        }
        let value = value.trim();
        if value.chars().any(|c| c.is_control() && c != '\t') {
            return Err(what(i + 1, "control characters in the value"));
        }
        let reserved = [
            "host",
            "content-length",
            "content-type",
            "connection",
            "transfer-encoding",
        ];
        if reserved.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(what(i + 1, &format!("{name} is set by pcheck")));
        }
        out.push_str(&format!("{name}: {value}\r\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn posts_json_and_reads_the_status() {
        let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            let mut got = Vec::new();
            loop {
                let n = s.read(&mut buf).await.expect("read");
                got.extend_from_slice(&buf[..n]);
                if n == 0 || got.ends_with(b"}") {
                    break;
                }
            }
            s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
                .await
                .expect("write");
            String::from_utf8_lossy(&got).into_owned()
        });
        let url = WebhookUrl::parse(&format!("http://127.0.0.1:{port}/hook?x=1")).expect("url");
        let code = post(&url, "X-Token: t1\r\n", None, b"{\"a\":1}")
            .await
            .expect("post");
        assert_eq!(code, 204);
        let req = server.await.expect("server");
        assert!(req.starts_with("POST /hook?x=1 HTTP/1.1\r\n"), "{req}");
        assert!(req.contains("Content-Length: 7\r\n"), "{req}");
        assert!(req.contains("\r\nX-Token: t1\r\n"), "{req}");
        assert!(req.ends_with("{\"a\":1}"), "{req}");
    }

    #[test]
    fn urls() {
        let u = WebhookUrl::parse("https://[::1]:8443/a").expect("v6");
        assert_eq!((u.host.as_str(), u.port, u.https), ("::1", 8443, true));
        assert_eq!(u.host_header(), "[::1]:8443");
        let u = WebhookUrl::parse("http://example.com").expect("default port");
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        for bad in [
            "ftp://x/",
            "http://",
            "http://h:x/",
            "http://h:0/",
            "http://u@h/",
        ] {
            assert!(WebhookUrl::parse(bad).is_err(), "{bad}");
        }
        let err = WebhookUrl::parse("http://ops:s3cret@h/x?token=t0k")
            .expect_err("creds")
            .to_string();
        assert!(!err.contains("s3cret") && !err.contains("t0k"), "{err}");
        let u = WebhookUrl::parse("http://h:9000/hooks/t0k?key=abc").expect("url");
        assert_eq!(u.safe(), "http://h:9000");
    }

    #[test]
    fn status_line() {
        assert_eq!(status_code(b"HTTP/1.1 204 No Content\r\n").unwrap(), 204);
        assert_eq!(status_code(b"HTTP/1.0 500 \r\nA: b\r\n\r\n").unwrap(), 500);
        assert_eq!(status_code(b"HTTP/1.1 202\r\n").unwrap(), 202);
        let e = status_code(b"SSH-2.0-OpenSSH\r\n").unwrap_err().to_string();
        assert_eq!(e, "not an HTTP response: \"SSH-2.0-OpenSSH\"");
        assert!(status_code(b"HTTP/1.1 2x0 OK\r\n").is_err());
        assert!(status_code(b"").is_err());
    }

    #[test]
    fn header_file_lines() {
        let d = tempfile::tempdir().expect("tmp");
        let p = d.path().join("h");
        std::fs::write(&p, "# comment\n\nAuthorization: Bearer abc\nX-A:b\n").expect("write");
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod");
        assert_eq!(
            load_headers(&p).expect("ok"),
            "Authorization: Bearer abc\r\nX-A: b\r\n"
        );
        std::fs::write(&p, "Authorization Bearer abc\n").expect("write");
        let err = load_headers(&p).expect_err("no colon").to_string();
        assert!(
            err.contains(":1: expected Name: value") && !err.contains("abc"),
            "{err}"
        );
        std::fs::write(&p, "Host: x\n").expect("write");
        assert!(load_headers(&p).is_err());
    }
}
