//! The seed's stall blocks: `_bi_webserv`, `_bi_webservs`, `_bi_socket` (SPEC 3.4).
//!
//! ```text
//! ##### entry type:file:call:timeout:interval:error:argc:argv[0]:...#####
//! ```
//!
//! The guide's samples disagree on how many fields INIT/ACTION/QUIT carry
//! (`:-:::0`, `:-:-:0`, `:-:1:0`, `:-::-:1:0`). All are accepted: the last field is
//! argc, and ACTION's error is the field just before it (where the guide documents
//! it, for the documented seven fields). Any other shape of ACTION is read the same
//! way, with a warning that says which value was taken.

use super::lex::{split_fields, split_tokens, LogicalLine, Token};
use super::{
    Ctx, Diagnostic, KernelAction, Pos, StallCheck, StallEvidence, StallKind, TlsVerifyCfg,
};
use std::time::Duration;

const LIBS: &[&str] = &[
    "lib_bi_webserv.so",
    "lib_bi_websevr.so",
    "lib_bi_webservs.so",
    "lib_bi_websevs.so",
    "lib_bi_socket.so",
];

fn kind_of_block(name: &str) -> Option<StallKind> {
    match name {
        "_bi_webserv" | "_bi_websevr" => Some(StallKind::Web),
        "_bi_webservs" | "_bi_websevs" => Some(StallKind::Ssl),
        "_bi_socket" => Some(StallKind::Socket),
        _ => None,
    }
}

fn kind_of_lib(base: &str) -> Option<StallKind> {
    match base {
        "lib_bi_webserv.so" | "lib_bi_websevr.so" => Some(StallKind::Web),
        "lib_bi_webservs.so" | "lib_bi_websevs.so" => Some(StallKind::Ssl),
        "lib_bi_socket.so" => Some(StallKind::Socket),
        _ => None,
    }
}

struct Exec {
    interval: Duration,
    stop_after_detect: bool,
    duration: Duration,
    port: u16,
    host: Option<String>,
    probe_timeout: Option<Duration>,
    path: Option<String>,
}

/// Parses the block whose header is `lines[start]`. Returns the check and the index
/// of the first line after the closing `}`.
pub fn parse_block(
    cx: &mut Ctx,
    lines: &[LogicalLine],
    start: usize,
    header: &[Token],
) -> Result<(StallCheck, usize), Diagnostic> {
    let head = &header[0];
    let (name, brace_in_head) = match head.text.find('{') {
        Some(i) => (&head.text[..i], Some(&head.text[i + 1..])),
        None => (head.text.as_str(), None),
    };
    let kind = kind_of_block(name).ok_or_else(|| {
        cx.err(
            head.pos,
            format!(
                "unknown block {name:?}; expected _bi_webserv (or _bi_websevr), _bi_webservs (or _bi_websevs) or _bi_socket"
            ),
        )
    })?;
    let next = open_brace(cx, lines, start, header, name, brace_in_head)?;
    let mut body = Body::default();
    let next = body.read(cx, kind, lines, next, name, head)?;
    let check = body.finish(cx, kind, name, head)?;
    Ok((check, next))
}

/// Finds the block's `{`: at the end of the header, or alone on the next non-empty
/// line. Returns the index of the first line of the body.
fn open_brace(
    cx: &Ctx,
    lines: &[LogicalLine],
    start: usize,
    header: &[Token],
    name: &str,
    brace_in_head: Option<&str>,
) -> Result<usize, Diagnostic> {
    let head = &header[0];
    let mut next = start + 1;
    match brace_in_head {
        Some("") if header.len() == 1 => {}
        Some("") => return Err(cx.err(header[1].pos, "expected nothing after '{' on this line")),
        Some(_) => return Err(cx.err(head.pos, "expected nothing after '{' on this line")),
        None => match header.get(1) {
            Some(t) if t.text == "{" && header.len() == 2 => {}
            Some(t) if t.text == "{" => {
                return Err(cx.err(header[2].pos, "expected nothing after '{' on this line"))
            }
            Some(t) => return Err(cx.err(t.pos, format!("expected '{{', found {:?}", t.text))),
            None => {
                // `{` alone on the next non-empty line.
                while next < lines.len() && lines[next].chars.is_empty() {
                    next += 1;
                }
                let toks = match lines.get(next) {
                    Some(l) => split_tokens(cx, l)?,
                    None => Vec::new(),
                };
                match toks.first() {
                    Some(t) if t.text == "{" && toks.len() == 1 => next += 1,
                    Some(t) => {
                        return Err(cx.err(t.pos, format!("expected '{{', found {:?}", t.text)))
                    }
                    None => return Err(cx.err(head.pos, format!("expected '{{' after {name}"))),
                }
            }
        },
    }
    Ok(next)
}

