//! Samples a watched port for the progress rule (`core::progress`) while there are
//! signs of waiting work, and asks the server's threads before a verdict.
//!
//! Idle, the sampler sleeps until something wakes it: an overflow event of the eBPF
//! program, a full queue seen by the shared look at the listeners, or a failed or
//! slow probe. Then it samples the port every [`SAMPLE_EVERY`] (sock_diag, with each
//! connection's tcp_info) until no work waits any more.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use crate::core::progress::{
    judge, progressed, state_counts, Figures, Progress, Sample, Step, Thread,
};
use crate::procfs;
use crate::sense::sockdiag;

/// How often a port is sampled while work waits: the known connections one by one
/// (cheap), and every [`FULL_EVERY`] and at the end of a window all of them (the
/// kernel walks its connection hash table for that: about a millisecond).
pub const SAMPLE_EVERY: Duration = Duration::from_millis(100);
pub const FULL_EVERY: Duration = Duration::from_secs(1);

/// A probe this slow is a sign of waiting work (a localhost answer takes
/// milliseconds).
pub const SLOW_PROBE: Duration = Duration::from_millis(500);

/// Whether a probe's outcome is a sign that work may wait for the server (it
/// failed, or it was slow): the port is then sampled.
pub fn waiting_work_sign(o: &crate::probe::Outcome) -> bool {
    !o.is_alive() || o.elapsed >= SLOW_PROBE
}

/// What the sampler found at the end of a window with no progress.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The server is stuck: judge it.
    Stuck(Figures),
    /// No progress, but the server's threads wait on something psweb cannot tell
    /// from a stall: kernel evidence does not judge. Reported once per episode.
    Withheld(Figures, &'static str),
    /// Work has waited with no progress for half of the window and the server's
    /// threads look stuck (`true`), or that is over (`false`): the load balancer's
    /// sign to drain. Reported on each change.
    Suspected(bool),
}

