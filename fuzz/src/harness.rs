//! What each fuzz target does with one input. Shared with `tests/fuzz_regressions.rs`,
//! which replays every kept input (fuzz/regressions/<target>/) through the same code.
//! A target fails only by panicking (or hanging, or exhausting memory): every input,
//! however bad, must come back as a value or a diagnostic.
#![allow(dead_code)]

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The pfile parser, on any text (invalid UTF-8 as the loader would refuse it).
pub fn pfile(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(pf) = psweb::pfile::parse(Path::new("fuzz.pfile"), text) {
            // What `pcheck --check` does next with a parsed pfile (no file is required
            // to exist: the diagnostics are only collected).
            let _ = psweb::pfile::check_files(&pf);
            for d in &pf.warnings {
                let _ = d.to_string();
            }
        }
    }
}

/// The control socket's request line, and the error answer of what did not parse.
pub fn control_request(data: &[u8]) {
    let line = String::from_utf8_lossy(data);
    if let Err(e) = psweb::admin::Request::parse(&line) {
        let _ = psweb::admin::Response::error(format!("bad request: {e}"));
    }
}

/// The state-file loader on any file content.
pub fn state_file(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let _ = psweb::state::parse(&text);
}

/// The eBPF event decoder (ring buffer and perf array records) on any record.
pub fn ring_event(data: &[u8]) {
    let _ = psweb::sense::ebpf::decode_event(data);
}

/// The HTTP probe's exchange (request out, response head read with httparse) against
/// a server that answers `data[2..]`, delivered in reads of `data[0]`-derived sizes,
/// ending with EOF or (when `data[1]` is odd) a connection reset.
pub fn http_response(data: &[u8]) {
    let [size, flags, body @ ..] = data else {
        return;
    };
    let mut server = Server {
        body,
        at: 0,
        read_size: usize::from(*size).max(1) * 17,
        reset_at_end: flags & 1 == 1,
    };
    let target = psweb::probe::Target::new("127.0.0.1", 80);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime");
    let _ = rt.block_on(psweb::probe::http::exchange(&mut server, &target, 80));
}

/// An in-memory peer: swallows what is written, serves `body` in pieces.
struct Server<'a> {
    body: &'a [u8],
    at: usize,
    read_size: usize,
    reset_at_end: bool,
}

impl AsyncRead for Server<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let left = self.body.len() - self.at;
        if left == 0 && self.reset_at_end {
            return Poll::Ready(Err(io::ErrorKind::ConnectionReset.into()));
        }
        let n = left.min(self.read_size).min(buf.remaining());
        let from = self.at;
        buf.put_slice(&self.body[from..from + n]);
        self.at += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Server<'_> {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(b.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}
