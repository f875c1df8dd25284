//! Helpers for the end-to-end tests: real pcheck / padmin binaries, real processes,
//! real sockets. Everything a test starts carries the test's own directory in its
//! command line, so the teardown can find and kill it.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

mod skip;
#[allow(unused_imports)]
pub use skip::{not_run, skip, under_ci};

pub const PCHECK: &str = env!("CARGO_BIN_EXE_pcheck");
pub const PADMIN: &str = env!("CARGO_BIN_EXE_padmin");
pub const DEMO: &str = env!("CARGO_BIN_EXE_psweb-demo-httpd");

/// True when the test may run; otherwise records why it is skipped ([`skip`]).
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    skip(test, "needs root (pcheck's control socket lives in a root-owned directory, and the tests kill and watch real processes)");
    false
}

/// True when pcheck can find the built eBPF object (PSWEB_BPF_OBJECT, as
/// `cargo xtask test` sets it, or target/debug/psweb.bpf.o); otherwise prints why
/// the test is skipped.
pub fn bpf_object_or_skip(test: &str) -> bool {
    let p = std::env::var_os("PSWEB_BPF_OBJECT")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(PCHECK).with_file_name("psweb.bpf.o"));
    if p.exists() {
        return true;
    }
    skip(test, &format!("no eBPF object at {} (run `cargo xtask build-ebpf`, or the tests through `cargo xtask test`)", p.display()));
    false
}

