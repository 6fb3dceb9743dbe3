"""Idle pause (issue 33): `warren serve --idle-pause SECONDS` pauses running sandboxes nobody
used for that long (no request through their host, no open stream, no CPU use to speak of); the
next request that reaches one resumes it with its processes and memory as they were, and its
timeout keeps running. Through the official SDKs and the sandbox's own port URL.

Starts a server of its own, so it runs in the `restore` session (scripts/test)."""
import time

import pytest
import requests
from hopx_ai import Sandbox

from test_restore import Server, data_dir, wait_until  # noqa: F401 (data_dir is a fixture)

pytestmark = pytest.mark.restore

IDLE = 3


def status(server, sid):
    return server.api("GET", f"/v1/sandboxes/{sid}").json()


def test_unused_sandboxes_pause_and_their_next_request_resumes_them(data_dir):
    s = Server(data_dir, ["--stop-sandboxes-on-exit", "--idle-pause", str(IDLE)])
    s.start()
    try:
        idle = Sandbox.create(template="code-interpreter", base_url=s.base_url, api_key=s.key, timeout_seconds=600)
        busy = Sandbox.create(template="code-interpreter", base_url=s.base_url, api_key=s.key, timeout_seconds=600)
        served = Sandbox.create(template="code-interpreter", base_url=s.base_url, api_key=s.key, timeout_seconds=600)
        assert idle.run_code("x = 41").success
        expires = status(s, idle.sandbox_id)["expires_at"]
        # A background job computing keeps its sandbox in use without a single request.
        busy.commands.run("sh -c 'while :; do :; done' >/dev/null 2>&1 &", timeout=10)
        # So does an app in the sandbox, served through its port URL, with visitors.
        served.commands.run("cd /tmp && nohup python3 -m http.server 8080 >/dev/null 2>&1 &", timeout=10)
        # A port of the sandbox, routed as E2B's clients route it (local mode has no wildcard host).
        visit = {"E2b-Sandbox-Id": served.sandbox_id, "E2b-Sandbox-Port": "8080"}
        wait_until(lambda: requests.get(s.base_url + "/", headers=visit, timeout=10).status_code == 200, 20,
                   "the app to answer")

        wait_until(lambda: status(s, idle.sandbox_id)["status"] == "paused", 4 * IDLE + 30,
                   "the unused sandbox to be paused")
        rec = status(s, idle.sandbox_id)
        assert "unused" in (rec.get("status_reason") or ""), rec
        assert status(s, busy.sandbox_id)["status"] == "running", "a sandbox using CPU is not idle"
        audit = s.api("GET", f"/v1/audit?sandbox_id={idle.sandbox_id}&action=sandbox.idle_pause").json()["data"]
        assert audit, "the idle pause is in the audit trail"

        # The next SDK call wakes it, with its interpreter's state.
        assert idle.run_code("print(x + 1)").stdout == "42\n"
        rec = status(s, idle.sandbox_id)
        assert rec["status"] == "running" and not rec.get("status_reason"), rec
        assert rec["expires_at"] == expires, "its timeout kept running"

        # An idle app sleeps too, and its next visitor wakes it.
        wait_until(lambda: status(s, served.sandbox_id)["status"] == "paused", 4 * IDLE + 30,
                   "the app's sandbox to be paused")
        assert requests.get(s.base_url + "/", headers=visit, timeout=30).status_code == 200
        assert status(s, served.sandbox_id)["status"] == "running"

        # Paused by hand is not paused for idleness: a request does not wake it.
        busy.commands.run("pkill -f 'while :' || true", timeout=10)
        busy.pause()
        with pytest.raises(Exception):
            busy.run_code("print(1)", timeout=10)
        assert status(s, busy.sandbox_id)["status"] == "paused"
        for sb in (idle, busy, served):
            sb.kill()
    finally:
        s.term()
