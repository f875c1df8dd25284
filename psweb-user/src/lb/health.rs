//! The HTTP health endpoint for balancers that cannot speak agent-check:
//! `GET /health` is 200 when every entry is up, `GET /health/<pent_id|lb_name>` when
//! that entry is; 503 when drained or down, 404 for an unknown entry. The body is a
//! small JSON document (state, reason, since).

use super::Board;
use crate::core::lb::LbState;
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest request head read.
const MAX_HEAD: usize = 8 * 1024;

/// Serves one HTTP request (bounded by the caller's deadline).
pub async fn serve(mut s: TcpStream, board: Arc<Board>) {
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    loop {
        let Ok(n) = s.read(&mut chunk).await else {
            return;
        };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.windows(4).any(|w| w == b"\r\n\r\n") || buf.windows(2).any(|w| w == b"\n\n") {
            break;
        }
        if buf.len() > MAX_HEAD {
            let _ = respond(&mut s, "431 Request Header Fields Too Large", "{}").await;
            return;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut words = head.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let path = target.split('?').next().unwrap_or("");
    let (status, body) = answer(&board, method, path);
    let _ = respond(&mut s, status, &body).await;
}

/// Status line and JSON body for one request.
fn answer(board: &Board, method: &str, path: &str) -> (&'static str, String) {
    if method != "GET" && method != "HEAD" {
        return (
            "405 Method Not Allowed",
            r#"{"error":"GET /health or /health/<pent_id|lb_name>"}"#.to_string(),
        );
    }
    let which = match path.strip_prefix("/health") {
        Some("") | Some("/") => None,
        Some(rest) if rest.starts_with('/') => Some(&rest[1..]),
        _ => {
            return (
                "404 Not Found",
                r#"{"error":"GET /health or /health/<pent_id|lb_name>"}"#.to_string(),
            )
        }
    };
    board.count();
    let Some(views) = board.views(which, Instant::now()) else {
        return ("404 Not Found", r#"{"error":"no such entry"}"#.to_string());
    };
    let up = views.iter().all(|v| v.state == LbState::Up);
    let body = match (which, views.as_slice()) {
        (Some(_), [one]) => serde_json::to_string(one),
        _ => serde_json::to_string(&serde_json::json!({
            "state": if up { "up" } else { "not up" },
            "entries": views,
        })),
    }
    .unwrap_or_default();
    (
        if up {
            "200 OK"
        } else {
            "503 Service Unavailable"
        },
        body,
    )
}

async fn respond(s: &mut TcpStream, status: &str, body: &str) -> std::io::Result<()> {
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}\n",
        body.len() + 1
    );
    s.write_all(resp.as_bytes()).await?;
    s.shutdown().await
}
