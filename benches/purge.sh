#!/usr/bin/env bash
# Bulk purge benchmark: query latency while 1,000,000 records are purged, and purge speed.
#
# A store-managed zone big.test holds RECORDS A records, all tagged bench=purge (filled with
# the hidden `muninn db fill` helper), next to a file-managed 1,000-name zone small.test.
#
#   1. offline: `muninn db purge` on a copy of the store (no server): records/s.
#   2. online: Muninn serves both zones (one query worker pinned to CPU 0, one heavy-job
#      thread); loadgen (CPU 1) sends the small.test query mix at a fixed rate (half the
#      measured maximum) with per-second latency; after BEFORE seconds the purge of every
#      record of big.test is started through the admin API (POST /v1/purges, bearer token)
#      and followed on GET /v1/jobs/{id}; the load runs AFTER seconds past the end of the
#      purge. Prints p99 per second and per phase (before/during/after), the purge's
#      records/s and duration, the foreign CPU used meanwhile (runs are flagged above
#      FOREIGN_MAX).
#
# Environment: RECORDS (1000000), SMALL_NAMES (1000), BATCH ([store] purge_batch_size, 1000),
# BEFORE (s, 10), AFTER (s, 10), SAMPLE_EVERY (s between CPU samples, 5), POLL_EVERY (s between
# job polls, 2), PURGE_MAX (s, bound on the purge, 1800), RATE (QPS; default half
# the max), FOREIGN_MAX (% of one CPU, 10), QUIET_WAIT (s, 15), MODE ("both", "offline",
# "online"), RUNTIME_EXTRA (lines added to the server's [runtime] table), MUNINN_BIN / LOADGEN_BIN (skip the cargo build), KEEP=1 (keep the work directory).
set -euo pipefail

case ${1:-} in
-h | --help | help)
    sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
RECORDS=${RECORDS:-1000000}
SMALL_NAMES=${SMALL_NAMES:-1000}
BATCH=${BATCH:-1000}
BEFORE=${BEFORE:-10}
AFTER=${AFTER:-10}
# The CPU sampler and the job poller fork a dozen processes per round, which land on the
# two measured cores: perf showed them (bash, curl, sed) among the worst query stalls at
# one round per second. Hence a round every few seconds.
SAMPLE_EVERY=${SAMPLE_EVERY:-5}
POLL_EVERY=${POLL_EVERY:-2}
PURGE_MAX=${PURGE_MAX:-1800}
FOREIGN_MAX=${FOREIGN_MAX:-10}
QUIET_WAIT=${QUIET_WAIT:-15}
MODE=${MODE:-both}
TAG=bench=purge
SERVER_CPU=0
GEN_CPU=1
TCK=$(getconf CLK_TCK)

W=$(mktemp -d /tmp/muninn-purge.XXXXXX)
OWNED_PIDS=()

