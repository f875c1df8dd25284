use super::*;
use std::path::PathBuf;

const ENTRY: &str = "/usr/sbin/httpd /etc/psweb/httpd.rc 3\n";

fn p(text: &str) -> Result<Pfile, Diagnostic> {
    parse(Path::new("t.pfile"), text)
}

fn err_at(text: &str) -> (usize, usize, String) {
    match p(text) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(d) => (d.pos.line, d.pos.col, d.msg),
    }
}

#[test]
fn entry_with_keys_and_globals() {
    let pf = p("retry_over_action = exit\nrestart_timeout=5s\n\
        /usr/sbin/httpd /etc/psweb/httpd.rc 3 pidfile=/run/httpd/httpd.pid retry_over_action=shutdown\n\
        /usr/sbin/nginx /etc/psweb/nginx.rc 0 start_wait=500ms\n")
    .expect("parses");
    assert_eq!(pf.entries.len(), 2);
    let a = &pf.entries[0];
    assert_eq!(a.pent_id, 1);
    assert_eq!(a.pname, Path::new("/usr/sbin/httpd"));
    assert_eq!(a.retry_limit, 3);
    assert_eq!(
        a.pidfile.as_deref(),
        Some(Path::new("/run/httpd/httpd.pid"))
    );
    assert_eq!(a.settings.retry_over_action, RetryOverAction::Shutdown);
    assert_eq!(a.settings.restart_timeout, Duration::from_secs(5));
    let b = &pf.entries[1];
    assert_eq!(b.pent_id, 2);
    assert_eq!(b.settings.retry_over_action, RetryOverAction::Exit);
    assert_eq!(b.settings.start_wait, Duration::from_millis(500));
    assert_eq!(b.settings.retry_delay, Duration::from_secs(1));
}

#[test]
fn seed_webserv_sample_with_continued_exec_line() {
    let text = format!(
        "{ENTRY}_bi_webserv {{\n    PS_INIT    DLL:/opt/HA/PSWE/lib/lib_bi_webserv.so:DIRECT:-:::0\n    PS_EXEC    DLL:/opt/HA/PSWE/lib/lib_bi_webserv.so:\n                                  DIRECT:-:60:0:2:600:8080\n    PS_ACTION  DLL:/opt/HA/PSWE/lib/lib_bi_webserv.so:DIRECT:-:1:0\n    PS_QUIT    DLL:/opt/HA/PSWE/lib/lib_bi_webserv.so:DIRECT:-:::0\n}}\n"
    );
    let pf = p(&text).expect("parses");
    let s = pf.entries[0].stall.as_ref().expect("stall block");
    assert_eq!(s.kind, StallKind::Web);
    assert_eq!(s.interval, Duration::from_secs(60));
    assert_eq!(s.duration, Duration::from_secs(600));
    assert_eq!(s.port, 8080);
    assert!(!s.stop_after_detect);
    assert!(s.retry_over_on_kill_failure, "ACTION error 1");
    // The 6-field ACTION is read, and said to be read, the documented way.
    assert_eq!(pf.warnings.len(), 1, "{:?}", pf.warnings);
    assert!(
        pf.warnings[0].msg.contains("PS_ACTION has 6 fields"),
        "{}",
        pf.warnings[0]
    );
    assert_eq!(pf.warnings[0].pos.line, 6);
}

#[test]
fn guide_table_spellings_websevr_and_host() {
    let text = format!(
        "{ENTRY}_bi_websevr {{\n PS_INIT DLL:/opt/HA/PSWE/lib/lib_bi_websevr.so:DIRECT:-:::0\n PS_EXEC DLL:/opt/HA/PSWE/lib/lib_bi_websevr.so:DIRECT:-:30:1:3:90:80:www.example.com\n PS_ACTION DLL:/opt/HA/PSWE/lib/lib_bi_webserv.so:DIRECT:-:-:0:0\n PS_QUIT DLL:/opt/HA/PSWE/lib/lib_bi_websevr.so:DIRECT:-:::0\n}}\n"
    );
    let pf = p(&text).expect("parses");
    let s = pf.entries[0].stall.as_ref().expect("stall");
    assert_eq!(
        (s.kind, s.port, s.host.as_deref()),
        (StallKind::Web, 80, Some("www.example.com"))
    );
    assert_eq!((s.interval.as_secs(), s.duration.as_secs()), (30, 90));
    assert!(s.stop_after_detect);
    assert!(!s.retry_over_on_kill_failure);
    assert!(pf.warnings.is_empty(), "{:?}", pf.warnings);
}

