# Sourced by the benchmark scripts (benches/c10k.sh, benches/prefork_wrk.sh):
# runs a server as a process tree of its own and measures that tree's CPU.
#
#   start_server NAME COMMAND...   starts it (its own session, and its own
#                                  cgroup v2 group when one can be made),
#                                  waits until 127.0.0.1:$port accepts
#   cpu_us                         CPU microseconds the tree has used so far
#   stop_server                    SIGTERM to the session, then SIGKILL, then
#                                  the cgroup's kill switch; removes the group
#
# Needs $bin (the release examples), $port and $logs (a directory for the
# server's output) set by the caller. CPU comes from the cgroup's cpu.stat,
# exact across forks and exited threads; without a writable cgroup v2
# hierarchy, from /proc via `c10k_client cpu PID`, which rounds each process
# down to 10 ms and so undercounts trees of many small processes (said on
# stderr).

# A cgroup v2 hierarchy to account the servers' CPU in, if writable.
cg_root=
for root in /sys/fs/cgroup /sys/fs/cgroup/unified; do
  if [ "$(stat -f -c %T "$root" 2>/dev/null)" = cgroup2fs ] && mkdir "$root/fibra-c10k-$$" 2>/dev/null; then
    rmdir "$root/fibra-c10k-$$"
    cg_root=$root
    break
  fi
done
if [ -z "$cg_root" ]; then
  echo "no writable cgroup v2 hierarchy: server CPU comes from /proc, rounded down to" >&2
  echo "  10 ms per process (servers of many small processes are undercounted)" >&2
fi

server_pid=
cg=
start_server() {
  local name=$1
  shift
  cg=
  if [ -n "$cg_root" ]; then
    cg=$cg_root/fibra-c10k-$$-$name
    mkdir "$cg"
  fi
  # The subshell joins the cgroup before it becomes the server, so every
  # process the server forks is accounted there; a session of its own, so
  # that the whole tree can be signalled.
  (
    if [ -n "$cg" ]; then echo "$BASHPID" >"$cg/cgroup.procs"; fi
    exec setsid "$@"
  ) >"$logs/$name.log" 2>&1 &
  server_pid=$!
  for _ in $(seq 100); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      # env execs the server: the pid is the server's (or its master's).
      return
    fi
    sleep 0.05
  done
  echo "$name did not start listening on port $port:" >&2
  cat "$logs/$name.log" >&2
  exit 1
}

stop_server() {
  kill -TERM -- "-$server_pid" 2>/dev/null || true
  for _ in $(seq 100); do
    kill -0 -- "-$server_pid" 2>/dev/null || break
    sleep 0.05
  done
  kill -KILL -- "-$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  if [ -n "$cg" ]; then
    # Whatever left the session (nothing should) dies with the cgroup.
    if [ -e "$cg/cgroup.kill" ]; then echo 1 >"$cg/cgroup.kill"; fi
    for _ in $(seq 100); do
      [ -s "$cg/cgroup.procs" ] || break
      sleep 0.05
    done
    rmdir "$cg" 2>/dev/null || echo "could not remove $cg" >&2
    cg=
  fi
}
cpu_us() {
  if [ -n "$cg" ]; then
    sed -n 's/^usage_usec \([0-9]*\)/\1/p' "$cg/cpu.stat"
  else
    "$bin/c10k_client" cpu "$server_pid" | sed -n 's/^cpu_us=\([0-9]*\).*/\1/p'
  fi
}
