//! Persisted state: one small JSON file per pfile, so that reboot counts, restart
//! counts and the last verdicts survive pcheck restarts and host reboots.
//!
//! Written atomically (temp file, fsync, rename, fsync of the directory): a crash
//! mid-write leaves the old file or the new one, never half of one. A file that does
//! not parse, or says impossible things, is reported, kept aside as `*.corrupt` and
//! replaced — never trusted blindly.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

pub const VERSION: u32 = 1;

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    pub version: u32,
    pub pfile: String,
    /// Automatic reboots in a row.
    pub reboot_count: u32,
    /// The last automatic reboots, newest last (at most 20).
    #[serde(default)]
    pub reboots: Vec<RebootRecord>,
    #[serde(default)]
    pub entries: Vec<EntryState>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct RebootRecord {
    /// Local time, for people.
    pub at: String,
    /// /proc/sys/kernel/random/boot_id of the boot that rebooted.
    pub boot_id: String,
    pub count: u32,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct EntryState {
    pub pent_id: u32,
    pub pname: String,
    pub restart_count: u32,
    pub last_verdict: Option<String>,
}

impl State {
    /// Impossible values mean the file is not ours or was damaged.
    fn sane(&self) -> Result<(), StateError> {
        if self.version != VERSION {
            return Err(StateError::Version(self.version));
        }
        if self.reboot_count > 1000 || self.reboots.len() > 1000 {
            return Err(StateError::RebootCount(self.reboot_count));
        }
        Ok(())
    }

    pub fn entry(&self, pent_id: u32, pname: &str) -> Option<&EntryState> {
        self.entries
            .iter()
            .find(|e| e.pent_id == pent_id && e.pname == pname)
    }
}

/// The state file of one pfile.
pub struct Store {
    path: PathBuf,
    /// The last write failed (so the next failure is not logged again).
    pub failing: bool,
}

impl Store {
    pub fn new(dir: &Path, pfile: &Path) -> Self {
        Self {
            path: crate::paths::state_file(dir, pfile),
            failing: false,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the state. Missing: a fresh state (Ok). Corrupt: the file is moved to
    /// `<name>.corrupt` and a fresh state is returned with the reason (Err).
    pub fn load(&self, pfile: &Path) -> (State, Option<String>) {
        let fresh = State {
            version: VERSION,
            pfile: pfile.display().to_string(),
            ..State::default()
        };
        let text = match read_small(&self.path, 16 * 1024 * 1024) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (fresh, None),
            Err(e) => {
                return (
                    fresh,
                    Some(format!("cannot read {}: {e}", self.path.display())),
                )
            }
        };
        match parse(&text) {
            Ok(s) => (s, None),
            Err(why) => {
                let aside = self.path.with_extension("corrupt");
                let _ = std::fs::rename(&self.path, &aside);
                (
                    fresh,
                    Some(format!(
                        "state file {} is corrupt ({why}); kept as {} and replaced by a fresh one",
                        self.path.display(),
                        aside.display()
                    )),
                )
            }
        }
    }

    /// Writes atomically: temp file, fsync, rename, fsync of the directory. The
    /// temp file is created new (`O_EXCL`, a random name, never through a symlink),
    /// so a name planted in the directory cannot redirect the write. The reboot
    /// records are also written to the second record ([`Store::boots_path`]).
    pub fn save(&self, s: &State) -> std::io::Result<()> {
        let body = serde_json::to_vec_pretty(s).map_err(std::io::Error::other)?;
        write_atomic(&self.path, &body)?;
        let boots: String = s
            .reboots
            .iter()
            .filter(|_| s.reboot_count > 0)
            .map(|r| format!("{} {} {}\n", r.boot_id, r.count, r.at))
            .collect();
        write_atomic(&self.boots_path(), boots.as_bytes())
    }

    /// The second record of the automatic reboots in a row: one line per reboot,
    /// `<boot id> <count> <local time>`. When the state file is lost (deleted,
    /// corrupt), the count and the records come from here, so the reboot limit still
    /// holds.
    pub fn boots_path(&self) -> PathBuf {
        self.path.with_extension("boots")
    }

    /// The reboots the second record holds (oldest first; empty when there is none).
    pub fn recorded_reboots(&self) -> Vec<RebootRecord> {
        let Ok(text) = read_small(&self.boots_path(), 64 * 1024) else {
            return Vec::new();
        };
        text.lines()
            .filter_map(|l| {
                let mut f = l.splitn(3, ' ');
                let boot_id = f.next()?.to_string();
                let count = f.next()?.parse::<u32>().ok()?.min(1000);
                let at = f.next().unwrap_or("").to_string();
                Some(RebootRecord { at, boot_id, count })
            })
            .collect()
    }

    /// The state as loaded, completed from the second record: the reboot count is
    /// the larger of the two, and the records come from the second one when the state
    /// file has none (it was lost).
    pub fn with_recorded_reboots(&self, mut s: State) -> State {
        let recorded = self.recorded_reboots();
        let last = recorded.last().map_or(0, |r| r.count);
        if last > s.reboot_count {
            s.reboot_count = last;
        }
        if s.reboots.is_empty() {
            s.reboots = recorded;
        }
        s
    }
}

/// Writes `body` to `path` atomically through a new temp file in the same directory.
fn write_atomic(path: &Path, body: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir)?;
    let stem = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{stem}."))
        .suffix(".tmp")
        .tempfile_in(dir)?;
    tmp.write_all(body)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// Reads a file pcheck owns, without following a symlink and at most `max` bytes.
fn read_small(path: &Path, max: u64) -> std::io::Result<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not a regular file",
        ));
    }
    let mut text = String::new();
    f.take(max).read_to_string(&mut text)?;
    Ok(text)
}