#[test]
fn https_sample_five_arguments() {
    let text = format!(
        "{ENTRY}_bi_webservs{{\n  PS_INIT    DLL:/opt/HA/PSWE/lib/lib_bi_webservs.so:DIRECT:-::-:0\n  PS_EXEC    DLL:/opt/HA/PSWE/lib/lib_bi_webservs.so:DIRECT:-:60:-:5:600:433:localhost:5:/\n  PS_ACTION  DLL:/opt/HA/PSWE/lib/lib_bi_webservs.so:DIRECT:-::-:1:0\n  PS_QUIT    DLL:/opt/HA/PSWE/lib/lib_bi_webservs.so:DIRECT:-::-:0\n}}\n"
    );
    let pf = p(&text).expect("parses");
    let s = pf.entries[0].stall.as_ref().expect("stall");
    assert_eq!(s.kind, StallKind::Ssl);
    assert_eq!(s.port, 433);
    assert_eq!(s.host.as_deref(), Some("localhost"));
    assert_eq!(s.probe_timeout, Some(Duration::from_secs(5)));
    assert_eq!(s.path.as_deref(), Some("/"));
    assert!(s.retry_over_on_kill_failure);
    assert_eq!(
        pf.warnings.len(),
        1,
        "the 8-field ACTION is flagged: {:?}",
        pf.warnings
    );
}

#[test]
fn socket_sample_six_field_init() {
    let text = format!(
        "{ENTRY}_bi_socket{{\n    PS_INIT          DLL:/opt/HA/PSWE/lib/lib_bi_socket.so:DIRECT:-:-:0\n    PS_EXEC          DLL:/opt/HA/PSWE/lib/lib_bi_socket.so:\n                                     DIRECT:-:60:-:2:600:8080\n    PS_ACTION       DLL:/opt/HA/PSWE/lib/lib_bi_socket.so:DIRECT:-:-:1:0\n    PS_QUIT         DLL:/opt/HA/PSWE/lib/lib_bi_socket.so:DIRECT:-:-:0\n}}\n"
    );
    let pf = p(&text).expect("parses");
    let s = pf.entries[0].stall.as_ref().expect("stall");
    assert_eq!((s.kind, s.port), (StallKind::Socket, 8080));
    assert!(s.retry_over_on_kill_failure);
    assert!(pf.warnings.is_empty(), "{:?}", pf.warnings);
}

#[test]
fn comment_ending_in_colon_continues_like_the_seed_sample3() {
    let text = format!(
        "# DLL:/opt/HA/PSWE/lib/lib_bi_webservs.so:DIRECT:-:<interval>:-:5:\n                                     <duration>:<port>:<host>:<timeout>:<html path>\n{ENTRY}"
    );
    assert_eq!(p(&text).expect("parses").entries.len(), 1);
}

