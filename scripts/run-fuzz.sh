#!/bin/bash
# Builds the request fuzz target with clang (libFuzzer, ASan, UBSan) in BUILD and runs it for
# SECONDS from the seed corpus in tests/fuzz/corpus. Exits non-zero when it finds a crash (the
# input is left in BUILD/fuzz-artifacts/).
set -euo pipefail
build=${1:-build-fuzz}
seconds=${2:-60}
cd "$(dirname "$0")/.."
cmake -S . -B "$build" -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DPROBING_FUZZ=ON -DPROBING_TESTS=OFF >/dev/null
cmake --build "$build" --target request_fuzz
corpus="$build/fuzz-corpus"
mkdir -p "$corpus" "$build/fuzz-artifacts"
cp -n tests/fuzz/corpus/* "$corpus"/ 2>/dev/null || true
echo "fuzz: running request_fuzz for ${seconds} s"
ASAN_OPTIONS=detect_leaks=0 "$build/tests/request_fuzz" -max_total_time="$seconds" -max_len=8192 -timeout=10 \
  -artifact_prefix="$build/fuzz-artifacts/" -print_final_stats=1 "$corpus" 2>&1 | tail -n 25
