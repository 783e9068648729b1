"""The soak: a deterministic training run, attached with `probing PID inject`, hammered for its
whole length by concurrent clients sending every command — evals (gc.collect() among them, and
ones still running when the host exits), backtraces with locals and native frames, queries of
every table, settings toggled back and forth, idle and half-open connections — and left to exit
with requests in flight. It passes only if:

- the run prints exactly what the same run prints alone (every step's loss, bit for bit), on
  stdout and stderr, and exits with the same status (0);
- no client crashed (a CLI killed by a signal fails the soak as surely as the target);
- every kind of request was answered at least once while the target ran;
- the target's memory stayed bounded: peak RSS at most MAX_EXTRA_PEAK_MB over the run alone, and
  at most MAX_GROWTH_MB of growth between a third of the way and the end (no leak per request).

A target killed by a signal under load has its faulthandler dump (every run of the target has
PYTHONFAULTHANDLER set, the run alone too) and, where the kernel writes core files into the
working directory, every thread's native stack (gdb) printed with the failure.

`make soak` runs it (PROBING_SOAK_SECONDS, default 60, sets the length of the loaded run);
`make test` runs a short one (PROBING_SOAK_SECONDS=15) so that a plain test run finds a crash too.

Under AddressSanitizer: PROBING_SOAK_PRELOAD="$(cc -print-file-name=libasan.so):build-asan/lib/probing/libprobing.so"
starts the target with those libraries preloaded (the inject then finds the agent there), with
ASAN_OPTIONS=detect_leaks=0 (the agent leaks its objects on purpose); an ASan report changes the
run's stderr and exit status, which fails the soak. The memory bounds are not checked then.
"""
import json
import os
import glob
import random
import resource
import shutil
import socket
import subprocess
import threading
import time

import pytest

from conftest import (PROBING, TARGETS, agent_address, clean_env, interpreter_params, needs_inject,
                      wait_for_health)

pytestmark = needs_inject

SOAK_SECONDS = float(os.environ.get("PROBING_SOAK_SECONDS", "60"))
PRELOAD = os.environ.get("PROBING_SOAK_PRELOAD", "")
STEP_PAUSE_S = 0.01
CLIENTS = 4
IDLE_CONNECTIONS = 8
MAX_EXTRA_PEAK_MB = 64
MAX_GROWTH_MB = 16
# Every run of the target, alone or loaded, has faulthandler on: a crash under load then names the
# thread and its Python stack on stderr (and the loaded run dumps core where the kernel lets it).
TARGET_ENV = {"PYTHONFAULTHANDLER": "1"}

# What the clients send, each a CLI command line after `probing PID`. Chosen at random, weighted.
EVALS = [
    ["eval", "import gc; gc.collect()"],
    ["eval", "print('step', step)"],
    ["eval", "import sys; sys.stderr.write('to stderr\\n'); [i * i for i in range(1000)][-1]"],
    ["eval", "import time; time.sleep(0.3); 'slept'"],  # often still running when the host exits
    ["eval", "raise ValueError('raised on purpose')"],
]
READS = [
    ["backtrace"],
    ["backtrace", "--all", "--locals"],
    ["backtrace", "--native"],
    ["query", "SELECT name, value FROM information_schema.df_settings"],
    ["query", "SELECT count(*) FROM python.objects"],
    ["query", "SELECT type, count, size_bytes FROM python.objects ORDER BY count DESC LIMIT 5"],
    ["query", "SELECT module, stage, count(*), avg(duration) FROM python.torch_trace GROUP BY 1, 2"],
    ["query", "SELECT * FROM probing.audit ORDER BY time DESC LIMIT 5"],
    ["query", "SELECT * FROM process.metrics"],
    ["query", "SELECT names, bytes FROM python.tensors LIMIT 5"],
    ["memory"],
]
SETTINGS = [
    ["query", "SET torch.trace = off"],
    ["query", "SET torch.trace = on"],
    ["config", "torch.sample_rate=0.5"],
    ["config", "torch.sample_rate=1"],
    ["config", "metrics.interval_s=0.05"],
    ["config", "metrics.interval_s=1"],
]


def kind_of(args):
    return " ".join(args[:2]) if args[0] != "eval" else "eval " + args[1].split(";")[0][:24]


def every_table(pid):
    """A SELECT of every table the agent lists."""
    out = subprocess.run([PROBING, str(pid), "query", "--format", "json",
                          "SELECT table_schema, table_name FROM information_schema.tables"],
                         capture_output=True, text=True, timeout=30, env=clean_env())
    assert out.returncode == 0, out.stderr
    tables = ["%s.%s" % (r["table_schema"], r["table_name"]) for r in json.loads(out.stdout)]
    assert len(tables) >= 8, tables
    # python.memory_growth needs tracemalloc, which only a process started with it has.
    return [["query", "SELECT * FROM %s LIMIT 20" % t] for t in tables if t != "python.memory_growth"]


