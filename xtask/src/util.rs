//! `run`, `test` and `bench`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root (xtask's parent directory).
pub fn root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent()
        .map_or_else(|| here.to_path_buf(), Path::to_path_buf)
}

/// Runs a command in the workspace root; Err names it when it fails.
pub fn sh(cmd: &mut Command) -> Result<(), String> {
    eprintln!("xtask: running {cmd:?}");
    let st = cmd
        .current_dir(root())
        .status()
        .map_err(|e| format!("cannot run {cmd:?}: {e}"))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed ({st})"))
    }
}

pub fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Debian packages the end-to-end tests use: (a file it installs, package).
const TEST_PACKAGES: &[(&str, &str)] = &[
    ("/usr/sbin/apache2", "apache2"),
    ("/usr/lib/apache2/modules/mod_ssl.so", "apache2"),
    ("/usr/bin/ab", "apache2-utils"),
    ("/usr/bin/openssl", "openssl"),
    ("/usr/bin/perl", "perl"),
    ("/usr/share/tomcat10/bin/catalina.sh", "tomcat10"),
    ("/usr/sbin/nginx", "nginx"),
    ("/usr/sbin/haproxy", "haproxy"),
    ("/usr/bin/promtool", "prometheus"),
    ("/usr/bin/prometheus", "prometheus"),
    (
        "/usr/bin/prometheus-alertmanager",
        "prometheus-alertmanager",
    ),
    ("/usr/bin/groff", "groff"),
    // The fleet tests start their own etcd (Debian's etcd 3.4).
    ("/usr/bin/etcd", "etcd-server"),
    ("/usr/bin/wrk", "wrk"),
    (
        "/usr/lib/nginx/modules/ngx_http_perl_module.so",
        "libnginx-mod-http-perl",
    ),
    (
        "/usr/lib/nginx/modules/ngx_http_js_module.so",
        "libnginx-mod-http-js",
    ),
    // A mod_perl handler deadlocks Apache's workers on a futex (tests/e2e_progress.rs).
    (
        "/usr/lib/apache2/modules/mod_perl.so",
        "libapache2-mod-perl2",
    ),
];

/// What building psweb needs beyond Rust: `protoc` and the well-known protobuf types
/// (etcd-client generates its gRPC code at build time).
const BUILD_PACKAGES: &[(&str, &str)] = &[
    ("/usr/bin/protoc", "protobuf-compiler"),
    (
        "/usr/include/google/protobuf/descriptor.proto",
        "libprotobuf-dev",
    ),
];

/// Installs what the build needs when it is missing (as root, with apt-get).
pub fn ensure_build_packages() -> Result<(), String> {
    install_missing(BUILD_PACKAGES, "the build tools")
}

/// Installs the test servers and tools that are missing (as root, with apt-get).
pub fn ensure_test_packages() -> Result<(), String> {
    ensure_build_packages()?;
    install_missing(TEST_PACKAGES, "the test servers and tools")
}

fn install_missing(packages: &[(&str, &str)], what: &str) -> Result<(), String> {
    let mut missing: Vec<&str> = packages
        .iter()
        .filter(|(f, _)| !Path::new(f).exists())
        .map(|(_, p)| *p)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        eprintln!("xtask: not root, so {what} {missing:?} cannot be installed (install them with apt-get; tests that need a missing one say SKIPPED)");
        return Ok(());
    }
    eprintln!("xtask: installing {what}: {missing:?}");
    apt_install(&missing)
}

