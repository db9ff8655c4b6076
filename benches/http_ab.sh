#!/usr/bin/env bash
# Keep-alive HTTP A/B comparison of two servers with wrk.
#
#   benches/http_ab.sh CONNS REPS "A_CMD" "B_CMD"
#
# Each command starts a server that listens on 127.0.0.1 at the port given
# as its last argument. Every run starts the server afresh pinned to CPU 0
# and runs `wrk -t1 -cCONNS` pinned to CPU 1; the runs alternate A B A B ...
# (REPS of each), so a drift of the shared machine hits both servers alike.
# For each run the server's CPU time (user + sys, from /proc/PID/stat) over
# the wrk run is divided by the requests wrk completed. The last line gives
# the medians of requests/s and of CPU µs per request for A and for B, and
# B/A of the CPU figure — the number that tells servers apart when one wrk
# thread, not the server, limits requests/s.
#
# env: WRK_S seconds per run (5); DEPTH requests per write (1; above 1 wrk
# pipelines them with benches/pipeline.lua); PORT_BASE first port (9300).
# Needs wrk (apt-get install wrk), taskset (util-linux) and 2 CPUs.
set -u
here=$(cd "$(dirname "$0")" && pwd)
if [ $# -ne 4 ]; then
  echo "usage: $0 CONNS REPS A_CMD B_CMD" >&2
  exit 2
fi
conns=$1 reps=$2 cmd_a=$3 cmd_b=$4
secs=${WRK_S:-5} depth=${DEPTH:-1} port=${PORT_BASE:-9300}
for tool in wrk taskset; do
  if ! command -v $tool >/dev/null; then
    echo "http_ab: $tool is missing (apt-get install -y wrk util-linux)" >&2
    exit 1
  fi
done
if [ "$(nproc)" -lt 2 ]; then
  echo "http_ab: needs 2 CPUs (server on CPU 0, wrk on CPU 1)" >&2
  exit 1
fi
ticks=$(getconf CLK_TCK)

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# One run: cmd port -> "requests/s cpu_us_per_request" on stdout.
measure() {
  local cmd=$1 port=$2
  taskset -c 0 $cmd "$port" >/dev/null 2>&1 &
  local pid=$!
  local tries=0
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    tries=$((tries + 1))
    if [ $tries -ge 100 ] || ! kill -0 $pid 2>/dev/null; then
      echo "http_ab: '$cmd $port' did not start listening" >&2
      kill $pid 2>/dev/null
      wait $pid 2>/dev/null
      echo "0 inf"
      return
    fi
    sleep 0.1
  done
  local script=()
  if [ "$depth" -gt 1 ]; then script=(-s "$here/pipeline.lua"); fi
  local before after out
  before=$(cpu_ticks $pid)
  out=$(taskset -c 1 wrk -t1 -c"$conns" -d"${secs}s" "${script[@]}" \
    "http://127.0.0.1:$port/" -- "$depth" 2>&1)
  after=$(cpu_ticks $pid)
  kill $pid 2>/dev/null
  wait $pid 2>/dev/null
  echo "$out" | awk -v before="$before" -v after="$after" -v hz="$ticks" '
    /Requests\/sec/ { rps = $2 }
    / requests in / { n = $1 }
    END {
      if (n > 0) printf "%s %.3f\n", rps, (after - before) / hz * 1e6 / n
      else print "0 inf"
    }'
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }

rps_a=() cpu_a=() rps_b=() cpu_b=()
for _ in $(seq "$reps"); do
  port=$((port + 1))
  read -r r c <<<"$(measure "$cmd_a" $port)"
  rps_a+=("$r") cpu_a+=("$c")
  port=$((port + 1))
  read -r r c <<<"$(measure "$cmd_b" $port)"
  rps_b+=("$r") cpu_b+=("$c")
done
med_a=$(median "${cpu_a[@]}")
med_b=$(median "${cpu_b[@]}")
echo "c=$conns depth=$depth A: req/s=$(median "${rps_a[@]}") cpu_us/req=$med_a" \
  "| B: req/s=$(median "${rps_b[@]}") cpu_us/req=$med_b" \
  "| B/A cpu=$(awk -v a="$med_a" -v b="$med_b" 'BEGIN { printf "%.3f", b / a }')"
