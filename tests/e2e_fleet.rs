//! The fleet against a real etcd (Debian's etcd 3.4, started on loopback with a
//! temporary data dir): pchecks as "hosts" (distinct fleet_host, own state dirs),
//! each watching its own demo server. The reboot command is harmless: it records the
//! time and ends that pcheck; the test then starts it again as the rebooted host.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

mod common;
#[path = "common/etcd.rs"]
mod etcd;
use common::*;
use etcd::{etcd_or_skip, Etcd};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

const T: Duration = Duration::from_secs(60);

/// One "host": its sandbox (state dir, control socket), demo server and pcheck.
struct Host {
    sb: Sandbox,
    name: String,
    port: u16,
    pfile: PathBuf,
    pc: Option<Pcheck>,
    /// Reboots the harmless reboot command recorded (ns since the epoch).
    seen_reboots: usize,
}

impl Host {
    fn new(name: &str, etcd: &Etcd, fleet: &str, extra: &str) -> Self {
        Self::with_block(name, etcd, fleet, extra, "")
    }

    /// A host whose entry has `block` (a stall check; PORT: its server's port) after it.
    fn with_block(name: &str, etcd: &Etcd, fleet: &str, extra: &str, block: &str) -> Self {
        let sb = Sandbox::new();
        let port = free_port();
        let pidfile = sb.file("web.pid");
        let script = sb.script(
            "web.rc",
            &format!(
                "[ -e {broken} ] && exit 1\nexec {DEMO} --port {port} --workers 0 --pidfile {pid} --daemon",
                broken = sb.file("broken").display(),
                pid = pidfile.display()
            ),
        );
        let reboot = sb.script(
            "reboot.sh",
            &format!(
                "date +%s%N >> {}\nkill -TERM $PPID",
                sb.file("rebooted").display()
            ),
        );
        let after = if extra.contains("reboot_after") {
            ""
        } else {
            "reboot_after = 1s\n"
        };
        let pfile = sb.pfile(&format!(
            "auto_reboot = on\n{after}reboot_limit = 10\nreboot_command = {reboot}\nretry_delay = 300ms\n\
             fleet_etcd = {url}\nfleet_name = {fleet}\nfleet_host = {name}\nfleet_lease_ttl = 3s\n{extra}\n\
             {DEMO} {script} 1000 pidfile={pid} retry_over_action=continue\n{block}",
            block = block.replace("PORT", &port.to_string()),
            reboot = reboot.display(),
            url = etcd.url(),
            script = script.display(),
            pid = pidfile.display()
        ));
        Self {
            sb,
            name: name.to_string(),
            port,
            pfile,
            pc: None,
            seen_reboots: 0,
        }
    }

    fn start(&mut self) {
        let mut pc = Pcheck::start(&self.sb, &self.pfile, &["--evidence", "pidfd"]);
        pc.wait_for("Started Process", T);
        self.pc = Some(pc);
    }

    fn pc(&mut self) -> &mut Pcheck {
        self.pc.as_mut().expect("pcheck runs")
    }

    /// Breaks the server: its restarts fail until `fix`.
    fn break_server(&mut self) {
        std::fs::write(self.sb.file("broken"), "").expect("touch");
        for p in demo_pids(&self.sb) {
            kill(p, libc::SIGKILL);
        }
    }

    fn fix(&self) {
        let _ = std::fs::remove_file(self.sb.file("broken"));
    }

