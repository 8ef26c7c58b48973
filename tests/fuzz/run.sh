#!/bin/bash
# tests/fuzz/run.sh [SECONDS_PER_TARGET] [TARGET...] - build the libFuzzer targets into build/fuzz/ and
# fuzz each one for SECONDS (default 60) on its corpus, one target at a time, from the repository root.
#   SECONDS = 0 only replays the seed corpus and the regression inputs (tests/fuzz/regressions/<target>/)
#   once: a quick check that no past crash came back.
# Seeds: tests/fuzz/corpus/<target>/ (committed; `tests/fuzz/run.sh --seeds` regenerates them with
# tests/fuzz/make_seeds.c). New inputs found while fuzzing go to build/fuzz/corpus/<target>/ (not
# committed); crashes to build/fuzz/artifacts/. Needs clang with libFuzzer (Debian: clang-14).
# Exit status: non-zero when a target crashed, leaked, timed out or failed to build.
set -euo pipefail
cd "$(dirname "$0")/../.."
CC_FUZZ=${CC_FUZZ:-clang}
CFLAGS_FUZZ="-std=c99 -D_POSIX_C_SOURCE=200809L -g -O1 -fno-omit-frame-pointer -Wall -Wextra -Wno-unknown-pragmas -Wno-unused-function
             -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I."
ALL="json safetensors gguf spm tokenize grounding prompt image"
if [ "${1:-}" = "--seeds" ]; then
    mkdir -p build
    gcc -std=c99 -O1 -D_POSIX_C_SOURCE=200809L -Wno-unknown-pragmas -I. -o build/make_seeds tests/fuzz/make_seeds.c -lm
    ./build/make_seeds
    exit 0
fi
SECS=${1:-60}
shift || true
TARGETS=${*:-$ALL}
mkdir -p build/fuzz/artifacts
status=0
for t in $TARGETS; do
    bin=build/fuzz/fuzz_$t
    if [ ! -x "$bin" ] || [ tests/fuzz/fuzz_$t.c -nt "$bin" ] || [ kosmos2.h -nt "$bin" ] || [ tests/fuzz/fuzz.h -nt "$bin" ]; then
        echo "== build $bin"
        $CC_FUZZ $CFLAGS_FUZZ -o "$bin" tests/fuzz/fuzz_$t.c -lm || { status=1; continue; }
    fi
    mkdir -p build/fuzz/corpus/$t tests/fuzz/regressions/$t
    export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:allocator_may_return_null=1}
    export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
    if [ "$SECS" = 0 ]; then
        echo "== replay $t (seeds + regressions)"
        "$bin" -runs=0 -rss_limit_mb=2048 -timeout=20 tests/fuzz/corpus/$t tests/fuzz/regressions/$t 2>build/fuzz/$t.log \
            || { echo "FAIL $t (see build/fuzz/$t.log)"; tail -40 build/fuzz/$t.log; status=1; continue; }
    else
        echo "== fuzz $t for ${SECS}s"
        "$bin" -max_total_time="$SECS" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 \
            -artifact_prefix=build/fuzz/artifacts/$t- \
            build/fuzz/corpus/$t tests/fuzz/corpus/$t tests/fuzz/regressions/$t 2>build/fuzz/$t.log \
            || { echo "FAIL $t (see build/fuzz/$t.log)"; tail -60 build/fuzz/$t.log; status=1; continue; }
    fi
    grep -E "stat::number_of_executed_units|Done [0-9]+ runs|INITED" build/fuzz/$t.log | tail -2 | sed "s/^/   $t: /"
done
exit $status
