//! `cargo xtask vmtest`: the eBPF path on the fleet's kernels.
//!
//! Boots Debian's packaged cloud kernels under qemu — bullseye's 5.10 (the Amazon
//! Linux 2 family), bookworm's 6.1 (Amazon Linux 2023) and trixie's 6.12 — all at
//! once, KVM when /dev/kvm works, plain emulation otherwise. Each VM gets an initramfs
//! holding busybox, the built binaries (pcheck, padmin, psweb-demo-httpd, both eBPF
//! objects, the e2e_ebpf and e2e_clock test binaries), the glibc libraries they need
//! (ldd) and that kernel's inet_diag/tcp_diag modules (`.ko`, or `.ko.xz` unpacked
//! here). Its /init runs `vmtest_scenarios.sh` once per eBPF transport (ring buffer,
//! perf array), once with the kernel's BTF hidden, and (on 6.1) the wall-clock jump
//! test, which must not run on a shared host. Every result is a line
//! `VMTEST|<kernel>|<scenario>|<PASS|FAIL|N/A|INFO>|<hook>|<time>|<detail>`. The same
//! script then runs on this host (both transports; nothing that changes the host).
//! Prints the results, writes them to docs/kernels.md, and returns them as [`Row`]s.
//!
//! The kernels are downloaded once with `apt-get download` through a private apt
//! configuration under target/vmtest/apt/ (the machine's apt sources are not touched)
//! and only their vmlinuz and two modules are kept; nothing is installed on the host.
//!
//! Options: `--no-host` skips the host run; `--timeout SECS` bounds each VM (default
//! 420: three emulated VMs on a loaded 2-core machine took up to 265 s); `--kernel SERIES` (repeatable: 5.10, 6.1, 6.12) boots only those.

use crate::util::{root, sh};
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The scenarios (busybox sh), run in each VM and on the host.
const SCENARIOS: &str = include_str!("vmtest_scenarios.sh");

/// Ports the demo servers listen on inside the VMs, and on the host run; each run of
/// the scenarios uses its port and the next one.
const VM_PORT: u16 = 8080;
const HOST_PORT: u16 = 47311;

/// The transports every scenario runs with (pcheck's --bpf-transport).
const TRANSPORTS: &[&str] = &["ring-buffer", "perf-array"];

/// A Debian kernel to boot: its suite, and the package names of its series.
struct KernelSpec {
    /// "5.10", "6.1", "6.12": the series, and the name of its cache directory.
    series: &'static str,
    suite: &'static str,
    /// `apt-cache search --names-only` pattern of the image packages.
    pattern: &'static str,
    /// The package name up to the number that orders its versions.
    prefix: &'static str,
    /// Whether this VM also runs the wall-clock jump test (one kernel is enough).
    clock_test: bool,
}

const KERNELS: &[KernelSpec] = &[
    KernelSpec {
        series: "5.10",
        suite: "bullseye",
        pattern: r"^linux-image-5\.10\.0-[0-9]+-cloud-amd64$",
        prefix: "linux-image-5.10.0-",
        clock_test: false,
    },
    KernelSpec {
        series: "6.1",
        suite: "bookworm",
        pattern: r"^linux-image-6\.1\.0-[0-9]+-cloud-amd64$",
        prefix: "linux-image-6.1.0-",
        clock_test: true,
    },
    KernelSpec {
        series: "6.12",
        suite: "trixie",
        pattern: r"^linux-image-6\.12\.[0-9]+\+deb[0-9]+-cloud-amd64$",
        prefix: "linux-image-6.12.",
        clock_test: false,
    },
];

/// The Debian mirror the kernels come from ($PSWEB_VMTEST_MIRROR overrides it).
const MIRROR: &str = "http://deb.debian.org/debian";

/// One result: a scenario on a kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    /// Kernel release (`uname -r`), with " (host)" for the build host's own.
    pub kernel: String,
    /// Scenario, with its transport in brackets: "exit [perf-array]".
    pub scenario: String,
    pub result: Outcome,
    /// Why (N/A, FAIL) or what was seen (PASS).
    pub detail: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Pass,
    /// The scenario cannot apply to this kernel (the detail says why).
    NotApplicable,
    Fail,
    /// Not run at all (no root).
    Skipped,
}

impl Outcome {
    fn parse(s: &str) -> Option<Self> {
        match s {
            "PASS" => Some(Outcome::Pass),
            "N/A" => Some(Outcome::NotApplicable),
            "FAIL" => Some(Outcome::Fail),
            _ => None,
        }
    }
}

/// `cargo xtask vmtest`: Err if any scenario failed.
pub fn run(args: &[String]) -> Result<(), String> {
    let rows = results(args)?;
    let failed = rows.iter().filter(|r| r.result == Outcome::Fail).count();
    if failed == 0 {
        Ok(())
    } else {
        Err(format!(
            "vmtest: {failed} scenario(s) failed (see the table)"
        ))
    }
}

