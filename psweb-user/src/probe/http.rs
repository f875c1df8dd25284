//! HTTP probe (`_bi_webserv`): `HEAD <path> HTTP/1.1`, read the status line and headers,
//! close. Any valid status line counts as alive.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::{tcp, Answer, ProbeError, Target};

/// Sent as `User-Agent:` so that server logs show who asked.
pub const USER_AGENT: &str = "psweb-pcheck";
/// The most response-head bytes read before giving up on finding the end of the headers.
const MAX_HEAD: usize = 64 * 1024;
/// Headers parsed; more are not an error (the status line is what counts).
const MAX_HEADERS: usize = 64;

/// The request bytes. Fails (as a configuration error) on a path that servers
/// would reject or that could smuggle a second request: control bytes, spaces, non-ASCII.
pub fn request(target: &Target, default_port: u16) -> Result<String, ProbeError> {
    let path = target.path.trim();
    if let Some(b) = path.bytes().find(|b| !b.is_ascii_graphic()) {
        return Err(ProbeError::Config(format!(
            "path {:?} contains byte 0x{b:02x}; write it percent-encoded",
            target.path
        )));
    }
    let path = if path.is_empty() {
        "/".to_string()
    } else if path.starts_with('/') {
        path.to_string()
    } else {
        format!("/{path}")
    };
    Ok(format!(
        "HEAD {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {USER_AGENT}\r\n\
         Accept: */*\r\nConnection: close\r\n\r\n",
        host = target.host_header(default_port)
    ))
}

/// Parses what has been read so far.
/// `Ok(Some)`: a valid status line is complete (alive). `Ok(None)`: read more.
/// Once the status line is complete, anything after it (bad or too many headers, EOF or
/// a size limit before the blank line) no longer matters: the server answered.
pub fn parse_head(buf: &[u8], eof: bool) -> Result<Option<Answer>, ProbeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let parsed = resp.parse(buf);
    // httparse sets `reason` only after the whole status line, CRLF included, was read.
    let status_line_done = resp.reason.is_some();
    let answer = Answer {
        status: resp.code,
        http_version: resp.version,
    };
    match parsed {
        Ok(httparse::Status::Complete(_)) => Ok(Some(answer)),
        Ok(httparse::Status::Partial) if status_line_done => {
            if eof || buf.len() >= MAX_HEAD {
                Ok(Some(answer))
            } else {
                Ok(None)
            }
        }
        Ok(httparse::Status::Partial) => {
            if eof && buf.is_empty() {
                Err(ProbeError::Protocol(
                    "connection closed without a response".into(),
                ))
            } else if eof {
                Err(ProbeError::Protocol(format!(
                    "connection closed inside the status line: {}",
                    snippet(buf)
                )))
            } else if buf.len() >= MAX_HEAD {
                Err(ProbeError::Protocol(format!(
                    "no status line in the first {MAX_HEAD} bytes"
                )))
            } else {
                Ok(None)
            }
        }
        Err(_) if status_line_done => Ok(Some(answer)),
        Err(e) => Err(ProbeError::Protocol(format!(
            "invalid status line ({e}): {}",
            snippet(buf)
        ))),
    }
}

/// The start of the response, printable, for error messages.
fn snippet(buf: &[u8]) -> String {
    let end = buf
        .iter()
        .position(|&b| b == b'\n')
        .unwrap_or(buf.len())
        .min(60);
    format!("{:?}", String::from_utf8_lossy(&buf[..end]))
}

/// Sends the request on an established stream (TCP or TLS) and reads the response head.
pub async fn exchange<S>(
    stream: &mut S,
    target: &Target,
    default_port: u16,
) -> Result<Answer, ProbeError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let req = request(target, default_port)?;
    stream
        .write_all(req.as_bytes())
        .await
        .map_err(ProbeError::Io)?;
    stream.flush().await.map_err(ProbeError::Io)?;

    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let room = (MAX_HEAD - buf.len()).min(chunk.len());
        match stream.read(&mut chunk[..room]).await {
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(answer) = parse_head(&buf, n == 0)? {
                    return Ok(answer);
                }
            }
            // A reset after a complete status line (e.g. the server closed with our
            // request partly unread) still means the server answered.
            Err(e) => {
                return match parse_head(&buf, true) {
                    Ok(Some(answer)) => Ok(answer),
                    _ => Err(ProbeError::Io(e)),
                }
            }
        }
    }
}

