#!/bin/sh
# `cargo xtask vmtest`'s scenarios, run by `busybox sh` as root: inside each VM from
# /init, and on the build host. One line per result:
#   VMTEST|<kernel>|<scenario> [<transport>]|<PASS|FAIL|N/A|INFO>|<hook>|<time>|<detail>
#
# Arguments: KERNEL BIN WORK PORT MODE WHERE
#   MODE  ring-buffer | perf-array: pcheck and the e2e_ebpf tests with that transport
#         no-btf: the kernel's BTF hidden (VM only): pcheck must fall back, saying so
#   WHERE vm-tcg | vm-kvm | host
K="$1"; BIN="$2"; W="$3"; PORT="$4"; T="$5"; WHERE="$6"
say() { echo "VMTEST|$K|$1 [$T]|$2|$3|$4|$(echo "$5" | tr '|\r\n' '/  ')"; }
now_cs() { awk '{ printf "%d", $1 * 100 }' /proc/uptime; }
# wait_in FILE PATTERN TENTHS: grep -E FILE until PATTERN shows up. The bounds are
# generous (emulated kernels, several VMs on two cores): waits end at the line.
wait_in() {
    n=0
    while [ "$n" -lt "$3" ]; do
        grep -Eq "$2" "$1" 2>/dev/null && return 0
        sleep 0.1; n=$((n + 1))
    done
    return 1
}
wait_for() { wait_in "$W/pcheck.log" "$1" "$2"; }
alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
# wait_pid FILE OLD: the pid in FILE once it is alive and not OLD (40 s at most).
wait_pid() {
    n=0
    while [ "$n" -lt 400 ]; do
        p=$(cat "$1" 2>/dev/null)
        [ "$p" != "$2" ] && alive "$p" && { echo "$p"; return 0; }
        sleep 0.1; n=$((n + 1))
    done
    return 1
}
# pfile NAME PORT EXTRA: a pfile watching the demo server on PORT with a _bi_webserv block.
pfile() {
    cat > "$W/$1.rc" <<EOF
#!/bin/sh
exec $BIN/psweb-demo-httpd --port $2 --workers 2 --backlog 1 --pidfile $W/$1.pid --daemon
EOF
    chmod 755 "$W/$1.rc"
    cat > "$W/$1.pfile" <<EOF
retry_over_action = continue
restart_timeout = 10s
$BIN/psweb-demo-httpd $W/$1.rc 3 pidfile=$W/$1.pid retry_delay=500ms
_bi_webserv {
    PS_INIT    DLL:/opt/HA/PSWE/lib/lib_bi_webserv.so:DIRECT:-:::0
    PS_EXEC    DLL:/opt/HA/PSWE/lib/lib_bi_webserv.so:DIRECT:-:10:0:2:$3:$2
    PS_ACTION  DLL:/opt/HA/PSWE/lib/lib_bi_webserv.so:DIRECT:-:-:1:0
    PS_QUIT    DLL:/opt/HA/PSWE/lib/lib_bi_webserv.so:DIRECT:-:::0
$4}
EOF
}
# start_pcheck NAME ARGS...: pcheck on $W/NAME.pfile, its log in $W/pcheck.log.
start_pcheck() {
    name=$1; shift
    PSWEB_RUN_DIR="$W/run-$name" PSWEB_STATE_DIR="$W/state-$name" "$BIN/pcheck" -f "$W/$name.pfile" \
        --bpf-object "$BIN/psweb.bpf.o" --syslog none --journal none "$@" > "$W/pcheck.log" 2>&1 &
    PC=$!
}
stop_pcheck() {
    kill -TERM "$PC" 2>/dev/null; wait "$PC" 2>/dev/null
    p=$(cat "$W/$1.pid" 2>/dev/null); [ -n "$p" ] && kill -TERM -"$p" 2>/dev/null
    sed "s/^/  pcheck $1 [$T]| /" "$W/pcheck.log"
    sleep 0.3
}
padmin() { PSWEB_RUN_DIR="$W/run-$1" "$BIN/padmin" -f "$W/$1.pfile" -c show kernel 2>&1; }
rm -rf "$W"; mkdir -p "$W"; chmod 755 "$W"

