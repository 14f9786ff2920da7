#!/usr/bin/env bash
# Writes a synthetic authoritative zone to stdout.
#   gen_zone.sh ORIGIN NHOSTS SERIAL
# Names (relative to ORIGIN): hN (A; every 2nd also AAAA; every 10th also MX + TXT),
# aN (CNAME to an in-zone hM, one per 20 hosts), *.wild (A, AAAA), sub (delegation with glue),
# plus apex SOA/NS/MX. gen_queries.sh relies on exactly this layout.
set -euo pipefail
origin=${1:?origin}; n=${2:?nhosts}; serial=${3:-1}
exec awk -v origin="$origin" -v n="$n" -v serial="$serial" 'BEGIN {
  printf "$ORIGIN %s.\n$TTL 3600\n", origin
  printf "@ IN SOA ns1 hostmaster %d 3600 900 604800 300\n", serial
  print "@ IN NS ns1\n@ IN NS ns2\n@ IN MX 10 mail"
  print "ns1 IN A 192.0.2.1\nns2 IN A 192.0.2.2\nmail IN A 192.0.2.25"
  print "*.wild IN A 192.0.2.99\n*.wild IN AAAA 2001:db8::99"
  print "sub IN NS ns1.sub\nsub IN NS ns2.sub\nns1.sub IN A 192.0.2.53\nns2.sub IN A 192.0.2.54"
  for (i = 0; i < n; i++) {
    printf "h%d IN A 10.%d.%d.%d\n", i, int(i / 65536) % 256, int(i / 256) % 256, i % 256
    if (i % 2 == 0) printf "h%d IN AAAA 2001:db8::%x:%x\n", i, int(i / 65536), i % 65536
    if (i % 10 == 0) printf "h%d IN MX 10 mail\nh%d IN TXT \"v=spf1 -all\"\n", i, i
    if (i % 20 == 0) printf "a%d IN CNAME h%d\n", i, (i * 7 + 1) % n
  }
}'
