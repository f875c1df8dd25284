//! sock_diag (NETLINK_SOCK_DIAG, as `ss -ltn` uses): the accept-queue depth and
//! limit of each TCP listener. For a LISTEN socket the kernel reports
//! `idiag_rqueue` = sk_ack_backlog (connections waiting for accept) and
//! `idiag_wqueue` = sk_max_ack_backlog (the limit).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::core::progress::{Conn, Sample};

const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const TCP_LISTEN: u32 = 10;
const NLMSG_HDR: usize = 16;
const DIAG_MSG: usize = 72;
/// The rtattr type of `struct tcp_info` in a reply (and its bit in `idiag_ext`).
const INET_DIAG_INFO: u16 = 2;
/// Offsets of `tcpi_bytes_acked` and `tcpi_bytes_received` in `struct tcp_info`
/// (Linux 4.1+; an older kernel's shorter struct leaves them unknown).
const TCPI_BYTES_ACKED: usize = 120;
const TCPI_BYTES_RECEIVED: usize = 128;
/// `tcpi_last_data_sent` and `tcpi_last_data_recv`: ms since data last went / came.
const TCPI_LAST_DATA_SENT: usize = 44;
const TCPI_LAST_DATA_RECV: usize = 52;

/// One listener's accept queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Listener {
    pub port: u16,
    pub depth: u32,
    pub limit: u32,
}

/// Every TCP listener (IPv4 and IPv6) with its accept queue.
pub fn listeners() -> io::Result<Vec<Listener>> {
    let mut out = Vec::new();
    for fam in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        out.extend(
            dump(fam, 1 << TCP_LISTEN, 0, false)?
                .into_iter()
                .map(|s| Listener {
                    port: s.port,
                    depth: s.rqueue,
                    limit: s.wqueue,
                }),
        );
    }
    Ok(out)
}

/// The fullest listener on `port`: (depth, limit).
pub fn accept_queue(port: u16) -> io::Result<Option<(u32, u32)>> {
    Ok(port_snapshot(port)?.queue)
}

/// One look at a local port: its accept queue, and the inodes of the connections the
/// server has accepted (a connection still waiting in the accept queue has no inode
/// yet; accept() gives it one). A server that accepts shows new inodes over time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortSnapshot {
    pub queue: Option<(u32, u32)>,
    pub accepted: Vec<u32>,
}

/// Takes a [`PortSnapshot`]; the kernel filters by port, so this stays cheap on a
/// busy host.
pub fn port_snapshot(port: u16) -> io::Result<PortSnapshot> {
    let mut snap = PortSnapshot::default();
    for fam in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        for s in dump(fam, u32::MAX, port, false)? {
            if s.port != port {
                continue;
            }
            if s.state == TCP_LISTEN as u8 {
                if snap.queue.is_none_or(|(d, _)| s.rqueue > d) {
                    snap.queue = Some((s.rqueue, s.wqueue));
                }
            } else if s.inode != 0 {
                snap.accepted.push(s.inode);
            }
        }
    }
    Ok(snap)
}

/// A connection's identity for an exact lookup (its family and `inet_diag_sockid`:
/// ports, addresses, interface and cookie).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnId {
    family: u8,
    id: [u8; SOCKID],
}

/// One complete look at a local port for the progress rule: its accept queue and,
/// for each connection the server holds, what the server wrote and read
/// (`core::progress`); with the identities of those connections for
/// [`progress_sample_known`]. The kernel walks its whole connection hash table for
/// this (about a millisecond per address family on a large table), so it is kept
/// rare: only the families with a listener on the port are walked.
pub fn progress_sample(port: u16, at: std::time::Instant) -> io::Result<(Sample, Vec<ConnId>)> {
    let mut out = Sample {
        at,
        queue: None,
        conns: Vec::new(),
        complete: true,
        held_by_stopped: Vec::new(),
    };
    let mut ids = Vec::new();
    let mut families = Vec::new();
    for fam in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        let listeners = dump(fam, 1 << TCP_LISTEN, port, false)?;
        if listeners.iter().any(|s| s.port == port) {
            families.push(fam);
        }
    }
    if families.is_empty() {
        families = vec![libc::AF_INET as u8, libc::AF_INET6 as u8];
    }
    for fam in families {
        for s in dump(fam, u32::MAX, port, true)? {
            if s.port != port {
                continue;
            }
            if let Some(id) = add(&mut out, &s) {
                ids.push(ConnId { family: fam, id });
            }
        }
    }
    Ok((out, ids))
}