/// Ten (and more) malformed pfiles: each error at the right line:column.
#[test]
fn malformed_pfiles_name_line_and_column() {
    let web = |exec: &str| {
        format!(
            "{ENTRY}_bi_webserv {{\n PS_INIT DLL:/opt/HA/PSWE/lib/lib_bi_webserv.so:DIRECT:-:::0\n PS_EXEC DLL:/opt/HA/PSWE/lib/lib_bi_webserv.so:DIRECT:-:{exec}\n PS_ACTION DLL:/opt/HA/PSWE/lib/lib_bi_webserv.so:DIRECT:-:-:1:0\n}}\n"
        )
    };
    // exec line 3: " PS_EXEC DLL:/opt/HA/PSWE/lib/lib_bi_webserv.so:DIRECT:-:" is 57 chars,
    // so the interval field starts at column 58.
    let cases: Vec<(String, usize, usize, &str)> = vec![
        ("retry_over_acton = exit\n".into(), 1, 1, "unknown setting"),
        ("retry_over_action = restart\n".into(), 1, 21, "expected continue, shutdown or exit"),
        ("/usr/sbin/httpd /etc/psweb/httpd.rc three\n".into(), 1, 37, "retry count"),
        ("/usr/sbin/httpd\n".into(), 1, 16, "restart script"),
        ("/usr/sbin/httpd /etc/psweb/httpd.rc 3 pidfle=/run/x.pid\n".into(), 1, 39, "unknown entry setting"),
        ("httpd /etc/psweb/httpd.rc 3\n".into(), 1, 1, "expected a setting"),
        (
            "_bi_socket{\n PS_EXEC DLL:/opt/HA/PSWE/lib/lib_bi_socket.so:DIRECT:-:60:-:2:600:80\n}\n".into(),
            1,
            1,
            "must follow the process entry",
        ),
        (format!("{ENTRY}_bi_webserv {{\n PS_INIT DLL:/opt/HA/PSWE/lib/lib_bi_webserv.so:DIRECT:-:::0\n"), 2, 1, "never closed"),
        (web("5:0:2:600:8080"), 4, 58, "at least 10 seconds"),
        (web("60:0:2:30:8080"), 4, 65, "at least the interval"),
        (web("60:0:2:600:0"), 4, 69, "port from 1 to 65535"),
        (web("60:0:3:600:8080"), 4, 63, "argc is 3 but 2"),
        (web("60:0:4:600:8080:h:x"), 4, 63, "expected argc 2 to 3"),
        (
            format!("{ENTRY}_bi_webserv {{\n PS_EXEC DLL:/opt/HA/PSWE/lib/lib_bi_nothing.so:DIRECT:-:60:0:2:600:80\n}}\n"),
            3,
            14,
            "seed's libraries",
        ),
        (format!("{ENTRY}_bi_webserver {{\n}}\n"), 2, 1, "unknown block"),
        (format!("{ENTRY}{ENTRY}"), 2, 1, "give each a pidfile="),
        ("restart_timeout = 10x\n".into(), 1, 19, "expected a duration"),
    ];
    for (text, line, col, needle) in &cases {
        let (l, c, msg) = err_at(text);
        assert_eq!((l, c), (*line, *col), "for {text:?}: {msg}");
        assert!(
            msg.contains(needle),
            "for {text:?}: {msg:?} lacks {needle:?}"
        );
    }
    assert!(cases.len() >= 10);
}

#[test]
fn diagnostics_print_as_file_line_col() {
    let d = p("bogus = 1\n").expect_err("bad key");
    assert!(
        d.to_string()
            .starts_with("t.pfile:1:1: unknown setting \"bogus\""),
        "{d}"
    );
}

#[test]
fn durations() {
    assert_eq!(parse_duration_text("30"), Some(Duration::from_secs(30)));
    assert_eq!(
        parse_duration_text("250ms"),
        Some(Duration::from_millis(250))
    );
    assert_eq!(parse_duration_text("2m"), Some(Duration::from_secs(120)));
    assert_eq!(parse_duration_text("1h"), Some(Duration::from_secs(3600)));
    assert_eq!(parse_duration_text("25h"), None, "at most a day");
    assert_eq!(parse_duration_text("-1"), None);
    assert_eq!(parse_duration_text("1.5s"), None);
    assert_eq!(parse_duration_text("999999999999999999999"), None);
}

#[test]
fn psweb_settings_inside_a_block() {
    let text = format!(
        "{ENTRY}_bi_webservs{{\n  PS_EXEC    DLL:/opt/HA/PSWE/lib/lib_bi_webservs.so:DIRECT:-:10:-:2:60:443\n  PS_ACTION  DLL:/opt/HA/PSWE/lib/lib_bi_webservs.so:DIRECT:-:-:1:0\n  evidence = kernel\n  kernel_window = 1500ms\n  kernel_action = observe\n  tls_verify = /etc/pki/ca.pem\n  status = 2xx,3xx\n  probe_timeout = 3s\n}}\n"
    );
    let pf = p(&text).expect("parses");
    let s = pf.entries[0].stall.as_ref().expect("stall");
    assert_eq!(s.evidence, StallEvidence::Kernel);
    assert_eq!(s.kernel_window, Duration::from_millis(1500));
    assert_eq!(s.kernel_action, KernelAction::Observe);
    assert_eq!(
        s.tls_verify,
        TlsVerifyCfg::CaFile(PathBuf::from("/etc/pki/ca.pem"))
    );
    assert_eq!(s.status_classes, Some(vec![2, 3]));
    assert_eq!(s.effective_probe_timeout(), Duration::from_secs(3));
    // Defaults: probe evidence, the interval (at most 10 s) as the probe timeout.
    let plain = p(&format!(
        "{ENTRY}_bi_socket{{\n PS_EXEC DLL:/opt/HA/PSWE/lib/lib_bi_socket.so:DIRECT:-:30:-:2:60:25\n PS_ACTION DLL:/opt/HA/PSWE/lib/lib_bi_socket.so:DIRECT:-:-:0:0\n}}\n"
    ))
    .expect("parses");
    let s = plain.entries[0].stall.as_ref().expect("stall");
    assert_eq!(
        (s.evidence, s.effective_probe_timeout(), s.kernel_action),
        (
            StallEvidence::Probe,
            Duration::from_secs(10),
            KernelAction::Kill
        )
    );
}

