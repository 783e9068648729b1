#!/usr/bin/env bash
# build-web.sh WEB_DIR OUT_DIR OUT_CPP: builds the web page and embeds it in the agent (run by
# the build: src/server/CMakeLists.txt).
#   1. `npm ci` in WEB_DIR when its node_modules are missing or older than its lock file;
#   2. node WEB_DIR/build.mjs OUT_DIR (esbuild);
#   3. scripts/embed-web.py OUT_DIR OUT_CPP.
# When npm cannot install the build tools (no registry from this machine), the build goes on
# without the page: the agent then answers / with a line saying why, and this prints a warning
# that says how to build it later. Everything else of probing works the same.
set -uo pipefail
web=$1 out=$2 cpp=$3
here=$(dirname "$(realpath "$0")")
python=${PYTHON:-python3}

without_page() {
  echo "build-web: WARNING: the web page is not built: $1" >&2
  echo "build-web: the agent will answer / with a line saying so; once npm can reach its registry," \
    "rebuild after: touch $web/package-lock.json" >&2
  "$python" "$here/embed-web.py" --none "$cpp" "$1"
}

if [[ ! -f $web/node_modules/.package-lock.json || $web/package-lock.json -nt $web/node_modules/.package-lock.json ]]; then
  if ! log=$(cd "$web" && npm ci --no-audit --no-fund --loglevel=error 2>&1); then
    why=$(echo "$log" | grep -m1 -E 'reason:|request to' || echo "$log" | grep -m1 -E 'ERR!|error')
    without_page "npm ci failed in $web: $(echo "$why" | sed -E 's/^npm (ERR!|error) //')"
    exit 0
  fi
fi
node "$web/build.mjs" "$out" || exit 1
exec "$python" "$here/embed-web.py" "$out" "$cpp"
