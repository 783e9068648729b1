#!/usr/bin/env bash
# install-pth.sh BUILD PREFIX PYTHON...: puts probing.pth into each interpreter's site-packages,
# so that `PROBE=1 python3 app.py` starts the agent. The package itself stays in one place,
# PREFIX/lib/probing/python; the .pth adds that directory to sys.path, then runs the hook line of
# the build's own probing.pth (python/CMakeLists.txt writes it; the wheel and the .deb take it too).
set -euo pipefail
build=$1; prefix=$(realpath "$2"); shift 2
pkg="$prefix/lib/probing/python"
[[ -d "$pkg/probing" ]] || { echo "install-pth: $pkg/probing is missing; run cmake --install first" >&2; exit 1; }
pth="$build/lib/probing/probing.pth"
[[ -f "$pth" ]] || { echo "install-pth: $pth is missing; build first" >&2; exit 1; }
hook=$(tail -n 1 "$pth")
declare -A done_sites=()
hooked=()
for py in "$@"; do
  [[ -x "$py" ]] || { echo "install-pth: $py is not an executable: skipped" >&2; continue; }
  site=$("$py" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  [[ -n "${done_sites[$site]:-}" ]] && continue
  done_sites[$site]=1
  mkdir -p "$site"
  printf '%s\n%s\n' "$pkg" "$hook" > "$site/probing.pth"
  echo "install-pth: $site/probing.pth ($py)"
  hooked+=("$py")
done
echo "PROBE=1 starts the agent with: ${hooked[*]:-no interpreter}"
echo "For another interpreter: make install PYTHONS=/path/to/python3 (probing doctor lists them)"
