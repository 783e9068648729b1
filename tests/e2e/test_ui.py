"""The web page (web/), in headless Chromium driven by tests/browser/ui_check.mjs, against a live
training target: served by the agent on its TCP port with a token, and by `probing PID ui` for a
local pid. Each page must show the target's real data; a wrong token is refused; a read token
gets no Eval page; the page says when the target is gone. Screenshots of every page go to
$PROBING_UI_SCREENSHOTS when it is set (docs/web.md shows them), else to the test's directory.

The page is the agent's and the same on every interpreter (what it shows comes from the API the
other tests check on each): it runs once, on this host's Debian Python, which has torch."""
import gzip
import http.client
import json
import os
import re
import subprocess

import pytest

from conftest import (BROWSER_DIR, CHROMIUM, DEBIAN_PYTHON, PROBING, Interpreter, Target, clean_env, require_browser,
                      start_ui, torch_importable, ui_check)

PY = Interpreter("debian", DEBIAN_PYTHON)
TOKEN = "ui-full-token-0123"
READ_TOKEN = "ui-read-token-4567"


@pytest.fixture(scope="module", autouse=True)
def only_on_the_host():
    if os.environ.get("PROBING_E2E_INTERPRETERS"):
        pytest.skip("the page is the agent's, the same on every interpreter: checked once, on the host's")
    if PY.skip_reason:
        pytest.skip(PY.skip_reason)
    if not torch_importable(PY):
        pytest.skip("the page's Torch view needs torch in %s" % PY.path)


def listening_address(t):
    i = t.err.wait_for(lambda l: "Probing server listening on" in l, 15)
    assert i is not None, t.stderr_lines()[-5:]
    host, port = re.search(r"listening on (\S+)", t.stderr_lines()[i]).group(1).rsplit(":", 1)
    return host, int(port)


@pytest.fixture(scope="module")
def served(request):
    """torch_train.py with the agent on a TCP port, a full and a read token."""
    t = Target("torch_train.py", PY, env={"PROBING_PORT": "0", "PROBING_TOKEN": TOKEN,
                                          "PROBING_READ_TOKEN": READ_TOKEN}).start()
    request.addfinalizer(t.kill)
    addr = listening_address(t)
    status, body, _ = get(addr, "/")
    if b"assets/app.js" not in body:  # scripts/build-web.sh could not run npm
        why = "the agent was built without its web page: " + re.sub(r"<[^>]+>", "", body.decode())[:300]
        if os.environ.get("PROBING_BROWSER_REQUIRED") == "1":
            pytest.fail(why)
        pytest.skip(why)
    return t, addr


def screenshots(tmp_path, name):
    where = os.environ.get("PROBING_UI_SCREENSHOTS")
    return os.path.join(os.path.abspath(where), name) if where else str(tmp_path / name)


def get(addr, path, headers=None, body=None, method=None):
    conn = http.client.HTTPConnection(*addr, timeout=10)
    try:
        conn.request(method or ("POST" if body is not None else "GET"), path,
                     body=json.dumps(body) if body is not None else None, headers=headers or {})
        r = conn.getresponse()
        return r.status, r.read(), {k.lower(): v for k, v in r.getheaders()}
    finally:
        conn.close()


def assert_pages_show_the_target(shown, out_dir):
    assert shown["errors"] == [], shown["errors"]
    o = shown["pages"]["overview"]
    assert "torch_train.py" in o["facts"]["process"]
    assert o["facts"]["Python"].startswith("3.11"), o["facts"]
    assert re.match(r"\d+\.\d+", o["facts"]["torch"]), o["facts"]
    assert "steps/s" in o["facts"]["training"], o["facts"]
    assert o["charts"] == 2 and o["settings"] >= 20, o
    s = shown["pages"]["stacks"]
    assert "<module>" in s["funcs"], s
    assert "step (global)" in s["locals"] and "model (global)" in s["locals"], s["locals"]
    q = shown["pages"]["sql"]
    assert q["error"] is None and q["columns"] == ["func", "lineno"], q
    assert q["rows"] and q["rows"][-1][0] == "<module>", q["rows"]
    assert "python.threads" in " ".join(q["completions"]) or "threads" in q["completions"], q["completions"]
    big = q["big"]
    assert big["status"].startswith("10000 rows") and big["last"] == "9999", big
    assert big["drawn"] < 100, big  # only the rows in view
    t = shown["pages"]["torch"]
    assert "Step time, ms" in t["charts"], t
    assert any(r[0] == "Linear" and r[1] == "forward" for r in t["modules"]), t["modules"]
    assert any(r[1] == "step" for r in t["modules"]), t["modules"]
    p = shown["pages"]["profile"]
    assert p["bars"][:2] == ["all", "<module>"], p["bars"][:5]
    assert "not a rank of a job" in shown["pages"]["cluster"]["text"], shown["pages"]["cluster"]
    for name in ("overview", "overview-dark", "stacks", "sql", "torch", "profile"):
        name = "ui-%s.png" % name
        assert os.path.getsize(os.path.join(out_dir, name)) > 10000, name


