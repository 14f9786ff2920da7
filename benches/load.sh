#!/usr/bin/env bash
# Muninn vs Knot DNS load benchmark on loopback (127.0.0.1, ports picked at run time).
#
# Each server runs with one worker pinned to CPU 0 (taskset -c 0), the load generator is
# pinned to CPU 1. Every run logs the CPU used by everything else on the machine ("foreign"
# load, method of /work/shared/notes/crates.md §8, per core) and flags contaminated runs:
# on this shared 2-core box a QPS figure means something only next to that check.
#
#   benches/load.sh [load]   100,000-name zone, realistic query mix, max rate, dnsperf and
#                            benches' loadgen, Knot and Muninn alternating (ROUNDS times).
#   benches/load.sh reload   a small zone under steady load at half its max QPS while a
#                            1,000,000-name zone is reloaded; per-second p99 before, during
#                            and after, lost queries, load time and RSS.
#
# Environment: DURATION (s per run, 8), ROUNDS (3), SERVERS ("knot muninn"), NAMES (100000),
# BIG_NAMES (1000000), SMALL_NAMES (1000), RELOAD_AT (s of steady load before the reload, 6),
# RELOAD_AFTER (s of load after the new zone is served, 20: long enough to see Muninn's
# background work after a reload, the store update and the zone image write),
# RELOAD_MAX (s, bound on a run, 120),
# RELOAD_NULL (s; a control run: no reload is triggered, and "during" is the RELOAD_NULL
# seconds after RELOAD_AT, so the phases show what the machine alone does to the tail),
# CONTROL (1: after each reload run, once the server has settled, the same phases again with
# nothing reloaded, and the ratios of the two; 0: skip it),
# FOREIGN_MAX (% of one CPU, 10), QUIET_WAIT (s to wait for a quiet machine before each run, 15),
# DNSPERF_ARGS ("-c 8 -q 128"), LOADGEN_ARGS ("-c 8 -w 16"),
# MUNINN_RUNTIME (extra lines for Muninn's [runtime] table, e.g.
# "heavy_worker_wait_budget_us = 5000"), MUNINN_BIN / LOADGEN_BIN (skip the cargo build),
# KEEP=1 (keep the work directory),
# KTHREADS_AWAY (1: move kernel housekeeping threads to the generator's core, see common.sh).
set -euo pipefail

mode=${1:-load}
case $mode in
load | reload) ;;
-h | --help | help)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
*)
    echo "usage: $0 [load|reload]" >&2
    exit 2
    ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
DURATION=${DURATION:-8}
ROUNDS=${ROUNDS:-3}
SERVERS=${SERVERS:-"knot muninn"}
NAMES=${NAMES:-100000}
BIG_NAMES=${BIG_NAMES:-1000000}
SMALL_NAMES=${SMALL_NAMES:-1000}
RELOAD_AFTER=${RELOAD_AFTER:-20}
RELOAD_MAX=${RELOAD_MAX:-120}
RELOAD_AT=${RELOAD_AT:-6}
CONTROL=${CONTROL:-1}
FOREIGN_MAX=${FOREIGN_MAX:-10}
QUIET_WAIT=${QUIET_WAIT:-15}
# 128 queries in flight saturate one server core; much more than ~200 only overflows the
# server's default socket receive buffer (measured: Knot loses 0.1-0.6% at 256-512).
DNSPERF_ARGS=${DNSPERF_ARGS:-"-c 8 -q 128"}
LOADGEN_ARGS=${LOADGEN_ARGS:-"-c 8 -w 16"}
SERVER_CPU=0
GEN_CPU=1
TCK=$(getconf CLK_TCK)

W=$(mktemp -d /tmp/muninn-load.XXXXXX)
declare -A SPID=() SPORT=() SCONF=()
OWNED_PIDS=()

