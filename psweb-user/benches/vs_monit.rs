//! `cargo xtask bench --vs monit`: psweb side by side with Debian's monit, on the same
//! real Apache httpd instance, the same faults injected the same way, in one run.
//!
//! For each fault (kill -9 of the master; SIGSTOP of every httpd process; the accept
//! queue saturated: the workers stopped while the master runs, and 64 clients that keep
//! trying every 250 ms on top of the steady one) and each agent
//! configuration (psweb with the seed's shortest stall timing, psweb with kernel
//! evidence, monit at `set daemon 30`, monit at `set daemon 1`) it measures the time
//! to detection (the agent's first log line that shows it noticed), the time until
//! HEAD answers again, the failed requests of a steady loopback client, and the
//! agent's CPU and RSS. Then pcheck's RSS and idle CPU watching 100 servers, next to
//! monit's on the same servers. Prints one table and writes target/bench/vs_monit.json
//! (and each cell's agent log under target/bench/vs_monit/).
//!
//! Needs root, Debian's apache2 (installed by `cargo xtask bench`) and monit (installed
//! here with apt-get if missing; never started as a system service).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

#[path = "../../tests/common/mod.rs"]
mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const MONIT: &str = "/usr/bin/monit";
/// How long after the injection a run may take before it is called "not recovered".
const CAP: Duration = Duration::from_secs(60);
/// Apache's ListenBacklog in every run (small, so that the burst saturates it).
const BACKLOG: u32 = 16;
/// The steady client: one HEAD every 50 ms, each with a 1 s budget.
const CLIENT_PERIOD: Duration = Duration::from_millis(50);
const CLIENT_TIMEOUT: Duration = Duration::from_secs(1);
/// The recovery poller: one HEAD every 20 ms, each with a 500 ms budget.
const POLL_PERIOD: Duration = Duration::from_millis(20);
const POLL_TIMEOUT: Duration = Duration::from_millis(500);
/// Clients of the accept-queue burst (each retrying every 250 ms).
const BURST: usize = 64;
/// monit pauses its connection tests while the process is younger than this.
const MONIT_START_GRACE: Duration = Duration::from_secs(31);
/// Entries of the footprint run, and how long it idles.
const ENTRIES: usize = 100;
const IDLE: Duration = Duration::from_secs(60);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    Kill9,
    StopAll,
    Saturate,
}

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::Kill9 => "kill -9 master",
            Fault::StopAll => "SIGSTOP all httpd",
            Fault::Saturate => "accept queue saturated",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Fault::Kill9 => "kill9",
            Fault::StopAll => "sigstop",
            Fault::Saturate => "saturated",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Config {
    PswebDefault,
    PswebKernel,
    Monit30,
    Monit1,
}

impl Config {
    fn name(self) -> &'static str {
        match self {
            Config::PswebDefault => "psweb (_bi_webserv 10/10)",
            Config::PswebKernel => "psweb (+ evidence = kernel)",
            Config::Monit30 => "monit (set daemon 30)",
            Config::Monit1 => "monit (set daemon 1)",
        }
    }
    fn key(self) -> &'static str {
        match self {
            Config::PswebDefault => "psweb_default",
            Config::PswebKernel => "psweb_kernel",
            Config::Monit30 => "monit_30s",
            Config::Monit1 => "monit_1s",
        }
    }
    fn is_monit(self) -> bool {
        matches!(self, Config::Monit30 | Config::Monit1)
    }
}

// ---------------------------------------------------------------- agents

/// A running agent (pcheck or monit) whose output lines arrive timestamped.
struct Agent {
    child: Child,
    started: Instant,
    rx: Receiver<(Instant, String)>,
    lines: Vec<(Instant, String)>,
}

