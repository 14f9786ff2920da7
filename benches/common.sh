# Shared by load.sh and purge.sh (sourced after `log` is defined).
#
# isolate_server_core CPU moves
# the benchmark's own shell (so every helper it forks: kdig, curl, awk, sleep) and the
# kernel's unbound housekeeping threads to CPU, the generator's core, for the measurement:
# the way a latency-tuned host keeps them on housekeeping CPUs (kernel docs:
# admin-guide/kernel-per-CPU-kthreads). Servers are started with their own taskset.
#
# Why: on this VM, kdamond (DAMON's page-out of cold page cache, a normal-priority kernel
# thread) wakes every ~5 s and runs 4-8 ms at a time, often three times in a row, on
# whichever core the scheduler picks. perf sched showed it behind most of the >1 ms stalls
# of a pinned query worker: 34 of 58 in one 40 s reload run. It reclaims page cache that
# went cold a minute earlier, whoever created it (a cargo build, a zone file, Knot's or
# Muninn's), so it is noise for both servers alike. kcompactd, kswapd, khugepaged and the
# unbound workqueues (writeback) are moved for the same reason. Per-CPU threads
# (ksoftirqd, per-CPU kworkers) cannot move and stay in the figures.
#
# KTHREADS_AWAY=0 leaves the kernel threads where they are. Moving them needs root; the old
# affinities are put back by isolate_restore (call it from the EXIT trap).
KTHREADS_AWAY=${KTHREADS_AWAY:-1}
KT_SAVED=()
KT_WQ_MASK=

isolate_server_core() { # CPU
    local cpu=$1 pid old moved=
    taskset -p -c "$cpu" $$ >/dev/null
    if [[ $KTHREADS_AWAY != 1 ]]; then
        log "kernel housekeeping threads left where the scheduler puts them (KTHREADS_AWAY=0)"
        return 0
    fi
    if [[ $(id -u) != 0 ]]; then
        log "not root: kernel housekeeping threads not moved off the server's core"
        return 0
    fi
    for pid in $(ps -eo pid=,comm= | awk '$2 ~ /^(kdamond|kcompactd|kswapd|khugepaged)/ {print $1}'); do
        old=$(taskset -p "$pid" 2>/dev/null | awk '{print $NF}') || continue
        if taskset -p -c "$cpu" "$pid" >/dev/null 2>&1; then
            KT_SAVED+=("$pid:$old")
            moved+=" $(cat "/proc/$pid/comm" 2>/dev/null)"
        fi
    done
    local wq=/sys/devices/virtual/workqueue/cpumask
    if [[ -w $wq ]]; then
        old=$(cat "$wq")
        if printf '%x\n' $((1 << cpu)) >"$wq" 2>/dev/null; then
            KT_WQ_MASK=$old
            moved+=" unbound-workqueues"
        fi
    fi
    log "kernel housekeeping threads moved to CPU $cpu (the generator's) for every server:${moved:- none} (KTHREADS_AWAY=0 leaves them)"
}

isolate_restore() {
    local e
    for e in "${KT_SAVED[@]}"; do
        taskset -p "${e#*:}" "${e%%:*}" >/dev/null 2>&1 || true
    done
    KT_SAVED=()
    if [[ -n $KT_WQ_MASK ]]; then
        echo "$KT_WQ_MASK" >/sys/devices/virtual/workqueue/cpumask 2>/dev/null || true
        KT_WQ_MASK=
    fi
}

# phase_summary FILE [STEAL]: one line per phase from the generator's `phase=` lines (loadgen
# --mark-file): p99 of all the phase's queries and the spread of its per-second p99s; with
# a steal_sampler file, also the worst per-second p99 among the seconds without steal on
# CPU 0.
phase_summary() {
    awk '/^phase=/ {
            for (i = 1; i <= NF; i++) { split($i, a, "="); v[a[1]] = a[2] }
            printf "   %-6s %3d s: p99 %5d us, p99.9 %5d us; per-second p99 median %5d, p90 %5d, worst %5d us; lost %d\n",
                v["phase"], v["seconds"], v["p99_us"], v["p999_us"], v["second_p99_median_us"],
                v["second_p99_p90_us"], v["second_p99_worst_us"], v["lost"]
            if (v["phase"] == "before") idle = v["p99_us"]
            if (v["phase"] == "during") worst = v["second_p99_worst_us"]
        }
        END { if (idle > 0) printf "   worst second during / p99 before: %.1fx\n", worst / idle }' "$1"
    if [[ -n ${2:-} ]]; then
        awk -v steal="$2" '
            FNR == NR {
                if ($0 ~ /^start_unix_s=/) { split($0, a, "="); t0 = a[2] }
                if ($0 ~ /^mark_s=/) { split($1, a, "="); mark = a[2]; split($2, b, "="); end = b[2] }
                next
            }
            FNR == 1 {
                while ((getline line < steal) > 0) { split(line, f, " "); n++; t[n] = f[1]; st[n] = f[2] }
                for (i = 2; i <= n; i++) if (st[i] > st[i - 1]) stolen[int(t[i] - t0)] += st[i] - st[i - 1]
            }
            /^second=/ {
                for (i = 1; i <= NF; i++) { split($i, a, "="); v[a[1]] = a[2] }
                s = v["second"]; ph = (s + 1 <= mark) ? "before" : (end != "-" && s >= end ? "after" : "during")
                # A second with steal, or the next one (queries sent before the stall ended).
                if (stolen[s] || stolen[s - 1]) { ns[ph]++; next }
                if (v["p99_us"] > w[ph]) w[ph] = v["p99_us"]
            }
            END {
                for (i = 1; i <= 3; i++) {
                    ph = i == 1 ? "before" : (i == 2 ? "during" : "after")
                    printf "   %-6s %d s with CPU-0 steal (or just after); worst per-second p99 of the other seconds %d us\n", ph, ns[ph], w[ph]
                }
            }' "$1" "$1"
    fi
}

# steal_sampler FILE SECONDS: every 100 ms, "unix_time steal_ticks_of_cpu0" (/proc/stat, in
# USER_HZ ticks) until SECONDS have passed or it is killed. Shell builtins only after the
# start, so it adds no forks to the measured cores. The hypervisor taking the server's
# vCPU away (steal) stops the server as surely as a stall of its own: a 10 ms steal puts
# one second's p99 in the milliseconds on its own, so the per-second lines mark it.
steal_sampler() {
    local out=$1 end=$((SECONDS + $2)) fifo fd c u n s i w q sq st rest
    fifo=$(mktemp -u)
    mkfifo "$fifo"
    exec {fd}<>"$fifo"
    rm -f "$fifo"
    while ((SECONDS < end)); do
        { read -r rest; read -r c u n s i w q sq st rest; } </proc/stat
        echo "$EPOCHREALTIME $st"
        read -r -t 0.1 -u "$fd" rest || true
    done >"$out"
}
