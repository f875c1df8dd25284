//! What pcheck does to the world: run restart scripts, kill what is left of a dead
//! service. Each function reports its outcome; the decisions stay in `core`.

pub mod kill;
pub mod reboot;
pub mod restart;
