#!/usr/bin/env bash
# Keep-alive HTTP: fibra's http_server against the hand-written epoll loop
# (target: at most 1.05x its server CPU per request) and against
# thread-per-connection, with wrk, through benches/http_ab.sh (servers on
# CPU 0, wrk on CPU 1, runs alternating A B A B ..., medians).
#
#   benches/http_compare.sh            # REPS=3, WRK_S=5: about 3 minutes
#   REPS=5 WRK_S=10 benches/http_compare.sh
#
# env: REPS runs per server and case (3); WRK_S seconds per run (5);
# CARGO_TARGET_DIR as for cargo. Needs wrk (installed with apt-get when
# missing and running as root; otherwise the script says so and stops) and
# 2 CPUs. After the table, a
# 10,000-connection check (examples/many_connections) against http_server;
# CHECK_CONNS=0 skips it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

ab=$repo/benches/http_ab.sh
if ! command -v wrk >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "http_compare: wrk is missing; installing it: apt-get install -y wrk" >&2
    apt-get update -qq && apt-get install -y -qq wrk >/dev/null
  else
    echo "http_compare: needs wrk (Debian/Ubuntu: sudo apt-get install wrk)" >&2
    exit 1
  fi
fi
if [ "$(nproc)" -lt 2 ]; then
  echo "http_compare: needs 2 CPUs (server on CPU 0, wrk on CPU 1)" >&2
  exit 1
fi

cargo build --release --examples --quiet
bin=${CARGO_TARGET_DIR:-$repo/target}/release/examples
# 5000 connections: wrk's sockets here, the server's in the server (which
# raises its own limit too).
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 11000 ]; then
  echo "http_compare: open-file limit $(ulimit -n) is too low for 5000 connections" >&2
  exit 1
fi

reps=${REPS:-3}
epoll="$bin/epoll_baseline"
threads="$bin/http_threads"
fibra="env FIBRA_WORKERS=1 $bin/http_server"
results=()

# case label, A name, B name, connections, depth, A command, B command
run() {
  local label=$1 an=$2 bn=$3 conns=$4 depth=$5 a=$6 b=$7
  echo "== $label: $an (A) vs $bn (B), $conns connections, depth $depth, $reps runs each" >&2
  local line
  line=$(DEPTH=$depth "$ab" "$conns" "$reps" "$a" "$b" | tail -1)
  echo "   $line" >&2
  results+=("$label|$an|$bn|$line")
}

run "c=100"          epoll_baseline http_server 100  1  "$epoll"   "$fibra"
run "c=5000"         epoll_baseline http_server 5000 1  "$epoll"   "$fibra"
run "c=100 depth=16" epoll_baseline http_server 100  16 "$epoll"   "$fibra"
run "c=5000"         http_threads   http_server 5000 1  "$threads" "$fibra"

field() { # line key -> the value after "key=" in the A part (1) or B part (2)
  echo "$1" | awk -v k="$2" -v part="$3" -F'|' '{
    n = split($part, w, " ");
    for (i = 1; i <= n; i++) if (index(w[i], k "=") == 1) { print substr(w[i], length(k) + 2); exit }
  }'
}

echo
echo "Keep-alive HTTP, server on 1 CPU (http_server: FIBRA_WORKERS=1), wrk -t1 on the other;"
echo "medians of $reps runs of ${WRK_S:-5} s. CPU = server user+sys per request."
echo
printf '%-15s %-15s %10s %9s   %-12s %10s %9s   %7s\n' case A "A req/s" "A µs/req" B "B req/s" "B µs/req" "B/A cpu"
for r in "${results[@]}"; do
  IFS='|' read -r label an bn line <<<"$r"
  ratio=$(echo "$line" | sed -n 's/.*B\/A cpu=\([0-9.]*\).*/\1/p')
  printf '%-15s %-15s %10s %9s   %-12s %10s %9s   %7s\n' "$label" "$an" \
    "$(field "$line" req/s 1)" "$(field "$line" cpu_us/req 1)" "$bn" \
    "$(field "$line" req/s 2)" "$(field "$line" cpu_us/req 2)" "$ratio"
done
echo
echo "Target: http_server / epoll_baseline CPU per request <= 1.05 (ARCHITECTURE.md)."

if [ "${CHECK_CONNS:-1}" != 0 ]; then
  echo
  echo "== 10,000 connections open at once against http_server"
  port=9399
  FIBRA_WORKERS=1 "$bin/http_server" $port >/dev/null 2>&1 &
  server=$!
  for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  status=0
  "$bin/many_connections" 10000 $port || status=$?
  kill $server 2>/dev/null; wait $server 2>/dev/null || true
  exit $status
fi
