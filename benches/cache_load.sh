#!/usr/bin/env bash
# Cache-hit throughput and memory per cached entry: Muninn's caching resolver beside Unbound,
# both forwarding to the same local upstream (knotd), in one run.
#
#   benches/cache_load.sh            # NAMES=100000 DURATION=10
#   PERF=1 KEEP=1 benches/cache_load.sh   # also `perf record -g` each server while measured
#   GEN=dnsperf benches/cache_load.sh      # measure with dnsperf instead of examples/loadgen
#
# The measured run uses the batched generator (examples/loadgen, sendmmsg/recvmmsg) by
# default: one dnsperf process saturates near 115-150k qps here, before either server does,
# so its QPS says more about dnsperf than about the servers.
#
# Each server gets one worker pinned to CPU 0; dnsperf runs pinned to CPU 1. Every name is
# asked once to warm the cache, then the measured run asks only cached names. Memory per
# entry = (RSS after warming - RSS before) / NAMES. Foreign CPU (anything but the server and
# dnsperf) is printed per run: a run with much foreign load is not comparable.
set -euo pipefail

NAMES=${NAMES:-100000}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-8}
OUTSTANDING=${OUTSTANDING:-200}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/muninn-cache-bench.XXXXXX)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    [ -n "${KEEP:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT

for tool in knotd unbound dnsperf taskset; do
    command -v "$tool" >/dev/null || { echo "missing $tool" >&2; exit 1; }
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP=$(free_port); UB=$(free_port); MU=$(free_port)

GEN=${GEN:-loadgen}
echo "building muninn and loadgen (release)..."
(cd "$ROOT" && cargo build --release -q --bin muninn --example loadgen)
MUNINN="$ROOT/target/release/muninn"
LOADGEN="$ROOT/target/release/examples/loadgen"

# Upstream: knotd with NAMES A records (TTL 1 day, so nothing expires during the run). Not
# under .test: Unbound answers special-use names (RFC 6761) from its own local zones.
mkdir -p "$WORK/knot" "$WORK/zones-empty"
python3 - "$WORK/knot/cache.example.zone" "$NAMES" "$WORK/queries.txt" <<'PY'
import sys
zone, n, queries = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with open(zone, "w") as z, open(queries, "w") as q:
    z.write("$ORIGIN cache.example.\n$TTL 86400\n@ SOA ns hostmaster 1 7200 3600 1209600 300\n@ NS ns\nns A 127.0.0.1\n")
    for i in range(n):
        z.write(f"h{i} A 10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}\n")
        q.write(f"h{i}.cache.example A\n")
PY
cat > "$WORK/knot/knot.conf" <<CONF
server:
    rundir: "$WORK/knot"
    listen: 127.0.0.1@$UP
    udp-workers: 1
    background-workers: 1
database:
    storage: "$WORK/knot"
zone:
  - domain: cache.example.
    file: "$WORK/knot/cache.example.zone"
    journal-content: none
    zonefile-sync: -1
log:
  - target: stderr
    any: warning
CONF
knotd -c "$WORK/knot/knot.conf" >"$WORK/knot.log" 2>&1 &
PIDS+=($!)

cat > "$WORK/unbound.conf" <<CONF
server:
    interface: 127.0.0.1@$UB
    port: $UB
    num-threads: 1
    so-reuseport: no
    do-daemonize: no
    chroot: ""
    username: ""
    directory: "$WORK"
    pidfile: "$WORK/unbound.pid"
    logfile: ""
    use-syslog: no
    verbosity: 0
    do-not-query-localhost: no
    access-control: 127.0.0.0/8 allow
    module-config: "iterator"
    msg-cache-size: 64m
    rrset-cache-size: 128m
    qname-minimisation: no
    prefetch: no
    minimal-responses: yes
forward-zone:
    name: "."
    forward-addr: 127.0.0.1@$UP
CONF
cat > "$WORK/muninn.toml" <<CONF
data_dir = "$WORK/data"
[server]
listen = ["127.0.0.1:$MU"]
[zones]
directory = "$WORK/zones-empty"
[runtime]
workers = 1
[recursion]
enabled = true
upstreams = ["127.0.0.1:$UP"]
cache_size = 268435456
CONF

wait_answer() { # port
    for _ in $(seq 1 100); do
        if dig +short +time=1 +tries=1 @127.0.0.1 -p "$1" h0.cache.example A >/dev/null 2>&1 \
            && [ -n "$(dig +short +time=1 +tries=1 @127.0.0.1 -p "$1" h0.cache.example A)" ]; then
            return 0
        fi
        sleep 0.2
    done
    echo "server on port $1 did not answer" >&2
    return 1
}
wait_answer "$UP"

busy() { awk '/^cpu /{print $2+$3+$4+$7+$8}' /proc/stat; }
pj() { awk '{print $14+$15}' "/proc/$1/stat"; }
rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }

run_one() { # name port pid
    local name=$1 port=$2 pid=$3
    local rss0 rss1 b0 b1 s0 s1 t0 t1 out qps lat
    rss0=$(rss_kb "$pid")
    # Warm: every name once (the upstream answers these).
    taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries.txt" -n 1 -c 4 -q 100 -t 5 >/dev/null 2>&1
    sleep 2  # let cache housekeeping settle
    rss1=$(rss_kb "$pid")
    b0=$(busy); s0=$(pj "$pid"); t0=$(date +%s.%N)
    if [ -n "${PERF:-}" ]; then
        perf record -q -g -p "$pid" -o "$WORK/$name.perf.data" -- sleep "$DURATION" >/dev/null 2>&1 &
    fi
    if [ "$GEN" = dnsperf ]; then
        out=$(taskset -c 1 dnsperf -s 127.0.0.1 -p "$port" -d "$WORK/queries.txt" -l "$DURATION" \
            -c "$CLIENTS" -q "$OUTSTANDING" -T 1 2>&1)
        qps=$(awk '/Queries per second/{print $4}' <<<"$out")
        lat=$(awk '/Average Latency/{print $4*1000}' <<<"$out")
        lost=$(awk '/Queries lost/{print $3}' <<<"$out")
    else
        # 8 sockets x 16 in flight saturate one server core without overflowing its
        # socket buffer (see examples/loadgen.rs).
        out=$(taskset -c 1 "$LOADGEN" -s "127.0.0.1:$port" -d "$WORK/queries.txt" \
            -l "$DURATION" -c 8 -w 16 --label "$name" 2>&1 | head -1)
        kv() { tr ' ' '\n' <<<"$out" | awk -F= -v k="$1" '$1==k{print $2}'; }
        qps=$(kv qps); lat=$(awk -v u="$(kv mean_us)" 'BEGIN{print u/1000}'); lost=$(kv lost)
    fi
    b1=$(busy); s1=$(pj "$pid"); t1=$(date +%s.%N)
    awk -v n="$name" -v q="$qps" -v l="$lat" -v lost="$lost" -v r0="$rss0" -v r1="$rss1" \
        -v names="$NAMES" -v b="$((b1 - b0))" -v s="$((s1 - s0))" -v t0="$t0" -v t1="$t1" 'BEGIN {
        dt = t1 - t0; srv = s / 100 / dt * 100; foreign = (b - s) / 100 / dt * 100 - 100;
        printf "%-8s qps=%8.0f avg_latency_ms=%6.3f lost=%s server_cpu=%5.1f%% cpu_us_per_query=%5.2f rss_before_kb=%d rss_after_kb=%d bytes_per_entry=%.0f foreign_cpu=%5.1f%%\n",
            n, q, l, lost, srv, (s / 100) / (q * dt) * 1e6, r0, r1, (r1 - r0) * 1024 / names, foreign
    }'
    echo "$name $qps" >>"$WORK/results"
}

taskset -c 0 unbound -d -c "$WORK/unbound.conf" >"$WORK/unbound.log" 2>&1 &
UNBOUND_PID=$!; PIDS+=($UNBOUND_PID)
wait_answer "$UB"
run_one unbound "$UB" "$UNBOUND_PID"
kill "$UNBOUND_PID"

taskset -c 0 "$MUNINN" serve --config "$WORK/muninn.toml" >"$WORK/muninn.log" 2>&1 &
MUNINN_PID=$!; PIDS+=($MUNINN_PID)
wait_answer "$MU"
run_one muninn "$MU" "$MUNINN_PID"

awk '{q[$1]=$2} END { if (q["unbound"] > 0) printf "ratio muninn/unbound qps = %.2f\n", q["muninn"] / q["unbound"] }' "$WORK/results"
