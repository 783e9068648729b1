"""`probing PID query` and `probing PID config` on real processes: golden queries for every table
(tests/e2e/sql/NAME.sql with its expected CSV in NAME.csv), bad SQL, huge and runaway results,
the read-only rule, settings, recorded tables from probing.table, concurrent clients, a held
GIL, and the target's own sqlite3 beside the agent's."""
import concurrent.futures
import glob
import json
import os
import subprocess
import time

import pytest

from conftest import (LIBPROBING, PYPKG, TARGETS, Target, clean_env, eval_ok, http_request, interpreter_params,
                      marker_line, run_cli, torch_interpreter_params)

SQL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "sql")
GOLDEN = sorted(os.path.splitext(os.path.basename(p))[0] for p in glob.glob(os.path.join(SQL_DIR, "*.sql")))
TARGET_ENV = {"SQL_GOLDEN": "hello golden", "SQL_GOLDEN_TOKEN": "do-not-show", "SQL_GOLDEN_SIGNING_KEY": "no",
              "SQL_GOLDEN_URL": "postgres://user:pw@db.internal:5432/x", "PROBING_METRICS_INTERVAL_S": "0.2"}


@pytest.fixture(scope="module", params=interpreter_params())
def sql_target(request):
    """One target for the module: the golden queries only read, the other tests restore what
    they change."""
    with Target("sql_target.py", request.param, mode="import", env=TARGET_ENV) as t:
        yield t


def query(pid, sql, fmt="csv", timeout=30):
    return run_cli(pid, "query", "--format", fmt, sql, timeout=timeout)


def query_json(pid, sql):
    rc, out, err = query(pid, sql, "json")
    assert rc == 0, (sql, rc, out, err)
    return json.loads(out)


def substitute(text, t):
    values = {"pid": str(t.pid), "targets": TARGETS}
    for marker in ("SQL_LEAF_LINE", "SQL_MIDDLE_LINE", "SQL_MODULE_LINE"):
        values[marker] = str(marker_line("sql_target.py", marker))
    for k, v in values.items():
        text = text.replace("{%s}" % k, v)
    return text


@pytest.mark.parametrize("name", GOLDEN)
def test_golden(sql_target, name):
    with open(os.path.join(SQL_DIR, name + ".sql")) as f:
        sql = substitute(f.read(), sql_target)
    with open(os.path.join(SQL_DIR, name + ".csv")) as f:
        expected = substitute(f.read(), sql_target)
    # The target prints 'ready' a statement before it parks, and the sampler needs a moment for
    # its first row: ask again until the answer settles.
    deadline = time.monotonic() + 10
    while True:
        rc, out, err = query(sql_target.pid, sql)
        if (rc == 0 and out == expected) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert rc == 0, err
    assert out == expected, "%s\n--- got ---\n%s--- expected ---\n%s" % (name, out, expected)


def test_table_format_for_people(sql_target):
    rc, out, err = run_cli(sql_target.pid, "query", "SELECT step, phase FROM python.losses WHERE step < 2 ORDER BY step")
    assert rc == 0, err
    assert out.splitlines() == ["step | phase", "-----+------", "   0 | eval", "   1 | train", "(2 rows)"]


def test_sql_errors_show_sqlite_message(sql_target):
    rc, out, err = query(sql_target.pid, "SELEC func FROM python.backtrace")
    assert rc == 1 and 'near "SELEC": syntax error' in err, (rc, err)
    rc, out, err = query(sql_target.pid, "SELECT * FROM python.no_such_table")
    assert rc == 1 and "no such table: python.no_such_table" in err, (rc, err)
    rc, out, err = query(sql_target.pid, "SELECT no_such_column FROM process.info")
    assert rc == 1 and "no such column: no_such_column" in err, (rc, err)
    r = http_request(sql_target.pid, "POST", "/query", {"sql": "SELEC"})
    assert r.status == 400 and r.json()["error"]["type"] == "SQLError", r
    r = http_request(sql_target.pid, "POST", "/query", {"query": "SELECT 1"})
    assert r.status == 400 and r.json()["error"]["type"] == "BadRequest", r


