//! Events, end to end (issue 6): a real HTTP receiver on loopback gets the events of a
//! kill/restart cycle in order and at once; `padmin -c events --follow` shows the
//! same; the metrics endpoint parses as Prometheus exposition and counts what
//! happened; the journal gets structured fields; a dead or hanging receiver does not
//! delay a restart, and its drops are logged.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

mod common;
use common::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::process::{Command, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

fn pfile_with(sb: &Sandbox, port: u16, globals: &str) -> std::path::PathBuf {
    let (script, pidfile) = sb.demo_script("web", port, 1);
    sb.pfile(&format!(
        "{globals}{DEMO} {} 3 pidfile={} retry_delay=100ms\n",
        script.display(),
        pidfile.display()
    ))
}

const CYCLE: [&str; 3] = ["process_down", "restart_attempt", "restart_ok"];

/// The cycle's events among `evs` (after seq `after`), in order.
fn cycle_of(evs: &[serde_json::Value], after: u64) -> Vec<serde_json::Value> {
    evs.iter()
        .filter(|e| e["seq"].as_u64().unwrap_or(0) > after)
        .filter(|e| CYCLE.contains(&e["kind"].as_str().unwrap_or("")))
        .cloned()
        .collect()
}

fn http_get(port: u16, path: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

fn sample(scrape: &prometheus_parse::Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    let s = scrape
        .samples
        .iter()
        .find(|s| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .unwrap_or_else(|| panic!("no sample {metric} {labels:?}"));
    match s.value {
        prometheus_parse::Value::Counter(v)
        | prometheus_parse::Value::Gauge(v)
        | prometheus_parse::Value::Untyped(v) => v,
        _ => panic!("{metric} is not a number"),
    }
}

#[test]
fn kill_restart_cycle_reaches_webhook_follow_metrics_and_journal() {
    if !root_or_skip("kill_restart_cycle_reaches_webhook_follow_metrics_and_journal") {
        return;
    }
    let sb = Sandbox::new();
    let port = free_port();
    let mport = free_port();
    let (rport, hook) = webhook_receiver();
    let pfile = pfile_with(
        &sb,
        port,
        &format!("webhook = http://127.0.0.1:{rport}/hook\nmetrics_listen = 127.0.0.1:{mport}\n"),
    );
    let jpath = sb.file("journal.sock");
    let journal = UnixDatagram::bind(&jpath).expect("bind journal socket");
    journal
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut pc = Pcheck::start(
        &sb,
        &pfile,
        &[
            "--evidence",
            "pidfd",
            "--journal",
            jpath.to_str().expect("utf-8"),
        ],
    );
    pc.wait_for("Started Process", T);
    let old = pid_of(&pc.entry(1));
    let start_seq = {
        let out = pc.padmin(&["-c", "events"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let evs: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("each line is a JSON event"))
            .collect();
        let kinds: Vec<&str> = evs.iter().filter_map(|e| e["kind"].as_str()).collect();
        assert!(kinds.starts_with(&["pcheck_start"]), "{kinds:?}");
        assert!(kinds.contains(&"process_start"), "{kinds:?}");
        evs.last().and_then(|e| e["seq"].as_u64()).expect("a seq")
    };

    // A follower, started before the kill.
    let mut follower = Command::new(PADMIN)
        .arg("-f")
        .arg(&pfile)
        .args(["-c", "events", "--follow"])
        .env("PSWEB_RUN_DIR", sb.run_dir())
        .stdout(Stdio::piped())
        .spawn()
        .expect("padmin --follow");
    let (ftx, frx) = channel();
    let fout = follower.stdout.take().expect("stdout");
    std::thread::spawn(move || {
        for l in BufReader::new(fout).lines().map_while(Result::ok) {
            if ftx.send(l).is_err() {
                return;
            }
        }
    });
    // Its first lines are the recent events: it is subscribed.
    frx.recv_timeout(T)
        .expect("follow prints the recent events");

    let t0 = Instant::now();
    kill(old, libc::SIGKILL);
    pc.wait_for("Restarted Process", T);
    let restart = t0.elapsed();

    // The webhook: the cycle in order, each soon after its verdict.
    let mut got: Vec<(u64, serde_json::Value)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while cycle_of(
        &got.iter().map(|g| g.1.clone()).collect::<Vec<_>>(),
        start_seq,
    )
    .len()
        < 3
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match hook.recv_timeout(left) {
            Ok(x) => got.push(x),
            Err(_) => panic!("webhook got only {got:?}"),
        }
    }
    let mut worst = 0u64;
    let mut kinds = Vec::new();
    for (at, ev) in &got {
        if ev["seq"].as_u64().unwrap_or(0) <= start_seq
            || !CYCLE.contains(&ev["kind"].as_str().unwrap_or(""))
        {
            continue;
        }
        let lat = at.saturating_sub(ev["mono_ns"].as_u64().expect("mono_ns"));
        worst = worst.max(lat);
        kinds.push(ev["kind"].as_str().unwrap_or("").to_string());
        assert_eq!(ev["pent_id"], 1, "{ev}");
        // No stall check in this pfile: no port.
        assert!(ev["port"].is_null(), "{ev}");
        assert!(
            ev["time"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{ev}"
        );
    }
    assert_eq!(kinds, CYCLE, "in order");
    let down = got
        .iter()
        .find(|g| g.1["kind"] == "process_down")
        .expect("down");
    assert_eq!(down.1["pid"], old);
    assert_eq!(down.1["evidence"], "pidfd");
    assert!(
        down.1["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("Process Down: pname= ")),
        "the message is the log line: {}",
        down.1
    );
    println!(
        "webhook: {kinds:?} delivered, worst verdict-to-arrival {} us; kill -9 -> Restarted Process {} ms",
        worst / 1000,
        restart.as_millis()
    );
    // A sanity bound (the figure, about a millisecond, is `cargo xtask bench` (events)).
    assert!(
        worst < 1_000_000_000,
        "each event within 1 s: worst {} us",
        worst / 1000
    );

    // The follower: the same sequence.
    let mut lines: Vec<serde_json::Value> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while cycle_of(&lines, start_seq).len() < 3 {
        let left = deadline.saturating_duration_since(Instant::now());
        let l = frx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("follow printed {lines:?}"));
        lines.push(serde_json::from_str(&l).expect("a JSON line"));
    }
    let fkinds: Vec<String> = cycle_of(&lines, start_seq)
        .iter()
        .map(|e| e["kind"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(fkinds, CYCLE);
    let hook_seqs: Vec<u64> = cycle_of(
        &got.iter().map(|g| g.1.clone()).collect::<Vec<_>>(),
        start_seq,
    )
    .iter()
    .filter_map(|e| e["seq"].as_u64())
    .collect();
    let follow_seqs: Vec<u64> = cycle_of(&lines, start_seq)
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .collect();
    assert_eq!(hook_seqs, follow_seqs, "the same events");
    let _ = follower.kill();
    let _ = follower.wait();

    // Metrics: valid exposition, and the counts of what happened.
    // Without an Accept naming OpenMetrics (curl, promtool, older scrapers): the
    // classic text format.
    let resp = http_get(mport, "/metrics");
    let (head, body) = resp.split_once("\r\n\r\n").expect("an HTTP response");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let scrape = prometheus_parse::Scrape::parse(body.lines().map(|l| Ok(l.to_string())))
        .expect("Prometheus exposition");
    let e = [("pent_id", "1")];
    assert_eq!(sample(&scrape, "psweb_restarts_total", &e), 1.0);
    assert_eq!(sample(&scrape, "psweb_entry_restarts", &e), 1.0);
    assert_eq!(sample(&scrape, "psweb_up", &e), 1.0);
    assert_eq!(
        sample(&scrape, "psweb_events_total", &[("kind", "process_down")]),
        1.0
    );
    assert_eq!(
        sample(&scrape, "psweb_events_total", &[("kind", "restart_ok")]),
        1.0
    );
    assert_eq!(
        sample(&scrape, "psweb_evidence_mode", &[("mode", "pidfd")]),
        1.0
    );
    assert_eq!(
        sample(
            &scrape,
            "psweb_proc_state",
            &[("pent_id", "1"), ("state", "AVAIL")]
        ),
        1.0
    );
    assert_eq!(sample(&scrape, "psweb_auto_reboots", &[]), 0.0);
    assert!(http_get(mport, "/nope").starts_with("HTTP/1.1 404"));
    // Prometheus's own linter passes the classic text (no missing help, no misnamed
    // counters or gauges).
    if promtool_or_skip(
        "kill_restart_cycle_reaches_webhook_follow_metrics_and_journal: promtool check metrics",
    ) {
        let mut p = Command::new(PROMTOOL)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool");
        if let Some(mut i) = p.stdin.take() {
            let _ = i.write_all(body.as_bytes());
        }
        let out = p.wait_with_output().expect("promtool");
        assert!(
            out.status.success(),
            "promtool: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Asked for OpenMetrics, as Prometheus asks: the same samples in OpenMetrics.
    let om = {
        let mut s = TcpStream::connect(("127.0.0.1", mport)).expect("connect to metrics");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        write!(
            s,
            "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5\r\n\r\n"
        )
        .expect("send");
        let mut out = String::new();
        s.read_to_string(&mut out).expect("read");
        out
    };
    assert!(
        om.contains("Content-Type: application/openmetrics-text; version=1.0.0"),
        "{om}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    assert!(om.contains("# TYPE psweb_restarts counter\n"), "{om}");

    // Journal: the death with its structured fields, MESSAGE the seed's text.
    let mut buf = vec![0u8; 65536];
    let mut found = None;
    let deadline = Instant::now() + Duration::from_secs(5);
    while found.is_none() && Instant::now() < deadline {
        let Ok(n) = journal.recv(&mut buf) else {
            continue;
        };
        let d = String::from_utf8_lossy(&buf[..n]).into_owned();
        if d.contains("PSWEB_EVENT=process_down\n") {
            found = Some(d);
        }
    }
    let d = found.expect("a process_down datagram in the journal");
    for f in [
        "PSWEB_ENTRY=1\n".to_string(),
        format!("PSWEB_PID={old}\n"),
        "SYSLOG_IDENTIFIER=pcheck\n".to_string(),
        "PRIORITY=4\n".to_string(),
        format!("MESSAGE=Process Down: pname= {DEMO} pid= {old} pent_id= 1 ("),
    ] {
        assert!(d.contains(&f), "{f:?} in {d:?}");
    }
}

/// kill -9 -> "Restarted Process", in ms, with the given webhook lines.
fn restart_time(globals: &str, expect_log: Option<&str>) -> Duration {
    let sb = Sandbox::new();
    let port = free_port();
    let pfile = pfile_with(&sb, port, globals);
    let mut pc = Pcheck::start(&sb, &pfile, &["--evidence", "pidfd"]);
    pc.wait_for("Started Process", T);
    let old = pid_of(&pc.entry(1));
    let t0 = Instant::now();
    kill(old, libc::SIGKILL);
    pc.wait_for("Restarted Process", T);
    let took = t0.elapsed();
    assert!(http_ok(port), "serving again");
    if let Some(needle) = expect_log {
        let line = pc.seen_or_wait(needle, Duration::from_secs(15));
        println!("drop logged: {line}");
    }
    took
}

#[test]
fn dead_or_hanging_receiver_does_not_delay_restart() {
    if !root_or_skip("dead_or_hanging_receiver_does_not_delay_restart") {
        return;
    }
    let none = restart_time("", None);
    let closed = free_port(); // nothing listens there
    let dead = restart_time(
        &format!("webhook = http://127.0.0.1:{closed}/hook\n"),
        Some("dropped after 4 attempts"),
    );
    let hang = hanging_receiver();
    let hanging = restart_time(
        &format!("webhook = http://127.0.0.1:{hang}/hook\nwebhook_queue = 2\n"),
        Some("queue full"),
    );
    println!(
        "kill -9 -> Restarted Process: no webhook {} ms, receiver down {} ms, receiver hanging {} ms",
        none.as_millis(),
        dead.as_millis(),
        hanging.as_millis()
    );
    fault_row(
        20,
        "webhook receiver down / hanging during a kill -9",
        "restart not delayed, drops logged",
        &format!(
            "no webhook {} ms, down {} ms, hanging {} ms",
            none.as_millis(),
            dead.as_millis(),
            hanging.as_millis()
        ),
        Some(hanging),
    );
    // A restart that waited for the receiver would take at least one webhook attempt's
    // timeout (5 s); a sanity bound below it, far above the figure.
    let bound = psweb::report::webhook::TIMEOUT - Duration::from_secs(1);
    assert!(dead < bound, "down receiver: {dead:?}");
    assert!(hanging < bound, "hanging receiver: {hanging:?}");
}

#[test]
fn bad_webhook_url_is_an_error_at_line_and_column() {
    let sb = Sandbox::new();
    let pfile = sb.pfile("webhook = http://127.0.0.1:9/a,ftp://x/\n/bin/true /bin/true 1\n");
    let out = Command::new(PCHECK)
        .args(["--check", "-f"])
        .arg(&pfile)
        .output()
        .expect("pcheck --check");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pfile:1:32: bad webhook URL \"ftp://x/\""),
        "{err}"
    );
}