cleanup() {
    local p
    # A fixed-rate loadgen still running in the background (reload mode).
    if [[ -s $W/loadgen.pid ]]; then
        OWNED_PIDS+=("$(cat "$W/loadgen.pid")")
    fi
    for p in "${OWNED_PIDS[@]}"; do
        kill "$p" 2>/dev/null || true
    done
    for p in "${OWNED_PIDS[@]}"; do
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$p" 2>/dev/null || true
    done
    isolate_restore
    if [[ ${KEEP:-0} == 1 ]]; then
        echo "work directory kept: $W" >&2
    else
        rm -rf "$W"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
# shellcheck source=benches/common.sh
. "$here/common.sh"
now() { date +%s.%N; }

for tool in knotd knotc kdig dnsperf taskset ss awk; do
    command -v "$tool" >/dev/null || {
        echo "missing tool: $tool" >&2
        exit 1
    }
done

# A free UDP+TCP port on 127.0.0.1 (random, checked with ss; the servers bind right after).
pick_port() {
    local p
    while :; do
        p=$((20000 + RANDOM % 40000))
        [[ -z $(ss -Hlnu "sport = :$p") && -z $(ss -Hlnt "sport = :$p") ]] && {
            echo "$p"
            return
        }
    done
}

# ---- builds --------------------------------------------------------------------------------
build() {
    if [[ -z ${MUNINN_BIN:-} || -z ${LOADGEN_BIN:-} ]]; then
        log "building muninn and loadgen (release)"
        (cd "$root" && cargo build --release --bin muninn --example loadgen) >&2
    fi
    MUNINN_BIN=${MUNINN_BIN:-$root/target/release/muninn}
    LOADGEN_BIN=${LOADGEN_BIN:-$root/target/release/examples/loadgen}
}

# ---- servers -------------------------------------------------------------------------------
# start_server NAME ZONE... : ZONE is "origin:file". Starts pinned to SERVER_CPU with one
# worker, records SPID/SPORT/SCONF[NAME].
start_server() {
    local name=$1
    shift
    local port dir z
    port=$(pick_port)
    dir=$W/$name
    mkdir -p "$dir" "$dir/db"
    case $name in
    knot)
        {
            cat <<EOF
server:
    rundir: "$dir"
    listen: 127.0.0.1@$port
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: info
database:
    storage: "$dir/db"
control:
    listen: "$dir/knot.sock"
template:
  - id: default
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: off
zone:
EOF
            for z in "$@"; do
                printf '  - domain: %s\n    file: "%s"\n' "${z%%:*}" "${z#*:}"
            done
        } >"$dir/knot.conf"
        taskset -c $SERVER_CPU knotd -c "$dir/knot.conf" >"$dir/server.log" 2>&1 &
        SCONF[$name]=$dir/knot.conf
        ;;
    muninn)
        # Muninn's config format (config.toml in the repository root). One query worker like
        # Knot's udp-workers: 1, one heavy-job thread (zone loading) like background-workers: 1.
        {
            cat <<EOF
[server]
listen = ["127.0.0.1:$port"]

[runtime]
workers = 1
heavy_workers = 1
${MUNINN_RUNTIME:-}

[zones]
directory = ""
EOF
            for z in "$@"; do
                printf '\n[[zones.zone]]\nname = "%s."\nfile = "%s"\n' "${z%%:*}" "${z#*:}"
            done
        } >"$dir/muninn.toml"
        taskset -c $SERVER_CPU "$MUNINN_BIN" serve --config "$dir/muninn.toml" --workers 1 \
            >"$dir/server.log" 2>&1 &
        SCONF[$name]=$dir/muninn.toml
        ;;
    *)
        echo "unknown server $name" >&2
        exit 2
        ;;
    esac
    SPID[$name]=$!
    OWNED_PIDS+=("$!")
    SPORT[$name]=$port
}

stop_server() {
    local name=$1 p=${SPID[$1]}
    kill "$p" 2>/dev/null || true
    for _ in $(seq 50); do
        kill -0 "$p" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$p" 2>/dev/null || true
}

# Serial of ZONE's SOA as served on PORT, or empty.
soa_serial() {
    taskset -c $GEN_CPU kdig @127.0.0.1 -p "$1" "$2" SOA +short +time=1 +retry=0 2>/dev/null |
        awk 'NF >= 7 {print $3; exit}'
}

# wait_serial NAME ZONE SERIAL TIMEOUT_S: waits until the server serves SERIAL for ZONE.
wait_serial() {
    local name=$1 zone=$2 serial=$3 limit=$4 t0
    t0=$(now)
    while :; do
        # Query only once the UDP port is bound: before, kdig would wait out its whole 1 s
        # timeout (it does not see the ICMP port-unreachable), which rounded Muninn's load
        # time (it binds once its zones are loaded) up by up to a second.
        if [[ -n $(ss -Hlnu "sport = :${SPORT[$name]}") ]]; then
            [[ $(soa_serial "${SPORT[$name]}" "$zone") == "$serial" ]] && return 0
        fi
        kill -0 "${SPID[$name]}" 2>/dev/null || {
            echo "$name died; log:" >&2
            tail -20 "$W/$name/server.log" >&2
            exit 1
        }
        if awk -v a="$(now)" -v b="$t0" -v l="$limit" 'BEGIN{exit !(a-b > l)}'; then
            echo "$name: $zone serial $serial not served after ${limit}s; log:" >&2
            tail -20 "$W/$name/server.log" >&2
            exit 1
        fi
        sleep 0.02
    done
}

