//! The cases of kernel evidence under load, shared by the end-to-end tests
//! (tests/e2e_progress.rs) and the bench (benches/stall.rs): real Apache (prefork
//! and event MPM) and nginx, real load generators (wrk with keep-alive, ab without)
//! and pcheck watching with `evidence = kernel`. Needs `mod common` beside it.
#![allow(dead_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use super::common::*;
use std::any::Any;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const WRK: &str = "/usr/bin/wrk";
pub const AB: &str = "/usr/bin/ab";
pub const NGINX: &str = "/usr/sbin/nginx";
pub const NGINX_PERL: &str = "/usr/lib/nginx/modules/ngx_http_perl_module.so";
const MODS: &str = "/usr/lib/apache2/modules";
pub const MOD_PERL: &str = "/usr/lib/apache2/modules/mod_perl.so";

/// A busy server: work waits for it, and it is never to be judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Busy {
    /// The report: Apache prefork (4 children, ListenBacklog 16), a 0.2 s CGI, wrk with
    /// 200 keep-alive connections.
    PreforkKeepAlive,
    /// Apache event MPM (4 threads), the 0.2 s CGI, ab with 64 clients, no keep-alive.
    EventAb,
    /// nginx (1 worker) with a 0.2 s Perl handler, wrk with 200 keep-alive connections.
    NginxSlowHandler,
    /// 4 clients downloading a large file at 8 KB/s hold every prefork child while 40
    /// other clients queue.
    SlowDownloaders,
    /// 12 clients that ask once and stay silent until KeepAliveTimeout (5 s) hold
    /// every prefork child while 24 other clients queue.
    IdleKeepAlive,
    /// Every prefork child waits on an upstream that accepted and never answers
    /// (mod_proxy, timeout 60 s) while 40 clients queue.
    SlowUpstream,
    /// The report's case on an Apache listening on both 127.0.0.1 and [::1], with
    /// wrk's keep-alive load coming over IPv6.
    PreforkKeepAliveV6,
    /// Every prefork child waits on a CGI slower than the window (5 s) while 40
    /// clients queue: a slow handler process looks the same as a hung one.
    SlowCgi,
    /// The same on the event MPM, the CGIs run by mod_cgid's daemon (not children of
    /// the waiting worker threads).
    SlowCgiEvent,
}

impl Busy {
    pub const ALL: [Busy; 9] = [
        Busy::PreforkKeepAlive,
        Busy::EventAb,
        Busy::NginxSlowHandler,
        Busy::SlowDownloaders,
        Busy::IdleKeepAlive,
        Busy::SlowUpstream,
        Busy::PreforkKeepAliveV6,
        Busy::SlowCgi,
        Busy::SlowCgiEvent,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Busy::PreforkKeepAlive => "apache prefork, 0.2 s CGI, wrk -c200 keep-alive",
            Busy::EventAb => "apache event, 0.2 s CGI, ab -c64",
            Busy::NginxSlowHandler => "nginx, 0.2 s perl handler, wrk -c200 keep-alive",
            Busy::SlowDownloaders => "apache prefork, 4 downloaders at 8 KB/s",
            Busy::IdleKeepAlive => "apache prefork, idle keep-alive clients",
            Busy::SlowUpstream => "apache prefork, every child on a silent upstream",
            Busy::PreforkKeepAliveV6 => "apache prefork, 0.2 s CGI, wrk -c200 over [::1]",
            Busy::SlowCgi => "apache prefork, every child on a 5 s CGI",
            Busy::SlowCgiEvent => "apache event, every thread on a 5 s CGI (mod_cgid)",
        }
    }
}

/// A stuck server: judged by kernel evidence.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stuck {
    /// Every Apache prefork process SIGSTOPped under wrk keep-alive load.
    PreforkStopped,
    /// Every Apache event MPM process SIGSTOPped under wrk keep-alive load.
    EventStopped,
    /// A request handler looping (mod_lua) on both prefork children.
    PreforkLoop,
    /// A request handler looping (mod_lua) on both event MPM worker threads.
    EventLoop,
    /// A request handler looping (Perl) on nginx's worker.
    NginxLoop,
    /// nginx's worker blocked on a futex no one wakes (Perl), no socket I/O pending.
    NginxDeadlock,
    /// Both Apache prefork children blocked on a futex no one wakes (a mod_perl
    /// handler), no socket I/O pending.
    PreforkDeadlock,
    /// Both Apache event MPM worker threads blocked on a futex no one wakes (mod_perl).
    EventDeadlock,
    /// Every Apache prefork process SIGSTOPped while it listens on both 127.0.0.1
    /// and [::1], under wrk keep-alive load over IPv6.
    PreforkStoppedV6,
    /// The accept queue never fills: every Apache prefork child SIGSTOPped while it
    /// holds a keep-alive connection, and each client sends its next request there.
    /// Only a failed or slow probe is a sign of the waiting work.
    HeldConnectionsOnly,
}