@pytest.fixture
def browser():
    require_browser("playwright-core")


def test_the_agents_own_page_with_its_token(served, tmp_path, browser):
    t, addr = served
    out = screenshots(tmp_path, "")
    shown = ui_check("http://127.0.0.1:%d/" % addr[1], out, "--token", TOKEN)
    assert shown.get("token_form"), "the page did not ask for the token"
    assert_pages_show_the_target(shown, out)
    assert shown["tabs"][-1] == "Eval" and "full right" in shown["header"]
    assert "from the page 42" in shown["pages"]["eval"]["output"]
    api = [r for r in shown["requests"] if "/assets/" not in r["url"] and not r["url"].endswith(":%d/" % addr[1])]
    assert api[0]["url"].endswith("/health") and not api[0]["authorization"]  # answered 401: the form
    after = api[[r["authorization"] for r in api].index(True):]
    assert len(after) > 10 and all(r["authorization"] for r in after), api
    assert not any(TOKEN in r["url"] for r in shown["requests"])


def test_a_wrong_token_is_refused_and_a_read_token_gets_no_eval(served, tmp_path, browser):
    _, addr = served
    shown = ui_check("http://127.0.0.1:%d/" % addr[1], str(tmp_path), "--token", "not-the-token")
    assert "refused" in shown.get("token_refused", ""), shown
    shown = ui_check("http://127.0.0.1:%d/" % addr[1], str(tmp_path), "--token", READ_TOKEN)
    assert shown["errors"] == [], shown["errors"]
    assert "Eval" not in shown["tabs"] and "read only" in shown["header"], shown["tabs"]
    assert shown["pages"]["sql"]["rows"], shown["pages"]["sql"]


def test_the_page_files_and_their_headers(served):
    _, addr = served
    status, body, h = get(addr, "/")
    assert status == 200 and h["content-type"].startswith("text/html")
    csp = h["content-security-policy"]
    nonce = re.search(r"'nonce-([A-Za-z0-9+/=]+)'", csp).group(1)
    assert ('<meta name="probing-csp-nonce" content="%s">' % nonce).encode() in body
    assert "script-src 'self';" in csp and "default-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe" not in csp
    assert get(addr, "/")[2]["content-security-policy"] != csp, "the nonce must change with each page"
    assert h["x-content-type-options"] == "nosniff"
    first_load = len(body)
    for asset in re.findall(rb'(?:src|href)="(assets/[^"]+)"', body):
        status, data, ah = get(addr, "/" + asset.decode(), {"Accept-Encoding": "gzip"})
        assert status == 200 and ah["content-encoding"] == "gzip", (asset, status)
        assert len(gzip.decompress(data)) > len(data)
        first_load += len(data)
        assert get(addr, "/" + asset.decode())[0] == 406  # no gzip: said, not sent raw
    print("first load: %.1f KB compressed" % (first_load / 1000))
    assert first_load < 100_000, first_load
    assert get(addr, "/assets/nothing.js", {"Accept-Encoding": "gzip"})[0] == 404
    # The API keeps its token; a request from another page is refused even with it.
    assert get(addr, "/health")[0] == 401
    auth = {"Authorization": "Bearer " + TOKEN}
    assert get(addr, "/health", dict(auth, Origin="http://evil.example"))[0] == 403
    assert get(addr, "/health", dict(auth, Origin="http://127.0.0.1:%d" % addr[1], Host="127.0.0.1:%d" % addr[1]))[0] == 200


def test_probing_ui_serves_a_local_pid_behind_its_secret(target_factory, tmp_path, browser):
    t = target_factory("torch_train.py", PY)
    ui, url = start_ui(t.pid, "ui")
    try:
        m = re.match(r"http://127\.0\.0\.1:(\d+)/#s=([0-9a-f]{32})$", url)
        assert m, url
        addr, secret = ("127.0.0.1", int(m.group(1))), m.group(2)
        shown = ui_check(url, str(tmp_path))
        assert_pages_show_the_target(shown, str(tmp_path))
        assert "#" not in shown["url_after_load"], "the secret must leave the address bar"
        api = [r for r in shown["requests"] if "/assets/" not in r["url"] and not r["url"].endswith("/")]
        assert api and all(r["secret"] and not r["authorization"] for r in api), api
        assert not any(secret in r["url"] for r in shown["requests"])
        # Without the secret, another local user's page or a rebinding name gets nothing.
        assert get(addr, "/health")[0] == 401
        assert get(addr, "/health", {"X-Probing-Ui-Secret": "0" * 32})[0] == 401
        ok = {"X-Probing-Ui-Secret": secret}
        assert get(addr, "/health", ok)[0] == 200
        assert get(addr, "/query", dict(ok, Origin="http://evil.example"), {"sql": "SELECT 1"})[0] == 403
        assert get(addr, "/health", dict(ok, Host="rebound.example:%d" % addr[1]))[0] == 403
        status, _, h = get(addr, "/")
        assert status == 200 and "nonce-" in h["content-security-policy"]
    finally:
        ui.kill()
    ui, url = start_ui(t.pid, "ui", "--read-only")
    try:
        status, body, _ = get(("127.0.0.1", int(url.split(":")[2].split("/")[0])), "/health",
                              {"X-Probing-Ui-Secret": url.split("#s=")[1]})
        assert status == 200 and json.loads(body)["right"] == "read"
    finally:
        ui.kill()