#[test]
fn bad_psweb_settings_in_a_block() {
    let block = |kind: &str, lib: &str, line: &str| {
        format!(
            "{ENTRY}{kind}{{\n PS_EXEC DLL:/opt/HA/PSWE/lib/{lib}:DIRECT:-:10:-:2:60:443\n PS_ACTION DLL:/opt/HA/PSWE/lib/{lib}:DIRECT:-:-:1:0\n{line}\n}}\n"
        )
    };
    let cases = [
        (
            block("_bi_webserv", "lib_bi_webserv.so", " tls_verify = off"),
            5,
            2,
            "_bi_webservs (HTTPS) blocks only",
        ),
        (
            block("_bi_socket", "lib_bi_socket.so", " status = 2xx"),
            5,
            2,
            "HTTP and HTTPS checks only",
        ),
        (
            block("_bi_webservs", "lib_bi_webservs.so", " evidence = ebpf"),
            5,
            13,
            "expected probe or kernel",
        ),
        (
            block("_bi_webservs", "lib_bi_webservs.so", " status = 200"),
            5,
            11,
            "status classes",
        ),
        (
            block("_bi_webservs", "lib_bi_webservs.so", " colour = red"),
            5,
            2,
            "unknown stall-check setting",
        ),
        (
            block(
                "_bi_webservs",
                "lib_bi_webservs.so",
                " kernel_window = 10ms",
            ),
            5,
            18,
            "from 500ms",
        ),
        (
            block(
                "_bi_webservs",
                "lib_bi_webservs.so",
                " kernel_action = stop",
            ),
            5,
            18,
            "expected kill or observe",
        ),
    ];
    for (text, line, col, needle) in &cases {
        let (l, c, msg) = err_at(text);
        assert_eq!((l, c), (*line, *col), "{msg}");
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
    }
}

#[test]
fn owner_metrics_allow_and_header_file() {
    let pf = p(
        "metrics_listen = 0.0.0.0:9913\nmetrics_allow = 10.0.0.0/8,192.0.2.7,::1/128\n\
        webhook_header_file = /etc/psweb/hook.headers\n\
        /usr/bin/java /etc/psweb/tomcat.rc 3 pidfile=/run/tomcat/tomcat.pid owner=tomcat\n\
        /usr/sbin/httpd /etc/psweb/httpd.rc 3 user=www-data\n\
        /usr/sbin/nginx /etc/psweb/nginx.rc 3\n",
    )
    .expect("parses");
    assert_eq!(pf.entries[0].owner_name(), "tomcat");
    assert_eq!(
        pf.entries[1].owner_name(),
        "www-data",
        "user= is the default owner"
    );
    assert_eq!(pf.entries[2].owner_name(), "root");
    let allow = &pf.globals.metrics_allow;
    assert_eq!(allow.len(), 3);
    assert!(allow[0].contains("10.1.2.3".parse().expect("ip")));
    assert!(!allow[0].contains("11.0.0.1".parse().expect("ip")));
    assert!(allow[1].contains("::ffff:192.0.2.7".parse().expect("mapped")));
    assert!(allow[2].contains("::1".parse().expect("ip")));
    assert!(
        pf.warnings.is_empty(),
        "metrics_allow limits it: {:?}",
        pf.warnings
    );
    assert_eq!(
        pf.globals.webhook_header_file.as_deref(),
        Some(Path::new("/etc/psweb/hook.headers"))
    );

    let open = p(&format!("metrics_listen = 0.0.0.0:9913\n{ENTRY}")).expect("parses");
    let w = &open.warnings[0];
    assert_eq!((w.pos.line, w.pos.col), (1, 1));
    assert!(w.msg.contains("not a loopback address"), "{}", w.msg);
    let lo = p(&format!("metrics_listen = 127.0.0.1:9913\n{ENTRY}")).expect("parses");
    assert!(lo.warnings.is_empty());

    let (l, c, m) = err_at(&format!("metrics_allow = 10.0.0.0/8,10.0.0.0/33\n{ENTRY}"));
    assert_eq!((l, c), (1, 28), "{m}");
    assert!(m.contains("expected a network"), "{m}");
    let (l, c, m) = err_at("/usr/sbin/httpd /etc/psweb/httpd.rc 3 owner=bad/name\n");
    assert_eq!((l, c), (1, 45), "{m}");
    let (l, c, _) = err_at(&format!("webhook_header_file = relative\n{ENTRY}"));
    assert_eq!((l, c), (1, 23));
}

