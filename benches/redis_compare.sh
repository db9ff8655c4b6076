#!/usr/bin/env bash
# mini-redis on fibra against tokio's mini-redis and redis-server, with
# redis-benchmark as the client. Every server runs pinned to CPU 0 (fibra's
# with FIBRA_WORKERS=1), redis-benchmark pinned to CPU 1. For each case —
# SET and GET; 50 and 1,000 connections; unpipelined and -P 16 — it records
# requests/s, p99 latency, and the server's CPU time per request (user + sys
# from /proc/PID/stat over the run, divided by the requests). The servers
# take turns (fibra, tokio, redis, fibra, ...; REPS rounds), each round on a
# freshly started server that first serves the SET run and then the GET run
# (so GET finds the key), and the table shows medians over the rounds.
#
# Then the idle-connections case: examples/mini_redis_idle holds 10,000
# connections open (each one pinged, so accepted and served), and 50 busy
# connections run GET beside them; their p99 latency is compared with the
# 50-connection run without the idle ones (alternating, REPS each), for
# fibra's server and for redis-server.
#
#   benches/redis_compare.sh                  # REPS=3 RUN_S=2: about 6 minutes
#   REPS=5 RUN_S=4 benches/redis_compare.sh
#
# env: REPS rounds (3); RUN_S seconds aimed at per run (2: the number of requests
# per run is set from a short first run of each server and case, since the
# servers differ 50-fold in pipelined throughput); IDLE idle connections
# (10000; 0 skips that case); TIMEOUT_S the longest one redis-benchmark run
# may take before it counts as hung (60); SERVERS which of fibra, tokio and
# redis to run ("fibra tokio redis"); CASES which connections:depth pairs
# ("50:1 50:16 1000:1 1000:16"); CARGO_TARGET_DIR as for cargo. For a
# closer look at one figure, e.g.:
#   SERVERS="fibra tokio" CASES=50:1 REPS=9 IDLE=0 benches/redis_compare.sh
#
# Needs: redis-benchmark and redis-server (Debian/Ubuntu packages
# redis-tools and redis-server), taskset (util-linux), and tokio's
# mini-redis-server (`cargo install mini-redis`; found on PATH or in
# target/mini-redis/bin, where this script installs it when missing). When
# run as root with apt-get it installs the packages it lacks and says so;
# otherwise it names them and stops.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"

reps=${REPS:-3}
seconds=${RUN_S:-2}
idle=${IDLE:-10000}
run_timeout=${TIMEOUT_S:-60}

say() { echo "redis_compare: $*" >&2; }

need_package() { # command package
  command -v "$1" >/dev/null && return
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "$1 is missing; installing it: apt-get install -y $2"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2" >/dev/null
  else
    say "needs $1 (Debian/Ubuntu: sudo apt-get install $2)"
    exit 1
  fi
}
need_package redis-benchmark redis-tools
need_package redis-server redis-server
need_package taskset util-linux
if [ "$(nproc)" -lt 2 ]; then
  say "needs 2 CPUs (servers on CPU 0, redis-benchmark on CPU 1)"
  exit 1
fi

target=${CARGO_TARGET_DIR:-$repo/target}

cargo build --release --quiet --example mini_redis --example mini_redis_idle
bin=$target/release/examples
ulimit -n "$(ulimit -Hn)"
if [ "$idle" -gt 0 ] && [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((idle + 1000)) ]; then
  say "open-file limit $(ulimit -n) is too low for $idle idle connections (IDLE=0 skips them)"
  exit 1
fi

read -r -a servers <<<"${SERVERS:-fibra tokio redis}"
for server in "${servers[@]}"; do
  case $server in
    fibra | tokio | redis) ;;
    *) say "unknown server '$server' in SERVERS (fibra, tokio, redis)"; exit 1 ;;
  esac
done
tokio_server=$(command -v mini-redis-server || true)
if [[ " ${servers[*]} " == *" tokio "* ]] && [ -z "$tokio_server" ]; then
  tokio_server=$target/mini-redis/bin/mini-redis-server
  if [ ! -x "$tokio_server" ]; then
    say "tokio's mini-redis-server is missing; installing it (a few minutes): cargo install mini-redis --root $target/mini-redis"
    cargo install --quiet mini-redis --root "$target/mini-redis"
  fi
fi
ticks=$(getconf CLK_TCK)
port=9400
results=$(mktemp)
workdir=$(mktemp -d)
server_pid=
holder_pid=
cleanup() {
  [ -n "$holder_pid" ] && kill "$holder_pid" 2>/dev/null
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null
  wait 2>/dev/null
  rm -rf "$results" "$workdir"
}
trap cleanup EXIT

