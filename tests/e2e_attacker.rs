//! A local attacker: a non-root account (`www-data`, acting through `setpriv`)
//! that owns the directories a service writes (pidfile and run directories) tries to
//! turn root's pcheck. Each test is one finding; each prints an `ATTACK|...` row for
//! `cargo xtask faults` ("local attacker" section).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

mod common;

use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const ATTACKER: &str = "www-data";

/// One row of the local-attacker table: `ATTACK|<n>|<attack>|<expected>|<seen>|<time>`.
fn attack_row(n: u32, attack: &str, expected: &str, seen: &str, t: Option<Duration>) {
    let t = t.map_or_else(|| "-".to_string(), |d| format!("{} ms", d.as_millis()));
    println!("ATTACK|{n}|{attack}|{expected}|{seen}|{t}");
}

/// The attacker's uid and gid, or None (the test is skipped).
fn attacker_or_skip(test: &str) -> Option<(u32, u32)> {
    if !root_or_skip(test) {
        return None;
    }
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let ids = passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&ATTACKER) && f.len() > 3)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    });
    if ids.is_none() || !Path::new("/usr/bin/setpriv").exists() {
        skip(
            test,
            &format!("needs the user {ATTACKER} and setpriv (util-linux)"),
        );
    }
    ids
}

/// Runs `bash -c script` as the attacker.
fn as_attacker(script: &str) -> std::process::Output {
    Command::new("setpriv")
        .args([
            "--reuid",
            ATTACKER,
            "--regid",
            ATTACKER,
            "--clear-groups",
            "bash",
            "-c",
            script,
        ])
        .output()
        .expect("setpriv")
}

/// A directory in the sandbox owned by the attacker (like /run/tomcat).
fn attacker_dir(sb: &Sandbox, name: &str, ids: (u32, u32)) -> PathBuf {
    let d = sb.file(name);
    std::fs::create_dir_all(&d).expect("mkdir");
    std::os::unix::fs::chown(&d, Some(ids.0), Some(ids.1)).expect("chown");
    d
}

fn check(sb: &Sandbox, pfile: &Path) -> std::process::Output {
    Command::new(PCHECK)
        .args(["--check", "-f"])
        .arg(pfile)
        .env("PSWEB_RUN_DIR", sb.run_dir())
        .env("PSWEB_STATE_DIR", sb.file("state"))
        .output()
        .expect("pcheck --check")
}

/// Finding 1: a restart script reached through a symlink in a directory the attacker
/// owns is refused by `--check` and at start; and when the directory changes hands
/// while pcheck runs, the swapped link is refused at the next restart: the
/// attacker's script never runs as root.
#[test]
fn restart_script_symlink_cannot_be_swapped() {
    let Some(ids) = attacker_or_skip("restart_script_symlink") else {
        return;
    };
    let sb = Sandbox::new();
    let port = free_port();
    let (good, pidfile) = sb.demo_script("web", port, 0);
    let app = sb.file("app");
    std::fs::create_dir_all(&app).expect("mkdir");
    let link = app.join("restart.rc");
    std::os::unix::fs::symlink(&good, &link).expect("symlink");
    let pfile = entry_pfile(&sb, DEMO, &link, &pidfile, "");

    std::os::unix::fs::chown(&app, Some(ids.0), Some(ids.1)).expect("chown");
    let out = check(&sb, &pfile);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "directory {} above restart script is owned by {ATTACKER} (uid {})",
            app.display(),
            ids.0
        )),
        "{err}"
    );

    // Safe at start; then the directory is handed to the service user.
    std::os::unix::fs::chown(&app, Some(0), Some(0)).expect("chown");
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    pc.wait_for("Started Process", T);
    std::os::unix::fs::chown(&app, Some(ids.0), Some(ids.1)).expect("chown");
    let marker = sb.file("owned");
    let evil = app.join("evil.rc");
    let swap = as_attacker(&format!(
        "printf '#!/bin/sh\\nid -u > {m}\\n' > {e} && chmod 755 {e} && ln -sfn {e} {l}.new && mv -T {l}.new {l}",
        m = marker.display(),
        e = evil.display(),
        l = link.display()
    ));
    assert!(swap.status.success(), "{swap:?}");
    assert_eq!(
        std::fs::read_link(&link).expect("link"),
        evil,
        "the attacker swapped the link"
    );
    let t0 = Instant::now();
    kill(pid_of(&pc.entry(1)), libc::SIGKILL);
    let refused = pc.wait_for("refusing restart script", T);
    assert!(refused.contains(&app.display().to_string()), "{refused}");
    let t = t0.elapsed();
    assert!(!marker.exists(), "the attacker's script ran");
    attack_row(
        1,
        "restart script symlink swapped by its directory's owner",
        "refused at --check/start and at the next restart",
        "refused, attacker's script never ran",
        Some(t),
    );
}

