#!/usr/bin/env bash
# exports.sh LIBPROBING ARCHITECTURE_MD: fails when libprobing.so exports other functions than the
# ones docs/architecture.md names ("The agent still exports nothing but ..."). Everything else is
# hidden so that the host never binds to the agent's symbols.
set -euo pipefail
lib=${1:?usage: exports.sh LIBPROBING ARCHITECTURE_MD}
doc=${2:?usage: exports.sh LIBPROBING ARCHITECTURE_MD}
documented=$(tr '\n' ' ' <"$doc" | grep -o 'exports nothing but[^.]*\.' | grep -o '`probing_[a-z_]*`' | tr -d '`' |
  sort -u)
[[ -n "$documented" ]] || { echo "$doc names no exported function (\"exports nothing but ...\")"; exit 1; }
exported=$(nm -D --defined-only "$lib" | awk '$2 == "T" { print $3 }' | sort -u)
if [[ "$documented" != "$exported" ]]; then
  echo "libprobing.so exports:"; echo "$exported"
  echo "docs/architecture.md says:"; echo "$documented"
  exit 1
fi
echo "libprobing.so exports the $(wc -l <<<"$exported") functions the docs name"
