//! psweb's eBPF programs. Built only for the bpf target (`cargo xtask build-ebpf`);
//! on the host this file is a stub so that `cargo build --workspace` works.
//!
//! Three tracepoint programs, each filtering in the kernel so that only watched
//! processes and ports ever wake userspace:
//!
//! - `sched/sched_process_exit`: the last thread of a watched thread group exits.
//! - `skb/kfree_skb` with reason TCP_LISTEN_OVERFLOW: a final ACK dropped because the
//!   accept queue of a watched port is full.
//! - `sock/sk_data_ready` on a watched TCP listener: a connection was queued for
//!   accept and the queue is now full (`sk_ack_backlog > sk_max_ack_backlog`, the
//!   kernel's `sk_acceptq_is_full`), so every later SYN is dropped silently.
//! - kprobe `tcp_conn_request` (the loader's replacement on kernels without
//!   `sk_data_ready`, e.g. 6.1, when kprobes exist): a SYN reached a watched listener
//!   whose accept queue is full, so the kernel drops it (LINUX_MIB_LISTENOVERFLOWS).
//!
//! Events reach userspace through a ring buffer (feature `ring-buffer`, the default),
//! or through a perf event array (feature `perf-array`, the object for kernels without
//! BPF_MAP_TYPE_RINGBUF); the programs and their filters are the same.
//!
//! Kernel layouts come from [`psweb_ebpf::Config`], written by the loader from BTF and
//! the tracepoint format files; the programs hold no kernel offsets of their own.
#![cfg_attr(target_arch = "bpf", no_std)]
#![cfg_attr(target_arch = "bpf", no_main)]

#[cfg(not(target_arch = "bpf"))]
fn main() {
    eprintln!("psweb-ebpf is built for the bpf target: run `cargo xtask build-ebpf`");
}

#[cfg(target_arch = "bpf")]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[cfg(target_arch = "bpf")]
mod programs {
    #[cfg(feature = "perf-array")]
    use aya_ebpf::maps::PerfEventArray;
    #[cfg(not(feature = "perf-array"))]
    use aya_ebpf::maps::RingBuf;
    use aya_ebpf::{
        helpers::{
            bpf_get_current_pid_tgid, bpf_get_current_task, bpf_ktime_get_ns, bpf_probe_read_kernel,
        },
        macros::{kprobe, map, tracepoint},
        maps::{HashMap, LruHashMap},
        programs::{ProbeContext, TracePointContext},
        EbpfContext,
    };
    #[cfg(not(feature = "perf-array"))]
    use aya_log_ebpf::warn;
    #[cfg(not(feature = "perf-array"))]
    use psweb_ebpf::EVENTS_BYTES;
    use psweb_ebpf::{
        Config, Event, EVENT_EXIT, EVENT_OVERFLOW_FINAL_ACK, EVENT_OVERFLOW_SYN, IPPROTO_TCP,
        MAX_WATCHED_PIDS, MAX_WATCHED_PORTS, NO_FIELD, TCP_LISTEN,
    };

    /// Written by the loader before load (`EbpfLoader::override_global`); read-only here.
    #[unsafe(no_mangle)]
    static PSWEB_CONFIG: Config = Config::EMPTY;

    /// Reads one field of [`PSWEB_CONFIG`] without letting the compiler fold the default.
    macro_rules! cfg {
        ($field:ident) => {
            unsafe { core::ptr::read_volatile(&raw const PSWEB_CONFIG.$field) }
        };
    }

    #[map(name = "WATCHED_PIDS")]
    static WATCHED_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(MAX_WATCHED_PIDS, 0);

    #[map(name = "WATCHED_PORTS")]
    static WATCHED_PORTS: HashMap<u16, u8> = HashMap::with_max_entries(MAX_WATCHED_PORTS, 0);

    #[map(name = "OVERFLOW_LAST")]
    static OVERFLOW_LAST: LruHashMap<u32, u64> =
        LruHashMap::with_max_entries(2 * MAX_WATCHED_PORTS, 0);

