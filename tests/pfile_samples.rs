//! Every pfile shipped in pfiles/ parses, and the seed's three samples mean what the
//! guide says they mean.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use psweb::pfile::{self, StallKind};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn pfiles_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../pfiles")
}

fn shipped(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read pfiles/").flatten() {
        let p = e.path();
        if p.is_dir() {
            shipped(&p, out);
        } else if p
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| (n.starts_with("pfile") && !n.contains('.')) || n.ends_with(".pfile"))
        {
            out.push(p);
        }
    }
}

#[test]
fn every_shipped_pfile_parses() {
    let mut files = Vec::new();
    shipped(&pfiles_dir(), &mut files);
    assert!(files.len() >= 3, "the seed's samples at least: {files:?}");
    for f in &files {
        if let Err(e) = pfile::load(f) {
            panic!("{e}");
        }
    }
}

#[test]
fn seed_samples_mean_what_the_guide_says() {
    let d = pfiles_dir().join("samples");
    let s1 = pfile::load(&d.join("pfile_sample1")).expect("sample1");
    let s2 = pfile::load(&d.join("pfile_sample2")).expect("sample2");
    let s3 = pfile::load(&d.join("pfile_sample3")).expect("sample3");
    let c1 = s1.entries[0].stall.clone().expect("sample1 block");
    let c2 = s2.entries[0].stall.clone().expect("sample2 block");
    let c3 = s3.entries[0].stall.clone().expect("sample3 block");
    assert_eq!((c1.kind, c1.port), (StallKind::Web, 8080));
    assert_eq!((c2.kind, c2.port), (StallKind::Socket, 8080));
    assert_eq!((c3.kind, c3.port), (StallKind::Ssl, 433));
    for c in [&c1, &c2, &c3] {
        assert_eq!(c.interval, Duration::from_secs(60), "seed default interval");
        assert_eq!(
            c.duration,
            Duration::from_secs(600),
            "seed default retry-over time"
        );
        assert!(
            c.retry_over_on_kill_failure,
            "every sample's ACTION error is 1"
        );
        assert!(!c.stop_after_detect);
    }
    assert_eq!(c3.path.as_deref(), Some("/"));
    assert_eq!(c3.host.as_deref(), Some("localhost"));
    assert_eq!(c3.probe_timeout, Some(Duration::from_secs(5)));
    // The off-shape ACTION lines of samples 1 and 3 are read, and said to be read.
    assert_eq!(s1.warnings.len(), 1, "{:?}", s1.warnings);
    assert!(s2.warnings.is_empty(), "{:?}", s2.warnings);
    assert_eq!(s3.warnings.len(), 1, "{:?}", s3.warnings);
}
