#!/usr/bin/env python3
"""Live restore: time from `warren serve` start to healthy while it takes over N running
sandboxes that an earlier server (killed with SIGKILL) left behind, against the same server's
start with nothing to take over (the floor), in the same run.

Prints p50/p95/p99 of
  * start -> /health answering 200, with no sandbox to take over (floor);
  * start -> /health answering 200, taking over N running sandboxes;
  * the server's own take-over time (its "taken over" log line);
and checks after every restart that every sandbox answers at its old public_host.

Usage (as root, after `scripts/test` has built everything and made tests/.venv):
  tests/.venv/bin/python bench/restore.py [--sandboxes 50] [--runs 5] [--template base]
      [--isolation namespaces|gvisor|microvm]
"""
import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from create_to_first import WARREN, report  # noqa: E402


class Server:
    def __init__(self, data_dir, port, key):
        self.data_dir, self.port, self.key = data_dir, port, key
        self.url = f"http://127.0.0.1:{port}"
        self.log = os.path.join(data_dir, "server.log")
        self.proc = None

    def start(self):
        """Starts the server; returns seconds until /health answered."""
        with open(self.log, "a") as log:
            t0 = time.perf_counter()
            self.proc = subprocess.Popen(
                [WARREN, "serve", "--no-pool", "--listen", f"127.0.0.1:{self.port}", "--data-dir", self.data_dir,
                 "--no-prebuild", "--max-sandboxes", "1000", "--max-vcpu", "100000",
                 "--max-memory-mb", "100000000"],
                stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, WARREN_API_KEY=self.key),
                start_new_session=True)
        while True:
            try:
                if requests.get(self.url + "/health", timeout=1).status_code == 200:
                    return time.perf_counter() - t0
            except requests.RequestException:
                pass
            if self.proc.poll() is not None:
                raise SystemExit("warren serve exited:\n" + open(self.log).read()[-4000:])
            time.sleep(0.005)

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def adoption_ms(self):
        """The server's own figure from its last start's log line."""
        text = open(self.log).read()
        found = re.findall(r"taken over.* ms=(\d+)", text)
        return int(found[-1]) / 1000 if found else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sandboxes", type=int, default=50)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--template", default="base")
    ap.add_argument("--isolation", default="namespaces")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root")

    data_dir = tempfile.mkdtemp(prefix="warren-bench-restore-")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = Server(data_dir, port, "wrn_bench_" + os.urandom(16).hex())
    headers = {"X-API-Key": server.key}
    try:
        # The floor: the same server, same data dir, nothing to take over.
        empty = []
        for _ in range(args.runs):
            empty.append(server.start())
            server.kill9()
        print(f"creating {args.sandboxes} {args.isolation} sandboxes of {args.template} ...", flush=True)
        server.start()

        def create(_):
            r = requests.post(server.url + "/v1/sandboxes", headers=headers, timeout=600,
                              json={"template_name": args.template, "isolation": args.isolation})
            r.raise_for_status()
            return r.json()
        with ThreadPoolExecutor(4) as pool:
            made = list(pool.map(create, range(args.sandboxes)))
        full, adoption = [], []
        for _ in range(args.runs):
            server.kill9()
            full.append(server.start())
            adoption.append(server.adoption_ms())
            listed = requests.get(server.url + "/v1/sandboxes?limit=1000", headers=headers).json()["data"]
            hosts = {s["id"]: s["public_host"] for s in listed if s["status"] == "running"}
            for m in made:
                if hosts.get(m["id"]) != m["public_host"]:
                    raise SystemExit(f"{m['id']} not taken over at its public_host")
                r = requests.get(m["public_host"] + "/health", timeout=10)
                if r.status_code != 200:
                    raise SystemExit(f"{m['id']} does not answer after the restart")
        print(f"machine: {os.cpu_count()} cores; tier {args.isolation}; template {args.template}")
        report("floor: start -> healthy, nothing to take over", empty)
        report(f"start -> healthy, taking over {args.sandboxes} sandboxes", full)
        if all(a is not None for a in adoption):
            report(f"  of which the take-over itself ({args.sandboxes})", adoption)
    finally:
        if server.proc and server.proc.poll() is None:
            server.kill9()
        subprocess.run([WARREN, "stop-sandboxes", "--data-dir", data_dir], capture_output=True)
        shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