class Hammer:
    """CLIENTS threads, each going round every command (each in its own shuffled order) until the
    target exits, plus a thread that keeps IDLE_CONNECTIONS idle or half-sent connections open."""

    def __init__(self, pid, commands):
        self.pid = pid
        self.commands = commands
        self.done = threading.Event()
        self.lock = threading.Lock()
        self.answered = {}   # kind -> count of exit status 0
        self.failed = {}     # kind -> last stderr of a non-zero, non-crash exit
        self.crashes = []    # (args, returncode, stderr): a client killed by a signal
        self.threads = [threading.Thread(target=self._client, args=(i,), daemon=True) for i in range(CLIENTS)]
        self.threads.append(threading.Thread(target=self._idle, daemon=True))

    def start(self):
        for t in self.threads:
            t.start()

    def stop(self):
        self.done.set()
        for t in self.threads:
            t.join(60)

    def _client(self, seed):
        order = self.commands[:]
        random.Random(seed).shuffle(order)
        i = 0
        while not self.done.is_set():
            args = order[i % len(order)]
            i += 1
            try:
                p = subprocess.run([PROBING, str(self.pid), *args], capture_output=True, text=True, timeout=60,
                                   env=clean_env(), stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired:
                with self.lock:
                    self.crashes.append((args, "hung for 60 s", ""))
                continue
            with self.lock:
                if p.returncode < 0 or p.returncode >= 128:
                    self.crashes.append((args, p.returncode, p.stderr[-2000:]))
                elif p.returncode == 0 or (args[0] == "eval" and "raised on purpose" in p.stderr):
                    self.answered[kind_of(args)] = self.answered.get(kind_of(args), 0) + 1
                else:
                    self.failed[kind_of(args)] = p.stderr[-300:]

    def _idle(self):
        """Idle connections, and requests that stop half-way (headers, or part of a body), held
        until the agent's request timeout closes them, then opened again."""
        partial = [b"", b"GET /health HTTP/1.1\r\nHost: x\r\n",
                   b"POST /eval HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"code\": \"pri"]
        socks = []
        rng = random.Random(99)
        while not self.done.is_set():
            while len(socks) < IDLE_CONNECTIONS:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    s.connect(agent_address(self.pid))
                    s.sendall(rng.choice(partial))
                    socks.append(s)
                except OSError:
                    s.close()
                    break
            for s in socks[:]:  # drop those the agent closed
                s.setblocking(False)
                try:
                    if s.recv(4096) == b"":
                        raise OSError("closed")
                except BlockingIOError:
                    continue
                except OSError:
                    socks.remove(s)
                    s.close()
            self.done.wait(0.2)
        for s in socks:
            s.close()


def vm_rss_mb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def run_alone(python, steps):
    """(stdout, stderr, returncode) of the run with no agent and no load."""
    p = subprocess.Popen([python, os.path.join(TARGETS, "soak_train.py"), str(steps), "0"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=clean_env(TARGET_ENV))
    out, err = p.communicate(timeout=600)
    return out, err, p.returncode


def reap(proc):
    """(exit status, peak RSS in MB) once `proc` has exited, else None. Reaps it with wait4 (so
    never call proc.poll() or proc.wait() on it before this has answered)."""
    pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
    if pid != proc.pid:
        return None
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024


def wait_with_rusage(proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = reap(proc)
        if done is not None:
            return done
        time.sleep(0.05)
    return None, None


@pytest.mark.parametrize("interp", interpreter_params())
def allow_core():
    resource.setrlimit(resource.RLIMIT_CORE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))


def core_backtrace(python, directory):
    """Every thread's native stack from a core file the target left in `directory`, if the kernel
    wrote one there (core_pattern a plain name) and gdb is installed; else what to look for."""
    cores = glob.glob(os.path.join(directory, "core*"))
    if not cores:
        with open("/proc/sys/kernel/core_pattern") as f:
            return "no core file (core_pattern %r)" % f.read().strip()
    if shutil.which("gdb") is None:
        return "core file %s (no gdb to read it)" % cores[0]
    out = subprocess.run(["gdb", "-batch", "-nx", "-ex", "thread apply all bt 25", python, cores[0]],
                         capture_output=True, text=True, timeout=300)
    return "core file %s:\n%s" % (cores[0], out.stdout[-12000:])


def test_soak(interp, tmp_path):
    steps = max(200, int(SOAK_SECONDS / (STEP_PAUSE_S + 0.002)))
    alone_out, alone_err, alone_rc = run_alone(interp.path, steps)
    assert alone_rc == 0, alone_err[-2000:]

    # The same run alone once more, as the soak runs it (with the pause), for its peak RSS.
    solo = subprocess.Popen([interp.path, os.path.join(TARGETS, "soak_train.py"), "200", str(STEP_PAUSE_S)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=clean_env(TARGET_ENV))
    _, alone_peak = wait_with_rusage(solo, 120)

    script = os.path.join(TARGETS, "soak_train.py")
    env = clean_env(dict(TARGET_ENV, **({"LD_PRELOAD": PRELOAD, "ASAN_OPTIONS": "detect_leaks=0"} if PRELOAD
                                        else {})))
    proc = subprocess.Popen([interp.path, script, str(steps), str(STEP_PAUSE_S)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env, start_new_session=True, cwd=str(tmp_path),
                            preexec_fn=allow_core)
    hammer = None
    try:
        # The first two lines say which model it trains and that it is ready (flushed).
        head = proc.stdout.readline() + proc.stdout.readline()
        assert head.endswith(b"ready\n"), head
        collected = {"out": head, "err": b""}

        def reader(name, stream):
            collected[name] += stream.read()

        readers = [threading.Thread(target=reader, args=("out", proc.stdout), daemon=True),
                   threading.Thread(target=reader, args=("err", proc.stderr), daemon=True)]
        for r in readers:
            r.start()
        if PRELOAD:
            wait_for_health(proc.pid, 60)
        else:
            inj = subprocess.run([PROBING, str(proc.pid), "inject"], capture_output=True, text=True, timeout=60,
                                 env=clean_env())
            assert inj.returncode == 0, inj.stderr
        commands = EVALS * 2 + READS + SETTINGS + every_table(proc.pid)
        hammer = Hammer(proc.pid, commands)
        hammer.start()
        # RSS a third of the way in and near the end (the target's own progress is hidden in its
        # pipe buffer, so time stands in for it).
        started = time.monotonic()
        rss_early = rss_late = None
        rc = peak = None
        while time.monotonic() - started < 900:
            done = reap(proc)
            if done is not None:
                rc, peak = done
                break
            rss = vm_rss_mb(proc.pid)
            if rss is not None:
                if rss_early is None and time.monotonic() - started > SOAK_SECONDS / 3:
                    rss_early = rss
                rss_late = rss
            time.sleep(0.2)
        hammer.stop()
        for r in readers:
            r.join(30)
    finally:
        if proc.returncode is None:
            os.killpg(proc.pid, 9)
            proc.wait()
        if hammer is not None:
            hammer.done.set()

    summary = "%d requests answered (%d kinds, each at least %d times); last refusals: %s" % (
        sum(hammer.answered.values()), len(hammer.answered), min(hammer.answered.values() or [0]),
        sorted({e.strip()[:80] for e in hammer.failed.values()}))
    print("\nsoak %s: %d steps, exit %s, peak RSS %.0f MB (alone %.0f MB), RSS %.1f -> %.1f MB; %s"
          % (interp.name, steps, rc, peak or 0, alone_peak or 0, rss_early or 0, rss_late or 0, summary))
    if rc is not None and rc < 0:
        print("the target was killed by signal %d; stderr:\n%s\n%s" % (
            -rc, collected["err"][-6000:].decode(errors="replace"), core_backtrace(interp.path, str(tmp_path))))
    assert rc == alone_rc, "the target exited with %s under load, %s alone; stderr %r" % (
        rc, alone_rc, collected["err"][-2000:])
    assert not hammer.crashes, "clients crashed: %r" % hammer.crashes[:5]
    assert collected["out"] == alone_out, "the run's output differs from the run alone (%d vs %d bytes)" % (
        len(collected["out"]), len(alone_out))
    assert collected["err"] == alone_err, "stderr differs: %r" % collected["err"][-2000:]
    kinds = {kind_of(c) for c in commands}
    missing = sorted(kinds - set(hammer.answered))
    assert not missing, "never answered: %s; %s" % (missing, summary)
    if PRELOAD:
        return  # sanitizer builds use several times the memory: no bounds to check
    assert peak is not None and alone_peak is not None
    assert peak - alone_peak <= MAX_EXTRA_PEAK_MB, "peak RSS %.0f MB, alone %.0f MB" % (peak, alone_peak)
    if rss_early is not None and rss_late is not None:
        assert rss_late - rss_early <= MAX_GROWTH_MB, "RSS grew from %.0f to %.0f MB" % (rss_early, rss_late)
