#!/usr/bin/env bash
# install-debug.sh BUILD PREFIX: the debug information of the CLI and the agent that `make install`
# stripped, beside them (PREFIX/bin/.debug/probing.debug, PREFIX/lib/probing/.debug/libprobing.so.debug),
# each installed file pointing at its own with a GNU debuglink, where gdb, perf and elfutils look.
set -euo pipefail
build=$(realpath "${1:?usage: install-debug.sh BUILD PREFIX}")
prefix=$(realpath "${2:?usage: install-debug.sh BUILD PREFIX}")
for f in bin/probing lib/probing/libprobing.so; do
  dir=$prefix/$(dirname "$f")/.debug
  name=$(basename "$f").debug
  mkdir -p "$dir"
  objcopy --only-keep-debug --compress-debug-sections=zlib "$build/$f" "$dir/$name"
  chmod -x "$dir/$name"
  (cd "$dir" && objcopy --remove-section=.gnu_debuglink --add-gnu-debuglink="$name" "$prefix/$f")
  echo "install-debug: $dir/$name"
done