    fn reboots(&self) -> Vec<u128> {
        std::fs::read_to_string(self.sb.file("rebooted"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }
}

/// The metrics page of a pcheck (classic text format).
fn metrics_text(port: u16) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("metrics");
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")
        .expect("request");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_nanos()
}

fn fleet_name(test: &str) -> String {
    format!("{test}-{}", std::process::id())
}

/// A fleet test's prerequisites and its etcd: (the etcd's sandbox, etcd on loopback, a
/// fleet name of its own); None when the test is skipped.
fn fleet_test(test: &str, fleet: &str) -> Option<(Sandbox, Etcd, String)> {
    if !root_or_skip(test) || !etcd_or_skip(test) {
        return None;
    }
    let esb = Sandbox::new();
    let etcd = Etcd::start(&esb, &[]);
    Some((esb, etcd, fleet_name(fleet)))
}

/// Waits for the next host (of `hosts`) to run its reboot command; returns its index.
fn next_reboot(hosts: &mut [Host], timeout: Duration) -> usize {
    let deadline = Instant::now() + timeout;
    loop {
        for (i, h) in hosts.iter_mut().enumerate() {
            if h.reboots().len() > h.seen_reboots {
                h.seen_reboots += 1;
                return i;
            }
            if let Some(pc) = h.pc.as_mut() {
                pc.drain();
            }
        }
        assert!(Instant::now() < deadline, "no reboot within {timeout:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Reboots one host after another, as the fleet lets them: each "reboot" ends that
/// pcheck; a while later the host comes back fixed. Asserts that no other host
/// reboots while one is down, and that the next reboot comes only after the last
/// rebooted host was started again and gave its slot back.
fn reboot_one_by_one(hosts: &mut [Host], which: &[usize]) {
    let mut back_at: Option<u128> = None;
    let mut done = Vec::new();
    while done.len() < which.len() {
        let i = next_reboot(hosts, T);
        assert!(
            which.contains(&i) && !done.contains(&i),
            "host {i} rebooted: expected one of {which:?} once"
        );
        let t = *hosts[i].reboots().last().expect("a reboot time");
        if let Some(b) = back_at {
            assert!(
                t > b,
                "host {} rebooted before the last rebooted host was back",
                hosts[i].name
            );
        }
        hosts[i].pc().wait_exit(T);
        hosts[i].pc = None;
        // The host is "down" a while: its slot holds, nobody else reboots.
        let before: Vec<usize> = hosts.iter().map(|h| h.reboots().len()).collect();
        std::thread::sleep(Duration::from_millis(2500));
        let after: Vec<usize> = hosts.iter().map(|h| h.reboots().len()).collect();
        assert_eq!(
            before, after,
            "no reboot while host {} is rebooting",
            hosts[i].name
        );
        hosts[i].fix();
        back_at = Some(now_ns());
        hosts[i].start();
        let released = hosts[i].pc().wait_for("Fleet reboot slot released", T);
        assert!(released.contains("healthy again"), "{released}");
        assert!(
            http_ok(hosts[i].port),
            "host {} serves again",
            hosts[i].name
        );
        done.push(i);
    }
}

#[test]
fn four_hosts_fatal_at_once_reboot_one_at_a_time() {
    let Some((_esb, etcd, fleet)) = fleet_test("fleet_one_at_a_time", "serial") else {
        return;
    };
    let mut hosts: Vec<Host> = (0..4)
        .map(|i| {
            Host::new(
                &format!("h{i}"),
                &etcd,
                &fleet,
                "fleet_max_rebooting = 1\nfleet_hold_ratio = 2",
            )
        })
        .collect();
    for h in &mut hosts {
        h.start();
    }
    for h in &mut hosts {
        h.break_server();
    }
    reboot_one_by_one(&mut hosts, &[0, 1, 2, 3]);
    for h in &mut hosts {
        assert_eq!(h.reboots().len(), 1, "host {} rebooted once", h.name);
        assert!(http_ok(h.port));
        h.pc().drain();
        assert!(!h
            .pc()
            .seen
            .iter()
            .any(|l| l.contains("Fleet Outage Suspected")));
    }
}

#[test]
fn a_fleet_wide_failure_holds_reboots_until_half_recover() {
    let Some((_esb, etcd, fleet)) = fleet_test("fleet_outage_hold", "outage") else {
        return;
    };
    // reboot_after 3s: every host has reported its failure before any reboot is due.
    // h0 and h2 serve metrics: the hold is a gauge and the held reboots a counter.
    let (metrics, metrics2) = (free_port(), free_port());
    let mut hosts: Vec<Host> = (0..4)
        .map(|i| {
            let m = match i {
                0 => format!("\nmetrics_listen = 127.0.0.1:{metrics}"),
                2 => format!("\nmetrics_listen = 127.0.0.1:{metrics2}"),
                _ => String::new(),
            };
            Host::new(
                &format!("h{i}"),
                &etcd,
                &fleet,
                &format!("reboot_after = 3s{m}"),
            )
        })
        .collect();
    for h in &mut hosts {
        h.start();
    }
    for h in &mut hosts {
        h.break_server();
    }
    for h in &mut hosts {
        let line = h.pc().wait_for("Fleet Outage Suspected", T);
        assert!(
            line.contains(&format!("fleet= {fleet} unhealthy= ")),
            "{line}"
        );
        let k: usize = line
            .split("unhealthy= ")
            .nth(1)
            .and_then(|s| s.split('/').next())
            .and_then(|s| s.parse().ok())
            .expect("k/n");
        assert!(k > 2, "{line}");
        h.pc().seen_or_wait("Auto Reboot held", T);
    }
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        hosts.iter().all(|h| h.reboots().is_empty()),
        "no reboot while held"
    );
    let scrape = metrics_text(metrics);
    assert!(scrape.contains("\npsweb_fleet_hold 1"), "{scrape}");
    assert!(
        scrape.contains("\npsweb_fleet_reboot_held_total 1"),
        "{scrape}"
    );
    // Two hosts recover: 2 of 4 is not more than half: the other two reboot, one by one.
    hosts[2].fix();
    hosts[3].fix();
    hosts[0].pc().wait_for("Fleet outage over", T);
    assert!(metrics_text(metrics).contains("\npsweb_fleet_hold 0"));
    reboot_one_by_one(&mut hosts, &[0, 1]);
    for h in &mut hosts {
        assert!(http_ok(h.port), "host {} serves", h.name);
    }
    assert!(hosts[2].reboots().is_empty() && hosts[3].reboots().is_empty());
    // The recovered hosts' held reboots are no longer due: their holds end (the
    // event resolves their reboot_held alert).
    // Nothing of theirs is held any more, yet they announced the outage: its end is
    // theirs to say too, and the hold gauge falls back.
    for h in &mut hosts[2..] {
        h.pc().seen_or_wait("Auto Reboot no longer held", T);
        h.pc().seen_or_wait("Fleet outage over", T);
    }
    let scrape = metrics_text(metrics2);
    assert!(scrape.contains("\npsweb_fleet_hold 0"), "{scrape}");
}

#[test]
fn a_slot_whose_host_never_comes_back_expires() {
    let Some((_esb, etcd, fleet)) = fleet_test("fleet_slot_expiry", "expiry") else {
        return;
    };
    let mut hosts: Vec<Host> = (0..2)
        .map(|i| {
            Host::new(
                &format!("h{i}"),
                &etcd,
                &fleet,
                "fleet_hold_ratio = 2\nfleet_reboot_ttl = 4s",
            )
        })
        .collect();
    for h in &mut hosts {
        h.start();
    }
    for h in &mut hosts {
        h.break_server();
    }
    let first = next_reboot(&mut hosts, T);
    let t0 = Instant::now();
    hosts[first].pc().wait_exit(T);
    hosts[first].pc = None;
    // It never comes back; the other host waits for the slot to expire.
    let other = 1 - first;
    hosts[other].pc().seen_or_wait("Auto Reboot held", T);
    let second = next_reboot(&mut hosts, T);
    let waited = t0.elapsed();
    assert_eq!(second, other);
    assert!(
        waited >= Duration::from_secs(3),
        "the slot held until fleet_reboot_ttl (4 s): {waited:?}"
    );
    eprintln!("slot expired and the next host rebooted after {waited:?}");
}

#[test]
fn etcd_away_holds_reboots_but_never_monitoring() {
    let Some((_esb, mut etcd, fleet)) = fleet_test("fleet_etcd_away", "away") else {
        return;
    };
    let mut h = Host::new("h0", &etcd, &fleet, "fleet_hold_ratio = 2");
    h.start();
    etcd.stop();
    h.pc().wait_for("Fleet etcd unreachable", T);
    // Monitoring and death restarts go on.
    let pid = demo_pids(&h.sb)[0];
    kill(pid, libc::SIGKILL);
    h.pc().wait_for("Restarted Process", T);
    assert!(http_ok(h.port));
    // A fatal fault: the reboot waits for etcd (fleet_unreachable = hold).
    h.break_server();
    let held = h.pc().wait_for("Auto Reboot held", T);
    assert!(held.contains("etcd cannot be reached"), "{held}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(h.reboots().is_empty(), "no reboot while etcd is away");
    etcd.run();
    h.pc().wait_for("Fleet etcd reachable again", T);
    h.pc().wait_for("Fleet reboot slot granted", T);
    next_reboot(std::slice::from_mut(&mut h), T);
    h.pc().wait_exit(T);
    let pc = h.pc.take().expect("pcheck");
    let count = |s: &str| pc.seen.iter().filter(|l| l.contains(s)).count();
    assert_eq!(
        count("Fleet etcd unreachable"),
        1,
        "one line when etcd goes"
    );
    assert_eq!(
        count("Fleet etcd reachable again"),
        1,
        "one line when it is back"
    );
}

#[test]
fn two_hosts_racing_for_the_last_slot_never_both_get_it() {
    if !etcd_or_skip("fleet_race") {
        return;
    }
    let esb = Sandbox::new();
    let etcd = Etcd::start(&esb, &[]);
    let cfg = psweb::pfile::FleetCfg {
        endpoints: vec![etcd.url()],
        name: fleet_name("race"),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let mut a = psweb::fleet::etcd::Conn::connect(&cfg)
            .await
            .expect("connect");
        let mut b = psweb::fleet::etcd::Conn::connect(&cfg)
            .await
            .expect("connect");
        let ttl = Duration::from_secs(60);
        for round in 0..100 {
            let (ra, rb) = tokio::join!(
                a.take_slot("reboot", "a", &[0], ttl),
                b.take_slot("reboot", "b", &[0], ttl)
            );
            let (ra, rb) = (ra.expect("txn a"), rb.expect("txn b"));
            assert!(
                ra.is_some() != rb.is_some(),
                "round {round}: exactly one host gets the last slot ({ra:?}, {rb:?})"
            );
            let view = a.view(1).await.expect("view");
            assert_eq!(view.slots.len(), 1, "round {round}: {view:?}");
            assert!(a.release_slot("reboot", 0, None).await.expect("release"));
        }
    });
}

#[test]
fn operators_hold_resume_and_free_slots_from_padmin() {
    let Some((_esb, etcd, fleet)) = fleet_test("fleet_padmin", "padmin") else {
        return;
    };
    // The second host asks for another budget: the fleet's stored one wins.
    let mut hosts: Vec<Host> = (0..2)
        .map(|i| {
            let budget = if i == 0 {
                ""
            } else {
                "\nfleet_max_rebooting = 2"
            };
            Host::new(
                &format!("h{i}"),
                &etcd,
                &fleet,
                &format!("fleet_hold_ratio = 2{budget}"),
            )
        })
        .collect();
    for h in &mut hosts {
        h.start();
    }
    let mismatch = hosts[1]
        .pc()
        .seen_or_wait("fleet_max_rebooting = 2 here", T);
    assert!(mismatch.contains("using 1"), "{mismatch}");
    // Both members up (their health reaches etcd within a tick).
    wait_fleet(&mut hosts[0], "two members up", |v| {
        let members = v["members"].as_array().cloned().unwrap_or_default();
        members.len() == 2 && members.iter().all(|m| m["health"] == "up")
    });
    let text = hosts[0].pc().padmin(&["-c", "show fleet"]);
    let text = String::from_utf8_lossy(&text.stdout).to_string();
    assert!(text.contains("member") && text.contains("h1"), "{text}");

    // A hold from one host is logged on every member and holds reboots.
    let out = hosts[0].pc().padmin(&["-c", "fleet hold"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for h in &mut hosts {
        h.pc().wait_for("Fleet hold: fleet=", T);
    }
    hosts[1].break_server();
    let held = hosts[1].pc().wait_for("Auto Reboot held", T);
    assert!(held.contains("by an operator"), "{held}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(hosts[1].reboots().is_empty());
    let out = hosts[0].pc().padmin(&["-c", "fleet resume"]);
    assert!(out.status.success());
    for h in &mut hosts {
        h.pc().wait_for("Fleet resume: fleet=", T);
    }
    // The reboot goes on; the host never comes back; an operator frees its slot.
    next_reboot(&mut hosts[1..], T);
    hosts[1].pc().wait_exit(T);
    hosts[1].pc = None;
    let v = show_fleet(&mut hosts[0]);
    assert_eq!(v["max_rebooting"], 1, "{v}");
    assert_eq!(v["slots"][0]["host"], "h1", "{v}");
    assert!(
        v["slots"][0]["expires_in_s"]
            .as_i64()
            .is_some_and(|s| s > 0),
        "{v}"
    );
    let out = hosts[0]
        .pc()
        .padmin(&["-c", "fleet", "release", "--host", "h1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = hosts[0].pc().wait_for("Fleet reboot slot released", T);
    assert!(
        line.contains("host= h1") && line.contains("by an operator"),
        "{line}"
    );
    let v = show_fleet(&mut hosts[0]);
    assert_eq!(v["slots"].as_array().map(Vec::len), Some(0), "{v}");
}

#[test]
fn an_expired_auth_token_is_renewed_by_connecting_again() {
    if !root_or_skip("fleet_auth") || !etcd_or_skip("fleet_auth") {
        return;
    }
    let esb = Sandbox::new();
    let etcd = Etcd::start(&esb, &["--auth-token-ttl", "2"]);
    expired_tokens_are_renewed(&esb, &etcd, &fleet_name("auth"), None);
}

#[test]
fn tls_and_auth_together_renew_an_expired_token() {
    if !root_or_skip("fleet_tls_auth") || !etcd_or_skip("fleet_tls_auth") {
        return;
    }
    let esb = Sandbox::new();
    let (etcd, keys) = tls_etcd(&esb, &["--auth-token-ttl", "2"]);
    expired_tokens_are_renewed(&esb, &etcd, &fleet_name("tls-auth"), Some(&keys));
}

/// etcd with auth on (user root) and a short token TTL: a pcheck authenticating as
/// root (`tls`: its TLS keys too) renews its expired token by connecting again.
fn expired_tokens_are_renewed(esb: &Sandbox, etcd: &Etcd, fleet: &str, tls: Option<&TlsKeys>) {
    // The test's own client turns auth on, over TLS when etcd wants it.
    let cfg = psweb::pfile::FleetCfg {
        endpoints: vec![etcd.url()],
        name: fleet.to_string(),
        tls_ca: tls.map(|t| t.ca.clone()),
        tls_cert: tls.map(|t| t.cert.clone()),
        tls_key: tls.map(|t| t.key.clone()),
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("rt");
    rt.block_on(async {
        let mut c = psweb::fleet::etcd::Conn::connect(&cfg)
            .await
            .expect("connect")
            .client;
        c.user_add("root", "s3cret", None).await.expect("user");
        c.role_add("root").await.expect("role");
        c.user_grant_role("root", "root").await.expect("grant");
        c.auth_enable().await.expect("auth on");
    });
    let pw = esb.file("etcd-password");
    std::fs::write(&pw, "s3cret\n").expect("password file");
    // A secret is read only from a file of root's own (mode 600).
    std::fs::set_permissions(&pw, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let mut h = Host::new(
        "h0",
        etcd,
        fleet,
        &format!(
            "fleet_user = root\nfleet_password_file = {}\n{}",
            pw.display(),
            tls.map(TlsKeys::lines).unwrap_or_default()
        ),
    );
    h.start();
    let health = |h: &mut Host| -> String {
        let out = h.pc().padmin(&["-c", "show fleet", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v["fleet"]["members"][0]["health"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    let wait_health = |h: &mut Host, want: &str| {
        let deadline = Instant::now() + T;
        while health(h) != want {
            assert!(Instant::now() < deadline, "member health {want}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_health(&mut h, "up");
    // Idle longer than the token's TTL (lease keep-alives do not renew it): the next
    // change finds the token expired; pcheck connects (and authenticates) again.
    std::thread::sleep(Duration::from_secs(4));
    kill(demo_pids(&h.sb)[0], libc::SIGKILL);
    h.pc().wait_for("Restarted Process", T);
    std::thread::sleep(Duration::from_secs(4));
    h.break_server();
    wait_health(&mut h, "restarting");
    h.pc().drain();
    let refused = h
        .pc()
        .seen
        .iter()
        .filter(|l| l.contains("refused the authentication token"))
        .count();
    eprintln!("token refusals seen: {refused}");
    assert!(refused >= 1, "the expired token was met and renewed");
    assert!(
        !h.pc()
            .seen
            .iter()
            .any(|l| l.contains("Fleet etcd unreachable")),
        "a renewed token is not an unreachable etcd"
    );
}

#[test]
fn without_a_durable_reboot_count_the_slot_goes_back() {
    let Some((_esb, etcd, fleet)) = fleet_test("fleet_give_back", "giveback") else {
        return;
    };
    let mut h = Host::new("h0", &etcd, &fleet, "fleet_hold_ratio = 2");
    // A directory where the state file belongs: no count can be written.
    let store = psweb::state::Store::new(&h.sb.file("state"), &h.pfile);
    std::fs::create_dir_all(store.path()).expect("a directory in the state file's place");
    h.start();
    h.break_server();
    h.pc().wait_for("Fleet reboot slot granted", T);
    let back = h.pc().wait_for("Fleet reboot slot released", T);
    assert!(back.contains("could not be written"), "{back}");
    std::thread::sleep(Duration::from_secs(2));
    assert!(h.reboots().is_empty(), "no reboot without a durable count");
    h.pc().drain();
    let granted = h
        .pc()
        .seen
        .iter()
        .filter(|l| l.contains("slot granted"))
        .count();
    assert_eq!(granted, 1, "the slot is not taken again");
}

/// A CA, and certificates it signs: (CA PEM path, (cert, key) paths) written to `dir`.
fn tls_files(
    sb: &Sandbox,
    name: &str,
    sans: &[&str],
    ca: &(rcgen::Certificate, rcgen::KeyPair),
) -> (PathBuf, PathBuf) {
    let key = rcgen::KeyPair::generate().expect("key");
    let params =
        rcgen::CertificateParams::new(sans.iter().map(|s| (*s).to_string()).collect::<Vec<_>>())
            .expect("params");
    let cert = params.signed_by(&key, &ca.0, &ca.1).expect("sign");
    let (c, k) = (
        sb.file(&format!("{name}.pem")),
        sb.file(&format!("{name}.key")),
    );
    std::fs::write(&c, cert.pem()).expect("cert");
    std::fs::write(&k, key.serialize_pem()).expect("key");
    std::fs::set_permissions(&k, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    (c, k)
}

/// A TLS client's files: the CA it trusts, its certificate and its key.
struct TlsKeys {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl TlsKeys {
    /// The pfile keys naming these files.
    fn lines(&self) -> String {
        format!(
            "fleet_tls_ca = {}\nfleet_tls_cert = {}\nfleet_tls_key = {}",
            self.ca.display(),
            self.cert.display(),
            self.key.display()
        )
    }
}

/// An etcd over TLS that wants a client certificate (`extra`: more etcd arguments),
/// and the files of a client with its certificate.
fn tls_etcd(esb: &Sandbox, extra: &[&str]) -> (Etcd, TlsKeys) {
    let ca_key = rcgen::KeyPair::generate().expect("ca key");
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "psweb test CA");
    let ca_cert = ca_params.self_signed(&ca_key).expect("ca");
    let ca_path = esb.file("ca.pem");
    std::fs::write(&ca_path, ca_cert.pem()).expect("ca pem");
    let ca = (ca_cert, ca_key);
    let server = tls_files(esb, "server", &["127.0.0.1", "localhost"], &ca);
    let client = tls_files(esb, "client", &["psweb"], &ca);
    let etcd = Etcd::start_tls(
        esb,
        &ca_path,
        (&server.0, &server.1),
        (
            std::fs::read_to_string(&client.0).expect("client cert"),
            std::fs::read_to_string(&client.1).expect("client key"),
        ),
        extra,
    );
    assert!(etcd.url().starts_with("https://"));
    let keys = TlsKeys {
        ca: ca_path,
        cert: client.0,
        key: client.1,
    };
    (etcd, keys)
}

#[test]
fn etcd_over_tls_with_a_client_certificate() {
    if !root_or_skip("fleet_tls") || !etcd_or_skip("fleet_tls") {
        return;
    }
    let esb = Sandbox::new();
    let (etcd, keys) = tls_etcd(&esb, &[]);
    let fleet = fleet_name("tls");
    let mut h = Host::new("h0", &etcd, &fleet, &keys.lines());
    h.start();
    let deadline = Instant::now() + T;
    loop {
        let out = h.pc().padmin(&["-c", "show fleet", "--json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if v["fleet"]["members"][0]["health"] == "up" {
            break;
        }
        assert!(Instant::now() < deadline, "a member over TLS: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
    h.pc().drain();
    assert!(!h
        .pc()
        .seen
        .iter()
        .any(|l| l.contains("Fleet etcd unreachable")));
}

/// A host with a stall check on its demo server (probe interval 10 s, verdict 10 s
/// after the first failed probe), in a fleet with a restart budget, and reboots far
/// off (a stalled entry is down).
fn stall_host(name: &str, etcd: &Etcd, fleet: &str, extra: &str) -> Host {
    stall_host_with(name, etcd, fleet, &format!("fleet_hold_ratio = 2\n{extra}"))
}

/// `stall_host` with the fleet's default hold ratio unless `extra` sets one.
fn stall_host_with(name: &str, etcd: &Etcd, fleet: &str, extra: &str) -> Host {
    Host::with_block(
        name,
        etcd,
        fleet,
        &format!("reboot_after = 1h\n{extra}"),
        &stall_block("_bi_webserv", "10:0:2:10:PORT", 1, ""),
    )
}

/// `padmin -c show fleet --json` of a host: the `fleet` object.
fn show_fleet(h: &mut Host) -> serde_json::Value {
    let out = h.pc().padmin(&["-c", "show fleet", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("json")["fleet"].clone()
}

/// Asks `show fleet` of `h` until `ok` holds of its answer.
fn wait_fleet(
    h: &mut Host,
    what: &str,
    ok: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = Instant::now() + T;
    loop {
        let v = show_fleet(h);
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: {v}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The Alertmanager alerts a webhook received so far: (alertname, fired, summary);
/// `fired` is false for a resolution (its `endsAt` is not a day ahead).
fn alerts(
    hook: &std::sync::mpsc::Receiver<(u64, serde_json::Value)>,
    seen: &mut Vec<(String, bool, String)>,
) {
    while let Ok((_, body)) = hook.try_recv() {
        for a in body.as_array().cloned().unwrap_or_default() {
            let name = a["labels"]["alertname"].as_str().unwrap_or("").to_string();
            let summary = a["annotations"]["summary"]
                .as_str()
                .unwrap_or("")
                .to_string();
            let (starts, ends) = (
                a["startsAt"].as_str().unwrap_or(""),
                a["endsAt"].as_str().unwrap_or(""),
            );
            // A problem ends a day after it starts; a resolution when it is sent.
            let fired = ends.get(..10) != starts.get(..10);
            seen.push((name, fired, summary));
        }
    }
}

/// The demo server's pid of a host, once its stall check answered.
fn stall_ready(h: &mut Host) -> i32 {
    h.start();
    h.pc().wait_for("stall_chk (web) of pent_id= 1", T);
    pid_of(&h.pc().entry(1))
}

#[test]
fn stall_restarts_take_turns_in_the_restart_budget() {
    let Some((_esb, etcd, fleet)) = fleet_test("fleet_restart_budget", "restarts") else {
        return;
    };
    let mut hosts: Vec<Host> = (0..2)
        .map(|i| stall_host(&format!("s{i}"), &etcd, &fleet, "fleet_max_restarting = 1"))
        .collect();
    let pids: Vec<i32> = hosts.iter_mut().map(stall_ready).collect();
    for p in &pids {
        kill(*p, libc::SIGSTOP);
    }
    // Both stall; one takes the slot, the other holds its kill naming the holder.
    let deadline = Instant::now() + Duration::from_secs(120);
    let first = loop {
        let mut got = None;
        for (i, h) in hosts.iter_mut().enumerate() {
            h.pc().drain();
            if h.pc()
                .seen
                .iter()
                .any(|l| l.contains("Fleet restart slot granted"))
            {
                got = Some(i);
            }
        }
        if let Some(i) = got {
            break i;
        }
        assert!(Instant::now() < deadline, "no restart slot granted");
        std::thread::sleep(Duration::from_millis(50));
    };
    let second = 1 - first;
    let first_name = hosts[first].name.clone();
    let held = hosts[second].pc().seen_or_wait("Stall Restart held", T);
    assert!(
        held.contains(&format!("every restart slot is taken (by {first_name})")),
        "{held}"
    );
    assert!(
        alive(pids[second]),
        "the held host's stalled server is not killed"
    );
    hosts[first]
        .pc()
        .seen_or_wait(&format!("Killed Process: pid= {}", pids[first]), T);
    // The second kill waits until the first host's server is healthy again.
    let granted = hosts[second].pc().wait_for("Fleet restart slot granted", T);
    assert!(granted.contains(&format!("host= s{second}")), "{granted}");
    let released = hosts[first]
        .pc()
        .seen_or_wait("Fleet restart slot released", T);
    assert!(released.contains("healthy again"), "{released}");
    assert!(http_ok(hosts[first].port), "the first host serves again");
    let killed = hosts[second]
        .pc()
        .wait_for(&format!("Killed Process: pid= {}", pids[second]), T);
    let seen = &hosts[second].pc().seen;
    let at = |needle: &str| seen.iter().position(|l| l.contains(needle));
    assert!(
        at("Fleet restart slot granted") < at(&killed),
        "the held host kills only after its grant"
    );
    hosts[second]
        .pc()
        .wait_for("stall_chk (web) of pent_id= 1", T);
    hosts[second]
        .pc()
        .wait_for("Fleet restart slot released", T);
    assert!(http_ok(hosts[second].port), "the second host serves again");
}

#[test]
fn a_death_is_restarted_at_once_while_the_restart_budget_is_full() {
    let Some((_esb, etcd, fleet)) = fleet_test("fleet_restart_death", "restart-death") else {
        return;
    };
    // A budget of 0: no stall-restart ever gets a slot.
    let mut h = stall_host("d0", &etcd, &fleet, "fleet_max_restarting = 0");
    let pid = stall_ready(&mut h);
    kill(pid, libc::SIGSTOP);
    let held = h
        .pc()
        .wait_for("Stall Restart held", Duration::from_secs(120));
    assert!(held.contains("fleet_max_restarting is 0"), "{held}");
    assert!(alive(pid), "the stalled server is held, not killed");
    let out = h.pc().padmin(&["-c", "show fleet", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(v["fleet"]["max_restarting"], 0, "{v}");
    assert_eq!(v["fleet"]["restart_slots"], serde_json::json!([]), "{v}");
    let text = String::from_utf8_lossy(&h.pc().padmin(&["-c", "show fleet"]).stdout).to_string();
    assert!(
        text.lines()
            .any(|l| l.starts_with("max_restarting") && l.ends_with("= 0")),
        "{text}"
    );
    let t = Instant::now();
    kill(pid, libc::SIGKILL);
    h.pc().wait_for("Restarted Process", T);
    let took = t.elapsed();
    println!(
        "death with the restart budget full -> restarted in {} ms",
        took.as_millis()
    );
    h.pc().wait_for("stall_chk (web) of pent_id= 1", T);
    // The dropped kill ends the hold (and resolves its restart_held alert).
    h.pc().seen_or_wait("Stall Restart no longer held", T);
    assert!(http_ok(h.port), "the restarted server serves");
    h.pc().drain();
    assert!(
        !h.pc().seen.iter().any(|l| l.contains("Killed Process")),
        "the held kill was dropped with the dead process"
    );
}

#[test]
fn an_outage_holds_stall_kills_until_the_share_falls() {
    let Some((_esb, etcd, fleet)) = fleet_test("fleet_restart_outage", "restart-outage") else {
        return;
    };
    // The stalled host sends its alerts to a receiver (Alertmanager's format).
    let (rport, hook) = webhook_receiver();
    let mut s0 = stall_host_with(
        "s0",
        &etcd,
        &fleet,
        &format!(
            "fleet_max_restarting = 1\nwebhook = http://127.0.0.1:{rport}/hook\nwebhook_format = alertmanager"
        ),
    );
    let mut others: Vec<Host> = (1..3)
        .map(|i| Host::new(&format!("h{i}"), &etcd, &fleet, "reboot_after = 1h"))
        .collect();
    let pid = stall_ready(&mut s0);
    for h in &mut others {
        h.start();
    }
    // One host of three fails: no outage yet.
    others[0].break_server();
    wait_fleet(&mut s0, "1 of 3 hosts unhealthy", |v| {
        v["unhealthy"] == 1 && v["hosts"] == 3
    });
    // s0 stalls too: 2 of 3 is more than the default ratio 0.5: the kill is held.
    kill(pid, libc::SIGSTOP);
    let outage = s0
        .pc()
        .wait_for("Fleet Outage Suspected", Duration::from_secs(120));
    assert!(
        outage.contains(&format!("fleet= {fleet} unhealthy= 2/3")),
        "{outage}"
    );
    let held = s0.pc().seen_or_wait("Stall Restart held", T);
    assert!(
        held.contains("2 of 3 hosts are unhealthy (more than fleet_hold_ratio 0.5)"),
        "{held}"
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(alive(pid), "the held stall kill waits");
    s0.pc().drain();
    assert!(
        !s0.pc().seen.iter().any(|l| l.contains("Killed Process")),
        "no kill while the outage holds"
    );
    // h1 recovers: 1 of 3: the hold ends and the kill goes ahead.
    others[0].fix();
    let over = s0.pc().wait_for("Fleet outage over", T);
    assert!(
        over.contains("automatic reboots and stall restarts go on"),
        "{over}"
    );
    s0.pc().wait_for("Fleet restart slot granted", T);
    s0.pc().wait_for(&format!("Killed Process: pid= {pid}"), T);
    s0.pc().wait_for("Fleet restart slot released", T);
    assert!(http_ok(s0.port), "the stalled host serves again");
    // Evented: the hold and the held kill fired alerts, and their own recoveries
    // resolved them (a restart slot, not a reboot slot, ends restart_held).
    let mut seen = Vec::new();
    let deadline = Instant::now() + T;
    let has = |seen: &[(String, bool, String)], name: &str, fired: bool, summary: &str| {
        seen.iter()
            .any(|(n, f, s)| n == name && *f == fired && s.contains(summary))
    };
    loop {
        alerts(&hook, &mut seen);
        if has(
            &seen,
            "psweb_restart_held",
            false,
            "Fleet restart slot granted",
        ) && has(&seen, "psweb_fleet_hold", false, "Fleet outage over")
        {
            break;
        }
        assert!(Instant::now() < deadline, "alerts resolved: {seen:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        has(&seen, "psweb_fleet_hold", true, "Fleet Outage Suspected"),
        "{seen:?}"
    );
    assert!(
        has(&seen, "psweb_restart_held", true, "Stall Restart held"),
        "{seen:?}"
    );
    assert!(
        !seen.iter().any(|(n, f, _)| n == "psweb_reboot_held" && *f),
        "no reboot was held (and a restart slot is no reboot slot): {seen:?}"
    );
}

#[test]
fn etcd_away_holds_stall_kills_with_a_restart_budget_but_never_deaths() {
    let Some((_esb, mut etcd, fleet)) = fleet_test("fleet_restart_away", "restart-away") else {
        return;
    };
    // Two hosts: one holds (the default), one goes on as a lone host.
    let mut hold = stall_host("a0", &etcd, &fleet, "fleet_max_restarting = 1");
    let mut proceed = stall_host(
        "a1",
        &etcd,
        &fleet,
        "fleet_max_restarting = 1\nfleet_unreachable = proceed",
    );
    let pid = stall_ready(&mut hold);
    let pid1 = stall_ready(&mut proceed);
    etcd.stop();
    let away = hold.pc().wait_for("Fleet etcd unreachable", T);
    assert!(
        away.contains(
            "monitoring and death restarts go on, automatic reboots and stall restarts are held"
        ),
        "{away}"
    );
    proceed.pc().wait_for("Fleet etcd unreachable", T);
    // A death is restarted at once, etcd or not.
    let t = Instant::now();
    kill(pid, libc::SIGKILL);
    hold.pc().wait_for("Restarted Process", T);
    println!(
        "death with etcd away and a restart budget -> restarted in {} ms",
        t.elapsed().as_millis()
    );
    hold.pc().wait_for("stall_chk (web) of pent_id= 1", T);
    let pid = pid_of(&hold.pc().entry(1));
    // Both stall: the holding host keeps its stalled server; the other kills it.
    kill(pid, libc::SIGSTOP);
    kill(pid1, libc::SIGSTOP);
    let held = hold
        .pc()
        .wait_for("Stall Restart held", Duration::from_secs(120));
    assert!(
        held.contains("etcd cannot be reached (fleet_unreachable = hold)"),
        "{held}"
    );
    proceed.pc().wait_for(
        &format!("Killed Process: pid= {pid1}"),
        Duration::from_secs(120),
    );
    proceed.pc().wait_for("stall_chk (web) of pent_id= 1", T);
    assert!(http_ok(proceed.port), "the lone host restarted its server");
    std::thread::sleep(Duration::from_secs(2));
    assert!(alive(pid), "no stall kill while etcd is away");
    // etcd back: the held kill takes a slot and goes ahead.
    etcd.run();
    hold.pc().wait_for("Fleet etcd reachable again", T);
    hold.pc().wait_for("Fleet restart slot granted", T);
    hold.pc()
        .wait_for(&format!("Killed Process: pid= {pid}"), T);
    hold.pc().wait_for("Fleet restart slot released", T);
    assert!(http_ok(hold.port), "the held host serves again");
    hold.pc().drain();
    let count = |s: &str| {
        hold.pc
            .as_ref()
            .map_or(0, |p| p.seen.iter().filter(|l| l.contains(s)).count())
    };
    assert_eq!(
        count("Fleet etcd unreachable"),
        1,
        "one line when etcd goes"
    );
    assert_eq!(count("Stall Restart held"), 1, "one held line per reason");
}

#[test]
fn show_fleet_lists_a_restart_slot_in_flight_and_an_operator_frees_a_stuck_one() {
    let Some((_esb, etcd, fleet)) = fleet_test("fleet_restart_show", "restart-show") else {
        return;
    };
    let mut s0 = stall_host("r0", &etcd, &fleet, "fleet_max_restarting = 1");
    // Another budget here: the fleet's stored one wins, and the mismatch is logged.
    let mut r1 = Host::new(
        "r1",
        &etcd,
        &fleet,
        "reboot_after = 1h\nfleet_hold_ratio = 2\nfleet_max_restarting = 3",
    );
    let pid = stall_ready(&mut s0);
    r1.start();
    let mismatch = r1.pc().seen_or_wait("fleet_max_restarting = 3 here", T);
    assert!(mismatch.contains("using 1"), "{mismatch}");
    // The server's restarts fail once it is killed: the stall-restart stays in flight.
    std::fs::write(s0.sb.file("broken"), "").expect("touch");
    kill(pid, libc::SIGSTOP);
    s0.pc()
        .wait_for("Fleet restart slot granted", Duration::from_secs(120));
    s0.pc().wait_for(&format!("Killed Process: pid= {pid}"), T);
    // Any member lists the slot, its holder and its expiry.
    let v = wait_fleet(&mut r1, "r0's restart slot", |v| {
        v["restart_slots"].as_array().is_some_and(|a| !a.is_empty())
    });
    assert_eq!(v["max_restarting"], 1, "{v}");
    assert_eq!(v["restart_slots"][0]["slot"], 0, "{v}");
    assert_eq!(v["restart_slots"][0]["host"], "r0", "{v}");
    assert!(
        v["restart_slots"][0]["expires_in_s"]
            .as_i64()
            .is_some_and(|s| s > 0 && s <= 900),
        "expires within fleet_reboot_ttl (15 min): {v}"
    );
    assert_eq!(v["slots"], serde_json::json!([]), "no reboot slot: {v}");
    let text = String::from_utf8_lossy(&r1.pc().padmin(&["-c", "show fleet"]).stdout).to_string();
    assert!(
        text.lines()
            .any(|l| l.starts_with("restart_slot") && l.contains("= 0 held by r0 (expires in ")),
        "{text}"
    );
    // r0's pcheck dies mid-restart (its member lease goes; the slot's does not):
    // an operator frees the slot rather than wait for fleet_reboot_ttl.
    kill(s0.pc().child.id() as i32, libc::SIGKILL);
    s0.pc().wait_exit(T);
    s0.pc = None;
    wait_fleet(&mut r1, "r0's member key gone", |v| {
        v["members"]
            .as_array()
            .is_some_and(|m| m.iter().all(|m| m["host"] != "r0"))
    });
    let v = show_fleet(&mut r1);
    assert_eq!(
        v["restart_slots"][0]["host"], "r0",
        "the slot outlives the member: {v}"
    );
    let out = r1.pc().padmin(&["-c", "fleet", "release", "--host", "r0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let said = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(said.contains("restart slot 0 of host r0"), "{said}");
    let line = r1.pc().wait_for("Fleet restart slot released", T);
    assert!(
        line.contains("host= r0") && line.contains("by an operator"),
        "{line}"
    );
    let v = show_fleet(&mut r1);
    assert_eq!(v["restart_slots"], serde_json::json!([]), "{v}");
    // Nothing left to free.
    let out = r1.pc().padmin(&["-c", "fleet", "release", "--host", "r0"]);
    assert!(!out.status.success());
    for p in demo_pids(&s0.sb) {
        kill(p, libc::SIGKILL);
    }
}

#[test]
fn several_pfiles_on_one_host_are_one_member() {
    let Some((_esb, etcd, fleet)) = fleet_test("fleet_one_member", "one-member") else {
        return;
    };
    // Two pchecks (two pfiles) of host m0, and a host h1: with the default hold ratio.
    let mut hosts: Vec<Host> = ["m0", "m0", "h1"]
        .iter()
        .map(|n| Host::new(n, &etcd, &fleet, "reboot_after = 1h"))
        .collect();
    for h in &mut hosts {
        h.start();
    }
    let v = wait_fleet(&mut hosts[2], "three member keys up", |v| {
        v["members"]
            .as_array()
            .is_some_and(|m| m.len() == 3 && m.iter().all(|m| m["health"] == "up"))
    });
    assert_eq!(
        (v["unhealthy"].clone(), v["hosts"].clone()),
        (0.into(), 2.into()),
        "{v}"
    );
    // One of m0's servers fails: m0 is unhealthy, h1 is not.
    hosts[0].break_server();
    let v = wait_fleet(&mut hosts[2], "m0 unhealthy", |v| v["unhealthy"] == 1);
    assert_eq!(v["hosts"], 2, "two hosts, however many pfiles: {v}");
    let m0: Vec<&serde_json::Value> = v["members"]
        .as_array()
        .map(|m| m.iter().filter(|m| m["host"] == "m0").collect())
        .unwrap_or_default();
    assert_eq!(m0.len(), 2, "one key per pfile: {v}");
    assert!(
        m0.iter().any(|m| m["health"] != "up") && m0.iter().any(|m| m["health"] == "up"),
        "{v}"
    );
    // Both of m0's servers fail: still one unhealthy host of two, not an outage.
    hosts[1].break_server();
    let v = wait_fleet(&mut hosts[2], "both m0 keys unhealthy", |v| {
        v["members"].as_array().is_some_and(|m| {
            m.iter()
                .filter(|m| m["host"] == "m0" && m["health"] != "up")
                .count()
                == 2
        })
    });
    assert_eq!(
        (v["unhealthy"].clone(), v["hosts"].clone()),
        (1.into(), 2.into()),
        "{v}"
    );
    assert_eq!(v["outage_hold"], false, "{v}");
    // m0 is healthy again only when both of its pfiles are.
    hosts[0].fix();
    wait_fleet(&mut hosts[2], "m0's first pfile up", |v| {
        v["members"].as_array().is_some_and(|m| {
            m.iter()
                .filter(|m| m["host"] == "m0" && m["health"] == "up")
                .count()
                == 1
        })
    });
    assert_eq!(show_fleet(&mut hosts[2])["unhealthy"], 1);
    hosts[1].fix();
    wait_fleet(&mut hosts[2], "m0 healthy", |v| v["unhealthy"] == 0);
}
