//! Why pcheck could not start: the error of the layer that failed, with which entry
//! where it is about one. pcheck's binary prefixes `pcheck: ` and logs it.

use crate::admin::AdminError;
use crate::lb::LbError;
use crate::probe::ProbeError;
use crate::procfs::UserError;
use crate::report::ReportError;
use crate::sense::source::SourceError;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The control socket or the pfile's lock.
    #[error(transparent)]
    Admin(#[from] AdminError),
    /// The metrics listener or a webhook.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// A load-balancer listener.
    #[error(transparent)]
    Lb(#[from] LbError),
    /// No source of death evidence as the pfile asks.
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("cannot handle signals: {0}")]
    Signals(std::io::Error),
    #[error("pent_id {pent_id}: the {block} check cannot be set up: {source}")]
    Prober {
        pent_id: u32,
        block: String,
        source: ProbeError,
    },
    #[error("pent_id {pent_id}: owner: {source}")]
    Owner { pent_id: u32, source: UserError },
}
