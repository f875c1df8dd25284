//! HTTPS probe (`_bi_webservs`): the HTTP probe over TLS 1.2 or 1.3 (the client
//! configuration comes from [`crate::tls`]).

use std::sync::Arc;

use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tokio_rustls::TlsConnector;

use super::{http, tcp, Answer, ProbeError, Target, TlsOptions};

/// The name the certificate is checked against. Explicit `sni` wins; otherwise the host
/// field. A DNS name is sent as SNI; an IP address is not (rustls never sends IPs as
/// SNI) and is checked against the certificate's IP addresses.
pub(crate) fn server_name(
    target: &Target,
    opts: &TlsOptions,
) -> Result<ServerName<'static>, ProbeError> {
    if let Some(name) = opts.sni.as_deref() {
        let name = name.trim();
        let name = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        return ServerName::try_from(name.to_string())
            .map_err(|e| ProbeError::Config(format!("TLS server name {name:?}: {e}")));
    }
    if let Some(ip) = target.host_ip() {
        return Ok(ServerName::IpAddress(ip.into()));
    }
    let host = target.bare_host().to_string();
    ServerName::try_from(host.clone())
        .map_err(|e| ProbeError::Config(format!("TLS server name {host:?}: {e}")))
}

/// The HTTPS check: connect, handshake, HEAD, then a best-effort close_notify (bounded by
/// the probe's deadline; its failure does not change the answer).
pub(crate) async fn check(
    target: &Target,
    addrs: &[std::net::SocketAddr],
    config: Arc<ClientConfig>,
    deadline: Instant,
) -> Result<Answer, ProbeError> {
    let opts = target.tls.clone().unwrap_or_default();
    let name = server_name(target, &opts)?;
    let tcp = tcp::connect(addrs).await?;
    let mut tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(tls_error)?;
    let answer = http::exchange(&mut tls, target, 443).await?;
    let _ = tokio::time::timeout_at(deadline, tls.shutdown()).await;
    Ok(answer)
}

