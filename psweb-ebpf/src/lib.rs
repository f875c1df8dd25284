//! Types shared by the eBPF programs (`src/main.rs`, built for `bpfel-unknown-none`)
//! and the userspace agent (`psweb-user`). Plain `#[repr(C)]` data only.
#![no_std]

/// Kind tag of a [`Event`].
pub const EVENT_EXIT: u32 = 1;
/// An accept-queue overflow seen on the final-ACK path (kfree_skb, reason TCP_LISTEN_OVERFLOW).
pub const EVENT_OVERFLOW_FINAL_ACK: u32 = 2;
/// The accept queue of a watched listener was found full where the kernel queues a
/// connection (sock/sk_data_ready): later SYNs are dropped without a kfree_skb.
pub const EVENT_OVERFLOW_SYN: u32 = 3;

/// One record in the ring buffer. Fields not meaningful for a kind are zero.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub kind: u32,
    /// Thread-group id (the process id userspace knows) for EVENT_EXIT.
    pub tgid: u32,
    /// `task_struct.exit_code` as the kernel encodes it: `(status << 8) | signal`.
    pub exit_code: u32,
    /// Local port (host byte order) for overflow events.
    pub port: u16,
    pub _pad: u16,
    /// Accept-queue depth and limit of the listener when the overflow was seen
    /// (0 and 0 on the final-ACK path when the kernel's kfree_skb has no `rx_sk`).
    pub backlog: u32,
    pub max_backlog: u32,
    /// bpf_ktime_get_ns() at the event: CLOCK_MONOTONIC nanoseconds.
    pub ktime_ns: u64,
}

/// Name of the hash map of watched thread-group ids (key u32 tgid, value u8 1).
/// The exit program deletes a tgid's entry when it reports that thread group's exit.
pub const MAP_WATCHED_PIDS: &str = "WATCHED_PIDS";
/// Name of the hash map of watched local ports (key u16 port in host order, value u8 1).
pub const MAP_WATCHED_PORTS: &str = "WATCHED_PORTS";
/// Name of the ring buffer that carries [`Event`]s.
pub const MAP_EVENTS: &str = "EVENTS";
/// Name of the LRU hash map holding the last overflow event time per (path, port)
/// (key `kind << 16 | port`, value ktime ns); the kernel side's rate limit.
pub const MAP_OVERFLOW_LAST: &str = "OVERFLOW_LAST";

/// Capacity of the watched-PID map.
pub const MAX_WATCHED_PIDS: u32 = 4096;
/// Capacity of the watched-port map.
pub const MAX_WATCHED_PORTS: u32 = 1024;
/// Size of the event ring buffer in bytes (a power of two, a multiple of the page size).
pub const EVENTS_BYTES: u32 = 256 * 1024;

/// At most one overflow event per (path, port) per this many nanoseconds: an accept
/// queue that stays full under a connection storm must not flood the ring buffer.
/// 10 ms keeps detection latency far below the 100 ms goal and caps the rate at
/// 100 events/s per port and path.
pub const OVERFLOW_MIN_INTERVAL_NS: u64 = 10_000_000;

/// Name of the read-only global holding the [`Config`], set by the loader.
pub const GLOBAL_CONFIG: &str = "PSWEB_CONFIG";

/// A [`Config`] offset meaning "this field does not exist on the running kernel".
pub const NO_FIELD: u32 = u32::MAX;

/// Kernel layout facts the programs need, found by the loader at load time in the
/// kernel's BTF (`/sys/kernel/btf/vmlinux`) and the tracepoints' `format` files, and
/// written into the programs' read-only data before loading: nothing is hard-coded.
///
/// `*_ctx_off` are byte offsets in a tracepoint record; the others are byte offsets in
/// kernel structures. Offsets are [`NO_FIELD`] when absent.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    // --- sched/sched_process_exit ---
    /// `group_dead` in the record (6.x); [`NO_FIELD`] on older kernels, where the
    /// program reads `task->signal->live == 0` instead.
    pub exit_group_dead_ctx_off: u32,
    /// `task_struct.exit_code`.
    pub task_exit_code_off: u32,
    /// `task_struct.signal` and `signal_struct.live` (used only without `group_dead`).
    pub task_signal_off: u32,
    pub signal_live_off: u32,
    // --- skb/kfree_skb ---
    pub kfree_skbaddr_ctx_off: u32,
    pub kfree_reason_ctx_off: u32,
    /// `rx_sk` in the record (6.12+): the listener, whose queue depth/limit the
    /// final-ACK event then carries. [`NO_FIELD`] if absent.
    pub kfree_rx_sk_ctx_off: u32,
    /// `enum skb_drop_reason` value SKB_DROP_REASON_TCP_LISTEN_OVERFLOW.
    pub listen_overflow_reason: u32,
    /// `sk_buff.head` and `sk_buff.transport_header` (the TCP header gives the local port).
    pub skb_head_off: u32,
    pub skb_transport_header_off: u32,
    // --- sock/sk_data_ready ---
    pub sdr_skaddr_ctx_off: u32,
    pub sdr_protocol_ctx_off: u32,
    // --- struct sock ---
    /// `sock.__sk_common.skc_state` (u8).
    pub sk_state_off: u32,
    /// `sock.__sk_common.skc_num`: the local port in host order (u16).
    pub sk_num_off: u32,
    pub sk_ack_backlog_off: u32,
    pub sk_max_ack_backlog_off: u32,
    /// Sizes in bytes (2 or 4) of `sk_ack_backlog` and `sk_max_ack_backlog`.
    pub sk_ack_backlog_size: u32,
    pub sk_max_ack_backlog_size: u32,
    /// Minimum interval between overflow events per (path, port), nanoseconds.
    pub overflow_min_interval_ns: u64,
}

impl Config {
    /// A configuration in which every field is absent (the programs do nothing useful
    /// until the loader fills it in).
    pub const EMPTY: Config = Config {
        exit_group_dead_ctx_off: NO_FIELD,
        task_exit_code_off: NO_FIELD,
        task_signal_off: NO_FIELD,
        signal_live_off: NO_FIELD,
        kfree_skbaddr_ctx_off: NO_FIELD,
        kfree_reason_ctx_off: NO_FIELD,
        kfree_rx_sk_ctx_off: NO_FIELD,
        listen_overflow_reason: NO_FIELD,
        skb_head_off: NO_FIELD,
        skb_transport_header_off: NO_FIELD,
        sdr_skaddr_ctx_off: NO_FIELD,
        sdr_protocol_ctx_off: NO_FIELD,
        sk_state_off: NO_FIELD,
        sk_num_off: NO_FIELD,
        sk_ack_backlog_off: NO_FIELD,
        sk_max_ack_backlog_off: NO_FIELD,
        sk_ack_backlog_size: 4,
        sk_max_ack_backlog_size: 4,
        overflow_min_interval_ns: OVERFLOW_MIN_INTERVAL_NS,
    };
}

/// `TCP_LISTEN` in the kernel's `enum tcp_state` (stable UAPI value).
pub const TCP_LISTEN: u8 = 10;
/// `IPPROTO_TCP`.
pub const IPPROTO_TCP: u16 = 6;

/// Names of the programs in the object (the functions in `src/main.rs`).
pub const PROG_EXIT: &str = "psweb_sched_process_exit";
pub const PROG_KFREE_SKB: &str = "psweb_kfree_skb";
pub const PROG_SK_DATA_READY: &str = "psweb_sk_data_ready";