/// Samples `port` of the server `pid` whenever `woken` fires, until the task is
/// dropped. `report` gets each outcome; returning false ends the sampler.
pub async fn sample_port(
    port: u16,
    pid: i32,
    window: Duration,
    mut woken: tokio::sync::watch::Receiver<()>,
    mut report: impl FnMut(Outcome) -> bool,
) {
    let mut s = Sampler::new(port, pid, window);
    loop {
        if !s.sampling {
            if woken.changed().await.is_err() {
                return;
            }
            s.rule.reset();
            s.last_full = None;
        } else if !s.decide_now {
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
        let Some(sample) = s.take(Instant::now()) else {
            continue;
        };
        let step = s.rule.observe(&sample);
        if let Some(on) = s.suspicion(&step, &sample) {
            if !report(Outcome::Suspected(on)) {
                return;
            }
        }
        let out = match step {
            Step::NoWork => {
                s.sampling = false;
                s.withheld_told = false;
                None
            }
            Step::Watching => {
                s.sampling = true;
                // The window is over: a complete look decides, at once.
                s.decide_now = !sample.complete && s.rule.due(sample.at);
                None
            }
            Step::NoProgress(fig) => {
                s.sampling = true;
                s.verdict(&sample, fig)
            }
        };
        if let Some(out) = out {
            if !report(out) {
                return;
            }
        }
    }
}

/// What [`sample_port`] keeps between samples.
struct Sampler {
    port: u16,
    pid: i32,
    rule: Progress,
    sampling: bool,
    withheld_told: bool,
    /// The connections of the last complete sample, and when it was taken.
    known: Vec<sockdiag::ConnId>,
    last_full: Option<Instant>,
    decide_now: bool,
    /// A complete look at the next sample: the queue changed or a known connection
    /// closed since the last one, so a worker may have accepted (also a worker that
    /// was in accept() when it was stopped: the kernel completes that accept).
    full_next: bool,
    last_depth: u32,
    /// Half a window with no progress (the rule's view), and what was last reported.
    half_window: bool,
    suspected: bool,
}

impl Sampler {
    fn new(port: u16, pid: i32, window: Duration) -> Self {
        Sampler {
            port,
            pid,
            rule: Progress::new(window),
            sampling: false,
            withheld_told: false,
            known: Vec::new(),
            last_full: None,
            decide_now: false,
            full_next: false,
            last_depth: 0,
            half_window: false,
            suspected: false,
        }
    }

    /// One sample: complete (every connection of the port) when due, else the known
    /// connections looked up one by one. None if sock_diag failed.
    fn take(&mut self, now: Instant) -> Option<Sample> {
        let full = self.decide_now
            || self.full_next
            || self
                .last_full
                .is_none_or(|t| now.saturating_duration_since(t) >= FULL_EVERY);
        self.decide_now = false;
        let mut sample = if full {
            let (s, ids) = sockdiag::progress_sample(self.port, now).ok()?;
            self.known = ids;
            self.last_full = Some(now);
            s
        } else {
            sockdiag::progress_sample_known(self.port, now, &self.known).ok()?
        };
        let depth = sample.queue.map_or(0, |(d, _)| d);
        self.full_next =
            !full && (depth != self.last_depth || sample.conns.len() < self.known.len());
        self.last_depth = depth;
        // Connections that appeared with nothing else moving: accepted by the server,
        // or completed by the kernel into a worker that a stop interrupted in accept().
        if sample.complete {
            let new = self.rule.accepted_only(&sample);
            if !new.is_empty() {
                sample.held_by_stopped = held_by_stopped(self.pid, &new);
            }
        }
        Some(sample)
    }

    /// Whether the server is suspected (half a window with no progress and threads
    /// that look stuck), when that changed.
    fn suspicion(&mut self, step: &Step, sample: &Sample) -> Option<bool> {
        if matches!(step, Step::NoProgress(_)) {
            return None;
        }
        let half = matches!(step, Step::Watching) && self.rule.suspected(sample.at);
        if half == self.half_window {
            return None;
        }
        self.half_window = half;
        // The threads are read once, when half a window has passed: a server
        // that waits on something psweb cannot tell from a stall is not
        // drained either.
        let on = half && judge(&threads_of(self.pid, self.port, &owing(sample))).is_ok();
        if on == self.suspected {
            return None;
        }
        self.suspected = on;
        Some(on)
    }

    /// A window with no progress: the threads are asked, and the verdict (None when
    /// the server progressed meanwhile, sock_diag failed, or a withheld verdict was
    /// already told).
    fn verdict(&mut self, sample: &Sample, mut fig: Figures) -> Option<Outcome> {
        let threads = threads_of(self.pid, self.port, &owing(sample));
        // Read between two samples: a worker that accepted meanwhile would be
        // misread, and that accept is progress.
        let (after, ids) = sockdiag::progress_sample(self.port, Instant::now()).ok()?;
        if progressed(sample, &after) {
            self.known = ids;
            self.last_full = Some(after.at);
            self.rule.observe(&after);
            return None;
        }
        fig.states = state_counts(&threads);
        match judge(&threads) {
            Ok(()) => Some(Outcome::Stuck(fig)),
            Err(_) if self.withheld_told => None,
            Err(why) => {
                self.withheld_told = true;
                Some(Outcome::Withheld(fig, why))
            }
        }
    }
}

/// The connections the server holds: inode -> owes an answer.
fn owing(sample: &Sample) -> HashMap<u32, bool> {
    sample
        .conns
        .iter()
        .map(|c| (c.inode, c.owes_answer))
        .collect()
}

/// The threads of the server (`pid` and its descendants): state, the system call
/// each sleeps in, whether its process holds connections of `port` (`held`: inode
/// -> owes an answer), owes an answer on one, and holds TCP connections to other
/// servers.
pub fn threads_of<S: std::hash::BuildHasher>(
    pid: i32,
    port: u16,
    held: &HashMap<u32, bool, S>,
) -> Vec<Thread> {
    let conn_ports = sockdiag::connection_ports().unwrap_or_default();
    let listening: HashSet<u16> = sockdiag::listeners()
        .map(|ls| ls.into_iter().map(|l| l.port).collect())
        .unwrap_or_default();
    let procs = tree(pid);
    // Processes of the server with a live (not zombie) child: a handler they started.
    let parents: HashSet<i32> = procs
        .iter()
        .filter_map(|c| procfs::stat(*c).ok())
        .filter(|st| st.state != 'Z')
        .map(|st| st.ppid)
        .collect();
    let mut out = Vec::new();
    for p in procs {
        let socks = socket_inodes(p);
        let holds_port = socks.iter().any(|i| held.contains_key(i));
        let owes_answer = socks.iter().any(|i| held.get(i) == Some(&true));
        let outbound = socks.iter().any(|i| {
            conn_ports
                .get(i)
                .is_some_and(|lp| *lp != port && !listening.contains(lp))
        });
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
            continue;
        };
        for t in tasks.filter_map(|t| t.ok()) {
            let dir = t.path();
            let Some(state) = std::fs::read_to_string(dir.join("stat"))
                .ok()
                .and_then(|s| procfs::parse_stat(&s))
                .map(|s| s.state)
            else {
                continue;
            };
            let syscall = std::fs::read_to_string(dir.join("syscall"))
                .ok()
                .and_then(|s| parse_syscall(&s));
            out.push(Thread {
                process: p,
                state,
                syscall,
                holds_port,
                owes_answer,
                outbound,
                has_child: parents.contains(&p),
            });
        }
    }
    out
}