/// Runs every scenario on every kernel and returns one row per result (INFO lines
/// left out). Err only when the VMs could not be prepared at all.
pub fn results(args: &[String]) -> Result<Vec<Row>, String> {
    let mut host = true;
    let mut timeout = Duration::from_secs(420);
    let mut only: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--no-host" => host = false,
            "--timeout" => {
                let v = it.next().ok_or("--timeout needs seconds")?;
                timeout = Duration::from_secs(v.parse().map_err(|e| format!("--timeout: {e}"))?);
            }
            "--kernel" => only.push(it.next().ok_or("--kernel needs a series")?.clone()),
            other => {
                return Err(format!(
                "vmtest: unknown argument {other:?} (--no-host, --timeout SECS, --kernel SERIES)"
            ))
            }
        }
    }
    let started = Instant::now();
    if !is_root() {
        println!("SKIPPED vmtest: needs root (apt-get, loading eBPF on the host)");
        return Ok(vec![Row {
            kernel: "-".into(),
            scenario: "vmtest".into(),
            result: Outcome::Skipped,
            detail: "needs root (apt-get, loading eBPF on the host)".into(),
        }]);
    }
    ensure_tools()?;
    let dir = root().join("target/vmtest");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let specs: Vec<&KernelSpec> = KERNELS
        .iter()
        .filter(|k| only.is_empty() || only.iter().any(|o| o == k.series))
        .collect();
    let mut lines = Vec::new();
    let mut kernels = Vec::new();
    for spec in &specs {
        match ensure_kernel(&dir, spec) {
            Ok((name, vmlinuz)) => kernels.push((*spec, name, vmlinuz)),
            Err(e) => lines.push(format!(
                "VMTEST|{} ({})|boot|FAIL|-|-|{e}|-",
                spec.series, spec.suite
            )),
        }
    }

    // Build what goes into the VMs.
    let obj = crate::ebpf::build(false)?;
    crate::util::ensure_build_packages()?;
    sh(cargo().args(["build", "-p", "psweb", "--bins"]))?;
    let e2e = test_binary("e2e_ebpf");
    if let Err(e) = &e2e {
        eprintln!("xtask: vmtest: no e2e_ebpf test binary ({e}); its scenarios are left out");
    }
    let clock = test_binary("e2e_clock");
    if let Err(e) = &clock {
        lines.push(format!("VMTEST|-|e2e_clock|FAIL|-|-|not built: {e}|-"));
    }
    let t_build = started.elapsed();

    let stage = dir.join("rootfs");
    build_stage(&stage, &obj, e2e.as_ref().ok(), clock.as_ref().ok())?;
    let mut boots = Vec::new();
    for (spec, name, vmlinuz) in &kernels {
        let initrd = dir.join(format!("initramfs-{}.cpio", spec.series));
        set_modules(&stage, &vmlinuz.with_file_name("modules"))?;
        write_init(&stage, spec.clock_test && clock.is_ok())?;
        write_cpio(&stage, &initrd)?;
        boots.push((name.clone(), vmlinuz.clone(), initrd));
    }
    let t_initrd = started.elapsed();

    // The VMs run at once: most of their time is spent waiting (for restarts, verdicts,
    // probe intervals), which overlaps.
    let vm_started = Instant::now();
    let handles: Vec<_> = boots
        .into_iter()
        .map(|(name, vmlinuz, initrd)| {
            let serial = dir.join(format!("serial-{name}.log"));
            std::thread::spawn(move || {
                let started = Instant::now();
                let res = boot(&vmlinuz, &initrd, &serial, timeout);
                (name, serial, started.elapsed(), res)
            })
        })
        .collect();
    for h in handles {
        let Ok((name, serial, took, res)) = h.join() else {
            lines.push("VMTEST|-|boot|FAIL|-|-|a VM thread panicked|-".into());
            continue;
        };
        match res {
            Ok((accel, out, note)) => {
                if let Some(note) = note {
                    lines.push(format!("VMTEST|{name}|boot|INFO|-|-|{note}|{accel}"));
                }
                eprintln!(
                    "xtask: vmtest: {name} under qemu ({accel}) ran in {:.1} s; serial log {}",
                    took.as_secs_f64(),
                    serial.display()
                );
                lines.extend(out.lines().filter_map(|l| {
                    let l = l.trim_end_matches('\r');
                    l.find("VMTEST|").map(|i| format!("{}|{accel}", &l[i..]))
                }));
                if !out.contains("VMTEST-END") {
                    let why = if took >= timeout {
                        format!("the VM did not finish in {} s", timeout.as_secs())
                    } else if let Some(p) = out.lines().find(|l| l.contains("Kernel panic")) {
                        p.trim().to_string()
                    } else {
                        "the VM stopped before the end of its scenarios".to_string()
                    };
                    lines.push(format!(
                        "VMTEST|{name}|boot|FAIL|-|-|{why} (see {})|{accel}",
                        serial.display()
                    ));
                }
            }
            Err(e) => lines.push(format!("VMTEST|{name}|boot|FAIL|-|-|{e}|-")),
        }
    }
    let t_vm = vm_started.elapsed();

    let mut t_host = Duration::ZERO;
    if host {
        let h = Instant::now();
        let kernel = format!("{} (host)", uname_r());
        for (i, t) in TRANSPORTS.iter().enumerate() {
            let out = Command::new("busybox")
                .arg("sh")
                .arg(stage.join("psweb/scenarios.sh"))
                .arg(&kernel)
                .arg(stage.join("psweb"))
                .arg(dir.join(format!("host-work-{t}")))
                .arg((HOST_PORT + 10 * i as u16).to_string())
                .arg(t)
                .arg("host")
                .stderr(Stdio::inherit())
                .output()
                .map_err(|e| format!("cannot run the scenarios on the host: {e}"))?;
            let text = String::from_utf8_lossy(&out.stdout);
            lines.extend(
                text.lines()
                    .filter(|l| l.starts_with("VMTEST|"))
                    .map(|l| format!("{l}|host")),
            );
        }
        t_host = h.elapsed();
    }

    crate::suite::record_vmtest_rows(&lines);
    let table = render(&lines);
    println!("{table}");
    let timings = format!(
        "build {:.0} s, initramfs {:.0} s, VMs {:.0} s (at once), host {:.0} s, total {:.0} s",
        t_build.as_secs_f64(),
        (t_initrd - t_build).as_secs_f64(),
        t_vm.as_secs_f64(),
        t_host.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
    println!("xtask: vmtest: {timings}");
    let note = match kvm_choice() {
        Ok(()) => "The VMs run under KVM.".to_string(),
        Err(why) => format!(
            "On the machine that wrote this file {why}, so the VMs ran under qemu's TCG \
             emulation, three at once on two cores shared with other work: their \
             load/attach and latency times are emulation times (roughly 20x native or \
             more), not the kernels'."
        ),
    };
    write_doc(&table, &note, &timings)?;
    Ok(rows_of(&lines))
}

