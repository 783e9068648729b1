#!/usr/bin/env bash
# exit_destructors.sh LIBPROBING: fails when code of the agent's own registers a destructor to run
# at exit. exit() runs such destructors while the agent's threads may still be serving a request
# (docs/architecture.md, "Nothing the agent uses is destroyed"), so every static the agent keeps
# is built with `new` and never destroyed. Function-local statics and namespace-scope globals
# with a destructor both show up as a call to __cxa_atexit in the function that constructs them.
#
# Allowed: Boost's own header-defined statics, constructed at load time in the initializer of
# http_server.cpp or client.cpp, whichever runs first (Asio's service ids and thread-local keys,
# its OpenSSL initializer). The agent stops serving in an exit handler registered after them, so
# they are destroyed only once its I/O thread has stopped, and once a cluster heartbeat over TLS,
# the one user of the client library in the agent, is out of it (src/agent/agent.cpp).
# And, with the static C++ runtime, libstdc++'s own: its error categories (system_error.cc, built
# at load time like Boost's), and two lazy ones on paths the agent never takes
# (std::notify_all_at_thread_exit's key, std::messages' catalogs).
set -euo pipefail
lib=${1:?usage: exit_destructors.sh LIBPROBING}
command -v objdump >/dev/null || { echo "objdump is missing (binutils)"; exit 1; }
registrars=$(objdump -d --no-show-raw-insn -C "$lib" |
  awk '/^[0-9a-f]+ <.*>:$/ { fn = $0; sub(/^[0-9a-f]+ </, "", fn); sub(/>:$/, "", fn) }
       /call.*<__cxa_atexit@plt>/ { print fn }' | sort -u)
bad=$(grep -v -e '^_GLOBAL__sub_I_http_server\.cpp$' -e '^_GLOBAL__sub_I_client\.cpp$' -e '^boost::' \
  -e '^_GLOBAL__sub_I_system_error\.cc$' -e '^std::(anonymous namespace)::key_init()$' -e '^std::get_catalogs()$' \
  <<<"$registrars" || true)
if [[ -n "$bad" ]]; then
  echo "these functions of libprobing.so register a destructor to run at exit (use a static built with new):"
  echo "$bad"
  exit 1
fi
echo "no agent code registers an exit-time destructor ($(wc -l <<<"$registrars") allowed Boost registrars)"
