//! Lines and tokens, each character remembering where it came from.
//!
//! A physical line whose last non-blank character is `:` continues on the next line
//! (the seed's PS_EXEC sample is split that way); the continuation's leading blanks
//! are dropped. `#` at the start of a line, or after a blank, starts a comment.

use super::{Ctx, Diagnostic, Pos};

/// One logical line: its characters with their places. Comments are removed.
#[derive(Clone, Debug, Default)]
pub struct LogicalLine {
    pub chars: Vec<(char, Pos)>,
    /// Where the line ends (for "expected X at end of line").
    pub end: Pos,
}

impl LogicalLine {
    pub fn end_pos(&self) -> Pos {
        self.end
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Token {
    pub text: String,
    pub pos: Pos,
}

pub fn logical_lines(text: &str) -> Vec<LogicalLine> {
    let mut out = Vec::new();
    let mut cur = LogicalLine::default();
    let mut continuing = false;
    for (idx, raw) in text.lines().enumerate() {
        let line_no = idx + 1;
        let mut chars: Vec<(char, Pos)> = raw
            .chars()
            .enumerate()
            .map(|(i, c)| {
                (
                    c,
                    Pos {
                        line: line_no,
                        col: i + 1,
                    },
                )
            })
            .collect();
        if continuing {
            let lead = chars.iter().take_while(|c| c.0.is_whitespace()).count();
            chars.drain(..lead);
        }
        while chars.last().is_some_and(|c| c.0.is_whitespace()) {
            chars.pop();
        }
        let ends_with_colon = chars.last().is_some_and(|c| c.0 == ':');
        cur.chars.extend(chars);
        cur.end = Pos {
            line: line_no,
            col: raw.chars().count() + 1,
        };
        if ends_with_colon {
            continuing = true;
            continue;
        }
        continuing = false;
        out.push(strip_comment(std::mem::take(&mut cur)));
    }
    if continuing {
        out.push(strip_comment(cur));
    }
    out
}

fn strip_comment(mut l: LogicalLine) -> LogicalLine {
    let mut prev_blank = true;
    let mut cut = None;
    for (i, (c, _)) in l.chars.iter().enumerate() {
        if *c == '#' && prev_blank {
            cut = Some(i);
            break;
        }
        prev_blank = c.is_whitespace();
    }
    if let Some(i) = cut {
        l.chars.truncate(i);
        while l.chars.last().is_some_and(|c| c.0.is_whitespace()) {
            l.chars.pop();
        }
    }
    l
}

/// Splits a logical line on blanks. A token may be double-quoted to hold blanks.
pub fn split_tokens(cx: &Ctx, line: &LogicalLine) -> Result<Vec<Token>, Diagnostic> {
    let mut toks = Vec::new();
    let mut i = 0;
    let cs = &line.chars;
    while i < cs.len() {
        if cs[i].0.is_whitespace() {
            i += 1;
            continue;
        }
        let start = cs[i].1;
        let mut text = String::new();
        while i < cs.len() && !cs[i].0.is_whitespace() {
            if cs[i].0 == '"' {
                let open = cs[i].1;
                i += 1;
                loop {
                    match cs.get(i) {
                        None => return Err(cx.err(open, "this quote is never closed")),
                        Some(('"', _)) => {
                            i += 1;
                            break;
                        }
                        Some((c, _)) => {
                            text.push(*c);
                            i += 1;
                        }
                    }
                }
            } else {
                text.push(cs[i].0);
                i += 1;
            }
        }
        toks.push(Token { text, pos: start });
    }
    Ok(toks)
}

/// Splits the text after `PS_XXX` on `:`, each field with its place. An empty field
/// gets the place where it would stand.
pub fn split_fields(chars: &[(char, Pos)], end: Pos) -> Vec<Token> {
    let mut out = Vec::new();
    let mut text = String::new();
    let mut start: Option<Pos> = None;
    for (c, p) in chars {
        if *c == ':' {
            out.push(Token {
                text: std::mem::take(&mut text),
                pos: start.unwrap_or(*p),
            });
            start = None;
            continue;
        }
        if c.is_whitespace() {
            continue;
        }
        if start.is_none() {
            start = Some(*p);
        }
        text.push(*c);
    }
    out.push(Token {
        text,
        pos: start.unwrap_or(end),
    });
    out
}
