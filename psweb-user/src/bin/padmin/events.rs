//! `padmin -c events [--follow]`: the recent events as JSON lines; with `--follow`,
//! new ones as they come, until pcheck ends or padmin is stopped.

use crate::client;
use psweb::admin::Request;
use psweb::cli::PadminArgs as Args;
use std::io::{BufRead, Write};
use std::process::ExitCode;

pub fn run(args: &Args, follow: bool) -> Result<ExitCode, String> {
    let (resp, mut reader) = client::request(args, &Request::Events { follow }, follow)?;
    if !resp.ok {
        return client::print(args, &resp);
    }
    if follow {
        let mut out = std::io::stdout().lock();
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => return Ok(ExitCode::SUCCESS),
                Ok(_) => {
                    if out
                        .write_all(line.as_bytes())
                        .and_then(|()| out.flush())
                        .is_err()
                    {
                        return Ok(ExitCode::SUCCESS);
                    }
                }
                Err(e) => return Err(format!("reading events from pcheck: {e}")),
            }
        }
    }
    for ev in &resp.events {
        println!("{}", serde_json::to_string(ev).map_err(|e| e.to_string())?);
    }
    Ok(ExitCode::SUCCESS)
}