#[test]
fn short_ps_action_lines_are_diagnosed_not_panicked_on() {
    let lib = "/opt/HA/PSWE/lib/lib_bi_webserv.so";
    let block = |action: &str| {
        format!(
            "{ENTRY}_bi_webserv {{\n PS_INIT DLL:{lib}:DIRECT:-:::0\n PS_EXEC DLL:{lib}:DIRECT:-:10:0:2:30:80\n PS_ACTION {action}\n}}\n"
        )
    };
    // Six fields: the field before argc is read as the error, with a warning.
    let pf = p(&block(&format!("DLL:{lib}:DIRECT:-:1:0"))).expect("six-field PS_ACTION");
    let stall = pf.entries[0].stall.as_ref().expect("stall check");
    assert!(stall.retry_over_on_kill_failure);
    assert!(
        pf.warnings
            .iter()
            .any(|w| w.msg.contains("PS_ACTION has 6 fields")),
        "{:?}",
        pf.warnings
    );
    // Five fields (the value in the timeout field) and fewer: an error naming the
    // line, never a panic.
    for action in [
        format!("DLL:{lib}:DIRECT:1:0"),
        format!("DLL:{lib}:DIRECT:0"),
        format!("DLL:{lib}:DIRECT"),
        format!("DLL:{lib}"),
        "DLL".to_string(),
        format!("DLL:{lib}:DIRECT:-:-:-:-:-:1:0"),
    ] {
        let (line, _, msg) = err_at(&block(&action));
        assert_eq!(line, 5, "{action}: {msg}");
    }
}

#[test]
fn fleet_keys() {
    let f = p(
        "fleet_etcd = http://10.0.0.1:2379,https://etcd2:2379\nfleet_name = web\n\
               fleet_host = web-3\nfleet_lease_ttl = 9s\nfleet_max_rebooting = 2\nfleet_max_restarting = 3\n\
               fleet_reboot_ttl = 20m\nfleet_hold_ratio = 0.25\nfleet_unreachable = proceed\n\
               fleet_user = psweb\nfleet_password_file = /etc/psweb/pw\n",
    )
    .expect("parses")
    .globals
    .fleet
    .expect("a fleet");
    assert_eq!(f.endpoints, ["http://10.0.0.1:2379", "https://etcd2:2379"]);
    assert_eq!(f.name, "web");
    assert_eq!(f.host.as_deref(), Some("web-3"));
    assert_eq!(f.lease_ttl, Duration::from_secs(9));
    assert_eq!(f.max_rebooting, 2);
    assert_eq!(f.max_restarting, Some(3));
    assert_eq!(f.reboot_ttl, Duration::from_secs(1200));
    assert!((f.hold_ratio - 0.25).abs() < f64::EPSILON);
    assert_eq!(f.unreachable, FleetUnreachable::Proceed);
    assert_eq!(f.user.as_deref(), Some("psweb"));
    // Defaults.
    let d = p("fleet_etcd = http://e:2379\nfleet_name = web\n")
        .expect("parses")
        .globals
        .fleet
        .expect("a fleet");
    assert_eq!(d.lease_ttl, Duration::from_secs(30));
    assert_eq!(d.max_rebooting, 1);
    assert_eq!(d.max_restarting, None, "no restart budget unless asked for");
    assert_eq!(d.reboot_ttl, Duration::from_secs(900));
    assert_eq!(d.unreachable, FleetUnreachable::Hold);
    assert!(p("").expect("parses").globals.fleet.is_none());
    // Errors name the line.
    for (text, want) in [
        ("fleet_name = web\n", "needs fleet_etcd"),
        (
            "fleet_etcd = etcd:2379\nfleet_name = web\n",
            "expected etcd endpoints",
        ),
        (
            "fleet_etcd = http://e:2379\nfleet_name = w/b\n",
            "expected a fleet name",
        ),
        (
            "fleet_etcd = http://e:2379\nfleet_name = w\nfleet_hold_ratio = x\n",
            "expected a ratio",
        ),
        (
            "fleet_etcd = http://e:2379\nfleet_name = w\nfleet_lease_ttl = 1s\n",
            "at least 2s",
        ),
        (
            "fleet_etcd = http://e:2379\nfleet_name = w\nfleet_unreachable = maybe\n",
            "hold or proceed",
        ),
        (
            "fleet_etcd = http://e:2379\nfleet_name = w\nfleet_tls_cert = /c.pem\n",
            "go together",
        ),
    ] {
        let e = p(text).expect_err(text).to_string();
        assert!(e.contains(want), "{text:?}: {e}");
    }
}

