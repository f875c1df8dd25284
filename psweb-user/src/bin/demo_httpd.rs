//! psweb-demo-httpd: a tiny pre-forking HTTP server for `cargo xtask run` and the
//! end-to-end tests. It behaves like a small Apache: binds first (so a busy port is
//! a failed start, known at once), optionally daemonizes (setsid, pidfile), and
//! serves from worker processes that share the listening socket.
//!
//! usage: psweb-demo-httpd --port P [--bind ADDR] [--pidfile F] [--workers N] [--daemon]
//!        [--backlog N]     (listen(2) backlog; default 128)
//!        [--delay-ms N]    (answer each request N ms late: a slow but working server)

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::ExitCode;

struct Args {
    port: u16,
    bind: String,
    pidfile: Option<String>,
    workers: u32,
    daemon: bool,
    backlog: i32,
    delay_ms: u64,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        port: 0,
        bind: "127.0.0.1".into(),
        pidfile: None,
        workers: 0,
        daemon: false,
        backlog: 128,
        delay_ms: 0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(k) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{k} needs a value"));
        match k.as_str() {
            "--port" => a.port = val()?.parse().map_err(|e| format!("--port: {e}"))?,
            "--bind" => a.bind = val()?,
            "--pidfile" => a.pidfile = Some(val()?),
            "--workers" => a.workers = val()?.parse().map_err(|e| format!("--workers: {e}"))?,
            "--daemon" => a.daemon = true,
            "--delay-ms" => a.delay_ms = val()?.parse().map_err(|e| format!("--delay-ms: {e}"))?,
            "--backlog" => a.backlog = val()?.parse().map_err(|e| format!("--backlog: {e}"))?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.port == 0 {
        return Err("--port is required".into());
    }
    Ok(a)
}

fn main() -> ExitCode {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("psweb-demo-httpd: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match listen(&args.bind, args.port, args.backlog) {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "psweb-demo-httpd: cannot bind {}:{}: {e}",
                args.bind, args.port
            );
            return ExitCode::from(1);
        }
    };
    if args.daemon {
        // SAFETY: single-threaded here; the child only calls async-signal-safe
        // functions until it carries on as the daemon.
        match unsafe { libc::fork() } {
            -1 => {
                eprintln!(
                    "psweb-demo-httpd: fork: {}",
                    std::io::Error::last_os_error()
                );
                return ExitCode::from(1);
            }
            0 => {
                // SAFETY: setsid in the child of a fork.
                unsafe { libc::setsid() };
            }
            _ => return ExitCode::SUCCESS,
        }
    }
    if let Some(pf) = &args.pidfile {
        let tmp = format!("{pf}.tmp");
        if std::fs::write(&tmp, format!("{}\n", std::process::id()))
            .and_then(|()| std::fs::rename(&tmp, pf))
            .is_err()
        {
            eprintln!("psweb-demo-httpd: cannot write pidfile {pf}");
            return ExitCode::from(1);
        }
    }
    if args.daemon {
        if let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            use std::os::fd::AsRawFd;
            // SAFETY: dup2 onto the standard descriptors.
            unsafe {
                libc::dup2(null.as_raw_fd(), 0);
                libc::dup2(null.as_raw_fd(), 1);
                libc::dup2(null.as_raw_fd(), 2);
            }
        }
    }
    let delay = std::time::Duration::from_millis(args.delay_ms);
    if args.workers == 0 {
        serve(&listener, delay);
    }
    for _ in 0..args.workers {
        // SAFETY: as above; each worker only serves.
        if unsafe { libc::fork() } == 0 {
            serve(&listener, delay);
        }
    }
    // The master waits on its workers, as Apache's does.
    loop {
        let mut status = 0;
        // SAFETY: plain wait.
        if unsafe { libc::wait(&mut status) } < 0 {
            std::thread::park();
        }
    }
}

/// socket + SO_REUSEADDR + bind + listen(backlog): std's TcpListener has no backlog.
fn listen(bind: &str, port: u16, backlog: i32) -> std::io::Result<TcpListener> {
    use std::os::fd::FromRawFd;
    let ip: std::net::Ipv4Addr = bind.parse().map_err(|e| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{bind}: {e}"))
    })?;
    // SAFETY: plain socket calls on a fresh fd, checked one by one.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let listener = TcpListener::from_raw_fd(fd);
        let one: libc::c_int = 1;
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as u32,
        );
        let addr = libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        if libc::bind(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as u32,
        ) != 0
            || libc::listen(fd, backlog) != 0
        {
            return Err(std::io::Error::last_os_error());
        }
        Ok(listener)
    }
}

fn serve(listener: &TcpListener, delay: std::time::Duration) -> ! {
    loop {
        if let Ok((s, _)) = listener.accept() {
            std::thread::sleep(delay);
            let _ = answer(s);
        }
    }
}

fn answer(mut s: TcpStream) -> std::io::Result<()> {
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 16 * 1024 {
        let n = s.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = format!("psweb demo server, pid {}\n", std::process::id());
    let head = buf.starts_with(b"HEAD ");
    let mut out = format!(
        "HTTP/1.0 200 OK\r\nServer: psweb-demo-httpd\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if !head {
        out.push_str(&body);
    }
    s.write_all(out.as_bytes())
}
