//! pcheck's own file-descriptor limit, and the one its children get.
//!
//! pcheck raises its soft RLIMIT_NOFILE to the hard limit at start, so that clients
//! of its listeners (each capped, see [`crate::gate`]) can never take the fds a
//! restart needs. Restart scripts and the reboot command get the limit pcheck found,
//! not its raised one: a server started by pcheck behaves as one started by hand.

use std::sync::OnceLock;

static FOUND: OnceLock<libc::rlimit> = OnceLock::new();

/// Raises the soft limit to the hard one; returns (found soft, new soft).
pub fn raise_nofile() -> std::io::Result<(u64, u64)> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let _ = FOUND.set(rl);
    let raised = libc::rlimit {
        rlim_cur: rl.rlim_max,
        rlim_max: rl.rlim_max,
    };
    // SAFETY: setrlimit reads the struct we own.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((rl.rlim_cur, rl.rlim_max))
}

/// The limit a child should get (None: pcheck never raised its own).
pub fn for_children() -> Option<libc::rlimit> {
    FOUND.get().copied()
}

/// In a forked child before exec: puts back the limit pcheck found.
/// Async-signal-safe (one system call, no allocation).
pub fn restore_in_child(rl: Option<libc::rlimit>) -> std::io::Result<()> {
    if let Some(rl) = rl {
        // SAFETY: setrlimit reads the struct on our stack.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
