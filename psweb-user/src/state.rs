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
    fn sane(&self) -> Result<(), String> {
        if self.version != VERSION {
            return Err(format!("version {} (expected {VERSION})", self.version));
        }
        if self.reboot_count > 1000 || self.reboots.len() > 1000 {
            return Err(format!("reboot_count {} is impossible", self.reboot_count));
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
        let sock = crate::admin::socket_path(pfile, None);
        let name = sock
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "pcheck".into());
        Self {
            path: dir.join(format!("{name}.state")),
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
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return (fresh, None),
            Err(e) => {
                return (
                    fresh,
                    Some(format!("cannot read {}: {e}", self.path.display())),
                )
            }
        };
        let parsed = serde_json::from_str::<State>(&text)
            .map_err(|e| e.to_string())
            .and_then(|s| s.sane().map(|()| s));
        match parsed {
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

    /// Writes atomically: temp file, fsync, rename, fsync of the directory.
    pub fn save(&self, s: &State) -> std::io::Result<()> {
        let dir = self.path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir)?;
        let tmp = self.path.with_extension("tmp");
        let body = serde_json::to_vec_pretty(s).map_err(std::io::Error::other)?;
        {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)?;
            let written = f.write_all(&body).and_then(|()| f.sync_all());
            if let Err(e) = written {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        }
        std::fs::rename(&tmp, &self.path)?;
        std::fs::File::open(dir)?.sync_all()
    }
}

/// This boot's id (changes at every boot).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
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
        assert!(
            !store.path().with_extension("tmp").exists(),
            "no temp file left"
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