    #[cfg(not(feature = "perf-array"))]
    #[map(name = "EVENTS")]
    static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_BYTES, 0);

    /// One perf buffer per CPU; the loader sizes it to the CPU count.
    #[cfg(feature = "perf-array")]
    #[map(name = "EVENTS")]
    static EVENTS: PerfEventArray<Event> = PerfEventArray::new(0);

    /// Reads a `T` at `base + off` in kernel memory.
    #[inline(always)]
    fn read_kernel<T>(base: *const u8, off: u32) -> Option<T> {
        if off == NO_FIELD {
            return None;
        }
        unsafe { bpf_probe_read_kernel(base.wrapping_add(off as usize).cast::<T>()) }.ok()
    }

    /// Reads an unsigned integer of `size` bytes (2 or 4) at `base + off`.
    #[inline(always)]
    fn read_uint(base: *const u8, off: u32, size: u32) -> Option<u32> {
        if size == 2 {
            read_kernel::<u16>(base, off).map(u32::from)
        } else {
            read_kernel::<u32>(base, off)
        }
    }

    #[inline(always)]
    fn read_ctx<T>(ctx: &TracePointContext, off: u32) -> Option<T> {
        if off == NO_FIELD {
            return None;
        }
        unsafe { ctx.read_at::<T>(off as usize) }.ok()
    }

    #[cfg(feature = "perf-array")]
    #[inline(always)]
    fn emit<C: EbpfContext>(ctx: &C, ev: Event) {
        // A full per-CPU buffer counts the loss, which the reader reports.
        EVENTS.output(ctx, ev, 0);
    }

    #[cfg(not(feature = "perf-array"))]
    #[inline(always)]
    fn emit<C: EbpfContext>(ctx: &C, ev: Event) {
        match EVENTS.reserve::<Event>(0) {
            Some(mut entry) => {
                entry.write(ev);
                entry.submit(0);
            }
            None => warn!(
                ctx,
                "psweb: event ring buffer full, lost an event of kind {}", ev.kind
            ),
        }
    }

    /// True if an overflow event for (`kind`, `port`) was sent less than
    /// `overflow_min_interval_ns` ago; otherwise records `now` and returns false.
    /// Two CPUs racing may both pass: the limit is approximate, which is enough.
    #[inline(always)]
    fn rate_limited(kind: u32, port: u16, now: u64) -> bool {
        let key = (kind << 16) | u32::from(port);
        if let Some(last) = OVERFLOW_LAST.get_ptr_mut(key) {
            let prev = unsafe { *last };
            if now.wrapping_sub(prev) < cfg!(overflow_min_interval_ns) {
                return true;
            }
            unsafe { *last = now };
            return false;
        }
        let _ = OVERFLOW_LAST.insert(key, now, 0);
        false
    }

    #[inline(always)]
    fn port_watched(port: u16) -> bool {
        unsafe { WATCHED_PORTS.get(port) }.is_some()
    }

    #[tracepoint(category = "sched", name = "sched_process_exit")]
    pub fn psweb_sched_process_exit(ctx: TracePointContext) -> u32 {
        let tgid = (bpf_get_current_pid_tgid() >> 32) as u32;
        if unsafe { WATCHED_PIDS.get(tgid) }.is_none() {
            return 0;
        }
        if !group_dead(&ctx) {
            return 0;
        }
        // Exactly one event per watched thread group: only the CPU whose delete
        // succeeds reports (the tgid cannot exit twice; userspace re-watches on restart).
        if WATCHED_PIDS.remove(tgid).is_err() {
            return 0;
        }
        let task = unsafe { bpf_get_current_task() } as *const u8;
        let exit_code = read_kernel::<u32>(task, cfg!(task_exit_code_off)).unwrap_or(0);
        emit(
            &ctx,
            Event {
                kind: EVENT_EXIT,
                tgid,
                exit_code,
                ktime_ns: unsafe { bpf_ktime_get_ns() },
                ..Event::default()
            },
        );
        0
    }

    /// The exiting thread is the last of its group: the record's `group_dead` (6.x),
    /// else `current->signal->live` already decremented to zero.
    #[inline(always)]
    fn group_dead(ctx: &TracePointContext) -> bool {
        let off = cfg!(exit_group_dead_ctx_off);
        if off != NO_FIELD {
            return read_ctx::<u8>(ctx, off).is_some_and(|v| v != 0);
        }
        let task = unsafe { bpf_get_current_task() } as *const u8;
        let Some(signal) = read_kernel::<*const u8>(task, cfg!(task_signal_off)) else {
            return false;
        };
        read_kernel::<i32>(signal, cfg!(signal_live_off)) == Some(0)
    }

    #[tracepoint(category = "skb", name = "kfree_skb")]
    pub fn psweb_kfree_skb(ctx: TracePointContext) -> u32 {
        // Hot path (every dropped packet): one compare before anything else.
        let reason = read_ctx::<u32>(&ctx, cfg!(kfree_reason_ctx_off)).unwrap_or(0);
        if reason != cfg!(listen_overflow_reason) {
            return 0;
        }
        let Some(port) = skb_local_port(&ctx) else {
            return 0;
        };
        if !port_watched(port) {
            return 0;
        }
        let now = unsafe { bpf_ktime_get_ns() };
        if rate_limited(EVENT_OVERFLOW_FINAL_ACK, port, now) {
            return 0;
        }
        let (backlog, max_backlog) = listener_queue(&ctx, port).unwrap_or((0, 0));
        emit(
            &ctx,
            Event {
                kind: EVENT_OVERFLOW_FINAL_ACK,
                port,
                backlog,
                max_backlog,
                ktime_ns: now,
                ..Event::default()
            },
        );
        0
    }

    /// Destination port of the dropped (incoming) segment: the listener's local port.
    #[inline(always)]
    fn skb_local_port(ctx: &TracePointContext) -> Option<u16> {
        let skb = read_ctx::<*const u8>(ctx, cfg!(kfree_skbaddr_ctx_off))?;
        let head = read_kernel::<*const u8>(skb, cfg!(skb_head_off))?;
        let th = read_kernel::<u16>(skb, cfg!(skb_transport_header_off))?;
        if th == u16::MAX {
            return None; // transport header not set
        }
        read_kernel::<u16>(head, u32::from(th) + 2).map(u16::from_be)
    }

    /// Accept-queue depth and limit of the record's `rx_sk`, if it is the listener on `port`.
    #[inline(always)]
    fn listener_queue(ctx: &TracePointContext, port: u16) -> Option<(u32, u32)> {
        let sk = read_ctx::<*const u8>(ctx, cfg!(kfree_rx_sk_ctx_off))?;
        if sk.is_null()
            || read_kernel::<u8>(sk, cfg!(sk_state_off))? != TCP_LISTEN
            || read_kernel::<u16>(sk, cfg!(sk_num_off))? != port
        {
            return None;
        }
        sock_queue(sk)
    }

    #[inline(always)]
    fn sock_queue(sk: *const u8) -> Option<(u32, u32)> {
        let backlog = read_uint(sk, cfg!(sk_ack_backlog_off), cfg!(sk_ack_backlog_size))?;
        let max_backlog = read_uint(
            sk,
            cfg!(sk_max_ack_backlog_off),
            cfg!(sk_max_ack_backlog_size),
        )?;
        Some((backlog, max_backlog))
    }

    #[tracepoint(category = "sock", name = "sk_data_ready")]
    pub fn psweb_sk_data_ready(ctx: TracePointContext) -> u32 {
        let _ = sk_data_ready(&ctx);
        0
    }

    #[inline(always)]
    fn sk_data_ready(ctx: &TracePointContext) -> Option<()> {
        if read_ctx::<u16>(ctx, cfg!(sdr_protocol_ctx_off))? != IPPROTO_TCP {
            return None;
        }
        let sk = read_ctx::<*const u8>(ctx, cfg!(sdr_skaddr_ctx_off))?;
        // Established sockets of a watched port fire on every segment: state first.
        full_listener(ctx, sk)
    }

    /// The SYN-path overflow, whichever hook found `sk`: if it is a listener of a
    /// watched port whose accept queue is full (sk_acceptq_is_full(): the next SYN is
    /// dropped), emit EVENT_OVERFLOW_SYN, rate-limited per port.
    #[inline(always)]
    fn full_listener<C: EbpfContext>(ctx: &C, sk: *const u8) -> Option<()> {
        if sk.is_null() || read_kernel::<u8>(sk, cfg!(sk_state_off))? != TCP_LISTEN {
            return None;
        }
        let port = read_kernel::<u16>(sk, cfg!(sk_num_off))?;
        if !port_watched(port) {
            return None;
        }
        let (backlog, max_backlog) = sock_queue(sk)?;
        if backlog <= max_backlog {
            return None;
        }
        let now = unsafe { bpf_ktime_get_ns() };
        if rate_limited(EVENT_OVERFLOW_SYN, port, now) {
            return None;
        }
        emit(
            ctx,
            Event {
                kind: EVENT_OVERFLOW_SYN,
                port,
                backlog,
                max_backlog,
                ktime_ns: now,
                ..Event::default()
            },
        );
        Some(())
    }

    /// `tcp_conn_request(rsk_ops, af_ops, sk, skb)`: `sk` is the listener a SYN reached.
    #[kprobe(function = "tcp_conn_request")]
    pub fn psweb_tcp_conn_request(ctx: ProbeContext) -> u32 {
        if let Some(sk) = ctx.arg::<*const u8>(2) {
            let _ = full_listener(&ctx, sk);
        }
        0
    }
}
