#!/usr/bin/env bash
# Regenerates the golden captures (needs root, dumpcap, curl, python3). Real traffic on
# loopback between curl and server.py, captured as pcapng; derived.py then writes the
# variants the corpus lacks (VXLAN, fragmented and reordered). Run from this directory,
# then `UPDATE_GOLDEN=1 cargo test --test golden` and review the diff.
set -euo pipefail
cd "$(dirname "$0")"
port=18931
python3 server.py 127.0.0.1 $port & s4=$!
python3 server.py ::1 $port & s6=$!
trap 'kill $s4 $s6 $cap 2>/dev/null || true' EXIT
sleep 1
dumpcap -q -i lo -f "tcp port $port" -w lo-curl.pcapng & cap=$!
sleep 1
b=http://127.0.0.1:$port
curl -s -o /dev/null -o /dev/null --compressed "$b/chunked-gzip" "$b/v1/customers/cus_8a7F3k/invoices/1042?expand=lines" \
  -H 'Authorization: Bearer eyJhbGciOiJub25lIn0.eyJzdWIiOiJ1c2VyLTQyIn0.' -A golden/1
curl -s -o /dev/null -X POST -H 'Expect: 100-continue' --data-binary @server.py "$b/v1/charges"
curl -s -o /dev/null -I "$b/v1/customers/cus_1"
curl -s -o /dev/null "$b/not-modified" -H 'If-None-Match: "v1"'
curl -s -o /dev/null --http1.0 "$b/close"
curl -s -o /dev/null -g "http://[::1]:$port/v6/path?q=1"
sleep 1
kill $cap; wait $cap 2>/dev/null || true
python3 derived.py lo-curl.pcapng