/// Which of `inodes` a stopped process of the server (`pid` and its descendants,
/// every thread in state T or t) holds.
fn held_by_stopped(pid: i32, inodes: &[u32]) -> Vec<u32> {
    let mut out = Vec::new();
    for p in tree(pid) {
        let held: Vec<u32> = socket_inodes(p)
            .into_iter()
            .filter(|i| inodes.contains(i))
            .collect();
        if !held.is_empty() && stopped(p) {
            out.extend(held);
        }
    }
    out
}

/// Whether every thread of `pid` is stopped (false when it cannot be read).
fn stopped(pid: i32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut any = false;
    for t in tasks.filter_map(|t| t.ok()) {
        let state = std::fs::read_to_string(t.path().join("stat"))
            .ok()
            .and_then(|s| procfs::parse_stat(&s))
            .map(|s| s.state);
        if !matches!(state, Some('T' | 't')) {
            return false;
        }
        any = true;
    }
    any
}

/// The system call number of /proc/PID/task/TID/syscall ("running" and "-1 ..."
/// (not in a system call) give None).
fn parse_syscall(text: &str) -> Option<i64> {
    text.split_whitespace()
        .next()?
        .parse::<i64>()
        .ok()
        .filter(|n| *n >= 0)
}

/// `pid` and all its descendants.
fn tree(pid: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for p in procfs::pids() {
        if let Ok(st) = procfs::stat(p) {
            children.entry(st.ppid).or_default().push(p);
        }
    }
    let mut out = vec![pid];
    let mut i = 0;
    while let Some(&p) = out.get(i) {
        if let Some(c) = children.get(&p) {
            out.extend(c.iter().copied().filter(|c| *c != pid));
        }
        i += 1;
    }
    out
}

/// The inodes of the sockets a process holds open.
fn socket_inodes(pid: i32) -> Vec<u32> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    fds.filter_map(|fd| {
        let link = std::fs::read_link(fd.ok()?.path()).ok()?;
        link.to_str()?
            .strip_prefix("socket:[")?
            .strip_suffix(']')?
            .parse()
            .ok()
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_lines() {
        assert_eq!(parse_syscall("running\n"), None);
        assert_eq!(parse_syscall("-1 0x7ffd 0x55\n"), None);
        assert_eq!(
            parse_syscall("202 0x1 0x2 0x3 0x4 0x5 0x6 0x7 0x8\n"),
            Some(202)
        );
    }

    /// A real server thread blocked reading a connection it accepted, holding a
    /// connection to another server: seen as holding the port and outbound.
    #[test]
    fn a_thread_waiting_on_an_upstream_is_seen_as_such() {
        use std::io::{Read, Write};
        let front = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = front.local_addr().expect("addr").port();
        let upstream = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let up = upstream.local_addr().expect("addr");
        let mut client = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
        let (mut held, _) = front.accept().expect("accept");
        let mut out = std::net::TcpStream::connect(up).expect("upstream");
        let t = std::thread::spawn(move || {
            let mut b = [0u8; 1];
            let _ = out.read(&mut b); // the upstream never answers
        });
        client.write_all(b"GET / HTTP/1.0\r\n\r\n").expect("write");
        let mut req = [0u8; 18];
        held.read_exact(&mut req).expect("read");
        let deadline = Instant::now() + Duration::from_secs(10);
        let me = std::process::id() as i32;
        loop {
            let (sample, _) = sockdiag::progress_sample(port, Instant::now()).expect("sock_diag");
            let inodes: HashMap<u32, bool> = sample
                .conns
                .iter()
                .map(|c| (c.inode, c.owes_answer))
                .collect();
            assert_eq!(sample.conns.len(), 1, "{sample:?}");
            assert_eq!(sample.conns[0].read, 18, "what the server read: {sample:?}");
            assert!(
                sample.conns[0].owes_answer,
                "a request, no answer: {sample:?}"
            );
            let threads = threads_of(me, port, &inodes);
            if threads.iter().any(|t| {
                t.holds_port
                    && t.owes_answer
                    && t.outbound
                    && t.state == 'S'
                    && t.syscall.is_some_and(|n| n != libc::SYS_futex)
            }) {
                break;
            }
            assert!(Instant::now() < deadline, "{threads:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
        drop(upstream);
        let _ = t.join();
    }
}