impl Agent {
    fn spawn(mut cmd: Command, what: &str) -> Self {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {what}: {e}"));
        let started = Instant::now();
        let (tx, rx) = channel();
        let out = child.stdout.take().expect("agent stdout");
        let err = child.stderr.take().expect("agent stderr");
        let tx2 = tx.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), l)).is_err() {
                    break;
                }
            }
        });
        std::thread::spawn(move || {
            for l in BufReader::new(err).lines().map_while(Result::ok) {
                if tx2.send((Instant::now(), l)).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            started,
            rx,
            lines: Vec::new(),
        }
    }
    fn pid(&self) -> u32 {
        self.child.id()
    }
    fn drain(&mut self) {
        while let Ok(l) = self.rx.try_recv() {
            self.lines.push(l);
        }
    }
    /// Waits for a line containing `needle`; its arrival time.
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> Option<Instant> {
        let deadline = Instant::now() + timeout;
        if let Some((t, _)) = self.lines.iter().find(|(_, l)| l.contains(needle)) {
            return Some(*t);
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok((t, l)) => {
                    let hit = l.contains(needle);
                    self.lines.push((t, l));
                    if hit {
                        return Some(t);
                    }
                }
                Err(_) => return None,
            }
        }
    }
    /// The first line at or after `t0` that `noticed` accepts.
    fn first_after(
        &self,
        t0: Instant,
        noticed: impl Fn(&str) -> bool,
    ) -> Option<(Instant, String)> {
        self.lines
            .iter()
            .find(|(t, l)| *t >= t0 && noticed(l))
            .cloned()
    }
    fn save_log(&self, path: &Path, t_inject: Instant) {
        let mut s = String::new();
        for (t, l) in &self.lines {
            let ms = if *t >= t_inject {
                (*t - t_inject).as_secs_f64() * 1e3
            } else {
                -((t_inject - *t).as_secs_f64() * 1e3)
            };
            s.push_str(&format!("{ms:>10.1} ms  {l}\n"));
        }
        if let Err(e) = std::fs::write(path, s) {
            eprintln!("cannot write {}: {e}", path.display());
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_pcheck(sb: &Sandbox, pfile: &Path) -> Agent {
    let mut c = Command::new(PCHECK);
    c.arg("-f")
        .arg(pfile)
        .args(["--syslog", "none"])
        .env("PSWEB_RUN_DIR", sb.run_dir())
        .env("PSWEB_STATE_DIR", sb.file("state"));
    Agent::spawn(c, "pcheck")
}

/// monit in the foreground on a control file of this sandbox, logging to its stdout.
/// No `set httpd`: monit's own web interface stays off.
fn start_monit(sb: &Sandbox, name: &str, cycle: u32, checks: &str) -> Agent {
    let d = sb.path().display();
    let rc = sb.file(&format!("{name}.monitrc"));
    let text = format!(
        "set daemon {cycle}\nset logfile /dev/stdout\nset pidfile {d}/{name}.pid\n\
         set idfile {d}/{name}.id\nset statefile {d}/{name}.state\n{checks}"
    );
    std::fs::write(&rc, text).expect("write monitrc");
    // monit refuses a control file readable by others.
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o600)).expect("chmod monitrc");
    let mut c = Command::new(MONIT);
    c.arg("-c").arg(&rc).arg("-I");
    Agent::spawn(c, "monit")
}

fn rss_kb(pid: u32) -> u64 {
    fds_and_rss(pid).1
}

// ---------------------------------------------------------------- clients

/// HEAD / with a budget for each step; true on a 200 status line.
fn head(port: u16, timeout: Duration) -> bool {
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, timeout) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(timeout));
    let _ = s.set_write_timeout(Some(timeout));
    if s.write_all(b"HEAD / HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.") && buf.split_whitespace().nth(1) == Some("200")
}

#[derive(Clone, Copy)]
struct Poll {
    start: Instant,
    end: Instant,
    ok: bool,
}