/// The PASS / N/A / FAIL lines as rows.
fn rows_of(lines: &[String]) -> Vec<Row> {
    lines
        .iter()
        .filter_map(|l| {
            let f: Vec<&str> = l.split('|').collect();
            let result = Outcome::parse(f.get(3)?.trim())?;
            Some(Row {
                kernel: f.get(1)?.trim().to_string(),
                scenario: f.get(2)?.trim().to_string(),
                result,
                detail: f.get(6).map_or_else(String::new, |d| d.trim().to_string()),
            })
        })
        .collect()
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn uname_r() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "host".into())
}

/// qemu, busybox (static), cpio, xz: installed with apt-get when missing.
fn ensure_tools() -> Result<(), String> {
    let mut missing = Vec::new();
    if which("qemu-system-x86_64").is_none() {
        missing.push("qemu-system-x86");
    }
    if !Path::new("/bin/busybox").is_file() || !is_static(Path::new("/bin/busybox")) {
        missing.push("busybox-static");
    }
    if which("cpio").is_none() {
        missing.push("cpio");
    }
    if which("xz").is_none() {
        missing.push("xz-utils");
    }
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("xtask: vmtest: installing {missing:?} with apt-get");
    sh(Command::new("apt-get").args(["-o", "DPkg::Lock::Timeout=600", "update", "-qq"]))?;
    sh(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["-o", "DPkg::Lock::Timeout=600"])
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(&missing))
}

fn is_static(bin: &Path) -> bool {
    Command::new("ldd")
        .arg(bin)
        .output()
        .map(|o| {
            !o.status.success() || String::from_utf8_lossy(&o.stdout).contains("not a dynamic")
        })
        .unwrap_or(false)
}

/// apt-get / apt-cache with a private configuration under `dir`: its own sources list
/// (the three suites), package lists and cache, so the machine's apt sources and lists
/// stay as they are.
fn private_apt(dir: &Path, program: &str) -> Result<Command, String> {
    let adir = dir.join("apt");
    for d in ["lists/partial", "cache/archives/partial", "sources.list.d"] {
        std::fs::create_dir_all(adir.join(d)).map_err(|e| format!("{}: {e}", adir.display()))?;
    }
    let mirror = std::env::var("PSWEB_VMTEST_MIRROR").unwrap_or_else(|_| MIRROR.to_string());
    let list: String = KERNELS
        .iter()
        .map(|k| format!("deb {mirror} {} main\n", k.suite))
        .collect();
    let sources = adir.join("sources.list");
    std::fs::write(&sources, list).map_err(|e| format!("{}: {e}", sources.display()))?;
    let mut cmd = Command::new(program);
    let opt = |k: &str, v: &Path| format!("{k}={}", v.display());
    cmd.arg("-o")
        .arg(opt("Dir::Etc::SourceList", &sources))
        .arg("-o")
        .arg(opt("Dir::Etc::SourceParts", &adir.join("sources.list.d")))
        .arg("-o")
        .arg(opt("Dir::State::Lists", &adir.join("lists")))
        .arg("-o")
        .arg(opt("Dir::Cache", &adir.join("cache")))
        .args(["-o", "Debug::NoLocking=1", "-o", "APT::Sandbox::User=root"]);
    Ok(cmd)
}

/// The newest image package of `spec`'s series in its suite (private apt lists),
/// updating the lists once if none is known.
fn newest_image(dir: &Path, spec: &KernelSpec) -> Result<String, String> {
    let search = || -> Result<Vec<String>, String> {
        let out = private_apt(dir, "apt-cache")?
            .args(["search", "--names-only", spec.pattern])
            .output()
            .map_err(|e| format!("apt-cache: {e}"))?;
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect();
        names.sort_by_key(|n| {
            n.strip_prefix(spec.prefix)
                .map(|r| {
                    r.chars()
                        .take_while(char::is_ascii_digit)
                        .collect::<String>()
                })
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
        });
        Ok(names)
    };
    let mut names = search()?;
    if names.is_empty() {
        eprintln!("xtask: vmtest: reading the package lists of bullseye, bookworm and trixie (private apt lists under target/vmtest/apt)");
        sh(private_apt(dir, "apt-get")?.args(["update", "-qq"]))?;
        names = search()?;
    }
    names.pop().ok_or_else(|| {
        format!(
            "{} has no package matching {} (mirror {})",
            spec.suite, spec.pattern, MIRROR
        )
    })
}

/// The newest image of `spec`'s series: its vmlinuz and modules, cached in
/// target/vmtest/kernel-<series>/. Returns (kernel release, vmlinuz path).
fn ensure_kernel(dir: &Path, spec: &KernelSpec) -> Result<(String, PathBuf), String> {
    let kdir = dir.join(format!("kernel-{}", spec.series));
    std::fs::create_dir_all(&kdir).map_err(|e| e.to_string())?;
    if let Some(found) = cached_vmlinuz(&kdir) {
        return Ok(found);
    }
    let pkg = newest_image(dir, spec)?;
    eprintln!("xtask: vmtest: downloading {pkg} from {} (vmlinuz and two modules kept; not installed on this host)", spec.suite);
    let st = private_apt(dir, "apt-get")?
        .arg("download")
        .arg(&pkg)
        .current_dir(&kdir)
        .status()
        .map_err(|e| format!("apt-get download: {e}"))?;
    if !st.success() {
        return Err(format!("apt-get download {pkg} failed ({st})"));
    }
    let deb = std::fs::read_dir(&kdir)
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .ok_or("apt-get download left no .deb")?;
    let x = kdir.join("x");
    let _ = std::fs::remove_dir_all(&x);
    sh(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&x))?;
    for e in std::fs::read_dir(x.join("boot"))
        .map_err(|e| e.to_string())?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with("vmlinuz-") || name.starts_with("config-") {
            std::fs::copy(e.path(), kdir.join(&name)).map_err(|e| e.to_string())?;
        }
    }
    // sock_diag (pcheck's fallback accept-queue evidence) needs inet_diag + tcp_diag,
    // modules in Debian's kernels (xz-compressed from trixie on): kept uncompressed for
    // the initramfs to insmod.
    let mdir = kdir.join("modules");
    std::fs::create_dir_all(&mdir).map_err(|e| e.to_string())?;
    for m in MODULES {
        let dest = mdir.join(format!("{m}.ko"));
        if let Some(found) = find_file(&x, &format!("{m}.ko")) {
            std::fs::copy(&found, &dest).map_err(|e| e.to_string())?;
        } else if let Some(found) = find_file(&x, &format!("{m}.ko.xz")) {
            unxz(&found, &dest)?;
        } else {
            return Err(format!("{pkg} holds no {m}.ko or {m}.ko.xz"));
        }
    }
    let _ = std::fs::remove_dir_all(&x);
    let _ = std::fs::remove_file(&deb);
    cached_vmlinuz(&kdir).ok_or_else(|| format!("{pkg} holds no /boot/vmlinuz-*"))
}

