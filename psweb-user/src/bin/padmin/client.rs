//! The control socket, as every verb uses it: find the socket of the pfile's pcheck,
//! send one request, read one answer; and the answer printed the common way.

use psweb::admin::{Request, Response};
use psweb::cli::PadminArgs as Args;
use psweb::paths::socket_path;
use psweb::pfile;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::ExitCode;
use std::time::Duration;

/// Sends `req` to the pcheck of `args.pfile`; returns its answer and the connection
/// (from which `events --follow` keeps reading). `follow`: no read timeout.
pub fn request(
    args: &Args,
    req: &Request,
    follow: bool,
) -> Result<(Response, BufReader<UnixStream>), String> {
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
    let _ = stream.set_read_timeout((!follow).then_some(Duration::from_secs(30)));
    let mut line = serde_json::to_string(req).map_err(|e| e.to_string())?;
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| format!("sending to pcheck: {e}"))?;
    let mut answer = String::new();
    let mut reader = BufReader::new(stream);
    reader
        .read_line(&mut answer)
        .map_err(|e| format!("reading pcheck's answer: {e}"))?;
    let resp: Response = serde_json::from_str(answer.trim())
        .map_err(|e| format!("pcheck's answer is not understood ({e}): {answer:?}"))?;
    Ok((resp, reader))
}

/// Prints an answer: as JSON with `--json`; else pcheck's refusal on stderr, or what
/// it sent (the kernel view, a message, or the entries' status blocks).
pub fn print(args: &Args, resp: &Response) -> Result<ExitCode, String> {
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(resp).map_err(|e| e.to_string())?
        );
    } else if !resp.ok {
        eprintln!(
            "padmin: {}",
            resp.error
                .as_deref()
                .unwrap_or("pcheck refused the command")
        );
    } else if let Some(lb) = &resp.lb {
        print!("{}", psweb::admin::lb_text(lb));
    } else if let Some(f) = &resp.fleet {
        print!("{}", psweb::admin::fleet_text(f));
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

/// The `-n <pent_id>` that `stop` and `start` need.
pub fn pent_id(args: &Args, verb: &str) -> Result<u32, String> {
    args.pent_id
        .ok_or_else(|| format!("-c {verb} needs -n <pent_id>"))
}
