#!/usr/bin/env python3
"""Density: idle sandboxes per GiB and create time as the machine fills up (issue 16).

Fills one server with idle `code-interpreter` sandboxes (each has run `print(1)` once, so its
interpreter is up) and at each level prints
  * create -> first result over raw HTTP (p50/p95/p99 of --samples, each deleted again),
  * the host memory the idle sandboxes hold (MemAvailable before minus now, per sandbox),
then deletes them all, timing each delete, and prints the floor measured in the same run (the
template's python3 in fresh namespaces).

Usage (as root, after `scripts/test` has built everything and made tests/.venv):
  tests/.venv/bin/python bench/density.py [--levels 1,100,500,1000,2000] [--samples 20]
Starts its own `warren serve` on a free loopback port with a throwaway data dir.
"""
import argparse
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from create_to_first import floor, report, start_server  # noqa: E402


def mem_available():
    for line in open("/proc/meminfo"):
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="1,100,500,1000")
    ap.add_argument("--samples", type=int, default=20)
    ap.add_argument("--template", default="code-interpreter")
    ap.add_argument("--workers", type=int, default=4, help="creates at once while filling")
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]

    proc, url, key = start_server(["--max-sandboxes", "100000", "--max-vcpu", "1000000",
                                   "--max-memory-mb", "1000000000"])
    local = threading.local()

    def session():
        if not hasattr(local, "http"):
            local.http = requests.Session()
            local.http.headers["X-API-Key"] = key
        return local.http

    def create_to_first():
        http = session()
        t = time.perf_counter()
        sb = http.post(f"{url}/v1/sandboxes", json={"template_name": args.template})
        if sb.status_code != 201:
            raise SystemExit(f"create failed: {sb.text}")
        sb = sb.json()
        out = http.post(f"{sb['public_host']}/execute", json={"code": "print(1)", "language": "python"},
                        headers={"Authorization": f"Bearer {sb['auth_token']}"}).json()
        if out.get("stdout") != "1\n":
            raise SystemExit(f"unexpected /execute answer {out!r}")
        return time.perf_counter() - t, sb["id"]

    idle = []
    try:
        print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {os.cpu_count()} cpus  template={args.template}  "
              f"memory {os.sysconf('SC_PHYS_PAGES') * os.sysconf('SC_PAGE_SIZE') / 2**30:.1f} GiB", flush=True)
        floor(args.samples, args.template)
        create_to_first()  # warms the template's page cache
        base = mem_available()
        for level in levels:
            started = time.perf_counter()
            with ThreadPoolExecutor(args.workers) as pool:
                idle += [sid for _, sid in pool.map(lambda _: create_to_first(), range(level - len(idle)))]
            fill = time.perf_counter() - started
            time.sleep(2)
            held = base - mem_available()
            samples = []
            for _ in range(args.samples):
                took, sid = create_to_first()
                samples.append(took)
                session().delete(f"{url}/v1/sandboxes/{sid}")
            report(f"{len(idle):>5} idle: create -> first result", samples)
            print(f"{len(idle):>5} idle: host memory held {held / 2**20:8.0f} MiB = {held / max(1, len(idle)) / 2**20:.1f} "
                  f"MiB each ({2**30 / max(1, held / max(1, len(idle))):.0f} per GiB); filled in {fill:.1f} s", flush=True)
        deletes = []
        for sid in idle:
            t = time.perf_counter()
            session().delete(f"{url}/v1/sandboxes/{sid}")
            deletes.append(time.perf_counter() - t)
        n = len(deletes)
        report(f"delete, first 100 of {n}", deletes[:100])
        report(f"delete, last 100 of {n}", deletes[-100:])
        print(f"deleting all {n}: {sum(deletes):.1f} s", flush=True)
        idle = []
    finally:
        for sid in idle:
            try:
                session().delete(f"{url}/v1/sandboxes/{sid}")
            except requests.RequestException:
                pass
        proc.terminate()
        proc.wait(timeout=600)


if __name__ == "__main__":
    main()
