"""What `probing profile` and `probing export` write, opened in the tools people open it with, in
headless Chromium (tests/browser/check.mjs drives it): the speedscope JSON and the Chrome traces in
speedscope's own page, the SVG flamegraph with its search and zoom. The tool's numbers are compared with the
file's: a file that loads but shows other totals, or slices nested wrongly, fails.

`make test` installs Chromium, Node and the two npm packages (scripts/install-deps.sh) and sets
PROBING_BROWSER_REQUIRED=1, so there a missing browser fails; elsewhere it is a skip that says what
is missing. The formats are the CLI's, the same on every interpreter: one target on this host's
Python is enough (the version matrix has no browser in its chroots)."""
import collections
import json
import os
import shutil
import subprocess
import time

import pytest

from conftest import (BROWSER_DIR, CHROMIUM, INTERPRETERS, PYPKG, REPO, Target, clean_env, require_browser, run_cli,
                      torch_importable)



@pytest.fixture(scope="module", autouse=True)
def browser_present():
    if os.environ.get("PROBING_E2E_INTERPRETERS"):
        pytest.skip("the formats are the CLI's, the same on every interpreter: checked once, on the host's")
    require_browser("playwright-core", "speedscope")


def open_in_browser(kind, path, *extra):
    p = subprocess.run(["node", os.path.join(BROWSER_DIR, "check.mjs"), kind, str(path), *extra],
                       capture_output=True, text=True, timeout=120, env=clean_env({"CHROMIUM": CHROMIUM}))
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return json.loads(p.stdout)


def close(shown, expected):
    """speedscope rounds what it shows to three significant digits or to 0.01 ms."""
    return abs(shown - expected) <= 0.006 * abs(expected) + 1e-4


@pytest.fixture(scope="module")
def shares_target():
    """shares.py (known shares of the main thread's time, a thread waiting on a queue) under the
    first of this host's interpreters."""
    usable = [i for i in INTERPRETERS if not i.skip_reason]
    if not usable:
        pytest.skip("no interpreter to run the target: " + "; ".join(i.skip_reason for i in INTERPRETERS))
    t = Target("shares.py", usable[0])
    t.start()
    yield t
    t.kill()


def sandwich_of(profiles, title):
    matches = [p for p in profiles if p["title"] == title]
    assert len(matches) == 1, (title, [p["title"] for p in profiles])
    return matches[0]["rows"]


def test_speedscope_shows_the_speedscope_file_as_written(shares_target, tmp_path):
    out = tmp_path / "run.json"
    rc, _, err = run_cli(shares_target.pid, "profile", "--seconds", "3", "--hz", "200", "--idle", "-o", out,
                         timeout=40)
    assert rc == 0, err
    doc = json.loads(out.read_text())
    shown = open_in_browser("speedscope", out)["profiles"]
    assert sorted(p["title"] for p in shown) == sorted(p["name"] for p in doc["profiles"])
    frames = doc["shared"]["frames"]
    for profile in doc["profiles"]:
        # Each frame's total and self time as the file has it, and as speedscope shows it.
        total, own = collections.Counter(), collections.Counter()
        for stack, weight in zip(profile["samples"], profile["weights"]):
            if not stack:  # a thread with no Python frame at that moment (starting, ending): no frame to count
                continue
            for i in set(stack):
                total[i] += weight
            own[stack[-1]] += weight
        expected = sorted((frames[i]["name"], round(total[i], 6), round(own[i], 6)) for i in total)
        rows = sorted((r["name"], r["total"], r["self"]) for r in sandwich_of(shown, profile["name"]))
        assert [r[0] for r in rows] == [e[0] for e in expected], (rows, expected)
        for (name, t_shown, s_shown), (_, t_file, s_file) in zip(rows, expected):
            assert close(t_shown, t_file) and close(s_shown, s_file), (name, t_shown, t_file, s_shown, s_file)