/// A test's own directory; on drop, every process whose command line names it is
/// killed.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("psweb-e2e-")
            .tempdir()
            .expect("tempdir");
        // Restart scripts must be reachable for root only; 0755 keeps padmin-as-nobody
        // tests able to reach the run dir.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .expect("chmod");
        Self { dir }
    }
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    pub fn run_dir(&self) -> PathBuf {
        self.file("run")
    }
    /// Writes an executable script.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let p = self.file(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).expect("write script");
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        p
    }
    /// A restart script that starts the demo server as a daemon (setsid + pidfile),
    /// with `workers` worker processes, and counts its runs in `<name>.runs`.
    pub fn demo_script(&self, name: &str, port: u16, workers: u32) -> (PathBuf, PathBuf) {
        self.demo_script_with(name, port, &format!("--workers {workers}"))
    }
    /// The demo server's start script and pidfile, with `args` (e.g. `--backlog 1`);
    /// each start is counted (see [`Sandbox::runs`]).
    pub fn demo_script_with(&self, name: &str, port: u16, args: &str) -> (PathBuf, PathBuf) {
        let pidfile = self.file(&format!("{name}.pid"));
        let runs = self.file(&format!("{name}.runs"));
        let script = self.script(
            &format!("{name}.rc"),
            &format!(
                "echo run >> {runs}\nexec {DEMO} --port {port} {args} --pidfile {pid} --daemon",
                runs = runs.display(),
                pid = pidfile.display()
            ),
        );
        (script, pidfile)
    }
    pub fn pfile(&self, text: &str) -> PathBuf {
        let p = self.file("pfile");
        std::fs::write(&p, text).expect("write pfile");
        p
    }
    pub fn runs(&self, name: &str) -> usize {
        std::fs::read_to_string(self.file(&format!("{name}.runs")))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let needle = self.dir.path().to_string_lossy().into_owned();
        for pid in pids_with_cmdline(&needle) {
            // SAFETY: plain kill.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

/// Live pids whose command line contains `needle`.
pub fn pids_with_cmdline(needle: &str) -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|p| *p != me)
        .filter(|p| {
            std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .filter(|p| alive(*p))
        .collect()
}

/// Live processes of the demo server started by this sandbox's scripts.
pub fn demo_pids(sb: &Sandbox) -> Vec<i32> {
    pids_with_cmdline(&sb.path().to_string_lossy())
        .into_iter()
        .filter(|p| {
            std::fs::read_link(format!("/proc/{p}/exe"))
                .is_ok_and(|e| e == std::path::Path::new(DEMO))
        })
        .collect()
}

/// Alive and not a zombie.
pub fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rfind(')').and_then(|i| s[i + 2..].chars().next()))
        .is_some_and(|st| st != 'Z' && st != 'X')
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Does a HEAD on the port get an HTTP status line?
pub fn http_ok(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(
        &format!("127.0.0.1:{port}").parse().expect("addr"),
        Duration::from_secs(2),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"HEAD / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.") && buf.split_whitespace().nth(1) == Some("200")
}

/// A running pcheck with its log lines (stderr) readable as they come.
pub struct Pcheck {
    pub child: Child,
    lines: Receiver<String>,
    pub seen: Vec<String>,
    pub pfile: PathBuf,
    run_dir: PathBuf,
}

impl Pcheck {
    pub fn start(sb: &Sandbox, pfile: &Path, extra: &[&str]) -> Self {
        Self::start_as(sb, pfile, extra, None)
    }

    /// `start`, with pcheck running as `uid` (and gid) when given.
    pub fn start_as(sb: &Sandbox, pfile: &Path, extra: &[&str], uid: Option<u32>) -> Self {
        use std::os::unix::process::CommandExt;
        let mut cmd = Command::new(PCHECK);
        if let Some(u) = uid {
            cmd.uid(u).gid(u);
        }
        let mut child = cmd
            .arg("-f")
            .arg(pfile)
            .args(["--syslog", "none"])
            .args(extra)
            .env("PSWEB_RUN_DIR", sb.run_dir())
            .env("PSWEB_STATE_DIR", sb.file("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn pcheck");
        let err = child.stderr.take().expect("stderr");
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("[pcheck] {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            lines: rx,
            seen: Vec::new(),
            pfile: pfile.to_path_buf(),
            run_dir: sb.run_dir(),
        }
    }

    /// Waits for a log line containing `needle`; returns it. Panics after `timeout`
    /// with everything seen so far.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no log line with {needle:?} within {timeout:?}; seen:\n{}",
                    self.seen.join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "pcheck ended before logging {needle:?}; seen:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Moves every line logged so far into `seen`.
    pub fn drain(&mut self) {
        while let Ok(l) = self.lines.try_recv() {
            self.seen.push(l);
        }
    }

    /// Like `wait_for`, but a line already seen counts too.
    pub fn seen_or_wait(&mut self, needle: &str, timeout: Duration) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        self.wait_for(needle, timeout)
    }

    /// Waits for pcheck to exit; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                return st.code();
            }
            if Instant::now() >= deadline {
                panic!(
                    "pcheck did not exit within {timeout:?}; seen:\n{}",
                    self.seen.join("\n")
                );
            }
            // Drain the log meanwhile so the pipe never fills.
            if let Ok(l) = self.lines.recv_timeout(Duration::from_millis(20)) {
                self.seen.push(l);
            }
        }
    }

    pub fn padmin(&self, args: &[&str]) -> Output {
        padmin_as(&self.run_dir, &self.pfile, args, None)
    }

    /// `show pent --json`, parsed.
    pub fn show(&self) -> serde_json::Value {
        let out = self.padmin(&["-c", "show pent", "--json"]);
        assert!(
            out.status.success(),
            "padmin failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("padmin --json prints JSON")
    }

    pub fn entry(&self, pent_id: u64) -> serde_json::Value {
        let v = self.show();
        v["entries"]
            .as_array()
            .and_then(|a| a.iter().find(|e| e["pent_id"] == pent_id).cloned())
            .unwrap_or_else(|| panic!("no entry {pent_id} in {v}"))
    }
}

