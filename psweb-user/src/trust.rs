//! Paths pcheck acts on as root (restart scripts, the reboot command, the pfile,
//! pidfiles, the state directory, the control socket's directory, CA files).
//!
//! A path is checked as written, component by component with `lstat`: every
//! directory passed through and every symlink followed must be owned by root and not
//! writable by group or others (a directory with the sticky bit, like /tmp, may be
//! writable: others cannot replace what root owns in it). A symlink is followed only
//! when it is root's and sits in a directory that passed: `/var/run -> /run` and the
//! alternatives links stay allowed, `app/restart.rc -> good.rc` in a service user's
//! directory does not.
//!
//! The check returns the fully resolved path. Everything on it is root's and cannot
//! be changed by anyone else, so acting on the resolved path right after the check
//! cannot be redirected by a non-root user: only root could swap a component. The
//! check is repeated before every use (a restart, a reboot), not only at start.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// At most this many symlinks are followed (the kernel's own limit).
const MAX_LINKS: usize = 40;

/// Why a path pcheck would act on as root is refused. `what` is the role the path
/// plays ("restart script", ...), `path` the path as written.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{what} {}: expected an absolute path", .path.display())]
    NotAbsolute { what: String, path: PathBuf },
    /// A component could not be read (`at` names it when it is not `path` itself).
    #[error("{what} {}: {}{source}", .path.display(), at_prefix(.at.as_ref()))]
    Io {
        what: String,
        path: PathBuf,
        at: Option<PathBuf>,
        source: std::io::Error,
    },
    #[error("{what} {}: too many levels of symbolic links", .path.display())]
    TooManyLinks { what: String, path: PathBuf },
    #[error("{what} {}: {} is not a directory", .path.display(), .at.display())]
    NotADirectory {
        what: String,
        path: PathBuf,
        at: PathBuf,
    },
    /// `kind` names the component ("directory /x above restart script", ...).
    #[error("refusing {what} {}: {kind} {why}", .path.display())]
    Refused {
        what: String,
        path: PathBuf,
        kind: String,
        why: Unsafe,
    },
}

/// What is wrong with one component.
#[derive(Debug, thiserror::Error)]
pub enum Unsafe {
    #[error("is owned by {owner}, not root (mode {mode:04o}; a non-root user could change what pcheck runs or reads as root)")]
    NotRoots { owner: String, mode: u32 },
    #[error("is writable by group or others (mode {mode:04o}); chmod go-w it")]
    Writable { mode: u32 },
    #[error("is owned by {owner}, not root (a non-root user could point it elsewhere)")]
    LinkNotRoots { owner: String },
}

fn at_prefix(at: Option<&PathBuf>) -> String {
    match at {
        Some(p) => format!("{}: ", p.display()),
        None => String::new(),
    }
}

/// Whether pcheck runs as root (then paths are checked; else there is nothing a
/// non-root pcheck could be made to do that its user could not do anyway).
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A user name for messages: `www-data (uid 33)`, or `uid 12345`.
pub fn owner_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid)) {
        Ok(Some(u)) => format!("{} (uid {uid})", u.name),
        _ => format!("uid {uid}"),
    }
}

/// Checks `path` (which must exist) as pcheck's `what` ("restart script", ...).
/// Returns the resolved path, or why it is refused, naming the component, its owner
/// and its mode. Not root: the path is returned as it is.
pub fn check(path: &Path, what: &str) -> Result<PathBuf, TrustError> {
    if !is_root() {
        return Ok(path.to_path_buf());
    }
    walk(path, what, 0)
}

