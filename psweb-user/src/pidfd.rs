//! A process held by pidfd (Linux 5.3+): it refers to that one process for as long as
//! the fd is open, so a recycled pid can never be mistaken for it, and it becomes
//! readable the moment the process exits (zombie or reaped). `sense/` watches deaths
//! with it, `act/` kills exactly the watched process through it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use tokio::io::unix::AsyncFd;

pub struct PidFd {
    fd: OwnedFd,
    pid: i32,
}

impl AsRawFd for PidFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl PidFd {
    /// pidfd_open(2). Fails with ENOSYS on kernels before 5.3.
    pub fn open(pid: i32) -> io::Result<Self> {
        // SAFETY: a plain syscall with integer arguments; the result is checked.
        let r = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        let raw = RawFd::try_from(r).map_err(|_| io::Error::other("pidfd out of range"))?;
        // SAFETY: the kernel just gave us this fd and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self { fd, pid })
    }

    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// Sends a signal to exactly this process (pidfd_send_signal(2)).
    pub fn send_signal(&self, sig: i32) -> io::Result<()> {
        // SAFETY: integer arguments and a null siginfo, as the man page allows.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Resolves when the process exits.
    pub async fn exited(self) -> io::Result<Self> {
        // SAFETY: the fd is owned by `self`, which the AsyncFd owns until into_inner,
        // and as_raw_fd always returns that same fd.
        let afd = unsafe { AsyncFd::register_with_interest(self, tokio::io::Interest::READABLE) }
            .map_err(|e| io::Error::other(e.to_string()))?;
        let _guard = afd.readable().await?;
        Ok(afd.into_inner())
    }
}

/// Does this kernel have pidfd_open?
pub fn available() -> bool {
    PidFd::open(std::process::id() as i32).is_ok()
}