/// A cheap look at a port: its accept queue (the listeners only), and the
/// connections of an earlier [`progress_sample`] looked up one by one. Connections
/// accepted since are not seen: the sample is not `complete`.
pub fn progress_sample_known(
    port: u16,
    at: std::time::Instant,
    known: &[ConnId],
) -> io::Result<Sample> {
    let mut out = Sample {
        at,
        queue: None,
        conns: Vec::new(),
        complete: false,
        held_by_stopped: Vec::new(),
    };
    for fam in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        for s in dump(fam, 1 << TCP_LISTEN, port, false)? {
            if s.port == port {
                add(&mut out, &s);
            }
        }
    }
    for c in known {
        match lookup(c) {
            Ok(Some(s)) => {
                add(&mut out, &s);
            }
            // Gone (closed): not progress, and not waiting work either.
            Ok(None) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Adds one socket of the port to a sample; the identity of a held connection.
fn add(out: &mut Sample, s: &Sock) -> Option<[u8; SOCKID]> {
    if s.state == TCP_LISTEN as u8 {
        if out.queue.is_none_or(|(d, _)| s.rqueue > d) {
            out.queue = Some((s.rqueue, s.wqueue));
        }
        return None;
    }
    if s.inode == 0 {
        return None;
    }
    // Without tcp_info (an old kernel) only accepts count as progress.
    let i = s.info.unwrap_or_default();
    let written = i.acked.saturating_add(u64::from(s.wqueue));
    let read = i.received.saturating_sub(u64::from(s.rqueue));
    out.conns.push(Conn {
        inode: s.inode,
        written,
        read,
        unread: s.rqueue,
        acked: i.acked,
        // The times are in jiffies (a few ms): a tie counts as answered. Without
        // tcp_info (an old kernel) it counts as owing.
        owes_answer: s.info.is_none()
            || (written == 0 && read > 0)
            || i.last_recv_ms < i.last_sent_ms,
    });
    Some(s.id)
}

/// One connection by its identity, with tcp_info (the kernel's hash lookup; no
/// walk). None when it is gone.
fn lookup(c: &ConnId) -> io::Result<Option<Sock>> {
    match query(c.family, u32::MAX, 0, true, Some(&c.id)) {
        Ok(mut v) => Ok(v.pop()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The local ports of every TCP connection (not listener) by socket inode.
pub fn connection_ports() -> io::Result<std::collections::HashMap<u32, u16>> {
    let mut out = std::collections::HashMap::new();
    for fam in [libc::AF_INET as u8, libc::AF_INET6 as u8] {
        for s in dump(fam, !(1 << TCP_LISTEN), 0, false)? {
            if s.inode != 0 {
                out.insert(s.inode, s.port);
            }
        }
    }
    Ok(out)
}

/// Size of `struct inet_diag_sockid`.
const SOCKID: usize = 48;

struct Sock {
    state: u8,
    port: u16,
    /// The socket's `inet_diag_sockid`, for an exact lookup.
    id: [u8; SOCKID],
    rqueue: u32,
    wqueue: u32,
    inode: u32,
    /// tcp_info's figures, when asked for and known.
    info: Option<TcpInfo>,
}

/// What the progress rule reads of `struct tcp_info`.
#[derive(Clone, Copy, Debug, Default)]
struct TcpInfo {
    acked: u64,
    received: u64,
    last_sent_ms: u32,
    last_recv_ms: u32,
}

/// tcp_info's figures from the attributes after a diag message.
fn tcp_info(mut attrs: &[u8]) -> Option<TcpInfo> {
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            return None;
        }
        if kind == INET_DIAG_INFO {
            let info = &attrs[4..len];
            let u64_at = |i: usize| -> Option<u64> {
                Some(u64::from_ne_bytes(info.get(i..i + 8)?.try_into().ok()?))
            };
            let u32_at = |i: usize| -> Option<u32> {
                Some(u32::from_ne_bytes(info.get(i..i + 4)?.try_into().ok()?))
            };
            return Some(TcpInfo {
                acked: u64_at(TCPI_BYTES_ACKED)?,
                received: u64_at(TCPI_BYTES_RECEIVED)?,
                last_sent_ms: u32_at(TCPI_LAST_DATA_SENT)?,
                last_recv_ms: u32_at(TCPI_LAST_DATA_RECV)?,
            });
        }
        attrs = attrs.get((len + 3) & !3..).unwrap_or(&[]);
    }
    None
}

fn dump(family: u8, states: u32, sport: u16, info: bool) -> io::Result<Vec<Sock>> {
    query(family, states, sport, info, None)
}

/// A sock_diag request: a dump of `states` (filtered by local port `sport` when
/// not 0), or, with `exact`, the one socket with that `inet_diag_sockid`.
fn query(
    family: u8,
    states: u32,
    sport: u16,
    info: bool,
    exact: Option<&[u8; SOCKID]>,
) -> io::Result<Vec<Sock>> {
    let sock = netlink_socket()?;
    let req = request(family, states, sport, info, exact);
    // SAFETY: an all-zero sockaddr_nl is valid (the kernel as destination).
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as u16;
    // SAFETY: valid buffer, valid sockaddr of the right size.
    let sent = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as u32,
        )
    };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    read_replies(&sock, info, exact.is_some())
}

fn netlink_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) with constant arguments; the fd is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The request: a netlink header and an `inet_diag_req_v2`.
fn request(
    family: u8,
    states: u32,
    sport: u16,
    info: bool,
    exact: Option<&[u8; SOCKID]>,
) -> [u8; NLMSG_HDR + 56] {
    let mut req = [0u8; NLMSG_HDR + 56];
    let len = req.len() as u32;
    req[0..4].copy_from_slice(&len.to_ne_bytes());
    req[4..6].copy_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    let flags = if exact.is_some() {
        libc::NLM_F_REQUEST as u16
    } else {
        (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16
    };
    req[6..8].copy_from_slice(&flags.to_ne_bytes());
    req[8..12].copy_from_slice(&1u32.to_ne_bytes());
    req[NLMSG_HDR] = family;
    req[NLMSG_HDR + 1] = libc::IPPROTO_TCP as u8;
    if info {
        req[NLMSG_HDR + 2] = 1 << (INET_DIAG_INFO - 1);
    }
    req[NLMSG_HDR + 4..NLMSG_HDR + 8].copy_from_slice(&states.to_ne_bytes());
    // inet_diag_sockid.idiag_sport: the kernel skips sockets of other ports.
    req[NLMSG_HDR + 8..NLMSG_HDR + 10].copy_from_slice(&sport.to_be_bytes());
    if let Some(id) = exact {
        req[NLMSG_HDR + 8..NLMSG_HDR + 8 + SOCKID].copy_from_slice(id);
    }
    req
}

/// Reads the answers up to DONE (or, for an exact lookup, the one socket).
fn read_replies(sock: &OwnedFd, info: bool, exact: bool) -> io::Result<Vec<Sock>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: reading into our own buffer.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        let mut off = 0;
        while off + NLMSG_HDR <= n {
            let h = &buf[off..];
            let mlen = u32::from_ne_bytes([h[0], h[1], h[2], h[3]]) as usize;
            let mtype = u16::from_ne_bytes([h[4], h[5]]);
            if mlen < NLMSG_HDR || off + mlen > n {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "short netlink message",
                ));
            }
            match mtype {
                NLMSG_DONE => return Ok(out),
                NLMSG_ERROR => {
                    let errno = i32::from_ne_bytes([h[16], h[17], h[18], h[19]]);
                    if errno == 0 {
                        return Ok(out);
                    }
                    return Err(io::Error::from_raw_os_error(-errno));
                }
                SOCK_DIAG_BY_FAMILY if mlen >= NLMSG_HDR + DIAG_MSG => {
                    out.push(diag_msg(&h[..mlen], info));
                    // An exact lookup answers with the one socket, and no DONE.
                    if exact {
                        return Ok(out);
                    }
                }
                _ => {}
            }
            off += (mlen + 3) & !3;
        }
    }
}

