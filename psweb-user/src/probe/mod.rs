//! Stall probes (SPEC 3.1, 3.5): is a live process still serving?
//!
//! Three kinds, one async function each behind [`probe`] / [`Prober::run`]:
//! - [`Kind::Tcp`] (`_bi_socket`, tag `skt`): connect, close.
//! - [`Kind::Http`] (`_bi_webserv`, tag `web`): connect, `HEAD <path> HTTP/1.1`, read the
//!   status line and headers (parsed with `httparse`), close.
//! - [`Kind::Https`] (`_bi_webservs`, tag `ssl`): the same over TLS 1.2/1.3 (rustls, ring).
//!
//! Any valid HTTP status line counts as alive: a 500 is an application problem, not a
//! stall. [`Answer::status`] carries the code so that a caller configured to require a
//! status class can judge it.
//!
//! Every probe runs under one hard timeout covering resolve + connect + TLS + request +
//! status line, is purely async (name resolution runs on tokio's blocking pool, so a slow
//! resolver holds no runtime thread), and never panics. Time is measured on the monotonic
//! clock.

pub mod http;
pub mod https;
pub mod schedule;
pub mod tcp;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::tls::tls_config;
pub use crate::tls::{TlsOptions, TlsVerify};

/// Timeout used by [`Target::new`]; the agent normally sets its own from the pfile.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// What to probe. Built by the agent from a pfile stall block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// A DNS name, an IPv4 address, or an IPv6 address with or without `[brackets]`.
    /// Empty means `localhost`.
    pub host: String,
    pub port: u16,
    /// The path HEAD asks for; empty means `/`, and a missing leading `/` is added.
    pub path: String,
    /// Hard timeout for the whole probe (resolve + connect + TLS + request + status line).
    pub timeout: Duration,
    /// TLS settings for [`Kind::Https`] (`None` there means [`TlsOptions::default`]);
    /// ignored by the other kinds.
    pub tls: Option<TlsOptions>,
}

impl Target {
    /// `localhost`-style target with path `/`, [`DEFAULT_TIMEOUT`] and no TLS options.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Target {
            host: host.into(),
            port,
            path: "/".to_string(),
            timeout: DEFAULT_TIMEOUT,
            tls: None,
        }
    }

    /// The host without IPv6 brackets; `localhost` when empty.
    pub fn bare_host(&self) -> &str {
        let h = self.host.trim();
        let h = h
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(h);
        if h.is_empty() {
            "localhost"
        } else {
            h
        }
    }

    /// The host as an IP address, when it is one.
    pub fn host_ip(&self) -> Option<IpAddr> {
        self.bare_host().parse().ok()
    }

    /// The value of the `Host:` header: IPv6 in brackets, `:port` unless it is
    /// `default_port` (80 for HTTP, 443 for HTTPS).
    pub fn host_header(&self, default_port: u16) -> String {
        let h = self.bare_host();
        let h = if h.contains(':') {
            format!("[{h}]")
        } else {
            h.to_string()
        };
        if self.port == default_port {
            h
        } else {
            format!("{h}:{}", self.port)
        }
    }
}

/// The probe kind; the pfile block name decides it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Tcp,
    Http,
    Https,
}

impl Kind {
    /// The tag `show pent` prints after `stall_chk` (SPEC 3.1).
    pub fn show_tag(self) -> &'static str {
        match self {
            Kind::Tcp => "skt",
            Kind::Http => "web",
            Kind::Https => "ssl",
        }
    }
}

/// Result of one probe. `result` is `Ok` when the server is alive.
#[derive(Debug)]
pub struct Outcome {
    pub kind: Kind,
    /// Monotonic time the probe took (at most the timeout plus scheduling slack).
    pub elapsed: Duration,
    pub result: Result<Answer, ProbeError>,
}

impl Outcome {
    pub fn is_alive(&self) -> bool {
        self.result.is_ok()
    }
}

/// What an alive server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status code; `None` for TCP.
    pub status: Option<u16>,
    /// Minor version of the `HTTP/1.x` status line (0 or 1); `None` for TCP.
    pub http_version: Option<u8>,
}

