//! Running the reboot command (auto-reboot). No shell, the same clean environment as
//! restart scripts; its output goes to the log line by line. At shutdown pcheck waits
//! for a reboot command still running at most `shutdown_flush`.

use super::output;
use crate::report::Logger;
use crate::shutdown::Shutdown;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

/// How long the reboot command may run before pcheck says so (a real reboot ends
/// pcheck first).
const REBOOT_WAIT: Duration = Duration::from_secs(120);

/// Runs `command` in the background and logs how it ended (a real reboot never
/// returns; a harmless command, as in tests, does).
pub fn spawn(command: Vec<String>, log: Arc<Logger>, sd: &Shutdown) {
    let sd2 = sd.clone();
    sd.spawn_command_task(async move {
        let Some((prog, args)) = command.split_first() else {
            log.error("Auto Reboot: no reboot command configured");
            return;
        };
        // Checked again now, as written: it runs as root.
        let exec = match crate::trust::check(std::path::Path::new(prog), "reboot command") {
            Ok(p) => p,
            Err(e) => {
                log.error(&format!("Auto Reboot: {e}"));
                return;
            }
        };
        let mut cmd = tokio::process::Command::new(exec);
        super::restart::clean_env(&mut cmd);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let nofile = super::limits::for_children();
        // SAFETY: restore_in_child is one setrlimit call (async-signal-safe).
        unsafe {
            cmd.pre_exec(move || super::limits::restore_in_child(nofile));
        }
        let mut child = match super::reaper::spawn(&mut cmd) {
            Ok(c) => c,
            Err(e) => {
                log.error(&format!("Auto Reboot: cannot run {prog}: {e}"));
                return;
            }
        };
        output::spawn_child_output(&mut child, "reboot command", &log, &sd2);
        let id = child.id();
        let ended = tokio::time::timeout(REBOOT_WAIT, child.wait()).await;
        if ended.is_ok() {
            super::reaper::release(id);
        }
        match ended {
            Ok(Ok(status)) => log.warn(&format!(
                "reboot command {} returned ({status}); pcheck goes on monitoring",
                command.join(" "),
            )),
            Ok(Err(e)) => log.error(&format!("Auto Reboot: cannot run {prog}: {e}")),
            Err(_) => log.error(&format!(
                "Auto Reboot: {prog} still runs after {} s",
                REBOOT_WAIT.as_secs()
            )),
        }
    });
}
