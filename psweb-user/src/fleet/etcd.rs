//! The fleet's keys in etcd, and the few requests psweb makes on them.
//!
//! Under `/psweb/fleet/<fleet_name>/`:
//! - `config/max_rebooting`: the reboot budget, written by the first host (a
//!   transaction that only creates it).
//! - `members/<host>/<pfile>`: one key per pcheck, bound to its member lease
//!   (`fleet_lease_ttl`), with the health of its entries (JSON).
//! - `reboot/<slot>`: a reboot slot, 0 .. budget-1, taken by a transaction that only
//!   creates it (so two hosts never both take it), bound to its own lease
//!   (`fleet_reboot_ttl`) so that it outlives the pcheck that rebooted the host.
//! - `hold`: an operator's fleet-wide hold of automatic reboots (who set it).
//! - `released/<host>`: written and deleted at once when an operator frees a host's
//!   slot, so that every member logs it.
//!
//! Each pcheck watches the prefix (one stream, no polling): it logs operator actions
//! and looks again at once when the fleet changes while a reboot of its waits.

use crate::core::fleet::{Health, View};
use crate::pfile::FleetCfg;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp,
};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// An etcd error, with whether it was an expired or refused authentication (the
/// connection is then made again, which authenticates again).
#[derive(thiserror::Error, Debug)]
#[error("{msg}")]
pub struct Error {
    pub msg: String,
    pub unauthenticated: bool,
}

impl From<etcd_client::Error> for Error {
    fn from(e: etcd_client::Error) -> Self {
        let msg = e.to_string();
        // etcd: "etcdserver: invalid auth token" with gRPC code Unauthenticated.
        let unauthenticated = matches!(&e, etcd_client::Error::GRpcStatus(_))
            && (msg.contains("Unauthenticated") || msg.contains("auth token"));
        Self {
            msg,
            unauthenticated,
        }
    }
}

impl From<String> for Error {
    fn from(msg: String) -> Self {
        Self {
            msg,
            unauthenticated: false,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;

/// What a member key holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct MemberRecord {
    /// The worst health of the pfile's entries.
    pub health: Health,
    /// pent_id, health.
    pub entries: Vec<(u32, Health)>,
    /// Unix seconds of the last change.
    pub updated: u64,
}

/// What a reboot slot key holds.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct SlotRecord {
    pub host: String,
    /// Unix seconds when it was taken.
    pub taken: u64,
    /// The slot's own lease (kept alive once per reboot of its host).
    pub lease: i64,
}

/// One connection to the fleet's etcd.
#[derive(Clone)]
pub struct Conn {
    pub client: Client,
    pub prefix: String,
}

/// Reads a file that holds a secret (a password, a private key): a regular file, not
/// a symlink, and (pcheck being root) readable by its owner only.
fn read_secret(path: &std::path::Path, what: &str) -> Result<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let err = |why: String| Error::from(format!("{what} {}: {why}", path.display()));
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| err(e.to_string()))?;
    let m = f.metadata().map_err(|e| err(e.to_string()))?;
    if !m.is_file() {
        return Err(err("not a regular file".to_string()));
    }
    if crate::trust::is_root() && m.mode() & 0o077 != 0 {
        return Err(err(format!(
            "readable or writable by others (mode {:04o}): it holds a secret; chmod 600 it",
            m.mode() & 0o7777
        )));
    }
    let mut out = Vec::new();
    f.take(1024 * 1024)
        .read_to_end(&mut out)
        .map_err(|e| err(e.to_string()))?;
    Ok(out)
}

