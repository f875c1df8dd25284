//! Load balancers: `padmin -c "show lb"` (what each entry's balancer is told, why,
//! since when), `-c drain -n ID` (tell it to drain the entry) and `-c ready -n ID`
//! (undo the drain).

use crate::client;
use psweb::admin::Request;
use psweb::cli::PadminArgs as Args;
use std::process::ExitCode;

pub fn show(args: &Args) -> Result<ExitCode, String> {
    let (resp, _) = client::request(args, &Request::ShowLb, false)?;
    client::print(args, &resp)
}

pub fn drain(args: &Args) -> Result<ExitCode, String> {
    let pent_id = client::pent_id(args, "drain")?;
    let (resp, _) = client::request(args, &Request::Drain { pent_id }, false)?;
    client::print(args, &resp)
}

pub fn ready(args: &Args) -> Result<ExitCode, String> {
    let pent_id = client::pent_id(args, "ready")?;
    let (resp, _) = client::request(args, &Request::Ready { pent_id }, false)?;
    client::print(args, &resp)
}
