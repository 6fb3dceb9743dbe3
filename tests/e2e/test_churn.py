"""Churn: 1,000 create → run → kill cycles, 4 at a time, through the real server. None may fail,
and afterwards the host must be as it was: processes, mounts, memory cgroups (also the hidden
dying ones the kernel keeps while pages are charged to them), network namespaces, veths, firewall
rules, the server's file descriptors, and host memory within a small bound.

Cycles: WARREN_CHURN_CYCLES (default 1000)."""
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import requests

CYCLES = int(os.environ.get("WARREN_CHURN_CYCLES", "1000"))
MEMORY_BOUND_MB = 200


def memory_cgroups():
    """Memory cgroups the kernel holds, dying ones included (v1 and v2 alike)."""
    for line in open("/proc/cgroups"):
        if line.startswith("memory"):
            return int(line.split()[2])
    return 0


def used_mb():
    m = {l.split(":")[0]: int(l.split()[1]) for l in open("/proc/meminfo")}
    return (m["MemTotal"] - m["MemAvailable"]) // 1024


def counts(server_pid):
    def lines(cmd):
        return len(subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines())
    return {
        "processes": len([p for p in os.listdir("/proc") if p.isdigit()]),
        "mounts": len(open("/proc/self/mountinfo").read().splitlines()),
        "memory cgroups": memory_cgroups(),
        "netns": lines(["ip", "netns", "list"]),
        "links": lines(["ip", "-o", "link"]),
        "nft rules": lines(["nft", "list", "ruleset"]),
        "server fds": len(os.listdir(f"/proc/{server_pid}/fd")),
    }


def test_a_thousand_lifecycles_leave_the_host_as_it_was(server):
    http = requests.Session()
    key = {"X-API-Key": server["api_key"]}

    def cycle(i):
        s = requests.Session()
        sb = s.post(server["base_url"] + "/v1/sandboxes", headers=key, timeout=120,
                    json={"template_name": "code-interpreter"})
        assert sb.status_code == 201, sb.text
        sb = sb.json()
        r = s.post(sb["public_host"] + "/execute", headers={"Authorization": f"Bearer {sb['auth_token']}"},
                   json={"code": f"import numpy; print({i})"}, timeout=120).json()
        assert r["stdout"] == f"{i}\n", r
        d = s.delete(f"{server['base_url']}/v1/sandboxes/{sb['id']}", headers=key, timeout=120)
        assert d.status_code == 200, d.text

    # One round first, so that pools and caches that are meant to stay are there before counting.
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(cycle, range(8)))
    time.sleep(1)
    pid = server["proc"].pid
    before, mem_before = counts(pid), used_mb()
    started = time.time()
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(cycle, range(CYCLES)))
    took = time.time() - started
    time.sleep(2)
    after, mem_after = counts(pid), used_mb()
    print(f"churn: {CYCLES} cycles in {took:.0f} s; host memory used {mem_before} -> {mem_after} MB; "
          f"memory cgroups {before['memory cgroups']} -> {after['memory cgroups']}")
    assert http.get(server["base_url"] + "/v1/sandboxes", headers=key).json()["data"] == []
    slack = {"processes": 5, "server fds": 8}
    for what, n in before.items():
        assert after[what] <= n + slack.get(what, 0), f"{what}: {n} before, {after[what]} after {CYCLES} cycles"
    assert mem_after <= mem_before + MEMORY_BOUND_MB, f"host memory used grew {mem_before} -> {mem_after} MB"
