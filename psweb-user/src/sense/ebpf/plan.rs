//! Attach planning: which program serves each evidence kind on this kernel, and the
//! offsets (from BTF and the tracepoints' `format` files) written into the programs'
//! read-only [`Config`] before loading. A hook the kernel lacks is planned as skipped,
//! with what replaces it.

use std::path::Path;

use psweb_ebpf::{Config, NO_FIELD, PROG_EXIT, PROG_KFREE_SKB, PROG_SK_DATA_READY};

use super::btf::{KernelBtf, Member};
use super::tracefs::{tracepoint_fields, Fields};
use super::{EbpfError, EVIDENCE_EXIT, EVIDENCE_OVERFLOW_FINAL_ACK, EVIDENCE_OVERFLOW_SYN};

/// What to load and attach, and what to report.
pub(super) struct Plan {
    pub config: Config,
    pub attach: Vec<Attach>,
    /// (evidence kind, hook), in the report's order: exit, final ACK, SYN.
    pub hooks: Vec<(String, String)>,
    /// (evidence kind, why it is missing and what replaces it).
    pub unavailable: Vec<(String, String)>,
}

/// Where a program attaches.
pub(super) enum Hook {
    /// A tracepoint: (category, name).
    Tracepoint(&'static str, &'static str),
    /// A kprobe on the entry of a kernel function.
    Kprobe(&'static str),
}

/// One program to load and attach, and the evidence kind it serves.
pub(super) struct Attach {
    pub prog: &'static str,
    pub hook: Hook,
    pub kind: &'static str,
    /// What replaces it if it cannot be loaded or attached.
    pub fallback: &'static str,
}

/// The kprobe program: SYN-path overflow where `sock/sk_data_ready` is missing.
const PROG_TCP_CONN_REQUEST: &str = "psweb_tcp_conn_request";
/// The function it probes: every SYN to a listener passes here, and a SYN to a
/// listener whose accept queue is full is dropped here.
const KPROBE_TCP_CONN_REQUEST: &str = "tcp_conn_request";

/// Plans every hook for this kernel. Exit evidence is required; the others are
/// skipped (and reported) when the kernel cannot serve them.
pub(super) fn plan(btf: &KernelBtf, tracefs: &Path) -> Result<Plan, EbpfError> {
    let mut p = Planner {
        btf,
        tracefs,
        config: Config::EMPTY,
        attach: Vec::new(),
        hooks: Vec::new(),
        unavailable: Vec::new(),
    };
    p.exit()?;
    let sock_ok = p.sock();
    p.final_ack(sock_ok)?;
    p.syn(sock_ok)?;
    Ok(Plan {
        config: p.config,
        attach: p.attach,
        hooks: p.hooks,
        unavailable: p.unavailable,
    })
}

struct Planner<'a> {
    btf: &'a KernelBtf,
    tracefs: &'a Path,
    config: Config,
    attach: Vec<Attach>,
    /// (kind, hook or "none: why") in the order the kinds are planned: exit, final
    /// ACK, SYN (one entry each).
    hooks: Vec<(String, String)>,
    /// (kind, why) of every skipped kind.
    unavailable: Vec<(String, String)>,
}

