//! `padmin -c start -n ID`: monitoring of one entry on again (`monitor_sts` on).

use crate::client;
use psweb::admin::Request;
use psweb::cli::PadminArgs as Args;
use std::process::ExitCode;

pub fn run(args: &Args) -> Result<ExitCode, String> {
    let pent_id = client::pent_id(args, "start")?;
    let (resp, _) = client::request(args, &Request::Start { pent_id }, false)?;
    client::print(args, &resp)
}
