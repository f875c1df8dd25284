//! padmin: talk to the running pcheck of a pfile. Argument parsing and wiring only.

use clap::Parser;
use psweb::admin::{socket_path, Request, Response};
use psweb::cli::PadminArgs as Args;
use psweb::pfile;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("padmin: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<ExitCode, String> {
    let words: Vec<&str> = args
        .command
        .iter()
        .flat_map(|c| c.split_whitespace())
        .collect();
    let need_id = |what: &str| {
        args.pent_id
            .ok_or_else(|| format!("-c {what} needs -n <pent_id>"))
    };
    let req = match words.as_slice() {
        ["events"] => Request::Events {
            follow: args.follow,
        },
        ["events", "--follow" | "-f"] => Request::Events { follow: true },
        ["show", "pent"] => Request::ShowPent,
        ["show", "kernel"] => Request::ShowKernel,
        ["shutdown"] => Request::Shutdown,
        ["stop"] => Request::Stop {
            pent_id: need_id("stop")?,
        },
        ["start"] => Request::Start {
            pent_id: need_id("start")?,
        },
        _ => {
            return Err(format!(
                "unknown command {:?}; expected \"show pent\", \"show kernel\", events, shutdown, stop or start",
                words.join(" ")
            ))
        }
    };
    // The pfile names the socket when it sets control_socket; parse errors are not
    // padmin's business, so fall back to the default path.
    let configured = pfile::load(&args.pfile)
        .ok()
        .and_then(|p| p.globals.control_socket);
    let sock = socket_path(&args.pfile, configured.as_deref());
    let mut stream = UnixStream::connect(&sock).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused => format!(
            "no pcheck is running for {} ({}: {e})",
            args.pfile.display(),
            sock.display()
        ),
        std::io::ErrorKind::PermissionDenied => format!(
            "permission denied on {}: padmin must run as root",
            sock.display()
        ),
        _ => format!("{}: {e}", sock.display()),
    })?;
    let follow = matches!(req, Request::Events { follow: true });
    let _ = stream.set_read_timeout((!follow).then_some(Duration::from_secs(30)));
    let mut line = serde_json::to_string(&req).map_err(|e| e.to_string())?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| format!("sending to pcheck: {e}"))?;
    let mut answer = String::new();
    let mut reader = BufReader::new(&stream);
    reader
        .read_line(&mut answer)
        .map_err(|e| format!("reading pcheck's answer: {e}"))?;
    let resp: Response = serde_json::from_str(answer.trim())
        .map_err(|e| format!("pcheck's answer is not understood ({e}): {answer:?}"))?;
    if follow && resp.ok {
        // One JSON event per line, as they come, until pcheck ends or we are stopped.
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
    if matches!(req, Request::Events { .. }) && resp.ok {
        for ev in &resp.events {
            println!("{}", serde_json::to_string(ev).map_err(|e| e.to_string())?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&resp).map_err(|e| e.to_string())?
        );
    } else if !resp.ok {
        eprintln!(
            "padmin: {}",
            resp.error
                .as_deref()
                .unwrap_or("pcheck refused the command")
        );
    } else if let Some(k) = &resp.kernel {
        print!("{}", k.to_text());
    } else if let Some(m) = &resp.message {
        println!("{m}");
    } else {
        let blocks: Vec<String> = resp.entries.iter().map(|e| e.to_text()).collect();
        print!("{}", blocks.join("\n"));
    }
    Ok(if resp.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