impl Planner<'_> {
    fn serve(&mut self, attach: Attach, hook: String) {
        self.hooks.push((attach.kind.to_string(), hook));
        self.attach.push(attach);
    }

    fn skip(&mut self, kind: &'static str, why: &str) {
        self.hooks.push((kind.to_string(), format!("none: {why}")));
        self.unavailable.push((kind.to_string(), why.to_string()));
    }

    /// Process exit (required): sched_process_exit, told a whole group died by its
    /// `group_dead` field or, on kernels without it, by `signal->live == 0`.
    fn exit(&mut self) -> Result<(), EbpfError> {
        let exit =
            tracepoint_fields(self.tracefs, "sched", "sched_process_exit")?.ok_or_else(|| {
                EbpfError::Load(
                    "tracepoint sched/sched_process_exit is missing on this kernel".into(),
                )
            })?;
        self.config.task_exit_code_off = self
            .btf
            .member("task_struct", "exit_code")
            .map(|m| m.offset)
            .ok_or_else(|| EbpfError::Load("kernel BTF has no task_struct.exit_code".into()))?;
        let hook = if let Some(off) = field_off(&exit, "group_dead", Some(1)) {
            self.config.exit_group_dead_ctx_off = off;
            "tracepoint sched/sched_process_exit (group_dead)"
        } else {
            let signal = self.btf.member("task_struct", "signal");
            let live = self.btf.member("signal_struct", "live");
            let (Some(s), Some(l)) = (signal, live) else {
                return Err(EbpfError::Load(
                    "sched_process_exit has no group_dead and BTF lacks task_struct.signal / signal_struct.live".into(),
                ));
            };
            self.config.task_signal_off = s.offset;
            self.config.signal_live_off = l.offset;
            "tracepoint sched/sched_process_exit (signal->live == 0)"
        };
        let attach = Attach {
            prog: PROG_EXIT,
            hook: Hook::Tracepoint("sched", "sched_process_exit"),
            kind: EVIDENCE_EXIT,
            fallback: "pidfd or /proc polling replaces it",
        };
        self.serve(attach, hook.to_string());
        Ok(())
    }

    /// struct sock: the listener's local port, state and accept-queue depth/limit,
    /// read by the SYN path and (via kfree_skb's rx_sk) by the final-ACK path.
    /// True if the layout is understood.
    fn sock(&mut self) -> bool {
        let m = |path| self.btf.member("sock", path);
        let (Some(state), Some(num), Some(b), Some(max)) = (
            m("__sk_common.skc_state"),
            m("__sk_common.skc_num"),
            m("sk_ack_backlog"),
            m("sk_max_ack_backlog"),
        ) else {
            return false;
        };
        let queue_size_ok = |x: Member| matches!(x.size, 2 | 4);
        if state.size != 1 || num.size != 2 || !queue_size_ok(b) || !queue_size_ok(max) {
            return false;
        }
        let c = &mut self.config;
        c.sk_state_off = state.offset;
        c.sk_num_off = num.offset;
        c.sk_ack_backlog_off = b.offset;
        c.sk_ack_backlog_size = b.size;
        c.sk_max_ack_backlog_off = max.offset;
        c.sk_max_ack_backlog_size = max.size;
        true
    }

    /// Final-ACK overflow: kfree_skb with reason SKB_DROP_REASON_TCP_LISTEN_OVERFLOW.
    fn final_ack(&mut self, sock_ok: bool) -> Result<(), EbpfError> {
        const KIND: &str = EVIDENCE_OVERFLOW_FINAL_ACK;
        let Some(f) = tracepoint_fields(self.tracefs, "skb", "kfree_skb")? else {
            self.skip(KIND, "tracepoint skb/kfree_skb is missing; TcpExtListenOverflows deltas and sock_diag replace it");
            return Ok(());
        };
        let found = (|| {
            let reason = self.btf.enum_value("SKB_DROP_REASON_TCP_LISTEN_OVERFLOW")?;
            let head = self.btf.member("sk_buff", "head").filter(|m| m.size == 8)?;
            let th = self
                .btf
                .member("sk_buff", "transport_header")
                .filter(|m| m.size == 2)?;
            let reason_off = field_off(&f, "reason", Some(4))?;
            let skbaddr_off = field_off(&f, "skbaddr", Some(8))?;
            Some((reason, head, th, reason_off, skbaddr_off))
        })();
        let Some((reason, head, th, reason_off, skbaddr_off)) = found else {
            self.skip(KIND, "this kernel's kfree_skb carries no TCP_LISTEN_OVERFLOW drop reason; TcpExtListenOverflows deltas and sock_diag replace it");
            return Ok(());
        };
        let c = &mut self.config;
        c.kfree_reason_ctx_off = reason_off;
        c.kfree_skbaddr_ctx_off = skbaddr_off;
        // Enumerator values are small and non-negative; one that is not cannot match.
        c.listen_overflow_reason = u32::try_from(reason).unwrap_or(u32::MAX);
        c.skb_head_off = head.offset;
        c.skb_transport_header_off = th.offset;
        if sock_ok {
            c.kfree_rx_sk_ctx_off = field_off(&f, "rx_sk", Some(8)).unwrap_or(NO_FIELD);
        }
        let attach = Attach {
            prog: PROG_KFREE_SKB,
            hook: Hook::Tracepoint("skb", "kfree_skb"),
            kind: KIND,
            fallback: "TcpExtListenOverflows deltas and sock_diag replace it",
        };
        self.serve(
            attach,
            format!(
                "tracepoint skb/kfree_skb, reason SKB_DROP_REASON_TCP_LISTEN_OVERFLOW ({reason})"
            ),
        );
        Ok(())
    }

    /// SYN-path overflow: sk_data_ready on a full listener or, on kernels before that
    /// tracepoint (e.g. 6.1), a kprobe where a SYN to a full listener is dropped.
    fn syn(&mut self, sock_ok: bool) -> Result<(), EbpfError> {
        const KIND: &str = EVIDENCE_OVERFLOW_SYN;
        let sdr = tracepoint_fields(self.tracefs, "sock", "sk_data_ready")?;
        let offsets = sdr.as_ref().map(|f| {
            (
                field_off(f, "skaddr", Some(8)),
                field_off(f, "protocol", Some(2)),
            )
        });
        match offsets {
            Some((Some(skaddr), Some(protocol))) if sock_ok => {
                self.config.sdr_skaddr_ctx_off = skaddr;
                self.config.sdr_protocol_ctx_off = protocol;
                let attach = Attach {
                    prog: PROG_SK_DATA_READY,
                    hook: Hook::Tracepoint("sock", "sk_data_ready"),
                    kind: KIND,
                    fallback: "sock_diag polling replaces it",
                };
                self.serve(
                    attach,
                    "tracepoint sock/sk_data_ready on a listener, sk_ack_backlog > sk_max_ack_backlog".into(),
                );
            }
            // Kernels before sk_data_ready (e.g. 6.1) usually have kprobes: probe the
            // function where a SYN to a full listener is dropped.
            None if sock_ok && kprobe_available(self.tracefs, KPROBE_TCP_CONN_REQUEST) => {
                let attach = Attach {
                    prog: PROG_TCP_CONN_REQUEST,
                    hook: Hook::Kprobe(KPROBE_TCP_CONN_REQUEST),
                    kind: KIND,
                    fallback: "sock_diag polling replaces it",
                };
                self.serve(
                    attach,
                    format!(
                        "kprobe {KPROBE_TCP_CONN_REQUEST} on a listener, sk_ack_backlog > sk_max_ack_backlog (tracepoint sock/sk_data_ready is missing)"
                    ),
                );
            }
            None => self.skip(
                KIND,
                "tracepoint sock/sk_data_ready is missing (kernel too old) and no kprobe on tcp_conn_request; sock_diag polling replaces it",
            ),
            _ => self.skip(
                KIND,
                "struct sock / sk_data_ready layout not understood; sock_diag polling replaces it",
            ),
        }
        Ok(())
    }
}

