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
    /// With TLS: (CA, client certificate, client key), PEM, for the readiness check.
    tls: Option<(String, String, String)>,
}

impl Etcd {
    pub fn start(sb: &Sandbox, extra: &[&str]) -> Self {
        let mut e = Self {
            child: None,
            dir: sb.file("etcd-data"),
            port: free_port(),
            peer: free_port(),
            extra: extra.iter().map(|s| (*s).to_string()).collect(),
            tls: None,
        };
        e.run();
        e
    }

    /// An etcd that serves TLS only and wants a client certificate signed by `ca`.
    /// `client`: (certificate, key) the readiness check presents; `extra`: more
    /// arguments to etcd.
    pub fn start_tls(
        sb: &Sandbox,
        ca: &Path,
        server: (&Path, &Path),
        client: (String, String),
        extra: &[&str],
    ) -> Self {
        let mut e = Self {
            child: None,
            dir: sb.file("etcd-data"),
            port: free_port(),
            peer: free_port(),
            extra: vec![
                "--cert-file".into(),
                server.0.display().to_string(),
                "--key-file".into(),
                server.1.display().to_string(),
                "--client-cert-auth".into(),
                "--trusted-ca-file".into(),
                ca.display().to_string(),
            ]
            .into_iter()
            .chain(extra.iter().map(|s| (*s).to_string()))
            .collect(),
            tls: Some((std::fs::read_to_string(ca).expect("ca"), client.0, client.1)),
        };
        e.run();
        e
    }

    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.port)
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
            .stderr(
                std::fs::File::create(self.dir.with_extension("log"))
                    .map_or_else(|_| Stdio::null(), Stdio::from),
            )
            .spawn()
            .expect("spawn etcd");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        // Ready when it answers a request (a connect alone can precede the leader).
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("rt");
        loop {
            let ok = TcpStream::connect(("127.0.0.1", self.port)).is_ok()
                && rt.block_on(async {
                    let opts = self.tls.as_ref().map(|(ca, cert, key)| {
                        etcd_client::ConnectOptions::new().with_tls(
                            etcd_client::TlsOptions::new()
                                .ca_certificate(etcd_client::Certificate::from_pem(ca))
                                .identity(etcd_client::Identity::from_pem(cert, key)),
                        )
                    });
                    let Ok(mut c) = etcd_client::Client::connect([client.as_str()], opts).await
                    else {
                        return false;
                    };
                    c.get("x", None).await.is_ok()
                });
            if ok {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "etcd did not come up: {}",
                std::fs::read_to_string(self.dir.with_extension("log")).unwrap_or_default()
            );
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
