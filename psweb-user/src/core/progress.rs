//! Kernel evidence of a stall: has the server itself made progress while work waits?
//!
//! A server is judged stuck only when, for a whole window, work was waiting for it
//! (connections in its accept queue, or request bytes unread on connections it holds)
//! and it did nothing with any connection of the watched port: it accepted none,
//! wrote no byte into one, read no byte out of one. What the kernel does on the
//! server's behalf is not progress: a stopped server's full send buffer keeps draining
//! to slow readers, so "written" is `bytes_acked` plus what still sits in the send
//! queue, and "read" is `bytes_received` minus what still sits in the receive queue.
//!
//! Then the server's processes are asked what they are doing: a worker sleeping in a
//! system call while the kernel moves its bytes (a slow reader), while it holds
//! connections to another server (a slow upstream), or while it waits on anything
//! else but a lock or its event loop (a handler process such as a CGI, a local
//! socket, a client sending slowly) is waiting, not stuck, and kernel evidence does
//! not judge it (the probe rule still may).

use std::collections::HashMap;
use std::fmt;
use std::time::{Duration, Instant};

/// One connection of the watched port that the server holds (has accepted).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conn {
    /// Socket inode: identifies the connection while the server holds it.
    pub inode: u32,
    /// Bytes the server wrote into it (acked + still in the send queue).
    pub written: u64,
    /// Bytes the server read out of it (received - still in the receive queue).
    pub read: u64,
    /// Bytes received and not yet read by the server.
    pub unread: u32,
    /// Bytes the peer acknowledged (the kernel's progress, not the server's).
    pub acked: u64,
    /// The server owes an answer: data came in more recently than any went out (a
    /// request not yet answered). An answered connection waits on its client.
    pub owes_answer: bool,
}

/// One look at the watched port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    pub at: Instant,
    /// The fullest listener's accept queue: (depth, limit).
    pub queue: Option<(u32, u32)>,
    /// The connections the server holds.
    pub conns: Vec<Conn>,
    /// Every connection of the port was looked at (false: only the ones known from
    /// an earlier complete sample, so a new accept is not seen). Only a complete
    /// sample can end a window in a verdict.
    pub complete: bool,
    /// Connections held by a process that was stopped (every thread in state T) when
    /// the sample was taken. One of them first seen now is not an accept by the
    /// server: a stop that interrupts a worker asleep in accept() while a connection
    /// is queued still completes that accept in the kernel, and the worker stops on
    /// its way back, before its code sees the connection. The sampler fills this only
    /// for the connections [`Progress::accepted_only`] names.
    pub held_by_stopped: Vec<u32>,
}

impl Sample {
    /// Connections held with request bytes unread.
    fn unread_conns(&self) -> u32 {
        u32::try_from(self.conns.iter().filter(|c| c.unread > 0).count()).unwrap_or(u32::MAX)
    }

    /// Is work waiting for the server?
    pub fn work_waiting(&self) -> bool {
        self.queue.is_some_and(|(d, _)| d > 0) || self.conns.iter().any(|c| c.unread > 0)
    }
}

/// The figures of a window with no progress, for the verdict line and event.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Figures {
    pub window_ms: u64,
    /// Largest accept-queue depth seen in the window, and the limit.
    pub depth: u32,
    pub limit: u32,
    /// Connections held at the end of the window, and those with unread requests.
    pub held: u32,
    pub unread_conns: u32,
    pub unread_bytes: u64,
    /// What the server did in the window: always 0 in a verdict.
    pub accepted: u32,
    pub written: u64,
    pub read: u64,
    /// Bytes the kernel delivered for it meanwhile (peer acknowledgements).
    pub acked_by_kernel: u64,
    /// Samples taken in the window.
    pub samples: u32,
    /// The server's processes, threads by state (e.g. "T:5" or "R:4 S:1").
    pub states: String,
}