/// tokio-rustls reports handshake failures as `io::Error`s wrapping the rustls error.
fn tls_error(e: std::io::Error) -> ProbeError {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(inner) => ProbeError::Tls(inner.to_string()),
        None => ProbeError::Tls(format!("handshake failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use rcgen::CertifiedKey;
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use rustls::{ProtocolVersion, ServerConfig, SupportedProtocolVersion};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;

    use super::super::testutil::{header, read_head, request_line, serve};
    use super::super::{probe, Kind, ProbeError, Prober, Target, TlsOptions, TlsVerify};

    /// What the test server saw on its one connection.
    #[derive(Debug)]
    struct Seen {
        sni: Option<String>,
        version: Option<ProtocolVersion>,
        request: Vec<u8>,
    }

    fn cert() -> CertifiedKey {
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap()
    }

    fn server_config(
        ck: &CertifiedKey,
        versions: &[&'static SupportedProtocolVersion],
    ) -> Arc<ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(ck.key_pair.serialize_der()));
        let cfg = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap();
        Arc::new(cfg)
    }

    /// A TLS server for one connection on 127.0.0.1 answering `HTTP/1.1 200 OK`.
    async fn tls_server(
        cfg: Arc<ServerConfig>,
    ) -> (SocketAddr, tokio::task::JoinHandle<Result<Seen, String>>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let h = tokio::spawn(async move {
            let (s, _) = l.accept().await.map_err(|e| e.to_string())?;
            let mut tls = TlsAcceptor::from(cfg)
                .accept(s)
                .await
                .map_err(|e| e.to_string())?;
            let (sni, version) = {
                let conn = tls.get_ref().1;
                (
                    conn.server_name().map(str::to_string),
                    conn.protocol_version(),
                )
            };
            let request = read_head(&mut tls).await;
            serve(&mut tls, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
            Ok(Seen {
                sni,
                version,
                request,
            })
        });
        (addr, h)
    }

    fn target(host: &str, port: u16, verify: TlsVerify, sni: Option<&str>) -> Target {
        let mut t = Target::new(host, port);
        t.timeout = Duration::from_secs(5);
        t.tls = Some(TlsOptions {
            verify,
            sni: sni.map(str::to_string),
        });
        t
    }

    fn both() -> Vec<&'static SupportedProtocolVersion> {
        vec![&rustls::version::TLS13, &rustls::version::TLS12]
    }

    #[tokio::test]
    async fn verify_off_accepts_self_signed() {
        let ck = cert();
        let (addr, server) = tls_server(server_config(&ck, &both())).await;
        let t = target("127.0.0.1", addr.port(), TlsVerify::Off, None);
        let o = probe(Kind::Https, &t).await;
        assert_eq!(o.result.unwrap().status, Some(200));
        let seen = server.await.unwrap().unwrap();
        assert_eq!(request_line(&seen.request), "HEAD / HTTP/1.1");
        assert_eq!(
            header(&seen.request, "host").as_deref(),
            Some(format!("127.0.0.1:{}", addr.port()).as_str())
        );
        assert_eq!(seen.version, Some(ProtocolVersion::TLSv1_3));
    }

    #[tokio::test]
    async fn ca_file_accepts_its_certificate() {
        let ck = cert();
        let mut pem = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut pem, ck.cert.pem().as_bytes()).unwrap();
        let verify = TlsVerify::CaFile(pem.path().to_path_buf());

        // By DNS name (sent as SNI), through a Prober built once and used twice.
        let cfg = server_config(&ck, &both());
        for _ in 0..2 {
            let (addr, server) = tls_server(cfg.clone()).await;
            let t = target("127.0.0.1", addr.port(), verify.clone(), Some("localhost"));
            let p = Prober::new(Kind::Https, t).unwrap();
            let o = p.run().await;
            assert_eq!(o.result.unwrap().status, Some(200));
            assert_eq!(
                server.await.unwrap().unwrap().sni.as_deref(),
                Some("localhost")
            );
        }
        // By IP address: no SNI, checked against the certificate's IP address.
        let (addr, server) = tls_server(cfg.clone()).await;
        let t = target("127.0.0.1", addr.port(), verify.clone(), None);
        let o = probe(Kind::Https, &t).await;
        assert_eq!(o.result.unwrap().status, Some(200));
        assert_eq!(server.await.unwrap().unwrap().sni, None);
    }

    #[tokio::test]
    async fn ca_file_rejects_another_certificate() {
        let (other, ck) = (cert(), cert());
        let mut pem = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut pem, other.cert.pem().as_bytes()).unwrap();
        let (addr, _server) = tls_server(server_config(&ck, &both())).await;
        let t = target(
            "127.0.0.1",
            addr.port(),
            TlsVerify::CaFile(pem.path().to_path_buf()),
            None,
        );
        let o = probe(Kind::Https, &t).await;
        assert!(matches!(o.result, Err(ProbeError::Tls(_))), "{o:?}");
    }

    #[tokio::test]
    async fn system_roots_reject_self_signed() {
        let ck = cert();
        let (addr, _server) = tls_server(server_config(&ck, &both())).await;
        let t = target("localhost", addr.port(), TlsVerify::SystemRoots, None);
        let o = probe(Kind::Https, &t).await;
        match o.result {
            Err(ProbeError::Tls(m)) => assert!(m.contains("UnknownIssuer"), "{m}"),
            other => panic!("expected Tls error, got {other:?}"),
        }
        // The default options are SystemRoots too.
        let (addr, _server) = tls_server(server_config(&ck, &both())).await;
        let mut t = Target::new("localhost", addr.port());
        t.timeout = Duration::from_secs(5);
        let o = probe(Kind::Https, &t).await;
        assert!(matches!(o.result, Err(ProbeError::Tls(_))), "{o:?}");
    }

    #[tokio::test]
    async fn tls12_only_and_tls13_only_servers() {
        let ck = cert();
        let mut pem = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut pem, ck.cert.pem().as_bytes()).unwrap();
        for (version, expect) in [
            (&rustls::version::TLS12, ProtocolVersion::TLSv1_2),
            (&rustls::version::TLS13, ProtocolVersion::TLSv1_3),
        ] {
            for verify in [TlsVerify::Off, TlsVerify::CaFile(pem.path().to_path_buf())] {
                let (addr, server) = tls_server(server_config(&ck, &[version])).await;
                let t = target("localhost", addr.port(), verify.clone(), None);
                let o = probe(Kind::Https, &t).await;
                assert_eq!(o.result.unwrap().status, Some(200), "{expect:?} {verify:?}");
                assert_eq!(server.await.unwrap().unwrap().version, Some(expect));
            }
        }
    }

    #[tokio::test]
    async fn sni_is_the_host_field_or_the_override() {
        let ck = cert();
        let cfg = server_config(&ck, &both());
        // Host "localhost" (resolves to ::1 and/or 127.0.0.1; the server is on IPv4).
        let (addr, server) = tls_server(cfg.clone()).await;
        let t = target("localhost", addr.port(), TlsVerify::Off, None);
        assert!(probe(Kind::Https, &t).await.is_alive());
        let seen = server.await.unwrap().unwrap();
        assert_eq!(seen.sni.as_deref(), Some("localhost"));
        assert_eq!(
            header(&seen.request, "host").as_deref(),
            Some(format!("localhost:{}", addr.port()).as_str())
        );
        // An IP address host sends no SNI.
        let (addr, server) = tls_server(cfg.clone()).await;
        let t = target("127.0.0.1", addr.port(), TlsVerify::Off, None);
        assert!(probe(Kind::Https, &t).await.is_alive());
        assert_eq!(server.await.unwrap().unwrap().sni, None);
        // An explicit name wins.
        let (addr, server) = tls_server(cfg.clone()).await;
        let t = target(
            "127.0.0.1",
            addr.port(),
            TlsVerify::Off,
            Some("www.example.test"),
        );
        assert!(probe(Kind::Https, &t).await.is_alive());
        assert_eq!(
            server.await.unwrap().unwrap().sni.as_deref(),
            Some("www.example.test")
        );
    }

    #[tokio::test]
    async fn no_handshake_times_out_on_time() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _server = tokio::spawn(async move {
            let (s, _) = l.accept().await.unwrap();
            // Hold the connection, never answer the ClientHello.
            std::future::pending::<()>().await;
            drop(s);
        });
        let mut t = target("127.0.0.1", addr.port(), TlsVerify::Off, None);
        t.timeout = Duration::from_millis(400);
        let o = probe(Kind::Https, &t).await;
        assert!(matches!(o.result, Err(ProbeError::Timeout(_))), "{o:?}");
        assert!(
            o.elapsed < t.timeout + Duration::from_millis(200),
            "{:?}",
            o.elapsed
        );
    }

    #[tokio::test]
    async fn plain_http_server_is_a_tls_error() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        // Answers in plain HTTP as soon as anything arrives (the ClientHello).
        let _server = tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut first = [0u8; 1];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut first).await;
            serve(&mut s, b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        });
        let t = target("127.0.0.1", addr.port(), TlsVerify::Off, None);
        let o = probe(Kind::Https, &t).await;
        assert!(matches!(o.result, Err(ProbeError::Tls(_))), "{o:?}");
    }

    #[test]
    fn config_errors() {
        let missing = TlsOptions {
            verify: TlsVerify::CaFile("/nonexistent/ca.pem".into()),
            sni: None,
        };
        let mut t = Target::new("localhost", 443);
        t.tls = Some(missing);
        assert!(matches!(
            Prober::new(Kind::Https, t),
            Err(ProbeError::Config(_))
        ));
        let mut t = Target::new("localhost", 443);
        t.tls = Some(TlsOptions {
            verify: TlsVerify::Off,
            sni: Some("bad name!".into()),
        });
        assert!(matches!(
            Prober::new(Kind::Https, t),
            Err(ProbeError::Config(_))
        ));
    }
}