impl Drop for Pcheck {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn padmin_as(run_dir: &Path, pfile: &Path, args: &[&str], uid: Option<u32>) -> Output {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new(PADMIN);
    c.arg("-f")
        .arg(pfile)
        .args(args)
        .env("PSWEB_RUN_DIR", run_dir);
    if let Some(u) = uid {
        c.uid(u).gid(u);
    }
    c.output().expect("run padmin")
}

pub fn pid_of(entry: &serde_json::Value) -> i32 {
    entry["pid"]
        .as_i64()
        .and_then(|p| i32::try_from(p).ok())
        .unwrap_or_else(|| panic!("entry has no pid: {entry}"))
}

pub fn kill(pid: i32, sig: i32) {
    // SAFETY: plain kill.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill({pid}, {sig})");
}

pub const T: Duration = Duration::from_secs(20);

pub const APACHE: &str = "/usr/sbin/apache2";

/// True when Debian's apache2 is installed; otherwise prints why the test is skipped.
pub fn apache_or_skip(test: &str) -> bool {
    if Path::new(APACHE).exists() && Path::new("/usr/lib/apache2/modules/mod_mpm_event.so").exists()
    {
        return true;
    }
    skip(
        test,
        "Debian's apache2 is not installed (cargo xtask test installs it)",
    );
    false
}

/// A real Apache httpd instance of the sandbox: its own config, port, pidfile and
/// logs. `tls`: (certificate PEM, key PEM) to serve HTTPS. Returns (restart script,
/// pidfile).
pub fn apache_instance(
    sb: &Sandbox,
    port: u16,
    tls: Option<(&str, &str)>,
    backlog: u32,
) -> (PathBuf, PathBuf) {
    let d = sb.path().display().to_string();
    std::fs::create_dir_all(sb.file("htdocs")).expect("htdocs");
    std::fs::write(sb.file("htdocs/index.html"), "psweb test page\n").expect("index");
    let m = "/usr/lib/apache2/modules";
    let mut conf = format!(
        "ServerRoot \"{d}\"\nServerName localhost\nListen 127.0.0.1:{port}\nPidFile {d}/httpd.pid\n\
         ErrorLog {d}/error.log\nDefaultRuntimeDir {d}\nMutex file:{d} default\n\
         LoadModule mpm_event_module {m}/mod_mpm_event.so\nLoadModule authz_core_module {m}/mod_authz_core.so\n\
         LoadModule dir_module {m}/mod_dir.so\nDirectoryIndex index.html\n\
         User nobody\nGroup nogroup\nDocumentRoot {d}/htdocs\n<Directory />\n  Require all granted\n</Directory>\n\
         StartServers 2\nServerLimit 2\nThreadsPerChild 8\nMaxRequestWorkers 16\nMinSpareThreads 8\nMaxSpareThreads 16\n\
         ListenBacklog {backlog}\n"
    );
    if let Some((cert, key)) = tls {
        std::fs::write(sb.file("cert.pem"), cert).expect("cert");
        std::fs::write(sb.file("key.pem"), key).expect("key");
        conf.push_str(&format!(
            "LoadModule socache_shmcb_module {m}/mod_socache_shmcb.so\nLoadModule ssl_module {m}/mod_ssl.so\n\
             SSLEngine on\nSSLCertificateFile {d}/cert.pem\nSSLCertificateKeyFile {d}/key.pem\n"
        ));
    }
    std::fs::write(sb.file("httpd.conf"), conf).expect("httpd.conf");
    let script = sb.script(
        "httpd.rc",
        &format!("echo run >> {d}/httpd.runs\nexec {APACHE} -f {d}/httpd.conf -k start"),
    );
    (script, sb.file("httpd.pid"))
}

/// The seed's stall block for `kind` (_bi_webserv, _bi_webservs, _bi_socket) with
/// the given EXEC fields and ACTION error, plus psweb `key = value` lines.
pub fn stall_block(block: &str, exec: &str, action_error: u8, extra: &str) -> String {
    let lib = format!("/opt/HA/PSWE/lib/lib{block}.so");
    format!(
        "{block} {{\n    PS_INIT    DLL:{lib}:DIRECT:-:::0\n    PS_EXEC    DLL:{lib}:DIRECT:-:{exec}\n    \
         PS_ACTION  DLL:{lib}:DIRECT:-:-:{action_error}:0\n    PS_QUIT    DLL:{lib}:DIRECT:-:::0\n{extra}}}\n"
    )
}

/// The tag `show pent` and the probe lines give a stall block.
pub fn stall_tag(block: &str) -> &'static str {
    match block {
        "_bi_webservs" => "ssl",
        "_bi_socket" => "skt",
        _ => "web",
    }
}

/// pcheck watching one server with one stall block (`exec` as in `PS_EXEC`, ACTION
/// error 1), once the first probe of the started server has run.
pub fn watch_stall(
    sb: &Sandbox,
    (pname, script, pidfile): (&str, &std::path::Path, &std::path::Path),
    block: &str,
    exec: &str,
    extra: &str,
) -> Pcheck {
    let pfile = entry_pfile(
        sb,
        pname,
        script,
        pidfile,
        &stall_block(block, exec, 1, extra),
    );
    let mut pc = Pcheck::start(sb, &pfile, &[]);
    pc.wait_for(
        &format!("stall_chk ({}) of pent_id= 1", stall_tag(block)),
        T,
    );
    pc
}

