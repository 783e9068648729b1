#!/usr/bin/env bash
# demo.sh BUILD: starts examples/train.py (PyTorch, CPU), attaches probing to it while it
# trains — no restart, no code change — and shows what probing sees.
set -euo pipefail
build=$(realpath "${1:-build}")
probing="$build/bin/probing"
python=$(realpath /usr/bin/python3)  # Debian's python3-torch is built for this interpreter
log=$(mktemp /tmp/probing-demo.XXXXXX)

fifo=$(mktemp -u /tmp/probing-demo-fifo.XXXXXX)
mkfifo "$fifo"
"$python" examples/train.py > "$fifo" 2>&1 &
pid=$!
cleanup() {
  local rc=$?
  kill "$pid" 2>/dev/null
  wait "$pid" 2>/dev/null || true  # its status is the SIGTERM we sent, not the demo's
  rm -f "$fifo" "$log"
  exit "$rc"
}
trap cleanup EXIT
# Wait for the script to say it is training (its first line), then keep its output in $log.
exec 3< "$fifo"
if ! IFS= read -r -t 120 line <&3 || [[ "$line" != ready ]]; then
  echo "demo: the training script did not start: $line" >&2
  exit 1
fi
cat <&3 > "$log" &

bold=; plain=
if [[ -t 1 ]]; then bold=$'\033[1m'; plain=$'\033[0m'; fi
# Prints the command as a user would type it, then runs it.
show() {
  local shown=probing arg
  for arg in "${@:2}"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=-]+$ ]]; then shown+=" $arg"; else shown+=" \"$arg\""; fi
  done
  printf '\n%s$ %s%s\n' "$bold" "$shown" "$plain"
  "$@"
}

echo "demo: examples/train.py is training as pid $pid"
show "$probing" "$pid" inject
show "$probing" list
show "$probing" "$pid" eval "print(model)"
show "$probing" "$pid" eval "step, round(last_loss, 4)"
show "$probing" "$pid" eval "
for name, p in model.named_parameters():
    print(f'{name:20} {tuple(p.shape)}  grad={p.grad is not None}')
"
show "$probing" "$pid" backtrace
show "$probing" "$pid" backtrace --native
show "$probing" "$pid" query "SELECT func, file, lineno, depth FROM python.backtrace ORDER BY depth LIMIT 10"
show "$probing" "$pid" query "SELECT name, version FROM python.modules WHERE name IN ('torch', 'numpy')"
show "$probing" "$pid" query "SELECT rss_mb, peak_rss_mb, (SELECT count(*) FROM process.threads) AS threads FROM process.memory"
echo
echo "demo: since the inject, every training step has been traced (python.torch_trace):"
sleep 1
show "$probing" "$pid" query "SELECT module, stage, avg(duration) * 1000 AS avg_ms, count(*) AS calls FROM python.torch_trace WHERE step > (SELECT max(step) - 5 FROM python.torch_trace) GROUP BY module, stage ORDER BY avg_ms DESC LIMIT 10"
echo
echo "demo: where its time goes, sampled for 3 s without the GIL (-o run.svg writes a flamegraph):"
show "$probing" "$pid" profile --seconds 3
echo
echo "demo: the training script kept training throughout; its own output meanwhile:"
tail -n 3 "$log"
show "$probing" "$pid" eval "print(f'step {step}: loss {last_loss:.4f}, lr {optimizer.param_groups[0][\"lr\"]}')"