impl Stuck {
    pub const ALL: [Stuck; 10] = [
        Stuck::PreforkStopped,
        Stuck::EventStopped,
        Stuck::PreforkLoop,
        Stuck::EventLoop,
        Stuck::NginxLoop,
        Stuck::NginxDeadlock,
        Stuck::PreforkDeadlock,
        Stuck::EventDeadlock,
        Stuck::PreforkStoppedV6,
        Stuck::HeldConnectionsOnly,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Stuck::PreforkStopped => "apache prefork, SIGSTOP all, wrk keep-alive",
            Stuck::EventStopped => "apache event, SIGSTOP all, wrk keep-alive",
            Stuck::PreforkLoop => "apache prefork, looping handler (lua)",
            Stuck::EventLoop => "apache event, looping handler (lua)",
            Stuck::NginxLoop => "nginx, looping handler (perl)",
            Stuck::NginxDeadlock => "nginx, worker deadlocked on a futex (perl)",
            Stuck::PreforkDeadlock => "apache prefork, children deadlocked on a futex (mod_perl)",
            Stuck::EventDeadlock => "apache event, threads deadlocked on a futex (mod_perl)",
            Stuck::PreforkStoppedV6 => "apache prefork, SIGSTOP all, wrk over [::1]",
            Stuck::HeldConnectionsOnly => "apache prefork, SIGSTOP, requests on held conns",
        }
    }
}

fn tool_or_skip(test: &str, path: &str, package: &str) -> bool {
    if std::path::Path::new(path).exists() {
        return true;
    }
    skip(
        test,
        &format!("{path} ({package}) is not installed (cargo xtask test installs it)"),
    );
    false
}

#[derive(Clone, Copy, PartialEq)]
enum Mpm {
    Prefork,
    Event,
}

/// A real Apache with `workers` workers, `ListenBacklog backlog`, and CGI scripts
/// under /cgi/ (mod_cgi for prefork, mod_cgid for event). `cgis`: (name, shell body).
fn apache(
    sb: &Sandbox,
    port: u16,
    mpm: Mpm,
    workers: u32,
    backlog: u32,
    cgis: &[(&str, &str)],
    extra: &str,
) -> (PathBuf, PathBuf) {
    let d = sb.path().display().to_string();
    let m = MODS;
    std::fs::create_dir_all(sb.file("htdocs")).expect("htdocs");
    std::fs::write(sb.file("htdocs/index.html"), "psweb test page\n").expect("index");
    std::fs::create_dir_all(sb.file("cgi")).expect("cgi dir");
    for (name, body) in cgis {
        sb.script(&format!("cgi/{name}"), body);
    }
    let mpm_conf = match mpm {
        Mpm::Prefork => format!(
            "LoadModule mpm_prefork_module {m}/mod_mpm_prefork.so\nLoadModule cgi_module {m}/mod_cgi.so\n\
             StartServers {workers}\nMinSpareServers {workers}\nMaxSpareServers {workers}\n\
             ServerLimit {workers}\nMaxRequestWorkers {workers}\n"
        ),
        Mpm::Event => format!(
            "LoadModule mpm_event_module {m}/mod_mpm_event.so\nLoadModule cgid_module {m}/mod_cgid.so\n\
             ScriptSock {d}/cgid.sock\nStartServers 1\nServerLimit 1\nThreadsPerChild {workers}\n\
             MaxRequestWorkers {workers}\nMinSpareThreads 1\nMaxSpareThreads {workers}\nThreadLimit {workers}\n"
        ),
    };
    let conf = format!(
        "ServerRoot \"{d}\"\nServerName localhost\nListen 127.0.0.1:{port}\nPidFile {d}/httpd.pid\n\
         ErrorLog {d}/error.log\nDefaultRuntimeDir {d}\nMutex file:{d} default\n{mpm_conf}\
         LoadModule authz_core_module {m}/mod_authz_core.so\nLoadModule alias_module {m}/mod_alias.so\n\
         LoadModule dir_module {m}/mod_dir.so\nDirectoryIndex index.html\n\
         User nobody\nGroup nogroup\nDocumentRoot {d}/htdocs\n<Directory />\n  Require all granted\n</Directory>\n\
         ScriptAlias /cgi/ {d}/cgi/\nListenBacklog {backlog}\nKeepAlive On\n{extra}"
    );
    std::fs::write(sb.file("httpd.conf"), conf).expect("httpd.conf");
    let script = sb.script(
        "httpd.rc",
        &format!("echo run >> {d}/httpd.runs\nexec {APACHE} -f {d}/httpd.conf -k start"),
    );
    (script, sb.file("httpd.pid"))
}