pub fn prefix(fleet: &str) -> String {
    format!("/psweb/fleet/{fleet}/")
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX).max(1)
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Conn {
    /// Connects (and authenticates, with `fleet_user`).
    pub async fn connect(cfg: &FleetCfg) -> Result<Self> {
        let mut opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(2))
            .with_timeout(Duration::from_secs(5));
        if let Some(user) = &cfg.user {
            let password = match &cfg.password_file {
                Some(p) => String::from_utf8_lossy(&read_secret(p, "fleet_password_file")?)
                    .trim_end_matches(['\r', '\n'])
                    .to_string(),
                None => String::new(),
            };
            opts = opts.with_user(user.clone(), password);
        }
        let https = cfg.endpoints.iter().any(|e| e.starts_with("https://"));
        if https || cfg.tls_ca.is_some() || cfg.tls_cert.is_some() {
            let mut tls = TlsOptions::new();
            if let Some(ca) = &cfg.tls_ca {
                let pem =
                    std::fs::read(ca).map_err(|e| format!("fleet_tls_ca {}: {e}", ca.display()))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            } else {
                // No fleet_tls_ca: the system's CA roots.
                tls = tls.with_native_roots();
            }
            if let (Some(c), Some(k)) = (&cfg.tls_cert, &cfg.tls_key) {
                let cert =
                    std::fs::read(c).map_err(|e| format!("fleet_tls_cert {}: {e}", c.display()))?;
                let key = read_secret(k, "fleet_tls_key")?;
                tls = tls.identity(Identity::from_pem(cert, key));
            }
            opts = opts.with_tls(tls);
        }
        let client = Client::connect(&cfg.endpoints, Some(opts)).await?;
        Ok(Self {
            client,
            prefix: prefix(&cfg.name),
        })
    }

    fn key(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// A budget of the fleet (`config/NAME`: max_rebooting, max_restarting): `wanted`
    /// when this host is the first, else the stored one.
    pub async fn budget(&mut self, name: &str, wanted: u32) -> Result<u32> {
        let key = self.key(&format!("config/{name}"));
        let txn = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.clone(), wanted.to_string(), None)])
            .or_else([TxnOp::get(key.clone(), None)]);
        let r = self.client.txn(txn).await?;
        if r.succeeded() {
            return Ok(wanted);
        }
        let got = self.client.get(key, None).await?;
        let stored = got
            .kvs()
            .first()
            .and_then(|kv| kv.value_str().ok())
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| format!("the fleet's config/{name} is not a number"))?;
        Ok(stored)
    }

    pub async fn grant(&mut self, ttl: Duration) -> Result<i64> {
        Ok(self.client.lease_grant(secs(ttl), None).await?.id())
    }

    /// One keep-alive of a lease; false when the lease is gone.
    pub async fn keep_alive_once(&mut self, lease: i64) -> Result<bool> {
        let once = async {
            let (mut keeper, mut stream) = self.client.lease_keep_alive(lease).await?;
            keeper.keep_alive().await?;
            Ok::<_, etcd_client::Error>(stream.message().await?.is_some_and(|r| r.ttl() > 0))
        };
        tokio::time::timeout(Duration::from_secs(3), once)
            .await
            .map_err(|_| Error::from("no answer to a lease keep-alive".to_string()))?
            .map_err(Error::from)
    }

    pub async fn revoke(&mut self, lease: i64) -> Result<()> {
        self.client.lease_revoke(lease).await?;
        Ok(())
    }

    pub async fn put_member(
        &mut self,
        host: &str,
        pfile: &str,
        rec: &MemberRecord,
        lease: i64,
    ) -> Result<()> {
        let v = serde_json::to_string(rec).map_err(|e| e.to_string())?;
        self.client
            .put(
                self.key(&format!("members/{host}/{pfile}")),
                v,
                Some(PutOptions::new().with_lease(lease)),
            )
            .await?;
        Ok(())
    }

    /// The whole fleet in one range request.
    pub async fn view(&mut self, budget: u32) -> Result<View> {
        let r = self
            .client
            .get(self.prefix.clone(), Some(GetOptions::new().with_prefix()))
            .await?;
        let mut v = View {
            max_rebooting: budget,
            ..View::default()
        };
        for kv in r.kvs() {
            let (Ok(k), Ok(val)) = (kv.key_str(), kv.value_str()) else {
                continue;
            };
            let Some(rest) = k.strip_prefix(&self.prefix) else {
                continue;
            };
            if let Some(m) = rest.strip_prefix("members/") {
                let Some((host, pfile)) = m.split_once('/') else {
                    continue;
                };
                let health = serde_json::from_str::<MemberRecord>(val)
                    .map_or(Health::Restarting, |r| r.health);
                v.members
                    .entry(host.to_string())
                    .or_default()
                    .insert(pfile.to_string(), health);
            } else if let Some((kind @ ("reboot" | "restart"), i)) = rest.split_once('/') {
                if let (Ok(i), Ok(rec)) = (i.parse(), serde_json::from_str::<SlotRecord>(val)) {
                    let slots = if kind == "reboot" {
                        &mut v.slots
                    } else {
                        &mut v.restart_slots
                    };
                    slots.insert(i, rec.host);
                }
            } else if rest == "hold" {
                v.operator_hold = Some(val.to_string());
            }
        }
        Ok(v)
    }

    /// Every member key: (host, pfile, record).
    pub async fn members(&mut self) -> Result<Vec<(String, String, MemberRecord)>> {
        let pre = self.key("members/");
        let r = self
            .client
            .get(pre.clone(), Some(GetOptions::new().with_prefix()))
            .await?;
        Ok(r.kvs()
            .iter()
            .filter_map(|kv| {
                let rest = kv.key_str().ok()?.strip_prefix(&pre)?;
                let (host, pfile) = rest.split_once('/')?;
                let rec = serde_json::from_slice(kv.value()).ok()?;
                Some((host.to_string(), pfile.to_string(), rec))
            })
            .collect())
    }

    /// The record of a slot (`kind`: reboot or restart).
    pub async fn slot(&mut self, kind: &str, i: u32) -> Result<Option<SlotRecord>> {
        let r = self
            .client
            .get(self.key(&format!("{kind}/{i}")), None)
            .await?;
        Ok(r.kvs()
            .first()
            .and_then(|kv| serde_json::from_slice(kv.value()).ok()))
    }

    /// Takes the first free slot of `free` for `host`; Some(slot) when taken. Each try
    /// is a transaction that only creates the key: two hosts never hold one slot.
    pub async fn take_slot(
        &mut self,
        kind: &str,
        host: &str,
        free: &[u32],
        ttl: Duration,
    ) -> Result<Option<u32>> {
        let lease = self.grant(ttl).await?;
        for i in free {
            let key = self.key(&format!("{kind}/{i}"));
            let rec = SlotRecord {
                host: host.to_string(),
                taken: unix_now(),
                lease,
            };
            let val = serde_json::to_string(&rec).map_err(|e| e.to_string())?;
            let txn = Txn::new()
                .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                .and_then([TxnOp::put(
                    key,
                    val,
                    Some(PutOptions::new().with_lease(lease)),
                )]);
            if self.client.txn(txn).await?.succeeded() {
                return Ok(Some(*i));
            }
        }
        self.revoke(lease).await?;
        Ok(None)
    }

    /// Keeps a slot this host already holds for another `fleet_reboot_ttl` (a repeated
    /// reboot). False when it expired meanwhile.
    pub async fn refresh_slot(&mut self, kind: &str, i: u32, host: &str) -> Result<bool> {
        match self.slot(kind, i).await? {
            Some(rec) if rec.host == host => self.keep_alive_once(rec.lease).await,
            _ => Ok(false),
        }
    }

    /// Gives a slot back (only if `host` still holds it; None: any holder).
    pub async fn release_slot(&mut self, kind: &str, i: u32, host: Option<&str>) -> Result<bool> {
        let Some(rec) = self.slot(kind, i).await? else {
            return Ok(false);
        };
        if host.is_some_and(|h| h != rec.host) {
            return Ok(false);
        }
        // Revoking the lease deletes the key with it.
        self.revoke(rec.lease).await?;
        Ok(true)
    }

    pub async fn set_hold(&mut self, who: &str) -> Result<()> {
        self.client.put(self.key("hold"), who, None).await?;
        Ok(())
    }

    /// Tells every member that an operator freed `host`'s slot of `kind` (a key they
    /// see come and go through their watch: `released/HOST` for a reboot slot,
    /// `released-restart/HOST` for a restart slot).
    pub async fn note_release(&mut self, kind: &str, host: &str, who: &str) -> Result<()> {
        let key = if kind == "reboot" {
            self.key(&format!("released/{host}"))
        } else {
            self.key(&format!("released-{kind}/{host}"))
        };
        self.client.put(key.clone(), who, None).await?;
        self.client.delete(key, None).await?;
        Ok(())
    }

    pub async fn clear_hold(&mut self) -> Result<bool> {
        let r = self
            .client
            .delete(self.key("hold"), Some(DeleteOptions::new()))
            .await?;
        Ok(r.deleted() > 0)
    }

    /// Seconds left on a slot's lease (for `show fleet`).
    pub async fn slot_ttl(&mut self, kind: &str, i: u32) -> Result<Option<i64>> {
        let Some(rec) = self.slot(kind, i).await? else {
            return Ok(None);
        };
        let r = self.client.lease_time_to_live(rec.lease, None).await?;
        Ok(Some(r.ttl()))
    }
}
