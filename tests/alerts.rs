//! Alerts and dashboard, for real: the shipped Prometheus rules pass promtool's
//! checks and unit tests; a real Prometheus scrapes a real pcheck whose server is
//! killed and whose restart script fails, and the expected alerts — from the rules,
//! and from pcheck's own `webhook_format = alertmanager` POSTs — reach a real
//! Alertmanager, where they are resolved when the server serves again; every
//! dashboard panel's query runs against that Prometheus.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

mod common;
use common::*;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const ALERTMANAGER: &str = "/usr/bin/prometheus-alertmanager";
const RULES: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../packaging/prometheus/psweb.rules.yml"
);
const RULE_TESTS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../packaging/prometheus/psweb.rules.test.yml"
);
const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../packaging/grafana/psweb.json"
);

/// Metrics the dashboard and the rules know that this test's pcheck does not export:
/// the load balancer and the fleet (not configured here). Their queries must be
/// valid; they may return nothing.
const NOT_EXPORTED_HERE: [&str; 3] = [
    "psweb_lb_state",
    "psweb_fleet_hold",
    "psweb_fleet_reboot_held_total",
];

fn prometheus_or_skip(test: &str) -> bool {
    if Path::new(PROMETHEUS).exists() && Path::new(ALERTMANAGER).exists() {
        return true;
    }
    skip(test, "Debian's prometheus and prometheus-alertmanager are not installed (cargo xtask test installs them)");
    false
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new(PROMTOOL)
        .args(args)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn rules_pass_promtool_check_and_their_unit_tests() {
    if !promtool_or_skip("rules_pass_promtool_check_and_their_unit_tests") {
        return;
    }
    let check = promtool(&["check", "rules", RULES]);
    println!("{check}");
    let test = promtool(&["test", "rules", RULE_TESTS]);
    println!("{test}");
    assert!(test.contains("SUCCESS"), "{test}");
    // Every alert is fired by a unit test, and has its runbook section.
    let rules = std::fs::read_to_string(RULES).expect("rules");
    let tests = std::fs::read_to_string(RULE_TESTS).expect("rule tests");
    let runbook =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/alerts.md"))
            .expect("docs/alerts.md");
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    assert!(alerts.len() >= 10, "{alerts:?}");
    for a in &alerts {
        assert!(
            tests.contains(&format!(
                "alertname: {a}\n        exp_alerts:\n          - exp_labels"
            )),
            "no unit test fires {a}"
        );
        assert!(
            runbook.contains(&format!("\n## {a}\n")),
            "docs/alerts.md has no section for {a}"
        );
        assert!(
            rules.contains(&format!("docs/alerts.md#{}\"", a.to_lowercase())),
            "{a}'s runbook annotation"
        );
    }
}

/// The dashboard's panels: (title, each query with Grafana's variables filled in).
fn dashboard_queries() -> Vec<(String, Vec<String>)> {
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).expect("dashboard"))
            .expect("the dashboard is JSON");
    d["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .map(|p| {
            let exprs = p["targets"]
                .as_array()
                .expect("targets")
                .iter()
                .map(|t| {
                    t["expr"]
                        .as_str()
                        .expect("expr")
                        .replace("$__rate_interval", "1m")
                        .replace("$instance", ".+")
                })
                .collect();
            (p["title"].as_str().expect("title").to_string(), exprs)
        })
        .collect()
}