@pytest.mark.parametrize("sql", ["DROP TABLE python.losses", "DELETE FROM python.losses",
                                 "INSERT INTO python.losses VALUES (1, 2, 'x')", "CREATE TABLE t(x)",
                                 "ATTACH '/tmp/probing-e2e-attach.db' AS x", "PRAGMA writable_schema = 1"])
def test_sql_is_read_only(sql_target, sql):
    rc, out, err = query(sql_target.pid, sql)
    assert rc == 1 and "read-only" in err, (rc, out, err)
    assert not os.path.exists("/tmp/probing-e2e-attach.db")
    assert query_json(sql_target.pid, "SELECT count(*) AS n FROM python.losses") == [{"n": 10}]


def test_oversized_statements_and_values_are_errors_not_crashes(sql_target):
    pid = sql_target.pid
    r = http_request(pid, "POST", "/query", {"sql": "SET a = " + "x" * 200000})  # not a SET: too long
    assert r.status == 400 and r.json()["error"]["type"] == "SQLError", r
    r = http_request(pid, "POST", "/query", {"sql": " " * 200000 + "SELECT 1"})
    assert r.status == 200 and r.json()["rows"] == [[1]], r
    r = http_request(pid, "POST", "/query", {"sql": "SELECT length(randomblob(100000000))"}, timeout=30)
    assert r.status == 400 and "too big" in r.json()["error"]["message"], r
    assert eval_ok(pid, "print(1)") == "1\n"


def test_huge_result_is_cut_with_a_notice(sql_target):
    sql = "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c LIMIT 1000000) SELECT x FROM c"
    rc, out, err = query(sql_target.pid, sql, "json")
    assert rc == 0, err
    rows = json.loads(out)
    assert len(rows) == 10000 and rows[-1] == {"x": 10000}
    assert "the result was cut at 10000 rows (query.max_rows)" in err
    r = http_request(sql_target.pid, "POST", "/query", {"sql": sql}).json()
    assert r["truncated"] is True and len(r["rows"]) == 10000


def test_runaway_query_is_stopped_and_the_target_lives(sql_target):
    pid = sql_target.pid
    rc, out, err = query(pid, "SET query.timeout_s = 0.5")
    assert rc == 0, err
    try:
        start = time.monotonic()
        rc, out, err = query(pid, "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c) SELECT max(x) FROM c")
        took = time.monotonic() - start
        assert rc == 1 and "query.timeout_s" in err, (rc, err)
        assert took < 5, took
    finally:
        assert query(pid, "SET query.timeout_s = 10")[0] == 0
    assert eval_ok(pid, "print(1 + 1)") == "2\n"


def test_set_and_config(sql_target):
    pid = sql_target.pid
    rc, out, err = query(pid, "SET eval.timeout_s = 12")
    assert rc == 0 and out == "name,value\neval.timeout_s,12\n", (out, err)
    assert err == "", err  # the table says it; no note repeats it
    rc, out, err = run_cli(pid, "config", "eval.timeout_s")
    assert (rc, out) == (0, "12\n"), err
    rc, out, err = run_cli(pid, "config", "eval.timeout_s=30")
    assert (rc, out) == (0, "eval.timeout_s = 30\n"), err
    assert query_json(pid, "SELECT value FROM information_schema.df_settings WHERE name = 'eval.timeout_s'") == [{"value": "30"}]
    rc, out, err = run_cli(pid, "config")
    assert rc == 0 and "query.max_rows" in out and "Most rows one query returns" in out, out
    rc, out, err = run_cli(pid, "config", "--json")
    names = [s["name"] for s in json.loads(out)["settings"]]
    assert "store.max_rows" in names and names == sorted(names)

    rc, out, err = query(pid, "SET no.such_setting = 1")
    assert rc == 1 and "unknown setting 'no.such_setting'" in err, err
    rc, out, err = query(pid, "SET eval.timeout_s = soon")
    assert rc == 1 and "expected a number" in err, err
    rc, out, err = run_cli(pid, "config", "no.such_setting")
    assert rc == 1 and "unknown setting" in err, err
    rc, out, err = run_cli(pid, "config", "query.max_rows=-5")
    assert rc == 1 and "must be > 0" in err, err
    # What the agent reads at start is refused at run time, saying how to set it; nothing changes.
    rc, out, err = query(pid, "SET python.max_workers = 8")
    assert rc == 1 and "python.max_workers is read at start" in err and "PROBING_PYTHON_MAX_WORKERS=8" in err, err
    rc, out, err = run_cli(pid, "config", "store.max_rows=5")
    assert rc == 1 and "read at start" in err and "inject -D store.max_rows=5" in err, err
    assert query_json(pid, "SELECT value FROM information_schema.df_settings WHERE name IN "
                           "('python.max_workers', 'store.max_rows') ORDER BY name") == [{"value": "4"}, {"value": "4000000"}]

    r = http_request(pid, "PUT", "/config/query.max_rows", {"value": 500})
    assert r.status == 200 and r.json()["value"] == "500", r
    assert http_request(pid, "GET", "/config/query.max_rows").json()["value"] == "500"
    assert http_request(pid, "PUT", "/config/query.max_rows", {"value": "10000"}).status == 200
    assert http_request(pid, "GET", "/config/nope").status == 404
    assert http_request(pid, "POST", "/config/query.max_rows", {"value": "1"}).status == 405