/// One `inet_diag_msg` (after its netlink header `h[..16]`) and its attributes.
fn diag_msg(h: &[u8], info: bool) -> Sock {
    let m = &h[NLMSG_HDR..];
    let u32_at = |i: usize| u32::from_ne_bytes([m[i], m[i + 1], m[i + 2], m[i + 3]]);
    let mut id = [0u8; SOCKID];
    id.copy_from_slice(&m[4..4 + SOCKID]);
    Sock {
        state: m[1],
        port: u16::from_be_bytes([m[4], m[5]]),
        id,
        rqueue: u32_at(56),
        wqueue: u32_at(60),
        inode: u32_at(68),
        info: if info {
            tcp_info(&h[NLMSG_HDR + DIAG_MSG..])
        } else {
            None
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn depth_and_limit_of_a_listener_that_never_accepts() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let (depth, limit) = accept_queue(port)
            .expect("sock_diag")
            .expect("the listener is seen");
        assert_eq!(depth, 0);
        assert!(limit >= 1, "the default backlog: {limit}");
        let _c = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let deadline = Instant::now() + Duration::from_secs(5);
        while accept_queue(port).ok().flatten().map(|q| q.0) != Some(1) {
            assert!(
                Instant::now() < deadline,
                "the queued connection shows as depth 1"
            );
            std::thread::yield_now();
        }
        assert_eq!(
            accept_queue(1).expect("sock_diag"),
            None,
            "nothing listens on port 1"
        );
    }

    /// What the server wrote and read is counted per connection it holds, the
    /// client's unread bytes are not the server's progress, and an answered
    /// connection no longer owes an answer.
    #[test]
    fn what_the_server_wrote_and_read() {
        use std::io::{Read, Write};
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (mut server, _) = l.accept().expect("accept");
        client.write_all(b"request-bytes").expect("write");
        let deadline = Instant::now() + Duration::from_secs(5);
        let one = |want: &dyn Fn(&Conn) -> bool| loop {
            let (s, ids) = progress_sample(port, Instant::now()).expect("sock_diag");
            if let [c] = s.conns.as_slice() {
                // The exact lookup of the same connection sees the same.
                let k = progress_sample_known(port, s.at, &ids).expect("lookup");
                assert!(!k.complete && k.queue == s.queue, "{k:?}");
                if want(c) && k.conns.first().is_some_and(want) {
                    return *c;
                }
            }
            assert!(Instant::now() < deadline, "{s:?}");
            std::thread::sleep(Duration::from_millis(10));
        };
        let c = one(&|c| c.unread == 13);
        assert_eq!((c.read, c.written), (0, 0), "{c:?}");
        let mut buf = [0u8; 13];
        server.read_exact(&mut buf).expect("read");
        let c = one(&|c| c.read == 13);
        assert!(c.owes_answer, "{c:?}");
        // The times are in jiffies: let one pass.
        std::thread::sleep(Duration::from_millis(30));
        server.write_all(b"answer").expect("write");
        let c = one(&|c| c.written == 6);
        assert_eq!(c.unread, 0);
        assert!(!c.owes_answer, "answered: {c:?}");
    }
}

#[cfg(test)]
mod cost {
    /// What one sample costs (the kernel walks its connection hash table per family).
    #[test]
    #[ignore = "a measurement, not a check: run with --ignored --nocapture"]
    fn sample_cost() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let n = 500;
        let cpu = || {
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
            ru.ru_utime.tv_sec as f64
                + ru.ru_utime.tv_usec as f64 / 1e6
                + ru.ru_stime.tv_sec as f64
                + ru.ru_stime.tv_usec as f64 / 1e6
        };
        let conns: Vec<_> = (0..4)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
            .collect();
        let held: Vec<_> = (0..4).map(|_| l.accept().expect("accept")).collect();
        let (_, ids) = super::progress_sample(port, std::time::Instant::now()).expect("sample");
        assert_eq!(ids.len(), 4);
        let c0 = cpu();
        for _ in 0..n {
            let _ = super::progress_sample(port, std::time::Instant::now());
        }
        let c1 = cpu();
        for _ in 0..n {
            let _ = super::progress_sample_known(port, std::time::Instant::now(), &ids);
        }
        let c2 = cpu();
        for _ in 0..n {
            let _ = super::dump(libc::AF_INET as u8, 1 << super::TCP_LISTEN, port, false);
        }
        let c3 = cpu();
        drop((conns, held));
        println!(
            "complete sample {:.0} us; known 4 connections {:.0} us; listeners only {:.0} us",
            (c1 - c0) / n as f64 * 1e6,
            (c2 - c1) / n as f64 * 1e6,
            (c3 - c2) / n as f64 * 1e6
        );
    }
}