#[test]
fn dashboard_is_grafana_json_with_a_query_per_panel() {
    let d: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).expect("dashboard"))
            .expect("the dashboard is JSON");
    assert_eq!(d["uid"], "psweb");
    assert!(d["title"].is_string() && d["schemaVersion"].as_u64() >= Some(30));
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .expect("templating")
        .iter()
        .filter_map(|v| v["name"].as_str())
        .collect();
    assert_eq!(vars, ["datasource", "instance"]);
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut cells = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().expect("a title");
        assert!(ids.insert(p["id"].as_u64().expect("an id")), "{title}: id");
        assert!(
            ["stat", "timeseries", "state-timeline", "heatmap", "table"]
                .contains(&p["type"].as_str().unwrap_or("")),
            "{title}: type"
        );
        assert!(
            p["description"].as_str().is_some_and(|s| !s.is_empty()),
            "{title}"
        );
        let g = &p["gridPos"];
        let (x, y, w, h) = (
            g["x"].as_u64().expect("x"),
            g["y"].as_u64().expect("y"),
            g["w"].as_u64().expect("w"),
            g["h"].as_u64().expect("h"),
        );
        assert!(x + w <= 24 && w > 0 && h > 0, "{title}: gridPos");
        for cx in x..x + w {
            for cy in y..y + h {
                assert!(cells.insert((cx, cy)), "{title} overlaps another panel");
            }
        }
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            let e = t["expr"].as_str().expect("expr");
            assert!(e.contains("psweb_") || e.starts_with("up{"), "{title}: {e}");
            assert!(e.contains("instance=~\"$instance\""), "{title}: {e}");
        }
    }
    // What operators look at first is there.
    let titles: Vec<&str> = panels.iter().filter_map(|p| p["title"].as_str()).collect();
    for want in [
        "Entries up",
        "Restarts",
        "Stall check state (stall_chk)",
        "Probe latency",
        "Accept-queue overflows",
        "Evidence mode",
        "Automatic reboots in a row",
        "Events by kind",
        "Load-balancer state",
        "Fleet",
    ] {
        assert!(titles.contains(&want), "{want} in {titles:?}");
    }
}

/// A child process killed (and reaped) on drop.
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(sb: &Sandbox, name: &str, cmd: &mut Command) -> Daemon {
    let log = std::fs::File::create(sb.file(&format!("{name}.log"))).expect("log file");
    let err = log.try_clone().expect("log file");
    Daemon(
        cmd.stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}")),
    )
}

fn pct(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One HTTP/1.0 request on loopback: (status, body).
fn http(port: u16, method: &str, path: &str, body: Option<&str>) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let body = body.unwrap_or("");
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let (head, body) = out.split_once("\r\n\r\n")?;
    let code = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, body.to_string()))
}

fn get_json(port: u16, path: &str) -> Option<serde_json::Value> {
    let (code, body) = http(port, "GET", path, None)?;
    (code == 200).then(|| serde_json::from_str(&body).ok())?
}

/// Polls `f` every 200 ms until it gives Some; panics after `timeout` with `what`.
fn until<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// An instant query: the result vector, or the error Prometheus gives.
fn query(port: u16, q: &str) -> Result<Vec<serde_json::Value>, String> {
    let (code, body) = http(
        port,
        "GET",
        &format!("/api/v1/query?query={}", pct(q)),
        None,
    )
    .ok_or("no answer")?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
    if code != 200 || v["status"] != "success" {
        return Err(format!("HTTP {code}: {body}"));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// Alertmanager's active alerts, by name: their labels.
fn active_alerts(am: u16) -> Option<BTreeMap<String, serde_json::Value>> {
    let v = get_json(
        am,
        "/api/v2/alerts?active=true&silenced=true&inhibited=true",
    )?;
    Some(
        v.as_array()?
            .iter()
            .filter(|a| a["status"]["state"] == "active")
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                    a["labels"].clone(),
                )
            })
            .collect(),
    )
}

