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

# phase_summary FILE: one line per phase from the generator's `phase=` lines (loadgen
# --mark-file): p99 of all the phase's queries and the spread of its per-second p99s.
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
}
