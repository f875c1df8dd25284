//! /proc: process identity, state, adoption and the members of a service.

use std::io;
use std::path::{Path, PathBuf};

/// What /proc/PID/stat says of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    /// R, S, D, Z, T, t, X, ...
    pub state: char,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// Start time in clock ticks after boot: with the pid, identifies one process for
    /// the life of the machine (a recycled pid has a later start time).
    pub start_time: u64,
}

impl Stat {
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x')
    }
}

/// Reads /proc/PID/stat. `NotFound` when the process is gone.
pub fn stat(pid: i32) -> io::Result<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_stat(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("cannot parse /proc/{pid}/stat"),
        )
    })
}

/// Parses the text of /proc/PID/stat. The command name (2nd field) may hold blanks
/// and parentheses, so the fields after it are found from the last ')'.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let pid: i32 = text[..open].trim().parse().ok()?;
    let rest: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    // rest[0] = state (field 3); field N is rest[N - 3].
    let state = rest.first()?.chars().next()?;
    let num = |field: usize| rest.get(field - 3)?.parse::<i64>().ok();
    Some(Stat {
        pid,
        state,
        ppid: i32::try_from(num(4)?).ok()?,
        pgid: i32::try_from(num(5)?).ok()?,
        sid: i32::try_from(num(6)?).ok()?,
        start_time: u64::try_from(num(22)?).ok()?,
    })
}

/// The executable of a process, without the kernel's " (deleted)" suffix.
pub fn exe(pid: i32) -> Option<PathBuf> {
    let p = std::fs::read_link(format!("/proc/{pid}/exe")).ok()?;
    let s = p.to_string_lossy();
    Some(match s.strip_suffix(" (deleted)") {
        Some(t) => PathBuf::from(t),
        None => p,
    })
}

/// argv[0] of a process.
pub fn argv0(pid: i32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let first = raw.split(|b| *b == 0).next()?;
    (!first.is_empty()).then(|| String::from_utf8_lossy(first).into_owned())
}

/// Does this process run `pname`? Its executable is `pname` (both canonicalised, so a
/// symlinked path matches), or its argv[0] is exactly `pname`.
pub fn runs(pid: i32, pname: &Path) -> bool {
    let want = std::fs::canonicalize(pname).unwrap_or_else(|_| pname.to_path_buf());
    if let Some(e) = exe(pid) {
        if e == want || e == pname {
            return true;
        }
    }
    argv0(pid).is_some_and(|a| Path::new(&a) == pname)
}

/// All pids in /proc.
pub fn pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|d| d.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// Reads a pidfile: the first whole number in it.
pub fn read_pidfile(path: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(path).ok()?;
    text.split_whitespace()
        .next()?
        .parse()
        .ok()
        .filter(|p| *p > 0)
}

/// Finds the running process of an entry: by pidfile when one is given (and the pid
/// in it really runs `pname`, so a stale pidfile whose pid was recycled is not
/// trusted), else the oldest process running `pname` whose parent does not run it
/// too (the master, not a worker).
pub fn find(pname: &Path, pidfile: Option<&Path>) -> Option<Stat> {
    if let Some(pf) = pidfile {
        let pid = read_pidfile(pf)?;
        let st = stat(pid).ok()?;
        return (!st.is_dead() && runs(pid, pname)).then_some(st);
    }
    let me = std::process::id() as i32;
    let candidates: Vec<Stat> = pids()
        .into_iter()
        .filter(|p| *p != me)
        .filter(|p| runs(*p, pname))
        .filter_map(|p| stat(p).ok())
        .filter(|s| !s.is_dead())
        .collect();
    candidates
        .iter()
        .filter(|s| !candidates.iter().any(|o| o.pid == s.ppid))
        .min_by_key(|s| (s.start_time, s.pid))
        .copied()
}

/// Is this exact process (pid + start time) still alive and not a zombie?
pub fn alive(pid: i32, start_time: u64) -> Liveness {
    match stat(pid) {
        Ok(s) if s.start_time != start_time => Liveness::Gone,
        Ok(s) if s.is_dead() => Liveness::Zombie,
        Ok(_) => Liveness::Alive,
        Err(_) => Liveness::Gone,
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Liveness {
    Alive,
    Zombie,
    Gone,
}

/// Processes that are listening on a local TCP port (IPv4 or IPv6), from
/// /proc/net/tcp{,6}: the count of LISTEN sockets on that port.
pub fn listeners_on(port: u16) -> usize {
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .map(|t| {
            t.lines()
                .skip(1)
                .filter(|l| {
                    let cols: Vec<&str> = l.split_whitespace().collect();
                    let local_port = cols
                        .get(1)
                        .and_then(|a| a.rsplit(':').next())
                        .and_then(|h| u16::from_str_radix(h, 16).ok());
                    local_port == Some(port) && cols.get(3) == Some(&"0A")
                })
                .count()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_blanks_and_parens_in_comm() {
        let t = "4242 (my (odd) prog) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 100 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";
        let s = parse_stat(t).expect("parses");
        assert_eq!(
            s,
            Stat {
                pid: 4242,
                state: 'S',
                ppid: 1,
                pgid: 4242,
                sid: 4242,
                start_time: 987654
            }
        );
    }

    #[test]
    fn own_process_is_found_alive() {
        let me = std::process::id() as i32;
        let s = stat(me).expect("own stat");
        assert_eq!(alive(me, s.start_time), Liveness::Alive);
        assert_eq!(
            alive(me, s.start_time + 1),
            Liveness::Gone,
            "another start time is another process"
        );
    }
}
