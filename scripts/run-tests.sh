#!/usr/bin/env bash
# run-tests.sh BUILD: every test, on an already built tree. Unit and injector tests (ctest, in
# parallel), then the end-to-end tests on real processes (pytest, with Debian's python3), then the
# request fuzz target for FUZZ_SECONDS (default 60; 0 skips it), built with clang in build-fuzz.
# The soak among the end-to-end tests runs for PROBING_SOAK_SECONDS (15 here; `make soak` runs
# the longer one). The browser checks (Chromium, tests/browser) must run: a missing browser fails
# unless PROBING_BROWSER_REQUIRED=0.
set -uo pipefail
build=${1:-build}
ctest --test-dir "$build" -j "$(nproc)" --output-on-failure --timeout 180
unit=$?
PROBING_BROWSER_REQUIRED=${PROBING_BROWSER_REQUIRED:-1} PROBING_SOAK_SECONDS=${PROBING_SOAK_SECONDS:-15} PROBING_BUILD=$(realpath "$build") /usr/bin/python3 -m pytest tests/e2e -q -rs -p no:cacheprovider
e2e=$?
fuzz=0
if [[ "${FUZZ_SECONDS:-60}" -gt 0 ]]; then
  "$(dirname "$0")/run-fuzz.sh" build-fuzz "${FUZZ_SECONDS:-60}"
  fuzz=$?
else
  echo "fuzz: skipped (FUZZ_SECONDS=0)"
fi
[[ $unit -eq 0 && $e2e -eq 0 && $fuzz -eq 0 ]]
