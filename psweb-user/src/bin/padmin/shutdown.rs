//! `padmin -c shutdown`: pcheck stops (its one shutdown path); the servers keep running.

use crate::client;
use psweb::admin::Request;
use psweb::cli::PadminArgs as Args;
use std::process::ExitCode;

pub fn run(args: &Args) -> Result<ExitCode, String> {
    let (resp, _) = client::request(args, &Request::Shutdown, false)?;
    client::print(args, &resp)
}
