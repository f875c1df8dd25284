//! `cargo xtask build-ebpf`: builds psweb's eBPF object.
//!
//! Needs a nightly toolchain with `rust-src` (the bpf target builds `core` itself) and
//! `bpf-linker` built against the same LLVM major as that nightly. Whatever is missing
//! is installed, saying so first (../shared/TOOLCHAIN.md is the verified recipe).
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The nightly known to build aya-ebpf 0.2.1 here: `rustc +nightly -vV` reports
/// `1.97.0-nightly (e50aa6fba 2026-05-19)`, LLVM 22.1.4.
const PINNED_NIGHTLY_COMMIT: &str = "e50aa6fba4e63ab34c72bf9acfd2c307c1155d1a";
/// The dated rustup name of that nightly, installed when `nightly` is another build.
const PINNED_NIGHTLY_DATED: &str = "nightly-2026-05-20";
const EBPF_PACKAGE: &str = "psweb-ebpf";
const EBPF_BIN: &str = "psweb";
const BPF_TARGET: &str = "bpfel-unknown-none";
/// Name of the object next to the userspace binaries (events through a ring buffer).
pub const OBJECT_NAME: &str = "psweb.bpf.o";
/// The same programs reporting through a perf event array, for kernels without
/// BPF_MAP_TYPE_RINGBUF; pcheck picks one of the two at load time.
pub const PERF_OBJECT_NAME: &str = "psweb-perf.bpf.o";

/// Builds the two eBPF objects (ring buffer, perf event array) and copies them next
/// to the userspace binaries as `target/{debug,release}/psweb.bpf.o` and
/// `psweb-perf.bpf.o`. Returns the ring-buffer object's path for the requested profile
/// (the perf one is its sibling). The eBPF side is always built optimised (the
/// verifier rejects unoptimised code); `release` only chooses which copy's path is
/// returned.
pub fn build(release: bool) -> Result<PathBuf, String> {
    let root = workspace_root()?;
    let toolchain = nightly_toolchain()?;
    let llvm_major = llvm_major(&toolchain)?;
    ensure_rust_src(&toolchain)?;
    let linker = ensure_bpf_linker(llvm_major)?;
    build_variant(
        &root,
        &toolchain,
        &linker,
        &["--no-default-features", "--features", "perf-array"],
        PERF_OBJECT_NAME,
        release,
    )?;
    build_variant(&root, &toolchain, &linker, &[], OBJECT_NAME, release)
}

/// One `cargo build` of the eBPF crate with `features`, copied as `name`.
fn build_variant(
    root: &Path,
    toolchain: &str,
    linker: &Path,
    features: &[&str],
    name: &str,
    release: bool,
) -> Result<PathBuf, String> {
    eprintln!("xtask: building the eBPF object {name} ({EBPF_PACKAGE} {features:?}, {toolchain}, {BPF_TARGET})");
    let mut cmd = Command::new("rustup");
    cmd.current_dir(root)
        .args(["run", toolchain, "cargo", "build", "-Z", "build-std=core"])
        .args([
            "--target",
            BPF_TARGET,
            "--release",
            "-p",
            EBPF_PACKAGE,
            "--bins",
        ])
        .args(features);
    // The outer `cargo run` (stable) exports variables that would pin the inner build
    // to stable or to its flags.
    for var in [
        "RUSTUP_TOOLCHAIN",
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO",
    ] {
        cmd.env_remove(var);
    }
    // Make sure the inner cargo finds the bpf-linker we checked, wherever it lives.
    if let Some(dir) = linker.parent() {
        let path = std::env::var_os("PATH").unwrap_or_default();
        let mut dirs = vec![dir.to_path_buf()];
        dirs.extend(std::env::split_paths(&path));
        if let Ok(joined) = std::env::join_paths(dirs) {
            cmd.env("PATH", joined);
        }
    }
    run(&mut cmd, "building the eBPF object")?;

    let target_dir = target_dir(root);
    let built = target_dir.join(BPF_TARGET).join("release").join(EBPF_BIN);
    if !built.is_file() {
        return Err(format!(
            "the eBPF build succeeded but {} is missing",
            built.display()
        ));
    }
    let mut chosen = None;
    for profile in ["debug", "release"] {
        let dir = target_dir.join(profile);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let dest = dir.join(name);
        std::fs::copy(&built, &dest)
            .map_err(|e| format!("cannot copy {} to {}: {e}", built.display(), dest.display()))?;
        if (profile == "release") == release {
            chosen = Some(dest);
        }
    }
    let object = chosen.ok_or("internal error: no profile matched")?;
    let size = std::fs::metadata(&object).map(|m| m.len()).unwrap_or(0);
    eprintln!("xtask: eBPF object {} ({size} bytes)", object.display());
    Ok(object)
}

fn workspace_root() -> Result<PathBuf, String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| format!("cannot find the workspace above {}", manifest.display()))
}

fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => {
            let d = PathBuf::from(d);
            if d.is_absolute() {
                d
            } else {
                root.join(d)
            }
        }
        None => root.join("target"),
    }
}

