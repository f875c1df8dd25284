//! `padmin -c "show pent"`: the seed's status block of each entry; `show kernel`:
//! where the evidence comes from. `--json` prints pcheck's answer as it is.

use crate::client;
use psweb::admin::Request;
use psweb::cli::PadminArgs as Args;
use std::process::ExitCode;

pub fn pent(args: &Args) -> Result<ExitCode, String> {
    let (resp, _) = client::request(args, &Request::ShowPent, false)?;
    client::print(args, &resp)
}

pub fn kernel(args: &Args) -> Result<ExitCode, String> {
    let (resp, _) = client::request(args, &Request::ShowKernel, false)?;
    client::print(args, &resp)
}
