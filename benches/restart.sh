#!/usr/bin/env bash
# Zone load path benchmark on loopback: first load, restart from the zone image, restart
# from the store, memory and disk, Muninn vs Knot DNS in the same run.
#
#   benches/restart.sh     a NAMES-name zone (gen_zone.sh), each server pinned to CPU 0 with
#                          one query worker and one background/heavy thread (as load.sh):
#   - knot:    start to first answer (zone file parsed), RSS when serving, peak RSS;
#   - muninn first load (empty data_dir): start to first answer, RSS when serving, then
#              the background import into the store and the zone image (times from the
#              log), RSS once they are done (steady), peak RSS, store and image size;
#   - muninn restart from the image, and from the store (image deleted): start to first
#              answer, RSS, peak RSS.
# Each measurement records the server's own CPU time to ready (user+system, robust to other
# load) and the CPU used meanwhile by other processes ("foreign", % of one CPU, method of
# load.sh); it is flagged CONTAMINATED above FOREIGN_MAX.
#
# Muninn's heavy-job thread runs at Knot's background-worker priority here (heavy_nice = 0,
# heavy_idle_scheduling = false), so that other load on the machine delays both alike;
# HEAVY_PRIORITY=default keeps the shipped nice 10 + SCHED_IDLE, under which any other load
# on CPU 0 starves the load (it runs only on idle CPU time).
#
# Environment: NAMES (1000000), ROUNDS (1), FOREIGN_MAX (% of one CPU, 10), QUIET_WAIT (s to
# wait for a quiet machine before each start, 15), LOAD_MAX (s, bound on one load, 300),
# SERVERS ("knot muninn"), HEAVY_PRIORITY (knot), MUNINN_BIN (skip the cargo build), KEEP=1 (keep the work directory).
set -euo pipefail

case ${1:-} in
-h | --help | help)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
NAMES=${NAMES:-1000000}
ROUNDS=${ROUNDS:-1}
FOREIGN_MAX=${FOREIGN_MAX:-10}
QUIET_WAIT=${QUIET_WAIT:-15}
LOAD_MAX=${LOAD_MAX:-300}
SERVERS=${SERVERS:-"knot muninn"}
HEAVY_PRIORITY=${HEAVY_PRIORITY:-knot}
SERVER_CPU=0
TCK=$(getconf CLK_TCK)

W=$(mktemp -d /tmp/muninn-restart.XXXXXX)
OWNED_PIDS=()
cleanup() {
    local p
    for p in "${OWNED_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${OWNED_PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$p" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$p" 2>/dev/null || true
    done
    if [[ ${KEEP:-0} == 1 ]]; then echo "work directory kept: $W" >&2; else rm -rf "$W"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '%s %s\n' "$(date +%T)" "$*" >&2; }
now() { date +%s.%N; }
for tool in knotd python3 taskset ss awk; do
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

if [[ -z ${MUNINN_BIN:-} ]]; then
    log "building muninn (release)"
    (cd "$root" && cargo build --release --bin muninn) >&2
fi
MUNINN_BIN=${MUNINN_BIN:-$root/target/release/muninn}

# Busy jiffies of the whole machine.
busy() { awk '$1 == "cpu" {print $2+$3+$4+$7+$8}' /proc/stat; }
ticks() { awk '{print $14 + $15}' "/proc/$1/stat" 2>/dev/null || echo 0; }
rss_kb() { awk -v k="$2:" '$1 == k {print $2}' "/proc/$1/status"; }
mb() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

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

PORT=0 PID=0 T0=0 B0=0
# start NAME DIR: starts the server of DIR's config, pinned, and notes start time and CPU.
start() {
    local name=$1 dir=$2
    wait_quiet
    T0=$(now)
    B0=$(busy)
    case $name in
    knot) taskset -c $SERVER_CPU knotd -c "$dir/knot.conf" >"$dir/server.log" 2>&1 & ;;
    muninn)
        taskset -c $SERVER_CPU "$MUNINN_BIN" serve --config "$dir/muninn.toml" --workers 1 \
            >>"$dir/server.log" 2>&1 &
        ;;
    esac
    PID=$!
    OWNED_PIDS+=("$PID")
}

