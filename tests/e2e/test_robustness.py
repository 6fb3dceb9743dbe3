"""No single request breaks a sandbox (issue 18): each finding from fuzzing both APIs, as the
request that found it. Each test checks the answer is a clear 4xx (never a 5xx for a user mistake)
and that the sandbox still works afterwards."""
import os
import subprocess

import requests
from hopx_ai import Sandbox

from conftest import WARREN, raw


def agent(sb):
    """Raw access to a sandbox's agent, as the SDKs reach it."""
    info = sb.get_info()
    headers = {"Authorization": f"Bearer {sb.get_token()}"}

    def call(method, path, **kw):
        return requests.request(method, info.public_host + path, headers=headers, timeout=60, **kw)
    return call


def still_works(sb, state_check=None):
    assert sb.run_code("print(6*7)").stdout == "42\n"
    assert sb.get_info().status == "running"
    if state_check:
        state_check()


def test_reading_devices_fifos_and_huge_files_answers_4xx_and_keeps_the_sandbox(sandbox):
    call = agent(sandbox)
    for dev in ("/dev/zero", "/dev/urandom", "/dev/full"):
        for route in ("/files/read", "/files/download"):
            r = call("GET", route, params={"path": dev})
            assert r.status_code == 400 and r.json()["code"] == "INVALID_PATH", (dev, route, r.text)
    # A FIFO nobody writes to: opening it must not hang the agent.
    sandbox.commands.run("mkfifo /workspace/fifo")
    r = call("GET", "/files/read", params={"path": "/workspace/fifo"})
    assert r.status_code == 400, r.text
    # /proc files report a size of 0 but have content.
    assert "processor" in sandbox.files.read("/proc/cpuinfo")
    r = call("GET", "/files/download", params={"path": "/proc/self/status"})
    assert r.status_code == 200 and b"Name:" in r.content
    # Over the read limit: 413 pointing at download, which streams it.
    sandbox.commands.run("head -c 34000000 /dev/zero > /workspace/big.bin")
    r = call("GET", "/files/read", params={"path": "/workspace/big.bin"})
    assert r.status_code == 413 and "download" in r.json()["message"], r.text
    r = call("GET", "/files/download", params={"path": "/workspace/big.bin"})
    assert r.status_code == 200 and len(r.content) == 34000000
    still_works(sandbox)


def test_paths_with_nul_bytes_and_unreadable_proc_files_are_user_mistakes(sandbox):
    call = agent(sandbox)
    answers = [
        call("GET", "/files/read", params={"path": "\0"}),
        call("GET", "/files/read", params={"path": "/tmp/a\0b"}),
        call("GET", "/files/list", params={"path": "/tmp\0"}),
        call("GET", "/files/exists", params={"path": "a\0"}),
        call("DELETE", "/files/remove", params={"path": "/tmp/\0"}),
        call("POST", "/files/write", json={"path": "/tmp/a\0b", "content": "x"}),
        call("POST", "/files/mkdir", json={"path": "/tmp/d\0"}),
        call("GET", "/files/read", params={"path": "/proc/self/mem"}),
    ]
    for r in answers:
        assert 400 <= r.status_code < 500, (r.request.url, r.status_code, r.text)
        assert r.json()["code"] in ("INVALID_PATH", "FILE_OPERATION_FAILED", "MISSING_PARAMETER"), r.text
    still_works(sandbox)


def test_the_agent_and_its_interpreter_cannot_be_killed_through_the_api(sandbox):
    call = agent(sandbox)
    sandbox.run_code("kept = 'interpreter state'")
    sessions = sandbox.get_jupyter_sessions()
    interpreter = sessions[0]["pid"]
    tasks = sandbox.commands.run("ls /proc/1/task /proc/2/task").stdout.split()
    agent_threads = [t for t in tasks if t.isdigit()]
    assert len(agent_threads) >= 3, tasks
    for pid in ["1", str(interpreter), *agent_threads]:
        for r in (call("DELETE", "/execute/kill", params={"process_id": pid}),
                  call("POST", f"/execute/kill/{pid}")):
            assert r.status_code == 403 and r.json()["code"] == "PERMISSION_DENIED", (pid, r.text)
    assert call("DELETE", "/execute/kill", params={"process_id": "99999"}).status_code == 404
    # What the user started can be killed, by pid too.
    pid = sandbox.commands.run("sleep 300 >/dev/null 2>&1 & echo $!").stdout.strip()
    assert call("DELETE", "/execute/kill", params={"process_id": pid}).status_code == 200
    still_works(sandbox, lambda: sandbox.run_code("print(kept)").stdout == "interpreter state\n")