/// The CGI of the report: answers after 0.2 s.
const SLOW_CGI: (&str, &str) = (
    "slow",
    "sleep 0.2\nprintf 'Content-Type: text/plain\\r\\n\\r\\nslow answer\\n'",
);

/// A file the stuck handlers append a line to just before they loop or block, so
/// that a run can tell when every worker is stuck (written by the server's user).
fn stuck_marks(sb: &Sandbox) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = sb.file("marks");
    std::fs::create_dir_all(&dir).expect("marks dir");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    dir.join("stuck")
}

/// How many workers have reached their stuck handler.
fn stuck_count(marks: &Path) -> usize {
    std::fs::read_to_string(marks).map_or(0, |s| s.lines().count())
}

/// Perl that appends a line to the stuck marks (see [`stuck_marks`]).
fn perl_mark(sb: &Sandbox) -> String {
    format!(
        "if (open(my $f, q(>>), q({}))) {{ print $f qq(x\\n); close($f); }}",
        stuck_marks(sb).display()
    )
}

/// Perl that blocks for good: futex(&word, FUTEX_WAIT, 0, NULL) with word = 0 sleeps
/// until woken, and no one will.
fn perl_futex_wait() -> String {
    format!(
        "my $w = pack(q(i), 0); syscall({}, unpack(q(J), pack(q(p), $w)), 0, 0, 0);",
        libc::SYS_futex
    )
}

/// mod_lua with a handler on /loop that never returns.
fn lua_loop(sb: &Sandbox) -> String {
    std::fs::create_dir_all(sb.file("lua")).expect("lua dir");
    std::fs::write(
        sb.file("lua/loop.lua"),
        format!(
            "function handle(r)\n  local f = io.open(\"{}\", \"a\")\n  if f then f:write(\"x\\n\") f:close() end\n  while true do end\nend\n",
            stuck_marks(sb).display()
        ),
    )
    .expect("lua");
    format!(
        "LoadModule lua_module {MODS}/mod_lua.so\nLuaMapHandler ^/loop$ {}/lua/loop.lua handle\n",
        sb.path().display()
    )
}

/// mod_perl with a handler on /lock that blocks on a futex no one wakes
/// (futex(&word, FUTEX_WAIT, 0, NULL) with word = 0): a deadlocked worker, no
/// socket I/O pending.
fn perl_lock(sb: &Sandbox) -> String {
    std::fs::create_dir_all(sb.file("perl")).expect("perl dir");
    std::fs::write(
        sb.file("perl/PswebLock.pm"),
        format!(
            "package PswebLock;\nuse strict;\nsub handler {{\n    my $r = shift;\n    {}\n    {}\n    return 0;\n}}\n1;\n",
            perl_mark(sb),
            perl_futex_wait()
        ),
    )
    .expect("perl module");
    format!(
        "LoadModule perl_module {MOD_PERL}\nPerlSwitches -I{}/perl\nPerlModule PswebLock\n\
         <Location /lock>\n  SetHandler modperl\n  PerlResponseHandler PswebLock\n</Location>\n",
        sb.path().display()
    )
}

/// nginx with one worker (backlog 16) whose location /h runs `body` in Perl (the
/// request in `$r`).
fn nginx_perl(sb: &Sandbox, port: u16, body: &str) -> (PathBuf, PathBuf) {
    let d = sb.path().display().to_string();
    std::fs::create_dir_all(sb.file("nginx-tmp")).expect("tmp dir");
    let conf = format!(
        "load_module {NGINX_PERL};\ndaemon on;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nworker_processes 1;\n\
         events {{ worker_connections 512; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/nginx-tmp/body;\n  proxy_temp_path {d}/nginx-tmp/proxy;\n\
           fastcgi_temp_path {d}/nginx-tmp/fastcgi;\n  uwsgi_temp_path {d}/nginx-tmp/uwsgi;\n  scgi_temp_path {d}/nginx-tmp/scgi;\n\
           server {{ listen 127.0.0.1:{port} backlog=16;\n    location / {{ return 200 \"psweb test\\n\"; }}\n\
             location /h {{ perl 'sub {{ my $r = shift; {body} }}'; }}\n  }}\n}}\n"
    );
    std::fs::write(sb.file("nginx.conf"), conf).expect("nginx.conf");
    let script = sb.script(
        "nginx.rc",
        &format!("echo run >> {d}/nginx.runs\nexec {NGINX} -p {d}/ -c {d}/nginx.conf"),
    );
    (script, sb.file("nginx.pid"))
}

