//! padmin: talk to the running pcheck of a pfile. `main` parses the command line and
//! hands it to the verb's own module; [`client`] is the socket they share.

mod client;
mod events;
mod fleet;
mod lb;
mod show;
mod shutdown;
mod start;
mod stop;

use clap::Parser;
use psweb::cli::PadminArgs as Args;
use std::process::ExitCode;

fn main() -> ExitCode {
    let args = Args::parse();
    match dispatch(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("padmin: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `-c` names the verb (its words may come as one argument or several).
fn dispatch(args: &Args) -> Result<ExitCode, String> {
    let words: Vec<&str> = args
        .command
        .iter()
        .flat_map(|c| c.split_whitespace())
        .collect();
    match words.as_slice() {
        ["events"] => events::run(args, args.follow),
        ["events", "--follow" | "-f"] => events::run(args, true),
        ["show", "pent"] => show::pent(args),
        ["show", "kernel"] => show::kernel(args),
        ["show", "lb"] => lb::show(args),
        ["drain"] => lb::drain(args),
        ["ready"] => lb::ready(args),
        ["show", "fleet"] => fleet::show(args),
        ["fleet", "hold"] => fleet::hold(args),
        ["fleet", "resume"] => fleet::resume(args),
        ["fleet", "release"] => fleet::release(args, None),
        ["fleet", "release", "--host", host] => fleet::release(args, Some(host)),
        ["shutdown"] => shutdown::run(args),
        ["stop"] => stop::run(args),
        ["start"] => start::run(args),
        _ => Err(format!(
            "unknown command {:?}; expected \"show pent\", \"show kernel\", \"show lb\", \"show fleet\", events, shutdown, stop, start, drain, ready, \"fleet hold\", \"fleet resume\" or \"fleet release\"",
            words.join(" ")
        )),
    }
}
