//! How a process ended, from the raw status the kernel keeps for it.

use super::DeathKind;

impl DeathKind {
    /// Decodes a raw wait status (`task_struct.exit_code`, or what `waitpid` returns
    /// for a process that ended): the low 7 bits are the killing signal (0: none),
    /// bits 8..16 the exit status; the core-dump bit (0x80) is ignored.
    pub fn from_wait_status(raw: u32) -> Self {
        let signal = raw & 0x7f;
        if signal == 0 {
            Self::Exited(((raw >> 8) & 0xff) as i32)
        } else {
            Self::Signaled(signal as i32)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::DeathKind;

    #[test]
    fn wait_status_table() {
        let cases: &[(u32, DeathKind)] = &[
            (0, DeathKind::Exited(0)),
            (1 << 8, DeathKind::Exited(1)),
            (255 << 8, DeathKind::Exited(255)),
            (9, DeathKind::Signaled(9)),
            (15, DeathKind::Signaled(15)),
            // SIGSEGV with a core dump.
            (0x80 | 0xb, DeathKind::Signaled(11)),
            // SIGABRT with a core dump.
            (0x80 | 0x6, DeathKind::Signaled(6)),
            // Bits above the status byte are not the status.
            (0x1_0100, DeathKind::Exited(1)),
        ];
        for (raw, want) in cases {
            assert_eq!(DeathKind::from_wait_status(*raw), *want, "raw {raw:#x}");
        }
    }
}
