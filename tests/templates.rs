//! Every template shipped in pfiles/ (and installed by the RPM under
//! /var/opt/HA/PSWE/conf/src) is checked with the real `pcheck --check`: the pfile
//! parses and validates, its restart scripts exist, are executable and are valid
//! shell, and it prints no warning except the documented ones.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // a test fails by panicking

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

#[path = "common/skip.rs"]
mod skip;

const PCHECK: &str = env!("CARGO_BIN_EXE_pcheck");
/// Where the RPM installs the templates; the pfiles name their scripts there.
const INSTALLED: &str = "/var/opt/HA/PSWE/conf/src";
/// Template folders. Every folder of pfiles/ but `demo` (a `cargo xtask run` input,
/// not installed) must be listed here, so that a new template cannot go unchecked.
const TEMPLATES: &[&str] = &[
    "httpd",
    "tomcat",
    "nginx",
    "multi-instance",
    "samples",
    "AutoReboot",
];

/// Warnings that pfiles/samples/README.md documents: (pfile, part of the warning).
/// Each must appear (so the README stays true), and no other may.
const DOCUMENTED_WARNINGS: &[(&str, &str)] = &[
    (
        "samples/pfile_sample1",
        "PS_ACTION has 6 fields where the guide documents 7",
    ),
    (
        "samples/pfile_sample3",
        "PS_ACTION has 8 fields where the guide documents 7",
    ),
];

fn pfiles_dir() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../pfiles");
    std::fs::canonicalize(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn files_in(dir: &Path, pred: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&pred))
        .collect();
    v.sort();
    v
}

fn template_pfiles() -> Vec<(String, PathBuf)> {
    let root = pfiles_dir();
    TEMPLATES
        .iter()
        .flat_map(|t| {
            files_in(&root.join(t), |n| n.starts_with("pfile_"))
                .into_iter()
                .map(move |p| {
                    let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
                    (format!("{t}/{}", name.unwrap_or_default()), p)
                })
        })
        .collect()
}

fn restart_scripts() -> Vec<PathBuf> {
    let root = pfiles_dir();
    TEMPLATES
        .iter()
        .flat_map(|t| files_in(&root.join(t), |n| n.ends_with(".rc")))
        .collect()
}

#[test]
fn every_folder_is_a_checked_template() {
    let root = pfiles_dir();
    for e in std::fs::read_dir(&root).expect("read pfiles/").flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // haproxy/ documents the balancer's side of a template: no pfile of its own.
        if e.path().is_dir() && name != "demo" && name != "haproxy" {
            assert!(
                TEMPLATES.contains(&name.as_str()),
                "pfiles/{name}/ is not in TEMPLATES of tests/templates.rs"
            );
        }
    }
    for t in TEMPLATES {
        let d = root.join(t);
        assert!(
            d.join("README.md").is_file(),
            "pfiles/{t}/README.md missing"
        );
        assert!(
            !files_in(&d, |n| n.starts_with("pfile_")).is_empty(),
            "pfiles/{t}/ has no pfile_* file"
        );
    }
}

/// Every restart script a template names is one of the shipped ones, at the path
/// where the RPM installs it; and every shipped script is used by some template.
#[test]
fn templates_name_the_installed_scripts() {
    let root = pfiles_dir();
    let mut used = Vec::new();
    for (name, path) in template_pfiles() {
        let pf = psweb::pfile::load(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(!pf.entries.is_empty(), "{name}: no process entry");
        for e in &pf.entries {
            let rel = e
                .restart_script
                .strip_prefix(INSTALLED)
                .unwrap_or_else(|_| {
                    panic!(
                        "{name}: restart script {} is not under {INSTALLED}, where the RPM installs the templates",
                        e.restart_script.display()
                    )
                })
                .to_path_buf();
            assert!(
                root.join(&rel).is_file(),
                "{name}: restart script {} is not shipped (no pfiles/{})",
                e.restart_script.display(),
                rel.display()
            );
            used.push(root.join(rel));
        }
    }
    for s in restart_scripts() {
        assert!(
            used.contains(&s),
            "{} is shipped but no template uses it",
            s.display()
        );
    }
}

#[test]
fn every_template_passes_pcheck_check() {
    let root = pfiles_dir();
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut seen_documented = Vec::new();
    let templates = template_pfiles();
    assert!(templates.len() >= 7, "{templates:?}");
    for (name, path) in &templates {
        // The scripts are referenced by their installed path: point them at the repo.
        let text = std::fs::read_to_string(path).expect("read template");
        let copy = tmp.path().join(name.replace('/', "_"));
        std::fs::write(&copy, text.replace(INSTALLED, &root.to_string_lossy()))
            .expect("write copy");
        let out = Command::new(PCHECK)
            .arg("--check")
            .arg("-f")
            .arg(&copy)
            .output()
            .expect("run pcheck --check");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "pcheck --check {name} failed ({}):\n{stdout}{stderr}",
            out.status
        );
        assert!(stdout.contains(": OK ("), "{name}: {stdout}");
        for line in stderr.lines() {
            let documented = DOCUMENTED_WARNINGS
                .iter()
                .find(|(f, w)| f == name && line.contains(w));
            match documented {
                Some(d) => seen_documented.push(*d),
                None => panic!("{name}: undocumented output of pcheck --check: {line}"),
            }
        }
        println!("{name}: {}", stdout.trim());
    }
    for d in DOCUMENTED_WARNINGS {
        assert!(
            seen_documented.contains(d),
            "the documented warning {d:?} was not printed: update pfiles/samples/README.md"
        );
    }
}

#[test]
fn restart_scripts_are_executable_shell() {
    let scripts = restart_scripts();
    assert!(scripts.len() >= 5, "{scripts:?}");
    for s in &scripts {
        let mode = std::fs::metadata(s).expect("stat").permissions().mode();
        assert!(mode & 0o111 != 0, "{} is not executable", s.display());
        let text = std::fs::read_to_string(s).expect("read script");
        assert!(
            text.starts_with("#!/bin/sh\n"),
            "{}: scripts start with #!/bin/sh",
            s.display()
        );
        // bash (RHEL's /bin/sh) and a POSIX sh (dash) both parse it.
        for shell in ["bash", "sh"] {
            let out = Command::new(shell)
                .arg("-n")
                .arg(s)
                .output()
                .unwrap_or_else(|e| panic!("{shell}: {e}"));
            assert!(
                out.status.success(),
                "{shell} -n {}: {}",
                s.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// A line whose last non-blank character is `:` continues on the next line — in a
/// comment too. Only the seed's split PS_EXEC lines may do that in a template.
#[test]
fn no_accidental_line_continuation() {
    for (name, path) in template_pfiles() {
        let text = std::fs::read_to_string(&path).expect("read template");
        for (i, line) in text.lines().enumerate() {
            if line.trim_end().ends_with(':') {
                assert!(
                    line.trim_start().starts_with("PS_") || line.trim_start().starts_with("# DLL:"),
                    "{name}:{}: ends with ':' and so swallows the next line: {line}",
                    i + 1
                );
            }
        }
    }
}

/// pfile(5) is valid man(7) roff: groff renders it without a warning.
#[test]
fn pfile_man_page_renders() {
    let page = pfiles_dir().join("pfile.5");
    assert!(page.is_file(), "pfiles/pfile.5 missing");
    let Ok(out) = Command::new("groff")
        .args(["-man", "-ww", "-z", "-Tutf8"])
        .arg(&page)
        .output()
    else {
        skip::skip("pfile_man_page_renders", "groff is not installed");
        return;
    };
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "groff on pfile.5: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