/// Live pids running `exe` whose command line mentions this sandbox.
pub fn sandbox_pids_of(sb: &Sandbox, exe: &str) -> Vec<i32> {
    pids_with_cmdline(&sb.path().to_string_lossy())
        .into_iter()
        .filter(|p| std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|e| e == Path::new(exe)))
        .collect()
}

/// HEAD over TLS without verification (for the tests' self-signed servers): true when
/// an HTTP status line comes back.
pub fn https_ok(port: u16) -> bool {
    Command::new("openssl")
        .args([
            "s_client",
            "-quiet",
            "-connect",
            &format!("127.0.0.1:{port}"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .and_then(|mut c| {
            if let Some(mut i) = c.stdin.take() {
                let _ = i.write_all(b"HEAD / HTTP/1.0\r\n\r\n");
            }
            c.wait_with_output()
        })
        .map(|o| String::from_utf8_lossy(&o.stdout).starts_with("HTTP/1."))
        .unwrap_or(false)
}

/// One row of the fault matrix (issue 5), printed for `cargo xtask faults`:
/// `FAULT|<n>|<fault>|<expected>|<seen>|<time to recover>`.
pub fn fault_row(n: u32, fault: &str, expected: &str, seen: &str, recover: Option<Duration>) {
    let t = recover.map_or_else(|| "-".to_string(), |d| format!("{} ms", d.as_millis()));
    println!("FAULT|{n}|{fault}|{expected}|{seen}|{t}");
}

/// The pid in a log line's `pid= N`.
pub fn pid_in(line: &str) -> i32 {
    line.split("pid= ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"))
}

/// pcheck's open fds and resident memory (kB).
pub fn fds_and_rss(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0);
    let rss = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0);
    (fds, rss)
}

/// Debian's prometheus package installs promtool here.
pub const PROMTOOL: &str = "/usr/bin/promtool";

/// True when Debian's prometheus package (for promtool) is installed; otherwise prints
/// why the test is skipped.
pub fn promtool_or_skip(test: &str) -> bool {
    if Path::new(PROMTOOL).exists() {
        return true;
    }
    println!("SKIPPED {test}: Debian's prometheus (promtool) is not installed (cargo xtask test installs it)");
    false
}

pub const NGINX: &str = "/usr/sbin/nginx";

/// True when Debian's nginx is installed; otherwise prints why the test is skipped.
pub fn nginx_or_skip(test: &str) -> bool {
    if Path::new(NGINX).exists() {
        return true;
    }
    skip(
        test,
        "Debian's nginx is not installed (cargo xtask test installs it)",
    );
    false
}

/// A private nginx instance of the sandbox (its own config, prefix, pidfile, port).
/// Returns (restart script, pidfile).
pub fn nginx_instance(sb: &Sandbox, port: u16) -> (PathBuf, PathBuf) {
    let d = sb.path().display().to_string();
    std::fs::create_dir_all(sb.file("nginx-tmp")).expect("tmp dir");
    let conf = format!(
        "daemon on;\npid {d}/nginx.pid;\nerror_log {d}/nginx-error.log;\nworker_processes 2;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d}/nginx-tmp/body;\n  proxy_temp_path {d}/nginx-tmp/proxy;\n\
           fastcgi_temp_path {d}/nginx-tmp/fastcgi;\n  uwsgi_temp_path {d}/nginx-tmp/uwsgi;\n  scgi_temp_path {d}/nginx-tmp/scgi;\n\
           server {{ listen 127.0.0.1:{port}; location / {{ return 200 \"psweb test\\n\"; }} }}\n}}\n"
    );
    std::fs::write(sb.file("nginx.conf"), conf).expect("nginx.conf");
    let script = sb.script(
        "nginx.rc",
        &format!("echo run >> {d}/nginx.runs\nexec {NGINX} -p {d}/ -c {d}/nginx.conf"),
    );
    (script, sb.file("nginx.pid"))
}

