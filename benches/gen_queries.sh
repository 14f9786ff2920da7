#!/usr/bin/env bash
# Writes a dnsperf-format query file ("name TYPE" per line) for a zone made by gen_zone.sh.
#   gen_queries.sh ORIGIN NHOSTS COUNT [SEED]
# Mix: 75% existing A, 10% existing AAAA, 5% CNAME (A query on an alias), 5% NXDOMAIN,
# 5% wildcard. Deterministic for a given seed.
set -euo pipefail
origin=${1:?origin}; n=${2:?nhosts}; count=${3:?count}; seed=${4:-42}
exec awk -v origin="$origin" -v n="$n" -v count="$count" -v seed="$seed" 'BEGIN {
  srand(seed)
  for (q = 0; q < count; q++) {
    r = rand() * 100; k = int(rand() * n)
    if (r < 75)      printf "h%d.%s A\n", k, origin
    else if (r < 85) printf "h%d.%s AAAA\n", k - k % 2, origin
    else if (r < 90) printf "a%d.%s A\n", k - k % 20, origin
    else if (r < 95) printf "nx%d.%s A\n", k, origin
    else             printf "w%d.wild.%s A\n", k, origin
  }
}'