/// Something running in the background until `stop` is set.
struct Background {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Background {
    fn finish(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The steady client: a HEAD every CLIENT_PERIOD, each on its own thread so that a
/// hanging request does not hold back the next one.
fn steady_client(port: u16, out: Arc<Mutex<Vec<Poll>>>) -> Background {
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let handle = std::thread::spawn(move || {
        let t0 = Instant::now();
        let mut n = 0u32;
        let mut reqs = Vec::new();
        while !st.load(Ordering::SeqCst) {
            let due = t0 + CLIENT_PERIOD * n;
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
            n += 1;
            let out = out.clone();
            reqs.push(std::thread::spawn(move || {
                let start = Instant::now();
                let ok = head(port, CLIENT_TIMEOUT);
                let end = Instant::now();
                if let Ok(mut v) = out.lock() {
                    v.push(Poll { start, end, ok });
                }
            }));
            reqs.retain(|h| !h.is_finished());
        }
        for h in reqs {
            let _ = h.join();
        }
    });
    Background {
        stop,
        handle: Some(handle),
    }
}

/// The recovery poller: one HEAD after the other, POLL_PERIOD apart.
fn poller(port: u16, out: Arc<Mutex<Vec<Poll>>>) -> Background {
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let handle = std::thread::spawn(move || {
        while !st.load(Ordering::SeqCst) {
            let start = Instant::now();
            let ok = head(port, POLL_TIMEOUT);
            let end = Instant::now();
            if let Ok(mut v) = out.lock() {
                v.push(Poll { start, end, ok });
            }
            std::thread::sleep(POLL_PERIOD);
        }
    });
    Background {
        stop,
        handle: Some(handle),
    }
}

/// BURST clients that keep coming: each sends a HEAD with a 1 s budget, gives up,
/// pauses 250 ms and tries again, until stopped. They fill the accept queue of a server
/// that accepts nothing, and are served normally by a working one.
fn burst(port: u16) -> Background {
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let handle = std::thread::spawn(move || {
        let hs: Vec<_> = (0..BURST)
            .map(|_| {
                let st = st.clone();
                std::thread::spawn(move || {
                    while !st.load(Ordering::SeqCst) {
                        let _ = head(port, Duration::from_secs(1));
                        std::thread::sleep(Duration::from_millis(250));
                    }
                })
            })
            .collect();
        for h in hs {
            let _ = h.join();
        }
    });
    Background {
        stop,
        handle: Some(handle),
    }
}

// ---------------------------------------------------------------- one run

struct Cell {
    fault: Fault,
    config: Config,
    detect_ms: Option<f64>,
    detect_line: Option<String>,
    /// None: not answering at the end of the run.
    head_ms: Option<f64>,
    head_never_failed: bool,
    /// kill -9 only: a live httpd master named by the pidfile again.
    master_ms: Option<f64>,
    client_failed: usize,
    client_issued: usize,
    cpu_ms: u64,
    agent_life_s: f64,
    rss_peak_kb: u64,
    run_s: f64,
}

fn read_pid(pidfile: &Path) -> Option<i32> {
    std::fs::read_to_string(pidfile).ok()?.trim().parse().ok()
}

fn is_master(pid: i32) -> bool {
    alive(pid)
        && std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == Path::new(APACHE))
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn monit_noticed(l: &str) -> bool {
    l.contains("'httpd'")
        && (l.contains(" error ")
            || l.contains("failed")
            || l.contains("zombie")
            || l.contains("not running")
            || l.contains("trying to restart"))
}

fn psweb_noticed(l: &str) -> bool {
    l.contains("Process Down") || l.contains("Find Web Server Stall")
}

fn run_cell(fault: Fault, config: Config, logs: &Path) -> Cell {
    eprintln!("== {} / {}", fault.name(), config.name());
    let sb = Sandbox::new();
    let port = free_port();
    let (script, pidfile) = apache_instance(&sb, port, None, BACKLOG);
    let d = sb.path().display().to_string();
    let stop_script = sb.script(
        "httpd-stop.rc",
        &format!("exec {APACHE} -f {d}/httpd.conf -k stop"),
    );
    // The same httpd instance, started the same way, for every agent.
    assert!(
        Command::new(&script)
            .status()
            .expect("run the httpd start script")
            .success(),
        "httpd did not start; see {d}/error.log"
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(http_ok(port) && read_pid(&pidfile).is_some()) {
        assert!(Instant::now() < deadline, "httpd does not answer on {port}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let t_httpd = Instant::now();

    let monit_check = format!(
        "check process httpd with pidfile {pid}\n  start program = \"{start}\"\n  \
         stop program = \"{stop}\"\n  if failed port {port} protocol http then restart\n",
        pid = pidfile.display(),
        start = script.display(),
        stop = stop_script.display()
    );
    // Each fault is injected half a cycle after the agent's last look at the server,
    // so that a polling agent shows its expected (mean) delay; and, for monit, once
    // httpd is older than monit's start grace (it skips port tests until then).
    let (mut agent, t_inject) = match config {
        Config::Monit30 => {
            // monit checks at start, then every 30 s: started at +16 s, it looks at
            // +16 and +46; the fault comes at +31.
            sleep_until(t_httpd + MONIT_START_GRACE - Duration::from_secs(15));
            let a = start_monit(&sb, "monit", 30, &monit_check);
            (a, t_httpd + MONIT_START_GRACE)
        }
        Config::Monit1 => {
            std::thread::sleep(Duration::from_secs(1));
            let a = start_monit(&sb, "monit", 1, &monit_check);
            (a, t_httpd + MONIT_START_GRACE)
        }
        Config::PswebDefault | Config::PswebKernel => {
            let extra = if config == Config::PswebKernel {
                "    evidence = kernel\n"
            } else {
                ""
            };
            let pfile = entry_pfile(
                &sb,
                APACHE,
                &script,
                &pidfile,
                &stall_block("_bi_webserv", &format!("10:0:2:10:{port}"), 1, extra),
            );
            let mut a = start_pcheck(&sb, &pfile);
            let first = a
                .wait_for("stall_chk (web) of pent_id= 1", Duration::from_secs(30))
                .expect("pcheck adopts httpd and its first probe answers");
            // The probe interval is 10 s: the fault comes 5 s after the first probe.
            (a, first + Duration::from_secs(5))
        }
    };

    let client_log = Arc::new(Mutex::new(Vec::new()));
    let poll_log = Arc::new(Mutex::new(Vec::new()));
    sleep_until(t_inject - Duration::from_secs(1));
    let mut client = steady_client(port, client_log.clone());
    sleep_until(t_inject);

    // ---- the fault
    let master = read_pid(&pidfile).expect("httpd pidfile");
    let mut held = None;
    let t_inject = Instant::now();
    match fault {
        Fault::Kill9 => kill(master, libc::SIGKILL),
        Fault::StopAll => {
            for p in sandbox_pids_of(&sb, APACHE) {
                kill(p, libc::SIGSTOP);
            }
        }
        Fault::Saturate => {
            for p in sandbox_pids_of(&sb, APACHE) {
                if p != master {
                    kill(p, libc::SIGSTOP);
                }
            }
            held = Some(burst(port));
        }
    }
    let mut polls = poller(port, poll_log.clone());

    // ---- watch until recovered and steady for 2 s, or CAP
    let mut detect = None;
    let mut master_at = None;
    let mut rss_peak = rss_kb(agent.pid());
    let mut last_rss = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let now = Instant::now();
        agent.drain();
        if detect.is_none() {
            detect = if config.is_monit() {
                agent.first_after(t_inject, monit_noticed)
            } else {
                agent.first_after(t_inject, psweb_noticed)
            };
        }
        if fault == Fault::Kill9 && master_at.is_none() {
            if let Some(p) = read_pid(&pidfile) {
                if p != master && is_master(p) {
                    master_at = Some(now);
                }
            }
        }
        if now - last_rss >= Duration::from_millis(100) {
            rss_peak = rss_peak.max(rss_kb(agent.pid()));
            last_rss = now;
        }
        if now - t_inject >= CAP {
            break;
        }
        let (steady, had_failure) = match poll_log.lock() {
            Ok(v) => {
                let last_fail = v.iter().rev().find(|p| !p.ok).map(|p| p.end);
                let since = last_fail.unwrap_or(t_inject);
                (
                    v.last().is_some_and(|p| p.ok) && now - since >= Duration::from_secs(2),
                    last_fail.is_some(),
                )
            }
            Err(_) => (false, false),
        };
        let done = detect.is_some()
            && steady
            && match fault {
                Fault::Kill9 => master_at.is_some(),
                _ => had_failure,
            };
        if done {
            break;
        }
    }
    let t_end = Instant::now();
    let cpu = cpu_ticks(agent.pid());
    rss_peak = rss_peak.max(rss_kb(agent.pid()));
    let life = t_end - agent.started;
    polls.finish();
    client.finish();
    if let Some(h) = held.as_mut() {
        h.finish();
    }
    agent.drain();
    agent.save_log(
        &logs.join(format!("{}-{}.log", fault.key(), config.key())),
        t_inject,
    );

    let pv = poll_log.lock().map(|v| v.clone()).unwrap_or_default();
    let after: Vec<Poll> = pv.into_iter().filter(|p| p.start >= t_inject).collect();
    let last_fail = after.iter().rposition(|p| !p.ok);
    let (head_ms, never_failed) = match last_fail {
        None => (Some(0.0), true),
        Some(i) => (after.get(i + 1).map(|p| ms(p.end - t_inject)), false),
    };
    let cv = client_log.lock().map(|v| v.clone()).unwrap_or_default();
    let issued: Vec<&Poll> = cv.iter().filter(|p| p.start >= t_inject).collect();
    let cell = Cell {
        fault,
        config,
        detect_ms: detect.as_ref().map(|(t, _)| ms(*t - t_inject)),
        detect_line: detect.map(|(_, l)| l),
        head_ms,
        head_never_failed: never_failed,
        master_ms: master_at.map(|t| ms(t - t_inject)),
        client_failed: issued.iter().filter(|p| !p.ok).count(),
        client_issued: issued.len(),
        cpu_ms: cpu * 10,
        agent_life_s: life.as_secs_f64(),
        rss_peak_kb: rss_peak,
        run_s: (t_end - t_inject).as_secs_f64(),
    };
    eprintln!(
        "   detect {:?} ms, HEAD again {:?} ms, failed {}/{}, cpu {} ms over {:.0} s, rss {} kB",
        cell.detect_ms.map(|v| v.round()),
        cell.head_ms.map(|v| v.round()),
        cell.client_failed,
        cell.client_issued,
        cell.cpu_ms,
        cell.agent_life_s,
        cell.rss_peak_kb
    );
    drop(agent);
    // Let the sandbox's teardown kill what is left (stopped httpd, hanging scripts).
    drop(sb);
    cell
}

// ---------------------------------------------------------------- 100 entries

struct Footprint {
    agent: String,
    key: String,
    entries: usize,
    rss_kb: u64,
    idle_cpu_ms: u64,
    idle_s: f64,
    events: usize,
}

fn footprint(logs: &Path) -> Vec<Footprint> {
    eprintln!("== footprint: {ENTRIES} demo servers");
    let sb = Sandbox::new();
    let mut pfile = String::new();
    let mut pfile_k = String::new();
    let mut checks = Vec::new();
    let mut ports = std::collections::HashSet::new();
    for i in 0..ENTRIES {
        let mut port = free_port();
        while !ports.insert(port) {
            port = free_port();
        }
        let (script, pidfile) = sb.demo_script(&format!("w{i}"), port, 0);
        let entry = format!(
            "{DEMO} {} 3 pidfile={}\n",
            script.display(),
            pidfile.display()
        );
        pfile.push_str(&entry);
        pfile.push_str(&stall_block(
            "_bi_webserv",
            &format!("10:0:2:10:{port}"),
            1,
            "",
        ));
        pfile_k.push_str(&entry);
        pfile_k.push_str(&stall_block(
            "_bi_webserv",
            &format!("10:0:2:10:{port}"),
            1,
            "    evidence = kernel\n",
        ));
        checks.push(format!(
            "check process w{i} with pidfile {pid}\n  start program = \"{s}\"\n  \
             stop program = \"/bin/sh -c 'kill $(cat {pid})'\"\n  \
             if failed port {port} protocol http then restart\n",
            pid = pidfile.display(),
            s = script.display()
        ));
    }
    let pf = sb.pfile(&pfile);
    let pf_k = sb.file("pfile-kernel");
    std::fs::write(&pf_k, &pfile_k).expect("write pfile-kernel");

    // pcheck starts the 100 servers; wait until every stall check has answered.
    let t_start = Instant::now();
    let mut pc = start_pcheck(&sb, &pf);
    // The pent_ids whose process runs and whose stall check has answered.
    let avail = |pfile: &Path| -> Vec<u64> {
        let out = padmin_as(&sb.run_dir(), pfile, &["-c", "show pent", "--json"], None);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| {
                v["entries"].as_array().map(|a| {
                    a.iter()
                        .filter(|e| e["stall_chk"][1] == "AVAIL" && e["pid"].is_i64())
                        .filter_map(|e| e["pent_id"].as_u64())
                        .collect()
                })
            })
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut up = Vec::new();
    while Instant::now() < deadline {
        up = avail(&pf);
        if up.len() == ENTRIES {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let n = up.len();
    eprintln!(
        "   {n}/{ENTRIES} entries running and answering after {:.1} s",
        t_start.elapsed().as_secs_f64()
    );
    // monit gets a check for each server that runs (a server that could not start
    // would keep monit busy with start programs and skew its figures).
    let checks: String = checks
        .iter()
        .enumerate()
        .filter(|(i, _)| up.contains(&(*i as u64 + 1)))
        .map(|(_, c)| c.as_str())
        .collect();
    // monit, at both cycles, checks the same servers (all three only look while
    // nothing happens); then a second pcheck with kernel evidence adopts them, alone in
    // a window of its own (its sampling would otherwise share the CPUs with the rest).
    let mut m30 = start_monit(&sb, "monit30", 30, &checks);
    let mut m1 = start_monit(&sb, "monit1", 1, &checks);
    // monit skips port tests of a process younger than 30 s.
    sleep_until(t_start + MONIT_START_GRACE + Duration::from_secs(5));
    let mut out = idle_window(
        vec![
            ("psweb (_bi_webserv 10/10)", "psweb_default", &mut pc),
            ("monit (set daemon 30)", "monit_30s", &mut m30),
            ("monit (set daemon 1)", "monit_1s", &mut m1),
        ],
        n,
        IDLE,
        logs,
    );
    drop(m1);
    drop(m30);
    drop(pc);
    let mut pck = start_pcheck(&sb, &pf_k);
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline && avail(&pf_k).len() < n {
        std::thread::sleep(Duration::from_millis(500));
    }
    out.extend(idle_window(
        vec![("psweb (+ evidence = kernel)", "psweb_kernel", &mut pck)],
        n,
        IDLE,
        logs,
    ));
    drop(pck);
    drop(sb);
    // The table pairs psweb default with monit 30 s, psweb kernel with monit 1 s.
    let order = ["psweb_default", "psweb_kernel", "monit_30s", "monit_1s"];
    out.sort_by_key(|f| order.iter().position(|k| *k == f.key));
    out
}

/// CPU (utime + stime) and peak RSS of each agent over `dur` with nothing happening;
/// `events` counts the log lines that would mean something did happen.
fn idle_window(
    mut agents: Vec<(&str, &str, &mut Agent)>,
    entries: usize,
    dur: Duration,
    logs: &Path,
) -> Vec<Footprint> {
    for (_, _, a) in agents.iter_mut() {
        a.drain();
    }
    let marks: Vec<usize> = agents.iter().map(|(_, _, a)| a.lines.len()).collect();
    let c0: Vec<u64> = agents.iter().map(|(_, _, a)| cpu_ticks(a.pid())).collect();
    let t0 = Instant::now();
    let mut rss: Vec<u64> = agents.iter().map(|(_, _, a)| rss_kb(a.pid())).collect();
    while t0.elapsed() < dur {
        std::thread::sleep(Duration::from_secs(1));
        for (i, (_, _, a)) in agents.iter().enumerate() {
            rss[i] = rss[i].max(rss_kb(a.pid()));
        }
    }
    let idle_s = t0.elapsed().as_secs_f64();
    let mut out = Vec::new();
    for (i, (name, key, a)) in agents.iter_mut().enumerate() {
        let c1 = cpu_ticks(a.pid());
        a.drain();
        a.save_log(&logs.join(format!("footprint-{key}.log")), t0);
        let events = a.lines[marks[i]..]
            .iter()
            .filter(|(_, l)| {
                psweb_noticed(l)
                    || l.contains("stall check")
                    || (l.contains(" error ") && l.contains('\''))
                    || l.contains("trying to restart")
            })
            .count();
        out.push(Footprint {
            agent: (*name).to_string(),
            key: (*key).to_string(),
            entries,
            rss_kb: rss[i],
            idle_cpu_ms: (c1 - c0[i]) * 10,
            idle_s,
            events,
        });
    }
    out
}

// ---------------------------------------------------------------- setup

fn ensure_monit() {
    if Path::new(MONIT).exists() {
        return;
    }
    eprintln!(
        "installing Debian's monit (apt-get install -y monit); it is not started as a service"
    );
    // Keep the package's init script from starting a system-wide monit: a temporary
    // policy-rc.d that denies service starts, unless the host already has one.
    let policy = Path::new("/usr/sbin/policy-rc.d");
    let ours = !policy.exists();
    if ours {
        std::fs::write(
            policy,
            "#!/bin/sh\n# psweb bench: no service starts during apt-get\nexit 101\n",
        )
        .expect("write /usr/sbin/policy-rc.d");
        std::fs::set_permissions(policy, std::fs::Permissions::from_mode(0o755))
            .expect("chmod policy-rc.d");
    }
    let update = Command::new("apt-get").args(["update", "-qq"]).status();
    let install = Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends", "monit"])
        .status();
    if ours {
        let _ = std::fs::remove_file(policy);
    }
    assert!(
        update.is_ok() && install.as_ref().is_ok_and(|s| s.success()),
        "apt-get install monit failed: {install:?}"
    );
    assert!(
        Path::new(MONIT).exists(),
        "monit is not at {MONIT} after install"
    );
}

fn sh_out(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|v| v.trim().to_string())
        })
        .unwrap_or_default();
    serde_json::json!({
        "nproc": sh_out("nproc", &[]),
        "mem": sh_out("free", &["-h"]),
        "kernel": sh_out("uname", &["-r"]),
        "cpu": cpu,
        "loadavg_at_start": std::fs::read_to_string("/proc/loadavg").unwrap_or_default().trim(),
        "monit": sh_out(MONIT, &["-V"]).lines().next().unwrap_or("").to_string(),
        "apache": sh_out(APACHE, &["-v"]).lines().next().unwrap_or("").to_string(),
    })
}

// ---------------------------------------------------------------- report

fn fmt_t(v: Option<f64>, what: &str) -> String {
    match v {
        None => format!("{what} in {} s", CAP.as_secs()),
        Some(x) if x < 1000.0 => format!("{x:.1} ms"),
        Some(x) => format!("{:.2} s", x / 1000.0),
    }
}

/// monit ÷ psweb for a time (above 1: psweb is better).
fn ratio_t(p: Option<f64>, m: Option<f64>) -> String {
    match (p, m) {
        (Some(p), Some(m)) if p > 0.0 => format!("{:.1}x", m / p),
        (Some(p), None) if p > 0.0 => format!("> {:.1}x", CAP.as_secs_f64() * 1e3 / p),
        (Some(_), None) => "psweb only".into(),
        (None, Some(_)) => "monit only".into(),
        (None, None) => "neither".into(),
        // psweb 0 ms (never interrupted).
        (Some(_), Some(_)) => "psweb 0".into(),
    }
}

fn ratio_n(p: f64, m: f64) -> String {
    if p == 0.0 && m == 0.0 {
        "=".into()
    } else if p == 0.0 {
        "psweb 0".into()
    } else if m == 0.0 {
        "monit 0".into()
    } else if m / p < 0.1 {
        format!("{:.4}x (monit {:.0}x less)", m / p, p / m)
    } else {
        format!("{:.1}x", m / p)
    }
}

struct Row {
    figure: String,
    psweb: String,
    monit: String,
    ratio: String,
}

fn rows(cells: &[Cell], foot: &[Footprint]) -> Vec<Row> {
    let get = |f: Fault, c: Config| cells.iter().find(|x| x.fault == f && x.config == c);
    let mut out = Vec::new();
    for fault in [Fault::Kill9, Fault::StopAll, Fault::Saturate] {
        for (setup, pc, mc) in [
            ("common", Config::PswebDefault, Config::Monit30),
            ("fastest", Config::PswebKernel, Config::Monit1),
        ] {
            let (Some(p), Some(m)) = (get(fault, pc), get(fault, mc)) else {
                continue;
            };
            let f = |fig: &str| format!("{} | {setup} | {fig}", fault.name());
            out.push(Row {
                figure: f("detection"),
                psweb: fmt_t(p.detect_ms, "not detected"),
                monit: fmt_t(m.detect_ms, "not detected"),
                ratio: ratio_t(p.detect_ms, m.detect_ms),
            });
            let head = |c: &Cell| {
                if c.head_never_failed {
                    "0 (never failed)".to_string()
                } else {
                    fmt_t(c.head_ms, "not recovered")
                }
            };
            out.push(Row {
                figure: f("HEAD answers again"),
                psweb: head(p),
                monit: head(m),
                ratio: if m.head_never_failed && p.head_never_failed {
                    "= (no outage)".into()
                } else if m.head_never_failed {
                    "monit: no outage".into()
                } else if p.head_never_failed {
                    "psweb: no outage".into()
                } else {
                    ratio_t(p.head_ms, m.head_ms)
                },
            });
            if fault == Fault::Kill9 {
                out.push(Row {
                    figure: f("a master runs again"),
                    psweb: fmt_t(p.master_ms, "no master"),
                    monit: fmt_t(m.master_ms, "no master"),
                    ratio: ratio_t(p.master_ms, m.master_ms),
                });
            }
            let failed = |c: &Cell| {
                let s = format!("{}/{}", c.client_failed, c.client_issued);
                if c.head_ms.is_none() {
                    format!("{s} (still failing)")
                } else {
                    s
                }
            };
            out.push(Row {
                figure: f("failed client requests"),
                psweb: failed(p),
                monit: failed(m),
                ratio: ratio_n(p.client_failed as f64, m.client_failed as f64),
            });
            let cpu = |c: &Cell| {
                format!(
                    "{} ms ({:.2} %)",
                    c.cpu_ms,
                    c.cpu_ms as f64 / 10.0 / c.agent_life_s
                )
            };
            out.push(Row {
                figure: f("agent CPU over the run"),
                psweb: cpu(p),
                monit: cpu(m),
                ratio: ratio_n(
                    p.cpu_ms as f64 / p.agent_life_s,
                    m.cpu_ms as f64 / m.agent_life_s,
                ),
            });
            out.push(Row {
                figure: f("agent RSS (peak)"),
                psweb: format!("{:.1} MB", p.rss_peak_kb as f64 / 1024.0),
                monit: format!("{:.1} MB", m.rss_peak_kb as f64 / 1024.0),
                ratio: ratio_n(p.rss_peak_kb as f64, m.rss_peak_kb as f64),
            });
        }
    }
    for (setup, pi, mi) in [("common", 0, 2), ("fastest", 1, 3)] {
        let (Some(p), Some(m)) = (foot.get(pi), foot.get(mi)) else {
            continue;
        };
        out.push(Row {
            figure: format!("{} servers, idle | {setup} | RSS", p.entries),
            psweb: format!("{:.1} MB", p.rss_kb as f64 / 1024.0),
            monit: format!("{:.1} MB", m.rss_kb as f64 / 1024.0),
            ratio: ratio_n(p.rss_kb as f64, m.rss_kb as f64),
        });
        let pct = |f: &Footprint| f.idle_cpu_ms as f64 / 10.0 / f.idle_s;
        out.push(Row {
            figure: format!(
                "{} servers, idle | {setup} | CPU over {:.0} s",
                p.entries, p.idle_s
            ),
            psweb: format!("{} ms ({:.3} %)", p.idle_cpu_ms, pct(p)),
            monit: format!("{} ms ({:.3} %)", m.idle_cpu_ms, pct(m)),
            ratio: ratio_n(pct(p), pct(m)),
        });
    }
    out
}

struct Goal {
    goal: String,
    seen: String,
    met: bool,
}

fn goals(cells: &[Cell], foot: &[Footprint]) -> Vec<Goal> {
    let get = |f: Fault, c: Config| cells.iter().find(|x| x.fault == f && x.config == c);
    let mut g = Vec::new();
    for pc in [Config::PswebDefault, Config::PswebKernel] {
        if let (Some(p), Some(m)) = (get(Fault::Kill9, pc), get(Fault::Kill9, Config::Monit30)) {
            let r = match (p.detect_ms, m.detect_ms) {
                (Some(p), Some(m)) if p > 0.0 => Some(m / p),
                (Some(p), None) if p > 0.0 => Some(CAP.as_secs_f64() * 1e3 / p),
                _ => None,
            };
            g.push(Goal {
                goal: format!(
                    "kill -9 detection >= 100x faster than monit at 30 s ({})",
                    pc.name()
                ),
                seen: r.map_or_else(|| "not detected".into(), |r| format!("{r:.0}x")),
                met: r.is_some_and(|r| r >= 100.0),
            });
        }
    }
    for f in [Fault::StopAll, Fault::Saturate] {
        if let Some(p) = get(f, Config::PswebKernel) {
            g.push(Goal {
                goal: format!("stall verdict <= 3 s with kernel evidence ({})", f.name()),
                seen: fmt_t(p.detect_ms, "not detected"),
                met: p.detect_ms.is_some_and(|v| v <= 3000.0),
            });
        }
    }
    for f in foot.iter().filter(|f| f.agent.starts_with("psweb")) {
        let full = f.entries == ENTRIES;
        g.push(Goal {
            goal: format!("RSS <= 15 MB watching {ENTRIES} entries ({})", f.agent),
            seen: format!(
                "{:.1} MB ({} entries running)",
                f.rss_kb as f64 / 1024.0,
                f.entries
            ),
            met: full && f.rss_kb <= 15 * 1024,
        });
        let pct = f.idle_cpu_ms as f64 / 10.0 / f.idle_s;
        g.push(Goal {
            goal: format!("idle CPU <= 0.1 % of a core ({})", f.agent),
            seen: format!("{pct:.3} % ({} ms in {:.0} s)", f.idle_cpu_ms, f.idle_s),
            met: full && pct <= 0.1,
        });
    }
    g
}

fn main() {
    if !root_or_skip("bench vs_monit") {
        return;
    }
    if !apache_or_skip("bench vs_monit") {
        return;
    }
    ensure_monit();
    let t_all = Instant::now();
    let mach = machine();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench");
    let logs: PathBuf = dir.join("vs_monit");
    let _ = std::fs::create_dir_all(&logs);

    // For a partial run while developing: VS_MONIT_ONLY=kill9,psweb_kernel,footprint
    // (fault and configuration keys as in the JSON); unset, everything runs.
    let only = std::env::var("VS_MONIT_ONLY").ok();
    let wanted = |k: &str| only.as_deref().is_none_or(|o| o.split(',').any(|x| x == k));
    let mut cells = Vec::new();
    for fault in [Fault::Kill9, Fault::StopAll, Fault::Saturate] {
        for config in [
            Config::PswebDefault,
            Config::PswebKernel,
            Config::Monit30,
            Config::Monit1,
        ] {
            if wanted(fault.key()) && wanted(config.key()) {
                cells.push(run_cell(fault, config, &logs));
            }
        }
    }
    let foot = if wanted("footprint") {
        footprint(&logs)
    } else {
        Vec::new()
    };
    let total = t_all.elapsed();

    let rows = rows(&cells, &foot);
    let goals = goals(&cells, &foot);
    println!();
    println!("psweb vs monit on one Apache httpd (event MPM, 2 children, ListenBacklog {BACKLOG}), each fault injected once per configuration");
    println!("common = psweb's _bi_webserv at the seed's minimum timing (interval 10 s, retry-over 10 s) vs monit `set daemon 30`");
    println!("fastest = the same + `evidence = kernel` vs monit `set daemon 1`; ratio = monit / psweb (above 1: psweb better)");
    let w0 = rows
        .iter()
        .map(|r| r.figure.len())
        .max()
        .unwrap_or(10)
        .max(6);
    let w1 = rows
        .iter()
        .map(|r| r.psweb.len())
        .max()
        .unwrap_or(10)
        .max(5);
    let w2 = rows
        .iter()
        .map(|r| r.monit.len())
        .max()
        .unwrap_or(10)
        .max(5);
    println!(
        "{:<w0$}  {:>w1$}  {:>w2$}  ratio",
        "figure", "psweb", "monit"
    );
    for r in &rows {
        println!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {}",
            r.figure, r.psweb, r.monit, r.ratio
        );
    }
    println!("\ngoals");
    for g in &goals {
        println!(
            "  {:<72} {:>32}  {}",
            g.goal,
            g.seen,
            if g.met { "met" } else { "MISSED" }
        );
    }
    println!("\nwhat each agent logged first after the fault (detection):");
    for c in &cells {
        println!(
            "  {:<24} {:<28} {}",
            c.fault.name(),
            c.config.name(),
            c.detect_line.as_deref().unwrap_or("-")
        );
    }
    println!(
        "\nbench wall time {:.0} s; agent logs of each run in {}",
        total.as_secs_f64(),
        logs.display()
    );

    let json = serde_json::json!({
        "bench": "vs_monit",
        "machine": mach,
        "runs_per_cell": 1,
        "cap_s": CAP.as_secs(),
        "apache_listen_backlog": BACKLOG,
        "client": { "period_ms": CLIENT_PERIOD.as_millis() as u64, "timeout_ms": CLIENT_TIMEOUT.as_millis() as u64 },
        "poller": { "period_ms": POLL_PERIOD.as_millis() as u64, "timeout_ms": POLL_TIMEOUT.as_millis() as u64 },
        "cells": cells.iter().map(|c| serde_json::json!({
            "fault": c.fault.key(),
            "config": c.config.key(),
            "detect_ms": c.detect_ms,
            "detect_line": c.detect_line,
            "head_again_ms": c.head_ms,
            "head_never_failed": c.head_never_failed,
            "master_again_ms": c.master_ms,
            "client_failed": c.client_failed,
            "client_issued": c.client_issued,
            "agent_cpu_ms": c.cpu_ms,
            "agent_life_s": c.agent_life_s,
            "agent_rss_peak_kb": c.rss_peak_kb,
            "run_s": c.run_s,
        })).collect::<Vec<_>>(),
        "footprint": foot.iter().map(|f| serde_json::json!({
            "agent": f.agent,
            "entries": f.entries,
            "rss_kb": f.rss_kb,
            "idle_cpu_ms": f.idle_cpu_ms,
            "idle_s": f.idle_s,
            "idle_cpu_pct": f.idle_cpu_ms as f64 / 10.0 / f.idle_s,
            "events_during_idle": f.events,
        })).collect::<Vec<_>>(),
        "table": rows.iter().map(|r| serde_json::json!({
            "figure": r.figure, "psweb": r.psweb, "monit": r.monit, "ratio": r.ratio,
        })).collect::<Vec<_>>(),
        "goals": goals.iter().map(|g| serde_json::json!({
            "goal": g.goal, "seen": g.seen, "met": g.met,
        })).collect::<Vec<_>>(),
        "wall_s": total.as_secs_f64(),
    });
    write_bench_json("vs_monit", &json);
}
