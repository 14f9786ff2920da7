#!/usr/bin/env bash
# What does a Prometheus scrape cost under load?
#
# Starts the muninn binary (release build; metrics on) on loopback ports, then runs dnsperf
# against it twice for DURATION seconds each: once alone, once while /metrics is fetched
# SCRAPE_HZ times per second with curl. Prints QPS, average latency and the latency
# spread of both runs, how many scrapes were done and how long they took, and the load
# average (the figures mean little on a busy machine: compare runs with similar load).
#
# Usage: benches/scrape_under_load.sh            (defaults below)
#   DURATION=10 SCRAPE_HZ=10 ROUNDS=1 WORKERS=1 CLIENTS=10 OUTSTANDING=100
#   MUNINN=target/release/muninn
#
# Needs dnsperf, dig and curl. Every process it starts is stopped by PID on exit.
set -euo pipefail

DURATION=${DURATION:-10}
SCRAPE_HZ=${SCRAPE_HZ:-10}
WORKERS=${WORKERS:-1}
CLIENTS=${CLIENTS:-10}
OUTSTANDING=${OUTSTANDING:-100}
# Pairs of runs (alone, scraped), alternating, to see through a noisy machine.
ROUNDS=${ROUNDS:-1}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
MUNINN=${MUNINN:-$ROOT/target/release/muninn}

for tool in dnsperf dig curl; do
    command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done
if [[ ! -x $MUNINN ]]; then
    echo "building $MUNINN (cargo build --release)" >&2
    (cd "$ROOT" && cargo build --release --bin muninn)
fi

TMP=$(mktemp -d /tmp/muninn-scrape.XXXXXX)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT

# A free loopback port (TCP and UDP), asked from the kernel.
free_port() {
    python3 -c 'import socket
while True:
    t = socket.socket(); t.bind(("127.0.0.1", 0)); p = t.getsockname()[1]
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", p)); print(p); break
    except OSError:
        pass'
}

DNS_PORT=$(free_port)
METRICS_PORT=$(free_port)
while [[ $METRICS_PORT == "$DNS_PORT" ]]; do METRICS_PORT=$(free_port); done

# A zone of 1000 names and a query file hitting them (plus some NXDOMAIN).
mkdir -p "$TMP/zones"
{
    echo '$ORIGIN bench.test.'
    echo '$TTL 300'
    echo '@ IN SOA ns hostmaster 1 3600 600 86400 300'
    echo '@ IN NS ns'
    echo 'ns IN A 192.0.2.1'
    for i in $(seq 1 1000); do echo "h$i IN A 10.0.$((i / 256)).$((i % 256))"; done
} >"$TMP/zones/bench.test.zone"
{
    for i in $(seq 1 1000); do echo "h$i.bench.test. A"; done
    for i in $(seq 1 100); do echo "missing$i.bench.test. A"; done
} >"$TMP/queries"

cat >"$TMP/muninn.toml" <<EOF
[server]
listen = ["127.0.0.1:$DNS_PORT"]
[zones]
directory = "zones"
[runtime]
workers = $WORKERS
[log]
level = "warn"
[metrics]
enabled = true
listen = "127.0.0.1:$METRICS_PORT"
EOF

"$MUNINN" serve --config "$TMP/muninn.toml" 2>"$TMP/muninn.log" &
MUNINN_PID=$!
PIDS+=("$MUNINN_PID")
for _ in $(seq 1 100); do
    if dig +short +time=1 +tries=1 -p "$DNS_PORT" @127.0.0.1 bench.test. SOA | grep -q hostmaster; then
        break
    fi
    sleep 0.1
done
dig +short -p "$DNS_PORT" @127.0.0.1 h1.bench.test. A | grep -q 10.0.0.1 || {
    echo "muninn is not answering; log:" >&2
    cat "$TMP/muninn.log" >&2
    exit 1
}

loadavg() { cut -d' ' -f1-3 /proc/loadavg; }