rss_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }

# ---- measurement ---------------------------------------------------------------------------
# Busy jiffies (user+nice+system+irq+softirq) of cpu0, cpu1 and steal of all CPUs. With tick
# accounting and no IRQ_TIME_ACCOUNTING (this kernel) softirq ticks are also charged to the
# task that was running, so busy - server - generator is what the rest of the machine used.
cpu_snap() {
    awk '$1 == "cpu0" {b0 = $2+$3+$4+$7+$8} $1 == "cpu1" {b1 = $2+$3+$4+$7+$8}
         $1 == "cpu" {st = $9} END {print b0, b1, st}' /proc/stat
}
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# utime+stime of the ksoftirqd thread of each CPU (our own loopback traffic, not foreign).
ksoft() {
    local c sum p
    for c in 0 1; do
        sum=0
        for p in $(ps -eo pid=,comm= | awk -v n="ksoftirqd/$c" '$2 == n {print $1}'); do
            sum=$((sum + $(ticks "$p")))
        done
        printf '%s ' "$sum"
    done
    echo
}

# Waits (at most QUIET_WAIT seconds) until the other processes on the machine use less than
# FOREIGN_MAX % of one CPU over one second, so that runs start in a quiet moment. Our own
# servers are idle at that point. A run that still overlaps foreign load is flagged anyway.
wait_quiet() {
    local t0 b0 b1 busy=0
    ((QUIET_WAIT > 0)) || return 0
    t0=$SECONDS
    while ((SECONDS - t0 < QUIET_WAIT)); do
        b0=$(awk '$1 == "cpu" {print $2+$3+$4+$7+$8}' /proc/stat)
        sleep 1
        b1=$(awk '$1 == "cpu" {print $2+$3+$4+$7+$8}' /proc/stat)
        busy=$(((b1 - b0) * 100 / TCK))
        ((busy < FOREIGN_MAX)) && return 0
    done
    log "machine still busy (${busy}% of one CPU used by others) after ${QUIET_WAIT}s; running anyway"
}

# measure NAME GEN OUT CMD...: runs the generator command, writes OUT (its stdout) and
# OUT.cpu: "elapsed server_ticks gen_ticks foreign0% foreign1% steal% ksoftirqd%".
measure() {
    local name=$1 gen=$2 out=$3
    shift 3
    local spid=${SPID[$name]} c0 c1 st0 k00 k10 s0 t0 c0b c1b st1 k01 k11 s1 t1
    [[ ${NO_QUIET:-0} == 1 ]] || wait_quiet
    read -r c0 c1 st0 < <(cpu_snap)
    read -r k00 k10 < <(ksoft)
    s0=$(ticks "$spid")
    t0=$(now)
    (
        "$@" >"$out" 2>"$out.err" || echo "generator exit status $?" >>"$out.err"
        times >"$out.times"
    )
    t1=$(now)
    s1=$(ticks "$spid")
    read -r k01 k11 < <(ksoft)
    read -r c0b c1b st1 < <(cpu_snap)
    # `times` line 2: children user and system time, e.g. "0m3.120s 0m1.010s".
    awk -v t0="$t0" -v t1="$t1" -v tck="$TCK" -v s="$((s1 - s0))" \
        -v d0="$((c0b - c0))" -v d1="$((c1b - c1))" -v st="$((st1 - st0))" \
        -v ks0="$((k01 - k00))" -v ks1="$((k11 - k10))" '
        function secs(x,  a) { split(x, a, /[ms]/); return a[1] * 60 + a[2] }
        NR == 2 { g = (secs($1) + secs($2)) * tck }
        END {
            el = t1 - t0; j = el * tck / 100   # jiffies per 1% of one CPU
            printf "%.3f %d %d %.1f %.1f %.1f %.1f\n", el, s, g,
                (d0 - s - ks0) / j, (d1 - g - ks1) / j, st / j, (ks0 + ks1) / j
        }' "$out.times" >"$out.cpu"
}