/// The toolchain to build with: `nightly` if it is the pinned build, else the dated
/// pinned nightly (installed if missing).
fn nightly_toolchain() -> Result<String, String> {
    if which("rustup").is_none() {
        return Err(
            "rustup is not installed: install it from https://rustup.rs, then retry".into(),
        );
    }
    for candidate in ["nightly", PINNED_NIGHTLY_DATED] {
        if let Some(vv) = rustc_vv(candidate) {
            if vv.contains(PINNED_NIGHTLY_COMMIT) {
                return Ok(candidate.to_string());
            }
            if candidate == PINNED_NIGHTLY_DATED {
                // An explicitly dated toolchain is what we asked for, whatever its hash.
                return Ok(candidate.to_string());
            }
        }
    }
    eprintln!(
        "xtask: the pinned nightly (commit {PINNED_NIGHTLY_COMMIT}) is not installed; \
         installing {PINNED_NIGHTLY_DATED} (minimal profile + rust-src)"
    );
    run(
        Command::new("rustup").args([
            "toolchain",
            "install",
            PINNED_NIGHTLY_DATED,
            "--profile",
            "minimal",
            "--component",
            "rust-src",
        ]),
        "installing the pinned nightly toolchain",
    )?;
    Ok(PINNED_NIGHTLY_DATED.to_string())
}

fn rustc_vv(toolchain: &str) -> Option<String> {
    let out = Command::new("rustup")
        .args(["run", toolchain, "rustc", "-vV"])
        .env_remove("RUSTUP_TOOLCHAIN")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The LLVM major version of `toolchain`'s rustc (bpf-linker must use the same one).
fn llvm_major(toolchain: &str) -> Result<u32, String> {
    let vv = rustc_vv(toolchain).ok_or_else(|| format!("`rustc +{toolchain} -vV` failed"))?;
    vv.lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.trim().parse().ok())
        .ok_or_else(|| format!("`rustc +{toolchain} -vV` does not report an LLVM version"))
}

fn ensure_rust_src(toolchain: &str) -> Result<(), String> {
    let out = Command::new("rustup")
        .args(["component", "list", "--installed", "--toolchain", toolchain])
        .output()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    let listed = String::from_utf8_lossy(&out.stdout);
    if listed
        .lines()
        .any(|l| l.trim() == "rust-src" || l.starts_with("rust-src-"))
    {
        return Ok(());
    }
    eprintln!("xtask: installing rust-src for {toolchain} (about 80 MB; the bpf target builds core from source)");
    run(
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", toolchain]),
        "installing rust-src",
    )
}

/// Finds bpf-linker (PATH, then ~/.cargo/bin), installing it against LLVM `major` if
/// missing. Returns its path.
fn ensure_bpf_linker(major: u32) -> Result<PathBuf, String> {
    if let Some(p) = bpf_linker_path() {
        return Ok(p);
    }
    let prefix = PathBuf::from(format!("/usr/lib/llvm-{major}"));
    if !prefix.join("bin/llvm-config").is_file() {
        let pkg = format!("llvm-{major}-dev");
        eprintln!(
            "xtask: bpf-linker needs LLVM {major} (the nightly's LLVM); installing {pkg} with apt-get"
        );
        if which("apt-get").is_none() {
            return Err(format!(
                "{pkg} is missing and apt-get is not available: install LLVM {major} \
                 development files so that {}/bin/llvm-config exists, then retry",
                prefix.display()
            ));
        }
        run(
            Command::new("apt-get").args(["update", "-qq"]),
            "apt-get update (needs root)",
        )?;
        run(
            Command::new("apt-get").args(["install", "-y", &pkg]),
            &format!("apt-get install -y {pkg} (needs root; if the package is unknown, add apt.llvm.org's repository for LLVM {major})"),
        )?;
    }
    eprintln!(
        "xtask: installing bpf-linker built against {} (cargo install, a few minutes)",
        prefix.display()
    );
    let feature = format!("llvm-{major}");
    run(
        Command::new("cargo")
            .env("LLVM_PREFIX", &prefix)
            .env_remove("RUSTUP_TOOLCHAIN")
            .args([
                "install",
                // The version known to build against LLVM 22 here (TOOLCHAIN.md).
                "bpf-linker@0.13.0",
                "--locked",
                "--no-default-features",
                "--features",
            ])
            .arg(&feature),
        "cargo install bpf-linker",
    )?;
    bpf_linker_path().ok_or_else(|| {
        "bpf-linker was installed but is neither on PATH nor in ~/.cargo/bin".to_string()
    })
}

fn bpf_linker_path() -> Option<PathBuf> {
    which("bpf-linker").or_else(|| {
        let home = std::env::var_os("CARGO_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))?;
        let p = home.join("bin").join("bpf-linker");
        p.is_file().then_some(p)
    })
}

fn which(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
}

fn run(cmd: &mut Command, what: &str) -> Result<(), String> {
    let status = cmd.status().map_err(|e| {
        format!(
            "{what}: cannot run {}: {e}",
            std::path::Path::new(cmd.get_program()).display()
        )
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what} failed ({status})"))
    }
}
