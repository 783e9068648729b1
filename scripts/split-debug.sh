#!/usr/bin/env bash
# split-debug.sh FILE DEBUG_DIR (release.sh, `make install INSTALL_DEBUG=1`): moves FILE's debug
# information to DEBUG_DIR/NAME.debug and leaves
# FILE stripped, with a GNU debuglink naming that file: gdb, perf and elfutils find it when it sits
# in a .debug directory beside FILE (`make install INSTALL_DEBUG=1` puts it there) or under
# /usr/lib/debug/ at FILE's own path.
set -euo pipefail
file=$(realpath "${1:?usage: split-debug.sh FILE DEBUG_DIR}")
dir=${2:?usage: split-debug.sh FILE DEBUG_DIR}
name=$(basename "$file").debug
mkdir -p "$dir"
objcopy --only-keep-debug --compress-debug-sections=zlib "$file" "$dir/$name"
chmod -x "$dir/$name"
# --strip-unneeded keeps what the dynamic loader needs (.dynsym), and drops the rest.
strip --strip-unneeded --remove-section=.comment "$file"
# The link records the debug file's name and checksum; the debugger looks for that name.
(cd "$dir" && objcopy --add-gnu-debuglink="$name" "$file")