/// What a block's body has set so far.
#[derive(Default)]
struct Body {
    init: Option<Pos>,
    quit: Option<Pos>,
    exec: Option<(Pos, Exec)>,
    action: Option<(Pos, bool)>,
    ext: Extensions,
}

impl Body {
    /// Reads the body from `lines[next]` through the closing `}`. Returns the index
    /// of the first line after it.
    fn read(
        &mut self,
        cx: &mut Ctx,
        kind: StallKind,
        lines: &[LogicalLine],
        mut next: usize,
        name: &str,
        head: &Token,
    ) -> Result<usize, Diagnostic> {
        loop {
            let Some(line) = lines.get(next) else {
                return Err(cx.err(
                    head.pos,
                    format!(
                        "this {name} block is never closed: expected '}}' before the end of the file"
                    ),
                ));
            };
            next += 1;
            let toks = split_tokens(cx, line)?;
            let Some(first) = toks.first() else { continue };
            if first.text == "}" {
                if toks.len() > 1 {
                    return Err(cx.err(toks[1].pos, "expected nothing after '}'"));
                }
                return Ok(next);
            }
            if super::is_setting(&toks) {
                let (key, value) = super::setting_parts(cx, &toks)?;
                self.ext.set(cx, kind, &key, &value)?;
                continue;
            }
            self.entry_line(cx, kind, line, first)?;
        }
    }

    /// One `PS_INIT`, `PS_EXEC`, `PS_ACTION` or `PS_QUIT` line.
    fn entry_line(
        &mut self,
        cx: &mut Ctx,
        kind: StallKind,
        line: &LogicalLine,
        first: &Token,
    ) -> Result<(), Diagnostic> {
        let rest = after_first_token(line);
        let fields = split_fields(rest, line.end_pos());
        let slot = match first.text.as_str() {
            "PS_INIT" => &mut self.init,
            "PS_QUIT" => &mut self.quit,
            "PS_EXEC" => {
                dup(cx, self.exec.as_ref().map(|e| e.0), first)?;
                check_common(cx, kind, &fields, first)?;
                self.exec = Some((first.pos, parse_exec(cx, kind, &fields, line)?));
                return Ok(());
            }
            "PS_ACTION" => {
                dup(cx, self.action.as_ref().map(|e| e.0), first)?;
                check_common(cx, kind, &fields, first)?;
                self.action = Some((first.pos, parse_action(cx, &fields, first)?));
                return Ok(());
            }
            "{" => {
                return Err(cx.err(
                    first.pos,
                    "expected PS_INIT, PS_EXEC, PS_ACTION, PS_QUIT or '}', found another '{'",
                ))
            }
            other => {
                return Err(cx.err(
                    first.pos,
                    format!(
                        "expected PS_INIT, PS_EXEC, PS_ACTION, PS_QUIT or '}}', found {other:?}"
                    ),
                ))
            }
        };
        dup(cx, *slot, first)?;
        check_common(cx, kind, &fields, first)?;
        check_no_arg_entry(cx, &fields, first)?;
        *slot = Some(first.pos);
        Ok(())
    }