def test_concurrent_clients_while_the_target_runs(sql_target):
    pid = sql_target.pid
    queries = {
        "SELECT count(*) AS n FROM python.losses": [{"n": 10}],
        "SELECT count(*) AS n FROM python.objects WHERE type = 'GoldenThing'": [{"n": 1}],
        "SELECT name FROM process.env WHERE name = 'SQL_GOLDEN'": [{"name": "SQL_GOLDEN"}],
        # Not "depth = 0": while a line comes in, the innermost frame is the stdin decoder's.
        "SELECT count(*) AS n FROM python.backtrace WHERE func = 'leaf'": [{"n": 1}],
    }

    def one(sql):
        r = http_request(pid, "POST", "/query", {"sql": sql}, timeout=30)
        assert r.status == 200, r
        body = r.json()
        return sql, [dict(zip(body["columns"], row)) for row in body["rows"]]

    before = sqlite_rounds(sql_target)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        work = [pool.submit(one, sql) for sql in list(queries) * 10]
        for _ in range(5):  # the target keeps running meanwhile
            sqlite_rounds(sql_target)
        results = [w.result() for w in work]
    wrong = [(sql, rows) for sql, rows in results if rows != queries[sql]]
    assert not wrong, wrong
    assert sqlite_rounds(sql_target) >= before + 6


def sqlite_rounds(t):
    """One round of the target's own sqlite3 work; returns its count."""
    n = len(t.stdout_lines())
    t.write("go\n")
    line = t.wait_line(lambda l: l.startswith("rounds "), timeout=10, start=n)
    assert line is not None, t.stdout_lines()[-5:]
    return int(t.stdout_lines()[line].split()[1])


def test_targets_own_sqlite3_is_untouched(sql_target):
    # The agent's SQLite is its own static copy with hidden symbols: the target's sqlite3 module
    # keeps the system library, and both work at once.
    first = sqlite_rounds(sql_target)
    assert query_json(sql_target.pid, "SELECT sqlite_version() AS v")[0]["v"].startswith("3.")
    assert sqlite_rounds(sql_target) == first + 1
    out = eval_ok(sql_target.pid, "print(sqlite3.sqlite_version, sqlite3.connect(':memory:').execute('SELECT 41 + 1').fetchone()[0])")
    assert out.split()[1] == "42", out
    exported = subprocess.run(["nm", "-D", "--defined-only", LIBPROBING], capture_output=True, text=True).stdout
    assert "sqlite3_" not in exported, [l for l in exported.splitlines() if "sqlite3_" in l][:5]


def test_gil_held_tables_still_answer(target_factory, interp):
    t = target_factory("gil_holder.py", interp)
    t.write("hold\n")
    assert t.wait_line(lambda l: l.startswith("holding ")) is not None
    start = time.monotonic()
    rc, out, err = query(t.pid, "SELECT func FROM python.backtrace WHERE depth = 0", "json", timeout=20)
    took = time.monotonic() - start
    rc2, out2, err2 = query(t.pid, "SELECT pid FROM process.info", "json")
    assert rc == 0, err
    assert took < 2.5, took
    assert "without the GIL" in err, err
    assert json.loads(out), out
    assert rc2 == 0 and json.loads(out2) == [{"pid": t.pid}]


