"""Isolation promises, checked from inside real sandboxes the way user code would try."""
import glob
import os
import socket
import subprocess
import threading
import time
import uuid

import pytest
import requests
from hopx_ai import Sandbox

from conftest import raw


def make(server, template="code-interpreter", **kw):
    return Sandbox.create(template=template, base_url=server["base_url"], api_key=server["api_key"], **kw)


def sh(sb, cmd, timeout=30):
    return sb.commands.run(cmd, timeout=timeout)


def traces(sid):
    return {
        "netns": os.path.exists(f"/run/netns/warren-{sid}"),
        "cgroups": glob.glob(f"/sys/fs/cgroup/*/**/warren/{sid}", recursive=True),
    }


def test_cannot_read_host_files_or_see_host_processes(sandbox, tmp_path):
    secret = f"/root/warren-host-secret-{uuid.uuid4().hex}"
    with open(secret, "w") as f:
        f.write("TOP-SECRET")
    try:
        r = sh(sandbox, f"cat {secret}; cat /proc/1/root{secret}; grep -r TOP-SECRET /root 2>/dev/null; echo end")
        assert "TOP-SECRET" not in r.stdout
        procs = sh(sandbox, "ps -e --no-headers | wc -l").stdout.strip()
        assert int(procs) < 15, f"sandbox sees {procs} processes"
        assert str(os.getpid()) not in sh(sandbox, "ls /proc").stdout.split() or int(procs) < 15
    finally:
        os.remove(secret)


def test_cannot_reach_host_loopback_or_host_addresses(server, sandbox):
    port = int(server["base_url"].rsplit(":", 1)[1])
    code = f"""
import socket
for host in ["127.0.0.1"]:
    s = socket.socket(); s.settimeout(2)
    try:
        s.connect((host, {port})); print("REACHED", host)
    except Exception as e:
        print("blocked", host, type(e).__name__)
"""
    assert "REACHED" not in sandbox.run_code(code).stdout
    # A host service listening on every address must not be reachable through the sandbox's link.
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("0.0.0.0", 0))
    srv.listen()
    hport = srv.getsockname()[1]
    try:
        gw = sh(sandbox, "awk '$2==\"00000000\"{print $3}' /proc/net/route").stdout.strip()
        assert gw, "sandbox with internet has a default route"
        ip = ".".join(str(int(gw[i:i + 2], 16)) for i in (6, 4, 2, 0))
        out = sandbox.run_code(f"import socket; s=socket.socket(); s.settimeout(2)\ntry:\n s.connect(('{ip}', {hport})); print('REACHED')\nexcept Exception as e: print('blocked', e)").stdout
        assert "REACHED" not in out, f"host service reachable from sandbox at {ip}"
    finally:
        srv.close()


def test_sandboxes_cannot_see_each_other(server, sandbox):
    other = make(server)
    try:
        other.files.write("/workspace/mine.txt", "other-data")
        assert not sandbox.files.exists("/workspace/mine.txt")
        r = sh(sandbox, "ps -e -o args --no-headers")
        assert other.sandbox_id not in r.stdout
        # the other sandbox's token does not open this one
        tok = other.get_token() if hasattr(other, "get_token") else None
        if tok:
            info = raw(server, "GET", f"/v1/sandboxes/{sandbox.sandbox_id}").json()
            res = requests.post(info["public_host"] + "/commands/run", json={"command": "true"}, headers={"Authorization": f"Bearer {tok}"}, timeout=10)
            assert res.status_code == 401
    finally:
        other.kill()


def test_internet_access_false_blocks_egress(server, outside_host):
    probe = f"import urllib.request\ntry:\n print(urllib.request.urlopen('http://{outside_host}:8000/', timeout=3).status)\nexcept Exception as e: print('blocked', type(e).__name__)"
    online = make(server, internet_access=True)
    offline = make(server, internet_access=False)
    try:
        assert online.run_code(probe).stdout.strip() == "200", "control: a sandbox with internet reaches the outside host"
        assert "blocked" in offline.run_code(probe).stdout
        assert sh(offline, "cat /proc/net/route | wc -l").stdout.strip() == "1", "offline sandbox has a route"
    finally:
        online.kill()
        offline.kill()