    /// The check, once the block is closed: PS_EXEC and PS_ACTION are required.
    fn finish(
        self,
        cx: &mut Ctx,
        kind: StallKind,
        name: &str,
        head: &Token,
    ) -> Result<StallCheck, Diagnostic> {
        let Some((_, exec)) = self.exec else {
            return Err(cx.err(head.pos, format!("the {name} block has no PS_EXEC entry (it carries the interval, retry-over time and port)")));
        };
        let Some((_, retry_over_on_kill_failure)) = self.action else {
            return Err(cx.err(head.pos, format!("the {name} block has no PS_ACTION entry (it carries what to do when the kill fails)")));
        };
        let ext = self.ext;
        let probe_timeout = match (exec.probe_timeout, ext.probe_timeout) {
            (Some(_), Some((pos, _))) => {
                return Err(cx.err(pos, "probe_timeout is set twice: also by PS_EXEC's argv[3]"))
            }
            (a, b) => a.or(b.map(|(_, d)| d)),
        };
        if let Some(t) = probe_timeout {
            if t > exec.interval {
                cx.warn(head.pos, format!("the probe timeout ({} s) is longer than the interval ({} s): probes will overlap no more, but run late", t.as_secs(), exec.interval.as_secs()));
            }
        }
        Ok(StallCheck {
            kind,
            block_name: name.to_string(),
            pos: head.pos,
            interval: exec.interval,
            duration: exec.duration,
            port: exec.port,
            host: exec.host,
            probe_timeout,
            path: exec.path,
            stop_after_detect: exec.stop_after_detect,
            retry_over_on_kill_failure,
            evidence: ext.evidence,
            kernel_window: ext.kernel_window,
            kernel_action: ext.kernel_action,
            tls_verify: ext.tls_verify,
            status_classes: ext.status_classes,
        })
    }
}

fn after_first_token(line: &LogicalLine) -> &[(char, Pos)] {
    let cs = &line.chars;
    let mut i = cs.iter().take_while(|c| c.0.is_whitespace()).count();
    while i < cs.len() && !cs[i].0.is_whitespace() {
        i += 1;
    }
    &cs[i..]
}

fn dup(cx: &Ctx, prev: Option<Pos>, t: &Token) -> Result<(), Diagnostic> {
    match prev {
        Some(p) => Err(cx.err(
            t.pos,
            format!(
                "{} appears twice in this block (first at line {})",
                t.text, p.line
            ),
        )),
        None => Ok(()),
    }
}

fn missing_fields(cx: &Ctx, f: &[Token], entry: &Token) -> Diagnostic {
    cx.err(
        f.first().map_or(entry.pos, |t| t.pos),
        format!(
            "expected {} fields as type:file:call:timeout:interval:error:argc, found {:?}",
            entry.text,
            join(f)
        ),
    )
}

/// type (DLL), file (a known library), call (DIRECT).
fn check_common(
    cx: &mut Ctx,
    kind: StallKind,
    f: &[Token],
    entry: &Token,
) -> Result<(), Diagnostic> {
    let [ty, file, call, rest @ ..] = f else {
        return Err(missing_fields(cx, f, entry));
    };
    if ty.text.is_empty() {
        return Err(missing_fields(cx, f, entry));
    }
    if ty.text != "DLL" {
        return Err(cx.err(ty.pos, format!("expected type DLL, found {:?}", ty.text)));
    }
    let base = file.text.rsplit('/').next().unwrap_or_default();
    if !file.text.starts_with('/') || !LIBS.contains(&base) {
        return Err(cx.err(
            file.pos,
            format!(
                "expected one of the seed's libraries ({}) as an absolute path, found {:?}",
                LIBS.join(", "),
                file.text
            ),
        ));
    }
    if kind_of_lib(base) != Some(kind) {
        cx.warn(
            file.pos,
            format!("{base} is not the library of this block; the block name decides the check"),
        );
    }
    if call.text != "DIRECT" {
        return Err(cx.err(
            call.pos,
            format!("expected call DIRECT, found {:?}", call.text),
        ));
    }
    if let Some(timeout) = rest.first().filter(|t| !is_default(t)) {
        cx.warn(
            timeout.pos,
            format!(
                "the timeout field is not used; {:?} is ignored",
                timeout.text
            ),
        );
    }
    Ok(())
}

fn is_default(t: &Token) -> bool {
    t.text.is_empty() || t.text == "-"
}

fn join(f: &[Token]) -> String {
    f.iter()
        .map(|t| t.text.as_str())
        .collect::<Vec<_>>()
        .join(":")
}

/// The last field must be argc 0.
fn last_is_argc_zero(cx: &Ctx, f: &[Token], entry: &Token) -> Result<(), Diagnostic> {
    let last = f.last();
    if f.len() < 5 || last.is_none_or(|t| t.text != "0") {
        return Err(cx.err(
            last.map_or(entry.pos, |t| t.pos),
            format!(
                "expected {} to end with argc 0 (type:file:call:timeout:interval:error:argc), found {:?}",
                entry.text,
                join(f)
            ),
        ));
    }
    if let Some(extra) = f.get(8) {
        return Err(cx.err(
            extra.pos,
            format!("too many fields for {}: {:?}", entry.text, join(f)),
        ));
    }
    Ok(())
}

