#!/bin/bash
# Builds the chroot of one Debian suite for the version matrix (`make test-matrix`), or reuses it
# when it was built from the same recipe. Usage: scripts/matrix-chroot.sh SUITE [CACHE_DIR]
#   trixie: CPython 3.13 with torch 2.6;  sid: CPython 3.14 with torch 2.14, 3.13 and 3.15 without.
# The chroot lands in CACHE_DIR/SUITE (default /var/cache/probing-matrix); needs root, debootstrap
# and the Debian mirror apt already uses.
set -euo pipefail

suite=${1:?usage: matrix-chroot.sh SUITE [CACHE_DIR]}
cache=${2:-${PROBING_MATRIX_CACHE:-/var/cache/probing-matrix}}
case $suite in
  trixie) packages="python3 python3-torch libssl3t64 austin" ;;
  sid) packages="python3 python3.13 python3.15 python3-torch libssl3t64" ;;
  *) echo "matrix-chroot.sh: no recipe for suite '$suite' (trixie, sid)" >&2; exit 2 ;;
esac
mirror=${PROBING_MATRIX_MIRROR:-$(sed -n 's/^URIs: *\(http[^ ]*debian\)$/\1/p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -1)}
mirror=${mirror:-http://deb.debian.org/debian}

root=$cache/$suite
recipe="suite=$suite packages=$packages mirror=$mirror v1"
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
unmount_all
root=$root_was
rm -rf "$root"
mv "$root.new" "$root"
echo "$recipe" >"$root/.probing-recipe"
echo "matrix: $suite chroot ready in $((SECONDS - start)) s ($(du -sh "$root" | cut -f1))"