impl fmt::Display for Figures {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no progress for {} ms: accept queue {}/{}, {} connections held ({} with {} bytes unread); \
             server accepted {}, wrote {} B, read {} B; kernel delivered {} B for it; {} samples",
            self.window_ms,
            self.depth,
            self.limit,
            self.held,
            self.unread_conns,
            self.unread_bytes,
            self.accepted,
            self.written,
            self.read,
            self.acked_by_kernel,
            self.samples,
        )?;
        if !self.states.is_empty() {
            write!(f, "; threads {}", self.states)?;
        }
        Ok(())
    }
}

/// What one sample means.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// No work is waiting: sampling may stop.
    NoWork,
    /// Work waits; the server progressed, or the window is not over yet.
    Watching,
    /// Work waited for a whole window and the server did nothing. Before judging,
    /// ask [`judge`] with the server's threads.
    NoProgress(Figures),
}

/// The progress rule over successive samples of one port.
#[derive(Debug)]
pub struct Progress {
    window: Duration,
    /// Since when work waits with no progress, and the figures so far.
    since: Option<(Instant, Figures)>,
    /// The previous sample's connections: inode -> (written, read, acked).
    prev: HashMap<u32, (u64, u64, u64)>,
}

impl Progress {
    pub fn new(window: Duration) -> Self {
        Self {
            window,
            since: None,
            prev: HashMap::new(),
        }
    }

    /// Forgets everything (sampling stopped).
    pub fn reset(&mut self) {
        self.since = None;
        self.prev.clear();
    }

    /// Whether the window is over at `at` (a complete sample would decide).
    pub fn due(&self, at: Instant) -> bool {
        self.since
            .as_ref()
            .is_some_and(|(since, _)| at.saturating_duration_since(*since) >= self.window)
    }

    /// Whether work has waited with no progress for half of the window at `at`: the
    /// load balancer's sign to drain before the verdict can come.
    pub fn suspected(&self, at: Instant) -> bool {
        self.since
            .as_ref()
            .is_some_and(|(since, _)| at.saturating_duration_since(*since) >= self.window / 2)
    }

    /// The connections of `s` that the previous sample did not show, when they are
    /// all the progress `s` would show (no byte moved on any connection): whether
    /// their holders are stopped decides whether the server progressed. Empty when
    /// something else shows progress, or for the first sample.
    pub fn accepted_only(&self, s: &Sample) -> Vec<u32> {
        if self.prev.is_empty() && self.since.is_none() {
            return Vec::new();
        }
        let mut new = Vec::new();
        for c in &s.conns {
            match self.prev.get(&c.inode) {
                Some(&(w, r, _)) if c.written > w || c.read > r => return Vec::new(),
                Some(_) => {}
                None if c.written > 0 || c.read > 0 => return Vec::new(),
                None => new.push(c.inode),
            }
        }
        new
    }

    pub fn observe(&mut self, s: &Sample) -> Step {
        let first = self.prev.is_empty() && self.since.is_none();
        let mut progressed = false;
        let mut acked = 0u64;
        for c in &s.conns {
            match self.prev.get(&c.inode) {
                Some(&(w, r, a)) => {
                    if c.written > w || c.read > r {
                        progressed = true;
                    }
                    acked += c.acked.saturating_sub(a);
                }
                // A connection the previous sample did not show: the server accepted it
                // (unless a stopped process holds it).
                None if !first && !s.held_by_stopped.contains(&c.inode) => progressed = true,
                None => {}
            }
        }
        self.prev = s
            .conns
            .iter()
            .map(|c| (c.inode, (c.written, c.read, c.acked)))
            .collect();
        if !s.work_waiting() {
            self.since = None;
            return Step::NoWork;
        }
        if progressed || first {
            self.since = Some((s.at, Figures::default()));
            return Step::Watching;
        }
        let window = self.window;
        let Some((since, fig)) = self.since.as_mut() else {
            self.since = Some((s.at, Figures::default()));
            return Step::Watching;
        };
        let (depth, limit) = s.queue.unwrap_or((0, 0));
        if depth >= fig.depth {
            fig.depth = depth;
            fig.limit = limit;
        }
        fig.acked_by_kernel += acked;
        fig.samples += 1;
        let waited = s.at.saturating_duration_since(*since);
        if waited < window || !s.complete {
            return Step::Watching;
        }
        let mut out = fig.clone();
        out.window_ms = u64::try_from(waited.as_millis()).unwrap_or(u64::MAX);
        out.held = u32::try_from(s.conns.len()).unwrap_or(u32::MAX);
        out.unread_conns = s.unread_conns();
        out.unread_bytes = s.conns.iter().map(|c| u64::from(c.unread)).sum();
        // The next verdict needs another whole window.
        self.since = Some((s.at, Figures::default()));
        Step::NoProgress(out)
    }
}

