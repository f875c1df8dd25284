//! pfile: the configuration of one `pcheck`. Text in, typed [`Pfile`] out.
//!
//! The format is documented for operators in `pfiles/README.md`. In short:
//!
//! ```text
//! # comment
//! retry_over_action = continue                 # a global setting
//! /usr/sbin/httpd /etc/psweb/httpd.rc 3 pidfile=/run/httpd/httpd.pid   # a process entry
//! _bi_webserv {                                # the seed's stall block, verbatim
//!     PS_INIT    DLL:/opt/HA/PSWE/lib/lib_bi_webserv.so:DIRECT:-:::0
//!     PS_EXEC    DLL:/opt/HA/PSWE/lib/lib_bi_webserv.so:
//!                                   DIRECT:-:60:0:2:600:8080
//!     PS_ACTION  DLL:/opt/HA/PSWE/lib/lib_bi_webserv.so:DIRECT:-:1:0
//!     PS_QUIT    DLL:/opt/HA/PSWE/lib/lib_bi_webserv.so:DIRECT:-:::0
//! }
//! ```
//!
//! Every error names file, line and column and says what was expected.

mod lex;
mod stall;
mod types;

pub use types::*;

use lex::{logical_lines, split_tokens, LogicalLine, Token};
use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A place in a pfile: 1-based line and column (in characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// An error or warning about a pfile, with its place: pfile's error type. Shown as
/// `file:line:column: message`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}:{}:{}: {msg}", file.display(), pos.line, pos.col)]
pub struct Diagnostic {
    pub file: PathBuf,
    pub pos: Pos,
    pub msg: String,
}

/// Reads and parses a pfile from disk.
pub fn load(path: &Path) -> Result<Pfile, Diagnostic> {
    let text = std::fs::read_to_string(path).map_err(|e| Diagnostic {
        file: path.to_path_buf(),
        pos: Pos { line: 0, col: 0 },
        msg: format!("cannot read the pfile: {e}"),
    })?;
    parse(path, &text)
}

pub(crate) struct Ctx<'a> {
    pub file: &'a Path,
    pub warnings: Vec<Diagnostic>,
}

impl Ctx<'_> {
    pub fn err(&self, pos: Pos, msg: impl Into<String>) -> Diagnostic {
        Diagnostic {
            file: self.file.to_path_buf(),
            pos,
            msg: msg.into(),
        }
    }
    pub fn warn(&mut self, pos: Pos, msg: impl Into<String>) {
        let d = self.err(pos, msg);
        self.warnings.push(d);
    }
}

/// What the lines read so far have set.
#[derive(Default)]
struct Parsed {
    globals: Globals,
    /// Where each global was set (a global may be set once; `webhook` many times).
    seen_globals: HashMap<&'static str, Pos>,
    fleet: Option<FleetCfg>,
    /// The first `fleet_*` setting.
    fleet_pos: Option<Pos>,
    raw_entries: Vec<RawEntry>,
}

/// Parses pfile text. `file` is used in diagnostics only.
pub fn parse(file: &Path, text: &str) -> Result<Pfile, Diagnostic> {
    let mut cx = Ctx {
        file,
        warnings: Vec::new(),
    };
    let lines = logical_lines(text);
    let mut p = Parsed::default();
    let mut i = 0;
    while i < lines.len() {
        let line = &lines[i];
        i += 1;
        let toks = split_tokens(&cx, line)?;
        let Some(first) = toks.first() else { continue };
        if first.text.starts_with("_bi_") {
            i = p.stall_block(&mut cx, &lines, i - 1, &toks)?;
            continue;
        }
        if is_setting(&toks) {
            p.global_setting(&cx, &toks)?;
            continue;
        }
        if first.text.starts_with('/') {
            p.raw_entries.push(parse_entry(&cx, &toks, line)?);
            continue;
        }
        if first.text == "}" {
            return Err(cx.err(first.pos, "a '}' with no open _bi_ block"));
        }
        return Err(cx.err(
            first.pos,
            format!(
                "expected a setting (key = value), a process entry (an absolute path of the program to watch) or a _bi_ block, found {:?}",
                first.text
            ),
        ));
    }
    p.finish(cx, file)
}

impl Parsed {
    /// A `_bi_` block whose header is `lines[start]`: it belongs to the process entry
    /// before it. Returns the index of the first line after the block.
    fn stall_block(
        &mut self,
        cx: &mut Ctx,
        lines: &[LogicalLine],
        start: usize,
        toks: &[Token],
    ) -> Result<usize, Diagnostic> {
        let first = &toks[0];
        if self.raw_entries.is_empty() {
            let name = first.text.split('{').next().unwrap_or_default();
            return Err(cx.err(
                first.pos,
                format!(
                    "a {name} block must follow the process entry it belongs to; no process entry comes before it"
                ),
            ));
        }
        let (block, next) = stall::parse_block(cx, lines, start, toks)?;
        let Some(owner) = self.raw_entries.last_mut() else {
            return Ok(next);
        };
        if let Some(prev) = &owner.entry.stall {
            return Err(cx.err(
                first.pos,
                format!(
                    "the process entry at line {} already has a {} block (line {}); one process needs at most one stall check (HTTP and HTTPS checks include the TCP check)",
                    owner.pos.line, prev.block_name, prev.pos.line
                ),
            ));
        }
        owner.entry.stall = Some(block);
        Ok(next)
    }