# Result row (tab-separated) from a finished measurement.
#   server gen round qps mean_us p99_us lost sent cpu_us_per_q server% gen% gen_idle% f0% f1%
#   steal% ksoft% flag
row() {
    local name=$1 gen=$2 round=$3 out=$4 qps mean p99 lost sent done_q idle=n/a
    if [[ $gen == dnsperf ]]; then
        qps=$(awk '/Queries per second:/ {printf "%.0f", $4}' "$out")
        mean=$(awk '/Average Latency \(s\):/ {printf "%.1f", $4 * 1e6}' "$out")
        p99=n/a
        lost=$(awk '/Queries lost:/ {print $3}' "$out")
        sent=$(awk '/Queries sent:/ {print $3}' "$out")
        done_q=$(awk '/Queries completed:/ {print $3}' "$out")
    else
        kv() { awk -v k="$1" '{for (i = 1; i <= NF; i++) {split($i, a, "="); if (a[1] == k) {print a[2]; exit}}}' "$out"; }
        qps=$(kv qps)
        mean=$(kv mean_us)
        p99=$(kv p99_us)
        lost=$(kv lost)
        sent=$(kv sent)
        done_q=$(kv received)
        idle=$(kv gen_idle_pct)
    fi
    if [[ -z $qps || -z $done_q ]]; then
        echo "$name/$gen produced no result:" >&2
        cat "$out" "$out.err" >&2
        qps=0 mean=0 p99=0 lost=0 sent=0 done_q=0
    fi
    read -r el s g f0 f1 stp ksp <"$out.cpu"
    awk -v OFS='\t' -v n="$name" -v gen="$gen" -v r="$round" -v qps="$qps" -v mean="$mean" \
        -v p99="$p99" -v lost="$lost" -v sent="$sent" -v dq="$done_q" -v el="$el" -v s="$s" \
        -v g="$g" -v f0="$f0" -v f1="$f1" -v st="$stp" -v ks="$ksp" -v tck="$TCK" \
        -v fmax="$FOREIGN_MAX" -v idle="$idle" 'BEGIN {
            cpq = dq > 0 ? s * 1e6 / tck / dq : 0
            gp = g * 100 / tck / el
            flag = (f0 > fmax || f1 > fmax || st > fmax) ? "CONTAMINATED" : ""
            # dnsperf sleeps when idle, loadgen spins and reports its idle share instead.
            if ((gen == "dnsperf" && gp >= 95) || (gen != "dnsperf" && idle + 0 < 3))
                flag = flag (flag == "" ? "" : ",") "GEN-BOUND"
            printf "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%.2f\t%.0f\t%.0f\t%s\t%s\t%s\t%s\t%s\t%s\n",
                n, gen, r, qps, mean, p99, lost, sent, cpq, s * 100 / tck / el,
                gp, idle, f0, f1, st, ks, flag == "" ? "ok" : flag
        }'
}

run_gen() {
    local name=$1 gen=$2 qfile=$3 out=$4 port=${SPORT[$1]}
    shift 4
    if [[ $gen == dnsperf ]]; then
        # shellcheck disable=SC2086
        measure "$name" "$gen" "$out" taskset -c $GEN_CPU dnsperf -s 127.0.0.1 -p "$port" \
            -d "$qfile" -l "$DURATION" -T 1 -t 2 $DNSPERF_ARGS "$@"
    else
        # shellcheck disable=SC2086
        measure "$name" "$gen" "$out" taskset -c $GEN_CPU "$LOADGEN_BIN" -s "127.0.0.1:$port" \
            -d "$qfile" -l "$DURATION" -t 2000 $LOADGEN_ARGS --label "$name" "$@"
    fi
}

HDR="server\tgen\tround\tqps\tmean_us\tp99_us\tlost\tsent\tcpu_us/q\tsrv%\tgen%\tgen_idle%\tforeign0%\tforeign1%\tsteal%\tksoftirq%\tflag"

