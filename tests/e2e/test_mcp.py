"""`probing mcp`: the Model Context Protocol over standard input and output, spoken to by the
protocol's own client SDK (npm @modelcontextprotocol/sdk, driven by tests/browser/mcp_check.mjs),
and by hand for what the SDK would not send. Read-only means the agent itself grants the read
right only: SET and eval are refused by the agent, not by the tool's good manners.

The SDK comes with the browser checks' npm packages (scripts/install-deps.sh --test); where it is
missing the SDK test is a skip that says so, a failure under `make test` (PROBING_BROWSER_REQUIRED).
The server is the CLI's, the same on every interpreter: checked on the host's."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import INTERPRETERS, PROBING, REPO, Target, clean_env, run_cli

BROWSER_DIR = os.path.join(REPO, "tests", "browser")


@pytest.fixture(scope="module")
def target():
    if os.environ.get("PROBING_E2E_INTERPRETERS"):
        pytest.skip("the MCP server is the CLI's, the same on every interpreter: checked once, on the host's")
    with Target("idle.py", INTERPRETERS[0], mode="preload") as t:
        yield t


def sdk_missing():
    if shutil.which("node") is None:
        return "node is not installed"
    if not os.path.isdir(os.path.join(BROWSER_DIR, "node_modules", "@modelcontextprotocol", "sdk")):
        return "npm package @modelcontextprotocol/sdk is missing (npm ci --prefix tests/browser)"
    return None


def through_sdk(pid, *flags):
    why = sdk_missing()
    if why is not None:
        if os.environ.get("PROBING_BROWSER_REQUIRED") == "1":
            pytest.fail("the MCP client cannot run: " + why)
        pytest.skip(why)
    p = subprocess.run(["node", os.path.join(BROWSER_DIR, "mcp_check.mjs"), PROBING, str(pid), *flags],
                       capture_output=True, text=True, timeout=120, env=clean_env())
    assert p.returncode == 0, (p.returncode, p.stdout, p.stderr)
    return json.loads(p.stdout)


def text_of(result):
    return "".join(c["text"] for c in result["content"] if c["type"] == "text")


def test_an_mcp_client_lists_the_tools_and_queries(target):
    got = through_sdk(target.pid)
    assert got["server"]["name"] == "probing"
    assert got["tools"] == ["list_processes", "backtrace", "query", "settings", "profile"]
    assert not got["query"].get("isError"), got["query"]
    assert "MainThread" in text_of(got["query"]) and "(1 row)" in text_of(got["query"])
    assert not got["backtrace"].get("isError"), got["backtrace"]
    assert "idle.py" in text_of(got["backtrace"])
    # Read-only is the agent's doing: it refuses SET to this client, and eval is no tool at all.
    assert got["set"]["isError"] is True
    assert "--read-only" in text_of(got["set"]), got["set"]
    assert "refused" in got["eval"] and "--allow-eval" in got["eval"]["refused"], got["eval"]
    _, out, _ = run_cli(target.pid, "config", "eval.timeout_s")
    assert "7" not in out, out  # the SET did not happen


def test_allow_eval_adds_the_eval_tool(target):
    got = through_sdk(target.pid, "--allow-eval")
    assert got["tools"][-1] == "eval"
    assert not got["eval"].get("isError"), got["eval"]
    assert text_of(got["eval"]).strip() == "42"
    assert got["set"]["isError"] is True  # query stays read-only


def mcp_session(lines, *flags):
    """Sends JSON-RPC `lines` to `probing mcp` and returns its replies, one per line."""
    p = subprocess.run([PROBING, "mcp", *flags], input="".join(json.dumps(m) + "\n" for m in lines),
                       capture_output=True, text=True, timeout=120, env=clean_env())
    assert p.returncode == 0, p.stderr
    return [json.loads(line) for line in p.stdout.splitlines()]


def test_protocol_errors_are_json_rpc_errors(target):
    replies = mcp_session([
        {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2024-11-05"}},
        {"jsonrpc": "2.0", "method": "notifications/initialized"},  # a notification: no reply
        {"jsonrpc": "2.0", "id": 2, "method": "resources/list"},
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "rm", "arguments": {}}},
        {"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {"name": "query", "arguments": {"target": "-h"}}},
        {"jsonrpc": "2.0", "id": 5, "method": "ping"},
    ])
    assert [r["id"] for r in replies] == [1, 2, 3, 4, 5]
    assert replies[0]["result"]["protocolVersion"] == "2024-11-05"  # the client's, when known
    assert replies[1]["error"]["code"] == -32601
    assert replies[2]["error"]["code"] == -32602 and "rm" in replies[2]["error"]["message"]
    assert replies[3]["result"]["isError"] is True and "not a target" in text_of(replies[3]["result"])
    assert replies[4]["result"] == {}
    garbage = subprocess.run([PROBING, "mcp"], input="{not json\n", capture_output=True, text=True, timeout=30)
    assert json.loads(garbage.stdout)["error"]["code"] == -32700


def test_the_backtrace_tool_passes_its_flags(target):
    call = {"name": "backtrace", "arguments": {"target": str(target.pid), "tasks": True}}
    replies = mcp_session([{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}},
                           {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": call}])
    result = replies[1]["result"]
    assert result["isError"] is False and "idle.py" in text_of(result), result
    assert "no asyncio tasks: the process has not imported asyncio" in text_of(result), result


def test_read_only_is_a_cli_option_too(target):
    rc, _, err = run_cli("--read-only", target.pid, "eval", "1 + 1")
    assert rc == 1 and "read right only" in err, err
    rc, out, _ = run_cli("--read-only", target.pid, "query", "SELECT 1 + 1 AS two")
    assert rc == 0 and "2" in out