def test_speedscope_nests_the_chrome_trace_as_the_stacks_were(shares_target, tmp_path):
    out = tmp_path / "run.trace.json"
    rc, _, err = run_cli(shares_target.pid, "profile", "--seconds", "3", "--hz", "200", "--idle", "-o", out,
                         timeout=40)
    assert rc == 0, err
    events = json.loads(out.read_text())["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in events if e["name"] == "thread_name"}
    shown = open_in_browser("speedscope", out)["profiles"]
    main_tid = next(tid for tid, n in names.items() if n == "MainThread")
    rows = sandwich_of(shown, "python (pid %d), MainThread (tid %d)" % (shares_target.pid, main_tid))
    by_name = {}
    for r in rows:  # speedscope names a slice "name {args}"
        name = r["name"].split(" {", 1)[0]
        prev = by_name.get(name, {"total": 0, "self": 0})
        by_name[name] = {"total": prev["total"] + r["total"], "self": prev["self"] + r["self"]}
    slices = [e for e in events if e["ph"] == "X" and e["tid"] == main_tid]
    assert set(by_name) == {e["name"] for e in slices}
    # The main thread's outermost slices cover the trace; speedscope's root total is theirs.
    roots = sum(e["dur"] for e in slices if e["name"] == "<module>") / 1e6
    assert close(by_name["<module>"]["total"], roots), (by_name["<module>"], roots)
    # Nested as sampled: the time is the leaves' (spin_for, the sleep in wait_c), not the callers'.
    assert by_name["spin_for"]["self"] >= 0.5 * roots, by_name
    for caller in ("<module>", "main", "step", "busy_a", "busy_b"):
        assert by_name[caller]["self"] <= 0.05 * roots, (caller, by_name)


def test_the_svg_searches_and_zooms_in_chromium(shares_target, tmp_path):
    out = tmp_path / "run.svg"
    rc, _, err = run_cli(shares_target.pid, "profile", "--seconds", "3", "--hz", "200", "-o", out, timeout=40)
    assert rc == 0, err
    got = open_in_browser("svg", out, "^busy_a ")
    assert got["dialogs"] == ["Search (a regular expression)"], got
    assert got["frames"] >= 8 and got["total"] >= 300, got
    # Without --idle the main thread's sleep is left out: busy_a is 50 of the 80 points on CPU.
    matched = float(got["matched"].removeprefix("Matched: ").removesuffix("%"))
    assert abs(matched - 62.5) <= 5, got
    assert got["highlighted"] >= 1, got
    zoom = got["zoom"]
    assert zoom["label"].startswith("busy_a (") and zoom["width"] == 1180 and zoom["unzoom_shown"], zoom
    assert zoom["hidden"] >= 1, zoom  # busy_b's frames are out of the zoomed view
    assert got["after_escape"] == {"matched": "", "hidden": 0}, got


def test_speedscope_opens_the_exported_steps(tmp_path):
    # `probing export`'s Chrome JSON: speedscope shows the forward track's slices, nested, with the
    # file's durations.
    usable = [i for i in INTERPRETERS if not i.skip_reason and torch_importable(i)]
    if not usable:
        pytest.skip("no interpreter of this host imports torch")
    t = Target("torch_models.py", usable[0], args=["mlp"], env={"PYTHONPATH": PYPKG}, ready_timeout=60)
    t.start()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # five steps traced
            rc, text, _ = run_cli(t.pid, "query", "--format", "json", "SELECT max(step) AS s FROM python.torch_trace")
            if rc == 0 and (json.loads(text)[0]["s"] or 0) >= 5:
                break
            time.sleep(0.2)
        out = tmp_path / "steps.json"
        rc, _, err = run_cli(t.pid, "export", "--last", "5", "-o", out, timeout=60)
        assert rc == 0, err
    finally:
        t.kill()
    events = json.loads(out.read_text())["traceEvents"]
    tid = next(e["tid"] for e in events if e["name"] == "thread_name" and e["args"]["name"].startswith("torch: forward"))
    slices = [e for e in events if e["ph"] == "X" and e["tid"] == tid]
    shown = open_in_browser("speedscope", out)["profiles"]
    (rows,) = [p["rows"] for p in shown if "torch: forward" in p["title"]]
    by_name = collections.defaultdict(lambda: {"total": 0, "self": 0})
    for r in rows:  # speedscope names a slice "name {args}"
        name = r["name"].split(" {", 1)[0]
        by_name[name]["total"] += r["total"]
        by_name[name]["self"] += r["self"]
    assert set(by_name) == {e["name"] for e in slices}, (sorted(by_name), rows[:3])
    for name in ("MLP", "SGD", "encoder.0"):
        expected = sum(e["dur"] for e in slices if e["name"] == name) / 1e6
        assert close(by_name[name]["total"], expected), (name, by_name[name], expected)
    # Nested as called: the model's own time excludes its children's.
    assert by_name["MLP"]["self"] < by_name["MLP"]["total"] - by_name["encoder"]["total"] * 0.9, by_name
