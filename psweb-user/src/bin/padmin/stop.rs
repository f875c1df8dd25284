//! `padmin -c stop -n ID`: monitoring of one entry off (`monitor_sts` off).

use crate::client;
use psweb::admin::Request;
use psweb::cli::PadminArgs as Args;
use std::process::ExitCode;

pub fn run(args: &Args) -> Result<ExitCode, String> {
    let pent_id = client::pent_id(args, "stop")?;
    let (resp, _) = client::request(args, &Request::Stop { pent_id }, false)?;
    client::print(args, &resp)
}