/// INIT and QUIT take no values (the seed: "cannot be changed").
fn check_no_arg_entry(cx: &mut Ctx, f: &[Token], entry: &Token) -> Result<(), Diagnostic> {
    last_is_argc_zero(cx, f, entry)?;
    for t in f.get(4..f.len().saturating_sub(1)).unwrap_or_default() {
        if !is_default(t) {
            cx.warn(
                t.pos,
                format!("{} takes no values; {:?} is ignored", entry.text, t.text),
            );
        }
    }
    Ok(())
}

fn parse_action(cx: &mut Ctx, f: &[Token], entry: &Token) -> Result<bool, Diagnostic> {
    last_is_argc_zero(cx, f, entry)?;
    // With five fields the only value sits in the timeout field: no error to read.
    if f.len() < 6 {
        return Err(cx.err(
            f.get(3).map_or(entry.pos, |t| t.pos),
            format!(
                "expected PS_ACTION as type:file:call:timeout:interval:error:argc, found {:?} ({} fields)",
                join(f),
                f.len()
            ),
        ));
    }
    let Some(err_tok) = f.len().checked_sub(2).and_then(|i| f.get(i)) else {
        return Err(cx.err(
            entry.pos,
            format!("expected {} to have an error field before argc", entry.text),
        ));
    };
    let value = match err_tok.text.as_str() {
        "" | "-" => false,
        "0" => false,
        "1" => true,
        other => {
            return Err(cx.err(
                err_tok.pos,
                format!("expected the ACTION error 0 or 1 (1: run the retry-over action when the kill fails), found {other:?}"),
            ))
        }
    };
    // Values other than the one taken, between call and argc, would be a second guess.
    let others: Vec<&Token> = f
        .get(4..f.len().saturating_sub(2))
        .unwrap_or_default()
        .iter()
        .filter(|t| !is_default(t))
        .collect();
    if let Some(t) = others.first() {
        return Err(cx.err(
            t.pos,
            format!(
                "ambiguous PS_ACTION {:?}: expected one value (error) before argc, found also {:?}",
                join(f),
                t.text
            ),
        ));
    }
    if f.len() != 7 {
        cx.warn(
            err_tok.pos,
            format!(
                "PS_ACTION has {} fields where the guide documents 7 (type:file:call:timeout:interval:error:argc); reading {:?} (the field before argc) as error = {}",
                f.len(),
                err_tok.text,
                u8::from(value)
            ),
        );
    }
    Ok(value)
}

fn parse_exec(
    cx: &mut Ctx,
    kind: StallKind,
    f: &[Token],
    line: &LogicalLine,
) -> Result<Exec, Diagnostic> {
    let [_, _, _, _, interval_tok, error_tok, argc_tok, argv @ ..] = f else {
        return Err(cx.err(
            f.last().map_or(line.end_pos(), |t| t.pos),
            format!(
                "expected PS_EXEC as type:file:call:timeout:interval:error:argc:argv..., found {:?}",
                join(f)
            ),
        ));
    };
    let interval_s = num_or(cx, interval_tok, 60, "the interval (seconds)")?;
    if interval_s < 10 {
        return Err(cx.err(
            interval_tok.pos,
            format!("expected an interval of at least 10 seconds, found {interval_s}"),
        ));
    }
    let stop_after_detect = match error_tok.text.as_str() {
        "" | "-" | "0" => false,
        "1" => true,
        other => {
            return Err(cx.err(
                error_tok.pos,
                format!("expected the EXEC error 0 (keep stall-watching) or 1 (stop after one detection), found {other:?}"),
            ))
        }
    };
    let (duration_tok, port_tok) = exec_args(cx, kind, argc_tok, argv)?;
    let duration_s = num_or(cx, duration_tok, 600, "the retry-over time (seconds)")?;
    if duration_s < interval_s {
        return Err(cx.err(
            duration_tok.pos,
            format!("expected a retry-over time of at least the interval ({interval_s} s), found {duration_s}"),
        ));
    }
    let port = match port_tok.text.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => {
            return Err(cx.err(
                port_tok.pos,
                format!("expected a port from 1 to 65535, found {:?}", port_tok.text),
            ))
        }
    };
    let host = argv
        .get(2)
        .filter(|t| !is_default(t))
        .map(|t| t.text.clone());
    let probe_timeout = exec_probe_timeout(cx, argv)?;
    let path = exec_path(cx, argv)?;
    Ok(Exec {
        interval: Duration::from_secs(interval_s),
        stop_after_detect,
        duration: Duration::from_secs(duration_s),
        port,
        host,
        probe_timeout,
        path,
    })
}