start_server() { # name
  port=$((port + 1))
  local log=$workdir/server.log
  # Each a simple command, so that $! is the server itself (taskset and env
  # exec it), whose CPU time /proc reports.
  case $1 in
    fibra) taskset -c 0 env FIBRA_WORKERS=1 "$bin/mini_redis" --port $port >"$log" 2>&1 & ;;
    tokio) taskset -c 0 "$tokio_server" --port $port >"$log" 2>&1 & ;;
    redis) taskset -c 0 redis-server --bind 127.0.0.1 --port $port --save "" --appendonly no \
      --maxclients $((idle + 1000)) >"$log" 2>&1 & ;;
  esac
  server_pid=$!
  for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  say "$1 did not start listening on $port:"
  cat "$workdir/server.log" >&2
  exit 1
}

stop_server() {
  kill "$server_pid" 2>/dev/null
  wait "$server_pid" 2>/dev/null || true
  server_pid=
}

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$server_pid/stat"; }

# One redis-benchmark run against the running server:
# test conns depth requests -> "rps p99_ms cpu_us_per_request" ("- - -" if it
# failed or hung).
bench() {
  local test=$1 conns=$2 depth=$3 requests=$4 before after out
  before=$(cpu_ticks)
  if ! out=$(timeout "$run_timeout" taskset -c 1 redis-benchmark -p "$port" -t "$test" \
    -c "$conns" -P "$depth" -n "$requests" --csv 2>&1); then
    echo "- - -"
    return
  fi
  after=$(cpu_ticks)
  if echo "$out" | grep -qi warning; then
    say "redis-benchmark warned: $(echo "$out" | grep -i warning | head -1)"
  fi
  echo "$out" | awk -F'"' -v before="$before" -v after="$after" -v hz="$ticks" -v n="$requests" '
    $2 == "SET" || $2 == "GET" { rps = $4; p99 = $14 }
    END {
      if (rps == "") print "- - -"
      else printf "%s %s %.3f\n", rps, p99, (after - before) / hz * 1e6 / n
    }'
}

cases=()
for c in ${CASES:-50:1 50:16 1000:1 1000:16}; do
  if ! [[ $c =~ ^[0-9]+:[0-9]+$ ]]; then
    say "CASES wants connections:depth pairs, got '$c'"
    exit 1
  fi
  cases+=("${c%:*} ${c#*:}")
done
declare -A requests=()

# Requests per run for a server and case: from a short run, enough for
# about $seconds seconds, at least 20,000.
calibrate() { # server conns depth
  local probe=$(($2 * $3 * 50)) line rps
  [ $probe -lt 20000 ] && probe=20000
  line=$(bench set "$2" "$3" $probe)
  rps=${line%% *}
  if [ "$rps" = - ]; then
    requests[$1_$2_$3]=0
  else
    requests[$1_$2_$3]=$(awk -v r="$rps" -v s="$seconds" 'BEGIN { n = int(r * s); print (n < 20000 ? 20000 : n) }')
  fi
}

say "REPS=$reps, about ${seconds}s per run; servers: ${servers[*]}"
for round in $(seq "$reps"); do
  for server in "${servers[@]}"; do
    for c in "${cases[@]}"; do
      read -r conns depth <<<"$c"
      start_server "$server"
      [ "$round" = 1 ] && calibrate "$server" "$conns" "$depth"
      n=${requests[${server}_${conns}_$depth]}
      for test in set get; do
        if [ "$n" = 0 ]; then
          line="- - -"
        else
          line=$(bench $test "$conns" "$depth" "$n")
        fi
        echo "$server $test $conns $depth $line" >>"$results"
        say "round $round: $server $test c=$conns P=$depth n=$n: $line"
      done
      stop_server
    done
  done
done

median() { # values... ("-" ignored) -> median or "-"
  printf '%s\n' "$@" | { grep -v '^-$' || true; } | sort -g |
    awk '{ v[NR] = $1 } END { if (NR == 0) print "-"; else print v[int((NR + 1) / 2)] }'
}
column_of() { # server test conns depth field(5=rps 6=p99 7=cpu)
  awk -v s="$1" -v t="$2" -v c="$3" -v d="$4" -v f="$5" \
    '$1 == s && $2 == t && $3 == c && $4 == d { print $f }' "$results"
}

ratio() { # a b -> a/b, or "-"
  if [ "$1" = - ] || [ "$2" = - ]; then echo -; else awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; fi
}

