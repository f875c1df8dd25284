//! Helpers for the end-to-end tests: real pcheck / padmin binaries, real processes,
//! real sockets. Everything a test starts carries the test's own directory in its
//! command line, so the teardown can find and kill it.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

pub const PCHECK: &str = env!("CARGO_BIN_EXE_pcheck");
pub const PADMIN: &str = env!("CARGO_BIN_EXE_padmin");
pub const DEMO: &str = env!("CARGO_BIN_EXE_psweb-demo-httpd");

/// True when the test may run; otherwise prints why it is skipped.
pub fn root_or_skip(test: &str) -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    println!("SKIPPED {test}: needs root (pcheck's control socket lives in a root-owned directory, and the tests kill and watch real processes)");
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
    println!("SKIPPED {test}: no eBPF object at {} (run `cargo xtask build-ebpf`, or the tests through `cargo xtask test`)", p.display());
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
        let pidfile = self.file(&format!("{name}.pid"));
        let runs = self.file(&format!("{name}.runs"));
        let script = self.script(
            &format!("{name}.rc"),
            &format!(
                "echo run >> {runs}\nexec {DEMO} --port {port} --workers {workers} --pidfile {pid} --daemon",
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
    buf.starts_with("HTTP/1.0 200")
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
        let mut child = Command::new(PCHECK)
            .arg("-f")
            .arg(pfile)
            .args(["--syslog", "none"])
            .args(extra)
            .env("PSWEB_RUN_DIR", sb.run_dir())
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
