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
echo "demo: the same as a web page: probing $pid ui serves it on 127.0.0.1 and prints its URL."
ui_out=$(mktemp /tmp/probing-demo-ui.XXXXXX)
"$probing" "$pid" ui > "$ui_out" 2>/dev/null &
ui=$!
url=
for _ in $(seq 50); do
  url=$(head -n 1 "$ui_out")
  [[ -n $url ]] && break
  sleep 0.1
done
if [[ -z $url ]]; then
  echo "demo: probing ui printed no URL" >&2
  exit 1
fi
echo "  $url"
# What the page asks first, through that server, with the URL's secret as the page sends it.
health=$(curl -s -H "X-Probing-Ui-Secret: ${url##*#s=}" "${url%%#*}health" 2>/dev/null ||
  "$python" -c 'import sys, urllib.request as u
r = u.Request(sys.argv[1] + "health", headers={"X-Probing-Ui-Secret": sys.argv[2]})
print(u.urlopen(r, timeout=5).read().decode())' "${url%%#*}" "${url##*#s=}")
echo "  (it answers: $(echo "$health" | head -c 120)...)"
if [[ -t 0 && -t 1 ]]; then
  read -r -p "demo: open it in a browser on this machine (ssh -L for another); Enter goes on: " _ || true
fi
kill "$ui" 2>/dev/null
rm -f "$ui_out"
echo
echo "demo: the training script kept training throughout; its own output meanwhile:"
tail -n 3 "$log"
show "$probing" "$pid" eval "print(f'step {step}: loss {last_loss:.4f}, lr {optimizer.param_groups[0][\"lr\"]}')"

echo
echo "demo: a 4-rank data-parallel job under torchrun (gloo, CPU), every rank with an agent;"
echo "      after 5 s rank 2's data loader stops delivering, and the job stops moving:"
job_log=$(mktemp /tmp/probing-demo-job.XXXXXX)
# (scripts/torchrun.py is torchrun for Debian's PyTorch 2, built without libuv; --redirects 1
# --tee 1: PyTorch 1.13's torchrun fails on Python 3.11 with its default of 0.)
USE_LIBUV=0 setsid "$probing" launch -- "$python" scripts/torchrun.py --redirects 1 --tee 1 \
  --nproc_per_node 4 --master_port "$((29500 + RANDOM % 1000))" examples/train_ddp.py > "$job_log" 2>&1 &
job=$!
cleanup_job() {
  local rc=$?
  kill -- -"$job" 2>/dev/null
  wait "$job" 2>/dev/null || true
  rm -f "$job_log"
  (exit "$rc")
  cleanup
}
trap cleanup_job EXIT
for _ in $(seq 240); do
  [[ $(grep -c " training" "$job_log") == 4 ]] && break
  sleep 0.5
done
if [[ $(grep -c " training" "$job_log") != 4 ]]; then
  echo "demo: the job did not start:" >&2
  tail -n 20 "$job_log" >&2
  exit 1
fi
rank0=$(sed -n 's/.*rank 0 pid \([0-9]*\) training.*/\1/p' "$job_log" | head -n 1)
sleep 6
show "$probing" cluster -t "$rank0" nodes
show "$probing" cluster -t "$rank0" backtrace
show "$probing" cluster -t "$rank0" query "SELECT _rank, max(step) AS last_step, avg(duration) * 1000 AS step_ms FROM python.torch_trace WHERE stage = 'step' GROUP BY _rank"