def one_page(t, tmp_path, mode):
    """What ui_check.mjs `mode` showed of target t's page under `probing PID ui`; no page errors."""
    ui, url = start_ui(t.pid, "ui")
    try:
        shown = ui_check(url, str(tmp_path), mode)
    finally:
        ui.kill()
    assert shown["errors"] == [], shown["errors"]
    return shown


def test_the_stacks_page_shows_asyncio_tasks(target_factory, tmp_path, browser):
    """targets/async_stuck.py: the tree `backtrace --tasks` prints, drawn by the page."""
    t = target_factory("async_stuck.py", PY)
    shown = one_page(t, tmp_path, "--tasks")
    main, side = shown["loops"]  # the main thread's loop first
    assert main["heading"].endswith('"MainThread" 44 tasks'), main["heading"]
    assert side["heading"].endswith('"side-loop" 2 tasks'), side["heading"]
    tasks = main["tasks"]
    assert tasks[0] == 'Task "Task-1" waiting', tasks
    assert 'awaits 40 tasks ("conn-0", "conn-1", "conn-2", ...) waiting' in tasks, tasks
    assert 'awaits Task "lock-holder" waiting' in tasks, tasks
    cycle = tasks.index("tasks that await each other (a cycle: none of them can finish):")
    assert {tasks[cycle + 1], tasks[cycle + 2]} == {'Task "ping" waiting', 'awaits Task "pong" waiting'} or \
        {tasks[cycle + 1], tasks[cycle + 2]} == {'Task "pong" waiting', 'awaits Task "ping" waiting'}, tasks
    assert tasks[cycle + 3] in ('awaits Task "ping" (shown above)', 'awaits Task "pong" (shown above)'), tasks
    assert "Lock.acquire" in main["frames"] and "handle" in main["frames"], main["frames"]


def test_the_stacks_page_says_what_a_thread_waits_for(target_factory, tmp_path, browser):
    """targets/hung.py rlock: a thread waiting for an RLock another holds, the main thread joining
    it; each thread's heading says it as `backtrace` does."""
    t = target_factory("hung.py", PY, args=["rlock"])
    shown = one_page(t, tmp_path, "--stacks")
    heads = {h.split()[0]: h for h in shown["threads"]}
    wanter = heads["rlock-wanter"]
    assert re.search(r'waiting for threading\.RLock `guard` at 0x[0-9a-f]+ \(held by thread \d+ "rlock-holder"\)',
                     wanter), wanter
    assert re.search(r'waiting for thread \d+ "rlock-wanter" to end', heads["MainThread"]), heads["MainThread"]
    assert "[object Object]" not in "".join(shown["threads"]), shown["threads"]


def test_the_page_says_when_the_target_is_gone(target_factory, tmp_path, browser):
    t = target_factory("torch_train.py", PY)
    ui, url = start_ui(t.pid, "ui")
    try:
        check = subprocess.Popen(["node", os.path.join(BROWSER_DIR, "ui_check.mjs"), url, str(tmp_path), "--gone"],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                 env=clean_env({"CHROMIUM": CHROMIUM}))
        assert json.loads(check.stdout.readline()) == {"loaded": True}
        t.kill()
        out, err = check.communicate(timeout=60)
        shown = json.loads(out.strip().splitlines()[-1])
        assert "target is gone" in shown.get("gone", ""), (shown, err[-1000:])
    finally:
        ui.kill()


def test_ui_refuses_what_it_cannot_serve():
    p = subprocess.run([PROBING, "999999999", "ui"], capture_output=True, text=True, timeout=20, env=clean_env())
    assert p.returncode != 0 and "999999999" in p.stderr, p.stderr
    p = subprocess.run([PROBING, "1", "ui", "--port", "70000"], capture_output=True, text=True, timeout=20,
                       env=clean_env())
    assert p.returncode == 2 and "--port" in p.stderr, p.stderr