/// Finding 2: the attacker (the service's user) writes the pid of an unrelated root
/// process running the same binary into its pidfile: pcheck does not adopt it
/// (owner= www-data), starts the real server, and never touches the decoy.
#[test]
fn pidfile_naming_a_root_process_is_not_adopted() {
    let Some(ids) = attacker_or_skip("pidfile_root_decoy") else {
        return;
    };
    let sb = Sandbox::new();
    let run = attacker_dir(&sb, "svc", ids);
    // The decoy: a root process running the same binary, not pcheck's.
    let decoy_port = free_port();
    let decoy_pidfile = sb.file("decoy.pid");
    let st = Command::new(DEMO)
        .args(["--port", &decoy_port.to_string(), "--daemon", "--pidfile"])
        .arg(&decoy_pidfile)
        .status()
        .expect("decoy");
    assert!(st.success());
    let t = Instant::now();
    let decoy: i32 = loop {
        if let Some(p) = std::fs::read_to_string(&decoy_pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
        {
            break p;
        }
        assert!(t.elapsed() < T, "the decoy wrote no pidfile");
        std::thread::sleep(Duration::from_millis(10));
    };
    let port = free_port();
    let pidfile = run.join("web.pid");
    let script = sb.script(
        "web.rc",
        &format!(
            "exec {DEMO} --port {port} --pidfile {} --daemon",
            pidfile.display()
        ),
    );
    let w = as_attacker(&format!("echo {decoy} > {}", pidfile.display()));
    assert!(w.status.success(), "{w:?}");
    let pfile = sb.pfile(&format!(
        "{DEMO} {} 3 pidfile={} user={ATTACKER}\n",
        script.display(),
        pidfile.display()
    ));
    let out = check(&sb, &pfile);
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("is in a directory a non-root user can change"),
        "--check warns: {out:?}"
    );
    let t0 = Instant::now();
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    let started = pc.wait_for("Started Process", T);
    let t = t0.elapsed();
    assert!(
        !pc.seen.iter().any(|l| l.contains("Adopted")),
        "{:?}",
        pc.seen
    );
    let pid = pid_in(&started);
    assert_ne!(pid, decoy);
    assert!(http_ok(port), "the real server serves");
    // The daemon left its script (fork + setsid) but stays below pcheck, a child
    // subreaper: that is how pcheck knows it was born from its own script.
    let ppid = psweb::procfs::stat(pid).expect("stat").ppid;
    assert_eq!(ppid, pc.child.id() as i32, "the daemon's parent is pcheck");
    // The real one dies: the restart, not the decoy, is what pcheck watches next.
    kill(pid, libc::SIGKILL);
    let again = pc.wait_for("Restarted Process", T);
    assert_ne!(pid_in(&again), decoy);
    // The dead master was reaped by pcheck at once, not left a zombie.
    let gone = Instant::now();
    while Path::new(&format!("/proc/{pid}")).exists() {
        assert!(gone.elapsed() < T, "pid {pid} was never reaped");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(alive(decoy), "the decoy was never touched");
    attack_row(
        2,
        "pidfile names a root process running pname",
        "not adopted (owner=), real server started",
        "decoy untouched, real server started and restarted",
        Some(t),
    );
}

/// Findings 3 and 4: a pidfile that is a FIFO, and one that is a symlink to
/// /dev/zero. pcheck neither blocks nor reads without limit: another entry's server
/// is started, killed and restarted as usual, padmin answers, memory stays small.
#[test]
fn fifo_and_endless_pidfiles_do_not_stall_pcheck() {
    let Some(ids) = attacker_or_skip("pidfile_fifo_zero") else {
        return;
    };
    let sb = Sandbox::new();
    let run = attacker_dir(&sb, "svc", ids);
    let fifo = run.join("a.pid");
    let zero = run.join("b.pid");
    let out = as_attacker(&format!(
        "mkfifo {} && ln -s /dev/zero {}",
        fifo.display(),
        zero.display()
    ));
    assert!(out.status.success(), "{out:?}");
    let never = sb.script("never.rc", "exit 1");
    let port = free_port();
    let (script, pidfile) = sb.demo_script("web", port, 0);
    let pfile = sb.pfile(&format!(
        "/usr/sbin/psweb-never-a {n} 0 pidfile={}\n\
         /usr/sbin/psweb-never-b {n} 0 pidfile={}\n\
         {DEMO} {} 3 pidfile={}\n",
        fifo.display(),
        zero.display(),
        script.display(),
        pidfile.display(),
        n = never.display()
    ));
    let t0 = Instant::now();
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    pc.wait_for("Started Process", T);
    let show = pc.entry(3);
    let pid = pid_of(&show);
    kill(pid, libc::SIGKILL);
    pc.wait_for("Restarted Process", T);
    let t = t0.elapsed();
    let (_, rss_kb) = fds_and_rss(pc.child.id());
    assert!(rss_kb < 200 * 1024, "pcheck RSS {rss_kb} kB");
    assert!(http_ok(port));
    attack_row(
        3,
        "pidfile is a FIFO / a symlink to /dev/zero",
        "not read; other entries unaffected",
        &format!("restart as usual, RSS {} MB", rss_kb / 1024),
        Some(t),
    );
}

/// Finding 5: with no pidfile, any user's `exec -a <pname> sleep` is not taken for
/// the server: pcheck starts the real one.
#[test]
fn argv0_decoy_is_not_adopted() {
    let Some(_) = attacker_or_skip("argv0_decoy") else {
        return;
    };
    let sb = Sandbox::new();
    // The pname lives in the sandbox, so that the decoy's command line names it and
    // the sandbox's teardown kills it.
    let pname = sb.file("web-httpd");
    std::fs::copy(DEMO, &pname).expect("copy");
    std::fs::set_permissions(&pname, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let mut decoy = Command::new("setpriv")
        .args([
            "--reuid",
            ATTACKER,
            "--regid",
            ATTACKER,
            "--clear-groups",
            "bash",
            "-c",
        ])
        .arg(format!("exec -a {} sleep 600", pname.display()))
        .spawn()
        .expect("decoy");
    let decoy_pid = decoy.id() as i32;
    let named = Instant::now();
    while !pids_with_cmdline(&pname.to_string_lossy()).contains(&decoy_pid) {
        assert!(named.elapsed() < T, "the decoy never took its name");
        std::thread::sleep(Duration::from_millis(10));
    }
    let port = free_port();
    let script = sb.script(
        "web.rc",
        &format!("exec {} --port {port} --daemon", pname.display()),
    );
    let pfile = sb.pfile(&format!("{} {} 3\n", pname.display(), script.display()));
    let t0 = Instant::now();
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    let started = pc.wait_for("Started Process", T);
    let t = t0.elapsed();
    assert_ne!(pid_in(&started), decoy_pid);
    assert!(http_ok(port), "the real server was started");
    assert!(alive(decoy_pid));
    let _ = decoy.kill();
    let _ = decoy.wait();
    attack_row(
        5,
        "argv[0] decoy (exec -a pname sleep), no pidfile",
        "not adopted; real server started",
        "real server started",
        Some(t),
    );
}

/// Finding 6: the attacker opens 10,000 connections to the metrics listener, and
/// root 10,000 to the control socket, while a watched server is killed: it is
/// restarted as usual, padmin still answers, pcheck's CPU stays low.
#[test]
fn connection_floods_do_not_stop_restarts() {
    let Some(_) = attacker_or_skip("connection_flood") else {
        return;
    };
    if !Path::new("/usr/bin/perl").exists() {
        skip(
            "connection_flood",
            "needs perl (cargo xtask test installs it)",
        );
        return;
    }
    // 10,000 client fds for each flood (and pcheck's own).
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: get/setrlimit on this test process.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl);
        rl.rlim_cur = rl.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &rl);
    }
    let n: u64 = 10_000.min(rl.rlim_max.saturating_sub(200));
    let sb = Sandbox::new();
    let port = free_port();
    let mport = free_port();
    let (script, pidfile) = sb.demo_script("web", port, 0);
    let pfile = sb.pfile(&format!(
        "metrics_listen = 127.0.0.1:{mport}\n{DEMO} {} 3 pidfile={}\n",
        script.display(),
        pidfile.display()
    ));
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    pc.wait_for("Started Process", T);
    let pcheck_pid = pc.child.id();
    let server = pid_of(&pc.entry(1));

    // The attacker's flood: non-blocking connects, held open until stdin closes.
    let mut flood = Command::new("setpriv")
        .args(["--reuid", ATTACKER, "--regid", ATTACKER, "--clear-groups", "perl", "-e"])
        .arg(format!(
            "use IO::Socket::INET; my @s; for (1..{n}) {{ my $c = IO::Socket::INET->new(PeerAddr => '127.0.0.1:{mport}', Blocking => 0) or last; push @s, $c }} print scalar(@s), \"\\n\"; STDOUT->flush; <STDIN>; # {}",
            sb.path().display()
        ))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("perl flood");
    let mut line = String::new();
    BufReader::new(flood.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("flood count");
    let opened: u64 = line.trim().parse().unwrap_or(0);
    assert!(opened >= n / 2, "the flood opened {opened} connections");
    // Root's flood of the control socket (non-blocking: those beyond the backlog fail).
    let sock = std::fs::read_dir(sb.run_dir())
        .expect("run dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|e| e == "sock"))
        .expect("control socket");
    let mut held = Vec::new();
    for _ in 0..n {
        // SAFETY: a plain non-blocking socket + connect.
        let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0) };
        if fd < 0 {
            break;
        }
        let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
        addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
        for (d, s) in addr
            .sun_path
            .iter_mut()
            .zip(sock.as_os_str().as_encoded_bytes())
        {
            *d = *s as libc::c_char;
        }
        // SAFETY: addr is a valid sockaddr_un.
        let r = unsafe {
            libc::connect(
                fd,
                std::ptr::addr_of!(addr).cast(),
                std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t,
            )
        };
        held.push(fd);
        if r != 0 {
            break;
        }
    }
    let (fds, _) = fds_and_rss(pcheck_pid);
    let cpu0 = cpu_ticks(pcheck_pid);
    let t0 = Instant::now();
    kill(server, libc::SIGKILL);
    pc.wait_for("Restarted Process", T);
    let t = t0.elapsed();
    assert!(http_ok(port));
    // Stay flooded a moment: an accept loop that spins would show here.
    std::thread::sleep(Duration::from_secs(2));
    let cpu = cpu_ticks(pcheck_pid) - cpu0;
    let secs = t0.elapsed().as_secs_f64();
    let (fds_after, _) = fds_and_rss(pcheck_pid);
    assert!(
        fds < 1000 && fds_after < 1000,
        "pcheck holds {fds}/{fds_after} fds"
    );
    // Sanity bound: a spinning loop burns ~100 ticks a second.
    assert!(
        (cpu as f64) < secs * 50.0,
        "pcheck used {cpu} ticks in {secs:.1} s"
    );
    let held_n = held.len();
    for fd in held {
        // SAFETY: closing fds we opened.
        unsafe { libc::close(fd) };
    }
    drop(flood.stdin.take());
    let _ = flood.wait();
    assert_eq!(
        pc.entry(1)["proc_sts"],
        "AVAIL",
        "padmin answers once the flood is gone"
    );
    attack_row(
        6,
        &format!("{opened} metrics + {held_n} control connections held open"),
        "restart as usual; fds capped; CPU low",
        &format!("pcheck {fds} fds, {cpu} CPU ticks in {secs:.1} s"),
        Some(t),
    );
}