/// Whether the server progressed from one sample to a later complete one: it
/// accepted a connection, or wrote or read on one. Before a verdict, the threads are
/// read between two samples, and this second sample must show no progress either:
/// a worker that accepted meanwhile holds a connection the first sample could not
/// name, so what its thread does would be misread.
pub fn progressed(before: &Sample, after: &Sample) -> bool {
    let was: HashMap<u32, (u64, u64)> = before
        .conns
        .iter()
        .map(|c| (c.inode, (c.written, c.read)))
        .collect();
    after.conns.iter().any(|c| match was.get(&c.inode) {
        Some(&(w, r)) => c.written > w || c.read > r,
        None => after.complete && !after.held_by_stopped.contains(&c.inode),
    })
}

/// What the kernel shows of one thread of the server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Thread {
    /// Its process.
    pub process: i32,
    /// /proc state: R, S, D, T, t, Z, ...
    pub state: char,
    /// The system call it sleeps in (None while running or unknown).
    pub syscall: Option<i64>,
    /// Its process holds connections of the watched port.
    pub holds_port: bool,
    /// Its process owes an answer on one of them ([`Conn::owes_answer`]).
    pub owes_answer: bool,
    /// Its process holds TCP connections to other servers (an upstream).
    pub outbound: bool,
    /// Its process has a live child process: a handler it started (a CGI), whose
    /// output it may be waiting for, even in its event loop's wait.
    pub has_child: bool,
}

/// The system calls of an event loop waiting for readiness on its sockets (an event
/// MPM's listener thread, an nginx worker). With work queued and no progress, such a
/// thread waits on the rest of its process, not on something outside it.
const EVENT_WAITS: [i64; 3] = [
    libc::SYS_epoll_wait,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
];

/// Whether kernel evidence may judge the server, given its threads. Err: why it
/// must not (logged; the probe rule still judges). A process that holds connections
/// of the port and has a thread asleep in a system call other than a lock (futex)
/// is waiting, not stuck, when it holds connections to another server (a slow
/// upstream looks the same as a hung one from here), when it owes no answer on
/// any of its connections (it waits on its clients: idle keep-alive, slow readers),
/// or when the call is not its event loop's wait (or its process has a live child, a
/// handler such as a CGI, whose output it may await there) and no other thread of its process
/// is stopped, running or on a lock (it waits on a handler process such as a CGI, a
/// local socket, a file, or a client that sends its request slowly: a slow one looks
/// the same as a hung one; a threaded server's management thread reading a pipe
/// beside workers that loop or deadlock does not count).
/// Stopped (T), running (R) and lock-blocked workers are judged.
pub fn judge(threads: &[Thread]) -> Result<(), &'static str> {
    let waiting: Vec<&Thread> = threads
        .iter()
        .filter(|t| {
            t.holds_port
                && matches!(t.state, 'S' | 'D')
                && t.syscall.is_some_and(|n| n != libc::SYS_futex)
        })
        .collect();
    if waiting.iter().any(|t| t.outbound) {
        return Err("its workers wait in a system call while holding connections to another server (a slow upstream cannot be told from a hung one)");
    }
    if waiting.iter().any(|t| !t.owes_answer) {
        return Err("its workers wait in a system call on connections they have answered (waiting on their clients: idle keep-alive, slow readers)");
    }
    let stuck_like = |t: &Thread| {
        matches!(t.state, 'R' | 'T' | 't')
            || (matches!(t.state, 'S' | 'D') && t.syscall == Some(libc::SYS_futex))
    };
    let elsewhere = waiting.iter().any(|w| {
        (w.has_child || w.syscall.is_some_and(|n| !EVENT_WAITS.contains(&n)))
            && !threads
                .iter()
                .any(|t| t.process == w.process && stuck_like(t))
    });
    if elsewhere {
        return Err("its workers wait in a system call other than a lock or their event loop (on a handler process such as a CGI, a local socket, a file, or a client sending slowly: a slow one cannot be told from a hung one)");
    }
    Ok(())
}