def test_memory_hog_dies_alone(server):
    sb = make(server, template="base")  # 512 MB
    try:
        r = sb.run_code("x = bytearray(2 * 1024**3); print('allocated')", timeout=60)
        assert "allocated" not in r.stdout and r.exit_code != 0
        assert sb.run_code("print('still here')").stdout == "still here\n"
        assert requests.get(server["base_url"] + "/health", timeout=5).status_code == 200
    finally:
        sb.kill()


def test_fork_bomb_is_contained(server):
    sb = make(server, template="base")
    try:
        t0 = time.time()
        sb.commands.run("bash -c ':(){ :|:& };:' ; sleep 3", timeout=8)
        latency = []
        for _ in range(5):
            s = time.time()
            assert requests.get(server["base_url"] + "/health", timeout=5).status_code == 200
            latency.append(time.time() - s)
        assert max(latency) < 1.0, f"host slow during fork bomb: {latency}"
        assert time.time() - t0 < 60
    finally:
        sb.kill()
    assert traces(sb.sandbox_id) == {"netns": False, "cgroups": []}


def test_nothing_remains_after_kill_or_expiry(server):
    sb = make(server)
    sid = sb.sandbox_id
    sh(sb, "sleep 1000 & echo started")
    sb.kill()
    assert traces(sid) == {"netns": False, "cgroups": []}
    assert not os.path.exists(os.path.join(server["data_dir"], "sandboxes", sid))
    assert subprocess.run(["pgrep", "-f", f"sandbox-id {sid}"], capture_output=True).returncode == 1

    short = make(server, timeout_seconds=2)
    sid = short.sandbox_id
    deadline = time.time() + 4.5
    while time.time() < deadline and raw(server, "GET", f"/v1/sandboxes/{sid}").json()["status"] == "running":
        time.sleep(0.2)
    assert raw(server, "GET", f"/v1/sandboxes/{sid}").json()["status"] == "stopped"
    assert traces(sid) == {"netns": False, "cgroups": []}
    assert not os.path.exists(os.path.join(server["data_dir"], "sandboxes", sid))


def test_a_create_the_client_gives_up_on_still_completes(server):
    """A client that times out mid-create (an SDK on a slow start) must not leave a half-started
    sandbox behind: the create finishes, the sandbox is listed as running and is removable."""
    before = {s["id"] for s in raw(server, "GET", "/v1/sandboxes").json()["data"]}
    with pytest.raises(requests.exceptions.Timeout):
        requests.post(server["base_url"] + "/v1/sandboxes", headers={"X-API-Key": server["api_key"]},
                      json={"template_name": "base"}, timeout=0.005)
    new = []
    for _ in range(300):
        new = [s for s in raw(server, "GET", "/v1/sandboxes").json()["data"] if s["id"] not in before]
        if new and new[0]["status"] == "running":
            break
        time.sleep(0.1)
    assert new and new[0]["status"] == "running", new
    assert raw(server, "DELETE", f"/v1/sandboxes/{new[0]['id']}").status_code in (200, 204)
    assert not os.path.exists(f"/run/netns/warren-{new[0]['id']}")


def test_the_agents_clock_route_cannot_set_the_hosts_clock(server, sandbox):
    # Warren's /warren/clock sets a VM guest's own clock; where the kernel is the host's, the
    # sandbox (and so its agent) has no right to the clock, and says so.
    before = time.time()
    r = requests.post(sandbox.get_info().public_host + "/warren/clock", json={"unix_nanos": 86_400 * 10**9},
                      headers={"Authorization": f"Bearer {sandbox.get_token()}"}, timeout=10)
    assert r.status_code == 403 and r.json()["code"] == "PERMISSION_DENIED", r.text
    assert abs(time.time() - before) < 60, "the host's clock moved"
    bad = requests.post(sandbox.get_info().public_host + "/warren/clock", json={"unix_nanos": -5},
                        headers={"Authorization": f"Bearer {sandbox.get_token()}"}, timeout=10)
    assert bad.status_code == 400, bad.text