# ---- load mode -----------------------------------------------------------------------------
mode_load() {
    log "work directory $W; generating ${NAMES}-host zone and query mix"
    "$here/gen_zone.sh" bench.test "$NAMES" 1 >"$W/bench.test.zone"
    "$here/gen_queries.sh" bench.test "$NAMES" 200000 >"$W/queries.txt"
    local s t0 gen r results=$W/results.tsv
    declare -A LOADT=()
    for s in $SERVERS; do
        t0=$(now)
        start_server "$s" "bench.test:$W/bench.test.zone"
        wait_serial "$s" bench.test 1 120
        LOADT[$s]=$(awk -v a="$(now)" -v b="$t0" 'BEGIN{printf "%.2f", a - b}')
        log "$s pid ${SPID[$s]} port ${SPORT[$s]}: zone served after ${LOADT[$s]} s"
    done
    # Sanity: both servers give the same answers to a few queries of the mix.
    for q in "h42.bench.test A" "h42.bench.test AAAA" "a20.bench.test A" "nx1.bench.test A" \
        "w7.wild.bench.test A" "x.sub.bench.test A"; do
        for s in $SERVERS; do
            # shellcheck disable=SC2086
            printf '%-8s %-22s %s\n' "$s" "$q" "$(kdig @127.0.0.1 -p "${SPORT[$s]}" $q +noall \
                +header 2>&1 | tr -d ',;' | awk '{for (i = 1; i < NF; i++) if ($i ~ /^(status|ANSWER|AUTHORITY|ADDITIONAL):$/) printf "%s %s ", $i, $(i + 1)} END {print ""}')"
        done
    done >&2
    printf '%b\n' "$HDR" >"$results"
    for r in $(seq "$ROUNDS"); do
        for gen in dnsperf loadgen; do
            for s in $SERVERS; do
                log "round $r: $gen -> $s (${DURATION}s)"
                run_gen "$s" "$gen" "$W/queries.txt" "$W/$s.$gen.$r.out"
                row "$s" "$gen" "$r" "$W/$s.$gen.$r.out" >>"$results"
            done
        done
    done
    declare -A HWM=()
    for s in $SERVERS; do HWM[$s]=$(rss_kb "${SPID[$s]}" VmHWM); done

    echo
    echo "== per run (server pinned to CPU $SERVER_CPU, generator to CPU $GEN_CPU; foreign = CPU used by" \
        "other processes, % of one CPU; flagged above ${FOREIGN_MAX}%)"
    column -t -s $'\t' "$results"
    echo
    echo "== summary: mean per server over runs without foreign load (* = none clean, mean of all);"
    echo "   ratios Muninn/Knot over rounds where both runs were clean (~ = clean runs of different"
    echo "   rounds, * = no clean runs, all rounds)"
    awk -F'\t' -v knot_hwm="${HWM[knot]:-0}" -v mun_hwm="${HWM[muninn]:-0}" \
        -v knot_lt="${LOADT[knot]:-0}" -v mun_lt="${LOADT[muninn]:-0}" '
        NR == 1 { next }
        {
            k = $1 SUBSEP $2; clean = $17 !~ /CONTAMINATED/
            all[k]++; aq[k] += $4; am[k] += $5; ap[k] += $6; ac[k] += $9; al[k] += $7
            if (clean) { ok[k]++; q[k] += $4; m[k] += $5; p[k] += $6; c[k] += $9; l[k] += $7 }
            if ($17 ~ /GEN-BOUND/) gb[k]++
            gens[$2] = 1
            r = $2 SUBSEP $3; rounds[r] = 1
            Q[$1, r] = $4; M[$1, r] = $5; P[$1, r] = $6; C[$1, r] = $9; OK[$1, r] = clean
        }
        function val(arr, aarr, k) { return ok[k] ? arr[k] / ok[k] : (all[k] ? aarr[k] / all[k] : 0) }
        function ratio(a, b) { return b > 0 ? sprintf("%.2f", a / b) : "n/a" }
        END {
            printf "%-8s %-9s %10s %10s %10s %10s %9s  %s\n", "gen", "server", "qps", "mean_us", "p99_us", "cpu_us/q", "lost/run", "notes"
            for (gen in gens) {
                for (si = 1; si <= 2; si++) {
                    s = si == 1 ? "knot" : "muninn"; k = s SUBSEP gen
                    if (!all[k]) continue
                    printf "%-8s %-9s %9.0f%s %10.1f %10s %10.2f %9.0f  %s\n", gen, s, val(q, aq, k),
                        ok[k] ? " " : "*", val(m, am, k),
                        gen == "dnsperf" ? "n/a" : sprintf("%.0f", val(p, ap, k)), val(c, ac, k),
                        val(l, al, k), gb[k] ? gb[k] "/" all[k] " runs generator-bound" : ""
                }
                # Paired ratios: only rounds where both servers ran clean; else the clean
                # means of different rounds (~); else all rounds (*).
                kk = "knot" SUBSEP gen; mk = "muninn" SUBSEP gen
                npair = 0
                for (pass = 1; pass <= 2 && npair == 0; pass++) {
                    if (pass == 2 && ok[kk] && ok[mk]) {
                        printf "%-8s %-9s %9s~ %10s %10s %10s %9s  clean runs of different rounds\n",
                            gen, "mun/knot", ratio(val(q, aq, mk), val(q, aq, kk)),
                            ratio(val(m, am, mk), val(m, am, kk)),
                            gen == "dnsperf" ? "n/a" : ratio(val(p, ap, mk), val(p, ap, kk)),
                            ratio(val(c, ac, mk), val(c, ac, kk)), ""
                        break
                    }
                    sq["k"] = sq["m"] = sm["k"] = sm["m"] = sp["k"] = sp["m"] = sc["k"] = sc["m"] = 0
                    for (r in rounds) {
                        split(r, rr, SUBSEP); if (rr[1] != gen) continue
                        if (!(("knot", r) in Q) || !(("muninn", r) in Q)) continue
                        if (pass == 1 && !(OK["knot", r] && OK["muninn", r])) continue
                        npair++
                        sq["k"] += Q["knot", r]; sq["m"] += Q["muninn", r]
                        sm["k"] += M["knot", r]; sm["m"] += M["muninn", r]
                        sp["k"] += P["knot", r]; sp["m"] += P["muninn", r]
                        sc["k"] += C["knot", r]; sc["m"] += C["muninn", r]
                    }
                    mark = pass == 1 ? " " : "*"
                }
                if (npair)
                    printf "%-8s %-9s %9s%s %10s %10s %10s %9s  %d round(s)\n", gen, "mun/knot",
                        ratio(sq["m"], sq["k"]), mark, ratio(sm["m"], sm["k"]),
                        gen == "dnsperf" ? "n/a" : ratio(sp["m"], sp["k"]), ratio(sc["m"], sc["k"]), "", npair
            }
            printf "peak RSS (VmHWM): knot %.1f MB, muninn %.1f MB, muninn/knot %s\n",
                knot_hwm / 1024, mun_hwm / 1024, ratio(mun_hwm, knot_hwm)
            printf "zone load to first answer: knot %s s, muninn %s s\n", knot_lt, mun_lt
        }' "$results"
    if grep -q CONTAMINATED "$results"; then
        echo "WARNING: some runs had foreign CPU load above ${FOREIGN_MAX}% (see the flag column)."
    fi
    for s in $SERVERS; do stop_server "$s"; done
}

