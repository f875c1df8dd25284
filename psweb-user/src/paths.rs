//! Where pcheck keeps its files. pcheck, padmin and the state store compute the same
//! names from the same pfile: `pcheck-<hash of the pfile's absolute path>` with
//! `.sock` (the control socket) or `.state` (the state file).

use std::path::{Path, PathBuf};

/// Where pcheck for `pfile` serves padmin: `control_socket` from the pfile, else
/// `$PSWEB_RUN_DIR` (default /run/psweb) + `pcheck-<hash>.sock`.
pub fn socket_path(pfile: &Path, configured: Option<&Path>) -> PathBuf {
    if let Some(p) = configured {
        return p.to_path_buf();
    }
    let dir = std::env::var_os("PSWEB_RUN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/run/psweb"));
    dir.join(format!("{}.sock", instance_name(pfile)))
}

/// The state file of `pfile` in the state directory `dir`: `pcheck-<hash>.state`.
pub fn state_file(dir: &Path, pfile: &Path) -> PathBuf {
    dir.join(format!("{}.state", instance_name(pfile)))
}

/// `pcheck-<FNV-1a of the pfile's absolute path, 16 hex digits>`.
fn instance_name(pfile: &Path) -> String {
    let abs = std::fs::canonicalize(pfile).unwrap_or_else(|_| pfile.to_path_buf());
    format!("pcheck-{:016x}", fnv1a(abs.as_os_str().as_encoded_bytes()))
}

/// FNV-1a, 64 bit: stable across builds and versions (unlike std's hasher).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_and_state_share_the_name() {
        let pfile = Path::new("/nonexistent/psweb/test.pfile");
        let sock = socket_path(pfile, None);
        let state = state_file(Path::new("/var/lib/psweb"), pfile);
        assert_eq!(sock.file_stem(), state.file_stem());
        assert_eq!(state.extension().and_then(|e| e.to_str()), Some("state"));
        // The FNV-1a test vector: stable across releases (names of existing files).
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
        let configured = Path::new("/tmp/x.sock");
        assert_eq!(socket_path(pfile, Some(configured)), configured);
    }
}
