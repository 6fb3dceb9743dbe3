"""Warren's MCP server, driven by the official MCP client SDK (PyPI `mcp`) over both transports:
`warren mcp` over stdio (WARREN_URL + WARREN_API_KEY) and streamable HTTP at `/mcp` with an API
key. The tools are those of the official `hopx-mcp`, with its names and parameters."""
import asyncio
import os
import json
import time

import pytest

from conftest import WARREN, new_key, raw

mcp = pytest.importorskip("mcp", reason="SKIPPED LOUDLY: the MCP client SDK (PyPI mcp) is not installed")
from mcp import ClientSession, StdioServerParameters  # noqa: E402
from mcp.client.stdio import stdio_client  # noqa: E402
from mcp.client.streamable_http import streamablehttp_client  # noqa: E402

# The tools prompts written for hopx-mcp call.
HOPX_MCP_TOOLS = {
    "health", "list_sandboxes", "create_sandbox", "get_sandbox", "delete_sandbox",
    "update_sandbox_timeout", "resume_sandbox", "list_templates", "get_template", "ping_vm",
    "get_vm_info", "get_preview_url", "get_agent_url", "execute_code", "execute_code_persistent",
    "execute_code_rich", "execute_code_background", "execute_code_isolated",
    "execute_list_processes", "execute_kill_process", "run_command", "run_command_background",
    "list_processes", "file_read", "file_write", "file_list", "file_exists", "file_remove",
    "file_mkdir", "get_system_metrics", "env_get", "env_set", "env_clear", "cache_clear",
    "cache_stats",
}


def result(called):
    """A tool result's JSON object (structured content, else its text)."""
    if called.structuredContent is not None:
        return called.structuredContent
    return json.loads(called.content[0].text)


async def call(session, tool, **args):
    called = await session.call_tool(tool, args)
    assert not called.isError, f"{tool} failed: {called.content}"
    return result(called)


async def error_of(session, tool, **args):
    called = await session.call_tool(tool, args)
    assert called.isError, f"{tool} should have failed: {called.content}"
    return result(called)


async def exercise(session):
    """What an agent does: list tools, run code, keep state, files, commands, env, errors."""
    await session.initialize()
    tools = {t.name: t for t in (await session.list_tools()).tools}
    missing = HOPX_MCP_TOOLS - tools.keys()
    assert not missing, f"tools of hopx-mcp missing: {missing}"
    assert "sandbox_id" in tools["file_read"].inputSchema["properties"]

    once = await call(session, "execute_code", code="print(6 * 7)", mode="isolated")
    assert once["stdout"] == "42\n" and once["exit_code"] == 0 and once["success"] is True
    # The isolated run's sandbox is gone again.
    assert (await call(session, "get_sandbox", id=once["sandbox_id"]))["status"] == "deleted"

    sb = await call(session, "create_sandbox", template_id="code-interpreter", timeout_seconds=600,
                    env_vars={"MCP_GREETING": "hello"})
    sid = sb["id"]
    try:
        assert sb["status"] == "running"
        await call(session, "execute_code", sandbox_id=sid, mode="persistent", code="x = 20")
        kept = await call(session, "execute_code", sandbox_id=sid, mode="persistent",
                          code="import os; print(x + 1, os.environ['MCP_GREETING'])")
        assert kept["stdout"] == "21 hello\n"

        written = await call(session, "file_write", sandbox_id=sid, path="/tmp/mcp/note.txt",
                             content="written over MCP\n")
        assert written["size"] == len("written over MCP\n")
        read = await call(session, "file_read", sandbox_id=sid, path="/tmp/mcp/note.txt")
        assert read["content"] == "written over MCP\n"
        assert (await call(session, "file_exists", sandbox_id=sid, path="/tmp/mcp/note.txt"))["exists"] is True
        listed = await call(session, "file_list", sandbox_id=sid, path="/tmp/mcp")
        assert [f["name"] for f in listed["files"]] == ["note.txt"]
        await call(session, "file_mkdir", sandbox_id=sid, path="/tmp/mcp/a/b")
        await call(session, "file_remove", sandbox_id=sid, path="/tmp/mcp/note.txt")
        assert (await call(session, "file_exists", sandbox_id=sid, path="/tmp/mcp/note.txt"))["exists"] is False

        ran = await call(session, "run_command", sandbox_id=sid, command="echo out; echo err >&2; exit 3",
                         working_dir="/tmp")
        assert (ran["stdout"], ran["stderr"], ran["exit_code"]) == ("out\n", "err\n", 3)
        assert (await call(session, "run_command", sandbox_id=sid, command="pwd"))["stdout"] == "/workspace\n"
        started = await call(session, "run_command_background", sandbox_id=sid, command="sleep 30", name="nap")
        assert started["status"] == "running" and started["process_id"]

        await call(session, "env_set", sandbox_id=sid, env_vars={"MCP_X": "1"})
        env = await call(session, "env_get", sandbox_id=sid)
        assert env["env_vars"]["MCP_X"] == "1"

        metrics = await call(session, "get_system_metrics", sandbox_id=sid)
        assert metrics, "no metrics"
        extended = await call(session, "update_sandbox_timeout", id=sid, timeout_seconds=1200)
        assert extended["status"] == "updated"
        assert any(s["id"] == sid for s in (await call(session, "list_sandboxes"))["data"])

        # Errors come back as tool errors, and the session goes on.
        missing_file = await error_of(session, "file_read", sandbox_id=sid, path="/tmp/mcp/none.txt")
        assert missing_file["status"] == 404
        await error_of(session, "get_sandbox", id="../v1/admin/keys")
        await error_of(session, "execute_code", code="print(1)", mode="persistent")
        await error_of(session, "execute_code", code="print(1)", mode="sideways", sandbox_id=sid)
        assert (await call(session, "execute_code", sandbox_id=sid, mode="persistent",
                           code="print('still here')"))["stdout"] == "still here\n"
    finally:
        deleted = await call(session, "delete_sandbox", id=sid)
        assert deleted["status"] == "deleted"
    return sid


