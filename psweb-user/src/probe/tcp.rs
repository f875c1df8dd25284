//! TCP probe (`_bi_socket`): connect, close. Also the connect step of HTTP and HTTPS.

use std::io;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use super::{Answer, ProbeError, Target};

/// The addresses to try, in the resolver's order (RFC 6724 via getaddrinfo, so `::1`
/// usually comes before `127.0.0.1` for `localhost`). IP literals skip the resolver.
pub(crate) async fn resolve(target: &Target) -> Result<Vec<SocketAddr>, ProbeError> {
    if let Some(ip) = target.host_ip() {
        return Ok(vec![SocketAddr::new(ip, target.port)]);
    }
    let host = target.bare_host();
    // tokio runs getaddrinfo on its blocking pool: a slow resolver holds no runtime
    // thread, and the probe's timeout still bounds the wait.
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, target.port))
        .await
        .map_err(|e| ProbeError::Resolve(format!("{host}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(ProbeError::Resolve(format!("{host}: no addresses")));
    }
    Ok(addrs)
}

/// How long a [`Prober`](super::Prober) keeps the addresses of its host name.
pub(crate) const RESOLVE_TTL: Duration = Duration::from_secs(30);

/// The addresses of one target's host name, resolved at most every [`RESOLVE_TTL`]:
/// a stall check probes the same name every few seconds, and asking the resolver
/// (the blocking pool, /etc/hosts, maybe DNS) each time costs more than the probe.
/// A failed resolution is not kept: the next probe asks again.
#[derive(Debug, Default)]
pub(crate) struct AddrCache(Mutex<Option<(Instant, Vec<SocketAddr>)>>);

impl AddrCache {
    pub(crate) async fn resolve(&self, target: &Target) -> Result<Vec<SocketAddr>, ProbeError> {
        if target.host_ip().is_some() {
            return resolve(target).await;
        }
        let fresh = |at: &Instant| at.elapsed() < RESOLVE_TTL;
        if let Ok(c) = self.0.lock() {
            if let Some((_, addrs)) = c.as_ref().filter(|(at, _)| fresh(at)) {
                return Ok(addrs.clone());
            }
        }
        let addrs = resolve(target).await?;
        if let Ok(mut c) = self.0.lock() {
            *c = Some((Instant::now(), addrs.clone()));
        }
        Ok(addrs)
    }
}

/// Connects to the first of `addrs` that accepts, trying each in turn (IPv6 and
/// IPv4). The caller's timeout bounds the whole sequence. On failure the error keeps
/// the last error's kind and lists every address with its error.
pub(crate) async fn connect(addrs: &[SocketAddr]) -> Result<TcpStream, ProbeError> {
    let mut failures = Vec::with_capacity(addrs.len());
    let mut last_kind = io::ErrorKind::Other;
    for &addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(s) => {
                super::mark_connected();
                return Ok(s);
            }
            Err(e) => {
                last_kind = e.kind();
                failures.push(format!("{addr}: {e}"));
            }
        }
    }
    Err(ProbeError::Connect(io::Error::new(
        last_kind,
        failures.join("; "),
    )))
}