/// Operators and scripts match these texts: each error, whole, as `pcheck --check`
/// prints it (`file:line:column: message`).
#[test]
fn error_texts_are_exact() {
    let fleet = "fleet_etcd = http://e:2379\nfleet_name = w\n";
    let cases = [
        (
            format!("{fleet}fleet_lease_ttl = 1s\n"),
            "t.pfile:3:19: fleet_lease_ttl must be at least 2s (etcd leases count in seconds)",
        ),
        (
            format!("{fleet}fleet_reboot_ttl = 1s\n"),
            "t.pfile:3:20: fleet_reboot_ttl must be at least 2s (etcd leases count in seconds)",
        ),
        (
            format!("{fleet}fleet_max_rebooting = x\n"),
            "t.pfile:3:23: expected a number of hosts from 0 to 10000, found \"x\"",
        ),
        (
            format!("{fleet}fleet_max_restarting = 10001\n"),
            "t.pfile:3:24: expected a number of hosts from 0 to 10000, found \"10001\"",
        ),
        (
            "evidence = bpf\n".to_string(),
            "t.pfile:1:12: expected auto, ebpf, pidfd or procfs, found \"bpf\"",
        ),
        (
            "webhook = http://h:0/x?token=t\n".to_string(),
            "t.pfile:1:11: bad webhook URL \"http://h:0/...\": port 0",
        ),
        (
            "/usr/sbin/httpd /etc/psweb/httpd.rc 3 lb_name=123\n".to_string(),
            "t.pfile:1:47: expected a name of letters, digits, '.', '_' or '-' (not only digits), found \"123\"",
        ),
        (
            "/usr/sbin/httpd /etc/psweb/httpd.rc 3 lb_haproxy_server=web\n".to_string(),
            "t.pfile:1:57: expected BACKEND/SERVER as HAProxy names them, found \"web\"",
        ),
        (
            "reboot_limit = 101\n".to_string(),
            "t.pfile:1:16: expected a reboot limit from 0 to 100, found \"101\"",
        ),
        (
            "webhook_queue = 0\n".to_string(),
            "t.pfile:1:17: expected a queue size from 1 to 100000, found \"0\"",
        ),
    ];
    for (text, want) in &cases {
        assert_eq!(p(text).expect_err(text).to_string(), *want);
    }
    // Inside a block (the place is covered by bad_psweb_settings_in_a_block).
    let block = |exec_tail: &str, line: &str| {
        format!(
            "{ENTRY}_bi_webservs {{\n PS_EXEC DLL:/opt/HA/PSWE/lib/lib_bi_webservs.so:DIRECT:-:10:-:{exec_tail}\n PS_ACTION DLL:/opt/HA/PSWE/lib/lib_bi_webservs.so:DIRECT:-:-:1:0\n{line}\n}}\n"
        )
    };
    for (text, want) in [
        (
            block("2:60:443", " probe_timeout = 50ms"),
            "expected a duration from 100ms to 600s, found \"50ms\"",
        ),
        (
            block("2:60:443", " kernel_window = 601s"),
            "expected a duration from 500ms to 600s, found \"601s\"",
        ),
        (
            block("5:60:443:h:5:x", ""),
            "expected a path starting with '/', found \"x\"",
        ),
        (
            block("4:60:443:h:0", ""),
            "expected a probe timeout of at least 1 second",
        ),
        (
            block("6:60:443:h:5:/:x", ""),
            "expected argc 2 to 5 (duration:port[:host[:timeout[:path]]]), found 6",
        ),
        (
            block("2:60", ""),
            "argc is 2 but 1 argument(s) follow; expected duration:port[:host[:timeout[:path]]]",
        ),
    ] {
        let (_, _, msg) = err_at(&text);
        assert_eq!(msg, want, "{text}");
    }
}