#[test]
fn kill_and_failed_restart_reach_a_real_alertmanager_and_resolve() {
    let name = "kill_and_failed_restart_reach_a_real_alertmanager_and_resolve";
    if !root_or_skip(name) || !prometheus_or_skip(name) {
        return;
    }
    let sb = Sandbox::new();
    let (am_port, prom_port, metrics_port, web_port) =
        (free_port(), free_port(), free_port(), free_port());

    // A real Alertmanager: loopback only, no cluster, its own storage. Its
    // resolve_timeout is long, so that an alert that goes away here was resolved.
    let am_cfg = sb.file("alertmanager.yml");
    std::fs::write(
        &am_cfg,
        "global:\n  resolve_timeout: 1h\nroute:\n  receiver: nobody\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: nobody\n",
    )
    .expect("write");
    let _am = spawn(
        &sb,
        "alertmanager",
        Command::new(ALERTMANAGER)
            .arg(format!("--config.file={}", am_cfg.display()))
            .arg(format!("--storage.path={}", sb.file("am-data").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{am_port}"))
            .arg("--cluster.listen-address="),
    );

    // A real Prometheus with the shipped rules, their `for:` shortened to 2 s.
    let rules: String = std::fs::read_to_string(RULES)
        .expect("rules")
        .lines()
        .map(|l| match l.trim_start().strip_prefix("for: ") {
            Some(_) => format!("{}for: 2s\n", &l[..l.len() - l.trim_start().len()]),
            None => format!("{l}\n"),
        })
        .collect();
    let rules_copy = sb.file("psweb.rules.yml");
    std::fs::write(&rules_copy, rules).expect("write");
    let prom_cfg = sb.file("prometheus.yml");
    std::fs::write(
        &prom_cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\nscrape_configs:\n  - job_name: psweb\n    static_configs:\n      - targets: ['127.0.0.1:{metrics_port}']\n",
            rules_copy.display()
        ),
    )
    .expect("write");
    let _prom = spawn(
        &sb,
        "prometheus",
        Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", prom_cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                sb.file("prom-data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{prom_port}")),
    );

    // pcheck: a demo web server with a stall check; its restart script fails while
    // `broken` exists; its events go to the Alertmanager as alerts.
    let (script, pidfile) = sb.demo_script("web", web_port, 1);
    let broken = sb.file("broken");
    let gate = sb.script(
        "gate.rc",
        &format!(
            "[ -e {} ] && exit 1\nexec {}",
            broken.display(),
            script.display()
        ),
    );
    let pfile = sb.pfile(&format!(
        "webhook = http://127.0.0.1:{am_port}/api/v2/alerts\nwebhook_format = alertmanager\nmetrics_listen = 127.0.0.1:{metrics_port}\n{DEMO} {} 2 pidfile={} retry_delay=100ms\n{}",
        gate.display(),
        pidfile.display(),
        stall_block("_bi_webserv", &format!("10:0:2:600:{web_port}"), 0, "")
    ));
    let mut pc = Pcheck::start(&sb, &pfile, &["--evidence", "pidfd"]);
    pc.wait_for("Started Process", T);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_string();

    until("Alertmanager ready", Duration::from_secs(60), || {
        http(am_port, "GET", "/-/ready", None).filter(|r| r.0 == 200)
    });
    // Prometheus scrapes pcheck (OpenMetrics, as it asks) without error.
    let target = until("Prometheus scrapes pcheck", Duration::from_secs(60), || {
        let t = get_json(prom_port, "/api/v1/targets")?;
        let t = t["data"]["activeTargets"].as_array()?.first()?.clone();
        (t["health"] == "up").then_some(t)
    });
    assert_eq!(target["lastError"], "", "{target}");
    let up = query(prom_port, "psweb_up").expect("query");
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(up[0]["value"][1], "1", "{up:?}");
    // The server is killed, and its restart script fails: retry over.
    std::fs::write(&broken, "").expect("write");
    let old = pid_of(&pc.entry(1));
    let t0 = Instant::now();
    kill(old, libc::SIGKILL);
    pc.wait_for("Retry Over", T);

    let want = [
        "psweb_process_down",
        "psweb_retry_over",
        "PswebServerDown",
        "PswebRetryOver",
    ];
    let mut first_seen: BTreeMap<&str, Duration> = BTreeMap::new();
    let active = until(
        "the four alerts active in Alertmanager",
        Duration::from_secs(90),
        || {
            let a = active_alerts(am_port)?;
            for w in want {
                if a.contains_key(w) {
                    first_seen.entry(w).or_insert_with(|| t0.elapsed());
                }
            }
            want.iter().all(|w| a.contains_key(*w)).then_some(a)
        },
    );
    println!(
        "kill -9 -> alert active in Alertmanager: {}",
        first_seen
            .iter()
            .map(|(k, v)| format!("{k} {} ms", v.as_millis()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // One alert per problem: pcheck's start, process start, restart attempts and
    // failures are not alerts.
    let from_pcheck: Vec<&String> = active.keys().filter(|n| n.starts_with("psweb_")).collect();
    assert_eq!(
        from_pcheck,
        ["psweb_process_down", "psweb_retry_over"],
        "{active:?}"
    );
    let down = &active["psweb_process_down"];
    for (k, v) in [
        ("instance", host.as_str()),
        ("job", "psweb"),
        ("pent_id", "1"),
        ("pname", DEMO),
        ("severity", "warning"),
        ("kind", "process_down"),
    ] {
        assert_eq!(down[k], v, "{down}");
    }
    assert_eq!(active["psweb_retry_over"]["severity"], "critical");
    let rule = &active["PswebServerDown"];
    assert_eq!(
        rule["instance"],
        format!("127.0.0.1:{metrics_port}"),
        "{rule}"
    );
    assert_eq!(rule["pent_id"], "1", "{rule}");
    assert_eq!(rule["pname"], DEMO, "{rule}");
    assert_eq!(rule["severity"], "critical", "{rule}");
    // pcheck's POSTs were accepted (a refusal is logged and counted as a drop).
    assert!(
        !pc.seen.iter().any(|l| l.contains("dropped")),
        "{:?}",
        pc.seen
    );
    let dropped = query(prom_port, "sum(psweb_webhook_dropped_total)").expect("query");
    assert_eq!(dropped[0]["value"][1], "0", "{dropped:?}");

    // The operator repairs the restart script and asks for the server again.
    std::fs::remove_file(&broken).expect("rm");
    for c in ["stop", "start"] {
        let out = pc.padmin(&["-c", c, "-n", "1"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let t1 = Instant::now();
    pc.wait_for("Restarted Process", T);
    assert!(http_ok(web_port), "serving again");
    let mut gone: BTreeMap<&str, Duration> = BTreeMap::new();
    until(
        "the four alerts resolved in Alertmanager",
        Duration::from_secs(90),
        || {
            let a = active_alerts(am_port)?;
            for w in want {
                if !a.contains_key(w) {
                    gone.entry(w).or_insert_with(|| t1.elapsed());
                }
            }
            want.iter().all(|w| !a.contains_key(*w)).then_some(())
        },
    );
    println!(
        "serving again -> alert resolved in Alertmanager: {}",
        gone.iter()
            .map(|(k, v)| format!("{k} {} ms", v.as_millis()))
            .collect::<Vec<_>>()
            .join(", ")
    );
    // Every dashboard panel's query is valid PromQL, and returns data for what this
    // pcheck exports.
    let panels = dashboard_queries();
    let mut empty_ok = Vec::new();
    for (title, exprs) in &panels {
        for e in exprs {
            let optional = NOT_EXPORTED_HERE.iter().any(|m| e.contains(m));
            let rows = until(
                &format!("panel {title:?}: {e} returns data"),
                Duration::from_secs(60),
                || match query(prom_port, e) {
                    Err(err) => panic!("panel {title:?}: {e}: {err}"),
                    Ok(r) if r.is_empty() && !optional => None,
                    Ok(r) => Some(r),
                },
            );
            if rows.is_empty() {
                empty_ok.push(format!("{title}: {e}"));
            }
        }
    }
    println!(
        "dashboard: {} panels' queries ran; valid but without data here (metrics this pcheck does not export): {empty_ok:#?}",
        panels.len()
    );
}