/// `xz -dc from > to`.
fn unxz(from: &Path, to: &Path) -> Result<(), String> {
    let out = std::fs::File::create(to).map_err(|e| format!("{}: {e}", to.display()))?;
    let st = Command::new("xz")
        .arg("-dc")
        .arg(from)
        .stdout(out)
        .status()
        .map_err(|e| format!("xz: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("xz -dc {} failed ({st})", from.display()))
    }
}

/// Kernel modules the initramfs loads, in order.
const MODULES: &[&str] = &["inet_diag", "tcp_diag"];

fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let p = e.path();
        let ft = e.file_type().ok()?;
        if ft.is_dir() {
            if let Some(f) = find_file(&p, name) {
                return Some(f);
            }
        } else if e.file_name().to_str() == Some(name) {
            return Some(p);
        }
    }
    None
}

fn cached_vmlinuz(kdir: &Path) -> Option<(String, PathBuf)> {
    if !MODULES
        .iter()
        .all(|m| kdir.join("modules").join(format!("{m}.ko")).is_file())
    {
        return None;
    }
    std::fs::read_dir(kdir).ok()?.flatten().find_map(|e| {
        let name = e.file_name().to_string_lossy().into_owned();
        name.strip_prefix("vmlinuz-")
            .map(|r| (r.to_string(), e.path()))
    })
}

/// A test binary of psweb (built with `cargo test --no-run`).
fn test_binary(name: &str) -> Result<PathBuf, String> {
    let out = cargo()
        .current_dir(root())
        .args(["test", "-p", "psweb", "--test", name, "--no-run"])
        .arg("--message-format=json")
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout);
    let tag = format!("\"name\":\"{name}\"");
    text.lines()
        .filter(|l| l.contains(&tag) && l.contains("\"executable\":\""))
        .find_map(|l| {
            let rest = &l[l.find("\"executable\":\"")? + 14..];
            Some(PathBuf::from(&rest[..rest.find('"')?]))
        })
        .ok_or_else(|| format!("cargo test --no-run named no {name} executable"))
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(d) = to.parent() {
        std::fs::create_dir_all(d).map_err(|e| format!("{}: {e}", d.display()))?;
    }
    std::fs::copy(from, to)
        .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))?;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(mode)).map_err(|e| e.to_string())
}

/// The shared libraries `bin` loads (ldd), the dynamic loader included.
fn libs_of(bin: &Path, into: &mut BTreeSet<PathBuf>) {
    let Ok(out) = Command::new("ldd").arg(bin).output() else {
        return;
    };
    for l in String::from_utf8_lossy(&out.stdout).lines() {
        let path = match l.split_once("=>") {
            Some((_, r)) => r.split_whitespace().next(),
            None => l.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            into.insert(PathBuf::from(p));
        }
    }
}

/// The initramfs tree every VM shares (modules and /init are set per kernel).
fn build_stage(
    stage: &Path,
    obj: &Path,
    e2e: Option<&PathBuf>,
    clock: Option<&PathBuf>,
) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::remove_dir_all(stage);
    let bin = root().join("target/debug");
    let p = stage.join("psweb");
    let mut libs = BTreeSet::new();
    let mut bins: Vec<(PathBuf, &str)> = ["pcheck", "padmin", "psweb-demo-httpd"]
        .iter()
        .map(|b| (bin.join(b), *b))
        .collect();
    if let Some(e) = e2e {
        bins.push((e.clone(), "e2e_ebpf"));
    }
    if let Some(c) = clock {
        bins.push((c.clone(), "e2e_clock"));
    }
    for (from, name) in &bins {
        // Without debug info: the debug test binary shrinks from ~70 MB to a few MB.
        let dest = p.join(name);
        std::fs::create_dir_all(&p).map_err(|e| e.to_string())?;
        let stripped = Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(&dest)
            .arg(from)
            .status()
            .is_ok_and(|s| s.success());
        if !stripped {
            copy(from, &dest, 0o755)?;
        }
        libs_of(from, &mut libs);
    }
    copy(obj, &p.join(crate::ebpf::OBJECT_NAME), 0o644)?;
    copy(
        &obj.with_file_name(crate::ebpf::PERF_OBJECT_NAME),
        &p.join(crate::ebpf::PERF_OBJECT_NAME),
        0o644,
    )?;
    if clock.is_some() {
        // The test binaries name pcheck, padmin and the demo server by their build
        // paths (CARGO_BIN_EXE_*): the same paths, inside the VM.
        for b in [
            "pcheck",
            "padmin",
            "psweb-demo-httpd",
            crate::ebpf::OBJECT_NAME,
        ] {
            let at = stage.join(bin.join(b).strip_prefix("/").unwrap_or(&bin.join(b)));
            if let Some(d) = at.parent() {
                std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
            }
            std::os::unix::fs::symlink(Path::new("/psweb").join(b), &at)
                .map_err(|e| format!("{}: {e}", at.display()))?;
        }
    }
    copy(Path::new("/bin/busybox"), &stage.join("bin/busybox"), 0o755)?;
    for lib in &libs {
        // Keep the path the binaries were linked against (symlinks resolved by copy).
        copy(
            lib,
            &stage.join(lib.strip_prefix("/").unwrap_or(lib)),
            0o755,
        )?;
    }
    // Debian's merged /usr: /lib64 and /lib are symlinks; the copies above use ldd's paths.
    for d in ["proc", "sys", "dev", "tmp", "run", "sbin", "etc"] {
        std::fs::create_dir_all(stage.join(d)).map_err(|e| e.to_string())?;
    }
    std::fs::set_permissions(stage, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    std::fs::write(stage.join("etc/passwd"), "root:x:0:0:root:/:/bin/sh\n")
        .map_err(|e| e.to_string())?;
    std::fs::write(stage.join("etc/group"), "root:x:0:\n").map_err(|e| e.to_string())?;
    // The probes resolve "localhost".
    std::fs::write(
        stage.join("etc/hosts"),
        "127.0.0.1 localhost\n::1 localhost\n",
    )
    .map_err(|e| e.to_string())?;
    let sc = p.join("scenarios.sh");
    std::fs::write(&sc, SCENARIOS).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&sc, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())
}

