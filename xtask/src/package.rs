//! `cargo xtask package`: the x86_64 RPM, then [`check`] of what it holds.
//!
//! pcheck and padmin are built static for x86_64-unknown-linux-musl, so they run on
//! any x86_64 Linux whatever its glibc (RHEL 8 has 2.28): the check proves it from the
//! ELF headers (no PT_INTERP, no DT_NEEDED) of the binaries inside the RPM. The RPM
//! is made by cargo-generate-rpm from `[package.metadata.generate-rpm]` in
//! psweb-user/Cargo.toml; the check reads it back with the `rpm` tools (Debian's
//! `rpm` package).

use crate::util::{root, sh};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const MUSL: &str = "x86_64-unknown-linux-musl";
const BINS: [&str; 2] = ["pcheck", "padmin"];
/// Where the templates go (the seed's template directory).
const TEMPLATES: &str = "/var/opt/HA/PSWE/conf/src";
/// The newest glibc the binaries may need: RHEL 8's.
const GLIBC_FLOOR: (u32, u32) = (2, 28);
/// The systemd template unit.
const UNIT: &str = "packaging/pcheck@.service";

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Output of a command that must succeed, as text.
fn output(cmd: &mut Command) -> Result<String, String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn runs(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs Debian packages (as root) when `probe` (a program) is missing.
fn ensure_apt(probe: &str, package: &str, why: &str) -> Result<(), String> {
    if runs(Command::new("sh").args(["-c", &format!("command -v {probe}")])) {
        return Ok(());
    }
    if !is_root() {
        return Err(format!(
            "{probe} is missing ({why}); install it: apt-get install {package}"
        ));
    }
    eprintln!("xtask: installing {package} ({why})");
    sh(Command::new("apt-get").args(["update", "-qq"]))?;
    sh(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq", "--no-install-recommends", package]))
}

/// The musl target, its C compiler (ring's C code), and cargo-generate-rpm.
fn ensure_tools() -> Result<(), String> {
    let installed = output(Command::new("rustup").args(["target", "list", "--installed"]))?;
    if !installed.lines().any(|l| l.trim() == MUSL) {
        eprintln!("xtask: adding the Rust target {MUSL} (static binaries)");
        sh(Command::new("rustup").args(["target", "add", MUSL]))?;
    }
    ensure_apt(
        "musl-gcc",
        "musl-tools",
        "the C compiler for ring on the musl target",
    )?;
    if !runs(cargo().args(["generate-rpm", "--version"])) {
        eprintln!(
            "xtask: cargo-generate-rpm is missing: cargo install --locked cargo-generate-rpm"
        );
        sh(cargo().args(["install", "--locked", "cargo-generate-rpm"]))?;
    }
    Ok(())
}

fn rpm_path() -> PathBuf {
    root().join(format!(
        "target/generate-rpm/psweb-{}-1.x86_64.rpm",
        env!("CARGO_PKG_VERSION")
    ))
}

/// `cargo xtask package`: builds the RPM, then checks it.
pub fn package(_args: &[String]) -> Result<(), String> {
    let rpm = build()?;
    check_rpm(&rpm)
}

/// Builds everything the RPM holds, then the RPM.
pub fn build() -> Result<PathBuf, String> {
    let root = root();
    if !root.join(UNIT).is_file() {
        return Err(format!(
            "{UNIT} is missing (the systemd unit); the RPM needs it"
        ));
    }
    ensure_tools()?;
    crate::util::ensure_build_packages()?;
    let t0 = Instant::now();
    crate::ebpf::build(true)?;

    let t_bins = Instant::now();
    let mut cmd = cargo();
    cmd.args(["build", "--release", "--target", MUSL, "-p", "psweb"]);
    for b in BINS {
        cmd.args(["--bin", b]);
    }
    sh(cmd
        .env("CARGO_PROFILE_RELEASE_STRIP", "symbols")
        .env(format!("CC_{}", MUSL.replace('-', "_")), "musl-gcc"))?;
    let bins_took = t_bins.elapsed();

    // Man pages and completions from the clap definitions; pfile.5 is written by hand.
    let doc = root.join("target/package/doc");
    let man = doc.join("man");
    if man.exists() {
        std::fs::remove_dir_all(&man).map_err(|e| format!("{}: {e}", man.display()))?;
    }
    sh(cargo()
        .args([
            "run",
            "-q",
            "-p",
            "psweb",
            "--example",
            "psweb-gendoc",
            "--",
        ])
        .arg(&doc))?;
    std::fs::copy(root.join("pfiles/pfile.5"), man.join("pfile.5"))
        .map_err(|e| format!("pfiles/pfile.5: {e}"))?;
    for page in ["pcheck.8", "padmin.8", "pfile.5"] {
        // -n: no name or time stamp in the archive, so the same page gives the same bytes.
        sh(Command::new("gzip").args(["-9nf"]).arg(man.join(page)))?;
    }

    let rpm = rpm_path();
    sh(cargo()
        .args([
            "generate-rpm",
            "-p",
            "psweb-user",
            "--payload-compress",
            "gzip",
            "-o",
        ])
        .arg(&rpm))?;
    let size = std::fs::metadata(&rpm)
        .map_err(|e| format!("{}: {e}", rpm.display()))?
        .len();
    eprintln!(
        "xtask: built {} ({:.1} MiB) in {:.0} s (static binaries: {:.0} s)",
        rpm.display(),
        size as f64 / 1_048_576.0,
        t0.elapsed().as_secs_f64(),
        bins_took.as_secs_f64()
    );
    Ok(rpm)
}

/// Builds the RPM (incrementally) and checks it: what `cargo xtask test` runs.
pub fn check() -> Result<(), String> {
    let rpm = build()?;
    check_rpm(&rpm)
}

/// Every file the RPM must hold, and nothing else.
fn expected_files(root: &Path) -> Result<BTreeSet<String>, String> {
    let mut v: BTreeSet<String> = [
        "/usr/bin/pcheck",
        "/usr/bin/padmin",
        "/usr/lib/psweb/psweb.bpf.o",
        "/usr/lib/psweb/psweb-perf.bpf.o",
        "/usr/lib/systemd/system/pcheck@.service",
        "/usr/share/man/man8/pcheck.8.gz",
        "/usr/share/man/man8/padmin.8.gz",
        "/usr/share/man/man5/pfile.5.gz",
        "/usr/share/bash-completion/completions/pcheck",
        "/usr/share/bash-completion/completions/padmin",
        "/usr/share/zsh/site-functions/_pcheck",
        "/usr/share/zsh/site-functions/_padmin",
        "/usr/share/psweb/prometheus/psweb.rules.yml",
        "/usr/share/psweb/prometheus/psweb.rules.test.yml",
        "/usr/share/psweb/grafana/psweb.json",
        "/usr/share/psweb/alerts.md",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.insert(format!("{TEMPLATES}/README.md"));
    // Every file of every template folder (all of pfiles/ but demo/).
    let pfiles = root.join("pfiles");
    for e in std::fs::read_dir(&pfiles).map_err(|e| format!("{}: {e}", pfiles.display()))? {
        let e = e.map_err(|e| e.to_string())?;
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.path().is_dir() || name == "demo" {
            continue;
        }
        for f in std::fs::read_dir(e.path()).map_err(|e| e.to_string())? {
            let f = f.map_err(|e| e.to_string())?;
            v.insert(format!(
                "{TEMPLATES}/{name}/{}",
                f.file_name().to_string_lossy()
            ));
        }
    }
    Ok(v)
}

/// Reads the RPM back and asserts its metadata, file list, modes, the static
/// binaries (or their glibc floor), and that the packaged pcheck checks the
/// packaged templates.
pub fn check_rpm(rpm: &Path) -> Result<(), String> {
    ensure_apt("rpm", "rpm", "to read the RPM back")?;
    let root = root();
    let q = |args: &[&str]| output(Command::new("rpm").args(args).arg(rpm));

    let info = q(&["-qip"])?;
    let field = |k: &str| {
        info.lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_once(':'))
            .map(|(_, v)| v.trim().to_string())
            .unwrap_or_default()
    };
    let (name, arch, version) = (field("Name"), field("Architecture"), field("Version"));
    if name != "psweb" || arch != "x86_64" || version != env!("CARGO_PKG_VERSION") {
        return Err(format!(
            "rpm -qip: expected psweb {} x86_64, found {name:?} {version:?} {arch:?}",
            env!("CARGO_PKG_VERSION")
        ));
    }

    let listed: BTreeSet<String> = q(&["-qlp"])?.lines().map(str::to_string).collect();
    let expected = expected_files(&root)?;
    let missing: Vec<_> = expected.difference(&listed).collect();
    let extra: Vec<_> = listed.difference(&expected).collect();
    if !missing.is_empty() || !extra.is_empty() {
        return Err(format!(
            "rpm -qlp: missing {missing:?}, unexpected {extra:?}"
        ));
    }

    // Modes: programs and restart scripts executable, everything else not.
    let modes = q(&[
        "-qp",
        "--queryformat",
        "[%{FILEMODES:perms} %{FILENAMES}\\n]",
    ])?;
    for line in modes.lines() {
        let Some((perms, path)) = line.split_once(' ') else {
            continue;
        };
        let want = if perms.starts_with('d') {
            "drwxr-xr-x"
        } else if path.starts_with("/usr/bin/") || path.ends_with(".rc") {
            "-rwxr-xr-x"
        } else {
            "-rw-r--r--"
        };
        if perms != want {
            return Err(format!("{path}: mode {perms}, expected {want}"));
        }
    }
    // The templates an operator may edit in place survive upgrades.
    let config: BTreeSet<String> = q(&["-qcp"])?.lines().map(str::to_string).collect();
    for f in expected.iter().filter(|f| {
        f.starts_with(TEMPLATES)
            && (f.ends_with(".rc") || f.ends_with(".conf") || f.contains("/pfile_"))
    }) {
        if !config.contains(f) {
            return Err(format!("{f} should be %config(noreplace)"));
        }
    }
    let requires = q(&["-qp", "--requires"])?;
    if requires.contains("libc.so") || requires.contains("GLIBC") {
        return Err(format!("the RPM requires glibc: {requires}"));
    }

    // What is inside: unpack with rpm2archive (part of Debian's rpm).
    let dir = std::env::temp_dir().join(format!("psweb-rpm-check-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = check_contents(rpm, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result?;

    let size = std::fs::metadata(rpm).map(|m| m.len()).unwrap_or(0);
    eprintln!(
        "xtask: package check passed: {} ({:.1} MiB, {} files)",
        rpm.display(),
        size as f64 / 1_048_576.0,
        listed.len()
    );
    Ok(())
}

fn check_contents(rpm: &Path, dir: &Path) -> Result<(), String> {
    let tgz = dir.join("payload.tgz");
    let archive = Command::new("rpm2archive")
        .arg("-")
        .stdin(std::fs::File::open(rpm).map_err(|e| format!("{}: {e}", rpm.display()))?)
        .stdout(std::fs::File::create(&tgz).map_err(|e| format!("{}: {e}", tgz.display()))?)
        .status()
        .map_err(|e| format!("cannot run rpm2archive: {e}"))?;
    if !archive.success() {
        return Err(format!("rpm2archive {} failed ({archive})", rpm.display()));
    }
    let tree = dir.join("root");
    std::fs::create_dir_all(&tree).map_err(|e| e.to_string())?;
    sh(Command::new("tar")
        .arg("-xzf")
        .arg(&tgz)
        .arg("-C")
        .arg(&tree))?;

    for b in BINS {
        let path = tree.join("usr/bin").join(b);
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let elf = Elf::parse(&bytes).map_err(|e| format!("{}: {e}", path.display()))?;
        if elf.machine != 62 {
            return Err(format!(
                "/usr/bin/{b} is not x86_64 (e_machine {})",
                elf.machine
            ));
        }
        let file = output(Command::new("file").arg("-b").arg(&path)).unwrap_or_default();
        if elf.interp || !elf.needed.is_empty() {
            // Dynamic: every GLIBC_ symbol version must be at most RHEL 8's.
            let newest = glibc_newest(&path)?;
            if newest.is_some_and(|v| v > GLIBC_FLOOR) {
                return Err(format!(
                    "/usr/bin/{b} needs GLIBC_{}.{} (> {}.{}): it would not run on RHEL 8",
                    newest.map_or(0, |v| v.0),
                    newest.map_or(0, |v| v.1),
                    GLIBC_FLOOR.0,
                    GLIBC_FLOOR.1
                ));
            }
            eprintln!(
                "xtask: /usr/bin/{b}: dynamic ({:?}), newest glibc symbol {newest:?}: {}",
                elf.needed,
                file.trim()
            );
        } else {
            eprintln!(
                "xtask: /usr/bin/{b}: static (no PT_INTERP, no DT_NEEDED), {} KiB: {}",
                bytes.len() / 1024,
                file.trim()
            );
        }
        let v = output(Command::new(&path).arg("--version"))?;
        if !v.contains(env!("CARGO_PKG_VERSION")) {
            return Err(format!("/usr/bin/{b} --version says {v:?}"));
        }
    }

    // Both transports' objects: ring buffer, and perf event array for older kernels.
    for name in [crate::ebpf::OBJECT_NAME, crate::ebpf::PERF_OBJECT_NAME] {
        let obj = tree.join("usr/lib/psweb").join(name);
        let bytes = std::fs::read(&obj).map_err(|e| format!("{}: {e}", obj.display()))?;
        let elf = Elf::parse(&bytes).map_err(|e| format!("{}: {e}", obj.display()))?;
        if elf.machine != 247 {
            return Err(format!(
                "{name} is not a BPF object (e_machine {})",
                elf.machine
            ));
        }
    }

    // The packaged pcheck accepts every packaged template (their scripts pointed at
    // the unpacked tree).
    let src = tree.join(TEMPLATES.trim_start_matches('/'));
    let mut checked = 0;
    for t in std::fs::read_dir(&src).map_err(|e| format!("{}: {e}", src.display()))? {
        let t = t.map_err(|e| e.to_string())?.path();
        if !t.is_dir() {
            continue;
        }
        for f in std::fs::read_dir(&t).map_err(|e| e.to_string())? {
            let f = f.map_err(|e| e.to_string())?.path();
            if !f
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("pfile_"))
            {
                continue;
            }
            let text = std::fs::read_to_string(&f).map_err(|e| format!("{}: {e}", f.display()))?;
            let copy = dir.join("checked.pfile");
            std::fs::write(&copy, text.replace(TEMPLATES, &src.to_string_lossy()))
                .map_err(|e| e.to_string())?;
            output(
                Command::new(tree.join("usr/bin/pcheck"))
                    .arg("--check")
                    .arg("-f")
                    .arg(&copy),
            )
            .map_err(|e| format!("packaged template {}: {e}", f.display()))?;
            checked += 1;
        }
    }
    if checked < 7 {
        return Err(format!("only {checked} templates in the RPM"));
    }

    // The packaged alert rules pass promtool's check and their unit tests (the
    // dashboard's structure and queries: tests/alerts.rs).
    let prom = tree.join("usr/share/psweb/prometheus");
    if runs(Command::new("sh").args(["-c", "command -v promtool"])) {
        output(
            Command::new("promtool")
                .args(["check", "rules", "psweb.rules.yml"])
                .current_dir(&prom),
        )?;
        output(
            Command::new("promtool")
                .args(["test", "rules", "psweb.rules.test.yml"])
                .current_dir(&prom),
        )?;
    }

    // The man pages render without a warning.
    if runs(Command::new("sh").args(["-c", "command -v groff"])) {
        for page in ["man8/pcheck.8.gz", "man8/padmin.8.gz", "man5/pfile.5.gz"] {
            let p = tree.join("usr/share/man").join(page);
            let warn = output(Command::new("sh").arg("-c").arg(format!(
                "zcat '{}' | groff -man -ww -z -Tutf8 2>&1",
                p.display()
            )))?;
            if !warn.trim().is_empty() {
                return Err(format!("{page}: {warn}"));
            }
        }
    }
    eprintln!("xtask: the packaged pcheck --check accepts all {checked} packaged templates");
    Ok(())
}

/// The newest GLIBC_x.y version a binary's dynamic symbols name (objdump -T).
fn glibc_newest(path: &Path) -> Result<Option<(u32, u32)>, String> {
    let t = output(Command::new("objdump").arg("-T").arg(path))?;
    Ok(t.split(|c: char| c.is_whitespace() || c == '(' || c == ')')
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut it = v.split('.');
            Some((
                it.next()?.parse().ok()?,
                it.next().unwrap_or("0").parse().ok()?,
            ))
        })
        .max())
}

/// What the check needs from an ELF64 little-endian file's headers.
struct Elf {
    machine: u16,
    /// A PT_INTERP program header: the binary needs a dynamic loader.
    interp: bool,
    /// DT_NEEDED entries (as string-table offsets): shared libraries it needs.
    needed: Vec<u64>,
}

impl Elf {
    fn parse(b: &[u8]) -> Result<Self, String> {
        let u16_at = |o: usize| -> Result<u16, String> {
            b.get(o..o + 2)
                .and_then(|s| s.try_into().ok())
                .map(u16::from_le_bytes)
                .ok_or_else(|| format!("truncated ELF at {o}"))
        };
        let u32_at = |o: usize| -> Result<u32, String> {
            b.get(o..o + 4)
                .and_then(|s| s.try_into().ok())
                .map(u32::from_le_bytes)
                .ok_or_else(|| format!("truncated ELF at {o}"))
        };
        let u64_at = |o: usize| -> Result<u64, String> {
            b.get(o..o + 8)
                .and_then(|s| s.try_into().ok())
                .map(u64::from_le_bytes)
                .ok_or_else(|| format!("truncated ELF at {o}"))
        };
        if b.get(0..4) != Some(b"\x7fELF".as_slice())
            || b.get(4) != Some(&2)
            || b.get(5) != Some(&1)
        {
            return Err("not a 64-bit little-endian ELF file".into());
        }
        let machine = u16_at(18)?;
        let phoff = usize::try_from(u64_at(32)?).map_err(|e| e.to_string())?;
        let phentsize = usize::from(u16_at(54)?);
        let phnum = usize::from(u16_at(56)?);
        let mut interp = false;
        let mut needed = Vec::new();
        for i in 0..phnum {
            let ph = phoff + i * phentsize;
            match u32_at(ph)? {
                3 => interp = true,
                2 => {
                    // PT_DYNAMIC: 16-byte entries (d_tag, d_val) up to DT_NULL.
                    let off = usize::try_from(u64_at(ph + 8)?).map_err(|e| e.to_string())?;
                    let size = usize::try_from(u64_at(ph + 32)?).map_err(|e| e.to_string())?;
                    for d in (off..off + size).step_by(16) {
                        match u64_at(d)? {
                            0 => break,
                            1 => needed.push(u64_at(d + 8)?),
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(Self {
            machine,
            interp,
            needed,
        })
    }
}
