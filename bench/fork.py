#!/usr/bin/env python3
"""Snapshot and fork of a running sandbox, against its floor (issue 16).

Prints p50/p95/p99 for
  * snapshot: `POST /v1/sandboxes/{id}/snapshot` of a running sandbox that wrote a few files;
  * fork into 1 and into N copies: `POST /v1/sandboxes` with `snapshot_id` (and `count`), until
    the answer, and until every copy answered `print(1)` through its own /execute (on the
    microVM tier, whose snapshots carry memory: `print(state)`, a variable the source defined);
  * the same number of plain creates of the template (`count`) for comparison;
  * floor: N template python3 processes started at once in fresh namespaces (unshare + chroot into
    the template's root file system), the least any N fresh sandboxes could cost here.

Usage (as root, after `scripts/test` has built everything and made tests/.venv):
  tests/.venv/bin/python bench/fork.py [--runs 10] [--copies 10] [--isolation namespaces]
Starts its own `warren serve` on a free loopback port with a throwaway data dir.
"""
import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import requests

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from create_to_first import report, start_server  # noqa: E402


def parallel_floor(rootfs, n, runs):
    argv = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount", "--net", "--uts", "--ipc",
            "--mount-proc", "chroot", rootfs, "python3", "-c", "print(1)"]
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        procs = [subprocess.Popen(argv, stdout=subprocess.PIPE) for _ in range(n)]
        for p in procs:
            if p.communicate()[0] != b"1\n":
                raise SystemExit("floor command failed")
        samples.append(time.perf_counter() - t)
    return samples


def first_results(http, sandboxes, code="print(1)", expect="1\n"):
    def one(sb):
        out = http.post(f"{sb['public_host']}/execute", json={"code": code, "language": "python"},
                        headers={"Authorization": f"Bearer {sb['auth_token']}"}).json()
        if out.get("stdout") != expect:
            raise SystemExit(f"unexpected /execute answer {out!r}")
    with ThreadPoolExecutor(len(sandboxes)) as pool:
        list(pool.map(one, sandboxes))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--copies", type=int, default=10)
    ap.add_argument("--template", default="code-interpreter")
    ap.add_argument("--isolation", default="namespaces")
    args = ap.parse_args()

    proc, url, key = start_server(["--isolation", args.isolation, "--max-sandboxes", "1000",
                                   "--max-vcpu", "10000", "--max-memory-mb", "10000000"])
    http = requests.Session()
    http.headers["X-API-Key"] = key
    try:
        print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {os.cpu_count()} cpus  template={args.template}  "
              f"isolation={args.isolation}  copies={args.copies}", flush=True)
        cache = os.environ.get("WARREN_CACHE_DIR", "/var/cache/warren")
        rootfs = os.path.join(cache, "templates", args.template, "rootfs")
        for n in (1, args.copies):
            report(f"floor: {n} x template python3 in fresh namespaces", parallel_floor(rootfs, n, args.runs))

        source = http.post(f"{url}/v1/sandboxes", json={"template_name": args.template}).json()
        http.post(f"{source['public_host']}/execute", headers={"Authorization": f"Bearer {source['auth_token']}"},
                  json={"code": "import os\nos.makedirs('/workspace/data', exist_ok=True)\n"
                                "for i in range(20): open(f'/workspace/data/{i}.txt', 'w').write('x' * 4096)\n"
                                "state = 42", "language": "python"})
        snaps, took = [], []
        for _ in range(args.runs):
            t = time.perf_counter()
            r = http.post(f"{url}/v1/sandboxes/{source['id']}/snapshot")
            took.append(time.perf_counter() - t)
            if r.status_code != 201:
                raise SystemExit(f"snapshot failed: {r.text}")
            snaps.append(r.json()["id"])
            with_memory = r.json()["with_memory"]
        report("snapshot of a running sandbox" + (" (with its memory)" if with_memory else ""), took)
        # A copy with memory answers from its source's interpreter state.
        check = ("print(state)", "42\n") if with_memory else ("print(1)", "1\n")

        for n in (1, args.copies):
            answered, first = [], []
            for i in range(args.runs):
                t = time.perf_counter()
                body = {"snapshot_id": snaps[i], "count": n}
                r = http.post(f"{url}/v1/sandboxes", json=body)
                t1 = time.perf_counter()
                if r.status_code != 201:
                    raise SystemExit(f"fork failed: {r.text}")
                made = r.json()["sandboxes"] if n > 1 else [r.json()]
                first_results(http, made, *check)
                t2 = time.perf_counter()
                answered.append(t1 - t)
                first.append(t2 - t)
                for sb in made:
                    http.delete(f"{url}/v1/sandboxes/{sb['id']}")
            report(f"fork into {n}: until the answer", answered)
            report(f"fork into {n}: until every first result", first)
            plain = []
            for _ in range(args.runs):
                t = time.perf_counter()
                r = http.post(f"{url}/v1/sandboxes", json={"template_name": args.template, "count": n})
                made = r.json()["sandboxes"] if n > 1 else [r.json()]
                first_results(http, made)
                plain.append(time.perf_counter() - t)
                for sb in made:
                    http.delete(f"{url}/v1/sandboxes/{sb['id']}")
            report(f"plain create of {n} (no snapshot): every first result", plain)
        for s in snaps:
            http.delete(f"{url}/v1/snapshots/{s}")
        http.delete(f"{url}/v1/sandboxes/{source['id']}")
    finally:
        proc.terminate()
        proc.wait(timeout=120)


if __name__ == "__main__":
    main()