if [ "$T" = no-btf ]; then
    # The kernel's BTF hidden under an empty tmpfs: the loader cannot find offsets, so
    # pcheck (evidence auto) must say so once and watch through pidfd / procfs.
    if ! mount -t tmpfs none /sys/kernel/btf; then
        say btf-missing FAIL - - "cannot hide /sys/kernel/btf"
        exit 0
    fi
    pfile nobtf "$PORT" 600 ""
    start_pcheck nobtf --evidence auto
    if wait_for "eBPF evidence unavailable" 600 && wait_for "pcheck started" 600; then
        n=$(grep -c "eBPF evidence unavailable" "$W/pcheck.log")
        line=$(grep -m1 "eBPF evidence unavailable" "$W/pcheck.log" | sed 's/.*eBPF evidence/eBPF evidence/')
        if [ "$n" = 1 ] && echo "$line" | grep -q "BTF"; then
            say "fallback log" PASS - - "$line"
        else
            say "fallback log" FAIL - - "$n line(s): $line"
        fi
    else
        say "fallback log" FAIL - - "$(tail -n 3 "$W/pcheck.log")"
    fi
    shown=$(padmin nobtf)
    if echo "$shown" | grep -q "transport *= none" && echo "$shown" | grep -q "btf *= absent"; then
        say "show kernel" PASS - - "$(echo "$shown" | grep -E '^(death_evidence|transport|btf)' | tr -s ' ' | tr '\n' ';')"
    else
        say "show kernel" FAIL - - "$shown"
    fi
    pid=$(wait_pid "$W/nobtf.pid" "")
    if alive "$pid"; then
        sleep 0.5
        t0=$(now_cs)
        kill -9 "$pid"
        if wait_for "Process Down: .*pid= $pid " 300; then
            t1=$(now_cs)
            line=$(grep -m1 "Process Down: .*pid= $pid " "$W/pcheck.log" | sed 's/.*Process Down/Process Down/')
            ev=$(echo "$line" | sed -n 's/.*evidence: \([a-z_]*\).*/\1/p')
            say exit PASS "$ev" "<= $(( (t1 - t0) * 10 )) ms to the log" "$line"
            if new=$(wait_pid "$W/nobtf.pid" "$pid"); then
                say restart PASS - - "pid $pid -> $new"
            else
                say restart FAIL - - "$(tail -n 3 "$W/pcheck.log")"
            fi
        else
            say exit FAIL - - "$(tail -n 3 "$W/pcheck.log")"
        fi
    else
        say exit FAIL - - "the demo server never started: $(tail -n 3 "$W/pcheck.log")"
    fi
    stop_pcheck nobtf
    umount /sys/kernel/btf
    exit 0
fi

# 1. load + attach (the loader's LoadReport, as pcheck logs it), and show kernel
pfile demo "$PORT" 30 ""
start_pcheck demo --evidence ebpf --bpf-transport "$T"
if wait_for "eBPF loaded in|pcheck started|rror" 600 && grep -q "eBPF loaded in" "$W/pcheck.log"; then
    line=$(grep -m1 "eBPF loaded in" "$W/pcheck.log")
    us=$(echo "$line" | sed 's/.*eBPF loaded in \([0-9]*\) us.*/\1/')
    hooks=$(echo "$line" | sed 's/.*eBPF loaded in [0-9]* us (\(.*\))[^)]*$/\1/')
    through=$(echo "$line" | sed -n 's/.*events through the \(.*\)$/\1/p')
    want=$(echo "$T" | tr '-' ' ')
    if [ "$through" = "$want" ]; then
        say load PASS - "$us us" "$hooks"
    else
        say load FAIL - "$us us" "events through the $through, not the $want"
    fi
