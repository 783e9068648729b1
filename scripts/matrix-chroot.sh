#!/bin/bash
# Builds the chroot of one Debian suite for the version matrix (`make test-matrix`), or reuses it
# when it was built from the same recipe. Usage: scripts/matrix-chroot.sh SUITE [CACHE_DIR]
#   trixie: CPython 3.13 with torch 2.6;  sid: CPython 3.14 with torch 2.14, 3.13 and 3.15 without
#   (both with venv and pip, for tests/release/);
#   bullseye: CPython 3.9 with torch 1.7, and the C library (2.31) and static libraries that the
#   shipped agent and CLI are built against (scripts/release.sh uses it as the sysroot).
# The chroot lands in CACHE_DIR/SUITE (default /var/cache/probing-matrix); needs root, debootstrap
# and the Debian mirror apt already uses.
set -euo pipefail

suite=${1:?usage: matrix-chroot.sh SUITE [CACHE_DIR]}
cache=${2:-${PROBING_MATRIX_CACHE:-/var/cache/probing-matrix}}
case $suite in
  trixie) packages="python3 python3-torch python3-venv libssl3t64 austin" ;;
  sid) packages="python3 python3.13 python3.15 python3-torch python3-venv libssl3t64" ;;
  bullseye) packages="python3 python3-torch python3-venv libc6-dev libssl-dev libdw-dev libelf-dev libedit-dev
    zlib1g-dev liblzma-dev libbz2-dev libbsd-dev libncurses-dev libzstd-dev libboost1.74-dev" ;;
  *) echo "matrix-chroot.sh: no recipe for suite '$suite' (trixie, sid, bullseye)" >&2; exit 2 ;;
esac
mirror=${PROBING_MATRIX_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}
mirror=${mirror:-http://deb.debian.org/debian}

root=$cache/$suite
recipe="suite=$suite packages=$packages mirror=$mirror v3"
if [[ -f $root/.probing-recipe && $(cat "$root/.probing-recipe") == "$recipe" ]]; then
  echo "matrix: $suite chroot is up to date ($root)"
  exit 0
fi

unmount_all() {
  for m in dev/pts dev sys proc; do
    mountpoint -q "$root/$m" 2>/dev/null && umount -l "$root/$m" || true
  done
}
trap unmount_all EXIT

start=$SECONDS
echo "matrix: building the $suite chroot in $root (debootstrap, then: $packages)..."
unmount_all
rm -rf "$root.new"
mkdir -p "$cache"
debootstrap --variant=minbase "$suite" "$root.new" "$mirror" >"$cache/$suite.log" 2>&1 ||
  { echo "matrix: debootstrap $suite failed; see $cache/$suite.log" >&2; tail -5 "$cache/$suite.log" >&2; exit 1; }
echo "matrix: $suite base system in $((SECONDS - start)) s; installing packages..."
root_was=$root
root=$root.new
for m in proc sys dev dev/pts; do mount --bind "/$m" "$root/$m"; done
chroot "$root" /usr/bin/env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
  $packages >>"$cache/$suite.log" 2>&1 ||
  { echo "matrix: installing into $suite failed; see $cache/$suite.log" >&2; tail -5 "$cache/$suite.log" >&2; exit 1; }
chroot "$root" apt-get clean
if [[ $suite == bullseye ]]; then
  # A sysroot for the host's compiler: the linker resolves an absolute symbolic link against the
  # host's root, so the libraries' links (ld-linux-x86-64.so.2, libz.so...) become relative.
  find "$root/usr/lib64" "$root/usr/lib/x86_64-linux-gnu" -maxdepth 1 -type l -lname '/*' | while read -r link; do
    ln -sfn "$(realpath -s -m --relative-to="$(dirname "$link")" "$root$(readlink "$link")")" "$link"
  done
fi
unmount_all
root=$root_was
rm -rf "$root"
mv "$root.new" "$root"
echo "$recipe" >"$root/.probing-recipe"
echo "matrix: $suite chroot ready in $((SECONDS - start)) s ($(du -sh "$root" | cut -f1))"
