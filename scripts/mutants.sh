#!/usr/bin/env bash
# Mutation testing with cargo-mutants, one module at a time.
#
# cargo-mutants changes one thing in the code (a `>` into `>=`, a function
# body into `()`), rebuilds and runs tests; a mutant whose tests still pass
# is "missed": either a test is lacking or the change cannot alter
# behaviour. Each module here runs with the few test binaries that exercise
# it (named with `--test`, which cargo-mutants passes to the build as well as
# to the test run, so only those binaries are rebuilt per mutant): the whole
# suite per mutant would take hours per module on two cores.
#
# Usage:
#   scripts/mutants.sh MODULE...    run the named modules, one after another
#   scripts/mutants.sh --list       the modules, their files and test binaries
#
# Each run writes target/mutants/MODULE/mutants.out/ (caught.txt,
# missed.txt, timeout.txt, unviable.txt, one log per mutant). Missed mutants
# already explained in TESTING.md (its lines "- `<mutant>` — why", named
# without line and column) are listed as known; any other is printed as NEW
# and makes the script exit 1.
#
# One job at a time (`-j 1`): the tests time things, and a second build
# beside them on a two-core machine turns timing tests into false kills.
# The dev profile: a mutant rebuilds in 1-7 s there against ~40 s in
# release, and the tests wait on clocks far more than they compute.
# Installs cargo-mutants (cargo install) if it is missing.
set -euo pipefail
set -f # the globs below are cargo-mutants', not the shell's
cd "$(dirname "$0")/.."

# module | files (cargo-mutants -f globs, space-separated) | test binaries
modules() {
    cat <<'EOF'
timer|src/runtime/timer.rs|runtime_basic runtime_shutdown runtime_timers net_tcp_waiting
poller|src/io/poller.rs|io_poller pollable net_tcp_waiting net_tcp_failures net_udp net_unix runtime_basic runtime_shutdown
blocking|src/blocking.rs|blocking fs fs_page_cache stdio
task|src/runtime/task.rs src/runtime/task_ref.rs src/runtime/spawn.rs src/runtime/join.rs|runtime_basic runtime_unpark runtime_shutdown runtime_stress runtime_epilogue runtime_lazy_stacks runtime_limits blocking stack_memory fork_safety sync2_local
worker|src/runtime/worker.rs src/runtime/placement.rs src/runtime/idle.rs src/runtime/live.rs|runtime_basic runtime_shutdown runtime_stress runtime_timers runtime_busy_worker runtime_epilogue blocking pollable fork_safety
source|src/io/source.rs|pollable net_wakeups net_tcp_waiting net_tcp_failures net_timeouts net_stranded_reads net_blocking_twin net_unix net_source_edges io_poller
stack|src/stack/*.rs|stack_limits stack_overflow stack_pool stack_memory runtime_stack_release runtime_stack_reuse runtime_limits runtime_lazy_stacks coroutine
sync-waiter|src/sync/waiter.rs|sync_mutex sync_condvar sync_mpsc sync2_mpmc sync2_select sync2_semaphore
sync-locks|src/sync/mutex.rs src/sync/rwlock.rs src/sync/condvar.rs src/sync/poison.rs src/sync/reentrant.rs|sync_mutex sync_condvar sync_rwlock sync_poison sync_observe sync2_reentrant sync_debug sync_locks_edges thread_api
sync-channels|src/sync/channel.rs src/sync/mpsc/*.rs src/sync/mpmc.rs src/sync/select/*.rs|sync_mpsc sync2_mpmc sync2_select sync_no_alloc sync_observe sync_channels_edges sync2_joinable_queue
sync-others|src/sync/barrier.rs src/sync/once.rs src/sync/once_lock.rs src/sync/semaphore.rs src/sync/joinable_queue.rs src/sync/wait_group.rs src/sync/event.rs src/sync/gate.rs src/sync/local.rs|sync_barrier_once sync2_semaphore sync2_joinable_queue sync2_wait_group_event sync2_local sync_debug sync_others_edges
EOF
}

if [[ $# -eq 0 ]]; then
    echo "usage: $0 MODULE... | --list" >&2
    exit 2
fi
if [[ $1 == --list ]]; then
    modules | column -t -s '|'
    exit 0
fi

if ! cargo mutants --version >/dev/null 2>&1; then
    echo "== cargo-mutants is missing: cargo install --locked cargo-mutants" >&2
    cargo install --locked cargo-mutants
fi

status=0
for module in "$@"; do
    line=$(modules | grep "^$module|" || true)
    if [[ -z $line ]]; then
        echo "unknown module $module; scripts/mutants.sh --list shows them" >&2
        exit 2
    fi
    IFS='|' read -r _ files tests <<<"$line"
    args=(--jobs 1 --copy-target true --timeout-multiplier 3 --output "target/mutants/$module")
    for file in $files; do
        args+=(--file "$file")
    done
    for test in $tests; do
        args+=(--cargo-arg "--test=$test")
    done
    mkdir -p "target/mutants/$module"
    echo "== $module: cargo mutants ${args[*]}"
    start=$(date +%s)
    # Exit codes 2 (missed mutants) and 3 (timeouts) are results.
    rc=0
    cargo mutants "${args[@]}" || rc=$?
    if [[ $rc -ne 0 && $rc -ne 2 && $rc -ne 3 ]]; then
        echo "== $module: cargo mutants failed (exit $rc)" >&2
        exit 1
    fi
    echo "== $module: $(( ($(date +%s) - start) / 60 )) min"
    # The mutants TESTING.md explains, one per line.
    known=$(sed -n 's/^- `\(src\/[^`]*\)` .*/\1/p' TESTING.md 2>/dev/null || true)
    missed="target/mutants/$module/mutants.out/missed.txt"
    # missed.txt names mutants with line:column; TESTING.md without, so
    # that an edit elsewhere in the file does not orphan the explanation.
    while IFS= read -r mutant; do
        [[ -z $mutant ]] && continue
        mutant=$(sed 's/^\([^:]*\):[0-9]*:[0-9]*: /\1: /' <<<"$mutant")
        if grep -qxF -- "$mutant" <<<"$known"; then
            echo "known:  $mutant"
        else
            echo "NEW:    $mutant"
            status=1
        fi
    done <"$missed"
done
exit $status
