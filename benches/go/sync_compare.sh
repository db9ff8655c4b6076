#!/bin/sh
# fibra's sync workloads next to Go's, in one run: builds
# examples/sync_compare (fibra) and benches/go/sync_compare.go (Go), runs
# them alternately ROUNDS times (fibra, Go, fibra, Go, ...: the machine's
# slow and fast phases hit both), and prints for each workload the median
# of the per-round medians and the ratio fibra / Go.
#
# Needs Go 1.19 or later: `apt-get install golang-go` on Debian/Ubuntu, or
# https://go.dev/dl. Usage: benches/go/sync_compare.sh [ROUNDS] (default 7)
set -eu

if ! command -v go >/dev/null 2>&1; then
    echo "sync_compare.sh needs Go: install it with 'apt-get install golang-go' (or from https://go.dev/dl)" >&2
    exit 1
fi

cd "$(dirname "$0")/../.."
rounds=${1:-7}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

cargo build --release --example sync_compare
go build -o target/release/go_sync_compare benches/go/sync_compare.go

i=0
while [ "$i" -lt "$rounds" ]; do
    target/release/examples/sync_compare --runs 5 | sed 's/^/fibra /' >>"$out"
    target/release/go_sync_compare -runs 5 | sed 's/^/go /' >>"$out"
    i=$((i + 1))
done

median() { # median of the numbers on stdin
    sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'
}

printf '%-36s %10s %10s %10s\n' "median of $rounds rounds" fibra go fibra/go
for what in mutex_contended_ns_per_increment channel_ping_pong_ns rendezvous_ping_pong_ns; do
    f=$(awk -v w="$what" '$1 == "fibra" && $2 == w { print $3 }' "$out" | median)
    g=$(awk -v w="$what" '$1 == "go" && $2 == w { print $3 }' "$out" | median)
    printf '%-36s %10s %10s %9.2fx\n' "$what" "$f" "$g" "$(echo "$f $g" | awk '{ print $1 / $2 }')"
done