def test_too_many_env_vars_and_absurd_timeouts_are_refused_up_front(server):
    huge = {f"V{i}": "x" * 100 for i in range(9000)}
    r = raw(server, "POST", "/v1/sandboxes", json={"template_name": "base", "env_vars": huge})
    assert r.status_code == 400 and "at most 1000 variables" in r.json()["error"]["message"], r.text
    many = {f"V{i}": "y" for i in range(1000)}
    r = raw(server, "POST", "/v1/sandboxes", json={"template_name": "base", "env_vars": many})
    assert r.status_code == 201, r.text
    sb = Sandbox.connect(r.json()["id"], base_url=server["base_url"], api_key=server["api_key"])
    try:
        assert sb.commands.run("echo $V999").stdout == "y\n"
        # An environment too large for any program to start with: refused, the sandbox intact.
        r = agent(sb)("PATCH", "/env", json={"env_vars": {"BIG": "z" * (200 * 1024)}})
        assert r.status_code == 400, r.text
        still_works(sb)
    finally:
        sb.kill()
    for t in (9223372036854775807, 10**15, 365 * 86400 + 1, 0, -5):
        r = raw(server, "POST", "/v1/sandboxes", json={"template_name": "base", "timeout_seconds": t})
        assert r.status_code == 400 and "timeout_seconds" in r.json()["error"]["message"], (t, r.text)
    r = raw(server, "POST", "/v1/sandboxes", json={"template_name": "base", "timeout_seconds": 365 * 86400})
    assert r.status_code == 201 and r.json()["expires_at"] > "2027", r.text
    sid = r.json()["id"]
    r = raw(server, "PUT", f"/v1/sandboxes/{sid}/timeout", json={"timeout_seconds": 10**15})
    assert r.status_code == 400, r.text
    raw(server, "DELETE", f"/v1/sandboxes/{sid}")
    # The Hopx SDK names no lifetime unless asked: such a sandbox gets the server's default (an
    # hour), so an abandoned one ends instead of running forever.
    sb = Sandbox.create(template="base", base_url=server["base_url"], api_key=server["api_key"])
    try:
        shown = raw(server, "GET", f"/v1/sandboxes/{sb.sandbox_id}").json()
        assert shown["timeout_seconds"] == 3600 and shown["expires_at"], shown
    finally:
        sb.kill()


def test_lifetime_flags_are_checked_before_the_server_starts(tmp_path):
    for flags, says in ((["--max-timeout", "0"], "--max-timeout must be between"),
                        (["--default-timeout=-1"], "--default-timeout must be 0"),
                        (["--default-timeout", "700", "--max-timeout", "600"], "longer than --max-timeout"),
                        (["--tenant-max-timeout", "lab"], "ORG=SECONDS"),
                        (["--tenant-max-timeout", "lab=0"], "1 to 31536000 seconds"),
                        (["--idle-pause=-1"], "--idle-pause")):
        out = subprocess.run([WARREN, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(tmp_path), *flags],
                             capture_output=True, text=True, timeout=60)
        assert out.returncode != 0 and says in out.stderr, (flags, out.stderr)


def test_stop_and_start_of_the_vendor_spec_pause_and_resume(server):
    sb = Sandbox.create(template="base", base_url=server["base_url"], api_key=server["api_key"])
    try:
        sb.files.write("/workspace/kept.txt", "across stop")
        r = raw(server, "POST", f"/v1/sandboxes/{sb.sandbox_id}/stop")
        assert r.status_code == 200 and r.json()["status"] == "paused", r.text
        r = raw(server, "POST", f"/v1/sandboxes/{sb.sandbox_id}/start")
        assert r.status_code == 200 and r.json()["status"] == "running", r.text
        assert sb.files.read("/workspace/kept.txt") == "across stop"
        assert raw(server, "POST", "/v1/sandboxes/aaaaaaaaaaaaaaaaaa/stop").status_code == 404
    finally:
        sb.kill()


def test_shapes_follow_the_vendor_spec(server, sandbox):
    # No nulls where the vendor's schema has a string or an integer: absent means "none".
    r = raw(server, "GET", f"/v1/sandboxes/{sandbox.sandbox_id}")
    body = r.json()
    assert all(v is not None for v in body.values()), {k: v for k, v in body.items() if v is None}
    for t in raw(server, "GET", "/v1/templates").json()["data"]:
        assert all(v is not None for v in t.values()), t
    call = agent(sandbox)
    ping = call("GET", "/ping")
    assert ping.status_code == 200 and all(isinstance(v, str) for v in ping.json().values())
    assert call("GET", "/").json()["agent"] == "warren-agent"
    assert call("GET", "/system").json()["system"]["memory"]["total"] > 0
    prom = call("GET", "/metrics/prometheus")
    assert prom.status_code == 200 and "warren_sandbox_memory_used_bytes" in prom.text
    upd = call("POST", "/update/apply")
    assert upd.status_code == 400 and upd.json()["code"] == "NOT_SUPPORTED"


def test_a_quota_refusal_names_the_flag_that_raises_it(server):
    # The session server runs with --max-sandboxes 8.
    made = []
    try:
        while True:
            r = raw(server, "POST", "/v1/sandboxes", json={"template_name": "base"})
            if r.status_code != 201:
                break
            made.append(r.json()["id"])
            assert len(made) <= 8, "quota not enforced"
        assert r.status_code == 403, r.text
        assert "--max-sandboxes" in r.json()["error"]["message"], r.text
    finally:
        for sid in made:
            raw(server, "DELETE", f"/v1/sandboxes/{sid}")


def test_unnamed_background_work_has_a_name_and_resource_figures(sandbox):
    sandbox.run_code_background("import time; time.sleep(60)")
    sandbox.commands.run("sleep 61", background=True)
    procs = sandbox.list_processes()
    assert len(procs) >= 2
    for p in procs:
        assert isinstance(p.get("name"), str) and p["name"], p
        assert isinstance(p.get("cpu_percent"), (int, float)) and isinstance(p.get("memory_percent"), (int, float)), p
    names = {p["name"] for p in procs}
    assert "python3" in names and "sleep" in names, names
    python = [p for p in procs if "python" in p.get("name", "").lower()]
    sandbox.kill_process(python[0]["pid"])
    still_works(sandbox)
