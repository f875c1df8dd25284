//! Kernel evidence judges by the server's progress, end to end: real Apache (prefork
//! and event MPM) and nginx under real load generators (wrk with keep-alive, ab
//! without). Busy servers with work waiting are never judged; stuck ones are.
//!
//! Each busy case runs at least 20 s; the cases are separate tests on their own
//! ports so that they run side by side.

mod common;
use common::*;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const WRK: &str = "/usr/bin/wrk";
const AB: &str = "/usr/bin/ab";
/// How long each busy case is loaded.
const BUSY: Duration = Duration::from_secs(22);

fn tool_or_skip(test: &str, path: &str, package: &str) -> bool {
    if std::path::Path::new(path).exists() {
        return true;
    }
    println!("SKIPPED {test}: {path} ({package}) is not installed (cargo xtask test installs it)");
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
    let m = "/usr/lib/apache2/modules";
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

/// pcheck watching the server with kernel evidence (the seed rule's retry-over time
/// is 600 s, so only kernel evidence can judge within a test).
fn pcheck_kernel(
    sb: &Sandbox,
    pname: &str,
    script: &PathBuf,
    pidfile: &PathBuf,
    port: u16,
) -> Pcheck {
    let pfile = entry_pfile(
        sb,
        pname,
        script,
        pidfile,
        &stall_block(
            "_bi_webserv",
            &format!("10:0:2:600:{port}"),
            1,
            "    evidence = kernel\n",
        ),
    );
    let mut pc = Pcheck::start(sb, &pfile, &[]);
    pc.wait_for("stall_chk (web) of pent_id= 1", T);
    pc
}

fn wrk(port: u16, path: &str, conns: u32, secs: u64) -> Child {
    Command::new(WRK)
        .args([
            "-t2",
            &format!("-c{conns}"),
            &format!("-d{secs}s"),
            "--timeout",
            "10s",
        ])
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("wrk")
}

/// Requests wrk completed ("1158 requests in 60.05s").
fn wrk_requests(child: Child) -> (u64, String) {
    let out = child.wait_with_output().expect("wrk output");
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    let n = report
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    (n, report)
}

/// What the test saw of the work waiting for the server while it was loaded.
#[derive(Debug, Default)]
struct Waiting {
    samples: u32,
    /// Samples with the accept queue full (depth > limit).
    queue_full: u32,
    /// Samples with connections in the accept queue.
    queued: u32,
    /// Samples with request bytes unread on connections the server holds.
    unread: u32,
    max_depth: (u32, u32),
}

/// Samples the port like pcheck does, every 100 ms until `until`, draining pcheck's
/// log meanwhile.
fn watch_waiting(pc: &mut Pcheck, port: u16, until: Instant) -> Waiting {
    let mut w = Waiting::default();
    while Instant::now() < until {
        if let Ok(s) = psweb::sense::sockdiag::progress_sample(port, Instant::now()) {
            w.samples += 1;
            if let Some((d, l)) = s.queue {
                w.queue_full += u32::from(d > l);
                w.queued += u32::from(d > 0);
                w.max_depth = w.max_depth.max((d, l));
            }
            w.unread += u32::from(s.conns.iter().any(|c| c.unread > 0));
        }
        pc.drain();
        std::thread::sleep(Duration::from_millis(100));
    }
    w
}

/// The lines of a verdict (or an observe-only suspicion) seen so far.
fn verdicts(pc: &mut Pcheck) -> Vec<String> {
    pc.drain();
    pc.seen
        .iter()
        .filter(|l| l.contains("Stall") || l.contains("stall evidence"))
        .cloned()
        .collect()
}

/// The report: Debian's Apache prefork (4 children, ListenBacklog 16), a CGI that
/// takes 0.2 s, wrk with 200 keep-alive connections. The children answer request
/// after request on connections they hold and accept nothing for seconds: busy, not
/// stuck, and never judged.
#[test]
fn keep_alive_load_on_apache_prefork_is_never_judged() {
    let name = "keep_alive_prefork";
    if !root_or_skip(name) || !apache_or_skip(name) || !tool_or_skip(name, WRK, "wrk") {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let (script, pidfile) = apache(&sb, port, Mpm::Prefork, 4, 16, &[SLOW_CGI], "");
    let mut pc = pcheck_kernel(&sb, APACHE, &script, &pidfile, port);
    let master = pid_of(&pc.entry(1));
    let load = wrk(port, "/cgi/slow", 200, BUSY.as_secs());
    let seen = watch_waiting(
        &mut pc,
        port,
        Instant::now() + BUSY - Duration::from_secs(1),
    );
    let (done, report) = wrk_requests(load);
    println!(
        "apache prefork + wrk -c200 keep-alive: {done} requests in {BUSY:?}; waiting work {seen:?}"
    );
    assert!(
        seen.queue_full > 0,
        "the accept queue was full at times: {seen:?}"
    );
    assert!(done > 20, "the server was serving: {report}");
    let v = verdicts(&mut pc);
    assert!(v.is_empty(), "a busy server was judged: {v:?}");
    assert_eq!(pid_of(&pc.entry(1)), master, "no restart");
}

/// The same Apache prefork with every child SIGSTOPped under the same keep-alive
/// load: judged by kernel evidence, with the figures that decided it.
#[test]
fn stopped_apache_prefork_under_keep_alive_load_is_judged() {
    let name = "stopped_prefork";
    if !root_or_skip(name) || !apache_or_skip(name) || !tool_or_skip(name, WRK, "wrk") {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let (script, pidfile) = apache(&sb, port, Mpm::Prefork, 4, 16, &[SLOW_CGI], "");
    let mut pc = pcheck_kernel(&sb, APACHE, &script, &pidfile, port);
    let master = pid_of(&pc.entry(1));
    let load = wrk(port, "/cgi/slow", 200, 30);
    std::thread::sleep(Duration::from_secs(1));
    let httpd = sandbox_pids_of(&sb, APACHE);
    let t0 = Instant::now();
    for p in &httpd {
        kill(*p, libc::SIGSTOP);
    }
    let find = pc.wait_for("Find Web Server Stall", Duration::from_secs(25));
    let took = t0.elapsed();
    assert!(
        find.ends_with(&format!("pid = {master} : port = {port}")),
        "{find}"
    );
    let why = pc.seen_or_wait("stall evidence (kernel)", T);
    println!(
        "apache prefork SIGSTOP under wrk keep-alive: judged in {} ms: {why}",
        took.as_millis()
    );
    assert!(why.contains("no progress for"), "{why}");
    assert!(
        why.contains("server accepted 0, wrote 0 B, read 0 B"),
        "{why}"
    );
    assert!(why.contains("threads T:"), "the stopped threads: {why}");
    // Sanity bound (>= 10x the ~2.2 s measured; the figure is in the bench).
    assert!(took < Duration::from_secs(25), "judged in {took:?}");
    pc.wait_for("Restarted Process", T);
    let _ = wrk_requests(load);
}

/// Clients that fill the accept queue, stopped when dropped.
struct Load {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<u32>>,
}

impl Load {
    /// Stops the clients; the answers they got.
    fn finish(mut self) -> u32 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.threads.drain(..).map(|t| t.join().unwrap_or(0)).sum()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// `n` clients that each connect, send `req` and read the answer (or give up after
/// 10 s), over and over until stopped.
fn clients(port: u16, n: usize, req: &'static str) -> Load {
    use std::io::{Read, Write};
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads = (0..n)
        .map(|_| {
            let stop = std::sync::Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut answered = 0;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    if s.write_all(req.as_bytes()).is_err() {
                        continue;
                    }
                    let mut buf = Vec::new();
                    if s.read_to_end(&mut buf).is_ok() && buf.starts_with(b"HTTP/1.") {
                        answered += 1;
                    }
                }
                answered
            })
        })
        .collect();
    Load { stop, threads }
}

/// One busy case: pcheck watches the server for BUSY while `load` runs; the queue
/// must be seen with waiting work, and nothing judged.
fn busy_case(name: &str, pc: &mut Pcheck, port: u16, need: impl Fn(&Waiting) -> bool) -> Waiting {
    let master = pid_of(&pc.entry(1));
    let seen = watch_waiting(pc, port, Instant::now() + BUSY);
    let v = verdicts(pc);
    let withheld: Vec<&String> = pc
        .seen
        .iter()
        .filter(|l| l.contains("kernel evidence does not judge"))
        .collect();
    println!("{name}: waiting work {seen:?}; kernel evidence withheld: {withheld:?}");
    assert!(need(&seen), "{name}: work was waiting at times: {seen:?}");
    assert!(v.is_empty(), "{name}: a busy server was judged: {v:?}");
    assert_eq!(pid_of(&pc.entry(1)), master, "{name}: no restart");
    seen
}

/// Apache event MPM (4 threads), a 0.2 s CGI, ab with 64 concurrent clients and no
/// keep-alive: busy, never judged.
#[test]
fn ab_load_on_apache_event_is_never_judged() {
    let name = "ab_event";
    if !root_or_skip(name) || !apache_or_skip(name) || !tool_or_skip(name, AB, "apache2-utils") {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let (script, pidfile) = apache(&sb, port, Mpm::Event, 4, 16, &[SLOW_CGI], "");
    let mut pc = pcheck_kernel(&sb, APACHE, &script, &pidfile, port);
    let ab = Command::new(AB)
        .args([
            "-q",
            "-r",
            "-t",
            &BUSY.as_secs().to_string(),
            "-n",
            "1000000",
            "-c",
            "64",
            "-s",
            "30",
        ])
        .arg(format!("http://127.0.0.1:{port}/cgi/slow"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("ab");
    busy_case(name, &mut pc, port, |w| w.queue_full > 0);
    let out = ab.wait_with_output().expect("ab output");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("Complete requests"), "{report}");
}

/// nginx with one worker and a slow request handler (Perl, 0.2 s a request) under
/// wrk with 200 keep-alive connections: busy, never judged.
#[test]
fn keep_alive_load_on_nginx_with_a_slow_handler_is_never_judged() {
    let name = "keep_alive_nginx";
    if !root_or_skip(name)
        || !nginx_or_skip(name)
        || !tool_or_skip(name, WRK, "wrk")
        || !tool_or_skip(name, NGINX_PERL, "libnginx-mod-http-perl")
    {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let (script, pidfile) = nginx_perl(
        &sb,
        port,
        "select(undef, undef, undef, 0.2); $r->send_http_header(q(text/plain)); $r->print(qq(slow answer\\n)); return 0;",
    );
    let mut pc = pcheck_kernel(&sb, NGINX, &script, &pidfile, port);
    let load = wrk(port, "/h", 200, BUSY.as_secs());
    busy_case(name, &mut pc, port, |w| w.queue_full > 0);
    let (done, report) = wrk_requests(load);
    assert!(done > 20, "the server was serving: {report}");
}

/// Clients that download a large file slowly (8 KB/s each) hold every Apache
/// prefork child while other clients fill the queue: the children wait on their
/// clients, and are never judged.
#[test]
fn slow_downloaders_on_apache_prefork_are_never_judged() {
    let name = "slow_downloaders";
    if !root_or_skip(name) || !apache_or_skip(name) {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let (script, pidfile) = apache(&sb, port, Mpm::Prefork, 4, 16, &[], "");
    let big = std::fs::File::create(sb.file("htdocs/big.bin")).expect("big file");
    big.set_len(256 << 20).expect("256 MB sparse file");
    let mut pc = pcheck_kernel(&sb, APACHE, &script, &pidfile, port);
    let until = Instant::now() + BUSY + Duration::from_secs(2);
    let downloaders: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
                s.write_all(b"GET /big.bin HTTP/1.0\r\n\r\n")
                    .expect("request");
                let mut got = 0usize;
                let mut buf = [0u8; 2048];
                while Instant::now() < until {
                    got += s.read(&mut buf).unwrap_or(0);
                    std::thread::sleep(Duration::from_millis(250));
                }
                got
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let others = clients(port, 40, "GET / HTTP/1.0\r\n\r\n");
    busy_case(name, &mut pc, port, |w| w.queue_full > 0);
    for d in downloaders {
        let got = d.join().expect("downloader");
        assert!(got > 0, "the downloader got data");
    }
    others.finish();
}

/// Apache prefork whose children all hold idle keep-alive connections (clients that
/// asked once and stay silent until the server's 5 s KeepAliveTimeout), while other
/// clients queue: the children wait on their clients, and are never judged.
#[test]
fn idle_keep_alive_connections_on_apache_prefork_are_never_judged() {
    let name = "idle_keep_alive";
    if !root_or_skip(name) || !apache_or_skip(name) {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let (script, pidfile) = apache(
        &sb,
        port,
        Mpm::Prefork,
        4,
        16,
        &[],
        "KeepAliveTimeout 5\nMaxKeepAliveRequests 0\n",
    );
    let mut pc = pcheck_kernel(&sb, APACHE, &script, &pidfile, port);
    let until = Instant::now() + BUSY + Duration::from_secs(2);
    let idle: Vec<_> = (0..12)
        .map(|_| {
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let mut served = 0;
                while Instant::now() < until {
                    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
                        continue;
                    };
                    let _ = s.set_read_timeout(Some(Duration::from_secs(15)));
                    let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
                    let mut buf = [0u8; 4096];
                    if s.read(&mut buf).unwrap_or(0) > 0 {
                        served += 1;
                    }
                    // Silent until the server closes the connection.
                    while s.read(&mut buf).unwrap_or(0) > 0 {}
                }
                served
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    let others = clients(port, 24, "GET / HTTP/1.0\r\n\r\n");
    busy_case(name, &mut pc, port, |w| w.queue_full > 0);
    let served: u32 = idle.into_iter().map(|t| t.join().unwrap_or(0)).sum();
    assert!(served > 0, "the idle clients were served");
    others.finish();
}

/// Every Apache prefork child waits on an upstream (mod_proxy to a server that
/// accepts and never answers) for longer than the window while clients queue:
/// kernel evidence cannot tell this from a hung server, so it does not judge.
#[test]
fn workers_waiting_on_a_slow_upstream_are_never_judged() {
    let name = "slow_upstream";
    if !root_or_skip(name) || !apache_or_skip(name) {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("upstream");
    let up = upstream.local_addr().expect("addr").port();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    {
        let held = std::sync::Arc::clone(&held);
        std::thread::spawn(move || {
            for s in upstream.incoming().flatten() {
                held.lock().expect("lock").push(s); // accepted, never answered
            }
        });
    }
    let m = "/usr/lib/apache2/modules";
    let (script, pidfile) = apache(
        &sb,
        port,
        Mpm::Prefork,
        4,
        16,
        &[],
        &format!(
            "LoadModule proxy_module {m}/mod_proxy.so\nLoadModule proxy_http_module {m}/mod_proxy_http.so\n\
             ProxyPass /up http://127.0.0.1:{up}/ timeout=60\n"
        ),
    );
    let mut pc = pcheck_kernel(&sb, APACHE, &script, &pidfile, port);
    let others = clients(port, 40, "GET /up HTTP/1.0\r\n\r\n");
    busy_case(name, &mut pc, port, |w| w.queue_full > 0);
    assert!(
        pc.seen
            .iter()
            .any(|l| l.contains("kernel evidence does not judge") && l.contains("another server")),
        "the slow upstream was recognised"
    );
    drop(others);
    held.lock().expect("lock").clear();
}

const NGINX: &str = "/usr/sbin/nginx";
const NGINX_PERL: &str = "/usr/lib/nginx/modules/ngx_http_perl_module.so";

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

/// A true stall: pcheck judges it within the bound, and the verdict line says why.
/// Returns the verdict line.
fn judged(pc: &mut Pcheck, what: &str, t0: Instant, master: i32, port: u16) -> String {
    let find = pc.wait_for("Find Web Server Stall", Duration::from_secs(25));
    let took = t0.elapsed();
    assert!(
        find.ends_with(&format!("pid = {master} : port = {port}")),
        "{find}"
    );
    let why = pc.seen_or_wait("stall evidence (kernel)", T);
    println!("{what}: judged in {} ms: {why}", took.as_millis());
    assert!(
        why.contains("server accepted 0, wrote 0 B, read 0 B"),
        "{why}"
    );
    // Sanity bound (>= 10x the ~2.2 s measured; the figure is in the bench).
    assert!(took < Duration::from_secs(25), "judged in {took:?}");
    why
}

/// A request handler in an infinite loop on every worker (Apache prefork, 2
/// children, mod_lua): the workers run (state R), nothing progresses: judged.
#[test]
fn a_looping_handler_on_every_apache_worker_is_judged() {
    let name = "loop_apache";
    if !root_or_skip(name) || !apache_or_skip(name) {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    std::fs::create_dir_all(sb.file("lua")).expect("lua dir");
    std::fs::write(
        sb.file("lua/loop.lua"),
        "function handle(r)\n  while true do end\nend\n",
    )
    .expect("lua");
    let (script, pidfile) = apache(
        &sb,
        port,
        Mpm::Prefork,
        2,
        8,
        &[],
        &format!(
            "LoadModule lua_module /usr/lib/apache2/modules/mod_lua.so\nLuaMapHandler ^/loop$ {}/lua/loop.lua handle\n",
            sb.path().display()
        ),
    );
    let mut pc = pcheck_kernel(&sb, APACHE, &script, &pidfile, port);
    let master = pid_of(&pc.entry(1));
    let t0 = Instant::now();
    let _loops = clients(port, 2, "GET /loop HTTP/1.0\r\n\r\n");
    let _queue = clients(port, 16, "GET / HTTP/1.0\r\n\r\n");
    let why = judged(
        &mut pc,
        "apache prefork, a looping handler on every child",
        t0,
        master,
        port,
    );
    assert!(why.contains("R:"), "running workers: {why}");
}

/// A request handler in an infinite loop on nginx's worker (Perl): judged.
#[test]
fn a_looping_handler_on_nginx_is_judged() {
    let name = "loop_nginx";
    if !root_or_skip(name)
        || !nginx_or_skip(name)
        || !tool_or_skip(name, NGINX_PERL, "libnginx-mod-http-perl")
    {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let (script, pidfile) = nginx_perl(&sb, port, "while (1) {} return 0;");
    let mut pc = pcheck_kernel(&sb, NGINX, &script, &pidfile, port);
    let master = pid_of(&pc.entry(1));
    let t0 = Instant::now();
    let _loops = clients(port, 1, "GET /h HTTP/1.0\r\n\r\n");
    let _queue = clients(port, 24, "GET / HTTP/1.0\r\n\r\n");
    let why = judged(&mut pc, "nginx, a looping handler", t0, master, port);
    assert!(why.contains("R:"), "a running worker: {why}");
}

/// A deadlock: nginx's worker blocks on a lock (a futex no one wakes) in its
/// request handler, with no socket I/O pending: judged.
#[test]
fn a_worker_deadlocked_on_a_lock_is_judged() {
    let name = "deadlock_nginx";
    if !root_or_skip(name)
        || !nginx_or_skip(name)
        || !tool_or_skip(name, NGINX_PERL, "libnginx-mod-http-perl")
    {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    // futex(&word, FUTEX_WAIT, 0, NULL): sleeps until woken, and no one will.
    let (script, pidfile) = nginx_perl(
        &sb,
        port,
        &format!(
            "my $w = pack(q(i), 0); syscall({}, unpack(q(J), pack(q(p), $w)), 0, 0, 0); return 0;",
            libc::SYS_futex
        ),
    );
    let mut pc = pcheck_kernel(&sb, NGINX, &script, &pidfile, port);
    let master = pid_of(&pc.entry(1));
    let t0 = Instant::now();
    let _lock = clients(port, 1, "GET /h HTTP/1.0\r\n\r\n");
    let _queue = clients(port, 24, "GET / HTTP/1.0\r\n\r\n");
    let why = judged(
        &mut pc,
        "nginx, a worker deadlocked on a futex",
        t0,
        master,
        port,
    );
    assert!(why.contains("S:"), "a sleeping worker: {why}");
}
