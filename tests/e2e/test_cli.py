"""The CLI's own behaviour: errors, help, list."""
import json
import os
import re
import signal
import subprocess
import time

import pytest

from conftest import DEBIAN_PYTHON, PROBING, PYPKG, REPO, Target, agent_mapped, clean_env, http_request, run_cli


@pytest.fixture(scope="module")
def listed(interp):
    with Target("idle.py", interp, mode="launch") as t:
        yield t


def test_one_version_everywhere(interp, listed):
    # VERSION is the one place: the CLI (with the commit it was built from), the agent and the
    # Python package all say what it says.
    version = open(os.path.join(REPO, "VERSION")).read().strip()
    out = subprocess.run([PROBING, "--version"], capture_output=True, text=True, check=True).stdout
    commit = subprocess.run(["git", "-C", REPO, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert re.fullmatch(r"probing %s \(commit (%s(-dirty)?|unknown)\)\n" % (re.escape(version), commit or "[0-9a-f]+"), out), out
    package = subprocess.run([interp.path, "-c", "import probing; print(probing.__version__)"], capture_output=True,
                             text=True, env=dict(clean_env(), PYTHONPATH=PYPKG))
    assert package.stdout == version + "\n", package
    assert http_request(listed.pid, "GET", "/health").json()["agent_version"] == version


def test_no_such_process():
    rc, out, err = run_cli(999999999, "eval", "1")
    assert rc == 1 and out == ""
    assert "no process 999999999" in err, err


def test_python_without_agent_suggests_inject(interp):
    p = subprocess.Popen([interp.path, "-c", 'import time; print("ready", flush=True); time.sleep(60)'],
                         stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=clean_env(), start_new_session=True)
    try:
        assert p.stdout.readline() == b"ready\n"
        rc, out, err = run_cli(p.pid, "eval", "1")
        assert rc == 1 and out == ""
        assert "probing %d inject" % p.pid in err, err
        assert p.poll() is None
        assert agent_mapped(p.pid) == 0
    finally:
        p.kill()
        p.wait()


def _sleeping(cmd, env=None):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=clean_env(env),
                         start_new_session=True)
    assert p.stdout.readline() == b"ready\n"
    return p


SLEEPING_PYTHON = 'import time; print("ready", flush=True); time.sleep(60)'


def test_doctor_says_why_a_process_has_no_agent(interp):
    plain = _sleeping([interp.path, "-c", SLEEPING_PYTHON])
    asked = _sleeping([interp.path, "-S", "-c", SLEEPING_PYTHON], env={"PROBE": "1"})  # -S: no .pth runs
    native = _sleeping(["sh", "-c", "echo ready; exec sleep 60"])
    try:
        rc, out, err = run_cli("doctor", plain.pid)
        assert rc == 1, (out, err)
        assert "it runs CPython %s" % interp.version in out, out
        assert "not started with PROBE=1" in out and "probing %d inject" % plain.pid in out, out
        rc, out, err = run_cli("doctor", asked.pid)
        assert rc == 1 and "started with PROBE=1" in out and "not started" not in out, out
        if os.readlink("/proc/%d/root" % asked.pid) == "/":  # its interpreter is this machine's file
            assert "has no probing.pth: make install PYTHONS=" in out, out
        rc, out, err = run_cli(native.pid, "doctor")
        assert rc == 1 and "not a Python process" in out, out
        assert agent_mapped(plain.pid) == 0 and plain.poll() is None  # doctor touched nothing
    finally:
        for p in (plain, asked, native):
            p.kill()
            p.wait()


def test_doctor_with_an_agent_and_without_a_target(listed, interp):
    rc, out, err = run_cli("doctor", listed.pid)
    assert rc == 0 and "its agent answers on @probing-%d" % listed.pid in out, (out, err)
    rc, out, err = run_cli("doctor")
    assert rc == 0, err
    assert re.search(r"ok +agent library /.*libprobing\.so", out), out
    assert "PROBE=1 (start the agent with the program) works for:" in out, out
    assert re.search(r"(ok|no) +/\S*python3", out), out


def test_no_target_is_a_usage_error():
    rc, out, err = run_cli("eval", "1")
    assert rc == 2, "a missing target is a usage error (rc %d, stderr %r)" % (rc, err)
    assert "no target" in err, err


def test_no_arguments_prints_help():
    rc, out, err = run_cli()
    assert rc == 2
    assert "Usage:" in out and "Subcommands:" in out, (out, err)


def test_no_command_is_a_usage_error():
    rc, out, err = run_cli("1")
    assert rc == 2
    assert "give a command after the target" in err and "backtrace" in err, (out, err)


@pytest.mark.parametrize("args, meant", [(["4242", "bactrace"], "backtrace"), (["4242", "evl", "1"], "eval"),
                                         (["bactrace"], "backtrace"), (["-t", "4242", "quer", "SELECT 1"], "query")])
def test_mistyped_command_gets_a_suggestion(args, meant):
    rc, out, err = run_cli(*args)
    assert rc == 2 and "unknown command '%s'; did you mean '%s'?" % ([a for a in args if a not in ("4242", "-t")][0], meant) in err, \
        (rc, err)


def test_unknown_command_lists_the_commands():
    rc, out, err = run_cli("4242", "frobnicate")
    assert rc == 2 and "unknown command 'frobnicate'; the commands are: eval," in err, err


def test_misspelt_setting_gets_a_suggestion():
    with Target("idle.py", DEBIAN_PYTHON, mode="preload") as t:
        rc, out, err = run_cli(t.pid, "config", "torch.trac=on")
        assert rc == 1 and "unknown setting 'torch.trac'; did you mean torch.trace?" in err, err
        rc, out, err = run_cli(t.pid, "query", "SET qurey.max_rows = 5")
        assert rc == 1 and "did you mean query.max_rows?" in err, err
        rc, out, err = run_cli(t.pid, "config", "nothing.like.it=1")
        assert rc == 1 and "unknown setting 'nothing.like.it'" in err and "did you mean" not in err, err


def test_bad_target_text():
    rc, out, err = run_cli("not-a-target!", "eval", "1")
    assert rc in (1, 2)
    assert "not-a-target!" in err, err


def test_help():
    rc, out, err = run_cli("--help")
    assert rc == 0
    assert "Usage:" in out
    for command in ("eval", "list", "launch"):
        assert re.search(r"^\s+%s\s" % command, out, re.M), command


def test_eval_help():
    rc, out, err = run_cli("eval", "--help")
    assert rc == 0
    assert "Usage:" in out and "eval" in out
    assert "--timeout" in out and "--json" in out and "-f,--file" in out


def test_target_after_the_command(interp, target_factory):
    # `probing eval PID CODE` as a newcomer types it: the target may come right after the command.
    t = target_factory("idle.py", interp, mode="preload")
    assert run_cli("eval", t.pid, "1+1") == (0, "2\n", "")
    rc, out, err = run_cli("query", t.pid, "--format", "json", "SELECT 1 AS one")
    assert (rc, json.loads(out), err) == (0, [{"one": 1}], ""), (rc, out, err)
    assert run_cli("--token", "unused", "eval", t.pid, "2+2")[:2] == (0, "4\n")
    # Code that only looks like a host:port is never taken for a target.
    rc, out, err = run_cli("eval", "{1:2}[1]")
    assert rc == 2 and "no target" in err, (rc, out, err)


def test_a_stopped_process_is_said_to_be_stopped_at_once(interp, target_factory):
    # Ctrl-Z'd or SIGSTOPped: the kernel accepts the connection, but nothing answers until the
    # process runs again. The answer says so at once, not after the request's timeout.
    t = target_factory("idle.py", interp, mode="preload")
    os.kill(t.pid, signal.SIGSTOP)
    try:
        for args in (("eval", "1"), ("backtrace",), ("query", "SELECT 1")):
            start = time.monotonic()
            rc, out, err = run_cli(t.pid, *args, timeout=20)
            assert rc == 1 and "is stopped" in err and "kill -CONT %d" % t.pid in err, (args, rc, out, err)
            assert time.monotonic() - start < 2, args
    finally:
        os.kill(t.pid, signal.SIGCONT)
    assert run_cli(t.pid, "eval", "1") == (0, "1\n", "")


def test_a_process_stopped_during_a_request_is_said_to_be_stopped(interp, target_factory):
    # Stopped after the request went out (the eval runs, then Ctrl-Z): the wait ends within a
    # moment, saying so, rather than at the request's timeout.
    t = target_factory("idle.py", interp, mode="preload")
    cli = subprocess.Popen([PROBING, str(t.pid), "eval", "import time; time.sleep(8)"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=clean_env(), stdin=subprocess.DEVNULL)
    try:
        time.sleep(1.0)  # the eval runs
        assert cli.poll() is None, cli.communicate()
        os.kill(t.pid, signal.SIGSTOP)
        start = time.monotonic()
        out, err = cli.communicate(timeout=20)
        assert time.monotonic() - start < 2, err
        assert cli.returncode == 1 and "is stopped" in err and "kill -CONT %d" % t.pid in err, (out, err)
    finally:
        os.kill(t.pid, signal.SIGCONT)
        if cli.poll() is None:
            cli.kill()


def test_unknown_command():
    rc, out, err = run_cli("1", "frobnicate")
    assert rc == 2, (rc, out, err)


def _expected_command(t, interp):
    cmd = " ".join([interp.executable, t.script_path])
    return cmd if len(cmd) <= 80 else cmd[:77] + "..."


def test_list_table(listed, interp):
    rc, out, err = run_cli("list")
    assert rc == 0, err
    lines = out.splitlines()
    assert re.match(r"PID\s+PYTHON\s+REMOTE\s+COMMAND$", lines[0]), lines[0]
    rows = [l for l in lines[1:] if l.split() and l.split()[0] == str(listed.pid)]
    assert len(rows) == 1, out
    row = rows[0]
    pid, version, remote = row.split()[:3]
    assert version.startswith(interp.version + "."), row
    assert version == listed.health["python"]
    assert remote == "-"
    assert row.endswith(_expected_command(listed, interp)), row


def test_list_json(listed, interp):
    rc, out, err = run_cli("list", "--json")
    assert rc == 0, err
    rows = json.loads(out)
    assert isinstance(rows, list)
    mine = [r for r in rows if r.get("pid") == listed.pid]
    assert len(mine) == 1, rows
    r = mine[0]
    assert r["python"] == listed.health["python"] and r["python"].startswith(interp.version + ".")
    assert r["command"] == " ".join([interp.executable, listed.script_path])
    assert r["python_status"] == "ready"
    assert r["remote"] is None


def test_list_leaves_out_processes_without_agent(listed, interp):
    p = subprocess.Popen([interp.path, "-c", 'import time; print("ready", flush=True); time.sleep(60)'],
                         stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=clean_env(), start_new_session=True)
    try:
        assert p.stdout.readline() == b"ready\n"
        rc, out, err = run_cli("list", "--json")
        assert rc == 0
        pids = [r["pid"] for r in json.loads(out)]
        assert listed.pid in pids and p.pid not in pids
    finally:
        p.kill()
        p.wait()


def test_target_option_form(listed, interp):
    rc, out, err = run_cli("-t", listed.pid, "eval", "model['layers']")
    assert (rc, out, err) == (0, "3\n", "")
    rc, out, err = run_cli("--target", listed.pid, "eval", "model['layers'] + 1")
    assert (rc, out, err) == (0, "4\n", "")


def test_eval_code_and_file_conflict(listed, interp, tmp_path):
    f = tmp_path / "c.py"
    f.write_text("1\n")
    rc, out, err = run_cli(listed.pid, "eval", "-f", str(f), "2")
    assert rc != 0 and out == ""
    assert "not both" in err, err


def test_eval_nothing_to_run(listed, interp):
    rc, out, err = run_cli(listed.pid, "eval")
    assert rc != 0 and out == ""
    assert "nothing to run" in err, err