/// Why a probe failed.
#[derive(thiserror::Error, Debug)]
pub enum ProbeError {
    /// The host name did not resolve (or resolved to nothing).
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// No address accepted the connection; the message lists every address tried.
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    /// Connected, but the whole probe did not finish within this (the configured)
    /// timeout: the server accepted and did not answer in time.
    #[error("connected, but no answer within {0:?}")]
    Timeout(Duration),
    /// The connection was not established within the timeout: no SYN-ACK came (a
    /// full accept queue drops the SYN), or the name did not resolve in time.
    #[error("connect timed out after {0:?} (no SYN-ACK: the accept queue may be full)")]
    ConnectTimeout(Duration),
    /// TLS handshake or certificate verification failed.
    #[error("TLS: {0}")]
    Tls(String),
    /// The server answered, but not with a valid HTTP status line.
    #[error("bad HTTP response: {0}")]
    Protocol(String),
    /// Reading or writing the connection failed after it was established.
    #[error("I/O: {0}")]
    Io(std::io::Error),
    /// The target cannot be probed as configured (bad path, CA file, server name).
    #[error("bad probe configuration: {0}")]
    Config(String),
}

impl From<crate::tls::TlsError> for ProbeError {
    fn from(e: crate::tls::TlsError) -> Self {
        ProbeError::Config(e.to_string())
    }
}

/// A target with its TLS client configuration built once and its host name's
/// addresses kept for a while ([`tcp::RESOLVE_TTL`]); reuse it for every probe.
#[derive(Debug, Clone)]
pub struct Prober {
    kind: Kind,
    target: Target,
    tls: Option<Arc<rustls::ClientConfig>>,
    addrs: Arc<tcp::AddrCache>,
}

impl Prober {
    /// Builds the TLS configuration for [`Kind::Https`] (this reads the CA file or the
    /// system trust store synchronously: call it when the configuration is loaded, or on
    /// a blocking thread). Fails on an unusable path, CA file or server name.
    pub fn new(kind: Kind, target: Target) -> Result<Self, ProbeError> {
        let tls = match kind {
            Kind::Tcp => None,
            Kind::Http => {
                http::request(&target, 80)?;
                None
            }
            Kind::Https => {
                http::request(&target, 443)?;
                let opts = target.tls.clone().unwrap_or_default();
                https::server_name(&target, &opts)?;
                Some(tls_config(&opts)?)
            }
        };
        Ok(Prober {
            kind,
            target,
            tls,
            addrs: Arc::default(),
        })
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn target(&self) -> &Target {
        &self.target
    }

    /// One probe. Never panics; returns within `target.timeout` (plus scheduling slack).
    pub async fn run(&self) -> Outcome {
        let kind = self.kind;
        let target = &self.target;
        let tls = self.tls.clone();
        let cache = &self.addrs;
        timed(kind, target.timeout, |deadline| async move {
            let addrs = cache.resolve(target).await?;
            match kind {
                Kind::Tcp => tcp::check(&addrs).await,
                Kind::Http => http::check(target, &addrs).await,
                Kind::Https => match tls {
                    Some(cfg) => https::check(target, &addrs, cfg, deadline).await,
                    None => Err(ProbeError::Config("no TLS configuration".into())),
                },
            }
        })
        .await
    }
}

/// One probe without a prepared [`Prober`]. For HTTPS this builds the TLS configuration
/// on every call (on the blocking pool, inside the timeout); prefer [`Prober`] for
/// repeated probes.
pub async fn probe(kind: Kind, target: &Target) -> Outcome {
    timed(kind, target.timeout, |deadline| async move {
        let addrs = tcp::resolve(target).await?;
        match kind {
            Kind::Tcp => tcp::check(&addrs).await,
            Kind::Http => http::check(target, &addrs).await,
            Kind::Https => {
                let opts = target.tls.clone().unwrap_or_default();
                let cfg = tokio::task::spawn_blocking(move || tls_config(&opts))
                    .await
                    .map_err(|e| ProbeError::Config(format!("TLS configuration task: {e}")))??;
                https::check(target, &addrs, cfg, deadline).await
            }
        }
    })
    .await
}

tokio::task_local! {
    /// Set when the probe's TCP connection is established: a timeout after it is
    /// "no answer", one before it is "connect timed out".
    static CONNECTED: std::cell::Cell<bool>;
}

/// Notes that the current probe's connection is established.
pub(crate) fn mark_connected() {
    let _ = CONNECTED.try_with(|c| c.set(true));
}

/// Runs `f(deadline)` under a hard timeout and measures it on the monotonic clock.
async fn timed<F, Fut>(kind: Kind, timeout: Duration, f: F) -> Outcome
where
    F: FnOnce(Instant) -> Fut,
    Fut: std::future::Future<Output = Result<Answer, ProbeError>>,
{
    let start = Instant::now();
    // A timeout too large to add means "no practical limit" (about 30 years).
    let deadline = start
        .checked_add(timeout)
        .unwrap_or_else(|| start + Duration::from_secs(86400 * 365 * 30));
    let (result, connected) = CONNECTED
        .scope(std::cell::Cell::new(false), async {
            let r = tokio::time::timeout_at(deadline, f(deadline)).await;
            (r, CONNECTED.with(|c| c.get()))
        })
        .await;
    let result = match result {
        Ok(r) => r,
        Err(_) if connected => Err(ProbeError::Timeout(timeout)),
        Err(_) => Err(ProbeError::ConnectTimeout(timeout)),
    };
    Outcome {
        kind,
        elapsed: start.elapsed(),
        result,
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use std::net::SocketAddr;

    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// Reads until the end of the request head (or EOF) and returns it.
    pub async fn read_head<S: AsyncRead + Unpin>(s: &mut S) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 1024];
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            match s.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf
    }

