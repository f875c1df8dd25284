//! Writes the man pages (pcheck.8, padmin.8) and the bash and zsh completions of
//! pcheck and padmin from their clap definitions (`psweb::cli`), so that the docs
//! can never disagree with what the programs parse.
//!
//! `cargo run -p psweb --example psweb-gendoc -- OUTDIR` writes
//! `OUTDIR/man/{pcheck,padmin}.8` and
//! `OUTDIR/completions/{bash/pcheck,bash/padmin,zsh/_pcheck,zsh/_padmin}`.
//! `cargo xtask package` runs it and puts the files in the RPM.

use clap::CommandFactory;
use clap_complete::Shell;
use psweb::cli::{PadminArgs, PcheckArgs};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

const PCHECK_EXTRA: &str = r#".SH "EXIT STATUS"
.TP
.B 0
ended by \fBpadmin \-c shutdown\fR, SIGTERM or SIGINT, or by the \fBshutdown\fR retry\-over action;
with \fB\-\-check\fR: the pfile is valid.
.TP
.B 1
any other failure to start (for example the eBPF program was required and could not be loaded).
.TP
.B 2
a bad pfile, or a restart script that does not exist or is not executable.
.TP
.B 3
the \fBexit\fR retry\-over action ran: a cluster product or the auto\-reboot feature should take over.
.SH FILES
.TP
.I /etc/psweb/NAME.pfile
the pfile of the \fBpcheck@NAME\fR systemd unit.
.TP
.I /var/opt/HA/PSWE/conf/src/
templates: \fIhttpd/\fR, \fItomcat/\fR, \fInginx/\fR, \fImulti\-instance/\fR and the seed's \fIsamples/\fR, each with a README.md and its restart scripts.
.TP
.I /usr/lib/psweb/psweb.bpf.o
the eBPF program (process exit and accept\-queue overflow evidence); \fB\-\-bpf\-object\fR or \fBPSWEB_BPF_OBJECT\fR names another.
.TP
.I /run/psweb/pcheck\-HASH.sock
the control socket \fBpadmin\fR talks to (the pfile's \fBcontrol_socket\fR key, or derived from the pfile's absolute path; \fBPSWEB_RUN_DIR\fR replaces \fI/run/psweb\fR).
.SH LOGS
Every event goes to syslog with the ident \fBpcheck\fR and the pid, e.g.
\fBpcheck[1234]: Find Web Server Stall: pid = 4321 : port = 80\fR,
and to stderr unless \fB\-q\fR is given (under systemd: \fBjournalctl \-u pcheck@NAME\fR).
.SH EXAMPLES
.nf
pcheck \-\-check \-f /etc/psweb/httpd.pfile
systemctl enable \-\-now pcheck@httpd
pcheck \-f /etc/psweb/httpd.pfile \-\-evidence pidfd
.fi
.SH "SEE ALSO"
.BR padmin (8),
.BR pfile (5),
.BR systemctl (1),
.BR journalctl (1)
"#;

const PADMIN_EXTRA: &str = r#".SH COMMANDS
.TP
.B show pent
the status of each process entry, in the seed's format: pname, pid, retry_count, restart_count, proc_sts, stall_chk (skt|web|ssl), retry_over_act, rerun_time, pent_id, monitor_sts.
.TP
.B show kernel
where the evidence comes from (eBPF hooks, pidfd, /proc, sock_diag) and each watched port's accept\-queue evidence: overflow counts, depth and limit, last seen.
.TP
.BI "stop \-n " PENT_ID
turn monitoring of an entry off: it is still watched, but not restarted if it dies.
.TP
.BI "start \-n " PENT_ID
turn monitoring of an entry on again, and restart its process if it is down.
.TP
.B shutdown
end that pcheck; the watched servers keep running.
.SH "EXIT STATUS"
0 when pcheck carried out the command, 1 otherwise (no pcheck runs for the pfile, the command was refused, or padmin is not root).
.SH EXAMPLES
.nf
padmin \-f /etc/psweb/httpd.pfile \-c show pent
padmin \-f /etc/psweb/httpd.pfile \-c show kernel
padmin \-f /etc/psweb/httpd.pfile \-c stop \-n 1
padmin \-f /etc/psweb/httpd.pfile \-c show pent \-\-json
.fi
.SH "SEE ALSO"
.BR pcheck (8),
.BR pfile (5)
"#;

fn man(cmd: clap::Command, extra: &str, out: &Path) -> Result<PathBuf, String> {
    let name = cmd.get_name().to_string();
    let version = cmd.get_version().unwrap_or("").to_string();
    let m = clap_mangen::Man::new(cmd)
        .section("8")
        .source(format!("psweb {version}"))
        .manual("System Manager's Manual");
    let mut buf: Vec<u8> = Vec::new();
    let io = |e: std::io::Error| format!("rendering the man page of {name}: {e}");
    m.render_title(&mut buf).map_err(io)?;
    m.render_name_section(&mut buf).map_err(io)?;
    m.render_synopsis_section(&mut buf).map_err(io)?;
    m.render_description_section(&mut buf).map_err(io)?;
    m.render_options_section(&mut buf).map_err(io)?;
    buf.write_all(extra.as_bytes()).map_err(io)?;
    m.render_version_section(&mut buf).map_err(io)?;
    let path = out.join(format!("{name}.8"));
    std::fs::write(&path, buf).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path)
}

fn completions(mut cmd: clap::Command, out: &Path) -> Result<Vec<PathBuf>, String> {
    let name = cmd.get_name().to_string();
    let mut written = Vec::new();
    for (shell, dir) in [(Shell::Bash, "bash"), (Shell::Zsh, "zsh")] {
        let d = out.join(dir);
        std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
        let p = clap_complete::generate_to(shell, &mut cmd, &name, &d)
            .map_err(|e| format!("{shell} completion of {name} in {}: {e}", d.display()))?;
        written.push(p);
    }
    Ok(written)
}

fn run(out: &Path) -> Result<(), String> {
    let man_dir = out.join("man");
    let comp_dir = out.join("completions");
    for d in [&man_dir, &comp_dir] {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    let mut written = vec![
        man(PcheckArgs::command(), PCHECK_EXTRA, &man_dir)?,
        man(PadminArgs::command(), PADMIN_EXTRA, &man_dir)?,
    ];
    written.extend(completions(PcheckArgs::command(), &comp_dir)?);
    written.extend(completions(PadminArgs::command(), &comp_dir)?);
    for p in written {
        println!("{}", p.display());
    }
    Ok(())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out] = args.as_slice() else {
        eprintln!("usage: psweb-gendoc OUTDIR");
        return ExitCode::from(2);
    };
    match run(Path::new(out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("psweb-gendoc: {e}");
            ExitCode::FAILURE
        }
    }
}