/// True if this kernel can attach a kprobe to `function`: kprobe events exist
/// (CONFIG_KPROBE_EVENTS) and the symbol is in /proc/kallsyms.
fn kprobe_available(tracefs: &Path, function: &str) -> bool {
    if !tracefs.join("kprobe_events").exists() {
        return false;
    }
    let Ok(syms) = std::fs::read_to_string("/proc/kallsyms") else {
        return false;
    };
    syms.lines().any(|l| {
        let mut f = l.split_whitespace();
        let (_addr, ty, name) = (f.next(), f.next(), f.next());
        matches!(ty, Some("T" | "t")) && name == Some(function)
    })
}

fn field_off(fields: &Fields, name: &str, size: Option<u32>) -> Option<u32> {
    fields
        .get(name)
        .filter(|(_, s)| size.is_none_or(|want| *s == want))
        .map(|(o, _)| *o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kprobes_need_kprobe_events() {
        let dir = std::env::temp_dir().join(format!("psweb-kp-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // No kprobe_events file: no kprobe, whatever kallsyms says.
        assert!(!kprobe_available(&dir, KPROBE_TCP_CONN_REQUEST));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tracepoint(root: &Path, category: &str, name: &str, fields: &str) {
        let dir = root.join("events").join(category).join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("format"),
            format!("name: {name}\nformat:\n{fields}"),
        )
        .unwrap();
    }

    /// Older kernels, imitated by a tracefs that lacks hooks: exit evidence is planned
    /// from what there is, and each missing hook is skipped with what replaces it.
    #[test]
    fn missing_hooks_are_skipped_with_their_replacement() {
        let Ok(btf) = KernelBtf::read(Path::new(super::super::btf::VMLINUX_BTF)) else {
            eprintln!("SKIPPED: no kernel BTF");
            return;
        };
        let tracefs = tempfile::tempdir().unwrap();
        let root = tracefs.path();
        tracepoint(
            root,
            "sched",
            "sched_process_exit",
            "\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n",
        );
        let p = plan(&btf, root).unwrap();
        assert_eq!(p.attach.len(), 1);
        assert_eq!(p.attach[0].prog, PROG_EXIT);
        assert_eq!(p.config.exit_group_dead_ctx_off, 32);
        let kinds: Vec<&str> = p.hooks.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            kinds,
            [
                EVIDENCE_EXIT,
                EVIDENCE_OVERFLOW_FINAL_ACK,
                EVIDENCE_OVERFLOW_SYN
            ]
        );
        assert_eq!(
            p.hooks[0].1,
            "tracepoint sched/sched_process_exit (group_dead)"
        );
        assert_eq!(
            p.hooks[1].1,
            "none: tracepoint skb/kfree_skb is missing; TcpExtListenOverflows deltas and sock_diag replace it"
        );
        assert_eq!(
            p.hooks[2].1,
            "none: tracepoint sock/sk_data_ready is missing (kernel too old) and no kprobe on tcp_conn_request; sock_diag polling replaces it"
        );
        assert_eq!(p.unavailable.len(), 2);

        // No group_dead (the exit is told by signal->live), a kfree_skb without a drop
        // reason, and sk_data_ready present.
        tracepoint(
            root,
            "sched",
            "sched_process_exit",
            "\tfield:pid_t pid;\toffset:24;\tsize:4;\tsigned:1;\n",
        );
        tracepoint(
            root,
            "skb",
            "kfree_skb",
            "\tfield:void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;\n",
        );
        tracepoint(
            root,
            "sock",
            "sk_data_ready",
            "\tfield:const void * skaddr;\toffset:8;\tsize:8;\tsigned:0;\n\tfield:__u16 protocol;\toffset:18;\tsize:2;\tsigned:0;\n",
        );
        let p = plan(&btf, root).unwrap();
        let progs: Vec<&str> = p.attach.iter().map(|a| a.prog).collect();
        assert_eq!(progs, [PROG_EXIT, PROG_SK_DATA_READY]);
        assert_eq!(
            p.hooks[0].1,
            "tracepoint sched/sched_process_exit (signal->live == 0)"
        );
        assert_ne!(p.config.task_signal_off, 0);
        assert!(p.hooks[1].1.starts_with(
            "none: this kernel's kfree_skb carries no TCP_LISTEN_OVERFLOW drop reason"
        ));
        assert_eq!(
            (p.config.sdr_skaddr_ctx_off, p.config.sdr_protocol_ctx_off),
            (8, 18)
        );
        assert_eq!(p.unavailable.len(), 1);
    }
}