/// Puts `modules`' .ko files in the stage's /modules.
fn set_modules(stage: &Path, modules: &Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(stage.join("modules"));
    for m in MODULES {
        copy(
            &modules.join(format!("{m}.ko")),
            &stage.join(format!("modules/{m}.ko")),
            0o644,
        )?;
    }
    Ok(())
}

/// The VM's /init: mounts, modules, then every scenario run, then power off.
fn write_init(stage: &Path, clock_test: bool) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let mut runs = String::new();
    if clock_test {
        // Beside the other runs: it mostly waits for probe intervals, and it moves
        // only the wall clock, which no other scenario's verdict reads.
        runs.push_str("( \n");
        runs.push_str(CLOCK_RUN);
        runs.push_str(
            ") &
CLOCK=$!
",
        );
    }
    for (i, t) in TRANSPORTS.iter().chain(["no-btf"].iter()).enumerate() {
        runs.push_str(&format!(
            "sh /psweb/scenarios.sh \"$K\" /psweb /vmwork-{t} {} {t} \"$WHERE\"\n",
            VM_PORT + 10 * i as u16
        ));
    }
    if clock_test {
        runs.push_str("wait \"$CLOCK\"\n");
    }
    let init = stage.join("init");
    std::fs::write(&init, INIT.replace("@RUNS@", &runs)).map_err(|e| e.to_string())?;
    std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())
}

const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mkdir -p /proc /sys /dev /tmp /run
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mount -t bpf bpf /sys/fs/bpf
ip link set lo up
for m in /modules/inet_diag.ko /modules/tcp_diag.ko; do insmod "$m" || echo "VMTEST-WARN insmod $m failed"; done
K="$(uname -r)"
# Set on the kernel command line by xtask (unknown parameters reach init's environment).
WHERE="${PSWEB_WHERE:-vm-tcg}"
echo "VMTEST-BOOTED $K"
echo "VMTEST|$K|start|INFO|-|-|$K $(uname -m)"
@RUNS@
echo "VMTEST|$K|done|INFO|-|-|-"
echo VMTEST-END
sync
poweroff -f
"#;

/// The wall-clock jump test: it moves CLOCK_REALTIME a day, which only a VM may do.
/// Its pcheck watches through pidfd (no eBPF object given): loading eBPF under
/// emulation takes seconds, and the death evidence plays no part in what it checks.
const CLOCK_RUN: &str = r#"PSWEB_BPF_OBJECT=/nonexistent /psweb/e2e_clock --test-threads=1 --show-output > /tmp/clock.log 2>&1
grep -E '^test [a-z0-9_:]+ \.\.\. ' /tmp/clock.log | while read -r _t name _d res _rest; do
    if grep -q "SKIPPED" /tmp/clock.log; then
        echo "VMTEST|$K|e2e_clock::$name [wall clock]|FAIL|-|-|$(grep -m1 SKIPPED /tmp/clock.log)"
    elif [ "$res" = ok ]; then
        echo "VMTEST|$K|e2e_clock::$name [wall clock]|PASS|-|-|a day forward and back: no verdict, failures counted on the monotonic clock"
    else
        echo "VMTEST|$K|e2e_clock::$name [wall clock]|FAIL|-|-|$(grep -m1 -A1 'panicked at' /tmp/clock.log | tail -n 1 | tr '|' '/')"
    fi
done
grep -q '^test ' /tmp/clock.log || echo "VMTEST|$K|e2e_clock [wall clock]|FAIL|-|-|did not run: $(tail -n 2 /tmp/clock.log | tr '|\n' '/ ')"
grep -q '^test .* ok$' /tmp/clock.log || tail -n 60 /tmp/clock.log | sed 's/^/  clock| /'
"#;

/// The stage as an uncompressed newc cpio (the kernel unpacks it directly).
fn write_cpio(stage: &Path, out: &Path) -> Result<(), String> {
    let f = std::fs::File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let mut find = Command::new("find")
        .arg(".")
        .current_dir(stage)
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("find: {e}"))?;
    let st = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet", "-R", "0:0"])
        .current_dir(stage)
        .stdin(find.stdout.take().ok_or("find: no stdout")?)
        .stdout(f)
        .status()
        .map_err(|e| format!("cpio: {e}"))?;
    let _ = find.wait();
    if !st.success() {
        return Err(format!("cpio failed ({st})"));
    }
    let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "xtask: vmtest: initramfs {} ({} MB)",
        out.display(),
        size >> 20
    );
    Ok(())
}