# ---- reload mode ---------------------------------------------------------------------------
trigger_reload() {
    local name=$1
    case $name in
    knot) knotc -c "${SCONF[$name]}" zone-reload big.test >/dev/null 2>&1 ;;
    muninn) kill -HUP "${SPID[$name]}" ;;
    esac
}

# phase_field FILE PHASE FIELD: a field of the generator's `phase=` line for PHASE.
phase_field() {
    awk -v ph="$2" -v f="$3" '$1 == "phase=" ph {
        for (i = 1; i <= NF; i++) { split($i, a, "="); if (a[1] == f) print a[2] } }' "$1"
}

# control_run NAME RATE RELOAD_OUT: once the server has settled (its background work after
# the reload done), the same load and phases again with nothing reloaded, "during" as long
# as the reload's. On a shared VM the worst second of a phase is mostly the machine's doing
# (steal, host I/O); the control shows how much, in the same conditions.
control_run() {
    local s=$1 rate=$2 rout=$3 during_s cout=$W/$1.control.out mpid steal_pid
    during_s=$(phase_field "$rout" during seconds)
    [[ -n $during_s ]] || return 0
    QUIET_WAIT=120 wait_quiet
    rm -f "$W/reload.mark"
    steal_sampler "$W/$s.control.steal" "$((RELOAD_AT + during_s + 10))" &
    steal_pid=$!
    OWNED_PIDS+=("$steal_pid")
    NO_QUIET=1 DURATION=$((RELOAD_AT + during_s)) run_gen "$s" loadgen "$W/small-queries.txt" \
        "$cout" -Q "$rate" -w 4096 --per-second --mark-file "$W/reload.mark" &
    mpid=$!
    sleep "$RELOAD_AT"
    : >"$W/reload.mark"
    wait "$mpid"
    kill "$steal_pid" 2>/dev/null || true
}

