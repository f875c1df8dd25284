//! /proc: process identity, state, adoption and the members of a service. The one
//! place pcheck reads processes: `sense/` (death evidence, progress) and `act/`
//! (restart, kill, reaping) both use it.

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

/// Is this process's executable `pname`? Both canonicalised, so a symlinked path
/// matches; a replaced binary (" (deleted)") still counts. argv[0] is never enough:
/// any user can start any program under any name.
pub fn runs(pid: i32, pname: &Path) -> bool {
    let want = std::fs::canonicalize(pname).unwrap_or_else(|_| pname.to_path_buf());
    exe(pid).is_some_and(|e| e == want || e == pname)
}

/// The real uid of a process (/proc/PID/status).
pub fn uid(pid: i32) -> Option<u32> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Was this process started by pcheck (a restart script's descendant)? pcheck is a
/// child subreaper, so a daemon that forks twice and calls setsid stays below it.
pub fn born_of_me(pid: i32) -> bool {
    let me = std::process::id() as i32;
    let mut p = pid;
    for _ in 0..64 {
        let Ok(st) = stat(p) else { return false };
        if st.ppid == me {
            return true;
        }
        if st.ppid <= 1 {
            return false;
        }
        p = st.ppid;
    }
    false
}

/// Whether the process `pid` may be taken as the entry's server: it runs as `owner`,
/// and its executable is `pname` — or pcheck started it (then argv[0] may name
/// `pname`, as a JVM started through an alternatives link does).
///
/// A pcheck that is not root cannot read another user's /proc/PID/exe; for such a
/// process (the owner still checked) it falls back to argv[0]. It could not harm
/// that process anyway: it cannot signal it.
pub fn acceptable(pid: i32, pname: &Path, owner: u32, via_pidfile: bool) -> bool {
    if uid(pid) != Some(owner) {
        return false;
    }
    if runs(pid, pname) {
        return true;
    }
    let argv0_is_pname = || argv0(pid).is_some_and(|a| Path::new(&a) == pname);
    if exe(pid).is_none() && !crate::trust::is_root() {
        return argv0_is_pname();
    }
    born_of_me(pid) && (via_pidfile || argv0_is_pname())
}

/// All pids in /proc.
pub fn pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|d| d.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

/// The most of a pidfile that is read: a pid and a newline fit many times over.
pub const PIDFILE_MAX: usize = 64;

/// Reads a pidfile: the first whole number in it. The file is untrusted: opened
/// without following a symlink and without blocking (a FIFO), and only a regular file
/// is read, at most [`PIDFILE_MAX`] bytes.
pub fn read_pidfile(path: &Path) -> Option<i32> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut buf = Vec::with_capacity(PIDFILE_MAX);
    f.take(PIDFILE_MAX as u64).read_to_end(&mut buf).ok()?;
    std::str::from_utf8(&buf)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
        .filter(|p| *p > 0)
}

/// Finds the running process of an entry: by pidfile when one is given, else the
/// oldest process running `pname` whose parent does not run it too (the master, not
/// a worker). Either way the process must be [`acceptable`]: owned by `owner`, and
/// running `pname` or started by pcheck.
pub fn find(pname: &Path, pidfile: Option<&Path>, owner: u32) -> Option<Stat> {
    if let Some(pf) = pidfile {
        let pid = read_pidfile(pf)?;
        let st = stat(pid).ok()?;
        return (!st.is_dead() && acceptable(pid, pname, owner, true)).then_some(st);
    }
    let me = std::process::id() as i32;
    let candidates: Vec<Stat> = pids()
        .into_iter()
        .filter(|p| *p != me)
        .filter(|p| acceptable(*p, pname, owner, false))
        .filter_map(|p| stat(p).ok())
        .filter(|s| !s.is_dead())
        .collect();
    candidates
        .iter()
        .filter(|s| !candidates.iter().any(|o| o.pid == s.ppid))
        .min_by_key(|s| (s.start_time, s.pid))
        .copied()
}

/// The longest pcheck waits for a pidfile to be read (a hung file system).
pub const FIND_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);

/// [`find`] off the runtime thread, given at most [`FIND_LIMIT`] (a pidfile on a hung
/// file system must not stop pcheck): None when it takes longer.
pub async fn find_bounded(pname: &Path, pidfile: Option<&Path>, owner: u32) -> Option<Stat> {
    let (pname, pidfile) = (pname.to_path_buf(), pidfile.map(Path::to_path_buf));
    let job = tokio::task::spawn_blocking(move || find(&pname, pidfile.as_deref(), owner));
    tokio::time::timeout(FIND_LIMIT, job).await.ok()?.ok()?
}

/// [`read_pidfile`] off the runtime thread, given at most [`FIND_LIMIT`].
pub async fn read_pidfile_bounded(path: &Path) -> Option<i32> {
    let path = path.to_path_buf();
    let job = tokio::task::spawn_blocking(move || read_pidfile(&path));
    tokio::time::timeout(FIND_LIMIT, job).await.ok()?.ok()?
}

/// Why a user name has no uid.
#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("user {name}: {source}")]
    Lookup { name: String, source: nix::Error },
    #[error("user {0} does not exist")]
    NoSuch(String),
}

/// The uid of a user name ("root" is 0 without a lookup).
pub fn uid_of_user(name: &str) -> Result<u32, UserError> {
    if name == "root" {
        return Ok(0);
    }
    nix::unistd::User::from_name(name)
        .map_err(|source| UserError::Lookup {
            name: name.to_string(),
            source,
        })?
        .map(|u| u.uid.as_raw())
        .ok_or_else(|| UserError::NoSuch(name.to_string()))
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
    fn pidfiles_are_read_safely() {
        let d = tempfile::tempdir().expect("tmp");
        let ok = d.path().join("ok.pid");
        std::fs::write(&ok, "1234\n").expect("write");
        assert_eq!(read_pidfile(&ok), Some(1234));
        let link = d.path().join("link.pid");
        std::os::unix::fs::symlink(&ok, &link).expect("symlink");
        assert_eq!(read_pidfile(&link), None, "a symlink is not followed");
        let fifo = d.path().join("fifo.pid");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))
            .expect("mkfifo");
        assert_eq!(
            read_pidfile(&fifo),
            None,
            "a FIFO neither blocks nor is read"
        );
        assert_eq!(
            read_pidfile(Path::new("/dev/zero")),
            None,
            "not a regular file"
        );
        let big = d.path().join("big.pid");
        let f = std::fs::File::create(&big).expect("create");
        f.set_len(1 << 40).expect("sparse terabyte");
        assert_eq!(read_pidfile(&big), None, "64 bytes of zeros are no pid");
    }

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
                start_time: 987_654
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
