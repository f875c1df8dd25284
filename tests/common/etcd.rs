//! An etcd of a test's own (Debian's etcd 3.4), on loopback ports with its data dir
//! in the test's sandbox.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common::{free_port, Sandbox};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const ETCD: &str = "/usr/bin/etcd";
const T: Duration = Duration::from_secs(60);

pub fn etcd_or_skip(test: &str) -> bool {
    if Path::new(ETCD).exists() {
        return true;
    }
    println!("SKIPPED {test}: no {ETCD} (Debian's etcd-server; `cargo xtask test` installs it)");
    false
}

/// An etcd of the test's own, on loopback ports.
pub struct Etcd {
    child: Option<Child>,
    dir: PathBuf,
    port: u16,
    peer: u16,
    extra: Vec<String>,
}

impl Etcd {
    pub fn start(sb: &Sandbox, extra: &[&str]) -> Self {
        let mut e = Self {
            child: None,
            dir: sb.file("etcd-data"),
            port: free_port(),
            peer: free_port(),
            extra: extra.iter().map(|s| (*s).to_string()).collect(),
        };
        e.run();
        e
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn run(&mut self) {
        let client = self.url();
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let child = Command::new(ETCD)
            .args(["--name", "t", "--data-dir"])
            .arg(&self.dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &format!("t={peer}")])
            .args(["--log-level", "error"])
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        let deadline = Instant::now() + T;
        // Ready when it answers a request (a connect alone can precede the leader).
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        loop {
            let ok = TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && rt.block_on(async {
                    let Ok(mut c) = etcd_client::Client::connect([client.as_str()], None).await
                    else {
                        return false;
                    };
                    c.get("x", None).await.is_ok()
                });
            if ok {
                return;
            }
            assert!(Instant::now() < deadline, "etcd did not come up");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Etcd {
    /// gRPC messages etcd received so far (its /metrics), per method.
    pub fn messages_received(&self) -> Vec<(String, f64)> {
        use std::io::{Read, Write};
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return Vec::new();
        };
        let _ = s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n");
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.lines()
            .filter(|l| l.starts_with("grpc_server_msg_received_total{"))
            .filter_map(|l| {
                let method = l.split("grpc_method=\"").nth(1)?.split('"').next()?;
                let v: f64 = l.rsplit(' ').next()?.parse().ok()?;
                Some((method.to_string(), v))
            })
            .collect()
    }
}