echo
echo "redis-benchmark against each server on 1 CPU (client on the other), medians of $reps rounds."
echo "cpu = server user+sys µs per request; p99 in ms; '-' = failed or hung (> ${run_timeout}s)."
echo
printf '%-5s %-5s %-3s  ' test c P
for server in "${servers[@]}"; do printf '%12s %7s %6s  ' "$server req/s" p99 cpu; done
printf '%9s %11s\n' "cpu f/t" "req/s f/r"
for test in set get; do
  for c in "${cases[@]}"; do
    read -r conns depth <<<"$c"
    printf '%-5s %-5s %-3s  ' "$test" "$conns" "$depth"
    declare -A med_rps=() med_cpu=()
    for server in "${servers[@]}"; do
      # shellcheck disable=SC2046
      med_rps[$server]=$(median $(column_of "$server" $test "$conns" "$depth" 5))
      med_cpu[$server]=$(median $(column_of "$server" $test "$conns" "$depth" 7))
      printf '%12s %7s %6s  ' "${med_rps[$server]}" \
        "$(median $(column_of "$server" $test "$conns" "$depth" 6))" "${med_cpu[$server]}"
    done
    printf '%9s %11s\n' "$(ratio "${med_cpu[fibra]:--}" "${med_cpu[tokio]:--}")" \
      "$(ratio "${med_rps[fibra]:--}" "${med_rps[redis]:--}")"
  done
done
echo
echo "Targets: c=50 unpipelined cpu f/t (fibra / tokio) <= 1.0; c=50 -P 16 req/s f/r (fibra / redis-server) >= 0.8."

[ "$idle" -gt 0 ] || exit 0

echo
echo "== $idle idle connections + 50 busy (GET, unpipelined) against 50 alone; medians of $reps runs each"
idle_runs=$(mktemp)
idle_servers=()
for server in "${servers[@]}"; do
  # tokio's server accepts at most 250 connections at once.
  [ "$server" = tokio ] || idle_servers+=("$server")
done
for server in "${idle_servers[@]}"; do
  # As many requests as the 50-connection runs had (when there were any).
  n=${requests[${server}_50_1]:-100000}
  for round in $(seq "$reps"); do
    for with_idle in 0 1; do
      start_server "$server"
      bench set 50 1 20000 >/dev/null
      if [ $with_idle = 1 ]; then
        mkfifo "$workdir/hold"
        "$bin/mini_redis_idle" "$port" "$idle" <"$workdir/hold" >"$workdir/holder.log" 2>&1 &
        holder_pid=$!
        exec 4>"$workdir/hold"
        until grep -q holding "$workdir/holder.log" 2>/dev/null; do
          if ! kill -0 $holder_pid 2>/dev/null; then
            say "the idle-connection holder failed:"
            cat "$workdir/holder.log" >&2
            exit 1
          fi
          sleep 0.1
        done
      fi
      line=$(bench get 50 1 "$n")
      echo "$server $with_idle $line" >>"$idle_runs"
      say "idle round $round: $server, idle=$((with_idle * idle)): $line"
      if [ $with_idle = 1 ]; then
        exec 4>&-
        wait $holder_pid 2>/dev/null || true
        holder_pid=
        rm -f "$workdir/hold"
      fi
      stop_server
    done
  done
done
printf '%-6s %14s %9s %14s %9s %10s\n' server "alone req/s" "p99 ms" "+idle req/s" "p99 ms" "p99 ratio"
for server in "${idle_servers[@]}"; do
  # shellcheck disable=SC2046
  a_rps=$(median $(awk -v s=$server '$1 == s && $2 == 0 { print $3 }' "$idle_runs"))
  a_p99=$(median $(awk -v s=$server '$1 == s && $2 == 0 { print $4 }' "$idle_runs"))
  b_rps=$(median $(awk -v s=$server '$1 == s && $2 == 1 { print $3 }' "$idle_runs"))
  b_p99=$(median $(awk -v s=$server '$1 == s && $2 == 1 { print $4 }' "$idle_runs"))
  printf '%-6s %14s %9s %14s %9s %10s\n' $server "$a_rps" "$a_p99" "$b_rps" "$b_p99" \
    "$(awk -v a="$a_p99" -v b="$b_p99" 'BEGIN { if (a > 0) printf "%.2f", b / a; else print "-" }')"
done
rm -f "$idle_runs"
echo
echo "Target: fibra's p99 with $idle idle connections within 1.5x of the run without them."
