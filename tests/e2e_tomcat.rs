//! The Tomcat template for real: Debian's tomcat10 in a private CATALINA_BASE, started
//! by the template's own restart script (pfiles/tomcat/tomcat.rc, its settings
//! rewritten for the sandbox) under pcheck with the template's pfile and HTTP stall
//! check; kill -9 of the JVM; HEAD answers again and restart_count is 1.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

mod common;
use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CATALINA_HOME: &str = "/usr/share/tomcat10";
/// The template's pname, which the test replaces with the sandbox's JAVA_HOME.
const TEMPLATE_JAVA: &str = "/usr/lib/jvm/jre-17/bin/java";
const TEMPLATE_SCRIPT: &str = "/var/opt/HA/PSWE/conf/src/tomcat/tomcat.rc";
const TEMPLATE_PIDFILE: &str = "/run/tomcat/tomcat.pid";
/// JVM start plus Tomcat's start: seconds here, more on a loaded CI machine.
const TOMCAT_UP: Duration = Duration::from_secs(120);

fn template(name: &str) -> String {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../pfiles/tomcat")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Replaces `from`, which must occur on exactly one line that is not a comment, with
/// `to` (the comments keep naming the installed paths).
fn replace_once(text: &str, from: &str, to: &str) -> String {
    let mut found = 0;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if !l.trim_start().starts_with('#') && l.contains(from) {
                found += 1;
                l.replace(from, to)
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_eq!(
        found, 1,
        "the template should use {from:?} on exactly one line"
    );
    out.join("\n") + "\n"
}

/// Sets `NAME=value` at the start of a line of the script (the template's settings).
fn set_var(script: &str, name: &str, value: &str) -> String {
    let prefix = format!("{name}=");
    let mut found = 0;
    let out: Vec<String> = script
        .lines()
        .map(|l| {
            if l.starts_with(&prefix) {
                found += 1;
                format!("{name}={value}")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_eq!(found, 1, "tomcat.rc should set {name} once");
    out.join("\n") + "\n"
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let t0 = Instant::now();
    while t0.elapsed() < timeout {
        if f() {
            return Some(t0.elapsed());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    None
}

fn tomcat_user() -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&"tomcat") && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}

fn chown_r(p: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(p, Some(uid), Some(gid)).expect("chown");
    if p.is_dir() {
        for e in std::fs::read_dir(p).expect("read_dir").flatten() {
            chown_r(&e.path(), uid, gid);
        }
    }
}

/// A private CATALINA_BASE: Debian's conf files, our own server.xml (HTTP connector
/// on `port`, on 127.0.0.1; no shutdown port), a ROOT webapp with an index.html.
fn catalina_base(sb: &Sandbox, port: u16) -> PathBuf {
    let base = sb.file("tomcat");
    for d in ["conf", "logs", "temp", "work", "webapps/ROOT"] {
        std::fs::create_dir_all(base.join(d)).expect("mkdir");
    }
    for f in [
        "web.xml",
        "catalina.properties",
        "logging.properties",
        "context.xml",
    ] {
        std::fs::copy(
            Path::new("/etc/tomcat10").join(f),
            base.join("conf").join(f),
        )
        .unwrap_or_else(|e| panic!("/etc/tomcat10/{f}: {e}"));
    }
    std::fs::write(
        base.join("conf/server.xml"),
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<Server port="-1" shutdown="SHUTDOWN">
  <Service name="Catalina">
    <Connector port="{port}" address="127.0.0.1" protocol="HTTP/1.1" connectionTimeout="20000"/>
    <Engine name="Catalina" defaultHost="localhost">
      <Host name="localhost" appBase="webapps" unpackWARs="false" autoDeploy="false"/>
    </Engine>
  </Service>
</Server>
"#
        ),
    )
    .expect("server.xml");
    std::fs::write(base.join("webapps/ROOT/index.html"), "psweb tomcat test\n").expect("index");
    base
}

#[test]
fn tomcat_killed_is_restored() {
    let test = "tomcat_killed_is_restored";
    if !root_or_skip(test) {
        return;
    }
    let catalina = Path::new(CATALINA_HOME).join("bin/catalina.sh");
    if !catalina.exists() {
        skip(
            test,
            &format!(
                "Debian's tomcat10 is not installed ({} missing; cargo xtask test installs it)",
                catalina.display()
            ),
        );
        return;
    }
    let Ok(real_java) = std::fs::canonicalize("/usr/bin/java") else {
        skip(test, "no java (/usr/bin/java); tomcat10 depends on a JRE");
        return;
    };
    let sb = Sandbox::new();
    let port = free_port();
    let base = catalina_base(&sb, port);

    // JAVA_HOME through a symlink, as RHEL's /usr/lib/jvm/jre-17 is: the pname is
    // the symlinked path, /proc/PID/exe the real one.
    let real_home = real_java
        .parent()
        .and_then(Path::parent)
        .expect("JAVA_HOME of /usr/bin/java");
    let java_home = sb.file("jre");
    std::os::unix::fs::symlink(real_home, &java_home).expect("symlink");
    let pname = java_home.join("bin/java");

    let user = tomcat_user();
    if let Some((uid, gid)) = user {
        chown_r(&base, uid, gid);
    }
    let pidfile = sb.file("run-tomcat/tomcat.pid");

    // The template's restart script, with the sandbox's settings.
    let mut rc = template("tomcat.rc");
    rc = set_var(&rc, "CATALINA_HOME", CATALINA_HOME);
    rc = set_var(&rc, "CATALINA_BASE", &base.to_string_lossy());
    rc = set_var(&rc, "JAVA_HOME", &java_home.to_string_lossy());
    rc = set_var(&rc, "CATALINA_PID", &pidfile.to_string_lossy());
    rc = set_var(
        &rc,
        "TOMCAT_USER",
        if user.is_some() { "tomcat" } else { "" },
    );
    let script = sb.file("tomcat.rc");
    std::fs::write(&script, rc).expect("write tomcat.rc");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).expect("chmod");

    // The template's pfile: its pname, script, pidfile and port replaced, all else kept
    // (start_wait 30s, kill_wait 10s, the _bi_webserv block, retry-over time 600 s)
    // but the probe interval: 10 s instead of 60 s. A restarted process counts as
    // started once its stall check has answered, and Tomcat does not answer the
    // probe made at once when its JVM appears; with 60 s the test would only wait.
    let mut pf = template("pfile_tomcat");
    pf = replace_once(&pf, TEMPLATE_JAVA, &pname.to_string_lossy());
    pf = replace_once(&pf, TEMPLATE_SCRIPT, &script.to_string_lossy());
    pf = replace_once(&pf, TEMPLATE_PIDFILE, &pidfile.to_string_lossy());
    pf = replace_once(
        &pf,
        "DIRECT:-:60:0:2:600:8080",
        &format!("DIRECT:-:10:0:2:600:{port}"),
    );
    if user.is_none() {
        // The JVM runs as root here: the template's owner=tomcat would refuse it.
        pf = replace_once(&pf, "owner=tomcat", "owner=root");
    }
    let pfile = sb.pfile(&pf);

    let check = Command::new(PCHECK)
        .arg("--check")
        .arg("-f")
        .arg(&pfile)
        .output()
        .expect("pcheck --check");
    assert!(
        check.status.success(),
        "pcheck --check: {}",
        String::from_utf8_lossy(&check.stderr)
    );

    let t_start = Instant::now();
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    pc.wait_for("Started Process", TOMCAT_UP);
    let up = wait_until(TOMCAT_UP, || http_ok(port));
    assert!(
        up.is_some(),
        "Tomcat does not answer on port {port}; catalina.out:\n{}",
        std::fs::read_to_string(base.join("logs/catalina.out")).unwrap_or_default()
    );
    let cold = t_start.elapsed();

    // Tomcat serves; let pcheck's own HEAD probe see it too before the crash (the
    // probe at the JVM's start came too early), as in production.
    pc.drain();
    if pc
        .seen
        .iter()
        .any(|l| l.contains("stall check (web) of pent_id= 1") && l.contains("failed"))
    {
        pc.seen_or_wait("answering again", Duration::from_secs(30));
    }

    let before = pc.entry(1);
    assert_eq!(before["proc_sts"], "AVAIL", "{before}");
    let old = pid_of(&before);
    assert_eq!(
        std::fs::read_link(format!("/proc/{old}/exe"))
            .ok()
            .as_deref(),
        Some(real_java.as_path()),
        "the watched process is the JVM"
    );
    let from_pidfile: Option<i32> = std::fs::read_to_string(&pidfile)
        .ok()
        .and_then(|s| s.trim().parse().ok());
    assert_eq!(from_pidfile, Some(old), "pid from CATALINA_PID");

    let t0 = Instant::now();
    kill(old, libc::SIGKILL);
    let down = pc.wait_for("Process Down", T);
    assert!(down.contains(&format!("pid= {old}")), "{down}");
    let detect = t0.elapsed();
    pc.wait_for("Restarted Process", TOMCAT_UP);
    let restarted = t0.elapsed();
    let back = wait_until(TOMCAT_UP, || http_ok(port));
    assert!(
        back.is_some(),
        "Tomcat does not answer again on port {port}; catalina.out:\n{}",
        std::fs::read_to_string(base.join("logs/catalina.out")).unwrap_or_default()
    );
    let serving = t0.elapsed();

    let after = pc.entry(1);
    assert_eq!(after["restart_count"], 1, "{after}");
    assert_eq!(after["proc_sts"], "AVAIL", "{after}");
    let new = pid_of(&after);
    assert_ne!(new, old);
    assert!(!alive(old));
    println!(
        "tomcat: cold start to HEAD answering {} ms; kill -9 -> Process Down {} ms, \
         Restarted Process {} ms, HEAD answers again {} ms (user {})",
        cold.as_millis(),
        detect.as_millis(),
        restarted.as_millis(),
        serving.as_millis(),
        if user.is_some() { "tomcat" } else { "root" }
    );
}