/// The TCP check: the connection was accepted (by the kernel, into the listen queue);
/// dropping the stream closes it with a FIN.
pub(crate) async fn check(addrs: &[SocketAddr]) -> Result<Answer, ProbeError> {
    let stream = connect(addrs).await?;
    drop(stream);
    Ok(Answer {
        status: None,
        http_version: None,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::net::TcpListener;

    use super::super::{probe, Kind, ProbeError, Target};

    #[tokio::test]
    async fn listener_is_alive() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let t = Target::new("127.0.0.1", l.local_addr().unwrap().port());
        let o = probe(Kind::Tcp, &t).await;
        assert!(o.is_alive(), "{o:?}");
        let a = o.result.unwrap();
        assert_eq!(a.status, None);
        assert_eq!(a.http_version, None);
        // The connection really reached the listener.
        let (_s, peer) = l.accept().await.unwrap();
        assert!(peer.ip().is_loopback());
    }

    #[tokio::test]
    async fn closed_port_is_a_quick_connect_error() {
        let port = {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap().port()
        };
        let mut t = Target::new("127.0.0.1", port);
        t.timeout = Duration::from_secs(5);
        let o = probe(Kind::Tcp, &t).await;
        match &o.result {
            Err(ProbeError::Connect(e)) => {
                assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
                assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
            }
            other => panic!("expected Connect error, got {other:?}"),
        }
        assert!(o.elapsed < Duration::from_secs(1), "{:?}", o.elapsed);
    }

    #[tokio::test]
    async fn localhost_name_tries_every_address() {
        // Bound on IPv4 only: if `localhost` resolves to ::1 first, that connect is
        // refused and the probe must go on to 127.0.0.1.
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let t = Target::new("localhost", l.local_addr().unwrap().port());
        let o = probe(Kind::Tcp, &t).await;
        assert!(o.is_alive(), "{o:?}");
    }

    #[tokio::test]
    async fn empty_host_means_localhost() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let t = Target::new("", l.local_addr().unwrap().port());
        assert!(probe(Kind::Tcp, &t).await.is_alive());
    }

    #[tokio::test]
    async fn ipv6_loopback_with_and_without_brackets() {
        let l = match TcpListener::bind("[::1]:0").await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("skipped: cannot bind [::1]: {e}");
                return;
            }
        };
        let port = l.local_addr().unwrap().port();
        for host in ["::1", "[::1]"] {
            let o = probe(Kind::Tcp, &Target::new(host, port)).await;
            assert!(o.is_alive(), "{host}: {o:?}");
        }
    }

    /// A listener whose accept queue is full drops the probe's SYN: the failure
    /// says the connect timed out, not that the server did not answer.
    #[tokio::test]
    async fn a_full_accept_queue_is_a_connect_timeout() {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let l = sock.listen(0).unwrap();
        let addr = l.local_addr().unwrap();
        // Backlog 0 holds one connection; wait until the kernel has queued it.
        let _first = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut t = Target::new("127.0.0.1", addr.port());
        t.timeout = Duration::from_millis(500);
        let o = probe(Kind::Tcp, &t).await;
        assert!(
            matches!(o.result, Err(ProbeError::ConnectTimeout(d)) if d == t.timeout),
            "{o:?}"
        );
        let why = o.result.unwrap_err().to_string();
        assert!(why.starts_with("connect timed out after 500ms"), "{why}");
        drop(l);
    }

    #[tokio::test]
    async fn unresolvable_name_fails_without_hanging() {
        // `.invalid` never resolves (RFC 6761). Without a reachable resolver the lookup
        // may instead run into the timeout; either way the probe fails in time.
        let mut t = Target::new("no-such-host.invalid", 80);
        t.timeout = Duration::from_secs(3);
        let o = probe(Kind::Tcp, &t).await;
        assert!(
            matches!(
                o.result,
                Err(ProbeError::Resolve(_) | ProbeError::ConnectTimeout(_))
            ),
            "{o:?}"
        );
        // Sanity bound: at the timeout, plus room for a loaded machine (not a figure).
        assert!(o.elapsed < t.timeout * 2, "{:?}", o.elapsed);
    }

    /// A Prober keeps its host's addresses for RESOLVE_TTL, then asks again: a name
    /// the resolver cannot answer probes fine while its addresses are kept, and
    /// fails once they are older than the TTL.
    #[tokio::test]
    async fn a_probers_addresses_are_kept_for_the_ttl_only() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut t = Target::new("no-such-host.invalid", addr.port());
        t.timeout = Duration::from_secs(3);
        let p = super::super::Prober::new(Kind::Tcp, t).unwrap();
        let now = std::time::Instant::now();
        *p.addrs.0.lock().unwrap() = Some((now, vec![addr]));
        let o = p.run().await;
        assert!(o.is_alive(), "kept addresses are used: {o:?}");
        let Some(old) = now.checked_sub(super::RESOLVE_TTL) else {
            println!("SKIPPED the expiry half: the monotonic clock is younger than the TTL");
            return;
        };
        *p.addrs.0.lock().unwrap() = Some((old, vec![addr]));
        let o = p.run().await;
        assert!(
            matches!(
                o.result,
                Err(ProbeError::Resolve(_) | ProbeError::ConnectTimeout(_))
            ),
            "expired addresses are resolved again: {o:?}"
        );
    }
}