    /// Serves one connection: reads the request head, writes `response`, closes.
    /// The task returns the request head it received.
    pub async fn one_shot_http(
        bind: &str,
        response: &'static [u8],
    ) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<Vec<u8>>)> {
        let l = TcpListener::bind(bind).await?;
        let addr = l.local_addr()?;
        let h = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.expect("accept");
            let req = read_head(&mut s).await;
            serve(&mut s, response).await;
            req
        });
        Ok((addr, h))
    }

    pub async fn serve<S: AsyncWrite + Unpin>(s: &mut S, response: &[u8]) {
        let _ = s.write_all(response).await;
        let _ = s.shutdown().await;
    }

    /// The value of header `name` in a request head.
    pub fn header(req: &[u8], name: &str) -> Option<String> {
        let text = String::from_utf8_lossy(req);
        text.split("\r\n").skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    pub fn request_line(req: &[u8]) -> String {
        let text = String::from_utf8_lossy(req);
        text.split("\r\n").next().unwrap_or("").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_forms() {
        let mut t = Target::new("", 8080);
        assert_eq!(t.bare_host(), "localhost");
        assert_eq!(t.host_header(80), "localhost:8080");
        t.host = "[::1]".into();
        assert_eq!(t.bare_host(), "::1");
        assert_eq!(t.host_ip(), Some("::1".parse().unwrap()));
        assert_eq!(t.host_header(80), "[::1]:8080");
        t.host = "::1".into();
        assert_eq!(t.host_header(80), "[::1]:8080");
        t.port = 80;
        assert_eq!(t.host_header(80), "[::1]");
        t.host = "www.example.com".into();
        assert_eq!(t.host_ip(), None);
        assert_eq!(t.host_header(80), "www.example.com");
        assert_eq!(t.host_header(443), "www.example.com:80");
    }

    #[test]
    fn tags() {
        assert_eq!(Kind::Tcp.show_tag(), "skt");
        assert_eq!(Kind::Http.show_tag(), "web");
        assert_eq!(Kind::Https.show_tag(), "ssl");
    }

    #[tokio::test]
    async fn zero_timeout_is_a_timeout_not_a_panic() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut t = Target::new("127.0.0.1", l.local_addr().unwrap().port());
        t.timeout = Duration::ZERO;
        let o = probe(Kind::Http, &t).await;
        // Either the connect completed synchronously and the read timed out, or the
        // connect itself timed out.
        assert!(
            matches!(
                o.result,
                Err(ProbeError::Timeout(_) | ProbeError::ConnectTimeout(_))
            ),
            "{o:?}"
        );
    }

    #[tokio::test]
    async fn huge_timeout_does_not_overflow() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut t = Target::new("127.0.0.1", l.local_addr().unwrap().port());
        t.timeout = Duration::MAX;
        let o = probe(Kind::Tcp, &t).await;
        assert!(o.is_alive(), "{o:?}");
    }
}