    /// A global `key = value` line.
    fn global_setting(&mut self, cx: &Ctx, toks: &[Token]) -> Result<(), Diagnostic> {
        let (key, value) = setting_parts(cx, toks)?;
        let name = global_key(cx, &key)?;
        // `webhook` may be given several times (each a URL or a comma-separated list).
        if let Some(prev) = self
            .seen_globals
            .insert(name, key.pos)
            .filter(|_| name != "webhook")
        {
            return Err(cx.err(
                key.pos,
                format!("{name} is set twice (first at line {})", prev.line),
            ));
        }
        apply_setting(cx, &mut self.globals.defaults, name, &value)?;
        if name.starts_with("fleet_") {
            self.fleet_pos.get_or_insert(key.pos);
            let fleet = self.fleet.get_or_insert_with(FleetCfg::default);
            return parse_fleet(cx, fleet, name, value);
        }
        apply_global(cx, &mut self.globals, name, value)
    }

    /// After the last line: per-entry settings resolved, the checks across lines.
    fn finish(self, mut cx: Ctx, file: &Path) -> Result<Pfile, Diagnostic> {
        let Parsed {
            mut globals,
            seen_globals,
            fleet,
            fleet_pos,
            raw_entries,
        } = self;
        let entries = resolve_entries(&globals.defaults, raw_entries);
        check_same_program(&cx, &entries)?;
        if let Some(pos) = seen_globals.get("metrics_listen") {
            warn_open_metrics(&mut cx, &globals, *pos);
        }
        check_lb(&mut cx, &globals, &entries)?;
        if let (Some(f), Some(pos)) = (&fleet, fleet_pos) {
            check_fleet(&cx, f, pos)?;
        }
        globals.fleet = fleet;
        if entries.is_empty() {
            cx.warn(
                Pos { line: 1, col: 1 },
                "the pfile has no process entry: pcheck will watch nothing",
            );
        }
        Ok(Pfile {
            path: file.to_path_buf(),
            globals,
            entries: entries.into_iter().map(|(_, e)| e).collect(),
            warnings: cx.warnings,
        })
    }
}

/// Per-entry settings fall back to the globals in force at the end of the file.
fn resolve_entries(defaults: &EntrySettings, raw_entries: Vec<RawEntry>) -> Vec<(Pos, ProcEntry)> {
    let mut entries = Vec::with_capacity(raw_entries.len());
    for (idx, raw) in raw_entries.into_iter().enumerate() {
        let mut e = raw.entry;
        e.pent_id = u32::try_from(idx + 1).unwrap_or(u32::MAX);
        let s = &raw.overrides;
        e.settings = EntrySettings {
            retry_over_action: s.retry_over_action.unwrap_or(defaults.retry_over_action),
            restart_timeout: s.restart_timeout.unwrap_or(defaults.restart_timeout),
            start_wait: s.start_wait.unwrap_or(defaults.start_wait),
            retry_delay: s.retry_delay.unwrap_or(defaults.retry_delay),
            kill_wait: s.kill_wait.unwrap_or(defaults.kill_wait),
        };
        entries.push((raw.pos, e));
    }
    entries
}