# run_dnsperf LABEL: prints one result line.
run_dnsperf() {
    local label=$1 out="$TMP/dnsperf.txt"
    local load_before
    load_before=$(loadavg)
    dnsperf -s 127.0.0.1 -p "$DNS_PORT" -d "$TMP/queries" -l "$DURATION" \
        -c "$CLIENTS" -q "$OUTSTANDING" -T 1 >"$out" 2>&1
    local qps avg sd lost
    qps=$(awk '/Queries per second:/ {print $4}' "$out")
    avg=$(awk '/Average Latency/ {print $4}' "$out")
    sd=$(awk '/Latency StdDev/ {print $4}' "$out")
    lost=$(awk '/Queries lost:/ {print $3}' "$out")
    printf '%-16s %12s %14s %14s %8s   %s -> %s\n' "$label" "$qps" \
        "$(awk -v v="$avg" 'BEGIN {printf "%.1f", v * 1e6}')" \
        "$(awk -v v="$sd" 'BEGIN {printf "%.1f", v * 1e6}')" \
        "$lost" "$load_before" "$(loadavg)"
}

# Scrapes /metrics SCRAPE_HZ times per second (on a fixed schedule, so the time a scrape
# takes does not lower the rate) until killed; one "duration bytes" line per scrape.
scrape_loop() {
    local period_us=$((1000000 / SCRAPE_HZ)) next now wait_us
    next=${EPOCHREALTIME/./}
    while true; do
        curl -s -o /dev/null -w '%{time_total} %{size_download}\n' \
            "http://127.0.0.1:$METRICS_PORT/metrics" >>"$TMP/scrapes" || true
        next=$((next + period_us))
        now=${EPOCHREALTIME/./}
        wait_us=$((next - now))
        if ((wait_us > 0)); then
            sleep "$(printf '%d.%06d' $((wait_us / 1000000)) $((wait_us % 1000000)))"
        fi
    done
}

echo "muninn $MUNINN, workers=$WORKERS; dnsperf -c $CLIENTS -q $OUTSTANDING -T 1 -l $DURATION;" \
    "scrape ${SCRAPE_HZ}/s; $(nproc) CPUs"
printf '%-16s %12s %14s %14s %8s   %s\n' run QPS "avg lat (us)" "stddev (us)" lost \
    "load average before -> after"

: >"$TMP/scrapes"
for round in $(seq 1 "$ROUNDS"); do
    run_dnsperf "no-scrape"
    scrape_loop &
    SCRAPER=$!
    PIDS+=("$SCRAPER")
    run_dnsperf "scrape-${SCRAPE_HZ}/s"
    kill "$SCRAPER" 2>/dev/null || true
    wait "$SCRAPER" 2>/dev/null || true
done

awk '{n++; t += $1; if ($1 > max) max = $1; b = $2}
     END {if (n) printf "scrapes: %d in %ss (%.1f/s), avg %.2f ms, max %.2f ms, %d bytes each\n",
                        n, dur, n / dur, t / n * 1000, max * 1000, b}' \
    dur="$((DURATION * ROUNDS))" "$TMP/scrapes"

# Muninn's own cost per scrape, without query load: CPU time (user + system, from
# /proc/PID/stat) over 500 scrapes on one kept-alive connection. Under load, the curl
# processes (one per scrape) also take CPU from dnsperf and muninn on a small machine.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$MUNINN_PID/stat"; }
urls=()
for _ in $(seq 1 500); do urls+=("http://127.0.0.1:$METRICS_PORT/metrics"); done
before=$(cpu_ticks)
start=${EPOCHREALTIME/./}
curl -s "${urls[@]}" >/dev/null
end=${EPOCHREALTIME/./}
after=$(cpu_ticks)
awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" -v wall=$((end - start)) \
    'BEGIN {printf "muninn per scrape (idle, keep-alive): %.0f us CPU, %.0f us wall\n",
            t / hz * 1e6 / 500, wall / 500}'