/// Whether to use KVM, and if not, why.
fn kvm_choice() -> Result<(), String> {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Err("/dev/kvm cannot be opened".into());
    }
    if Path::new("/sys/module/kvm_pvm").exists() {
        // PVM (pagetable-based virtual machine): only PVM-enabled guest kernels boot;
        // a stock kernel hangs before its first console line.
        return Err("/dev/kvm is kvm-pvm, which boots only PVM guest kernels".into());
    }
    Ok(())
}

/// Boots `vmlinuz` with `initrd`, copying the serial console to `serial`. Returns
/// (accelerator, console output, a note when the boot was repeated). Under KVM, a
/// kernel that prints nothing within 30 s is retried under TCG. A kernel that panics
/// before the VM's init ran anything (no `VMTEST|` line: emulation, not psweb) is booted
/// once more, and the note says so; a scenario is never repeated. Kills qemu after
/// `timeout`.
fn boot(
    vmlinuz: &Path,
    initrd: &Path,
    serial: &Path,
    timeout: Duration,
) -> Result<(String, String, Option<String>), String> {
    let kvm = match kvm_choice() {
        Ok(()) => true,
        Err(why) => {
            eprintln!("xtask: vmtest: {why}; plain emulation (TCG), slower");
            false
        }
    };
    let (accel, out) = boot_with_fallback(vmlinuz, initrd, serial, timeout, kvm)?;
    let Some(panic) = panic_before_userspace(&out) else {
        return Ok((accel, out, None));
    };
    eprintln!(
        "xtask: vmtest: {} panicked before userspace ({panic}); booting it once more",
        vmlinuz.display()
    );
    let first = serial.with_extension("first-boot.log");
    let _ = std::fs::rename(serial, &first);
    let (accel, out) = boot_with_fallback(vmlinuz, initrd, serial, timeout, kvm)?;
    let note = format!(
        "the first boot panicked before userspace ({panic}; see {}); booted again",
        first.display()
    );
    Ok((accel, out, Some(note)))
}

/// The kernel's panic line, when the kernel panicked before the VM's init printed
/// its first `VMTEST|` line.
fn panic_before_userspace(out: &str) -> Option<String> {
    if out.contains("VMTEST|") {
        return None;
    }
    out.lines()
        .find(|l| l.contains("Kernel panic"))
        .map(|l| l.trim().replace('|', "/"))
}

fn boot_with_fallback(
    vmlinuz: &Path,
    initrd: &Path,
    serial: &Path,
    timeout: Duration,
    kvm: bool,
) -> Result<(String, String), String> {
    if kvm {
        match boot_once(vmlinuz, initrd, serial, timeout, true)? {
            Some(out) => return Ok(("kvm".into(), out)),
            None => eprintln!(
                "xtask: vmtest: the kernel printed nothing in 30 s under KVM; retrying with plain emulation (TCG)"
            ),
        }
    }
    let out = boot_once(vmlinuz, initrd, serial, timeout, false)?
        .ok_or("the kernel printed nothing under TCG either")?;
    Ok(("tcg".into(), out))
}

/// One boot. None if the kernel printed nothing within 30 s (KVM only).
fn boot_once(
    vmlinuz: &Path,
    initrd: &Path,
    serial: &Path,
    timeout: Duration,
    kvm: bool,
) -> Result<Option<String>, String> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let mut cmd = Command::new("qemu-system-x86_64");
    if kvm {
        cmd.args(["-enable-kvm", "-cpu", "host"]);
    } else {
        // thread=single: with one host thread per vCPU (multi), a vCPU can run code
        // another vCPU is patching (the kernel's int3-based text_poke of a static key,
        // e.g. when it finds the emulated TSC unstable) and the kernel oopses on the
        // int3 ("Oops: int3" in sched_clock_idle_wakeup_event, seen on 6.12). The VMs
        // already share two host cores, so one thread each costs little.
        cmd.args(["-cpu", "max", "-accel", "tcg,thread=single"]);
    }
    cmd.args([
        "-m",
        "1536",
        "-smp",
        "2",
        "-nographic",
        "-no-reboot",
        "-nodefaults",
        "-serial",
        "stdio",
    ])
    .arg("-kernel")
    .arg(vmlinuz)
    .arg("-initrd")
    .arg(initrd)
    .arg("-append")
    .arg(format!(
        // no_timer_check: emulation on a busy host can be too slow for the kernel's
        // IO-APIC timer check, which then panics ("IO-APIC + timer doesn't work").
        "console=ttyS0 panic=-1 rdinit=/init loglevel=4 no_timer_check PSWEB_WHERE=vm-{}",
        if kvm { "kvm" } else { "tcg" }
    ))
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let accel = if kvm { "kvm" } else { "tcg" };
    eprintln!(
        "xtask: vmtest: booting {} under qemu ({accel})",
        vmlinuz.display()
    );
    let mut child = cmd.spawn().map_err(|e| format!("cannot start qemu: {e}"))?;
    let stdout = child.stdout.take().ok_or("qemu: no stdout")?;
    let stderr = child.stderr.take().ok_or("qemu: no stderr")?;
    let log = std::fs::File::create(serial).map_err(|e| format!("{}: {e}", serial.display()))?;
    let alive = Arc::new(AtomicBool::new(false));
    let alive2 = alive.clone();
    let reader = std::thread::spawn(move || {
        let mut log = log;
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = writeln!(log, "{line}");
            if line.contains("Linux version") || line.contains("VMTEST") {
                alive2.store(true, Ordering::Relaxed);
            }
            if line.contains("VMTEST") {
                eprintln!("  vm: {}", line.trim_end_matches('\r'));
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut BufReader::new(stderr), &mut s);
        s
    });
    let started = Instant::now();
    let mut outcome = "";
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) => {
                if kvm
                    && !alive.load(Ordering::Relaxed)
                    && started.elapsed() > Duration::from_secs(30)
                {
                    outcome = "silent";
                } else if started.elapsed() >= timeout {
                    outcome = "timeout";
                }
                if !outcome.is_empty() {
                    let _ = child.kill();
                    let _ = child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(format!("waiting for qemu: {e}")),
        }
    }
    let out = reader.join().unwrap_or_default();
    let err = err_reader.join().unwrap_or_default();
    match outcome {
        "silent" => return Ok(None),
        "timeout" => eprintln!("xtask: vmtest: qemu killed after {} s", timeout.as_secs()),
        _ => {}
    }
    if out.is_empty() && !err.trim().is_empty() {
        return Err(format!("qemu failed: {}", err.trim()));
    }
    Ok(Some(out))
}

