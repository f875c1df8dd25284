//! padmin's requests, answered from the main task (except `events`, which the
//! control socket's own task serves from the event bus).

use super::Agent;
use crate::admin::server::Call;
use crate::admin::view::{kernel_view, pent_view};
use crate::admin::{PentView, Request, Response};
use crate::core::{EventKind, Evidence, Level};
use crate::fleet::Fleet;
use crate::report::events::EventInfo;
use std::time::{Duration, Instant};

impl Agent {
    /// Answers one request. Some(exit status) when pcheck must end.
    pub(super) async fn on_call(&mut self, call: Call, fleet: Option<&Fleet>) -> Option<u8> {
        let Call {
            req,
            reply,
            written,
        } = call;
        let resp = match req {
            Request::ShowPent => self.show_pent(),
            Request::Events { .. } => Response::error("events are served by the control socket"),
            Request::ShowKernel => Response {
                ok: true,
                kernel: Some(kernel_view(
                    self.ctx.source,
                    self.kernel.report.as_ref(),
                    &self.ports,
                )),
                ..Response::default()
            },
            Request::ShowLb => Response {
                ok: true,
                lb: self.ctx.lb.views(None, Instant::now()),
                ..Response::default()
            },
            Request::Drain { pent_id } | Request::Ready { pent_id } => {
                self.drain(pent_id, matches!(req, Request::Drain { .. }))
            }
            Request::ShowFleet
            | Request::FleetHold { .. }
            | Request::FleetResume
            | Request::FleetRelease { .. } => {
                crate::fleet::serve(fleet, req, reply);
                return None;
            }
            Request::Shutdown => {
                self.ctx.log.event(
                    Level::Info,
                    "pcheck shutdown: requested by padmin",
                    EventInfo::new(EventKind::PcheckStop),
                );
                let _ = reply.send(Response::message("pcheck shut down"));
                let _ = tokio::time::timeout(Duration::from_secs(1), written).await;
                return Some(0);
            }
            Request::Stop { pent_id } | Request::Start { pent_id } => {
                let (resp, code) = self.monitor(pent_id, matches!(req, Request::Start { .. }));
                let _ = reply.send(resp);
                return code;
            }
        };
        let _ = reply.send(resp);
        None
    }

    fn show_pent(&self) -> Response {
        let entries = self
            .slots
            .iter()
            .enumerate()
            .map(|(i, s)| PentView {
                lb_state: self.ctx.lb.state_of(i),
                ..pent_view(&s.cfg, &s.core, self.ctx.source, self.anchor)
            })
            .collect();
        Response {
            ok: true,
            entries,
            ..Response::default()
        }
    }

    fn no_entry(&self, pent_id: u32) -> Response {
        Response::error(format!(
            "no process entry with pent_id {pent_id} (this pfile has {})",
            self.slots.len()
        ))
    }

    /// `padmin -c drain` / `ready`: what the load balancer is told of one entry.
    fn drain(&mut self, pent_id: u32, drain: bool) -> Response {
        let Some(slot) = self.slots.iter_mut().find(|s| s.cfg.pent_id == pent_id) else {
            return self.no_entry(pent_id);
        };
        slot.lb_drain = drain;
        self.ctx.log.info(&format!(
            "load balancer drain of pent_id= {pent_id} {} by padmin",
            if drain { "set" } else { "undone" }
        ));
        self.sync_metrics();
        Response::message(format!(
            "pent_id {pent_id}: the load balancer is told {}",
            if drain {
                "drain"
            } else {
                "ready (when healthy)"
            }
        ))
    }

    /// `padmin -c stop` / `start`: monitoring of one entry off or on.
    fn monitor(&mut self, pent_id: u32, on: bool) -> (Response, Option<u8>) {
        let Some(idx) = self.slots.iter().position(|s| s.cfg.pent_id == pent_id) else {
            return (self.no_entry(pent_id), None);
        };
        let ev = if on {
            Evidence::MonitorOn
        } else {
            Evidence::MonitorOff
        };
        let code = self.feed_and_sync(idx, ev);
        let resp = Response::message(format!(
            "monitor_sts of pent_id {pent_id} is {}",
            if on { "on" } else { "off" }
        ));
        (resp, code)
    }
}