/// Finding 7: a run directory the attacker owns (where the lock and the socket would
/// be created; a planted `<socket>.lock` symlink to a root file) is refused at start,
/// the root file untouched.
#[test]
fn lock_in_a_users_directory_is_refused() {
    let Some(ids) = attacker_or_skip("lock_symlink") else {
        return;
    };
    let sb = Sandbox::new();
    let victim = sb.file("victim");
    std::fs::write(&victim, "root's data\n").expect("victim");
    let run = attacker_dir(&sb, "userrun", ids);
    let sock = run.join("p.sock");
    let plant = as_attacker(&format!(
        "ln -s {} {}",
        victim.display(),
        run.join("p.lock").display()
    ));
    assert!(plant.status.success(), "{plant:?}");
    let (script, pidfile) = sb.demo_script("web", free_port(), 0);
    let pfile = sb.pfile(&format!(
        "control_socket = {}\n{DEMO} {} 3 pidfile={}\n",
        sock.display(),
        script.display(),
        pidfile.display()
    ));
    let t0 = Instant::now();
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    let code = pc.wait_exit(T);
    assert_eq!(code, Some(2), "{:?}", pc.seen);
    // The line may still be on its way from pcheck's stderr.
    let refused = pc.seen_or_wait("refusing control socket directory", T);
    assert!(
        refused.contains(&format!(
            "refusing control socket directory {}: control socket directory is owned by {ATTACKER}",
            run.display()
        )),
        "{refused}"
    );
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "root's data\n"
    );
    assert_eq!(sb.runs("web"), 0);
    attack_row(
        7,
        "lock/state file in a user's directory (planted symlink)",
        "refused at start, target untouched",
        "exit 2 naming the directory and owner",
        Some(t0.elapsed()),
    );
}

