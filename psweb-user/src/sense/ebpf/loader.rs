//! Loading: plans the hooks for this kernel ([`super::plan`]), loads the object with
//! the planned offsets in its read-only data, attaches each program, and takes the
//! maps the agent and the readers use.

use std::path::Path;
use std::time::Instant;

use aya::maps::{HashMap as BpfHashMap, Map, MapData, MapError};
use aya::programs::{KProbe, ProgramError, TracePoint};
use aya::{Ebpf, EbpfLoader, Pod};
use psweb_ebpf::{Config, GLOBAL_CONFIG, MAP_EVENTS, MAP_WATCHED_PIDS, MAP_WATCHED_PORTS};

use super::btf::{KernelBtf, VMLINUX_BTF};
use super::plan::{plan, Attach, Hook, Plan};
use super::tracefs::ensure_tracefs;
use super::{
    error_chain, kernel_has_ringbuf, object_for, pick_transport, EbpfError, Events, KernelEvidence,
    LoadReport, Transport, TransportChoice, EVIDENCE_EXIT,
};

/// [`Config`] as aya plain data.
#[derive(Clone, Copy)]
#[repr(transparent)]
struct PodConfig(Config);
// SAFETY: Config is #[repr(C)], made only of integers, with explicit padding.
unsafe impl Pod for PodConfig {}

/// See [`KernelEvidence::load_with`].
pub(super) fn load(
    object: &Path,
    choice: TransportChoice,
) -> Result<(KernelEvidence, LoadReport), EbpfError> {
    let started = Instant::now();
    let has_ringbuf = choice != TransportChoice::Auto || kernel_has_ringbuf();
    let transport = pick_transport(choice, has_ringbuf);
    let object = &object_for(object, transport);
    let tracefs = ensure_tracefs()?;
    let plan = {
        let btf = KernelBtf::read(Path::new(VMLINUX_BTF))?;
        plan(&btf, &tracefs)?
    };
    let planned = started.elapsed();

    let mut ebpf = load_object(object, plan.config)?;
    let loaded = started.elapsed();
    let (hooks, unavailable) = attach_all(&mut ebpf, plan, object)?;
    let (pids, ports, events) = take_maps(&mut ebpf, transport, object)?;
    // eBPF-side diagnostics (aya-log): cheap (one ring buffer), optional.
    let logger = match aya_log::EbpfLogger::init(&mut ebpf) {
        Ok(l) => Some(l),
        Err(e) => {
            log::debug!("eBPF logs unavailable: {e}");
            None
        }
    };

    let load_attach = started.elapsed();
    log::debug!(
        "eBPF: BTF/format lookups {planned:?}, object load {:?}, verify+attach {:?}",
        loaded - planned,
        load_attach - loaded
    );
    let report = LoadReport {
        load_attach,
        hooks,
        unavailable,
        transport,
    };
    let evidence = KernelEvidence {
        pids,
        ports,
        events: Some(events),
        logger,
        tasks: Vec::new(),
        _ebpf: ebpf,
    };
    Ok((evidence, report))
}

/// Reads `object` and loads it with `config` as its read-only data.
fn load_object(object: &Path, config: Config) -> Result<Ebpf, EbpfError> {
    let bytes = std::fs::read(object).map_err(|e| {
        EbpfError::Load(format!(
            "cannot read the eBPF object {}: {e} (build it with `cargo xtask build-ebpf`)",
            object.display()
        ))
    })?;
    let config = PodConfig(config);
    EbpfLoader::new()
        // The programs use no CO-RE relocations: offsets come in through PSWEB_CONFIG.
        .btf(None)
        .override_global(GLOBAL_CONFIG, &config, true)
        .load(&bytes)
        .map_err(|e| {
            EbpfError::Load(format!(
                "loading the eBPF object {} failed: {}{}",
                object.display(),
                error_chain(&e),
                permission_hint(&e)
            ))
        })
}

/// Attaches every planned program. Exit evidence is required; any other hook that
/// fails to load or attach is reported as unavailable (with what replaces it) and the
/// rest still run. Returns the report's (hooks, unavailable).
#[allow(clippy::type_complexity)]
fn attach_all(
    ebpf: &mut Ebpf,
    plan: Plan,
    object: &Path,
) -> Result<(Vec<(String, String)>, Vec<(String, String)>), EbpfError> {
    let mut hooks = plan.hooks;
    let mut unavailable = plan.unavailable;
    for a in &plan.attach {
        match attach_one(ebpf, a, object) {
            Ok(insns) => {
                if let (Some(n), Some(h)) = (insns, hooks.iter_mut().find(|(k, _)| k == a.kind)) {
                    h.1.push_str(&format!(" [{n} insns verified]"));
                }
            }
            Err(e) if a.kind == EVIDENCE_EXIT => return Err(e),
            Err(e) => {
                let why = format!("{e}; {}", a.fallback);
                log::warn!("eBPF: {}: {why}", a.kind);
                if let Some(h) = hooks.iter_mut().find(|(k, _)| k == a.kind) {
                    h.1 = format!("none: {why}");
                }
                unavailable.push((a.kind.to_string(), why));
            }
        }
    }
    Ok((hooks, unavailable))
}

