#!/bin/bash
# `make test-matrix`: the end-to-end suite against the interpreters users run beyond this host's
# 3.11, each in a chroot of a newer Debian (built once by matrix-chroot.sh, cached outside the
# repository), with the CLI and the agent from this host's build:
#   trixie-3.13  CPython 3.13, torch 2.6   (Debian 13)
#   sid-3.14     CPython 3.14, torch 2.14  (Debian sid)
#   sid-3.15     CPython 3.15, no torch    (Debian sid)
# Usage: scripts/test-matrix.sh BUILD_DIR [pytest arguments...]. Needs root (chroot, mounts).
set -euo pipefail

build=$(realpath "${1:?usage: test-matrix.sh BUILD_DIR [pytest args]}")
shift
repo=$(realpath "$(dirname "$0")/..")
cache=${PROBING_MATRIX_CACHE:-/var/cache/probing-matrix}
cd "$repo"

# Where chroots cannot be made (not root, no mount permission in a container), say so; with
# PROBING_MATRIX_OPTIONAL=1 (CI) that is a skip, otherwise an error.
cannot() {
  echo "test-matrix: SKIPPED, $1" >&2
  [[ ${PROBING_MATRIX_OPTIONAL:-0} == 1 ]] && exit 0
  exit 2
}
[[ $(id -u) == 0 ]] || cannot "needs root (it builds chroots and bind-mounts into them)"
probe=$(mktemp -d)
if ! unshare --mount sh -c "mount --bind / '$probe'" 2>/dev/null; then
  rmdir "$probe"
  cannot "bind mounts are not permitted here (a container without CAP_SYS_ADMIN?)"
fi
rmdir "$probe"
scripts/matrix-chroot.sh trixie "$cache"
scripts/matrix-chroot.sh sid "$cache"

mounted=()
cleanup() {
  local i
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[$i]}" 2>/dev/null || true; done
}
trap cleanup EXIT
# The host's /proc, /dev, /tmp (targets' temporary files), the repository and the build, at the
# same paths inside each chroot: a target there runs the very scripts and agent the tests name.
bind() {
  mkdir -p "$2"
  if ! mountpoint -q "$2"; then
    mount --bind "$1" "$2"
    mounted+=("$2")
  fi
}
for suite in trixie sid; do
  root=$cache/$suite
  for m in proc sys dev dev/pts tmp; do bind "/$m" "$root/$m"; done
  bind "$repo" "$root$repo"
  [[ $build == "$repo"/* ]] || bind "$build" "$root$build"
done

mkdir -p "$cache/bin"
interpreters=()
for spec in trixie-3.13:trixie:python3.13 sid-3.14:sid:python3.14 sid-3.15:sid:python3.15; do
  IFS=: read -r name suite python <<<"$spec"
  wrapper=$cache/bin/$name
  printf '#!/bin/sh\n# %s in the %s chroot (scripts/test-matrix.sh)\nexec chroot %s /usr/bin/%s "$@"\n' \
    "$python" "$suite" "$cache/$suite" "$python" >"$wrapper"
  chmod +x "$wrapper"
  interpreters+=("$name=$wrapper")
done
list=$(IFS=,; echo "${interpreters[*]}")
echo "test-matrix: end-to-end tests on $list"
PROBING_SOAK_SECONDS=${PROBING_SOAK_SECONDS:-15} PROBING_E2E_INTERPRETERS=$list PROBING_BUILD=$build \
  /usr/bin/python3 -m pytest tests/e2e -q -rs -p no:cacheprovider "$@"