/// The results as Markdown from the VMTEST lines
/// (`VMTEST|kernel|scenario|result|hook|time|detail|where`): a PASS / N/A / FAIL
/// matrix (one column per kernel), the evidence each kernel's hooks serve, then each
/// kernel's results in detail.
fn render(lines: &[String]) -> String {
    let rows: Vec<Vec<String>> = lines
        .iter()
        .map(|l| {
            l.split('|')
                .map(|f| f.trim().to_string())
                .collect::<Vec<_>>()
        })
        .filter(|r| r.len() >= 7)
        .collect();
    let mut kernels: Vec<String> = Vec::new();
    let mut scenarios: Vec<String> = Vec::new();
    for r in &rows {
        if !kernels.contains(&r[1]) {
            kernels.push(r[1].clone());
        }
        if r[3] != "INFO" && !scenarios.contains(&r[2]) {
            scenarios.push(r[2].clone());
        }
    }
    if kernels.is_empty() {
        return "(no results)\n".into();
    }
    let cell = |s: &str| s.replace('|', "/");
    // "1234567 us" (the loader's figure) as "1235 ms".
    let ms = |s: &str| match s.strip_suffix(" us").and_then(|n| n.parse::<u64>().ok()) {
        Some(us) => format!("{} ms", (us + 500) / 1000),
        None => s.replace('|', "/"),
    };
    let short = |s: &str, n: usize| {
        let s = cell(s);
        if s.chars().count() > n {
            format!("{}…", s.chars().take(n).collect::<String>())
        } else {
            s
        }
    };
    let mut s = String::from("### Results\n\n| scenario |");
    for k in &kernels {
        s.push_str(&format!(" {k} |"));
    }
    s.push_str("\n|---|");
    s.push_str(&"---|".repeat(kernels.len()));
    s.push('\n');
    for sc in &scenarios {
        s.push_str(&format!("| {sc} |"));
        for k in &kernels {
            let found = rows.iter().find(|r| &r[1] == k && &r[2] == sc);
            let text = match found {
                None => "–".to_string(),
                Some(r) if r[3] == "PASS" && r[5] != "-" => format!("PASS ({})", ms(&r[5])),
                Some(r) if r[3] == "PASS" => "PASS".to_string(),
                Some(r) if r[3] == "N/A" => format!("N/A: {}", short(&r[6], 90)),
                Some(r) => format!("**{}**: {}", r[3], short(&r[6], 120)),
            };
            s.push_str(&format!(" {text} |"));
        }
        s.push('\n');
    }

    s.push_str(
        "\n### Evidence per kernel\n\n\
         | kernel | transport | evidence | hook | verifier insns | load + attach |\n\
         |---|---|---|---|---|---|\n",
    );
    for k in &kernels {
        for r in rows.iter().filter(|r| &r[1] == k) {
            let transport = r[2]
                .split_once(" [")
                .map_or("", |(_, t)| t.trim_end_matches(']'));
            if r[2].starts_with("load [") && r[3] == "PASS" {
                for h in split_hooks(&r[6]) {
                    let (kind, hook) = h.split_once(": ").unwrap_or((&h, ""));
                    let (hook, insns) = match hook.rsplit_once(" [") {
                        Some((h, n)) if n.ends_with(" insns verified]") => {
                            (h, n.trim_end_matches(" insns verified]").to_string())
                        }
                        _ if hook.starts_with("none") => (hook, "-".to_string()),
                        _ => (hook, "N/A (the kernel reports it from 5.16 on)".to_string()),
                    };
                    s.push_str(&format!(
                        "| {k} | {transport} | {kind} | {} | {insns} | {} |\n",
                        cell(hook),
                        ms(&r[5])
                    ));
                }
            } else if r[2] == "exit [no-btf]" && r[3] == "PASS" {
                s.push_str(&format!(
                    "| {k} | none (no BTF) | process exit | {} | N/A (no eBPF) | - |\n",
                    cell(&r[4])
                ));
            }
        }
    }
    s.push('\n');

    for k in &kernels {
        let mine: Vec<&Vec<String>> = rows.iter().filter(|r| &r[1] == k).collect();
        let how = mine
            .first()
            .and_then(|r| r.get(7))
            .cloned()
            .unwrap_or_default();
        let how = match how.as_str() {
            "host" => "this host, no VM".to_string(),
            "kvm" | "tcg" => format!("qemu, {how}"),
            o => o.to_string(),
        };
        s.push_str(&format!("### Linux {k} ({how}): details\n\n"));
        s.push_str(
            "| scenario | result | hook / evidence | time | detail |\n|---|---|---|---|---|\n",
        );
        for r in &mine {
            if r[2] == "done" || r[2].starts_with("load [") && r[3] == "PASS" {
                continue;
            }
            s.push_str(&format!(
                "| {} | {} | {} | {} | {} |\n",
                r[2],
                r[3],
                if r[4] == "-" { "" } else { &r[4] },
                if r[5] == "-" { "" } else { &r[5] },
                cell(&r[6])
            ));
        }
        s.push('\n');
    }
    s
}

/// "kind: hook; kind: hook" where a hook's text may itself hold "; ".
fn split_hooks(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in s.split("; ") {
        let starts_kind = part.starts_with("process exit:") || part.starts_with("accept-queue ");
        match out.last_mut() {
            Some(last) if !starts_kind => {
                last.push_str("; ");
                last.push_str(part);
            }
            _ => out.push(part.to_string()),
        }
    }
    out
}