cleanup() {
    local p
    [[ -s $W/loadgen.pid ]] && OWNED_PIDS+=("$(cat "$W/loadgen.pid")")
    for p in "${OWNED_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${OWNED_PIDS[@]}"; do
        for _ in $(seq 20); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.2
        done
        kill -KILL "$p" 2>/dev/null || true
    done
    isolate_restore
    if [[ ${KEEP:-0} == 1 ]]; then echo "work directory kept: $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
# shellcheck source=benches/common.sh
. "$here/common.sh"
now() { date +%s.%N; }
since() { awk -v a="$(now)" -v b="$1" 'BEGIN{printf "%.2f", a - b}'; }

for tool in kdig curl taskset ss awk; do
    command -v "$tool" >/dev/null || {
        echo "missing tool: $tool" >&2
        exit 1
    }
done

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

# Busy jiffies of all CPUs (user+nice+system+irq+softirq), for the foreign-load check.
busy() { awk '$1 == "cpu" {print $2+$3+$4+$7+$8}' /proc/stat; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }

# Every SAMPLE_EVERY s until killed: "t cpu0_busy cpu1_busy lat_ticks heavy_ticks other_ticks" with
# the server's CPU split by thread kind (latency workers, heavy-job threads incl. the store
# writer, the rest: admin, main).
sample() {
    local spid=$1 t0=$2
    while kill -0 "$spid" 2>/dev/null; do
        {
            awk -v t="$(awk -v a="$(now)" -v b="$t0" 'BEGIN{printf "%.2f", a - b}')" '
                $1 == "cpu0" {b0 = $2+$3+$4+$7+$8} $1 == "cpu1" {b1 = $2+$3+$4+$7+$8}
                END {printf "%s %d %d", t, b0, b1}' /proc/stat
            # The process line first: it also counts threads that have exited (blocking-pool
            # threads come and go), which are heavy-job threads; so heavy = all - the rest.
            for f in /proc/"$spid"/stat /proc/"$spid"/task/*/stat; do cat "$f" 2>/dev/null; done |
                awk 'NR == 1 {sub(/.*\) /, ""); all = $12 + $13; next}
                     {c = $2; sub(/.*\) /, ""); n = $12 + $13
                      if (c ~ /muninn-lat/) l += n; else if (c !~ /muninn-heavy/) o += n}
                     END {printf " %d %d %d\n", l, all - l - o, o}'
        } >>"$3"
        sleep "$SAMPLE_EVERY"
    done
}

wait_quiet() {
    local t0 b0 b1 pct=0
    ((QUIET_WAIT > 0)) || return 0
    t0=$SECONDS
    while ((SECONDS - t0 < QUIET_WAIT)); do
        b0=$(busy)
        sleep 1
        b1=$(busy)
        pct=$(((b1 - b0) * 100 / TCK))
        ((pct < FOREIGN_MAX)) && return 0
    done
    log "machine still busy (${pct}% of one CPU used by others) after ${QUIET_WAIT}s; running anyway"
}

# ---- build and fill --------------------------------------------------------------------------
if [[ -z ${MUNINN_BIN:-} || -z ${LOADGEN_BIN:-} ]]; then
    log "building muninn and loadgen (release)"
    (cd "$root" && cargo build --release --bin muninn --example loadgen) >&2
fi
MUNINN_BIN=${MUNINN_BIN:-$root/target/release/muninn}
LOADGEN_BIN=${LOADGEN_BIN:-$root/target/release/examples/loadgen}

log "work directory $W; filling big.test with $RECORDS records tagged $TAG"
printf '$TTL 300\n@ IN SOA ns1 hostmaster 1 3600 600 86400 300\n@ IN NS ns1\n@ IN NS ns2\nns1 IN A 192.0.2.1\nns2 IN A 192.0.2.2\n' \
    >"$W/big.test.zone"
"$MUNINN_BIN" db import "$W/big.test.zone" --data-dir "$W/data" >&2
t0=$(now)
"$MUNINN_BIN" db fill big.test. --count "$RECORDS" --tag "$TAG" --data-dir "$W/data" >&2
log "filled in $(since "$t0") s; store $(du -m "$W/data/muninn.redb" | cut -f1) MB"
"$here/gen_zone.sh" small.test "$SMALL_NAMES" 1 >"$W/small.test.zone"
"$here/gen_queries.sh" small.test "$SMALL_NAMES" 50000 >"$W/small-queries.txt"
summary=()
isolate_server_core "$GEN_CPU"

# ---- offline -----------------------------------------------------------------------------
if [[ $MODE == both || $MODE == offline ]]; then
    cp -a "$W/data" "$W/offline"
    wait_quiet
    b0=$(busy)
    t0=$(now)
    taskset -c $SERVER_CPU "$MUNINN_BIN" db purge --tag "$TAG" --zone big.test --batch-size "$BATCH" \
        --data-dir "$W/offline" >"$W/offline.out" 2>"$W/offline.err"
    el=$(since "$t0")
    b1=$(busy)
    cat "$W/offline.out"
    "$MUNINN_BIN" db check --data-dir "$W/offline" | tail -1
    # Everything busy meanwhile, minus the one core the purge could use at most.
    foreign=$(awk -v b="$((b1 - b0))" -v t="$TCK" -v el="$el" 'BEGIN{f = b * 100 / t / el - 100; printf "%.0f", f < 0 ? 0 : f}')
    summary+=("offline: $RECORDS records, batch $BATCH, ${el} s wall, $(awk -v n="$RECORDS" -v e="$el" 'BEGIN{printf "%.0f", n / e}') records/s; up to ${foreign}% of one CPU used by others")
    rm -rf "$W/offline"
fi

# ---- online ------------------------------------------------------------------------------
if [[ $MODE == both || $MODE == online ]]; then
    port=$(pick_port)
    aport=$(pick_port)
    mport=$(pick_port)
    printf 'bench-%s-%s\n' "$RANDOM" "$RANDOM" >"$W/token"
    chmod 600 "$W/token"
    cat >"$W/muninn.toml" <<EOF
data_dir = "$W/data"

[server]
listen = ["127.0.0.1:$port"]

[runtime]
workers = 1
heavy_workers = 1
${RUNTIME_EXTRA:-}

[zones]
directory = ""

[[zones.zone]]
name = "small.test."
file = "$W/small.test.zone"

[[zones.zone]]
name = "big.test."
managed = "store"

[store]
purge_batch_size = $BATCH

[metrics]
enabled = true
listen = "127.0.0.1:$mport"

[admin]
enabled = true
listen = "127.0.0.1:$aport"
token_file = "$W/token"
EOF
    taskset -c $SERVER_CPU "$MUNINN_BIN" serve --config "$W/muninn.toml" >"$W/server.log" 2>&1 &
    spid=$!
    OWNED_PIDS+=("$spid")
    serial() { kdig @127.0.0.1 -p "$port" "$1" SOA +short +time=1 +retry=0 2>/dev/null | awk 'NF >= 7 {print $3; exit}'; }
    t0=$(now)
    until [[ -n $(serial big.test) && -n $(serial small.test) ]]; do
        kill -0 "$spid" 2>/dev/null || {
            tail -20 "$W/server.log" >&2
            exit 1
        }
        sleep 0.1
    done
    s0=$(serial big.test)
    log "server pid $spid port $port: zones served after $(since "$t0") s (big.test serial $s0), RSS $(awk '$1 == "VmRSS:" {printf "%d MB", $2 / 1024}' "/proc/$spid/status")"
    api() { curl -sS --max-time 10 -H "Authorization: Bearer $(cat "$W/token")" "$@"; }
    jnum() { sed -n "s/.*\"$1\":\([0-9.eE+-]*\).*/\1/p"; }
    jstr() { sed -n "s/.*\"$1\":\"\([a-z]*\)\".*/\1/p"; }

    taskset -c $GEN_CPU "$LOADGEN_BIN" -s "127.0.0.1:$port" -d "$W/small-queries.txt" -l 3 -t 2000 \
        -c 8 -w 16 >"$W/max.out"
    max=$(awk '{for (i = 1; i <= NF; i++) if ($i ~ /^qps=/) {sub("qps=", "", $i); print $i}}' "$W/max.out" | head -1)
    rate=${RATE:-$((${max%.*} / 2))}
    log "max ${max} QPS on small.test; steady load at ${rate} QPS; purge at ${BEFORE} s"

    wait_quiet
    rm -f "$W/loadgen.pid"
    b0=$(busy)
    st0=$(ticks "$spid")
    taskset -c $GEN_CPU "$LOADGEN_BIN" -s "127.0.0.1:$port" -d "$W/small-queries.txt" -l "$PURGE_MAX" \
        -t 2000 -c 8 -w 4096 -Q "$rate" --per-second --stop-on-usr1 --pid-file "$W/loadgen.pid" \
        --mark-file "$W/purge.mark" --mark-end-file "$W/purge.done" >"$W/load.out" 2>"$W/load.err" &
    lpid=$!
    OWNED_PIDS+=("$lpid")
    steal_sampler "$W/steal.txt" "$((PURGE_MAX + 10))" &
    OWNED_PIDS+=("$!")
    steal_pid=$!
    tl=$(now)
    sample "$spid" "$tl" "$W/cpu.txt" &
    OWNED_PIDS+=("$!")
    sleep "$BEFORE"
    tp=$(since "$tl")
    : >"$W/purge.mark"
    api -X POST -H 'Content-Type: application/json' \
        -d "{\"tag\":\"$TAG\",\"zone\":\"big.test.\"}" "http://127.0.0.1:$aport/v1/purges" >"$W/purge.json"
    id=$(jnum id <"$W/purge.json")
    [[ -n $id ]] || {
        echo "purge not started: $(cat "$W/purge.json")" >&2
        exit 1
    }
    : >"$W/progress.txt"
    while :; do
        sleep "$POLL_EVERY"
        api "http://127.0.0.1:$aport/v1/jobs/$id" >"$W/job.json"
        state=$(jstr state <"$W/job.json")
        printf '%s processed=%s deleted=%s total=%s rate=%s\n' "$(since "$tl")" "$(jnum processed <"$W/job.json")" \
            "$(jnum deleted <"$W/job.json")" "$(jnum total <"$W/job.json")" "$(jnum rate <"$W/job.json")" >>"$W/progress.txt"
        [[ $state == running ]] || break
    done
    td=$(since "$tl")
    : >"$W/purge.done"
    s1=$(serial big.test)
    rss_purged=$(awk '$1 == "VmRSS:" {printf "%d", $2 / 1024}' "/proc/$spid/status")
    sleep "$AFTER"
    kill -USR1 "$(cat "$W/loadgen.pid")" 2>/dev/null || true
    wait "$lpid" || true
    kill "$steal_pid" 2>/dev/null || true
    st1=$(ticks "$spid")
    b1=$(busy)
    el=$(since "$tl")

    echo
    echo "== online: steady ${rate} QPS on small.test (max ${max}); purge of big.test started at ${tp} s, finished at ${td} s"
    echo "   job: $(cat "$W/job.json")"
    echo "   big.test serial $s0 -> $s1 (one bump per batch)"
    echo "   server RSS at the end of the purge ${rss_purged} MB, peak $(awk '$1 == "VmHWM:" {printf "%d", $2 / 1024}' "/proc/$spid/status") MB"
    curl -sS --max-time 5 "http://127.0.0.1:$mport/metrics" |
        grep -E '^muninn_(store_events_retained_bytes|store_events_published_total|store_file_bytes|purge_[a-z_]+(_total)?)[{ ]' |
        sed 's/^/   /'
    sed 's/^/   progress t=/' "$W/progress.txt" | awk 'NR % 10 == 1'
    awk -v tp="$tp" -v td="$td" '
        /^second=/ {
            for (i = 1; i <= NF; i++) { split($i, a, "="); v[a[1]] = a[2] }
            s = v["second"]
            ph = (s + 1 <= tp) ? "before" : (s >= td ? "after" : "during")
            n[ph]++; p[ph] += v["p99_us"]; l[ph] += v["lost"]; sent[ph] += v["sent"]
            if (v["p99_us"] > m[ph]) m[ph] = v["p99_us"]
        }
        /^[a-z]+ qps=/ { total = $0 }
        END {
            for (i = 1; i <= 3; i++) {
                ph = i == 1 ? "before" : (i == 2 ? "during" : "after")
                if (n[ph]) printf "   %-6s %3d s: mean p99 %.0f us, worst p99 %d us, sent %d, lost %d\n", ph, n[ph], p[ph] / n[ph], m[ph], sent[ph], l[ph]
            }
            print "   " total
        }' "$W/load.out"
    # The generator's own summary of each phase (all its queries, and its per-second p99s).
    phase_summary "$W/load.out" "$W/steal.txt"
    # Per phase: CPU 0 (the server's) busy, split into the server's latency worker, its
    # heavy-job threads and everything else on CPU 0 (foreign processes, softirqs).
    awk -v tp="$tp" -v td="$td" -v tck="$TCK" '
        NR > 1 {
            dt = $1 - t; ph = (t + 0.5 < tp) ? "before" : (t + 0.5 >= td ? "after" : "during")
            T[ph] += dt; C0[ph] += $2 - b0; L[ph] += $4 - l; H[ph] += $5 - h; O[ph] += $6 - o
        }
        { t = $1; b0 = $2; l = $4; h = $5; o = $6 }
        END {
            for (i = 1; i <= 3; i++) {
                ph = i == 1 ? "before" : (i == 2 ? "during" : "after")
                if (T[ph] > 0) {
                    j = T[ph] * tck / 100
                    printf "   %-6s CPU 0 busy %3.0f%%: latency worker %3.0f%%, heavy threads %3.0f%%, other server threads %2.0f%%, not the server %3.0f%%\n",
                        ph, C0[ph] / j, L[ph] / j, H[ph] / j, O[ph] / j, (C0[ph] - L[ph] - H[ph] - O[ph]) / j
                }
            }
        }' "$W/cpu.txt"
    awk -v b="$((b1 - b0))" -v s="$((st1 - st0))" -v t="$TCK" -v el="$el" -v fmax="$FOREIGN_MAX" 'BEGIN {
        printf "   server CPU %.0f%% of one CPU; all CPUs busy %.0f%% (server + generator + others)\n", s * 100 / t / el, b * 100 / t / el
    }'
    drate=$(jnum rate <"$W/job.json")
    summary+=("online: $(jnum deleted <"$W/job.json") records deleted in $(awk -v a="$td" -v b="$tp" 'BEGIN{printf "%.1f", a - b}') s ($(awk -v r="$drate" 'BEGIN{printf "%.0f", r}') records/s by the job's clock) under ${rate} QPS")
    kill "$spid"
    wait "$spid" 2>/dev/null || true
fi

echo
echo "== summary (uptime: $(uptime | sed 's/.*load average/load average/'))"
printf '   %s\n' "${summary[@]}"