# control_report NAME RELOAD_OUT: the control run's phases and its ratios to the reload run.
control_report() {
    local s=$1 rout=$2 cout=$W/$1.control.out
    [[ -s $cout ]] || return 0
    echo "   control (same load, nothing reloaded, 'during' = the $(phase_field "$cout" during seconds) s after ${RELOAD_AT} s):"
    phase_summary "$cout" "$W/$s.control.steal"
    awk -v rw="$(phase_field "$rout" during second_p99_worst_us)" \
        -v cw="$(phase_field "$cout" during second_p99_worst_us)" \
        -v rm="$(phase_field "$rout" during second_p99_median_us)" \
        -v cm="$(phase_field "$cout" during second_p99_median_us)" \
        -v rp="$(phase_field "$rout" during p99_us)" -v cp="$(phase_field "$cout" during p99_us)" \
        'BEGIN { if (cw > 0 && cm > 0 && cp > 0)
            printf "   reload / control, same length: worst second %.1fx (%d / %d us), per-second median %.1fx (%d / %d us), phase p99 %.1fx (%d / %d us)\n",
                rw / cw, rw, cw, rm / cm, rm, cm, rp / cp, rp, cp }'
}

mode_reload() {
    log "work directory $W; generating ${BIG_NAMES}-host and ${SMALL_NAMES}-host zones"
    "$here/gen_zone.sh" small.test "$SMALL_NAMES" 1 >"$W/small.test.zone"
    "$here/gen_queries.sh" small.test "$SMALL_NAMES" 50000 >"$W/small-queries.txt"
    "$here/gen_zone.sh" big.test "$BIG_NAMES" 1 >"$W/big.test.v1"
    "$here/gen_zone.sh" big.test "$BIG_NAMES" 2 >"$W/big.test.v2"
    local s t0 ttrig load_t rss_loaded max rate tr tdone reload_t hwm out summary=$W/reload-summary.txt
    : >"$summary"
    for s in $SERVERS; do
        cp "$W/big.test.v1" "$W/big.test.zone"
        t0=$(now)
        start_server "$s" "small.test:$W/small.test.zone" "big.test:$W/big.test.zone"
        wait_serial "$s" small.test 1 60
        wait_serial "$s" big.test 1 600
        load_t=$(awk -v a="$(now)" -v b="$t0" 'BEGIN{printf "%.2f", a - b}')
        rss_loaded=$(rss_kb "${SPID[$s]}" VmRSS)
        log "$s: ${BIG_NAMES}-name zone served after ${load_t} s, RSS $((rss_loaded / 1024)) MB"

        DURATION=3 run_gen "$s" loadgen "$W/small-queries.txt" "$W/$s.max.out"
        max=$(awk '{for (i = 1; i <= NF; i++) if ($i ~ /^qps=/) {sub("qps=", "", $i); print $i}}' "$W/$s.max.out" | head -1)
        rate=$((${max%.*} / 2))
        log "$s: max ${max} QPS on small.test; steady load at ${rate} QPS, reload at ${RELOAD_AT}s"

        out=$W/$s.reload.out
        # A wide window: at a fixed rate the schedule must not wait for a stalled server
        # (that would hide the stall), so queries keep going out and show up as latency or loss.
        # The generator itself polls big.test's SOA (no kdig processes competing for the two
        # cores during the measurement) and stops RELOAD_AFTER s after serial 2 is served.
        # Nothing reads big.test's file until the reload is triggered, so version 2 is put in
        # place now (a rename, no copy) rather than while the load runs.
        cp "$W/big.test.v2" "$W/big.test.next"
        mv "$W/big.test.next" "$W/big.test.zone"
        rm -f "$W/loadgen.pid"
        wait_quiet
        local run_max=$RELOAD_MAX
        [[ -n ${RELOAD_NULL:-} ]] && run_max=$((RELOAD_AT + RELOAD_NULL))
        steal_sampler "$W/$s.steal" "$((run_max + 10))" &
        local steal_pid=$!
        OWNED_PIDS+=("$steal_pid")
        NO_QUIET=1 DURATION=$run_max run_gen "$s" loadgen "$W/small-queries.txt" "$out" \
            -Q "$rate" -w 4096 --per-second --pid-file "$W/loadgen.pid" \
            --watch-soa big.test --watch-serial 2 --after-serial-s "$RELOAD_AFTER" \
            --mark-file "$W/reload.mark" &
        local mpid=$!
        sleep "$RELOAD_AT"
        # Shell builtins only from here to the end of the run: a forked `date` or `mv` lands
        # on one of the two measured cores and shows up as a latency spike (measured: `mv`
        # ran 12 ms on the server's core). The new zone file was renamed into place above.
        ttrig=$EPOCHREALTIME
        : >"$W/reload.mark"
        [[ -z ${RELOAD_NULL:-} ]] && trigger_reload "$s"
        wait "$mpid"
        kill "$steal_pid" 2>/dev/null || true
        t0=$(awk -F= '/^start_unix_s=/ {print $2}' "$out")
        tr=$(awk -v a="$ttrig" -v b="$t0" 'BEGIN{printf "%.2f", a - b}')
        tdone=$(awk '/^watch / {for (i = 1; i <= NF; i++) if ($i ~ /^first_seen_s=/) {sub("first_seen_s=", "", $i); print $i}}' "$out")
        if [[ -n ${RELOAD_NULL:-} ]]; then
            tdone=$((RELOAD_AT + RELOAD_NULL + 1))
        elif [[ -z $tdone || $tdone == - ]]; then
            echo "$s: big.test serial 2 not served within ${RELOAD_MAX}s; log:" >&2
            tail -20 "$W/$s/server.log" >&2
            exit 1
        fi
        reload_t=$(awk -v a="$tdone" -v b="$tr" 'BEGIN{printf "%.2f", a - b}')
        hwm=$(rss_kb "${SPID[$s]}" VmHWM)
        if [[ -z ${RELOAD_NULL:-} && $CONTROL == 1 ]]; then
            control_run "$s" "$rate" "$out"
        fi
        stop_server "$s"

        echo
        echo "== $s: steady ${rate} QPS on small.test (max ${max}); ${BIG_NAMES}-name big.test reload" \
            "triggered at ${tr}s, new serial served at ${tdone}s (reload ${reload_t}s)"
        read -r el sv g f0 f1 stp ksp <"$out.cpu"
        echo "   foreign CPU: cpu0 ${f0}%, cpu1 ${f1}%, steal ${stp}% (flag above ${FOREIGN_MAX}%)"
        awk -v tr="$tr" -v td="$tdone" '
            /^second=/ {
                for (i = 1; i <= NF; i++) { split($i, a, "="); v[a[1]] = a[2] }
                s = v["second"]
                ph = (s + 1 <= tr) ? "before" : (s >= td ? "after" : "during")
                printf "   %-6s s=%-3d sent=%-7d lost=%-6d p50_us=%-6d p99_us=%-7d max_us=%d\n",
                    ph, s, v["sent"], v["lost"], v["p50_us"], v["p99_us"], v["max_us"]
                n[ph]++; p[ph] += v["p99_us"]; l[ph] += v["lost"]
                if (v["p99_us"] > m[ph]) m[ph] = v["p99_us"]
            }
            /^[a-z]+ qps=/ { total = $0 }
            END {
                for (i = 1; i <= 3; i++) {
                    ph = i == 1 ? "before" : (i == 2 ? "during" : "after")
                    if (n[ph]) printf "   %-6s mean p99 %.0f us, worst p99 %d us, lost %d\n", ph, p[ph] / n[ph], m[ph], l[ph]
                }
                print "   " total
            }' "$out"
        # The generator's own summary of each phase (all its queries, and its per-second p99s).
        phase_summary "$out" "$W/$s.steal"
        if [[ -z ${RELOAD_NULL:-} && $CONTROL == 1 ]]; then
            control_report "$s" "$out"
        fi
        if awk -v a="$f0" -v b="$f1" -v c="$stp" -v m="$FOREIGN_MAX" 'BEGIN{exit !(a > m || b > m || c > m)}'; then
            echo "   WARNING: CONTAMINATED run (foreign CPU above ${FOREIGN_MAX}%)"
        fi
        printf '%s\tload_s=%s\treload_s=%s\trss_loaded_mb=%.1f\tpeak_rss_mb=%.1f\tmax_qps=%s\n' \
            "$s" "$load_t" "$reload_t" "$(awk -v x="$rss_loaded" 'BEGIN{print x / 1024}')" \
            "$(awk -v x="$hwm" 'BEGIN{print x / 1024}')" "$max" >>"$summary"
    done
    echo
    echo "== ${BIG_NAMES}-name zone: load time (start to first answer), reload time, memory"
    column -t -s $'\t' "$summary"
}

build
isolate_server_core "$GEN_CPU"
case $mode in
load) mode_load ;;
reload) mode_reload ;;
esac