/// The watched-PID and watched-port maps, and the events map as `transport` reads it.
#[allow(clippy::type_complexity)]
fn take_maps(
    ebpf: &mut Ebpf,
    transport: Transport,
    object: &Path,
) -> Result<
    (
        BpfHashMap<MapData, u32, u8>,
        BpfHashMap<MapData, u16, u8>,
        Events,
    ),
    EbpfError,
> {
    let pids = take_map(ebpf, MAP_WATCHED_PIDS)?
        .try_into()
        .map_err(|e: MapError| EbpfError::Load(format!("map {MAP_WATCHED_PIDS}: {e}")))?;
    let ports = take_map(ebpf, MAP_WATCHED_PORTS)?
        .try_into()
        .map_err(|e: MapError| EbpfError::Load(format!("map {MAP_WATCHED_PORTS}: {e}")))?;
    let events_map = take_map(ebpf, MAP_EVENTS)?;
    let events = match transport {
        Transport::RingBuffer => events_map.try_into().map(Events::Ring),
        Transport::PerfArray => events_map.try_into().map(Events::Perf),
    }
    .map_err(|e: MapError| {
        EbpfError::Load(format!(
            "map {MAP_EVENTS} of {} is not a {}: {e}",
            object.display(),
            transport.name()
        ))
    })?;
    Ok((pids, ports, events))
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<Map, EbpfError> {
    ebpf.take_map(name).ok_or_else(|| {
        EbpfError::Load(format!(
            "the eBPF object has no map {name} (rebuild it with `cargo xtask build-ebpf`)"
        ))
    })
}

/// Loads and attaches one program. Returns the verifier's instruction count when the
/// kernel reports it (5.16+).
fn attach_one(ebpf: &mut Ebpf, a: &Attach, object: &Path) -> Result<Option<u32>, EbpfError> {
    let prog = a.prog;
    let program = ebpf.program_mut(prog).ok_or_else(|| {
        EbpfError::Load(format!(
            "the eBPF object {} has no program {prog} (rebuild it with `cargo xtask build-ebpf`)",
            object.display()
        ))
    })?;
    let rejected = |e: &ProgramError| {
        EbpfError::Load(format!(
            "the kernel rejected program {prog}: {}{}",
            error_chain(e),
            permission_hint(e)
        ))
    };
    let attach_failed = |to: String, e: &ProgramError| {
        EbpfError::Load(format!(
            "attaching {prog} to {to} failed: {}{}",
            error_chain(e),
            permission_hint(e)
        ))
    };
    let not_a = |what: &str, e: ProgramError| {
        EbpfError::Load(format!("program {prog} is not a {what} program: {e}"))
    };
    match a.hook {
        Hook::Tracepoint(category, name) => {
            let tp: &mut TracePoint = program.try_into().map_err(|e| not_a("tracepoint", e))?;
            tp.load().map_err(|e| rejected(&e))?;
            tp.attach(category, name)
                .map_err(|e| attach_failed(format!("tracepoint {category}/{name}"), &e))?;
            Ok(tp.info().ok().and_then(|i| i.verified_instruction_count()))
        }
        Hook::Kprobe(function) => {
            let kp: &mut KProbe = program.try_into().map_err(|e| not_a("kprobe", e))?;
            kp.load().map_err(|e| rejected(&e))?;
            kp.attach(function, 0)
                .map_err(|e| attach_failed(format!("kprobe {function}"), &e))?;
            Ok(kp.info().ok().and_then(|i| i.verified_instruction_count()))
        }
    }
}

/// What to do when the kernel refused for want of privilege.
fn permission_hint<'a>(e: &'a (dyn std::error::Error + 'static)) -> &'static str {
    let mut src: Option<&'a (dyn std::error::Error + 'static)> = Some(e);
    while let Some(cause) = src {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if matches!(io.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) {
                return " (loading eBPF needs root: CAP_BPF, CAP_PERFMON and access to tracefs)";
            }
        }
        src = cause.source();
    }
    ""
}
