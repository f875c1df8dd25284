//! Running the reboot command (auto-reboot). No shell, the same clean environment as
//! restart scripts; its output goes to the log.

use crate::report::Logger;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

/// Runs `command` in the background and logs how it ended (a real reboot never
/// returns; a harmless command, as in tests, does).
pub fn spawn(command: Vec<String>, log: Arc<Logger>) {
    tokio::spawn(async move {
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
        let child = match super::reaper::spawn(&mut cmd) {
            Ok(c) => c,
            Err(e) => {
                log.error(&format!("Auto Reboot: cannot run {prog}: {e}"));
                return;
            }
        };
        let id = child.id();
        let run = child.wait_with_output();
        let ended = tokio::time::timeout(Duration::from_secs(120), run).await;
        if ended.is_ok() {
            super::reaper::release(id);
        }
        match ended {
            Ok(Ok(out)) => {
                for line in String::from_utf8_lossy(&out.stdout)
                    .lines()
                    .chain(String::from_utf8_lossy(&out.stderr).lines())
                {
                    log.info(&format!("reboot command: {line}"));
                }
                log.warn(&format!(
                    "reboot command {} returned ({}); pcheck goes on monitoring",
                    command.join(" "),
                    out.status
                ));
            }
            Ok(Err(e)) => log.error(&format!("Auto Reboot: cannot run {prog}: {e}")),
            Err(_) => log.error(&format!("Auto Reboot: {prog} still runs after 120 s")),
        }
    });
}
