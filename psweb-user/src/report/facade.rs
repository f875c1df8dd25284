//! The `log` facade's logger: lines that libraries and the eBPF loader write with
//! `log::warn!` and friends (aya, aya-log's records from the kernel side, rustls) go
//! out through [`Logger`], to the same syslog / journal / stderr as pcheck's own lines.

use super::Logger;
use crate::core::Level;
use std::sync::Arc;

/// Lines below this level are dropped (debug lines are timings and library chatter).
const MAX_LEVEL: log::LevelFilter = log::LevelFilter::Info;

struct Facade(Arc<Logger>);

impl log::Log for Facade {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= MAX_LEVEL
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = level_of(record.level());
        let msg = line(record.target(), &record.args().to_string());
        self.0.log(level, &msg);
    }

    fn flush(&self) {}
}

/// The syslog severity of a `log` level.
fn level_of(l: log::Level) -> Level {
    match l {
        log::Level::Error => Level::Error,
        log::Level::Warn => Level::Warning,
        log::Level::Info | log::Level::Debug | log::Level::Trace => Level::Info,
    }
}

/// psweb's own lines say what they are about; another crate's line is prefixed with
/// the crate (its `log` target), so the operator knows where it comes from.
fn line(target: &str, msg: &str) -> String {
    if target == "psweb" || target.starts_with("psweb::") {
        msg.to_string()
    } else {
        format!("{target}: {msg}")
    }
}

/// Installs the facade's logger for the whole process (call once, before the eBPF
/// loader or a TLS connection can log).
/// Returns false when another logger was installed first (that one keeps the lines).
pub fn install(log: Arc<Logger>) -> bool {
    // Leaked on purpose: the logger lives as long as the process.
    if log::set_logger(Box::leak(Box::new(Facade(log)))).is_err() {
        return false;
    }
    log::set_max_level(MAX_LEVEL);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_and_prefixes() {
        let cases = [
            (log::Level::Error, Level::Error),
            (log::Level::Warn, Level::Warning),
            (log::Level::Info, Level::Info),
            (log::Level::Debug, Level::Info),
        ];
        for (from, to) in cases {
            assert_eq!(level_of(from), to, "{from}");
        }
        assert_eq!(line("psweb::sense::ebpf", "eBPF: x"), "eBPF: x");
        assert_eq!(line("psweb", "x"), "x");
        assert_eq!(line("aya::bpf", "x"), "aya::bpf: x");
    }
}