else
    say load FAIL - - "$(tail -n 5 "$W/pcheck.log")"
fi
grep "eBPF: no hook for" "$W/pcheck.log" | while read -r l; do
    say unavailable INFO - - "${l#*no hook for }"
done
wait_for "pcheck started" 600
shown=$(padmin demo)
want=$(echo "$T" | tr '-' ' ')
if echo "$shown" | grep -q "transport *= $want" && echo "$shown" | grep -q "btf *= present"; then
    say "show kernel" PASS - - "$(echo "$shown" | grep -E '^(death_evidence|transport|btf)' | tr -s ' ' | tr '\n' ';')"
else
    say "show kernel" FAIL - - "$shown"
fi

# 2. a watched process killed -> exit event from the kernel program, then a restart
pid=$(wait_pid "$W/demo.pid" "")
if alive "$pid"; then
    sleep 0.5
    t0=$(now_cs)
    kill -9 "$pid"
    if wait_for "Process Down: .*pid= $pid .*evidence: ebpf" 300; then
        t1=$(now_cs)
        say exit PASS "ebpf (sched_process_exit)" "<= $(( (t1 - t0) * 10 )) ms to the log" \
            "$(grep -m1 "Process Down: .*pid= $pid " "$W/pcheck.log" | sed 's/.*Process Down/Process Down/')"
    else
        say exit FAIL - - "$(grep -m1 "Process Down: .*pid= $pid " "$W/pcheck.log" || tail -n 3 "$W/pcheck.log")"
    fi
else
    say exit FAIL - - "the demo server never started: $(tail -n 3 "$W/pcheck.log")"
fi

# 3. a filled accept queue on the watched port -> overflow evidence, hook named
if new=$(wait_pid "$W/demo.pid" "$pid"); then
    say restart PASS - - "pid $pid -> $new"
    sleep 1
    # The demo server leads its own process group: stop it and its workers.
    kill -STOP -"$new" 2>/dev/null || kill -STOP "$new"
    NCS=""
    t0=$(now_cs)
    for i in 1 2 3 4 5 6; do
        busybox nc 127.0.0.1 "$PORT" < /dev/null > /dev/null 2>&1 &
        NCS="$NCS $!"
    done
    if wait_for "Accept Queue (Overflow|Full): port= $PORT " 300; then
        t1=$(now_cs)
        line=$(grep -E -m1 "Accept Queue (Overflow|Full): port= $PORT " "$W/pcheck.log")
        hook=$(echo "$line" | sed 's/.*(evidence: \(.*\))[^)]*$/\1/')
        say overflow PASS "$hook" "<= $(( (t1 - t0) * 10 )) ms to the log" "$(echo "$line" | sed 's/.*Accept Queue/Accept Queue/')"
    else
        say overflow FAIL - - "no Accept Queue line: $(grep -E "Accept|accept" "$W/pcheck.log" | tail -n 2)"
    fi
    kill -CONT -"$new" 2>/dev/null || kill -CONT "$new"
    for p in $NCS; do kill "$p" 2>/dev/null; done
else
    say restart FAIL - - "no restart after the kill: $(tail -n 3 "$W/pcheck.log")"
    say overflow FAIL - - "skipped: no server"
fi
stop_pcheck demo
NO_FINAL_ACK=$(grep "no hook for accept-queue overflow (final ACK)" "$W/pcheck.log")

