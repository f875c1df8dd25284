//! `padmin -c "show fleet"`: the fleet as etcd holds it (members, reboot slots, holds);
//! `fleet hold` / `fleet resume`: hold automatic reboots fleet-wide (e.g. during a
//! deploy) and lift the hold; `fleet release --host NAME`: free a stuck reboot or restart slot.
//! pcheck carries them out through its etcd connection; every member logs them.

use crate::client;
use psweb::admin::Request;
use psweb::cli::PadminArgs as Args;
use std::process::ExitCode;

pub fn show(args: &Args) -> Result<ExitCode, String> {
    let (resp, _) = client::request(args, &Request::ShowFleet, false)?;
    client::print(args, &resp)
}

pub fn hold(args: &Args) -> Result<ExitCode, String> {
    let req = Request::FleetHold { who: operator() };
    let (resp, _) = client::request(args, &req, false)?;
    client::print(args, &resp)
}

pub fn resume(args: &Args) -> Result<ExitCode, String> {
    let (resp, _) = client::request(args, &Request::FleetResume, false)?;
    client::print(args, &resp)
}

/// `host`: given after the verb (`-c fleet release --host NAME`), else `--host`.
pub fn release(args: &Args, host: Option<&str>) -> Result<ExitCode, String> {
    let host = host
        .map(str::to_string)
        .or_else(|| args.host.clone())
        .ok_or("-c \"fleet release\" needs --host NAME")?;
    let (resp, _) = client::request(args, &Request::FleetRelease { host }, false)?;
    client::print(args, &resp)
}

/// Who asks for a fleet hold: the login name and host, as the log and the hold key
/// show it.
fn operator() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "root".to_string());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    format!("padmin ({user}@{host})")
}
