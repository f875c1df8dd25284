//! Pictures of the benchmarks: SVG charts drawn from the JSON the benchmark programs
//! write under target/bench/, into docs/bench/ (linked from BENCHMARKS.md).
//! `cargo xtask bench` draws them after its runs; `cargo xtask charts` redraws them
//! from the JSON already there. A chart whose JSON is missing is skipped, with a line
//! saying so.

use crate::util::root;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;
use std::path::{Path, PathBuf};

const W: u32 = 900;

fn read(name: &str) -> Option<Value> {
    let p = root().join("target/bench").join(name);
    let text = std::fs::read_to_string(&p).ok()?;
    serde_json::from_str(&text).ok()
}

fn out_dir() -> Result<PathBuf, String> {
    let d = root().join("docs/bench");
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    Ok(d)
}

fn err<E: std::fmt::Display>(e: E) -> String {
    format!("drawing: {e}")
}

/// Draws one chart from its JSON into an SVG file.
type Chart = fn(&Value, &Path) -> Result<(), String>;

/// Draws every chart whose JSON is there; returns the files written.
pub fn draw() -> Result<Vec<PathBuf>, String> {
    let dir = out_dir()?;
    let mut written = Vec::new();
    let charts: [(&str, &str, Chart); 3] = [
        ("death.json", "death.svg", death),
        ("stall.json", "stall.svg", stall),
        ("vs_monit.json", "vs_monit.svg", vs_monit),
    ];
    for (json, svg, f) in charts {
        match read(json) {
            Some(v) => {
                let p = dir.join(svg);
                f(&v, &p)?;
                eprintln!("xtask: wrote {}", p.display());
                written.push(p);
            }
            None => eprintln!("xtask: no target/bench/{json}: {svg} not drawn"),
        }
    }
    Ok(written)
}

/// `cargo xtask charts`.
pub fn run(_args: &[String]) -> Result<(), String> {
    draw().map(|_| ())
}

const COLORS: [RGBColor; 4] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xd6, 0x27, 0x28),
];

/// Death-detection latency per evidence source: the share of kills detected within
/// each time (an empirical CDF), log time axis.
fn death(v: &Value, out: &Path) -> Result<(), String> {
    let series: Vec<(String, Vec<f64>)> = v["latency"]
        .as_array()
        .ok_or("death.json: no latency")?
        .iter()
        .map(|l| {
            let name = l["evidence"].as_str().unwrap_or("?").to_string();
            let mut ms: Vec<f64> = match l["samples_us"].as_array() {
                Some(s) => s
                    .iter()
                    .filter_map(Value::as_f64)
                    .map(|u| u / 1000.0)
                    .collect(),
                // An older JSON has the percentiles only.
                None => ["p50_us", "p99_us", "max_us"]
                    .iter()
                    .filter_map(|k| l[*k].as_f64())
                    .map(|u| u / 1000.0)
                    .collect(),
            };
            ms.sort_by(f64::total_cmp);
            (name, ms)
        })
        .collect();
    let max = series
        .iter()
        .flat_map(|s| s.1.iter().copied())
        .fold(1.0f64, f64::max);
    let root = SVGBackend::new(out, (W, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let kills = v["kills_per_mode"].as_u64().unwrap_or(0);
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("kill -9 -> Process Down: share of {kills} kills detected within t, per evidence source"),
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d((0.05f64..max * 1.5).log_scale(), 0f64..1.0f64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("detection latency (ms, log scale)")
        .y_desc("share of kills")
        .y_label_formatter(&|y| format!("{:.0} %", y * 100.0))
        .x_label_formatter(&|x| format!("{x}"))
        .draw()
        .map_err(err)?;
    for (i, (name, ms)) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let n = ms.len().max(1) as f64;
        let mut pts = Vec::with_capacity(ms.len() * 2);
        for (k, x) in ms.iter().enumerate() {
            pts.push((*x, k as f64 / n));
            pts.push((*x, (k + 1) as f64 / n));
        }
        let p50 = ms.get(ms.len() / 2).copied().unwrap_or(0.0);
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))
            .map_err(err)?
            .label(format!("{name} (median {p50:.2} ms)"))
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// Stall verdict times: each run a dot, per mode, with the kernel-evidence goal.
fn stall(v: &Value, out: &Path) -> Result<(), String> {
    let modes: Vec<(String, Vec<f64>)> = v["verdict_ms"]
        .as_object()
        .ok_or("stall.json: no verdict_ms")?
        .iter()
        .map(|(k, runs)| {
            let label = match k.as_str() {
                "seed_rule_interval10_retry10" => {
                    "seed rule (interval 10 s, retry 10 s)".to_string()
                }
                "kernel_evidence_window2s" => "kernel evidence (window 2 s)".to_string(),
                other => other.to_string(),
            };
            let s = runs
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_f64)
                        .map(|m| m / 1000.0)
                        .collect()
                })
                .unwrap_or_default();
            (label, s)
        })
        .collect();
    let max = modes
        .iter()
        .flat_map(|m| m.1.iter().copied())
        .fold(3.0f64, f64::max);
    let rows = modes.len() as f64;
    let root = SVGBackend::new(out, (W, 100 + 70 * modes.len() as u32)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let labels: Vec<String> = modes.iter().map(|m| m.0.clone()).collect();
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "SIGSTOP of every server process (+ 40 clients) -> stall verdict, each run",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(250)
        .build_cartesian_2d(0f64..max * 1.1, -0.5f64..rows - 0.5)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds from SIGSTOP to the verdict")
        .y_labels(modes.len().max(1))
        .y_label_formatter(&|y| {
            let i = y.round();
            if (y - i).abs() < 0.01 && i >= 0.0 {
                labels.get(i as usize).cloned().unwrap_or_default()
            } else {
                String::new()
            }
        })
        .disable_y_mesh()
        .draw()
        .map_err(err)?;
    chart
        .draw_series(LineSeries::new(
            vec![(3.0, -0.5), (3.0, rows - 0.5)],
            RED.stroke_width(1),
        ))
        .map_err(err)?
        .label("goal: kernel evidence <= 3 s")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], RED));
    for (i, (_, runs)) in modes.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        chart
            .draw_series(
                runs.iter()
                    .map(|s| Circle::new((*s, i as f64), 6, c.mix(0.6).filled())),
            )
            .map_err(err)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)
}