RECORDER = r"""
import sys
import probing
t = probing.table("rec", max_rows=20000)
same = probing.table("rec") is t
for i in range(50000):
    t.append({"step": i, "flag": i % 2 == 0, "value": i * 0.5, "label": "x%d" % (i % 3), "none": None})
class F:
    def __float__(self): return 2.5
t.append({"step": 50000, "value": F()})
errors = []
for bad in ([1, 2], {"nope": 1}, {"step": [1]}, {"step": 2 ** 70}):
    try:
        t.append(bad)
    except (TypeError, ValueError, OverflowError) as e:
        errors.append(type(e).__name__ + ": " + str(e))
for name in ("backtrace", "9lives", "a-b", ""):
    try:
        probing.table(name).append({"x": 1})
    except ValueError as e:
        errors.append("ValueError: " + str(e))
try:
    probing.table("torch_trace")  # refused when made, not at the first append
except ValueError as e:
    errors.append("ValueError: " + str(e))
import json
print(json.dumps({"same": same, "errors": errors}), flush=True)
print("ready", flush=True)
sys.stdin.readline()
"""


def test_recorded_tables(tmp_path, interp):
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    with Target(str(script), interp, mode="import") as t:
        report = json.loads(t.stdout_lines()[0])
        assert report["same"] is True
        errors = report["errors"]
        assert len(errors) == 9, errors
        assert errors[0].startswith("TypeError: probing.table('rec').append takes a dict"), errors[0]
        assert "has no column 'nope'" in errors[1] and "step, flag, value, label, none" in errors[1], errors[1]
        assert errors[2].startswith("TypeError:") and "'step'" in errors[2], errors[2]
        assert errors[3].startswith("OverflowError"), errors[3]
        assert "python.backtrace is a built-in table" in errors[4], errors[4]
        assert all("is not a table name" in e for e in errors[5:8]), errors[5:8]
        assert "python.torch_trace is a built-in table" in errors[8], errors[8]

        rows = query_json(t.pid, "SELECT count(*) AS n, max(step) AS last, min(step) AS first FROM python.rec")
        assert rows[0]["last"] == 50000 and rows[0]["n"] <= 20000 and rows[0]["first"] == 50001 - rows[0]["n"], rows
        kept = query_json(t.pid, "SELECT rows, dropped_rows FROM information_schema.tables WHERE table_name = 'rec'")
        assert kept[0]["rows"] == rows[0]["n"] and kept[0]["dropped_rows"] == 50001 - rows[0]["n"], kept
        last = query_json(t.pid, "SELECT * FROM python.rec ORDER BY step DESC LIMIT 2")
        assert last == [{"step": 50000, "flag": None, "value": 2.5, "label": None, "none": None},
                        {"step": 49999, "flag": 0, "value": 24999.5, "label": "x1", "none": None}], last
        types = query_json(t.pid, "SELECT column_name, type FROM information_schema.columns WHERE table_name = 'rec'")
        assert [c["type"] for c in types] == ["INTEGER", "INTEGER", "REAL", "TEXT", "TEXT"], types


NO_AGENT = r"""
import warnings
warnings.simplefilter("always")
import probing
with warnings.catch_warnings(record=True) as caught:
    t = probing.table("losses")
    t.append({"step": 1, "loss": 0.5})
    with probing.span("step", n=1):
        probing.event("checkpoint")

    @probing.span("decorated")
    def f(x):
        return x + 1

    assert f(1) == 2
    probing.table("other").append({"x": 1})
print(len(caught), caught[0].category.__name__ if caught else "-", str(caught[0].message) if caught else "")
"""


