#!/usr/bin/env bash
# Runs test binaries under AddressSanitizer, with the coroutine switches
# annotated for it (src/asan.rs): heap use-after-free, double free and
# overflows of heap or stack buffers in the library or the tests become
# reports that fail the run.
#
# Usage:
#   scripts/asan.sh                      the default set below
#   scripts/asan.sh runtime_basic sync_mpsc ...   the named test binaries
#   scripts/asan.sh --plain ...          the same without the annotations
#                                        (to see what they are for)
#
# Needs the nightly toolchain (`-Zsanitizer` is unstable); installs it
# with rustup when it is missing. The crate itself builds on stable: the
# annotations are compiled only with `--cfg fibra_asan`. Builds go to
# target/asan (target/asan-plain with --plain), so the normal build is
# untouched. Not part of .ci/run (nightly, and a full build of its own).
#
# Leak checking is off: several tests leak on purpose (forgotten permits,
# coroutines abandoned at process exit in child processes). So is the
# detection of use after return: it moves frames to heap "fake stacks",
# and the tests that measure how much stack a recursion used by the
# addresses of its frames then see addresses outside the stack. Stack
# overflow tests are left out of the default set: their SIGSEGV handler
# and ASan's own cannot both own the signal; so are tests that measure
# resident memory (`runtime_lazy_stacks`): ASan holds freed memory back in
# a quarantine, so a second fan-out does not reuse the first one's.
set -euo pipefail
cd "$(dirname "$0")/.."

cfg="--cfg fibra_asan"
dir=target/asan
if [[ ${1:-} == --plain ]]; then
    cfg=""
    dir=target/asan-plain
    shift
fi

tests=("$@")
if [[ ${#tests[@]} -eq 0 ]]; then
    tests=(coroutine runtime_basic runtime_unpark runtime_epilogue runtime_shutdown
        runtime_stress sync_mpsc sync_mutex sync2_select sync2_local sync_locks_edges
        sync_channels_edges thread_api net_tcp_waiting blocking)
fi

if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    echo "== the nightly toolchain is missing: rustup toolchain install nightly" >&2
    rustup toolchain install nightly --profile minimal
fi

args=()
for test in "${tests[@]}"; do
    args+=(--test "$test")
done

# The target is named so that RUSTFLAGS reach only the crate and its test
# binaries, not build scripts and proc macros.
export RUSTFLAGS="-Zsanitizer=address $cfg"
export ASAN_OPTIONS="detect_leaks=0:detect_stack_use_after_return=0:${ASAN_OPTIONS:-}"
echo "== RUSTFLAGS=\"$RUSTFLAGS\" cargo +nightly test --no-fail-fast --target x86_64-unknown-linux-gnu ${args[*]}"
cargo +nightly test --no-fail-fast --target x86_64-unknown-linux-gnu --target-dir "$dir" "${args[@]}"
