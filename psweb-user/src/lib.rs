//! psweb: keep web servers (Apache httpd, Tomcat, nginx) and any TCP service alive.
//!
//! Data flows one way: evidence (`sense`) -> verdict (`core`, pure) -> action (`act`)
//! -> report (`report`, `admin`). `pfile` turns configuration text into types; nothing
//! else sees raw pfile text. `agent` wires these together on a tokio runtime;
//! `shutdown` is the one way every task it spawns is stopped.

pub mod act;
pub mod admin;
pub mod agent;
pub mod cli;
pub mod core;
pub mod fleet;
pub mod gate;
pub mod lb;
pub mod paths;
pub mod pfile;
pub mod pidfd;
pub mod probe;
pub mod procfs;
pub mod report;
pub mod sense;
pub mod shutdown;
pub mod state;
pub mod tls;
pub mod trust;
