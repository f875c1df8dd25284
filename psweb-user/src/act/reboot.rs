//! Running the reboot command (auto-reboot). No shell; its output goes to the log.

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
        let run = tokio::process::Command::new(prog)
            .args(args)
            .stdin(Stdio::null())
            .output();
        match tokio::time::timeout(Duration::from_secs(120), run).await {
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