@pytest.mark.parametrize("interp", interpreter_params())
def test_recording_without_an_agent_is_a_no_op(tmp_path, interp):
    # No agent library to load: tables, spans and events record nothing, never raise, warn once.
    script = tmp_path / "no_agent.py"
    script.write_text(NO_AGENT)
    env = clean_env({"PYTHONPATH": PYPKG, "PROBING_LIBRARY": str(tmp_path / "missing" / "libprobing.so")})
    p = subprocess.run([interp.path, str(script)], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    count, category, message = p.stdout.strip().split(" ", 2)
    assert (count, category) == ("1", "RuntimeWarning"), p.stdout
    assert "recording is off" in message and "missing/libprobing.so" in message, message


def test_objects_count_leaves_the_collector_as_it_was(sql_target):
    # The count turns automatic collection off while it holds the objects; the target's own
    # setting is what remains afterwards, on or off.
    pid = sql_target.pid
    assert query_json(pid, "SELECT count(*) AS n FROM python.objects")[0]["n"] > 10
    assert eval_ok(pid, "import gc; gc.isenabled()") == "True\n"
    eval_ok(pid, "gc.disable()")
    assert query_json(pid, "SELECT sum(size_bytes) > 0 AS sized FROM python.objects") == [{"sized": 1}]
    assert eval_ok(pid, "gc.isenabled()") == "False\n"
    eval_ok(pid, "gc.enable()")


def test_gil_budget_is_shared_by_every_scan_of_a_query(sql_target):
    # The census of python.objects and the reprs of locals hold the GIL for as long as the heap
    # makes them: one query's scans of them, however many, hold it query.gil_budget_s in all.
    pid = sql_target.pid
    eval_ok(pid, "import builtins; builtins._budget_heap = [[] for _ in range(1_500_000)]")

    def run(sql):
        r = http_request(pid, "POST", "/query", {"sql": sql})
        assert r.status == 200, r
        return r.json()

    cut_short = ("(what was left of query.gil_budget_s)", "was spent by its earlier scans; no objects were counted")
    try:
        # Each scan alone counts 1.5 M objects (40-120 ms here): three take 200 ms without a shared budget.
        whole = run("SELECT (SELECT sum(count) FROM python.objects) >= 1500000")
        assert whole["rows"] == [[1]] and not whole["notices"], whole
        # Cut short, a query takes less than the one whole scan did (under load, both slow down).
        bound = max(100, whole["elapsed_ms"])
        run("SET query.gil_budget_s = 0.02")
        r = run("SELECT (SELECT count(*) FROM python.objects), (SELECT sum(count) FROM python.objects), "
                "(SELECT sum(size_bytes) FROM python.objects), (SELECT count(locals) FROM python.backtrace)")
        notes = "\n".join(r["notices"])
        assert any(note in notes for note in cut_short), notes
        assert "was spent by its earlier scans; locals are left out" in notes, notes
        assert r["rows"][0][3] == 0, r
        assert r["elapsed_ms"] < bound, (r, bound)
        # A self-join whose sides read different columns: two scans, one budget.
        r = run("SELECT sum(a.count), sum(b.size_bytes) FROM python.objects a "
                "JOIN python.objects b ON a.type = b.type AND a.module = b.module")
        assert any(note in "\n".join(r["notices"]) for note in cut_short), r
        assert r["elapsed_ms"] < bound, (r, bound)
    finally:
        run("SET query.gil_budget_s = 1")
        eval_ok(pid, "del builtins._budget_heap")


@pytest.mark.parametrize("interp", torch_interpreter_params())
def test_objects_are_not_counted_during_a_backward_pass(interp, target_factory):
    # A backward pass frees tensors from C++ without the GIL: a census holding references to them
    # then would make PyTorch warn on the target's stderr and stub the tensors out. Queried
    # during training, python.objects answers between backward passes or says why it did not.
    t = target_factory("torch_train.py", interp)
    answered = refused = 0
    for _ in range(30):
        rc, out, err = run_cli(t.pid, "query", "--format", "csv", "SELECT count(*) FROM python.objects", timeout=30)
        if rc == 0:
            answered += 1
            assert int(out.splitlines()[1]) > 100, out
        else:
            refused += 1
            assert "a thread is in a PyTorch backward pass" in err, err
    assert answered >= 1, (answered, refused)
    assert "Deallocating Tensor" not in "\n".join(t.stderr_lines()), t.stderr_lines()[-5:]
