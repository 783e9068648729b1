"""GET /metrics, Prometheus' text format, on a real training loop: checked by Debian's `promtool`
and scraped by a real Prometheus (Debian's, unpacked into tests/tools by
`scripts/install-deps.sh --test`), whose HTTP API must then return the step time."""
import json
import os
import re
import socket
import subprocess
import time
import urllib.parse
import urllib.request

import pytest

from conftest import REPO, clean_env, http_request, torch_interpreter_params

TOOLS = os.path.join(REPO, "tests", "tools", "usr", "bin")
READ_TOKEN = "metrics-read-token"


def tool(name):
    path = os.path.join(TOOLS, name)
    if not os.access(path, os.X_OK):
        if os.environ.get("PROBING_BROWSER_REQUIRED") == "1":
            pytest.fail("%s is missing: scripts/install-deps.sh --test unpacks it" % path)
        pytest.skip("%s is missing (scripts/install-deps.sh --test unpacks it)" % path)
    return path


def metrics_of(pid):
    r = http_request(pid, "GET", "/metrics")
    assert r.status == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4"), r
    return r.body.decode() if isinstance(r.body, bytes) else r.body


def value(text, name, **labels):
    """The value of the sample `name` whose labels include `labels`."""
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(3) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            return float(m.group(4))
    raise AssertionError("no sample %s%s in:\n%s" % (name, labels, text[:3000]))


def wait_for_steps(pid, steps=150, timeout=60):
    deadline = time.monotonic() + timeout
    while True:
        text = metrics_of(pid)
        try:
            if value(text, "probing_torch_step_seconds_count") >= 100 and value(text, "probing_torch_step") >= steps:
                return text
        except AssertionError:
            pass
        assert time.monotonic() < deadline, text[-3000:]
        time.sleep(0.3)


@pytest.mark.parametrize("interp", torch_interpreter_params())
def test_metrics_are_prometheus_text_with_the_training_loop(interp, target_factory):
    t = target_factory("torch_train.py", interp, env={"RANK": "3"})
    text = wait_for_steps(t.pid)
    promtool = subprocess.run([tool("promtool"), "check", "metrics"], input=text, capture_output=True, text=True,
                              timeout=30)
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr
    host = socket.gethostname()
    # In a job (RANK set), every sample says which rank and host it comes from.
    samples = [l for l in text.splitlines() if l and not l.startswith("#")]
    assert samples and all('rank="3",host="%s"' % host in l for l in samples), samples[:5]
    assert value(text, "process_resident_memory_bytes") > 10 << 20
    assert value(text, "process_cpu_seconds_total") > 0
    assert value(text, "probing_sampler_running") == 1
    assert re.search(r'python_info\{[^}]*version="%s\.\d+"\} 1$' % re.escape(interp.version), text, re.M), text
    # The step time is the loop's: quantiles ordered, the rate its inverse on average.
    p50, p99 = (value(text, "probing_torch_step_seconds", quantile=q) for q in ("0.5", "0.99"))
    assert 0 < p50 <= p99, (p50, p99)
    mean = value(text, "probing_torch_step_seconds_sum") / value(text, "probing_torch_step_seconds_count")
    assert abs(value(text, "probing_torch_steps_per_second") * mean - 1) < 1e-6
    assert value(text, "probing_torch_module_seconds", module="Linear", stage="forward") > 0
    assert value(text, "probing_table_rows_appended_total", table="python.torch_trace") > 0
    # The step agrees with the table it is read from.
    r = http_request(t.pid, "POST", "/query", {"sql": "SELECT max(step) FROM python.torch_trace"})
    assert r.json()["rows"][0][0] >= value(text, "probing_torch_step")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def prometheus_query(port, query):
    url = "http://127.0.0.1:%d/api/v1/query?%s" % (port, urllib.parse.urlencode({"query": query}))
    with urllib.request.urlopen(url, timeout=5) as r:
        reply = json.loads(r.read())
    assert reply["status"] == "success", reply
    return reply["data"]["result"]


@pytest.mark.parametrize("interp", torch_interpreter_params()[:1])
def test_a_real_prometheus_scrapes_the_step_time(interp, target_factory, tmp_path):
    # Over TCP with the read token, as a Prometheus on another machine would scrape a rank.
    t = target_factory("torch_train.py", interp,
                       env={"PROBING_PORT": "0", "PROBING_TOKEN": "full-token", "PROBING_READ_TOKEN": READ_TOKEN,
                            "RANK": "0"})
    i = t.err.wait_for(lambda l: "Probing server listening on" in l, 10)
    assert i is not None, t.stderr_lines()[-5:]
    agent = re.search(r"listening on (\S+)", t.stderr_lines()[i]).group(1)
    wait_for_steps(t.pid)
    config = tmp_path / "prometheus.yml"
    config.write_text("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
                      "scrape_configs:\n  - job_name: trainer\n    authorization:\n      credentials: %s\n"
                      "    static_configs:\n      - targets: ['%s']\n" % (READ_TOKEN, agent))
    port = free_port()
    prom = subprocess.Popen([tool("prometheus"), "--config.file=%s" % config, "--storage.tsdb.path=%s" % (tmp_path / "data"),
                             "--web.listen-address=127.0.0.1:%d" % port],
                            stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "w"), env=clean_env())
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                up = prometheus_query(port, 'up{job="trainer"}')
                steps = prometheus_query(port, "probing_torch_step_seconds_count")
                if up and up[0]["value"][1] == "1" and steps:
                    break
            except OSError:
                pass  # not listening yet
            assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()[-2000:]
            time.sleep(0.5)
        assert steps[0]["metric"]["rank"] == "0" and float(steps[0]["value"][1]) > 0, steps
        p50 = prometheus_query(port, 'probing_torch_step_seconds{quantile="0.5"}')
        assert p50 and float(p50[0]["value"][1]) > 0, p50
    finally:
        prom.terminate()
        prom.wait(30)


def test_metrics_answer_while_a_thread_holds_the_gil(target_factory):
    # Read from /proc and the recorded tables only: a process whose GIL is held in a C call (a
    # wedged one) is still scraped, at once.
    from conftest import INTERPRETERS
    interp = next(i for i in INTERPRETERS if not i.skip_reason)
    t = target_factory("gil_holder.py", interp, args=["30"])
    t.write("hold\n")
    t.wait_line(lambda l: l.startswith("holding "))
    time.sleep(0.5)
    start = time.monotonic()
    text = metrics_of(t.pid)
    assert time.monotonic() - start < 2, time.monotonic() - start
    assert value(text, "process_threads") >= 2 and value(text, "probing_sampler_running") == 1, text[:2000]