/// Threads by state, e.g. "R:4 S:1".
pub fn state_counts(threads: &[Thread]) -> String {
    let mut counts: Vec<(char, u32)> = Vec::new();
    for t in threads {
        match counts.iter_mut().find(|(c, _)| *c == t.state) {
            Some((_, n)) => *n += 1,
            None => counts.push((t.state, 1)),
        }
    }
    counts.sort_unstable();
    counts
        .iter()
        .map(|(c, n)| format!("{c}:{n}"))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn conn(inode: u32, written: u64, read: u64, unread: u32) -> Conn {
        Conn {
            inode,
            written,
            read,
            unread,
            acked: written,
            owes_answer: false,
        }
    }

    fn sample(t0: Instant, at_ms: u64, queue: Option<(u32, u32)>, conns: &[Conn]) -> Sample {
        Sample {
            at: t0 + ms(at_ms),
            queue,
            conns: conns.to_vec(),
            complete: true,
            held_by_stopped: Vec::new(),
        }
    }

    /// (at ms, queue, connections, expected step kind: N(o work), W(atching), V(erdict)).
    type Row = (u64, Option<(u32, u32)>, Vec<Conn>, char);

    /// (at ms, queue, connections, suspected).
    type HalfRow<'a> = (u64, Option<(u32, u32)>, &'a [Conn], bool);
    /// (at ms, connections, held by a stopped process, accepted_only, step).
    type StopRow<'a> = (u64, &'a [Conn], &'a [u32], &'a [u32], char);

    fn run(window_ms: u64, steps: &[Row]) {
        let t0 = Instant::now();
        let mut p = Progress::new(ms(window_ms));
        for (i, (at, q, conns, want)) in steps.iter().enumerate() {
            let got = match p.observe(&sample(t0, *at, *q, conns)) {
                Step::NoWork => 'N',
                Step::Watching => 'W',
                Step::NoProgress(_) => 'V',
            };
            assert_eq!(got, *want, "step {i} at {at} ms");
        }
    }

    /// Half a window with no progress is a suspicion (the balancer drains), before the
    /// verdict; progress or no waiting work ends it.
    #[test]
    fn suspicion_at_half_the_window() {
        let t0 = Instant::now();
        let full = Some((17, 16));
        let stuck = [conn(1, 100, 50, 0)];
        let mut p = Progress::new(ms(2000));
        let rows: [HalfRow; 7] = [
            (0, full, &stuck, false),
            (900, full, &stuck, false),
            (1000, full, &stuck, true),
            // The server wrote: progress, the suspicion is over.
            (1100, full, &[conn(1, 200, 50, 0)], false),
            (2100, full, &[conn(1, 200, 50, 0)], true),
            // No work waits any more.
            (2200, Some((0, 16)), &[conn(1, 200, 50, 0)], false),
            (3300, Some((0, 16)), &[conn(1, 200, 50, 0)], false),
        ];
        for (at, q, conns, want) in rows {
            let s = sample(t0, at, q, conns);
            p.observe(&s);
            assert_eq!(p.suspected(s.at), want, "at {at} ms");
        }
    }

    #[test]
    fn the_rule_table() {
        let full = Some((17, 16));
        let idle = Some((0, 16));
        // A stopped server: queue full, nothing moves -> verdict after the window.
        run(
            2000,
            &[
                (0, full, vec![conn(1, 100, 50, 0)], 'W'),
                (1000, full, vec![conn(1, 100, 50, 0)], 'W'),
                (2000, full, vec![conn(1, 100, 50, 0)], 'V'),
                // The next verdict needs a whole window again.
                (3000, full, vec![conn(1, 100, 50, 0)], 'W'),
                (4000, full, vec![conn(1, 100, 50, 0)], 'V'),
            ],
        );
        // Keep-alive: the queue stays full, nothing is accepted, but every worker
        // writes answers on connections it holds -> never judged.
        run(
            2000,
            &[
                (0, full, vec![conn(1, 0, 0, 0), conn(2, 0, 0, 80)], 'W'),
                (
                    1000,
                    full,
                    vec![conn(1, 500, 80, 0), conn(2, 0, 0, 80)],
                    'W',
                ),
                (
                    2000,
                    full,
                    vec![conn(1, 1000, 160, 0), conn(2, 0, 0, 80)],
                    'W',
                ),
                (
                    3000,
                    full,
                    vec![conn(1, 1000, 160, 0), conn(2, 500, 80, 0)],
                    'W',
                ),
                (
                    4000,
                    full,
                    vec![conn(1, 1500, 240, 0), conn(2, 500, 80, 0)],
                    'W',
                ),
            ],
        );
        // A new accepted connection is progress, even with no byte moved.
        run(
            2000,
            &[
                (0, full, vec![conn(1, 0, 0, 0)], 'W'),
                (1500, full, vec![conn(1, 0, 0, 0), conn(2, 0, 0, 0)], 'W'),
                (3000, full, vec![conn(1, 0, 0, 0), conn(2, 0, 0, 0)], 'W'),
                (3500, full, vec![conn(1, 0, 0, 0), conn(2, 0, 0, 0)], 'V'),
            ],
        );
        // The accept queue never fills, but requests sit unread on held connections.
        run(
            2000,
            &[
                (0, idle, vec![conn(1, 0, 0, 90)], 'W'),
                (1000, idle, vec![conn(1, 0, 0, 90)], 'W'),
                (2100, idle, vec![conn(1, 0, 0, 90)], 'V'),
            ],
        );
        // Nothing waiting (idle keep-alive connections): no work, no verdict.
        run(
            2000,
            &[
                (0, idle, vec![conn(1, 0, 0, 0)], 'N'),
                (5000, idle, vec![conn(1, 0, 0, 0)], 'N'),
                (9000, None, vec![], 'N'),
            ],
        );
        // Work waits, then is gone, then waits again: the window restarts.
        run(
            2000,
            &[
                (0, full, vec![], 'W'),
                (1500, idle, vec![], 'N'),
                (2000, full, vec![], 'W'),
                (3500, full, vec![], 'W'),
                (4000, full, vec![], 'V'),
            ],
        );
        // A connection the server closed is not progress (a client's reset looks the same).
        run(
            2000,
            &[
                (0, full, vec![conn(1, 0, 0, 0), conn(2, 0, 0, 0)], 'W'),
                (1000, full, vec![conn(1, 0, 0, 0)], 'W'),
                (2000, full, vec![conn(1, 0, 0, 0)], 'V'),
            ],
        );
    }

    /// A worker stopped while asleep in accept() with a connection queued: the kernel
    /// completes that accept and the worker stops before its code runs. The new
    /// connection held by the stopped process is not progress; one accepted by a
    /// running process is, and so is any byte moved.
    #[test]
    fn a_connection_accepted_into_a_stopped_process_is_not_progress() {
        let t0 = Instant::now();
        let full = Some((17, 16));
        let mut p = Progress::new(ms(2000));
        assert_eq!(p.observe(&sample(t0, 0, full, &[])), Step::Watching);
        let rows: [StopRow; 4] = [
            (1000, &[conn(1, 0, 0, 0)], &[1], &[1], 'W'),
            (2000, &[conn(1, 0, 0, 0)], &[1], &[], 'V'),
            // A running process accepted: progress, the window restarts.
            (2500, &[conn(1, 0, 0, 0), conn(2, 0, 0, 0)], &[1], &[2], 'W'),
            (4000, &[conn(1, 0, 0, 0), conn(2, 0, 0, 0)], &[1], &[], 'W'),
        ];
        for (at, conns, stopped, only, want) in rows {
            let mut s = sample(t0, at, full, conns);
            assert_eq!(p.accepted_only(&s), only, "at {at} ms");
            s.held_by_stopped = stopped.to_vec();
            let got = match p.observe(&s) {
                Step::NoWork => 'N',
                Step::Watching => 'W',
                Step::NoProgress(_) => 'V',
            };
            assert_eq!(got, want, "at {at} ms");
        }
        assert!(matches!(
            p.observe(&sample(
                t0,
                4500,
                full,
                &[conn(1, 0, 0, 0), conn(2, 0, 0, 0)]
            )),
            Step::NoProgress(_)
        ));
        // A new connection the server already read from, or any byte moved, is
        // progress whoever holds it: nothing to ask.
        let known = [conn(1, 0, 0, 0), conn(2, 0, 0, 0)];
        let read_new = sample(
            t0,
            5000,
            full,
            &[conn(1, 0, 0, 0), conn(2, 0, 0, 0), conn(3, 0, 18, 0)],
        );
        assert!(p.accepted_only(&read_new).is_empty());
        let wrote = sample(
            t0,
            5000,
            full,
            &[conn(1, 9, 0, 0), conn(2, 0, 0, 0), conn(4, 0, 0, 0)],
        );
        assert!(p.accepted_only(&wrote).is_empty());
        let mut before = sample(t0, 5000, full, &known[..1]);
        before.complete = true;
        let mut after = sample(t0, 5050, full, &known);
        assert!(progressed(&before, &after));
        after.held_by_stopped = vec![2];
        assert!(!progressed(&before, &after));
    }

    /// A sample of the known connections only cannot end a window: an accept it
    /// cannot see may have happened. The next complete one decides.
    #[test]
    fn only_a_complete_sample_ends_a_window() {
        let t0 = Instant::now();
        let mut p = Progress::new(ms(2000));
        let full = Some((17, 16));
        let mut s = sample(t0, 0, full, &[conn(1, 5, 5, 0)]);
        assert_eq!(p.observe(&s), Step::Watching);
        s.complete = false;
        s.at = t0 + ms(2500);
        assert!(p.due(s.at));
        assert_eq!(p.observe(&s), Step::Watching);
        // The complete look finds a connection accepted meanwhile: progress.
        let mut s2 = sample(t0, 2600, full, &[conn(1, 5, 5, 0), conn(2, 0, 0, 0)]);
        assert_eq!(p.observe(&s2), Step::Watching);
        assert!(!p.due(s2.at));
        s2.at = t0 + ms(4600);
        assert!(matches!(p.observe(&s2), Step::NoProgress(_)));
    }

    #[test]
    fn the_kernel_draining_a_stopped_servers_send_buffer_is_not_progress() {
        let t0 = Instant::now();
        let mut p = Progress::new(ms(2000));
        let full = Some((5, 4));
        // written = acked + send queue stays 1 MB while acked grows.
        let c = |acked: u64| Conn {
            inode: 7,
            written: 1 << 20,
            read: 100,
            unread: 0,
            acked,
            owes_answer: false,
        };
        assert_eq!(p.observe(&sample(t0, 0, full, &[c(1000)])), Step::Watching);
        assert_eq!(
            p.observe(&sample(t0, 1000, full, &[c(5000)])),
            Step::Watching
        );
        let Step::NoProgress(f) = p.observe(&sample(t0, 2000, full, &[c(9000)])) else {
            panic!("a stopped server is judged")
        };
        assert_eq!(f.acked_by_kernel, 8000);
        assert_eq!(
            (f.depth, f.limit, f.held, f.accepted, f.written),
            (5, 4, 1, 0, 0)
        );
        assert_eq!(f.window_ms, 2000);
        let line = f.to_string();
        assert!(line.contains("accept queue 5/4"), "{line}");
        assert!(line.contains("kernel delivered 8000 B"), "{line}");
    }

    #[test]
    fn progress_between_two_samples() {
        let t0 = Instant::now();
        let full = Some((17, 16));
        let a = sample(t0, 0, full, &[conn(1, 10, 10, 0)]);
        let same = sample(t0, 50, full, &[conn(1, 10, 10, 0)]);
        let wrote = sample(t0, 50, full, &[conn(1, 11, 10, 0)]);
        let accepted = sample(t0, 50, full, &[conn(1, 10, 10, 0), conn(2, 0, 0, 0)]);
        let closed = sample(t0, 50, full, &[]);
        assert!(!progressed(&a, &same));
        assert!(progressed(&a, &wrote));
        assert!(progressed(&a, &accepted));
        assert!(!progressed(&a, &closed));
    }

    fn th(
        state: char,
        syscall: Option<i64>,
        holds_port: bool,
        owes: bool,
        outbound: bool,
    ) -> Thread {
        Thread {
            process: 1,
            state,
            syscall,
            holds_port,
            owes_answer: owes,
            outbound,
            has_child: false,
        }
    }

    #[test]
    fn who_may_be_judged() {
        let read = Some(libc::SYS_read);
        let futex = Some(libc::SYS_futex);
        let poll = Some(libc::SYS_poll);
        // (threads, may judge)
        let table: &[(Vec<Thread>, bool)] = &[
            // Every process stopped (even with answered connections).
            (vec![th('T', None, true, false, false); 4], true),
            // A handler looping on every worker.
            (vec![th('R', None, true, true, false); 4], true),
            // A deadlock: every worker on a lock, the parent asleep elsewhere.
            (
                vec![
                    th('S', futex, true, true, false),
                    th('S', futex, true, true, false),
                    th('S', poll, false, false, false),
                ],
                true,
            ),
            // Every worker reading a socket to an upstream that does not answer.
            (vec![th('S', read, true, true, true); 4], false),
            // Workers waiting on clients they have answered (keep-alive, slow readers).
            (vec![th('S', poll, true, false, false); 4], false),
            // Workers waiting on a handler process (a CGI) that owes the answer, no
            // upstream: a slow CGI looks the same as a hung one.
            (vec![th('S', read, true, true, false); 4], false),
            (vec![th('S', poll, true, true, false); 4], false),
            // An nginx worker's event loop asleep while it owes answers, its
            // connections full: waiting on nothing outside the process.
            (
                vec![th('S', Some(libc::SYS_epoll_pwait), true, true, false)],
                true,
            ),
            // Event MPM: the main thread reads the parent's pipe, the listener waits in
            // its event loop, the workers loop: judged.
            (
                vec![
                    th('S', read, true, true, false),
                    th('S', Some(libc::SYS_epoll_wait), true, true, false),
                    th('R', None, true, true, false),
                ],
                true,
            ),
            // A prefork child awaits its CGI's output in its event loop's wait.
            (
                vec![Thread {
                    has_child: true,
                    ..th('S', Some(libc::SYS_epoll_wait), true, true, false)
                }],
                false,
            ),
            // Two processes: one loops, the other waits on its CGI: not judged.
            (
                vec![
                    th('R', None, true, true, false),
                    Thread {
                        process: 2,
                        ..th('S', poll, true, true, false)
                    },
                ],
                false,
            ),
            // Event MPM: the listener thread asleep, the workers on a lock.
            (
                vec![
                    th('S', Some(libc::SYS_epoll_wait), true, true, false),
                    th('S', futex, true, true, false),
                ],
                true,
            ),
        ];
        for (i, (threads, may)) in table.iter().enumerate() {
            assert_eq!(judge(threads).is_ok(), *may, "case {i}");
        }
        assert_eq!(
            state_counts(&[
                th('S', None, true, false, false),
                th('R', None, true, false, false),
                th('S', None, false, false, false)
            ]),
            "R:1 S:2"
        );
    }
}