/// Whether `dir` (or its nearest existing ancestor) is on tmpfs.
pub fn on_tmpfs(dir: &Path) -> bool {
    let mut p = dir;
    loop {
        match nix::sys::statfs::statfs(p) {
            Ok(fs) => return fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC,
            Err(_) => match p.parent() {
                Some(parent) => p = parent,
                None => return false,
            },
        }
    }
}

/// A state file's text as pcheck trusts it: valid JSON of this version, with sane
/// values; Err says what is wrong.
pub fn parse(text: &str) -> Result<State, StateError> {
    let s = serde_json::from_str::<State>(text)?;
    s.sane()?;
    Ok(s)
}

/// Why a state file's text is not trusted (it is then kept aside as `.corrupt`).
#[derive(thiserror::Error, Debug)]
pub enum StateError {
    #[error("{0}")]
    Json(#[from] serde_json::Error),
    #[error("version {0} (expected {VERSION})")]
    Version(u32),
    #[error("reboot_count {0} is impossible")]
    RebootCount(u32),
}

/// This boot's id (changes at every boot). Read from `$PSWEB_BOOT_ID_FILE` when set
/// (tests with a harmless reboot command change it to stand for a reboot).
pub fn boot_id() -> String {
    let src = std::env::var_os("PSWEB_BOOT_ID_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/proc/sys/kernel/random/boot_id"));
    read_small(&src, 256)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corrupt_file_is_replaced() {
        let dir = tempfile::tempdir().expect("tmp");
        let pfile = dir.path().join("pfile");
        let store = Store::new(dir.path(), &pfile);
        let (mut s, err) = store.load(&pfile);
        assert!(err.is_none());
        s.reboot_count = 2;
        s.entries.push(EntryState {
            pent_id: 1,
            pname: "/usr/sbin/httpd".into(),
            restart_count: 5,
            last_verdict: None,
        });
        store.save(&s).expect("save");
        assert_eq!(store.load(&pfile), (s.clone(), None));
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("ls")
            .filter_map(|d| d.ok())
            .filter(|d| d.file_name().to_string_lossy().ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "no temp file left: {left:?}");

        // The second record keeps the reboots when the state file is lost.
        s.reboot_count = 2;
        s.reboots = vec![RebootRecord {
            at: "2026/12/05 03:00:00".into(),
            boot_id: "b-1".into(),
            count: 2,
        }];
        store.save(&s).expect("save");
        std::fs::remove_file(store.path()).expect("lose the state file");
        let (fresh, _) = store.load(&pfile);
        let back = store.with_recorded_reboots(fresh);
        assert_eq!(
            (back.reboot_count, back.reboots.clone()),
            (2, s.reboots.clone())
        );
        store.save(&back).expect("save");
        std::fs::remove_file(store.path()).expect("lose it again");
        let (fresh, _) = store.load(&pfile);
        assert_eq!(
            store.with_recorded_reboots(fresh).reboot_count,
            2,
            "still held"
        );

        std::fs::write(store.path(), "{ half a file").expect("damage");
        let (fresh, err) = store.load(&pfile);
        assert_eq!(fresh.reboot_count, 0);
        assert!(
            err.as_deref().is_some_and(|e| e.contains("corrupt")),
            "{err:?}"
        );
        assert!(
            store.path().with_extension("corrupt").exists(),
            "kept aside"
        );

        let mut bad = s;
        bad.reboot_count = 99_999;
        std::fs::write(store.path(), serde_json::to_string(&bad).expect("json")).expect("write");
        let (fresh, err) = store.load(&pfile);
        assert_eq!(fresh.reboot_count, 0, "impossible values are not trusted");
        assert!(err.is_some());
    }
}