/// psweb vs monit per fault: time to detect and time until HEAD answers again, per
/// configuration, log time axis.
fn vs_monit(v: &Value, out: &Path) -> Result<(), String> {
    const FAULTS: [(&str, &str); 3] = [
        ("kill9", "kill -9 master"),
        ("sigstop", "SIGSTOP all httpd"),
        ("saturated", "accept queue saturated"),
    ];
    const CONFIGS: [(&str, &str); 4] = [
        ("psweb_default", "psweb (_bi_webserv 10/10)"),
        ("psweb_kernel", "psweb (+ evidence = kernel)"),
        ("monit_30s", "monit (set daemon 30)"),
        ("monit_1s", "monit (set daemon 1)"),
    ];
    let cap_ms = v["cap_s"].as_f64().unwrap_or(60.0) * 1000.0;
    let cells = v["cells"].as_array().ok_or("vs_monit.json: no cells")?;
    let cell = |f: &str, c: &str| {
        cells
            .iter()
            .find(|x| x["fault"] == f && x["config"] == c)
            .cloned()
    };
    let root = SVGBackend::new(out, (W, 760)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let halves = root.split_evenly((2, 1));
    let figures: [(&str, &str); 2] = [
        ("detect_ms", "time to detect the fault"),
        ("head_again_ms", "time until HEAD / answers again"),
    ];
    for (area, (key, title)) in halves.iter().zip(figures) {
        let slots = CONFIGS.len() as f64 + 1.0;
        let mut chart = ChartBuilder::on(area)
            .caption(format!("psweb vs monit: {title}"), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(35)
            .y_label_area_size(60)
            .build_cartesian_2d(
                0f64..FAULTS.len() as f64 * slots,
                (0.1f64..cap_ms * 300.0).log_scale(),
            )
            .map_err(err)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_desc("time (ms; log scale)")
            .y_label_formatter(&|y| {
                if *y >= 1000.0 {
                    format!("{} s", y / 1000.0)
                } else {
                    format!("{y}")
                }
            })
            .draw()
            .map_err(err)?;
        for (ci, (ckey, cname)) in CONFIGS.iter().enumerate() {
            let c = COLORS[ci % COLORS.len()];
            let mut bars = Vec::new();
            let mut notes = Vec::new();
            for (fi, (fkey, _)) in FAULTS.iter().enumerate() {
                let x0 = fi as f64 * slots + ci as f64;
                let Some(cell) = cell(fkey, ckey) else {
                    continue;
                };
                match cell[key].as_f64() {
                    Some(ms) if key == "head_again_ms" && cell["head_never_failed"] == true => {
                        notes.push((x0, 0.15, "never failed".to_string()));
                        let _ = ms;
                    }
                    Some(ms) => bars.push(Rectangle::new(
                        [(x0 + 0.1, 0.1), (x0 + 0.9, ms.max(0.1))],
                        c.filled(),
                    )),
                    None => {
                        bars.push(Rectangle::new(
                            [(x0 + 0.1, 0.1), (x0 + 0.9, cap_ms)],
                            c.mix(0.25).filled(),
                        ));
                        notes.push((x0, cap_ms * 1.3, format!("> {} s", cap_ms / 1000.0)));
                    }
                }
            }
            chart
                .draw_series(bars)
                .map_err(err)?
                .label(*cname)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 14, y + 5)], c.filled()));
            chart
                .draw_series(notes.into_iter().map(|(x, y, t)| {
                    Text::new(
                        t,
                        (x + 0.05, y),
                        ("sans-serif", 9).into_font().color(&BLACK),
                    )
                }))
                .map_err(err)?;
        }
        // The fault of each group, under it.
        for (fi, (_, fname)) in FAULTS.iter().enumerate() {
            let centre = fi as f64 * slots + (slots - 1.0) / 2.0;
            let (px, py) = chart.backend_coord(&(centre, 0.1));
            root.draw(&Text::new(
                *fname,
                (px, py + 8),
                ("sans-serif", 14)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Center, VPos::Top)),
            ))
            .map_err(err)?;
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .draw()
            .map_err(err)?;
    }
    root.present().map_err(err)
}