/// PS_EXEC's argc and argv: as many arguments as argc says, as many as the block
/// kind takes. Returns the two every kind has: the retry-over time and the port.
fn exec_args<'t>(
    cx: &Ctx,
    kind: StallKind,
    argc_tok: &Token,
    argv: &'t [Token],
) -> Result<(&'t Token, &'t Token), Diagnostic> {
    let argc: usize = argc_tok.text.parse().map_err(|_| {
        cx.err(
            argc_tok.pos,
            format!("expected argc, a whole number, found {:?}", argc_tok.text),
        )
    })?;
    let (lo, hi, shape) = match kind {
        StallKind::Web => (2, 3, "duration:port[:host]"),
        StallKind::Socket => (2, 2, "duration:port"),
        StallKind::Ssl => (2, 5, "duration:port[:host[:timeout[:path]]]"),
    };
    if argc < lo || argc > hi {
        let want = if lo == hi {
            format!("{lo}")
        } else {
            format!("{lo} to {hi}")
        };
        return Err(cx.err(
            argc_tok.pos,
            format!("expected argc {want} ({shape}), found {argc}"),
        ));
    }
    if argv.len() != argc {
        let at = argv.get(argc).map_or(argc_tok.pos, |t| t.pos);
        return Err(cx.err(
            at,
            format!(
                "argc is {argc} but {} argument(s) follow; expected {shape}",
                argv.len()
            ),
        ));
    }
    let [duration_tok, port_tok, ..] = argv else {
        return Err(cx.err(
            argc_tok.pos,
            format!("expected argc {lo} or more ({shape})"),
        ));
    };
    Ok((duration_tok, port_tok))
}

/// PS_EXEC's argv[3] (HTTPS): the probe timeout in seconds, if given.
fn exec_probe_timeout(cx: &Ctx, argv: &[Token]) -> Result<Option<Duration>, Diagnostic> {
    match argv.get(3).filter(|t| !is_default(t)) {
        Some(t) => {
            let s = num_or(cx, t, 0, "the probe timeout (seconds)")?;
            if s == 0 {
                return Err(cx.err(t.pos, "expected a probe timeout of at least 1 second"));
            }
            Ok(Some(Duration::from_secs(s)))
        }
        None => Ok(None),
    }
}

/// PS_EXEC's argv[4] (HTTPS): the request path, if given.
fn exec_path(cx: &Ctx, argv: &[Token]) -> Result<Option<String>, Diagnostic> {
    match argv.get(4).filter(|t| !is_default(t)) {
        Some(t) if t.text.starts_with('/') => Ok(Some(t.text.clone())),
        Some(t) => Err(cx.err(
            t.pos,
            format!("expected a path starting with '/', found {:?}", t.text),
        )),
        None => Ok(None),
    }
}

fn num_or(cx: &Ctx, t: &Token, default: u64, what: &str) -> Result<u64, Diagnostic> {
    if is_default(t) {
        return Ok(default);
    }
    t.text
        .parse::<u64>()
        .ok()
        .filter(|n| *n <= 86_400)
        .ok_or_else(|| {
            cx.err(
                t.pos,
                format!(
                    "expected {what}, a whole number up to 86400, found {:?}",
                    t.text
                ),
            )
        })
}

/// psweb's additions inside a block, as `key = value` lines (pfiles/README.md).
struct Extensions {
    evidence: StallEvidence,
    kernel_window: Duration,
    kernel_action: KernelAction,
    probe_timeout: Option<(Pos, Duration)>,
    tls_verify: TlsVerifyCfg,
    status_classes: Option<Vec<u8>>,
    seen: Vec<String>,
}

impl Default for Extensions {
    fn default() -> Self {
        Self {
            evidence: StallEvidence::Probe,
            kernel_window: Duration::from_secs(2),
            kernel_action: KernelAction::Kill,
            probe_timeout: None,
            tls_verify: TlsVerifyCfg::System,
            status_classes: None,
            seen: Vec::new(),
        }
    }
}

const BLOCK_KEYS: &[&str] = &[
    "evidence",
    "kernel_window",
    "kernel_action",
    "probe_timeout",
    "tls_verify",
    "status",
];