/// A pfile for the reboot tests: one entry that never starts, a harmless reboot
/// command that counts its runs and dumps its environment.
fn reboot_pfile(sb: &Sandbox, state_dir: &Path, limit: u32) -> (PathBuf, PathBuf) {
    let reboots = sb.file("reboots");
    let cmd = sb.script(
        "reboot.sh",
        &format!(
            "echo reboot >> {}\nenv > {}",
            reboots.display(),
            sb.file("reboot.env").display()
        ),
    );
    let never = sb.script("never.rc", "exit 1");
    let pfile = sb.pfile(&format!(
        "auto_reboot = on\nreboot_after = 1s\nreboot_limit = {limit}\nreboot_command = {}\nstate_dir = {}\n\
         /usr/sbin/psweb-never {} 0\n",
        cmd.display(),
        state_dir.display(),
        never.display()
    ));
    (pfile, reboots)
}

fn count_lines(p: &Path) -> usize {
    std::fs::read_to_string(p)
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// Findings 8 and 12: the reboot runs only with the count on disk; deleting the
/// state file does not reset the limit (the boot-id record keeps it); the reboot
/// command gets the clean environment.
#[test]
fn reboot_needs_a_durable_count_and_a_clean_environment() {
    let Some(_) = attacker_or_skip("reboot_durable") else {
        return;
    };
    let sb = Sandbox::new();
    let state = sb.file("st");
    let boot = sb.file("boot_id");
    std::fs::write(&boot, "boot-1\n").expect("boot id");
    let (pfile, reboots) = reboot_pfile(&sb, &state, 1);
    let start = |sb: &Sandbox| {
        let mut cmd = Command::new(PCHECK);
        cmd.args(["--syslog", "none", "-f"])
            .arg(&pfile)
            .env("PSWEB_RUN_DIR", sb.run_dir())
            .env("PSWEB_BOOT_ID_FILE", &boot)
            .env("PSWEB_SECRET_OF_PCHECK", "do-not-leak")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        cmd.spawn().expect("pcheck")
    };
    let wait_line = |child: &mut std::process::Child, needle: &str| -> String {
        let err = child.stderr.as_mut().expect("stderr");
        let mut r = BufReader::new(err);
        let mut seen = String::new();
        let deadline = Instant::now() + T;
        loop {
            let mut l = String::new();
            if r.read_line(&mut l).unwrap_or(0) == 0 || Instant::now() > deadline {
                panic!("no {needle:?}; seen:\n{seen}");
            }
            seen.push_str(&l);
            if l.contains(needle) {
                return l;
            }
        }
    };
    let mut first = start(&sb);
    wait_line(&mut first, "reboot command");
    let _ = first.kill();
    let _ = first.wait();
    assert_eq!(count_lines(&reboots), 1);
    let env = std::fs::read_to_string(sb.file("reboot.env")).expect("env");
    assert!(!env.contains("PSWEB_SECRET_OF_PCHECK"), "{env}");
    assert!(env.contains("PATH=/usr/local/sbin:"), "{env}");

    // "Rebooted"; the state file deleted (as root could, or a cleanup): the limit holds.
    std::fs::write(&boot, "boot-2\n").expect("boot id");
    for e in std::fs::read_dir(&state).expect("state").flatten() {
        if e.path().extension().is_some_and(|x| x == "state") {
            std::fs::remove_file(e.path()).expect("rm state");
        }
    }
    let mut second = start(&sb);
    let t0 = Instant::now();
    let held = wait_line(&mut second, "Auto Reboot suppressed");
    assert!(held.contains("reached reboot_limit 1"), "{held}");
    let _ = second.kill();
    let _ = second.wait();
    assert_eq!(count_lines(&reboots), 1, "no second reboot");

    // A state directory that cannot be written (a full file system): no reboot.
    let sb2 = Sandbox::new();
    let full = sb2.file("full");
    std::fs::create_dir_all(&full).expect("mkdir");
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=16k", "psweb-test-full"])
        .arg(&full)
        .status()
        .is_ok_and(|s| s.success());
    struct Umount(PathBuf);
    impl Drop for Umount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    if !mounted {
        skip(
            "reboot_durable",
            "(full disk part) cannot mount a small tmpfs here",
        );
        return;
    }
    let _umount = Umount(full.clone());
    let _ = std::fs::write(full.join("filler"), vec![0u8; 64 * 1024]);
    let (pfile2, reboots2) = reboot_pfile(&sb2, &full, 3);
    let mut third = Command::new(PCHECK)
        .args(["--syslog", "none", "-f"])
        .arg(&pfile2)
        .env("PSWEB_RUN_DIR", sb2.run_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("pcheck");
    let line = wait_line(&mut third, "Auto Reboot cancelled");
    assert!(line.contains("could not be written"), "{line}");
    let _ = third.kill();
    let _ = third.wait();
    assert_eq!(
        count_lines(&reboots2),
        0,
        "no reboot without a durable count"
    );
    attack_row(
        8,
        "reboot loop: state file deleted / state dir unwritable",
        "limit holds; no reboot without a durable count",
        "suppressed at the limit; cancelled when unwritable",
        Some(t0.elapsed()),
    );
    attack_row(
        12,
        "reboot_command environment",
        "clean (PATH, LANG only)",
        "pcheck's environment not inherited",
        None,
    );
}

/// Finding 9: a token in a webhook URL's path and query never reaches the log or
/// the metrics (which any local user can read); credentials in a URL are not
/// echoed; `webhook_header_file` carries the secret instead.
#[test]
fn webhook_secrets_stay_in_pcheck() {
    let Some(_) = attacker_or_skip("webhook_secrets") else {
        return;
    };
    let sb = Sandbox::new();
    let recv = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let hook_port = recv.local_addr().expect("addr").port();
    let got = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let got2 = std::sync::Arc::clone(&got);
    std::thread::spawn(move || {
        for s in recv.incoming() {
            let Ok(mut s) = s else { continue };
            let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
            let mut buf = [0u8; 8192];
            let n = s.read(&mut buf).unwrap_or(0);
            got2.lock()
                .expect("lock")
                .push_str(&String::from_utf8_lossy(&buf[..n]));
            // Refuse, so that pcheck gives up and logs the drop (with the URL).
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n");
        }
    });
    let headers = sb.file("hook.headers");
    std::fs::write(&headers, "Authorization: Bearer hdr-s3cr3t\n").expect("headers");
    std::fs::set_permissions(&headers, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let mport = free_port();
    let port = free_port();
    let (script, pidfile) = sb.demo_script("web", port, 0);
    let pfile = sb.pfile(&format!(
        "webhook = http://127.0.0.1:{hook_port}/hooks/path-s3cr3t?token=query-s3cr3t\n\
         webhook_header_file = {}\nmetrics_listen = 127.0.0.1:{mport}\n\
         {DEMO} {} 3 pidfile={}\n",
        headers.display(),
        script.display(),
        pidfile.display()
    ));
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    pc.seen_or_wait("Started Process", T);
    pc.seen_or_wait("dropped after", T);
    // Any local user reads the metrics.
    let metrics = as_attacker(&format!(
        "exec 3<>/dev/tcp/127.0.0.1/{mport} 2>/dev/null || exit 1; printf 'GET /metrics HTTP/1.0\\r\\n\\r\\n' >&3; cat <&3"
    ));
    let metrics = if metrics.status.success() {
        String::from_utf8_lossy(&metrics.stdout).into_owned()
    } else {
        // sh without /dev/tcp: read them as root; the content is what matters.
        let mut s = std::net::TcpStream::connect(("127.0.0.1", mport)).expect("metrics");
        s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").expect("get");
        let mut m = String::new();
        let _ = s.read_to_string(&mut m);
        m
    };
    pc.drain();
    let log = pc.seen.join("\n");
    for secret in ["path-s3cr3t", "query-s3cr3t", "hdr-s3cr3t"] {
        assert!(!log.contains(secret), "{secret} in the log:\n{log}");
        assert!(
            !metrics.contains(secret),
            "{secret} in the metrics:\n{metrics}"
        );
    }
    assert!(
        log.contains(&format!("http://127.0.0.1:{hook_port}")),
        "the webhook is named by scheme://host:port: {log}"
    );
    let req = got.lock().expect("lock").clone();
    assert!(
        req.contains("Authorization: Bearer hdr-s3cr3t\r\n"),
        "{req}"
    );
    assert!(
        req.starts_with("POST /hooks/path-s3cr3t?token=query-s3cr3t "),
        "{req}"
    );

    let bad = sb.file("bad.pfile");
    std::fs::write(&bad, "webhook = http://ops:pw-s3cr3t@127.0.0.1/x\n").expect("write");
    let out = check(&sb, &bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        !err.contains("pw-s3cr3t") && err.contains("credentials"),
        "{err}"
    );
    attack_row(
        9,
        "token in webhook URL path/query; user:pw@ in URL",
        "never logged, labelled or echoed",
        "scheme://host:port only; header file used",
        None,
    );
}

/// Finding 10: metrics on 0.0.0.0 is a `--check` warning unless `metrics_allow`
/// limits it; a peer outside `metrics_allow` gets nothing.
#[test]
fn open_metrics_listener_is_warned_about_and_can_be_limited() {
    let Some(_) = attacker_or_skip("metrics_open") else {
        return;
    };
    let sb = Sandbox::new();
    let (script, pidfile) = sb.demo_script("web", free_port(), 0);
    let mport = free_port();
    let entry = format!(
        "{DEMO} {} 3 pidfile={}\n",
        script.display(),
        pidfile.display()
    );
    let pfile = sb.pfile(&format!("metrics_listen = 0.0.0.0:{mport}\n{entry}"));
    let out = check(&sb, &pfile);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(err.contains("is not a loopback address"), "{err}");
    std::fs::write(
        &pfile,
        format!("metrics_listen = 0.0.0.0:{mport}\nmetrics_allow = 192.0.2.0/24\n{entry}"),
    )
    .expect("write");
    let out = check(&sb, &pfile);
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("loopback"),
        "{out:?}"
    );
    let mut pc = Pcheck::start(&sb, &pfile, &[]);
    pc.wait_for("Started Process", T);
    let mut s = std::net::TcpStream::connect(("127.0.0.1", mport)).expect("connect");
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
    let mut m = String::new();
    let _ = s.read_to_string(&mut m);
    assert!(m.is_empty(), "a peer outside metrics_allow got: {m}");
    attack_row(
        10,
        "metrics_listen on 0.0.0.0",
        "--check warning; metrics_allow enforced",
        "warned; outside peer closed",
        None,
    );
}
