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