/// apt-get install (after an update), waiting for another apt's lock.
fn apt_install(packages: &[&str]) -> Result<(), String> {
    const LOCK: [&str; 2] = ["-o", "DPkg::Lock::Timeout=600"];
    sh(Command::new("apt-get").args(LOCK).args(["update", "-qq"]))?;
    sh(Command::new("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(LOCK)
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(packages))
}

/// Installs one Debian package unless `file` (which it installs) exists.
pub fn ensure_package(file: &str, package: &str) -> Result<(), String> {
    if Path::new(file).exists() {
        return Ok(());
    }
    if !is_root() {
        return Err(format!(
            "{file} is missing: install Debian's {package} (needs root)"
        ));
    }
    eprintln!("xtask: installing {package}");
    apt_install(&[package])
}

/// `cargo xtask run [--port N]`: pcheck in the foreground watching the demo server.
pub fn run_demo(args: &[String]) -> Result<(), String> {
    let port = match args {
        [] => 8080,
        [flag, p] if flag == "--port" => p.parse().map_err(|e| format!("--port: {e}"))?,
        _ => return Err("usage: cargo xtask run [--port N]".into()),
    };
    let obj = crate::ebpf::build(false);
    if let Err(e) = &obj {
        eprintln!(
            "xtask: the eBPF object could not be built ({e}); pcheck will say what it uses instead"
        );
    }
    ensure_build_packages()?;
    sh(cargo().args(["build", "-p", "psweb", "--bins"]))?;
    let root = root();
    let bin = root.join("target/debug");
    let dir = root.join("target/demo");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let demo = bin.join("psweb-demo-httpd");
    let fill = |t: &str| {
        t.replace("@DEMO@", &demo.display().to_string())
            .replace("@DIR@", &dir.display().to_string())
            .replace("@PORT@", &port.to_string())
    };
    let read = |p: &str| std::fs::read_to_string(root.join(p)).map_err(|e| format!("{p}: {e}"));
    let pfile = dir.join("pfile");
    let rc = dir.join("demo-httpd.rc");
    std::fs::write(&pfile, fill(&read("pfiles/demo/pfile.in")?)).map_err(|e| e.to_string())?;
    std::fs::write(&rc, fill(&read("pfiles/demo/demo-httpd.rc.in")?)).map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&rc, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;

    let mut cmd = Command::new(bin.join("pcheck"));
    cmd.arg("-f").arg(&pfile);
    if let Ok(o) = &obj {
        cmd.arg("--bpf-object").arg(o);
    }
    if !is_root() {
        cmd.env("PSWEB_RUN_DIR", dir.join("run"));
    }
    let padmin = bin.join("padmin");
    eprintln!(
        "\nxtask: pcheck watches the demo server on http://127.0.0.1:{port}/ (Ctrl-C ends both).\n\
         Try, in another terminal:\n  {padmin} -f {pf} -c show pent\n  kill -9 $(cat {dir}/demo-httpd.pid)\n  {padmin} -f {pf} -c show pent\n",
        padmin = padmin.display(),
        pf = pfile.display(),
        dir = dir.display()
    );
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start pcheck: {e}"))?;
    // Ctrl-C reaches pcheck (same process group); xtask stays to clean up after it.
    // SAFETY: setting a signal disposition to SIG_IGN.
    unsafe { libc::signal(libc::SIGINT, libc::SIG_IGN) };
    let st = child.wait().map_err(|e| e.to_string())?;
    if let Some(pid) = std::fs::read_to_string(dir.join("demo-httpd.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
    {
        // The demo server leads its own session: end it and its workers.
        // SAFETY: plain kill of a process group.
        unsafe { libc::kill(-pid, libc::SIGTERM) };
        eprintln!("xtask: stopped the demo server (pid {pid})");
    }
    if st.success() || st.code().is_none() {
        Ok(())
    } else {
        Err(format!("pcheck ended with {st}"))
    }
}

/// `cargo xtask bench`: the benchmark programs; each prints a table and writes JSON
/// under target/bench/. `cargo xtask bench --vs monit`: only the side-by-side with
/// monit (vs_monit, about 12 minutes; it installs Debian's monit if missing).
/// `cargo xtask bench --vs lb`: HAProxy in front of two Apache backends under pcheck
/// (vs_lb, about 6 minutes).
pub fn bench(args: &[String]) -> Result<(), String> {
    let benches: &[&str] = match args {
        [] => &["death", "stall", "kernel", "events", "fleet", "idle"],
        [flag, tool] if flag == "--vs" && tool == "monit" => &["vs_monit"],
        [flag, tool] if flag == "--vs" && tool == "lb" => &["vs_lb"],
        _ => {
            return Err(format!(
                "bench: unknown arguments {args:?} (expected none, --vs monit or --vs lb)"
            ))
        }
    };
    ensure_test_packages()?;
    let obj = crate::ebpf::build(false)?;
    for b in benches {
        sh(cargo()
            .args(["bench", "-p", "psweb", "--bench", b])
            .env("PSWEB_BPF_OBJECT", &obj))?;
    }
    crate::charts::draw().map(|_| ())
}
