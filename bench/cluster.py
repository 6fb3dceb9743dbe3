#!/usr/bin/env python3
"""Cluster benchmark: create -> first result through a control plane to a remote node, against
the embedded single-machine path and the floor, all on this machine in one run; and how long a
node failure takes to be noticed.

Prints p50/p95/p99 for
  * floor: bare and namespaced `python3 -c 'print(1)'` (as bench/create_to_first.py);
  * embedded: `warren serve` (control plane + its own node), SDK create -> first run_code;
  * cluster: `warren serve --no-local-node` on PostgreSQL + two `warren node`s on 127.0.0.2-3,
    the same SDK path (the SDK then talks to the node directly) and the same in raw HTTP;
  * node failure: kill -9 of a node daemon until `GET /v1/admin/nodes` says unhealthy.

Usage (as root, after scripts/test built everything and made tests/.venv):
  tests/.venv/bin/python bench/cluster.py [--runs 30] [--failures 5]
"""
import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import requests
from hopx_ai import Sandbox

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "tests", "e2e"))
from create_to_first import WARREN, floor, raw_create_to_first, report, start_server  # noqa: E402
from conftest import free_port, start_postgres  # noqa: E402

SECRET = "bench-" + os.urandom(8).hex()


def sdk_create_to_first(url, key, runs, **kw):
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sb = Sandbox.create(template="code-interpreter", base_url=url, api_key=key, **kw)
        out = sb.run_code("print(1)").stdout
        samples.append(time.perf_counter() - t0)
        sb.kill()
        if out != "1\n":
            raise SystemExit(f"unexpected output {out!r}")
    return samples


def wait(check, within):
    deadline = time.time() + within
    while time.time() < deadline:
        try:
            if check():
                return True
        except requests.RequestException:
            pass
        time.sleep(0.05)
    return False


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--failures", type=int, default=5)
    args = ap.parse_args()

    floor(args.runs, "code-interpreter")

    proc, url, key = start_server()
    try:
        sdk_create_to_first(url, key, 3)  # warm-up: template caches, SDK imports
        report("embedded: SDK create -> first result", sdk_create_to_first(url, key, args.runs))
        report("embedded: raw HTTP create -> first result", raw_create_to_first(url, key, "code-interpreter", args.runs))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)

    db, stop_db = start_postgres()
    root = tempfile.mkdtemp(prefix="warren-bench-cluster-")
    env = dict(os.environ, WARREN_API_KEY=key, WARREN_NODE_JOIN_SECRET=SECRET)
    port = free_port()
    cp_url = f"http://127.0.0.1:{port}"
    log = lambda name: open(os.path.join(root, name + ".log"), "w")  # noqa: E731
    procs = [subprocess.Popen([WARREN, "serve", "--no-pool", "--database-url", db, "--listen", f"127.0.0.1:{port}",
                               "--no-local-node", "--data-dir", f"{root}/cp", "--no-prebuild"],
                              stdout=log("cp"), stderr=subprocess.STDOUT, env=env)]
    node_argv = {ip: [WARREN, "node", "--control-plane", cp_url, "--listen", f"{ip}:7070",
                      "--data-dir", f"{root}/node-{ip}"] for ip in ("127.0.0.2", "127.0.0.3")}
    nodes = {}
    try:
        wait(lambda: requests.get(cp_url + "/health", timeout=1).ok, 60)
        for ip, argv in node_argv.items():
            nodes[ip] = subprocess.Popen(argv, stdout=log(f"node-{ip}"), stderr=subprocess.STDOUT, env=env)

        def states():
            data = requests.get(cp_url + "/v1/admin/nodes", headers={"X-API-Key": key}, timeout=5).json()["data"]
            return {n["public_host"].split("://")[1]: n["state"] for n in data}

        if not wait(lambda: list(states().values()).count("healthy") == 2, 60):
            logs = {n: open(os.path.join(root, n + ".log")).read()[-2000:] for n in ("cp", *(f"node-{ip}" for ip in nodes))}
            raise SystemExit(f"nodes did not join: {logs}")
        sdk_create_to_first(cp_url, key, 3)
        report("cluster: SDK create -> first result (remote node)", sdk_create_to_first(cp_url, key, args.runs))
        report("cluster: raw HTTP create -> first result", raw_create_to_first(cp_url, key, "code-interpreter", args.runs))

        noticed = []
        for _ in range(args.failures):
            victim = nodes["127.0.0.3"]
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            t0 = time.perf_counter()
            if not wait(lambda: states().get("127.0.0.3") == "unhealthy", 30):
                raise SystemExit("node failure not noticed within 30 s")
            noticed.append(time.perf_counter() - t0)
            nodes["127.0.0.3"] = subprocess.Popen(node_argv["127.0.0.3"], stdout=log("node-restart"),
                                                  stderr=subprocess.STDOUT, env=env)
            wait(lambda: states().get("127.0.0.3") == "healthy", 60)
            # Heartbeats are 2 s apart: start the next kill at a different point of the cycle.
            time.sleep(0.7)
        report("cluster: kill -9 of a node -> unhealthy", noticed)
    finally:
        for p in list(nodes.values()) + procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in list(nodes.values()) + procs:
            p.wait(timeout=60)
        stop_db()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
