#!/usr/bin/env bash
# run-tests.sh BUILD: every test, on an already built tree. Unit and injector tests (ctest, in
# parallel), then the end-to-end tests on real processes (pytest, with Debian's python3).
set -uo pipefail
build=${1:-build}
ctest --test-dir "$build" -j "$(nproc)" --output-on-failure --timeout 180
unit=$?
PROBING_BUILD=$(realpath "$build") /usr/bin/python3 -m pytest tests/e2e -q -rs -p no:cacheprovider
e2e=$?
[[ $unit -eq 0 && $e2e -eq 0 ]]