# 4. the kernel-evidence stall verdict: the server stopped under load, judged from the
# kernel's evidence (the probes' retry-over time is 600 s, so they cannot judge first)
SP=$((PORT + 1))
pfile stall "$SP" 600 "    evidence = kernel
"
start_pcheck stall --evidence ebpf --bpf-transport "$T"
if wait_for "stall_chk \(web\) of pent_id= 1" 600 && pid=$(wait_pid "$W/stall.pid" ""); then
    sleep 0.5
    kill -STOP -"$pid" 2>/dev/null || kill -STOP "$pid"
    t0=$(now_cs)
    NCS=""
    n=0
    while [ "$n" -lt 20 ]; do
        busybox nc 127.0.0.1 "$SP" < /dev/null > /dev/null 2>&1 &
        NCS="$NCS $!"
        grep -q "Find Web Server Stall" "$W/pcheck.log" && break
        sleep 0.2; n=$((n + 1))
    done
    if wait_for "Find Web Server Stall: pid = $pid " 600; then
        t1=$(now_cs)
        why=$(grep -m1 "stall evidence (" "$W/pcheck.log" | sed 's/.*stall evidence/stall evidence/')
        if echo "$why" | grep -q "stall evidence (kernel)"; then
            say "stall verdict" PASS "kernel evidence" "$(( (t1 - t0) * 10 )) ms" "$why"
        else
            say "stall verdict" FAIL - - "judged, but not from the kernel: $why"
        fi
    else
        say "stall verdict" FAIL - - "no verdict: $(grep -E "tall|ccept" "$W/pcheck.log" | tail -n 3)"
    fi
    kill -CONT -"$pid" 2>/dev/null
    for p in $NCS; do kill "$p" 2>/dev/null; done
else
    say "stall verdict" FAIL - - "the stall check never started: $(tail -n 3 "$W/pcheck.log")"
fi
stop_pcheck stall

# 5. the e2e_ebpf tests (KernelEvidence directly), one line per test
if [ -x "$BIN/e2e_ebpf" ]; then
    # The perf-array test forces that transport: the perf-array run need not repeat it.
    skip=""
    [ "$T" = perf-array ] && skip="--skip perf_array_transport_carries_the_same_events"
    # Its bound is for native speed: under emulation it cannot hold (the load row has
    # the emulated figure), so it is not run there.
    if [ "$WHERE" = vm-tcg ]; then
        skip="$skip --skip load_and_attach_serves_every_hook"
        say "e2e_ebpf::load_and_attach_serves_every_hook" N/A - - "a native-speed time bound, not run under emulation (see the load row)"
    fi
    # A test that finds this kernel without what it tests records itself as not run
    # (tests/common/skip.rs): its row is N/A with its own reason, never PASS.
    rm -rf "$W/skips"
    PSWEB_SKIP_DIR="$W/skips" PSWEB_BPF_TRANSPORT="$T" PSWEB_BPF_OBJECT="$BIN/psweb.bpf.o" "$BIN/e2e_ebpf" --test-threads=1 $skip > "$W/e2e.log" 2>&1
    grep -E '^test [a-z0-9_:]+ \.\.\. ' "$W/e2e.log" | while read -r _t name _d res _rest; do
        res=${res%,}
        why=$(awk -v n="$name" 'index($0, "thread '\''" n "'\''") && /panicked at/ { getline; print; exit }' "$W/e2e.log")
        marker=$(ls "$W/skips/e2e_ebpf--${name}--"* 2>/dev/null | head -n 1)
        if [ "$res" = ok ] && [ -n "$marker" ]; then
            say "e2e_ebpf::$name" N/A - - "not run: $(cut -f 3 "$marker" | tr '|' '/')"
        elif [ "$res" = ok ]; then
            say "e2e_ebpf::$name" PASS - - ok
        elif [ "$res" = ignored ]; then
            :
        elif [ -n "$NO_FINAL_ACK" ] && [ "$name" = final_ack_overflow_reported_as_such ]; then
            say "e2e_ebpf::$name" N/A - - "no final-ACK hook on this kernel (kfree_skb has no TCP_LISTEN_OVERFLOW reason)"
        elif [ -n "$NO_FINAL_ACK" ] && echo "$name" | grep -q "^load_and_attach"; then
            say "e2e_ebpf::$name" N/A - - "asserts the final-ACK hook, which this kernel lacks"
        else
            say "e2e_ebpf::$name" FAIL - - "$why"
        fi
    done
    sed -n '/^failures:/,$p' "$W/e2e.log" | head -n 120 | sed "s/^/  e2e [$T]| /"
fi