# Polls 127.0.0.1:PORT every 5 ms with an SOA query for big.test until the answer has serial
# 1 (kdig waits its whole timeout on a refused port, which would add up to a second).
poll_serial() {
    python3 - "$PORT" "$LOAD_MAX" <<'PY'
import socket, struct, sys, time
port, limit = int(sys.argv[1]), float(sys.argv[2])
q = struct.pack(">HHHHHH", 0x4d55, 0, 1, 0, 0, 0) + b"\x03big\x04test\x00" + struct.pack(">HH", 6, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.005)
end = time.monotonic() + limit
while time.monotonic() < end:
    try:
        s.sendto(q, ("127.0.0.1", port))
        r = s.recv(4096)
    except OSError:
        time.sleep(0.005)
        continue
    # NOERROR with one answer: the SOA serial is the 5th-from-last u32 of its RDATA.
    if len(r) > 12 and r[3] & 15 == 0 and struct.unpack(">H", r[6:8])[0] == 1:
        if struct.unpack(">I", r[-20:-16])[0] == 1:
            sys.exit(0)
sys.exit(1)
PY
}

# ready DIR: waits for serial 1, prints "seconds foreign% server_cpu_seconds".
ready() {
    local dir=$1 t1 b1 srv
    if ! poll_serial; then
        echo "zone not served after ${LOAD_MAX}s; log:" >&2
        tail -20 "$dir/server.log" >&2
        exit 1
    fi
    t1=$(now)
    b1=$(busy)
    srv=$(ticks "$PID")
    # Foreign = machine busy time minus the server's own, as % of one CPU over the load.
    awk -v t0="$T0" -v t1="$t1" -v b="$((b1 - B0 - srv))" -v srv="$srv" -v tck="$TCK" \
        'BEGIN {el = t1 - t0; f = b * 100 / tck / el; if (f < 0) f = 0; printf "%.2f %.0f %.2f\n", el, f, srv / tck}'
}

# wait_log DIR TEXT COUNT: waits until the log holds TEXT COUNT times.
wait_log() {
    local t0=$SECONDS
    while (($(grep -c -- "$2" "$1/server.log" || true) < $3)); do
        kill -0 "$PID" 2>/dev/null || {
            echo "server died; log:" >&2
            tail -20 "$1/server.log" >&2
            exit 1
        }
        ((SECONDS - t0 < LOAD_MAX)) || {
            echo "no '$2' in the log after ${LOAD_MAX}s" >&2
            exit 1
        }
        sleep 0.1
    done
}

stop() {
    kill "$PID" 2>/dev/null || true
    for _ in $(seq 300); do
        kill -0 "$PID" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$PID" 2>/dev/null || true
}

# elapsed_ms of the last log line with TEXT.
log_ms() { grep -- "$2" "$1/server.log" | tail -1 | sed -n 's/.*elapsed_ms=\([0-9.]*\).*/\1/p' | awk '{printf "%.0f", $1}'; }

flag() { awk -v f="$1" -v m="$FOREIGN_MAX" 'BEGIN {print (f > m) ? "CONTAMINATED" : "ok"}'; }

log "work directory $W; generating a ${NAMES}-name zone"
"$here/gen_zone.sh" big.test "$NAMES" 1 >"$W/big.test.zone"
zone_mb=$(mb $(($(stat -c %s "$W/big.test.zone") / 1024)))
RES=$W/results.tsv
printf 'round\tserver\tcase\tready_s\tcpu_s\trss_ready_mb\trss_steady_mb\tpeak_mb\tforeign%%\tflag\tnotes\n' >"$RES"

for r in $(seq "$ROUNDS"); do
    for s in $SERVERS; do
        d=$W/$s.$r
        mkdir -p "$d/db"
        PORT=$(pick_port)
        case $s in
        knot)
            cat >"$d/knot.conf" <<EOF
server:
    rundir: "$d"
    listen: 127.0.0.1@$PORT
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: info
database:
    storage: "$d/db"
control:
    listen: "$d/knot.sock"
template:
  - id: default
    zonefile-sync: -1
    zonefile-load: whole
    journal-content: none
    semantic-checks: off
zone:
  - domain: big.test
    file: "$W/big.test.zone"
EOF
            start knot "$d"
            read -r el f cpu < <(ready "$d")
            rss=$(rss_kb "$PID" VmRSS)
            sleep 2
            steady=$(rss_kb "$PID" VmRSS)
            hwm=$(rss_kb "$PID" VmHWM)
            stop
            printf '%s\tknot\tload (parse)\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$el" "$cpu" "$(mb "$rss")" \
                "$(mb "$steady")" "$(mb "$hwm")" "$f" "$(flag "$f")" "-" >>"$RES"
            ;;
        muninn)
            cat >"$d/muninn.toml" <<EOF
