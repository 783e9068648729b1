#!/usr/bin/env bash
# make-deb.sh RELEASE_DIR OUT_DIR: the Debian package of what scripts/release.sh built, in OUT_DIR:
#   /usr/bin/probing                          the CLI
#   /usr/lib/probing/libprobing.so            the agent (the CLI finds it at ../lib/probing/)
#   /usr/lib/probing/python/probing/          the Python package
#   /usr/lib/python3/dist-packages/probing.pth  puts that package on the path of Debian's python3
#                                             and starts the agent there with PROBE=1
# For Debian 11 and newer (glibc 2.31), and any distribution with dpkg.
set -euo pipefail
release=$(realpath "${1:?usage: make-deb.sh RELEASE_DIR OUT_DIR}")
out=$(realpath -m "${2:?usage: make-deb.sh RELEASE_DIR OUT_DIR}")
repo=$(realpath "$(dirname "$0")/..")
version=$(cat "$repo/VERSION")
stage=$release/stage
[[ -x $stage/bin/probing ]] || { echo "make-deb: $stage/bin/probing is missing: run scripts/release.sh first" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
install -D -m 755 "$stage/bin/probing" "$root/usr/bin/probing"
install -D -m 644 "$stage/lib/probing/libprobing.so" "$root/usr/lib/probing/libprobing.so"
mkdir -p "$root/usr/lib/probing/python"
cp -r "$stage/lib/probing/python/probing" "$root/usr/lib/probing/python/"
find "$root/usr/lib/probing/python" -name __pycache__ -prune -exec rm -rf {} +
mkdir -p "$root/usr/lib/python3/dist-packages"
printf '%s\n%s\n' /usr/lib/probing/python "$(tail -1 "$release/build/lib/probing/probing.pth")" \
  >"$root/usr/lib/python3/dist-packages/probing.pth"
install -D -m 644 "$repo/README.md" "$root/usr/share/doc/probing/README.md"
chmod -R u=rwX,go=rX "$root/usr"
mkdir -p "$root/DEBIAN"
cat >"$root/DEBIAN/control" <<CONTROL
Package: probing
Version: $version
Architecture: amd64
Maintainer: probing developers <probing@localhost>
Depends: libc6 (>= 2.31), libgcc-s1
Recommends: python3
Section: devel
Priority: optional
Installed-Size: $(du -sk "$root/usr" | cut -f1)
Description: live debugger and profiler for Python AI processes
 Attach to a running Python process (PyTorch training or inference) with no
 restart and no code change: run Python in it, read its stacks, profile it and
 query what it recorded with SQL, on one process or on every rank of a job.
CONTROL
mkdir -p "$out"
deb=$out/probing_${version}_amd64.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "make-deb: $deb ($(du -h "$deb" | cut -f1))"
