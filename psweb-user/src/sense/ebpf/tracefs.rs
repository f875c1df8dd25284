//! tracefs: found (or mounted) for aya to attach tracepoints, and each tracepoint's
//! `format` file read for the offsets of its record's fields.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::EbpfError;

/// Serialises the tracefs check/mount across threads (tests load in parallel).
static TRACEFS_LOCK: Mutex<()> = Mutex::new(());

/// Finds a tracefs with `events/` readable, mounting one on /sys/kernel/tracing if none
/// is (containers and minimal hosts often leave it unmounted; aya needs it to attach).
pub(super) fn ensure_tracefs() -> Result<PathBuf, EbpfError> {
    let _guard = TRACEFS_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let candidates = ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"];
    let mut denied = None;
    for c in candidates {
        match std::fs::read_dir(Path::new(c).join("events")) {
            Ok(_) => return Ok(PathBuf::from(c)),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => denied = Some(c),
            Err(_) => {}
        }
    }
    if let Some(c) = denied {
        return Err(EbpfError::Load(format!(
            "loading eBPF needs root: tracefs ({c}) is mode 0700"
        )));
    }
    if !nix::unistd::geteuid().is_root() {
        return Err(EbpfError::Load(
            "loading eBPF needs root: tracefs is not mounted and only root can mount it".into(),
        ));
    }
    let target = candidates[0];
    let src = c"tracefs";
    let tgt = c"/sys/kernel/tracing";
    // SAFETY: valid NUL-terminated strings; no data argument.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(EbpfError::Load(format!(
            "tracefs is not mounted and mounting it on {target} failed: {err} \
             (in a container, mount tracefs or run with --privileged)"
        )));
    }
    log::info!("mounted tracefs on {target} (needed to attach tracepoints)");
    match std::fs::read_dir(Path::new(target).join("events")) {
        Ok(_) => Ok(PathBuf::from(target)),
        Err(e) => Err(EbpfError::Load(format!(
            "tracefs mounted on {target} but events/ unreadable: {e}"
        ))),
    }
}

/// Field name -> (offset, size) in a tracepoint record.
pub(super) type Fields = HashMap<String, (u32, u32)>;

/// Field name -> (offset, size) in a tracepoint record, from its `format` file.
/// `None` if the tracepoint does not exist on this kernel.
pub(super) fn tracepoint_fields(
    tracefs: &Path,
    category: &str,
    name: &str,
) -> Result<Option<Fields>, EbpfError> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(EbpfError::Load(format!(
                "cannot read {}: {e}",
                path.display()
            )))
        }
    };
    let mut fields = HashMap::new();
    for line in text.lines() {
        let mut decl = None;
        let mut offset = None;
        let mut size = None;
        for part in line.split(';') {
            let part = part.trim();
            if let Some(d) = part.strip_prefix("field:") {
                decl = Some(d);
            } else if let Some(o) = part.strip_prefix("offset:") {
                offset = o.parse::<u32>().ok();
            } else if let Some(s) = part.strip_prefix("size:") {
                size = s.parse::<u32>().ok();
            }
        }
        if let (Some(d), Some(o), Some(s)) = (decl, offset, size) {
            if let Some(last) = d.split_whitespace().last() {
                let field = last
                    .split('[')
                    .next()
                    .unwrap_or(last)
                    .trim_start_matches('*');
                fields.insert(field.to_string(), (o, s));
            }
        }
    }
    Ok(Some(fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_parsing_finds_fields() {
        let dir = std::env::temp_dir().join(format!("psweb-fmt-{}", std::process::id()));
        let ev = dir.join("events/sched/sched_process_exit");
        std::fs::create_dir_all(&ev).unwrap();
        std::fs::write(
            ev.join("format"),
            "name: x\nformat:\n\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n\tfield:const void * skaddr;\toffset:40;\tsize:8;\tsigned:0;\n",
        )
        .unwrap();
        let f = tracepoint_fields(&dir, "sched", "sched_process_exit")
            .unwrap()
            .unwrap();
        assert_eq!(f.get("comm"), Some(&(8, 16)));
        assert_eq!(f.get("group_dead"), Some(&(32, 1)));
        assert_eq!(f.get("skaddr"), Some(&(40, 8)));
        assert!(tracepoint_fields(&dir, "sched", "nope").unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
