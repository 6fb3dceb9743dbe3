"""More of spec §8.1 with the official Python SDK: P4 (list and iterate), P7 (tokens, and a
transparent refresh after a 401), P18 (agent info and metrics), P22 (the async SDK)."""
import asyncio

import requests
from hopx_ai import AsyncSandbox, Sandbox

from conftest import new_key


def test_p4_list_and_iterate(server):
    key = new_key(server, "tenant-p4")
    made = [Sandbox.create(template="base", base_url=server["base_url"], api_key=key) for _ in range(3)]
    try:
        listed = {s.sandbox_id for s in Sandbox.list(base_url=server["base_url"], api_key=key, status="running")}
        assert listed == {s.sandbox_id for s in made}
        iterated = {s.sandbox_id for s in Sandbox.iter(base_url=server["base_url"], api_key=key)}
        assert iterated == listed
        page = requests.get(f"{server['base_url']}/v1/sandboxes?limit=2", headers={"X-API-Key": key}, timeout=10).json()
        assert len(page["data"]) == 2 and page["has_more"] and page["next_cursor"]
        rest = requests.get(f"{server['base_url']}/v1/sandboxes?limit=2&cursor={page['next_cursor']}",
                            headers={"X-API-Key": key}, timeout=10).json()
        assert len(rest["data"]) == 1 and not rest["has_more"]
    finally:
        for s in made:
            s.kill()


def test_p7_tokens_refresh_transparently(server):
    sb = Sandbox.create(template="base", base_url=server["base_url"], api_key=server["api_key"])
    try:
        first = sb.get_token()
        assert first.count(".") == 2
        sb.refresh_token()
        assert sb.get_token().count(".") == 2
        # a cached token the agent side rejects: the SDK refreshes and retries by itself
        from datetime import datetime, timedelta, timezone
        from hopx_ai._token_cache import TokenData, _token_cache
        other = Sandbox.connect(sb.sandbox_id, base_url=server["base_url"], api_key=server["api_key"])
        _token_cache[sb.sandbox_id] = TokenData(token="e30.e30.bad", expires_at=datetime.now(timezone.utc) + timedelta(hours=5))
        assert other.commands.run("echo after-refresh").stdout == "after-refresh\n"
        assert _token_cache[sb.sandbox_id].token != "e30.e30.bad"
    finally:
        sb.kill()


def test_p18_agent_info_metrics_processes(server, sandbox):
    info = sandbox.get_agent_info()
    assert info["agent"] and "endpoints" in info
    metrics = sandbox.get_metrics_snapshot()
    assert metrics["system"]["memory"]["total"] > 0 and metrics["system"]["cpu"]["cores"] >= 1
    assert sandbox.get_agent_metrics()["uptime_seconds"] >= 0
    procs = sandbox.list_system_processes()
    assert any("warren-agent" in (p.get("command") or "") for p in procs)
    assert isinstance(sandbox.get_jupyter_sessions(), list)
    assert sandbox.is_healthy()
    sandbox.ensure_healthy()
    assert isinstance(sandbox.cache.stats(), dict)
    sandbox.cache.clear()


def test_p22_async_sdk(server):
    async def scenario():
        sb = await AsyncSandbox.create(template="code-interpreter", base_url=server["base_url"], api_key=server["api_key"])
        try:
            assert (await sb.run_code("print(2+2)")).stdout == "4\n"
            r = await sb.run_code("import sys; sys.exit(2)")
            assert r.exit_code == 2 and not r.success
            await sb.files.write("/workspace/a.txt", "async")
            assert await sb.files.read("/workspace/a.txt") == "async"
            assert await sb.files.exists("/workspace/a.txt")
            await sb.env.set("AE", "1")
            assert (await sb.env.get_all())["AE"] == "1"
            assert (await sb.run_code("import os; print(os.environ['AE'])")).stdout == "1\n"
            assert (await sb.commands.run("echo hi")).stdout == "hi\n"
        finally:
            await sb.kill()
    asyncio.run(asyncio.wait_for(scenario(), 120))