/// Two entries watching the same program must be told apart by pidfile.
fn check_same_program(cx: &Ctx, entries: &[(Pos, ProcEntry)]) -> Result<(), Diagnostic> {
    for (a, (pos_a, ea)) in entries.iter().enumerate() {
        for (pos_b, eb) in entries.iter().skip(a + 1) {
            if ea.pname == eb.pname && (ea.pidfile.is_none() || eb.pidfile.is_none()) {
                return Err(cx.err(
                    *pos_b,
                    format!(
                        "{} is watched by the entries at lines {} and {}; give each a pidfile= so that pcheck can tell the instances apart",
                        eb.pname.display(),
                        pos_a.line,
                        pos_b.line
                    ),
                ));
            }
            if ea.pidfile.is_some() && ea.pidfile == eb.pidfile {
                return Err(cx.err(
                    *pos_b,
                    format!(
                        "the entries at lines {} and {} name the same pidfile",
                        pos_a.line, pos_b.line
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// A warning for metrics open beyond loopback with no `metrics_allow`.
fn warn_open_metrics(cx: &mut Ctx, g: &Globals, pos: Pos) {
    if let Some(addr) = g.metrics_listen {
        if !addr.ip().is_loopback() && g.metrics_allow.is_empty() {
            cx.warn(
                pos,
                format!(
                    "metrics_listen {addr} is not a loopback address: the metrics (unauthenticated) are open to every host that can reach it; limit it with metrics_allow = CIDR[,...] or a firewall"
                ),
            );
        }
    }
}

/// A fleet needs its etcd endpoints and its name; a client certificate needs its key.
fn check_fleet(cx: &Ctx, f: &FleetCfg, pos: Pos) -> Result<(), Diagnostic> {
    if f.endpoints.is_empty() || f.name.is_empty() {
        return Err(cx.err(
            pos,
            "a fleet needs fleet_etcd (its etcd endpoints) and fleet_name",
        ));
    }
    if f.tls_cert.is_some() != f.tls_key.is_some() {
        return Err(cx.err(pos, "fleet_tls_cert and fleet_tls_key go together"));
    }
    Ok(())
}

/// One global setting other than `fleet_*` (the entry defaults are set by
/// [`apply_setting`]).
fn apply_global(cx: &Ctx, g: &mut Globals, name: &str, value: Token) -> Result<(), Diagnostic> {
    match name {
        "evidence" => g.evidence = parse_evidence(cx, &value)?,
        "control_socket" => g.control_socket = Some(abs_path(cx, value)?),
        "state_dir" => g.state_dir = Some(abs_path(cx, value)?),
        "webhook_header_file" => g.webhook_header_file = Some(abs_path(cx, value)?),
        "webhook" | "webhook_format" | "webhook_queue" => apply_webhook(cx, g, name, &value)?,
        "metrics_listen" | "metrics_allow" => apply_metrics(cx, g, name, &value)?,
        "shutdown_flush" => g.shutdown_flush = Some(parse_duration_zero_ok(cx, &value, name)?),
        n if n.starts_with("lb_") => apply_lb(cx, &mut g.lb, n, &value)?,
        "auto_reboot" | "reboot_after" | "reboot_reset" | "reboot_limit" | "reboot_command" => {
            apply_reboot(cx, &mut g.reboot, name, &value)?;
        }
        _ => {}
    }
    Ok(())
}

/// `webhook`, `webhook_format`, `webhook_queue`.
fn apply_webhook(cx: &Ctx, g: &mut Globals, name: &str, value: &Token) -> Result<(), Diagnostic> {
    match name {
        "webhook" => {
            let mut offset = 0;
            for part in value.text.split(',') {
                let url = part.trim();
                let lead = part.len() - part.trim_start().len();
                let pos = Pos {
                    line: value.pos.line,
                    col: value.pos.col + offset + lead,
                };
                offset += part.len() + 1;
                if url.is_empty() {
                    return Err(cx.err(pos, "expected a webhook URL (http://host:port/path or https://...), found an empty item"));
                }
                let parsed = WebhookUrl::parse(url).map_err(|e| cx.err(pos, e.to_string()))?;
                g.webhooks.push(parsed);
            }
        }
        "webhook_format" => {
            g.webhook_format = match value.text.as_str() {
                "json" => WebhookFormat::Json,
                "alertmanager" => WebhookFormat::Alertmanager,
                v => {
                    return Err(cx.err(
                        value.pos,
                        format!("expected json or alertmanager, found {v:?}"),
                    ))
                }
            }
        }
        "webhook_queue" => {
            g.webhook_queue = Some(
                value
                    .text
                    .parse()
                    .ok()
                    .filter(|n| (1..=100_000).contains(n))
                    .ok_or_else(|| {
                        cx.err(
                            value.pos,
                            format!(
                                "expected a queue size from 1 to 100000, found {:?}",
                                value.text
                            ),
                        )
                    })?,
            )
        }
        _ => {}
    }
    Ok(())
}

/// `metrics_listen`, `metrics_allow`.
fn apply_metrics(cx: &Ctx, g: &mut Globals, name: &str, value: &Token) -> Result<(), Diagnostic> {
    match name {
        "metrics_listen" => {
            g.metrics_listen = Some(value.text.parse().map_err(|_| {
                cx.err(
                    value.pos,
                    format!(
                    "expected an address and port such as 127.0.0.1:9913 or [::1]:9913, found {:?}",
                    value.text
                ),
                )
            })?)
        }
        "metrics_allow" => {
            let mut offset = 0;
            for part in value.text.split(',') {
                let lead = part.len() - part.trim_start().len();
                let pos = Pos {
                    line: value.pos.line,
                    col: value.pos.col + offset + lead,
                };
                offset += part.len() + 1;
                let net = Cidr::parse(part.trim()).ok_or_else(|| {
                    cx.err(pos, format!("expected a network such as 10.0.0.0/8, 192.0.2.7 or ::1/128, found {:?}", part.trim()))
                })?;
                g.metrics_allow.push(net);
            }
        }
        _ => {}
    }
    Ok(())
}

/// The global `lb_*` settings.
fn apply_lb(cx: &Ctx, lb: &mut LbGlobals, name: &str, value: &Token) -> Result<(), Diagnostic> {
    match name {
        "lb_agent_listen" => lb.agent_listen = Some(parse_listen(cx, value)?),
        "lb_health_listen" => lb.health_listen = Some(parse_listen(cx, value)?),
        "lb_haproxy_socket" => {
            lb.haproxy_socket = Some(if value.text.starts_with('/') {
                HaproxySocket::Unix(PathBuf::from(&value.text))
            } else {
                HaproxySocket::Tcp(parse_listen(cx, value)?)
            })
        }
        "lb_allow" => {
            for part in value.text.split(',') {
                let net = Cidr::parse(part.trim()).ok_or_else(|| {
                    cx.err(
                        value.pos,
                        format!(
                            "expected networks such as 10.0.0.0/8,::1/128, found {:?}",
                            part.trim()
                        ),
                    )
                })?;
                lb.allow.push(net);
            }
        }
        _ => {}
    }
    Ok(())
}

/// `auto_reboot` and the `reboot_*` settings.
fn apply_reboot(
    cx: &Ctx,
    r: &mut RebootPolicy,
    name: &str,
    value: &Token,
) -> Result<(), Diagnostic> {
    match name {
        "auto_reboot" => {
            r.enabled = match value.text.as_str() {
                "on" => true,
                "off" => false,
                v => return Err(cx.err(value.pos, format!("expected on or off, found {v:?}"))),
            }
        }
        "reboot_after" => r.after = parse_duration(cx, value, name)?,
        "reboot_reset" => r.reset = parse_duration(cx, value, name)?,
        "reboot_limit" => {
            r.limit = value
                .text
                .parse()
                .ok()
                .filter(|n| *n <= 100)
                .ok_or_else(|| {
                    cx.err(
                        value.pos,
                        format!(
                            "expected a reboot limit from 0 to 100, found {:?}",
                            value.text
                        ),
                    )
                })?
        }
        "reboot_command" => {
            let words: Vec<String> = value.text.split_whitespace().map(str::to_string).collect();
            if words.first().is_none_or(|w| !w.starts_with('/')) {
                return Err(cx.err(
                    value.pos,
                    format!("expected a command starting with an absolute path (quote it if it has arguments), found {:?}", value.text),
                ));
            }
            r.command = words;
        }
        _ => {}
    }
    Ok(())
}

/// Checks what the text alone cannot: that each restart script exists and is an
/// executable regular file, and (as root) that neither the pfile nor a restart
/// script can be changed by a non-root user. Like sshd's StrictModes: when pcheck
/// runs as root, a file it trusts (the pfile, a restart script it runs as root) and
/// everything on its path as written — each directory, each symlink followed — must
/// be owned by root and not writable by group or others (see [`crate::trust`]). Not
/// root: nothing to check. Returns one diagnostic per problem.
pub fn check_files(pfile: &Pfile) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    let at_top = Pos { line: 1, col: 1 };
    if let Err(e) = crate::trust::check(&pfile.path, "pfile") {
        out.push(diagnostic(&pfile.path, at_top, e));
    }
    check_global_files(pfile, &mut out);
    for e in &pfile.entries {
        check_entry_files(pfile, e, &mut out);
    }
    out
}

/// A diagnostic about `file` from a message of another layer.
fn diagnostic(file: &Path, pos: Pos, msg: impl fmt::Display) -> Diagnostic {
    Diagnostic {
        file: file.to_path_buf(),
        pos,
        msg: msg.to_string(),
    }
}

/// The files and directories the globals name (reported at 1:1).
fn check_global_files(pfile: &Pfile, out: &mut Vec<Diagnostic>) {
    let top = Pos { line: 1, col: 1 };
    let g = &pfile.globals;
    if g.reboot.enabled {
        if let Some(cmd) = g.reboot.command.first() {
            if let Err(msg) = crate::trust::check(Path::new(cmd), "reboot command") {
                out.push(diagnostic(&pfile.path, top, msg));
            }
        }
    }
    if let Err(msg) = crate::trust::check_creatable(&g.state_dir(), "state_dir") {
        out.push(diagnostic(&pfile.path, top, msg));
    }
    let sock = crate::paths::socket_path(&pfile.path, g.control_socket.as_deref());
    if let Some(dir) = sock.parent() {
        if let Err(msg) = crate::trust::check_creatable(dir, "control socket directory") {
            out.push(diagnostic(&pfile.path, top, msg));
        }
    }
    if let Some(hf) = &g.webhook_header_file {
        if let Err(msg) = crate::trust::check(hf, "webhook_header_file") {
            out.push(diagnostic(&pfile.path, top, msg));
        }
    }
}

/// The owner, the CA file and the restart script of one entry.
fn check_entry_files(pfile: &Pfile, e: &ProcEntry, out: &mut Vec<Diagnostic>) {
    use std::os::unix::fs::PermissionsExt;
    let at_entry = Pos {
        line: e.line,
        col: 1,
    };
    if let Err(msg) = crate::procfs::uid_of_user(e.owner_name()) {
        out.push(diagnostic(&pfile.path, at_entry, format!("owner: {msg}")));
    }
    if let Some(TlsVerifyCfg::CaFile(ca)) = e.stall.as_ref().map(|s| &s.tls_verify) {
        if let Err(msg) = crate::trust::check(ca, "CA file") {
            out.push(diagnostic(&pfile.path, at_entry, msg));
        }
    }
    let problem = match std::fs::metadata(&e.restart_script) {
        Err(err) => Some(format!(
            "restart script {}: {err}",
            e.restart_script.display()
        )),
        Ok(m) if !m.is_file() => Some(format!(
            "restart script {} is not a regular file",
            e.restart_script.display()
        )),
        Ok(m) if m.permissions().mode() & 0o111 == 0 => Some(format!(
            "restart script {} is not executable",
            e.restart_script.display()
        )),
        Ok(_) => None,
    };
    if let Some(msg) = problem {
        out.push(diagnostic(&pfile.path, e.script_pos, msg));
    } else if let Err(msg) = crate::trust::check(&e.restart_script, "restart script") {
        // A regular, executable file: is it one only root can change?
        out.push(diagnostic(&pfile.path, e.script_pos, msg));
    }
}

/// What pcheck can run but should not silently: a pidfile in a directory that a
/// non-root user can write (its content is then untrusted: pcheck checks the pid's
/// owner and executable), a state directory on tmpfs (the reboot count would not
/// survive a reboot).
pub fn check_warnings(pfile: &Pfile) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for e in &pfile.entries {
        if let Some(pf) = &e.pidfile {
            if let Some(why) = crate::trust::writable_by_others(pf) {
                out.push(Diagnostic {
                    file: pfile.path.clone(),
                    pos: Pos { line: e.line, col: 1 },
                    msg: format!(
                        "pidfile {} is in a directory a non-root user can change ({why}); its content is not trusted: a pid is accepted only if it runs as {} with the executable {} or was started by the restart script",
                        pf.display(),
                        e.owner_name(),
                        e.pname.display()
                    ),
                });
            }
        }
    }
    if pfile.globals.reboot.enabled && crate::state::on_tmpfs(&pfile.globals.state_dir()) {
        out.push(Diagnostic {
            file: pfile.path.clone(),
            pos: Pos { line: 1, col: 1 },
            msg: format!(
                "state_dir {} is on tmpfs: the automatic reboot count does not survive a reboot",
                pfile.globals.state_dir().display()
            ),
        });
    }
    out
}

struct RawEntry {
    pos: Pos,
    entry: ProcEntry,
    overrides: Overrides,
}

#[derive(Default)]
struct Overrides {
    retry_over_action: Option<RetryOverAction>,
    restart_timeout: Option<Duration>,
    start_wait: Option<Duration>,
    retry_delay: Option<Duration>,
    kill_wait: Option<Duration>,
}

pub(crate) fn is_setting(toks: &[Token]) -> bool {
    let first = &toks[0];
    !first.text.starts_with('/')
        && (first.text.contains('=') || toks.get(1).is_some_and(|t| t.text.starts_with('=')))
}

/// Splits `key = value`, `key=value`, `key= value` or `key =value` into its parts.
pub(crate) fn setting_parts<'t>(cx: &Ctx, toks: &'t [Token]) -> Result<(Token, Token), Diagnostic> {
    let joined: Vec<&'t Token> = toks.iter().collect();
    let first = joined[0];
    let (key, mut rest): (Token, Vec<Token>) = if let Some(eq) = first.text.find('=') {
        let key = Token {
            text: first.text[..eq].to_string(),
            pos: first.pos,
        };
        let after = &first.text[eq + 1..];
        let mut rest = Vec::new();
        if !after.is_empty() {
            rest.push(Token {
                text: after.to_string(),
                pos: Pos {
                    line: first.pos.line,
                    col: first.pos.col + first.text[..=eq].chars().count(),
                },
            });
        }
        rest.extend(joined[1..].iter().map(|t| (*t).clone()));
        (key, rest)
    } else {
        let eq = joined[1];
        let mut rest = Vec::new();
        if eq.text.len() > 1 {
            rest.push(Token {
                text: eq.text[1..].to_string(),
                pos: Pos {
                    line: eq.pos.line,
                    col: eq.pos.col + 1,
                },
            });
        }
        rest.extend(joined[2..].iter().map(|t| (*t).clone()));
        (first.clone(), rest)
    };
    if key.text.is_empty() {
        return Err(cx.err(key.pos, "expected a setting name before '='"));
    }
    if rest.is_empty() {
        let end = toks.last().map_or(key.pos, |t| Pos {
            line: t.pos.line,
            col: t.pos.col + t.text.chars().count(),
        });
        return Err(cx.err(end, format!("expected a value after '{} ='", key.text)));
    }
    if rest.len() > 1 {
        return Err(cx.err(
            rest[1].pos,
            format!(
                "expected one value for {}, found more: {:?} (quote a value that has spaces)",
                key.text, rest[1].text
            ),
        ));
    }
    let value = rest.remove(0);
    Ok((key, value))
}

const GLOBAL_KEYS: &[&str] = &[
    "retry_over_action",
    "restart_timeout",
    "start_wait",
    "retry_delay",
    "kill_wait",
    "evidence",
    "control_socket",
    "state_dir",
    "auto_reboot",
    "reboot_after",
    "reboot_command",
    "reboot_limit",
    "reboot_reset",
    "webhook",
    "webhook_format",
    "webhook_queue",
    "shutdown_flush",
    "metrics_listen",
    "metrics_allow",
    "webhook_header_file",
    "lb_agent_listen",
    "lb_health_listen",
    "lb_allow",
    "lb_haproxy_socket",
    "fleet_etcd",
    "fleet_tls_ca",
    "fleet_tls_cert",
    "fleet_tls_key",
    "fleet_user",
    "fleet_password_file",
    "fleet_name",
    "fleet_host",
    "fleet_lease_ttl",
    "fleet_max_rebooting",
    "fleet_max_restarting",
    "fleet_reboot_ttl",
    "fleet_hold_ratio",
    "fleet_unreachable",
];
const ENTRY_KEYS: &[&str] = &[
    "pidfile",
    "user",
    "owner",
    "retry_over_action",
    "restart_timeout",
    "start_wait",
    "retry_delay",
    "kill_wait",
    "lb_agent_listen",
    "lb_name",
    "lb_warmup",
    "lb_haproxy_server",
];

fn global_key(cx: &Ctx, key: &Token) -> Result<&'static str, Diagnostic> {
    GLOBAL_KEYS
        .iter()
        .copied()
        .find(|k| *k == key.text)
        .ok_or_else(|| {
            cx.err(
                key.pos,
                format!(
                    "unknown setting {:?}; expected one of: {}",
                    key.text,
                    GLOBAL_KEYS.join(", ")
                ),
            )
        })
}

fn apply_setting(
    cx: &Ctx,
    d: &mut EntrySettings,
    name: &str,
    value: &Token,
) -> Result<(), Diagnostic> {
    match name {
        "retry_over_action" => d.retry_over_action = parse_action(cx, value)?,
        "restart_timeout" => d.restart_timeout = parse_duration(cx, value, name)?,
        "start_wait" => d.start_wait = parse_duration(cx, value, name)?,
        "retry_delay" => d.retry_delay = parse_duration_zero_ok(cx, value, name)?,
        "kill_wait" => d.kill_wait = parse_duration(cx, value, name)?,
        _ => {}
    }
    Ok(())
}

fn parse_entry(cx: &Ctx, toks: &[Token], line: &LogicalLine) -> Result<RawEntry, Diagnostic> {
    let mut raw = RawEntry {
        pos: toks[0].pos,
        entry: entry_head(cx, toks, line)?,
        overrides: Overrides::default(),
    };
    let mut seen: HashMap<String, Pos> = HashMap::new();
    for t in &toks[3..] {
        let (key, val) = entry_setting(cx, t, &mut seen)?;
        set_entry_key(cx, &mut raw, key, val)?;
    }
    Ok(raw)
}

/// The program, the restart script and the retry count: an entry with no settings yet.
fn entry_head(cx: &Ctx, toks: &[Token], line: &LogicalLine) -> Result<ProcEntry, Diagnostic> {
    let pname_tok = &toks[0];
    let pname = abs_path(cx, pname_tok.clone())?;
    let end_of_line = line.end_pos();
    let Some(script_tok) = toks.get(1) else {
        return Err(cx.err(
            end_of_line,
            "expected the restart script (an absolute path) after the program path",
        ));
    };
    if script_tok.text.contains('=') {
        return Err(cx.err(
            script_tok.pos,
            format!(
                "expected the restart script (an absolute path), found the setting {:?}",
                script_tok.text
            ),
        ));
    }
    let restart_script = abs_path(cx, script_tok.clone())?;
    let Some(count_tok) = toks.get(2) else {
        return Err(cx.err(
            end_of_line,
            "expected the retry count (0 to 1000) after the restart script",
        ));
    };
    let retry_limit: u32 = count_tok
        .text
        .parse()
        .ok()
        .filter(|n| *n <= 1000)
        .ok_or_else(|| {
            cx.err(
                count_tok.pos,
                format!(
                    "expected the retry count, a whole number from 0 to 1000, found {:?}",
                    count_tok.text
                ),
            )
        })?;
    Ok(ProcEntry {
        pent_id: 0,
        pname,
        restart_script,
        script_pos: script_tok.pos,
        retry_limit,
        pidfile: None,
        user: None,
        owner: None,
        settings: EntrySettings::default(),
        stall: None,
        line: pname_tok.pos.line,
        lb: LbEntry::default(),
    })
}

/// Splits one `key=value` after the retry count: a known key, set once, with a value.
fn entry_setting<'t>(
    cx: &Ctx,
    t: &'t Token,
    seen: &mut HashMap<String, Pos>,
) -> Result<(&'t str, Token), Diagnostic> {
    let Some(eq) = t.text.find('=') else {
        return Err(cx.err(
            t.pos,
            format!(
                "expected key=value after the retry count, found {:?}",
                t.text
            ),
        ));
    };
    let key = &t.text[..eq];
    let val = Token {
        text: t.text[eq + 1..].to_string(),
        pos: Pos {
            line: t.pos.line,
            col: t.pos.col + t.text[..=eq].chars().count(),
        },
    };
    if !ENTRY_KEYS.contains(&key) {
        return Err(cx.err(
            t.pos,
            format!(
                "unknown entry setting {key:?}; expected one of: {}",
                ENTRY_KEYS.join(", ")
            ),
        ));
    }
    if let Some(prev) = seen.insert(key.to_string(), t.pos) {
        return Err(cx.err(
            t.pos,
            format!(
                "{key} is set twice on this entry (first at column {})",
                prev.col
            ),
        ));
    }
    if val.text.is_empty() {
        return Err(cx.err(val.pos, format!("expected a value after {key}=")));
    }
    Ok((key, val))
}

/// One entry setting.
fn set_entry_key(cx: &Ctx, raw: &mut RawEntry, key: &str, val: Token) -> Result<(), Diagnostic> {
    let (e, o) = (&mut raw.entry, &mut raw.overrides);
    match key {
        "pidfile" => e.pidfile = Some(abs_path(cx, val)?),
        "user" | "owner" => {
            if !val
                .text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                return Err(cx.err(
                    val.pos,
                    format!("expected a user name, found {:?}", val.text),
                ));
            }
            if key == "user" {
                e.user = Some(val.text);
            } else {
                e.owner = Some(val.text);
            }
        }
        "retry_over_action" => o.retry_over_action = Some(parse_action(cx, &val)?),
        "restart_timeout" => o.restart_timeout = Some(parse_duration(cx, &val, key)?),
        "start_wait" => o.start_wait = Some(parse_duration(cx, &val, key)?),
        "retry_delay" => o.retry_delay = Some(parse_duration_zero_ok(cx, &val, key)?),
        "kill_wait" => o.kill_wait = Some(parse_duration(cx, &val, key)?),
        "lb_agent_listen" => e.lb.agent_listen = Some(parse_listen(cx, &val)?),
        "lb_name" => e.lb.name = Some(parse_lb_name(cx, val)?),
        "lb_warmup" => e.lb.warmup = Some(parse_duration(cx, &val, key)?),
        "lb_haproxy_server" => e.lb.haproxy_server = Some(parse_haproxy_server(cx, val)?),
        _ => {}
    }
    Ok(())
}

/// `lb_name`: letters, digits, '.', '_' or '-', not only digits.
fn parse_lb_name(cx: &Ctx, val: Token) -> Result<String, Diagnostic> {
    if val.text.bytes().all(|b| b.is_ascii_digit())
        || !val
            .text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
    {
        return Err(cx.err(
            val.pos,
            format!(
                "expected a name of letters, digits, '.', '_' or '-' (not only digits), found {:?}",
                val.text
            ),
        ));
    }
    Ok(val.text)
}

/// `lb_haproxy_server`: `BACKEND/SERVER`.
fn parse_haproxy_server(cx: &Ctx, val: Token) -> Result<String, Diagnostic> {
    let ok = val.text.split_once('/').is_some_and(|(b, s)| {
        let name = |x: &str| {
            !x.is_empty()
                && x.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-:".contains(c))
        };
        name(b) && name(s)
    });
    if !ok {
        return Err(cx.err(
            val.pos,
            format!(
                "expected BACKEND/SERVER as HAProxy names them, found {:?}",
                val.text
            ),
        ));
    }
    Ok(val.text)
}

/// Load-balancer keys across entries: names unique, each listener bound once, and a
/// warning for a listener open beyond loopback with no `lb_allow`.
fn check_lb(cx: &mut Ctx, g: &Globals, entries: &[(Pos, ProcEntry)]) -> Result<(), Diagnostic> {
    if g.lb.haproxy_socket.is_none() {
        if let Some((pos, _)) = entries.iter().find(|(_, e)| e.lb.haproxy_server.is_some()) {
            return Err(cx.err(
                *pos,
                "lb_haproxy_server needs the global lb_haproxy_socket (HAProxy's stats socket)",
            ));
        }
    }
    let mut listens: Vec<(std::net::SocketAddr, String)> = Vec::new();
    for (addr, what) in [
        (g.lb.agent_listen, "lb_agent_listen"),
        (g.lb.health_listen, "lb_health_listen"),
    ] {
        if let Some(a) = addr {
            listens.push((a, format!("the global {what}")));
        }
    }
    for (a, (pos_a, ea)) in entries.iter().enumerate() {
        if let Some(l) = ea.lb.agent_listen {
            listens.push((l, format!("the entry at line {}", pos_a.line)));
        }
        for (pos_b, eb) in entries.iter().skip(a + 1) {
            if ea.lb.name.is_some() && ea.lb.name == eb.lb.name {
                return Err(cx.err(
                    *pos_b,
                    format!(
                        "the entries at lines {} and {} have the same lb_name",
                        pos_a.line, pos_b.line
                    ),
                ));
            }
        }
    }
    for (i, (a, who)) in listens.iter().enumerate() {
        if let Some((_, first)) = listens[..i].iter().find(|(b, _)| b == a) {
            return Err(cx.err(
                Pos { line: 1, col: 1 },
                format!("{a} is a load-balancer listener of both {first} and {who}"),
            ));
        }
        if !a.ip().is_loopback() && g.lb.allow.is_empty() {
            cx.warn(
                Pos { line: 1, col: 1 },
                format!("the load-balancer listener {a} of {who} is not on loopback and lb_allow is not set: anyone who can reach it may ask (it has no authentication); set lb_allow = CIDR[,...] or firewall it"),
            );
        }
    }
    Ok(())
}

/// One `fleet_*` setting.
fn parse_fleet(cx: &Ctx, f: &mut FleetCfg, name: &str, value: Token) -> Result<(), Diagnostic> {
    match name {
        "fleet_etcd" => {
            for url in value.text.split(',').map(str::trim) {
                if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() < 9 {
                    return Err(cx.err(
                        value.pos,
                        format!("expected etcd endpoints such as http://10.0.0.1:2379,https://etcd2:2379, found {url:?}"),
                    ));
                }
                f.endpoints.push(url.to_string());
            }
        }
        "fleet_tls_ca" => f.tls_ca = Some(abs_path(cx, value)?),
        "fleet_tls_cert" => f.tls_cert = Some(abs_path(cx, value)?),
        "fleet_tls_key" => f.tls_key = Some(abs_path(cx, value)?),
        "fleet_user" => f.user = Some(fleet_word(cx, &value, "an etcd user name")?),
        "fleet_password_file" => f.password_file = Some(abs_path(cx, value)?),
        "fleet_name" => f.name = fleet_word(cx, &value, "a fleet name")?,
        "fleet_host" => f.host = Some(fleet_word(cx, &value, "a host name")?),
        "fleet_lease_ttl" => f.lease_ttl = fleet_ttl(cx, &value, name)?,
        "fleet_reboot_ttl" => f.reboot_ttl = fleet_ttl(cx, &value, name)?,
        "fleet_max_restarting" => f.max_restarting = Some(host_count(cx, &value)?),
        "fleet_max_rebooting" => f.max_rebooting = host_count(cx, &value)?,
        "fleet_hold_ratio" => {
            f.hold_ratio = value
                .text
                .parse::<f64>()
                .ok()
                .filter(|r| r.is_finite() && *r >= 0.0)
                .ok_or_else(|| {
                    cx.err(
                        value.pos,
                        format!(
                            "expected a ratio such as 0.5 (above 1: never hold), found {:?}",
                            value.text
                        ),
                    )
                })?;
        }
        "fleet_unreachable" => {
            f.unreachable = match value.text.as_str() {
                "hold" => FleetUnreachable::Hold,
                "proceed" => FleetUnreachable::Proceed,
                v => {
                    return Err(cx.err(value.pos, format!("expected hold or proceed, found {v:?}")))
                }
            }
        }
        _ => {}
    }
    Ok(())
}

/// A name in etcd keys: letters, digits, '-', '_', '.'.
fn fleet_word(cx: &Ctx, value: &Token, what: &str) -> Result<String, Diagnostic> {
    let ok = !value.text.is_empty()
        && value
            .text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if ok {
        Ok(value.text.clone())
    } else {
        Err(cx.err(
            value.pos,
            format!(
                "expected {what} (letters, digits, '-', '_', '.'), found {:?}",
                value.text
            ),
        ))
    }
}

/// An etcd lease time (`fleet_lease_ttl`, `fleet_reboot_ttl`): at least 2s.
fn fleet_ttl(cx: &Ctx, value: &Token, name: &str) -> Result<Duration, Diagnostic> {
    let ttl = parse_duration(cx, value, name)?;
    if ttl < Duration::from_secs(2) {
        return Err(cx.err(
            value.pos,
            format!("{name} must be at least 2s (etcd leases count in seconds)"),
        ));
    }
    Ok(ttl)
}

/// A number of hosts (`fleet_max_restarting`, `fleet_max_rebooting`): 0 to 10000.
fn host_count(cx: &Ctx, value: &Token) -> Result<u32, Diagnostic> {
    value
        .text
        .parse()
        .ok()
        .filter(|n| *n <= 10_000)
        .ok_or_else(|| {
            cx.err(
                value.pos,
                format!(
                    "expected a number of hosts from 0 to 10000, found {:?}",
                    value.text
                ),
            )
        })
}

fn parse_listen(cx: &Ctx, t: &Token) -> Result<std::net::SocketAddr, Diagnostic> {
    t.text.parse().map_err(|_| {
        cx.err(
            t.pos,
            format!(
                "expected an address and port such as 127.0.0.1:9950 or [::1]:9950, found {:?}",
                t.text
            ),
        )
    })
}

fn abs_path(cx: &Ctx, t: Token) -> Result<PathBuf, Diagnostic> {
    if !t.text.starts_with('/') {
        return Err(cx.err(
            t.pos,
            format!("expected an absolute path, found {:?}", t.text),
        ));
    }
    Ok(PathBuf::from(t.text))
}

fn parse_action(cx: &Ctx, t: &Token) -> Result<RetryOverAction, Diagnostic> {
    match t.text.as_str() {
        "continue" => Ok(RetryOverAction::Continue),
        "shutdown" => Ok(RetryOverAction::Shutdown),
        "exit" => Ok(RetryOverAction::Exit),
        other => Err(cx.err(
            t.pos,
            format!("expected continue, shutdown or exit, found {other:?}"),
        )),
    }
}

fn parse_evidence(cx: &Ctx, t: &Token) -> Result<EvidenceMode, Diagnostic> {
    t.text
        .parse()
        .map_err(|e: ValueError| cx.err(t.pos, e.to_string()))
}

fn parse_duration(cx: &Ctx, t: &Token, what: &str) -> Result<Duration, Diagnostic> {
    let d = parse_duration_zero_ok(cx, t, what)?;
    if d.is_zero() {
        return Err(cx.err(t.pos, format!("{what} must be more than 0")));
    }
    Ok(d)
}

fn parse_duration_zero_ok(cx: &Ctx, t: &Token, what: &str) -> Result<Duration, Diagnostic> {
    parse_duration_text(&t.text).ok_or_else(|| {
        cx.err(
            t.pos,
            format!(
                "expected a duration for {what} (seconds, or a number with ms, s, m or h), found {:?}",
                t.text
            ),
        )
    })
}

/// `30`, `30s`, `500ms`, `2m`, `1h`. Plain numbers are seconds. At most one day.
pub fn parse_duration_text(s: &str) -> Option<Duration> {
    let (num, unit_ms): (&str, u64) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3_600_000)
    } else {
        (s, 1000)
    };
    if num.is_empty() || !num.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = num.parse().ok()?;
    let ms = n.checked_mul(unit_ms)?;
    (ms <= 86_400_000).then(|| Duration::from_millis(ms))
}

#[cfg(test)]
mod tests;
