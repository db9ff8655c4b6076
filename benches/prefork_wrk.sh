#!/usr/bin/env bash
# Keep-alive HTTP with wrk on this machine's CPUs: fibra in 1 process with
# one worker thread per CPU (examples/http_server.rs, FIBRA_WORKERS=N)
# against fibra::prefork with one process per CPU, 1 worker thread each
# (examples/prefork_http.rs --workers N --threads 1). Runs alternate A B A B
# (a fresh server each run, 1 s of warm-up, then the measured run); prints
# each run and the medians: requests/s and server CPU per request (the
# server's whole process tree, from a cgroup: benches/server_tree.sh).
#
#   benches/prefork_wrk.sh                 # REPS=5, WRK_S=5, CONNS="100 1000": about 2 minutes
#   REPS=7 CONNS=100 benches/prefork_wrk.sh
#
# env: REPS runs per server and level; WRK_S seconds per measured run;
# CONNS keep-alive connections (space-separated levels); PORT (19490);
# CARGO_TARGET_DIR as for cargo. wrk runs with one thread, unpinned: on a
# 2-CPU machine it shares the CPUs with the server, the same for A and B.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

if ! command -v wrk >/dev/null; then
  echo "prefork_wrk: wrk is missing; installing it with apt-get" >&2
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
reps=${REPS:-5}
wrk_s=${WRK_S:-5}
conns=${CONNS:-"100 1000"}
port=${PORT:-19490}
cpus=$(nproc)
ulimit -n "$(ulimit -Hn)"

cargo build --release --example http_server --example prefork_http --example c10k_client --quiet
bin=${CARGO_TARGET_DIR:-$repo/target}/release/examples
logs=$(mktemp -d)
# shellcheck source=benches/server_tree.sh
. "$repo/benches/server_tree.sh"
trap 'stop_server; rm -rf "$logs"' EXIT

a_name="1 process x $cpus workers"
b_name="$cpus processes x 1 worker"
run() { # A|B connections -> "rps cpu_us_per_request"
  if [ "$1" = A ]; then
    start_server fibra env FIBRA_WORKERS="$cpus" "$bin/http_server" "$port"
  else
    start_server fibra_prefork "$bin/prefork_http" --workers "$cpus" --threads 1 --port "$port"
  fi
  wrk -t1 -c"$2" -d1s "http://127.0.0.1:$port/" >/dev/null
  local before after text requests rps
  before=$(cpu_us)
  text=$(wrk -t1 -c"$2" -d"${wrk_s}s" "http://127.0.0.1:$port/")
  after=$(cpu_us)
  stop_server
  requests=$(echo "$text" | sed -n 's/^ *\([0-9]*\) requests in.*/\1/p')
  rps=$(echo "$text" | sed -n 's/^Requests\/sec: *\([0-9.]*\).*/\1/p')
  if echo "$text" | grep -q "Socket errors"; then
    echo "prefork_wrk: wrk reported errors: $(echo "$text" | grep 'Socket errors')" >&2
  fi
  awk -v r="$rps" -v d="$((after - before))" -v n="$requests" 'BEGIN { printf "%.0f %.2f\n", r, d / n }'
}

median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "A: $a_name   B: $b_name   (wrk -t1, ${wrk_s} s runs, $reps each, alternating)"
for c in $conns; do
  a_rps=() a_cpu=() b_rps=() b_cpu=()
  for i in $(seq "$reps"); do
    read -r rps cpu <<<"$(run A "$c")"
    a_rps+=("$rps") a_cpu+=("$cpu")
    echo "  c=$c run $i  A: $rps req/s $cpu us/req" >&2
    read -r rps cpu <<<"$(run B "$c")"
    b_rps+=("$rps") b_cpu+=("$cpu")
    echo "  c=$c run $i  B: $rps req/s $cpu us/req" >&2
  done
  ar=$(printf '%s\n' "${a_rps[@]}" | median) ac=$(printf '%s\n' "${a_cpu[@]}" | median)
  br=$(printf '%s\n' "${b_rps[@]}" | median) bc=$(printf '%s\n' "${b_cpu[@]}" | median)
  awk -v c="$c" -v ar="$ar" -v ac="$ac" -v br="$br" -v bc="$bc" 'BEGIN {
    printf "c=%-5s A %8.0f req/s %6.2f us/req   B %8.0f req/s %6.2f us/req   B/A req/s %.2f  B/A cpu %.2f\n",
      c, ar, ac, br, bc, br / ar, bc / ac }'
done
