"""A sandbox's usage measured from outside it (`GET /v1/sandboxes/{id}/usage`, Warren extension):
CPU from its cgroup's CPU time, memory from its cgroup, disk from its writable layer, so nothing
the code inside does can change the figures. Runs on the suite's default tier (scripts/test runs
this file again with gVisor and microVMs)."""
import datetime
import time

import pytest
from hopx_ai import Sandbox

from conftest import new_key, raw

pytestmark = pytest.mark.usefixtures("server")
MIB = 1 << 20


def usage(server, sid, key=None):
    r = raw(server, "GET", f"/v1/sandboxes/{sid}/usage", headers={"X-API-Key": key or server["api_key"]})
    assert r.status_code == 200, r.text
    return r.json()


def until(server, sid, check, within=30):
    deadline = time.time() + within
    while True:
        u = usage(server, sid)
        if check(u) or time.time() > deadline:
            return u
        time.sleep(0.5)


def test_cpu_memory_and_disk_follow_what_the_code_does(server):
    sb = Sandbox.create(template="code-interpreter", base_url=server["base_url"], api_key=server["api_key"])
    try:
        info = raw(server, "GET", f"/v1/sandboxes/{sb.sandbox_id}").json()
        tier = info.get("isolation")
        idle = usage(server, sb.sandbox_id)
        assert idle["sandbox_id"] == sb.sandbox_id and idle["status"] == "running"
        assert idle["cpu_count"] == info["resources"]["vcpu"]
        assert idle["memory_limit_bytes"] == info["resources"]["memory_mb"] * MIB
        assert idle["disk_limit_bytes"] == info["resources"]["disk_mb"] * MIB
        assert 0 < idle["memory_used_bytes"] < idle["memory_limit_bytes"] * 2
        assert idle["processes"] >= 1 and idle["cpu_time_ms"] > 0
        measured = datetime.datetime.fromisoformat(idle["measured_at"].replace("Z", "+00:00"))
        assert abs((datetime.datetime.now(datetime.timezone.utc) - measured).total_seconds()) < 60

        # 200 MiB held by a process: the sandbox's memory grows by at least that much.
        sb.commands.run("python3 -c \"import time; b = b'x' * (200 << 20); time.sleep(600)\"", background=True)
        grown = until(server, sb.sandbox_id, lambda u: u["memory_used_bytes"] >= idle["memory_used_bytes"] + 180 * MIB)
        assert grown["memory_used_bytes"] >= idle["memory_used_bytes"] + 180 * MIB, (idle, grown)

        # One busy loop on the sandbox's one vCPU.
        sb.commands.run("python3 -c 'while True: pass'", background=True)
        busy = until(server, sb.sandbox_id, lambda u: u["cpu_used_pct"] > 50)
        assert 50 < busy["cpu_used_pct"] <= 100, busy
        assert busy["cpu_time_ms"] > idle["cpu_time_ms"]

        # 64 MiB written to disk (synced, so a VM's page cache does not hide it).
        sb.commands.run("dd if=/dev/urandom of=/workspace/big bs=1M count=64 conv=fsync 2>/dev/null")
        if tier == "gvisor":
            # gVisor keeps a sandbox's writes in its own memory: no disk figure to read outside.
            assert usage(server, sb.sandbox_id)["disk_used_bytes"] is None
        else:
            wrote = until(server, sb.sandbox_id, lambda u: (u["disk_used_bytes"] or 0) >= 60 * MIB)
            assert (wrote["disk_used_bytes"] or 0) >= 60 * MIB, wrote
            assert wrote["disk_used_bytes"] <= wrote["disk_limit_bytes"] + 64 * MIB

        # Paused: still answered, nothing runs.
        sb.commands.run("pkill -f 'while True' || true")
        sb.pause()
        paused = usage(server, sb.sandbox_id)
        assert paused["status"] == "paused" and paused["cpu_used_pct"] == 0, paused
        sb.resume()
    finally:
        sb.kill()
    # Gone: an error in the envelope, never a 500.
    r = raw(server, "GET", f"/v1/sandboxes/{sb.sandbox_id}/usage")
    assert 400 <= r.status_code < 500 and r.json()["error"]["code"], r.text


def test_only_the_owner_sees_a_sandboxs_usage(server):
    sb = Sandbox.create(template="base", base_url=server["base_url"], api_key=server["api_key"])
    try:
        other = new_key(server, "usage-other-tenant")
        r = raw(server, "GET", f"/v1/sandboxes/{sb.sandbox_id}/usage", headers={"X-API-Key": other})
        assert r.status_code == 404 and r.json()["error"]["code"], r.text
        r = raw(server, "GET", "/v1/sandboxes/doesnotexist000000/usage")
        assert r.status_code == 404, r.text
        r = raw(server, "GET", f"/v1/sandboxes/{sb.sandbox_id}/usage", headers={})
        assert r.status_code == 401, r.text
    finally:
        sb.kill()
