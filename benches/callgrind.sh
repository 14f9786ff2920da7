#!/usr/bin/env bash
# Instructions per query on the answer path (request bytes -> Handler::handle -> response
# bytes), counted by valgrind's callgrind: deterministic, unlike wall-clock time on the
# shared 2-core machine.
#
#   benches/callgrind.sh [CASE...]       CASE: hit nxdomain wildcard referral cname (default all)
#
# Each case runs the answer_path bench binary twice under callgrind, with ITERS_LO and
# ITERS_HI iterations (env, default 2000 and 12000); the difference of the two totals
# divided by the difference of the iteration counts is the cost of one query, without the
# zone build and process start-up. EDNS=1 sends the queries with an EDNS(0) OPT record.
# KEEP_OUT=DIR keeps the callgrind.out files of the ITERS_HI runs (for callgrind_annotate).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
ITERS_LO=${ITERS_LO:-2000}
ITERS_HI=${ITERS_HI:-12000}
EDNS=${EDNS:-0}
cases=("$@")
[[ ${#cases[@]} -gt 0 ]] || cases=(hit nxdomain wildcard referral cname)

command -v valgrind >/dev/null || {
    echo "valgrind is not installed" >&2
    exit 1
}

bin=$(cd "$root" && cargo bench --bench answer_path --no-run --message-format=json 2>/dev/null |
    sed -n 's/.*"executable":"\([^"]*answer_path[^"]*\)".*/\1/p' | tail -1)
[[ -x $bin ]] || {
    echo "could not build the answer_path bench" >&2
    exit 1
}

tmp=$(mktemp -d /tmp/muninn-callgrind.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# Total instructions ("Collected : N") of one callgrind run.
count() {
    local case=$1 iters=$2 out=$3
    ANSWER_PATH_ITERS=$iters ANSWER_PATH_CASE=$case ANSWER_PATH_EDNS=$EDNS \
        valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" 2>"$tmp/log" || {
        cat "$tmp/log" >&2
        exit 1
    }
    awk '/Collected :/ {print $NF}' "$tmp/log"
}

printf '%-10s %14s   (EDNS=%s, %s vs %s iterations)\n' case "instr/query" "$EDNS" "$ITERS_LO" "$ITERS_HI"
for c in "${cases[@]}"; do
    lo=$(count "$c" "$ITERS_LO" "$tmp/lo.out")
    hi=$(count "$c" "$ITERS_HI" "$tmp/hi.out")
    if [[ -n ${KEEP_OUT:-} ]]; then
        mkdir -p "$KEEP_OUT"
        cp "$tmp/hi.out" "$KEEP_OUT/callgrind.out.$c"
    fi
    awk -v c="$c" -v lo="$lo" -v hi="$hi" -v a="$ITERS_LO" -v b="$ITERS_HI" \
        'BEGIN {printf "%-10s %14.0f\n", c, (hi - lo) / (b - a)}'
done