fn write_doc(table: &str, note: &str, timings: &str) -> Result<(), String> {
    let path = root().join("docs/kernels.md");
    let text = format!(
        "# Kernels: where the eBPF evidence comes from\n\n\
         Written by `cargo xtask vmtest`; do not edit by hand. The VMs boot Debian's\n\
         packaged cloud kernels — bullseye's `linux-image-5.10.*-cloud-amd64` (the\n\
         Amazon Linux 2 family), bookworm's 6.1 (Amazon Linux 2023) and trixie's 6.12 —\n\
         under qemu with an initramfs holding the built binaries; the same scenario\n\
         script then runs on the build host's own kernel. Every scenario runs twice, once\n\
         per transport of the kernel's events: `[ring-buffer]` (psweb.bpf.o) and\n\
         `[perf-array]` (psweb-perf.bpf.o, the object for kernels without\n\
         BPF_MAP_TYPE_RINGBUF, forced with `--bpf-transport perf-array`).\n\n\
         Scenarios: `load` (pcheck `--evidence ebpf` loads and attaches the programs; the\n\
         hooks are the loader's LoadReport), `show kernel` (padmin names the transport\n\
         and BTF), `exit` (the watched demo server killed with SIGKILL: pcheck's\n\
         `Process Down` line must say `evidence: ebpf`), `restart`, `overflow` (the demo\n\
         server, listening with backlog 1, stopped with SIGSTOP and sent six connects:\n\
         pcheck must log `Accept Queue Overflow`/`Full` and name the evidence), `stall\n\
         verdict` (a stopped server under connects, stall block with `evidence = kernel`\n\
         and a 600 s retry-over time: `Find Web Server Stall` must come from the kernel's\n\
         evidence), then each test of the `e2e_ebpf` binary. `[no-btf]` (VMs only): the\n\
         kernel's /sys/kernel/btf hidden under an empty tmpfs; pcheck (`evidence auto`)\n\
         must log one line saying why eBPF is unavailable and still see the death and\n\
         restart through pidfd. `[wall clock]` (one VM): the wall-clock jump test\n\
         (tests/e2e_clock.rs), which moves CLOCK_REALTIME a day and so never runs on a\n\
         shared host. Times are measured by polling the log every 100 ms, so they are\n\
         upper bounds. Verifier instruction counts are the kernel's\n\
         (bpf_prog_info.verified_insns, reported from 5.16 on). N/A: the scenario cannot\n\
         apply to that kernel (the cell says why). {note}\n\n\
         Last run: {timings}.\n\n{table}"
    );
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    eprintln!("xtask: vmtest: wrote {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_panic_before_the_first_scenario_line_is_booted_again() {
        let early = "Booting from ROM...\n[    2.6] Oops: int3\n[    2.6] Kernel panic - not syncing: Fatal exception in interrupt\n";
        assert_eq!(
            panic_before_userspace(early).as_deref(),
            Some("[    2.6] Kernel panic - not syncing: Fatal exception in interrupt")
        );
        let late = "VMTEST|6.12|start|INFO|-|-|x|\n[   30.1] Kernel panic - not syncing: oops\n";
        assert_eq!(
            panic_before_userspace(late),
            None,
            "a scenario is never repeated"
        );
        assert_eq!(panic_before_userspace("Booting from ROM...\n"), None);
    }

    const LINES: &[&str] = &[
        "VMTEST|5.10.0-32-cloud-amd64|start|INFO|-|-|5.10.0-32-cloud-amd64 x86_64|tcg",
        "VMTEST|5.10.0-32-cloud-amd64|load [perf-array]|PASS|-|4074932 us|process exit: tracepoint sched/sched_process_exit (signal->live == 0); accept-queue overflow (SYN): kprobe tcp_conn_request on a listener|tcg",
        "VMTEST|5.10.0-32-cloud-amd64|e2e_ebpf::final_ack [perf-array]|N/A|-|-|no final-ACK hook on this kernel|tcg",
        "VMTEST|6.12.117+deb13-cloud-amd64|load [ring-buffer]|PASS|-|9 us|process exit: tracepoint sched/sched_process_exit (group_dead) [2746 insns verified]|tcg",
        "VMTEST|6.12.117+deb13-cloud-amd64|exit [ring-buffer]|FAIL|-|-|no Process Down|tcg",
    ];

    #[test]
    fn rows_are_pass_na_fail_only() {
        let lines: Vec<String> = LINES.iter().map(|s| s.to_string()).collect();
        let rows = rows_of(&lines);
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[0].scenario, "load [perf-array]");
        assert_eq!(rows[1].result, Outcome::NotApplicable);
        assert_eq!(rows[3].kernel, "6.12.117+deb13-cloud-amd64");
        assert_eq!(rows[3].result, Outcome::Fail);
        assert_eq!(rows[3].detail, "no Process Down");
    }

    #[test]
    fn render_has_a_column_per_kernel_and_a_row_per_hook() {
        let lines: Vec<String> = LINES.iter().map(|s| s.to_string()).collect();
        let md = render(&lines);
        assert!(md.contains("| scenario | 5.10.0-32-cloud-amd64 | 6.12.117+deb13-cloud-amd64 |"));
        assert!(
            md.contains("| exit [ring-buffer] | – | **FAIL**: no Process Down |"),
            "{md}"
        );
        assert!(
            md.contains("| N/A: no final-ACK hook on this kernel | – |"),
            "{md}"
        );
        assert!(md.contains("| 5.10.0-32-cloud-amd64 | perf-array | process exit | tracepoint sched/sched_process_exit (signal->live == 0) | N/A (the kernel reports it from 5.16 on) | 4075 ms |"), "{md}");
        assert!(md.contains("| 6.12.117+deb13-cloud-amd64 | ring-buffer | process exit | tracepoint sched/sched_process_exit (group_dead) | 2746 | 0 ms |"), "{md}");
    }
}