def test_volume_tools_keep_an_agents_files_across_sandboxes(server):
    """Warren's own tools beside hopx-mcp's: a volume made, mounted by two sandboxes one after
    the other (what the first wrote, the second reads), listed, and deleted once unmounted."""
    params = StdioServerParameters(command=WARREN, args=["mcp"], env={
        "WARREN_URL": server["base_url"], "WARREN_API_KEY": server["api_key"], "PATH": "/usr/bin:/bin"})
    name = f"mcp-{os.getpid()}"

    async def run(session):
        await session.initialize()
        made = await call(session, "create_volume", name=name, size_mb=64)
        assert made["size_mb"] == 64
        assert name in [v["name"] for v in (await call(session, "list_volumes"))["volumes"]]
        for step, command in [("write", "echo kept > /memory/note"), ("read", "cat /memory/note")]:
            sb = await call(session, "create_sandbox", template_id="base",
                            volumes=[{"name": name, "path": "/memory"}])
            ran = await call(session, "run_command", sandbox_id=sb["id"], command=command)
            if step == "read":
                assert ran["stdout"] == "kept\n", ran
                # Mounted: the delete is refused, and says by whom.
                refused = await error_of(session, "delete_volume", name=name)
                assert refused["status"] == 409 and sb["id"] in str(refused), refused
            await call(session, "delete_sandbox", id=sb["id"])
        assert (await call(session, "delete_volume", name=name))["status"] == "deleted"

    async def main():
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                await run(session)

    asyncio.run(main())


def test_stdio_server_runs_code_and_files_for_an_agent(server):
    params = StdioServerParameters(command=WARREN, args=["mcp"], env={
        "WARREN_URL": server["base_url"], "WARREN_API_KEY": server["api_key"], "PATH": "/usr/bin:/bin"})

    async def run():
        async with stdio_client(params) as (read, write):
            async with ClientSession(read, write) as session:
                return await exercise(session)

    sid = asyncio.run(run())
    assert raw(server, "GET", f"/v1/sandboxes/{sid}").json()["status"] == "deleted"


def test_http_server_at_mcp_acts_with_the_callers_key(server):
    url = server["base_url"] + "/mcp"

    async def as_key(key, body):
        async with streamablehttp_client(url, headers={"Authorization": f"Bearer {key}"}) as (read, write, _):
            async with ClientSession(read, write) as session:
                return await body(session)

    sid = asyncio.run(as_key(server["api_key"], exercise))
    assert raw(server, "GET", f"/v1/sandboxes/{sid}").json()["status"] == "deleted"

    # Another tenant's key sees none of this tenant's sandboxes through MCP either.
    mine = raw(server, "POST", "/v1/sandboxes", json={"template_name": "code-interpreter"}).json()["id"]
    try:
        other = new_key(server, "mcp-other-tenant", role="member")

        async def looks(session):
            await session.initialize()
            got = await error_of(session, "get_sandbox", id=mine)
            ran = await error_of(session, "run_command", sandbox_id=mine, command="id")
            listed = await call(session, "list_sandboxes")
            return got, ran, listed

        got, ran, listed = asyncio.run(as_key(other, looks))
        assert got["status"] == 404 and ran["status"] == 404
        assert mine not in [s["id"] for s in listed["data"]]
    finally:
        raw(server, "DELETE", f"/v1/sandboxes/{mine}")

    # The audit trail records MCP's actions like any other client's.
    time.sleep(0.5)  # the recorder batches writes
    actions = [e["action"] for e in raw(server, "GET", f"/v1/audit?sandbox_id={sid}").json()["data"]]
    assert actions[0] == "sandbox.create" and actions[-1] == "sandbox.delete", actions
    assert "execute" in actions and "files.write" in actions, actions


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrn_live_wrong"}])
def test_http_mcp_refuses_requests_without_a_valid_key(server, headers):
    init = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-03-26", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    r = raw(server, "POST", "/mcp", json=init,
            headers={**headers, "Accept": "application/json, text/event-stream"})
    assert r.status_code == 401
    assert r.json()["error"]["code"] in ("AUTHENTICATION_REQUIRED", "INVALID_TOKEN")