/// The HTTP check over plain TCP. Dropping the stream closes the connection.
pub(crate) async fn check(
    target: &Target,
    addrs: &[std::net::SocketAddr],
) -> Result<Answer, ProbeError> {
    let mut stream = tcp::connect(addrs).await?;
    exchange(&mut stream, target, 80).await
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;

    use super::super::testutil::{header, one_shot_http, read_head, request_line};
    use super::super::{probe, Answer, Kind, ProbeError, Prober, Target};
    use super::*;

    fn target(addr: std::net::SocketAddr) -> Target {
        let mut t = Target::new(addr.ip().to_string(), addr.port());
        t.timeout = Duration::from_secs(5);
        t
    }

    #[tokio::test]
    async fn status_200_and_request_shape() {
        let (addr, server) = one_shot_http(
            "127.0.0.1:0",
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nServer: t\r\n\r\n",
        )
        .await
        .unwrap();
        let mut t = target(addr);
        t.path = "/index.html?x=1".into();
        let o = probe(Kind::Http, &t).await;
        assert_eq!(
            o.result.unwrap(),
            Answer {
                status: Some(200),
                http_version: Some(1)
            }
        );
        let req = server.await.unwrap();
        assert_eq!(request_line(&req), "HEAD /index.html?x=1 HTTP/1.1");
        assert_eq!(
            header(&req, "host").as_deref(),
            Some(format!("127.0.0.1:{}", addr.port()).as_str())
        );
        assert_eq!(header(&req, "user-agent").as_deref(), Some(USER_AGENT));
        assert_eq!(header(&req, "connection").as_deref(), Some("close"));
    }

    #[tokio::test]
    async fn status_500_is_alive() {
        let (addr, _server) =
            one_shot_http("127.0.0.1:0", b"HTTP/1.0 500 Internal Server Error\r\n\r\n")
                .await
                .unwrap();
        let o = probe(Kind::Http, &target(addr)).await;
        assert_eq!(
            o.result.unwrap(),
            Answer {
                status: Some(500),
                http_version: Some(0)
            }
        );
    }

    #[tokio::test]
    async fn garbage_is_a_protocol_error() {
        let (addr, _server) = one_shot_http("127.0.0.1:0", b"hello\r\n\r\n")
            .await
            .unwrap();
        let o = probe(Kind::Http, &target(addr)).await;
        match o.result {
            Err(ProbeError::Protocol(m)) => assert!(m.contains("hello"), "{m}"),
            other => panic!("expected Protocol error, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn close_without_answer_is_a_protocol_error() {
        let (addr, _server) = one_shot_http("127.0.0.1:0", b"").await.unwrap();
        let o = probe(Kind::Http, &target(addr)).await;
        assert!(matches!(o.result, Err(ProbeError::Protocol(_))), "{o:?}");
    }

    #[tokio::test]
    async fn silent_server_times_out_on_time() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        // Accepts, reads the request, never answers; holds the connection open until
        // the client goes away.
        let server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let req = read_head(&mut s).await;
            let mut rest = Vec::new();
            let _ = s.read_to_end(&mut rest).await;
            req
        });
        let mut t = target(addr);
        t.timeout = Duration::from_millis(500);
        let o = probe(Kind::Http, &t).await;
        assert!(
            matches!(o.result, Err(ProbeError::Timeout(d)) if d == t.timeout),
            "{o:?}"
        );
        let why = o.result.unwrap_err().to_string();
        assert!(why.starts_with("connected, but no answer within"), "{why}");
        assert!(o.elapsed >= t.timeout, "{:?}", o.elapsed);
        assert!(
            o.elapsed < t.timeout + Duration::from_millis(200),
            "{:?}",
            o.elapsed
        );
        // The connection was closed when the probe gave up.
        let req = server.await.unwrap();
        assert!(req.starts_with(b"HEAD / HTTP/1.1\r\n"));
    }

    #[tokio::test]
    async fn ipv6_loopback() {
        let (addr, server) =
            match one_shot_http("[::1]:0", b"HTTP/1.1 204 No Content\r\n\r\n").await {
                Ok(x) => x,
                Err(e) => {
                    eprintln!("skipped: cannot bind [::1]: {e}");
                    return;
                }
            };
        let mut t = target(addr);
        t.host = "[::1]".into();
        let o = probe(Kind::Http, &t).await;
        assert_eq!(o.result.unwrap().status, Some(204));
        let req = server.await.unwrap();
        assert_eq!(
            header(&req, "host").as_deref(),
            Some(format!("[::1]:{}", addr.port()).as_str())
        );
    }

    #[tokio::test]
    async fn prober_reuses_target() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                tokio::spawn(async move {
                    read_head(&mut s).await;
                    super::super::testutil::serve(&mut s, b"HTTP/1.1 200 OK\r\n\r\n").await;
                });
            }
        });
        let p = Prober::new(Kind::Http, target(addr)).unwrap();
        for _ in 0..3 {
            let o = p.run().await;
            assert_eq!(o.result.unwrap().status, Some(200));
        }
    }

    #[test]
    fn request_text() {
        let mut t = Target::new("localhost", 80);
        t.path = String::new();
        assert_eq!(
            request(&t, 80).unwrap(),
            "HEAD / HTTP/1.1\r\nHost: localhost\r\nUser-Agent: psweb-pcheck\r\n\
             Accept: */*\r\nConnection: close\r\n\r\n"
        );
        t.path = "status".into();
        assert!(request(&t, 80)
            .unwrap()
            .starts_with("HEAD /status HTTP/1.1\r\n"));
        t.port = 8080;
        assert!(request(&t, 80)
            .unwrap()
            .contains("\r\nHost: localhost:8080\r\n"));
        for bad in ["/a b", "/a\r\nX: y", "/\u{e9}"] {
            t.path = bad.into();
            assert!(
                matches!(request(&t, 80), Err(ProbeError::Config(_))),
                "{bad:?}"
            );
            assert!(Prober::new(Kind::Http, t.clone()).is_err());
        }
        // The TCP check does not use the path.
        assert!(Prober::new(Kind::Tcp, t.clone()).is_ok());
    }

    #[test]
    fn parse_cases() {
        let ok = |status, v| {
            Some(Answer {
                status: Some(status),
                http_version: Some(v),
            })
        };
        // Needs more bytes.
        assert_eq!(parse_head(b"", false).unwrap(), None);
        assert_eq!(parse_head(b"HTTP/1.1 20", false).unwrap(), None);
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\nA: b\r\n", false).unwrap(),
            None
        );
        // Complete.
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\n\r\n", false).unwrap(),
            ok(200, 1)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 302\r\n\r\n", false).unwrap(),
            ok(302, 1)
        );
        // Status line complete, headers cut by EOF, bad, or too many: still alive.
        assert_eq!(
            parse_head(b"HTTP/1.1 503 Busy\r\nA: b\r\n", true).unwrap(),
            ok(503, 1)
        );
        assert_eq!(
            parse_head(b"HTTP/1.1 200 OK\r\n\x01bad\r\n\r\n", false).unwrap(),
            ok(200, 1)
        );
        let mut many = b"HTTP/1.1 200 OK\r\n".to_vec();
        for i in 0..200 {
            many.extend_from_slice(format!("X-{i}: v\r\n").as_bytes());
        }
        many.extend_from_slice(b"\r\n");
        assert_eq!(parse_head(&many, false).unwrap(), ok(200, 1));
        // Not alive.
        for (buf, eof) in [
            (&b""[..], true),
            (b"HTTP/1.1 200 OK", true),
            (b"hello\r\n\r\n", false),
            (b"SSH-2.0-OpenSSH_9.2\r\n", false),
            (b"HTTP/2 200\r\n\r\n", false),
            (b"HTTP/1.1 2000 OK\r\n\r\n", false),
        ] {
            assert!(
                matches!(parse_head(buf, eof), Err(ProbeError::Protocol(_))),
                "{:?}",
                String::from_utf8_lossy(buf)
            );
        }
        // No end of a status line within the size limit.
        let long = vec![b'H'; MAX_HEAD];
        assert!(matches!(
            parse_head(&long, false),
            Err(ProbeError::Protocol(_))
        ));
    }
}