/// pcheck watching the server with kernel evidence (the seed rule's retry-over time
/// is 600 s, so only kernel evidence can judge within a run).
fn pcheck_kernel(sb: &Sandbox, pname: &str, script: &Path, pidfile: &Path, port: u16) -> Pcheck {
    pcheck_kernel_with(sb, pname, script, pidfile, port, "")
}

/// The same, with more `key = value` lines in the stall block.
fn pcheck_kernel_with(
    sb: &Sandbox,
    pname: &str,
    script: &Path,
    pidfile: &Path,
    port: u16,
    extra: &str,
) -> Pcheck {
    watch_stall(
        sb,
        (pname, script, pidfile),
        "_bi_webserv",
        &format!("10:0:2:600:{port}"),
        &format!("    evidence = kernel\n{extra}"),
    )
}

/// The session of `pid` (a daemonized server's own), if it is not ours.
fn session_of(pid: i32) -> Option<i32> {
    use psweb::procfs;
    let own = procfs::stat(std::process::id() as i32).map(|s| s.sid).ok();
    procfs::stat(pid)
        .ok()
        .map(|s| s.sid)
        .filter(|s| *s > 1 && Some(*s) != own)
}

/// SIGKILLs every process of these sessions (a daemonized server's workers may
/// outlive their master, and nginx's do not carry the sandbox in their command
/// line). pcheck must be stopped first, so that nothing restarts meanwhile.
fn kill_sessions(sids: &[Option<i32>]) {
    use psweb::procfs;
    for p in procfs::pids() {
        if procfs::stat(p).is_ok_and(|s| sids.contains(&Some(s.sid))) {
            // SAFETY: plain kill; the process may be gone already.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
}

/// pcheck and the sessions of the servers it watched: on drop (also when a run
/// panics), pcheck is stopped, then every process of those sessions is killed.
struct Watched {
    pc: Pcheck,
    sids: Vec<Option<i32>>,
}

impl Drop for Watched {
    fn drop(&mut self) {
        let _ = self.pc.child.kill();
        let _ = self.pc.child.wait();
        kill_sessions(&self.sids);
    }
}

/// A load generator process, killed when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn wrk(port: u16, path: &str, conns: u32, secs: u64) -> Proc {
    wrk_at("127.0.0.1", port, path, conns, secs)
}

/// wrk against `host` ("127.0.0.1", or "[::1]" for IPv6).
fn wrk_at(host: &str, port: u16, path: &str, conns: u32, secs: u64) -> Proc {
    Proc(
        Command::new(WRK)
            .args([
                "-t2",
                &format!("-c{conns}"),
                &format!("-d{secs}s"),
                "--timeout",
                "10s",
            ])
            .arg(format!("http://{host}:{port}{path}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("wrk"),
    )
}

fn ab(port: u16, path: &str, conns: u32, secs: u64) -> Proc {
    Proc(
        Command::new(AB)
            .args(["-q", "-r", "-t", &secs.to_string(), "-n", "1000000"])
            .args(["-c", &conns.to_string(), "-s", "30"])
            .arg(format!("http://127.0.0.1:{port}{path}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("ab"),
    )
}

/// Client threads, stopped when dropped; `answered` counts the answers they got.
struct Clients {
    stop: Arc<AtomicBool>,
    answered: Arc<std::sync::atomic::AtomicU64>,
}

impl Drop for Clients {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// `n` client threads, each running `one(port, &stop) -> answered` until stopped.
fn clients_with(
    port: u16,
    n: usize,
    one: impl Fn(u16, &AtomicBool) -> bool + Send + Sync + 'static,
) -> Clients {
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let one = Arc::new(one);
    for _ in 0..n {
        let (stop, answered, one) = (Arc::clone(&stop), Arc::clone(&answered), Arc::clone(&one));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if one(port, &stop) {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    Clients { stop, answered }
}

/// `n` clients that each connect, send `req` and read the answer (giving up after
/// 10 s), over and over.
fn clients(port: u16, n: usize, req: &'static str) -> Clients {
    clients_with(port, n, move |port, _| {
        use std::io::{Read, Write};
        let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
            std::thread::sleep(Duration::from_millis(50));
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.")
    })
}

/// What was seen of the work waiting for the server while it was loaded.
#[derive(Debug, Default, Clone)]
pub struct Waiting {
    pub samples: u32,
    /// Samples with the accept queue full (depth > limit).
    pub queue_full: u32,
    /// Samples with connections in the accept queue.
    pub queued: u32,
    /// Samples with request bytes unread on connections the server holds.
    pub unread: u32,
    pub max_depth: (u32, u32),
    /// Overflows pcheck's accept-queue evidence counted on the port over the run (each
    /// a connection the full queue refused; `padmin -c show kernel`): a queue full
    /// for less than the samples' 200 ms is seen here.
    pub overflows: u64,
}

impl Waiting {
    /// Whether the accept queue was full at times: in a sample, or by the kernel.
    pub fn was_full(&self) -> bool {
        self.queue_full > 0 || self.overflows > 0
    }
}

/// The outcome of a busy run.
#[derive(Debug)]
pub struct BusyRun {
    pub waiting: Waiting,
    /// Lines of verdicts or observe-only suspicions: must stay empty.
    pub verdicts: Vec<String>,
    /// Lines where kernel evidence declined to judge.
    pub withheld: Vec<String>,
    /// Answers the test's own clients got (bytes for the downloaders; 0 for wrk/ab).
    pub answered: u64,
    /// The watched process is still the one from the start.
    pub same_process: bool,
    /// pcheck's CPU over the run, in % of one core.
    pub pcheck_cpu_pct: f64,
}

/// Runs a busy case for `secs`; None when a prerequisite is missing (printed).
pub fn run_busy(case: Busy, secs: u64) -> Option<BusyRun> {
    let name = case.name();
    if !root_or_skip(name) {
        return None;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let mut answered: Option<Arc<std::sync::atomic::AtomicU64>> = None;
    let mut guards: Vec<Box<dyn Any>> = Vec::new();
    let pc = match case {
        Busy::SlowCgi | Busy::SlowCgiEvent => {
            if !apache_or_skip(name) {
                return None;
            }
            let mpm = if case == Busy::SlowCgi {
                Mpm::Prefork
            } else {
                Mpm::Event
            };
            let report = (
                "report",
                "sleep 5\nprintf 'Content-Type: text/plain\\r\\n\\r\\nslow report\\n'",
            );
            let (script, pidfile) = apache(&sb, port, mpm, 4, 16, &[report], "");
            let pc = pcheck_kernel(&sb, APACHE, &script, &pidfile, port);
            let c = clients(port, 40, "GET /cgi/report HTTP/1.0\r\n\r\n");
            answered = Some(Arc::clone(&c.answered));
            guards.push(Box::new(c));
            pc
        }
        Busy::PreforkKeepAliveV6 => {
            if !apache_or_skip(name) || !tool_or_skip(name, WRK, "wrk") {
                return None;
            }
            let (script, pidfile) = apache(
                &sb,
                port,
                Mpm::Prefork,
                4,
                16,
                &[SLOW_CGI],
                &format!("Listen [::1]:{port}\n"),
            );
            let pc = pcheck_kernel(&sb, APACHE, &script, &pidfile, port);
            guards.push(Box::new(wrk_at("[::1]", port, "/cgi/slow", 200, secs + 1)));
            pc
        }
        Busy::PreforkKeepAlive | Busy::EventAb => {
            let ab_case = case == Busy::EventAb;
            if !apache_or_skip(name)
                || !(if ab_case {
                    tool_or_skip(name, AB, "apache2-utils")
                } else {
                    tool_or_skip(name, WRK, "wrk")
                })
            {
                return None;
            }
            let mpm = if ab_case { Mpm::Event } else { Mpm::Prefork };
            let (script, pidfile) = apache(&sb, port, mpm, 4, 16, &[SLOW_CGI], "");
            let pc = pcheck_kernel(&sb, APACHE, &script, &pidfile, port);
            guards.push(Box::new(if ab_case {
                ab(port, "/cgi/slow", 64, secs + 1)
            } else {
                wrk(port, "/cgi/slow", 200, secs + 1)
            }));
            pc
        }
        Busy::NginxSlowHandler => {
            if !nginx_or_skip(name)
                || !tool_or_skip(name, WRK, "wrk")
                || !tool_or_skip(name, NGINX_PERL, "libnginx-mod-http-perl")
            {
                return None;
            }
            let (script, pidfile) = nginx_perl(
                &sb,
                port,
                "select(undef, undef, undef, 0.2); $r->send_http_header(q(text/plain)); $r->print(qq(slow answer\\n)); return 0;",
            );
            let pc = pcheck_kernel(&sb, NGINX, &script, &pidfile, port);
            guards.push(Box::new(wrk(port, "/h", 200, secs + 1)));
            pc
        }
        Busy::SlowDownloaders => {
            if !apache_or_skip(name) {
                return None;
            }
            let (script, pidfile) = apache(&sb, port, Mpm::Prefork, 4, 16, &[], "");
            let big = std::fs::File::create(sb.file("htdocs/big.bin")).expect("big file");
            big.set_len(1 << 30).expect("1 GB sparse file");
            let pc = pcheck_kernel(&sb, APACHE, &script, &pidfile, port);
            let bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
            let got = Arc::clone(&bytes);
            let down = clients_with(port, 4, move |port, stop| {
                use std::io::{Read, Write};
                let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                    std::thread::sleep(Duration::from_millis(50));
                    return false;
                };
                if s.write_all(b"GET /big.bin HTTP/1.0\r\n\r\n").is_err() {
                    return false;
                }
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.fetch_add(n as u64, Ordering::Relaxed),
                    };
                    std::thread::sleep(Duration::from_millis(250));
                }
                true
            });
            std::thread::sleep(Duration::from_secs(1));
            let others = clients(port, 40, "GET / HTTP/1.0\r\n\r\n");
            answered = Some(bytes);
            guards.push(Box::new(down));
            guards.push(Box::new(others));
            pc
        }
        Busy::IdleKeepAlive => {
            if !apache_or_skip(name) {
                return None;
            }
            let (script, pidfile) = apache(
                &sb,
                port,
                Mpm::Prefork,
                4,
                16,
                &[],
                "KeepAliveTimeout 5\nMaxKeepAliveRequests 0\n",
            );
            let pc = pcheck_kernel(&sb, APACHE, &script, &pidfile, port);
            let idle = clients_with(port, 12, |port, _| {
                use std::io::{Read, Write};
                let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                    std::thread::sleep(Duration::from_millis(50));
                    return false;
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
                let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
                let mut buf = [0u8; 4096];
                let served = s.read(&mut buf).unwrap_or(0) > 0;
                // Silent until the server closes the connection.
                while s.read(&mut buf).unwrap_or(0) > 0 {}
                served
            });
            std::thread::sleep(Duration::from_secs(1));
            let others = clients(port, 24, "GET / HTTP/1.0\r\n\r\n");
            answered = Some(Arc::clone(&idle.answered));
            guards.push(Box::new(idle));
            guards.push(Box::new(others));
            pc
        }
        Busy::SlowUpstream => {
            if !apache_or_skip(name) {
                return None;
            }
            let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("upstream");
            let up = upstream.local_addr().expect("addr").port();
            let stop = Arc::new(AtomicBool::new(false));
            {
                let stop = Arc::clone(&stop);
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for s in upstream.incoming().flatten() {
                        held.push(s); // accepted, never answered
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                });
            }
            let (script, pidfile) = apache(
                &sb,
                port,
                Mpm::Prefork,
                4,
                16,
                &[],
                &format!(
                    "LoadModule proxy_module {MODS}/mod_proxy.so\nLoadModule proxy_http_module {MODS}/mod_proxy_http.so\n\
                     ProxyPass /up http://127.0.0.1:{up}/ timeout=60\n"
                ),
            );
            let pc = pcheck_kernel(&sb, APACHE, &script, &pidfile, port);
            guards.push(Box::new(clients(port, 40, "GET /up HTTP/1.0\r\n\r\n")));
            guards.push(Box::new(Clients {
                stop,
                answered: Arc::default(),
            }));
            pc
        }
    };
    let master = pid_of(&pc.entry(1));
    let mut w = Watched {
        sids: vec![session_of(master)],
        pc,
    };
    let pc = &mut w.pc;
    let pcheck_pid = pc.child.id();
    let cpu0 = cpu_ticks(pcheck_pid);
    let t0 = Instant::now();
    let mut waiting = watch_waiting(pc, port, t0 + Duration::from_secs(secs));
    waiting.overflows = overflows_counted(pc, port);
    let cpu = cpu_ticks(pcheck_pid).saturating_sub(cpu0);
    let elapsed = t0.elapsed().as_secs_f64();
    pc.drain();
    let verdicts = pc
        .seen
        .iter()
        .filter(|l| l.contains("Stall") || l.contains("stall evidence"))
        .cloned()
        .collect();
    let withheld = pc
        .seen
        .iter()
        .filter(|l| l.contains("kernel evidence does not judge"))
        .cloned()
        .collect();
    let same_process = pid_of(&pc.entry(1)) == master;
    drop(guards);
    drop(w);
    Some(BusyRun {
        waiting,
        verdicts,
        withheld,
        answered: answered.map_or(0, |a| a.load(Ordering::Relaxed)),
        same_process,
        // /proc ticks are 1/100 s.
        pcheck_cpu_pct: cpu as f64 / elapsed,
    })
}

/// Looks at the port every 200 ms until `until` (a complete sample, as pcheck's
/// deciding one), draining pcheck's log meanwhile.
fn watch_waiting(pc: &mut Pcheck, port: u16, until: Instant) -> Waiting {
    let mut w = Waiting::default();
    while Instant::now() < until {
        if let Ok((s, _)) = psweb::sense::sockdiag::progress_sample(port, Instant::now()) {
            w.samples += 1;
            if let Some((d, l)) = s.queue {
                w.queue_full += u32::from(d > l);
                w.queued += u32::from(d > 0);
                w.max_depth = w.max_depth.max((d, l));
            }
            w.unread += u32::from(s.conns.iter().any(|c| c.unread > 0));
        }
        pc.drain();
        std::thread::sleep(Duration::from_millis(200));
    }
    w
}

/// The accept-queue overflows pcheck has counted on `port` (eBPF SYN and final-ACK
/// paths, sock_diag polls that found the queue full); 0 when it cannot be asked.
fn overflows_counted(pc: &Pcheck, port: u16) -> u64 {
    let out = pc.padmin(&["-c", "show kernel", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    v["kernel"]["ports"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["port"] == port))
        .map_or(0, |p| {
            ["syn_overflows", "final_ack_overflows", "full_polls"]
                .iter()
                .filter_map(|k| p[*k].as_u64())
                .sum()
        })
}

/// The outcome of a stuck run.
#[derive(Debug)]
pub struct StuckRun {
    /// From the moment the server was stuck (stopped, or every worker in its looping
    /// or blocking handler) to `Find Web Server Stall`.
    pub took: Duration,
    /// From the first request to the stuck handler until every worker was in it
    /// (zero for the stopped cases): set-up, not part of the verdict time.
    pub setup: Duration,
    /// The seed's line: `Find Web Server Stall: pid = ... : port = ...`.
    pub find: String,
    /// The `stall evidence (kernel): ...` line.
    pub why: String,
    pub master: i32,
    pub port: u16,
}

/// Runs a stuck case until the verdict (at most `limit`); None when a prerequisite
/// is missing (printed).
pub fn run_stuck(case: Stuck, limit: Duration) -> Option<StuckRun> {
    let name = case.name();
    if !root_or_skip(name) {
        return None;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let mut guards: Vec<Box<dyn Any>> = Vec::new();
    let apache_case = !matches!(case, Stuck::NginxLoop | Stuck::NginxDeadlock);
    if apache_case && !apache_or_skip(name) {
        return None;
    }
    if matches!(case, Stuck::PreforkDeadlock | Stuck::EventDeadlock)
        && !tool_or_skip(name, MOD_PERL, "libapache2-mod-perl2")
    {
        return None;
    }
    if !apache_case
        && (!nginx_or_skip(name) || !tool_or_skip(name, NGINX_PERL, "libnginx-mod-http-perl"))
    {
        return None;
    }
    let stopped = matches!(
        case,
        Stuck::PreforkStopped | Stuck::EventStopped | Stuck::PreforkStoppedV6
    );
    if case == Stuck::HeldConnectionsOnly {
        return Some(run_held_only(&sb, port, limit));
    }
    if stopped && !tool_or_skip(name, WRK, "wrk") {
        return None;
    }
    let pc = match case {
        Stuck::PreforkStopped
        | Stuck::EventStopped
        | Stuck::PreforkStoppedV6
        | Stuck::PreforkLoop
        | Stuck::EventLoop
        | Stuck::PreforkDeadlock
        | Stuck::EventDeadlock => {
            let mpm = if matches!(
                case,
                Stuck::EventStopped | Stuck::EventLoop | Stuck::EventDeadlock
            ) {
                Mpm::Event
            } else {
                Mpm::Prefork
            };
            let (workers, backlog, extra) = match case {
                Stuck::PreforkStoppedV6 => (4, 16, format!("Listen [::1]:{port}\n")),
                _ if stopped => (4, 16, String::new()),
                Stuck::PreforkDeadlock | Stuck::EventDeadlock => (2, 8, perl_lock(&sb)),
                _ => (2, 8, lua_loop(&sb)),
            };
            let (script, pidfile) = apache(&sb, port, mpm, workers, backlog, &[SLOW_CGI], &extra);
            pcheck_kernel(&sb, APACHE, &script, &pidfile, port)
        }
        Stuck::NginxLoop => {
            let (script, pidfile) = nginx_perl(
                &sb,
                port,
                &format!("{} while (1) {{}} return 0;", perl_mark(&sb)),
            );
            pcheck_kernel(&sb, NGINX, &script, &pidfile, port)
        }
        Stuck::HeldConnectionsOnly => unreachable!("run_held_only"),
        Stuck::NginxDeadlock => {
            let (script, pidfile) = nginx_perl(
                &sb,
                port,
                &format!("{} {} return 0;", perl_mark(&sb), perl_futex_wait()),
            );
            pcheck_kernel(&sb, NGINX, &script, &pidfile, port)
        }
    };
    let master = pid_of(&pc.entry(1));
    let mut w = Watched {
        sids: vec![session_of(master)],
        pc,
    };
    let pc = &mut w.pc;
    let t0;
    let mut setup = Duration::ZERO;
    if stopped {
        guards.push(Box::new(if case == Stuck::PreforkStoppedV6 {
            wrk_at("[::1]", port, "/cgi/slow", 200, 60)
        } else {
            wrk(port, "/cgi/slow", 200, 60)
        }));
        std::thread::sleep(Duration::from_secs(1));
        let procs = sandbox_pids_of(&sb, APACHE);
        t0 = Instant::now();
        for p in &procs {
            kill(*p, libc::SIGSTOP);
        }
    } else {
        // The stuck requests first, alone: the server is stuck once every worker
        // is in the handler (each says so in the marks file). Then the other
        // clients, whose work waits from then on. (Sent together, a stuck request
        // whose SYN the full queue dropped arrived 1 or 3 s later, while the other
        // worker was still serving: set-up, not verdict time.)
        let (path, n) = match case {
            Stuck::PreforkLoop | Stuck::EventLoop => ("GET /loop HTTP/1.0\r\n\r\n", 2),
            Stuck::PreforkDeadlock | Stuck::EventDeadlock => ("GET /lock HTTP/1.0\r\n\r\n", 2),
            _ => ("GET /h HTTP/1.0\r\n\r\n", 1),
        };
        let marks = stuck_marks(&sb);
        let asked = Instant::now();
        guards.push(Box::new(clients(port, n, path)));
        while stuck_count(&marks) < n {
            assert!(
                asked.elapsed() < T,
                "{name}: {} of {n} workers in the stuck handler",
                stuck_count(&marks)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        t0 = Instant::now();
        setup = t0 - asked;
        guards.push(Box::new(clients(port, 24, "GET / HTTP/1.0\r\n\r\n")));
    }
    let find = pc.wait_for("Find Web Server Stall", limit);
    let took = t0.elapsed();
    let why = pc.seen_or_wait("stall evidence (kernel)", T);
    drop(guards);
    // What is left of the stuck server (a looping worker), and its successor.
    pc.wait_for("Restarted Process", T);
    let now = session_of(pid_of(&pc.entry(1)));
    w.sids.push(now);
    drop(w);
    Some(StuckRun {
        took,
        setup,
        find,
        why,
        master,
        port,
    })
}

/// Stuck::HeldConnectionsOnly: four keep-alive clients hold the four prefork
/// children; all of Apache is stopped; each client sends its next request on its
/// held connection. The queue holds at most the probes' connections: the failed
/// probe (timeout 1 s) starts the sampling.
fn run_held_only(sb: &Sandbox, port: u16, limit: Duration) -> StuckRun {
    use std::io::{Read, Write};
    let (script, pidfile) = apache(
        sb,
        port,
        Mpm::Prefork,
        4,
        16,
        &[],
        "KeepAliveTimeout 120\nMaxKeepAliveRequests 0\n",
    );
    let pc = pcheck_kernel_with(
        sb,
        APACHE,
        &script,
        &pidfile,
        port,
        "    probe_timeout = 1s\n",
    );
    let master = pid_of(&pc.entry(1));
    let mut w = Watched {
        sids: vec![session_of(master)],
        pc,
    };
    let req = b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n";
    let mut held: Vec<std::net::TcpStream> = (0..4)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(10)))
                .expect("timeout");
            s.write_all(req).expect("request");
            let mut buf = [0u8; 4096];
            assert!(s.read(&mut buf).expect("answer") > 0, "answered");
            s
        })
        .collect();
    for p in sandbox_pids_of(sb, APACHE) {
        kill(p, libc::SIGSTOP);
    }
    let t0 = Instant::now();
    for s in &mut held {
        s.write_all(req).expect("next request");
    }
    let pc = &mut w.pc;
    let find = pc.wait_for("Find Web Server Stall", limit);
    let took = t0.elapsed();
    let why = pc.seen_or_wait("stall evidence (kernel)", T);
    pc.wait_for("Restarted Process", T);
    let now = session_of(pid_of(&pc.entry(1)));
    w.sids.push(now);
    drop(w);
    StuckRun {
        took,
        setup: Duration::ZERO,
        find,
        why,
        master,
        port,
    }
}