impl Extensions {
    fn set(
        &mut self,
        cx: &Ctx,
        kind: StallKind,
        key: &Token,
        value: &Token,
    ) -> Result<(), Diagnostic> {
        let k = key.text.as_str();
        if !BLOCK_KEYS.contains(&k) {
            return Err(cx.err(
                key.pos,
                format!(
                    "unknown stall-check setting {k:?}; expected one of: {}",
                    BLOCK_KEYS.join(", ")
                ),
            ));
        }
        if self.seen.iter().any(|s| s == k) {
            return Err(cx.err(key.pos, format!("{k} is set twice in this block")));
        }
        self.seen.push(k.to_string());
        let v = value.text.as_str();
        match k {
            "evidence" => {
                self.evidence = match v {
                    "probe" => StallEvidence::Probe,
                    "kernel" => StallEvidence::Kernel,
                    _ => {
                        return Err(
                            cx.err(value.pos, format!("expected probe or kernel, found {v:?}"))
                        )
                    }
                }
            }
            "kernel_window" => {
                self.kernel_window = duration_within(
                    cx,
                    value,
                    Duration::from_millis(500),
                    Duration::from_secs(600),
                    "from 500ms to 600s",
                )?;
            }
            "kernel_action" => {
                self.kernel_action = match v {
                    "kill" => KernelAction::Kill,
                    "observe" => KernelAction::Observe,
                    _ => {
                        return Err(
                            cx.err(value.pos, format!("expected kill or observe, found {v:?}"))
                        )
                    }
                }
            }
            "probe_timeout" => {
                let d = duration_within(
                    cx,
                    value,
                    Duration::from_millis(100),
                    Duration::from_secs(600),
                    "from 100ms to 600s",
                )?;
                self.probe_timeout = Some((value.pos, d));
            }
            "tls_verify" => self.tls_verify = tls_verify(cx, kind, key, value)?,
            "status" => self.status_classes = status_classes(cx, kind, key, value)?,
            _ => {}
        }
        Ok(())
    }
}

/// A duration from `lo` to `hi` (`range` says so in the error).
fn duration_within(
    cx: &Ctx,
    value: &Token,
    lo: Duration,
    hi: Duration,
    range: &str,
) -> Result<Duration, Diagnostic> {
    let v = value.text.as_str();
    super::parse_duration_text(v)
        .filter(|d| *d >= lo && *d <= hi)
        .ok_or_else(|| {
            cx.err(
                value.pos,
                format!("expected a duration {range}, found {v:?}"),
            )
        })
}

/// `tls_verify` (HTTPS blocks only): `system`, `off` or a CA file.
fn tls_verify(
    cx: &Ctx,
    kind: StallKind,
    key: &Token,
    value: &Token,
) -> Result<TlsVerifyCfg, Diagnostic> {
    if kind != StallKind::Ssl {
        return Err(cx.err(
            key.pos,
            "tls_verify applies to _bi_webservs (HTTPS) blocks only",
        ));
    }
    let v = value.text.as_str();
    match v {
        "system" => Ok(TlsVerifyCfg::System),
        "off" => Ok(TlsVerifyCfg::Off),
        p if p.starts_with('/') => Ok(TlsVerifyCfg::CaFile(p.into())),
        _ => Err(cx.err(
            value.pos,
            format!("expected system, off, or the absolute path of a CA file (PEM), found {v:?}"),
        )),
    }
}

/// `status` (HTTP and HTTPS): `any` (None), or the classes such as `2xx,3xx`.
fn status_classes(
    cx: &Ctx,
    kind: StallKind,
    key: &Token,
    value: &Token,
) -> Result<Option<Vec<u8>>, Diagnostic> {
    if kind == StallKind::Socket {
        return Err(cx.err(key.pos, "status applies to HTTP and HTTPS checks only"));
    }
    let v = value.text.as_str();
    if v == "any" {
        return Ok(None);
    }
    let mut classes = Vec::new();
    for part in v.split(',') {
        let c = part
            .strip_suffix("xx")
            .and_then(|d| d.parse::<u8>().ok())
            .filter(|d| (1..=5).contains(d))
            .ok_or_else(|| {
                cx.err(
                    value.pos,
                    format!("expected any, or status classes such as 2xx,3xx, found {v:?}"),
                )
            })?;
        classes.push(c);
    }
    Ok(Some(classes))
}
