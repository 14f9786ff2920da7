#!/usr/bin/env bash
# Latency from a committed store change to the change being served, on a large
# store-managed zone (zone patches), and the full rebuild it replaces.
#
#   benches/change_latency.sh [NHOSTS] [CHANGES]    (defaults 1000000 and 100)
#
# Writes the zone with gen_zone.sh (cached in /tmp), then runs examples/change_latency.rs:
# parse + import into a fresh store (setup), the real loader, snapshot updater and UDP
# listener in process, CHANGES changes each timed from `Store::apply` returning until a
# UDP poll sees the new answer. Extra arguments after CHANGES go to the example (e.g.
# --no-idle-heavy). Prints the load average before and after: other processes on the
# machine delay the heavy-job threads (SCHED_IDLE by default) and so the figures.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
n=${1:-1000000}
changes=${2:-100}
shift $(( $# > 2 ? 2 : $# ))
zone=/tmp/muninn-change-latency-$n.zone
[[ -s $zone ]] || "$here/gen_zone.sh" example.com "$n" 1 >"$zone"

cd "$root"
cargo build --release --example change_latency >/dev/null 2>&1 ||
    cargo build --release --example change_latency
echo "before: $(uptime)"
target/release/examples/change_latency --zone "$zone" --origin example.com. --changes "$changes" "$@"
echo "after:  $(uptime)"