/// Like [`check`], for a path that may not exist yet (a file or directory pcheck
/// creates): the nearest existing ancestor is checked, and must be a directory.
pub fn check_creatable(path: &Path, what: &str) -> Result<(), TrustError> {
    if !is_root() {
        return Ok(());
    }
    let mut p = path;
    loop {
        match std::fs::symlink_metadata(p) {
            Ok(_) => return walk(p, what, 0).map(|_| ()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match p.parent() {
                Some(parent) => p = parent,
                None => return Ok(()),
            },
            Err(e) => {
                return Err(TrustError::Io {
                    what: what.to_string(),
                    path: path.to_path_buf(),
                    at: Some(p.to_path_buf()),
                    source: e,
                })
            }
        }
    }
}

fn walk(path: &Path, what: &str, me: u32) -> Result<PathBuf, TrustError> {
    if !path.is_absolute() {
        return Err(TrustError::NotAbsolute {
            what: what.to_string(),
            path: path.to_path_buf(),
        });
    }
    let refuse = |kind: &str, why: Unsafe| TrustError::Refused {
        what: what.to_string(),
        path: path.to_path_buf(),
        kind: kind.to_string(),
        why,
    };
    let mut todo: VecDeque<OsString> = components(path);
    let mut cur = PathBuf::from("/");
    let root = lstat(&cur, path, what)?;
    check_dir_or_file(&root, me, true).map_err(|why| refuse("directory / above", why))?;
    let mut links = 0;
    while let Some(name) = todo.pop_front() {
        if name == ".." {
            cur.pop();
            continue;
        }
        let next = cur.join(&name);
        let m = lstat(&next, path, what)?;
        let last = todo.is_empty();
        if m.file_type().is_symlink() {
            links += 1;
            if links > MAX_LINKS {
                return Err(TrustError::TooManyLinks {
                    what: what.to_string(),
                    path: path.to_path_buf(),
                });
            }
            if m.uid() != 0 && m.uid() != me {
                return Err(refuse(
                    &format!("symlink {}", next.display()),
                    Unsafe::LinkNotRoots {
                        owner: owner_name(m.uid()),
                    },
                ));
            }
            let target = std::fs::read_link(&next).map_err(|e| TrustError::Io {
                what: what.to_string(),
                path: path.to_path_buf(),
                at: Some(next.clone()),
                source: e,
            })?;
            if target.is_absolute() {
                cur = PathBuf::from("/");
            }
            for c in components(&target).into_iter().rev() {
                todo.push_front(c);
            }
            continue;
        }
        let kind = if last {
            what.to_string()
        } else {
            format!("directory {} above {what}", next.display())
        };
        if !last && !m.is_dir() {
            return Err(TrustError::NotADirectory {
                what: what.to_string(),
                path: path.to_path_buf(),
                at: next,
            });
        }
        check_dir_or_file(&m, me, !last || m.is_dir()).map_err(|why| refuse(&kind, why))?;
        cur = next;
    }
    Ok(cur)
}

/// The normal components of a path ("." dropped, ".." kept), root not included.
fn components(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

fn lstat(p: &Path, path: &Path, what: &str) -> Result<std::fs::Metadata, TrustError> {
    std::fs::symlink_metadata(p).map_err(|e| TrustError::Io {
        what: what.to_string(),
        path: path.to_path_buf(),
        at: (p != path).then(|| p.to_path_buf()),
        source: e,
    })
}

/// Owned by root (or pcheck's uid) and not writable by group or others; a sticky
/// directory may be writable.
fn check_dir_or_file(m: &std::fs::Metadata, me: u32, dir: bool) -> Result<(), Unsafe> {
    let mode = m.mode() & 0o7777;
    if m.uid() != 0 && m.uid() != me {
        return Err(Unsafe::NotRoots {
            owner: owner_name(m.uid()),
            mode,
        });
    }
    let sticky = dir && m.is_dir() && mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky {
        return Err(Unsafe::Writable { mode });
    }
    Ok(())
}

/// Is the directory holding `file` writable by a non-root user (so that the file's
/// content, not only its name, comes from someone untrusted)? Some(why) if so.
pub fn writable_by_others(file: &Path) -> Option<String> {
    let dir = file.parent()?;
    check_creatable(dir, "directory")
        .err()
        .map(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn root_symlinks_in_root_dirs_pass_and_resolve() {
        if !is_root() {
            return;
        }
        let d = tempfile::tempdir().expect("tmp");
        let target = d.path().join("good.rc");
        std::fs::write(&target, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let link = d.path().join("restart.rc");
        std::os::unix::fs::symlink("good.rc", &link).expect("symlink");
        let resolved = check(&link, "restart script").expect("passes");
        assert_eq!(resolved, std::fs::canonicalize(&target).expect("canonical"));
    }

    #[test]
    fn symlink_in_a_users_directory_is_refused() {
        if !is_root() {
            return;
        }
        let d = tempfile::tempdir().expect("tmp");
        let target = d.path().join("good.rc");
        std::fs::write(&target, "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let app = d.path().join("app");
        std::fs::create_dir(&app).expect("mkdir");
        std::os::unix::fs::symlink(&target, app.join("restart.rc")).expect("symlink");
        std::os::unix::fs::chown(&app, Some(65534), Some(65534)).expect("chown");
        let err = check(&app.join("restart.rc"), "restart script")
            .expect_err("refused")
            .to_string();
        assert!(
            err.contains(&format!(
                "directory {} above restart script is owned by",
                app.display()
            )),
            "{err}"
        );
        assert!(err.contains("uid 65534"), "{err}");
        // The symlink itself owned by someone else, in a root directory.
        std::os::unix::fs::chown(&app, Some(0), Some(0)).expect("chown");
        std::os::unix::fs::lchown(app.join("restart.rc"), Some(65534), Some(65534))
            .expect("lchown");
        let err = check(&app.join("restart.rc"), "restart script")
            .expect_err("refused")
            .to_string();
        assert!(err.contains("symlink"), "{err}");
    }
}