data_dir = "$d/data"

[server]
listen = ["127.0.0.1:$PORT"]

[runtime]
workers = 1
heavy_workers = 1
$(if [[ $HEAVY_PRIORITY == knot ]]; then printf 'heavy_nice = 0\nheavy_idle_scheduling = false\n'; fi)

[zones]
directory = ""

[[zones.zone]]
name = "big.test."
file = "$W/big.test.zone"
EOF
            # First load: parse, serve, then import + image in the background.
            start muninn "$d"
            read -r el f cpu < <(ready "$d")
            rss=$(rss_kb "$PID" VmRSS)
            wait_log "$d" "zone image written" 1
            sleep 1
            steady=$(rss_kb "$PID" VmRSS)
            hwm=$(rss_kb "$PID" VmHWM)
            imp=$(log_ms "$d" "zone imported into the store")
            img=$(log_ms "$d" "zone image written")
            stop
            db=$(mb $(($(stat -c %s "$d/data/muninn.redb") / 1024)))
            im=$(mb $(($(du -sk "$d/data/images" | cut -f1))))
            printf '%s\tmuninn\tfirst load (parse)\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$el" "$cpu" "$(mb "$rss")" \
                "$(mb "$steady")" "$(mb "$hwm")" "$f" "$(flag "$f")" \
                "import ${imp} ms + image ${img} ms after ready (background); store ${db} MB, image ${im} MB" >>"$RES"

            # Restart from the image.
            start muninn "$d"
            read -r el f cpu < <(ready "$d")
            rss=$(rss_kb "$PID" VmRSS)
            sleep 2
            steady=$(rss_kb "$PID" VmRSS)
            hwm=$(rss_kb "$PID" VmHWM)
            stop
            grep -q 'from="image"' "$d/server.log" || echo "WARNING: restart did not use the image" >&2
            printf '%s\tmuninn\trestart (image)\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$el" "$cpu" "$(mb "$rss")" \
                "$(mb "$steady")" "$(mb "$hwm")" "$f" "$(flag "$f")" "-" >>"$RES"

            # Restart from the store: no image (it is written again afterwards).
            rm -rf "$d/data/images"
            n=$(grep -c "zone image written" "$d/server.log" || true)
            start muninn "$d"
            read -r el f cpu < <(ready "$d")
            rss=$(rss_kb "$PID" VmRSS)
            wait_log "$d" "zone image written" $((n + 1))
            steady=$(rss_kb "$PID" VmRSS)
            hwm=$(rss_kb "$PID" VmHWM)
            stop
            printf '%s\tmuninn\trestart (store)\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$r" "$el" "$cpu" "$(mb "$rss")" \
                "$(mb "$steady")" "$(mb "$hwm")" "$f" "$(flag "$f")" "image rewritten after" >>"$RES"
            ;;
        esac
    done
done

echo
echo "== ${NAMES}-name zone (${zone_mb} MB file), each server on CPU $SERVER_CPU with one worker and"
echo "   one background thread (muninn heavy priority: $HEAVY_PRIORITY); ready = start to first"
echo "   answer; cpu = server CPU time until then; RSS in MB"
echo "   (VmRSS when ready, VmRSS once background work is done, VmHWM); foreign = CPU used by"
echo "   other processes during the load, % of one CPU (flagged above ${FOREIGN_MAX}%)"
column -t -s $'\t' "$RES"
awk -F'\t' 'NR > 1 {k = $2 " " $3; n[k]++; s[k] += $4; c[k] += $5}
    END {
        p = s["muninn first load (parse)"] / n["muninn first load (parse)"]
        i = s["muninn restart (image)"] / n["muninn restart (image)"]
        t = s["muninn restart (store)"] / n["muninn restart (store)"]
        kn = n["knot load (parse)"] ? s["knot load (parse)"] / n["knot load (parse)"] : 0
        if (p > 0 && i > 0) printf "restart from the image: %.1fx faster than parsing (CPU %.1fx); from the store: %.1fx (CPU %.1fx)\n", p / i, c["muninn first load (parse)"] / c["muninn restart (image)"], p / t, c["muninn first load (parse)"] / c["muninn restart (store)"]
        if (kn > 0 && p > 0) printf "first load: muninn/knot ready time %.2f\n", p / kn
    }' "$RES"
