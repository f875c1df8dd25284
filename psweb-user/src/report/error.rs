//! Why reporting could not start or deliver: the metrics listener, a webhook's TLS
//! setup or header file, one webhook POST. The text is what the operator reads (in
//! pcheck's start-up error or a `webhook ... dropped` line).

use std::net::SocketAddr;

#[derive(thiserror::Error, Debug)]
pub enum ReportError {
    #[error("metrics_listen {addr}: cannot listen: {source}")]
    MetricsListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics_listen {addr}: {source}")]
    MetricsSocket {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("webhook {url}: TLS setup: {source}")]
    WebhookTls {
        url: String,
        source: crate::tls::TlsError,
    },
    #[error("webhook_header_file {path}: {source}")]
    HeaderFile {
        path: String,
        source: std::io::Error,
    },
    /// A header file line (0: the file as a whole) that cannot be used; never its value.
    #[error("webhook_header_file {path}:{line}: {why}")]
    HeaderLine {
        path: String,
        line: usize,
        why: String,
    },
    #[error("connect: {0}")]
    Connect(std::io::Error),
    #[error("bad TLS server name {host:?}: {why}")]
    ServerName { host: String, why: String },
    #[error("TLS: {0}")]
    Tls(std::io::Error),
    #[error("send: {0}")]
    Send(std::io::Error),
    #[error("read: {0}")]
    Read(std::io::Error),
    /// What came back is no HTTP/1.x status line (its first line, quoted).
    #[error("not an HTTP response: {0:?}")]
    NotHttp(String),
}