/// Waits until `pid` is gone or a zombie (a SIGKILLed process still needs the CPU to
/// die, which on a loaded machine takes a moment). True if it died within `timeout`.
pub fn dead_within(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while alive(pid) {
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    true
}

/// A pfile with one entry — `pname`, its restart script, retry count 3, its pidfile —
/// followed by `block` (a stall block from [`stall_block`], or nothing).
pub fn entry_pfile(
    sb: &Sandbox,
    pname: &str,
    script: &Path,
    pidfile: &Path,
    block: &str,
) -> PathBuf {
    sb.pfile(&format!(
        "{pname} {} 3 pidfile={}\n{block}",
        script.display(),
        pidfile.display()
    ))
}

/// Writes a bench's figures to `target/bench/{name}.json` and says where (or why not).
pub fn write_bench_json(name: &str, json: &serde_json::Value) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    let out = dir.join(format!("{name}.json"));
    let written = std::fs::create_dir_all(&dir).and_then(|()| {
        std::fs::write(&out, serde_json::to_string_pretty(json).unwrap_or_default())
    });
    match written {
        Ok(()) => println!("\nwrote {}", out.display()),
        Err(e) => println!("\ncannot write {}: {e}", out.display()),
    }
}

/// utime + stime of a process, in clock ticks (USER_HZ = 100), from /proc/PID/stat.
pub fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest: Vec<&str> = s
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let f = |i: usize| rest.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    f(11) + f(12) // fields 14 and 15
}

pub const HAPROXY: &str = "/usr/sbin/haproxy";

/// True when Debian's haproxy is installed; otherwise records why the test is skipped.
pub fn haproxy_or_skip(test: &str) -> bool {
    if Path::new(HAPROXY).exists() {
        return true;
    }
    skip(
        test,
        "Debian's haproxy is not installed (cargo xtask test installs it)",
    );
    false
}

/// True once every thread of `pid` is stopped (SIGSTOP is delivered asynchronously: a
/// thread running on another CPU may still accept a connection after kill()
/// returned), or the process is gone.
pub fn all_threads_stopped(pid: i32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.flatten().all(|t| {
                std::fs::read_to_string(t.path().join("stat"))
                    .ok()
                    .and_then(|text| psweb::procfs::parse_stat(&text))
                    .is_none_or(|st| st.state == 'T')
            })
        })
        .unwrap_or(true)
}

/// SIGSTOPs every process of the sandbox running `exe` (at least `min` of them, once
/// started) and waits until all are stopped; one forked meanwhile is stopped too.
/// Returns their pids.
pub fn stop_all(sb: &Sandbox, exe: &str, min: usize) -> Vec<i32> {
    let deadline = Instant::now() + T;
    while sandbox_pids_of(sb, exe).len() < min {
        assert!(
            Instant::now() < deadline,
            "fewer than {min} {exe} processes"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    loop {
        let pids = sandbox_pids_of(sb, exe);
        for p in &pids {
            // SAFETY: plain kill.
            unsafe { libc::kill(*p, libc::SIGSTOP) };
        }
        while !pids.iter().all(|p| all_threads_stopped(*p)) {
            assert!(Instant::now() < deadline, "{pids:?} never all stopped");
            std::thread::sleep(Duration::from_millis(1));
        }
        if sandbox_pids_of(sb, exe).iter().all(|p| pids.contains(p)) {
            return pids;
        }
    }
}

/// CLOCK_MONOTONIC now, in ns: the clock of the events' `mono_ns`.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes only into ts.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A webhook receiver: every POST's body, with CLOCK_MONOTONIC at its arrival.
pub fn webhook_receiver() -> (u16, Receiver<(u64, serde_json::Value)>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(s) = s else { continue };
            let mut r = BufReader::new(s);
            let mut len = 0usize;
            let mut line = String::new();
            loop {
                line.clear();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; len];
            if r.read_exact(&mut body).is_err() {
                continue;
            }
            let at = mono_ns();
            let _ = r
                .get_mut()
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
            if let Ok(v) = serde_json::from_slice(&body) {
                if tx.send((at, v)).is_err() {
                    return;
                }
            }
        }
    });
    (port, rx)
}

/// Accepts connections and never answers (holds them open).
pub fn hanging_receiver() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        let mut held: Vec<TcpStream> = Vec::new();
        for s in l.incoming().flatten() {
            held.push(s);
        }
    });
    port
}
