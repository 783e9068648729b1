#!/usr/bin/env bash
# release.sh [OUT]: the shipped agent and CLI, in OUT (default build-release):
#   OUT/stage/     the install tree: bin/probing, lib/probing/libprobing.so, lib/probing/python/probing/
#   OUT/debug/     their debug information (probing.debug, libprobing.so.debug), linked by GNU debuglink
# Built by this host's g++ against Debian 11's C library (glibc 2.31) as a sysroot, made once by
# scripts/matrix-chroot.sh bullseye; libstdc++, OpenSSL, libdw, libelf, libedit and their
# compressors linked in statically; stripped. tests/release/check_shipped.py then checks the floor,
# the dependencies and the sizes, and prints them. `make wheel` and `make deb` package OUT/stage.
set -euo pipefail
repo=$(realpath "$(dirname "$0")/..")
out=$(realpath -m "${1:-$repo/build-release}")
cache=${PROBING_MATRIX_CACHE:-/var/cache/probing-matrix}
sysroot=$cache/bullseye

[[ $(id -u) == 0 ]] || { echo "release: needs root (it makes the Debian 11 sysroot with debootstrap)" >&2; exit 2; }
"$repo/scripts/matrix-chroot.sh" bullseye "$cache"

start=$SECONDS
echo "release: building the agent and the CLI against glibc 2.31 in $out/build..."
if [[ ! -f $out/build/CMakeCache.txt ]]; then
  mkdir -p "$out"
  cmake -S "$repo" -B "$out/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPROBING_TESTS=OFF \
    -DCMAKE_TOOLCHAIN_FILE="$repo/cmake/sysroot.cmake" -DPROBING_SYSROOT="$sysroot" >"$out/configure.log" 2>&1 ||
    { cat "$out/configure.log" >&2; exit 1; }
fi
cmake --build "$out/build" -j "$(nproc)"
rm -rf "$out/stage" "$out/debug"
cmake --install "$out/build" --prefix "$out/stage" >/dev/null
for f in "$out/stage/bin/probing" "$out/stage/lib/probing/libprobing.so"; do
  "$repo/scripts/split-debug.sh" "$f" "$out/debug"
done
echo "release: built in $((SECONDS - start)) s"
python3 "$repo/tests/release/check_shipped.py" "$out/stage"
# Run once on the sysroot's own C library: what the symbol versions cannot show (which start
# files were linked, whether static constructors run) shows here.
"$sysroot/lib64/ld-linux-x86-64.so.2" --library-path "$sysroot/usr/lib/x86_64-linux-gnu" "$out/stage/bin/probing" --version ||
  { echo "release: the CLI does not run on glibc 2.31" >&2; exit 1; }
