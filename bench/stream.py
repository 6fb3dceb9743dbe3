#!/usr/bin/env python3
"""Streaming benchmark through /execute/stream with the official hopx-ai SDK (async API).

Prints
  * time to first streamed byte of `print('x')` on a warm sandbox (p50/p95/p99), next to the
    floor: the same interpreter started locally (unshare + chroot into the template) until its
    first byte on a pipe;
  * throughput of `yes | head -c 100M` streamed to the client (MB/s), next to the same pipeline
    read locally.

Usage (as root, after scripts/test built everything and made tests/.venv):
  tests/.venv/bin/python bench/stream.py [--runs 50] [--mb 100]
"""
import argparse
import asyncio
import os
import subprocess
import sys
import time

from hopx_ai import AsyncSandbox

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from create_to_first import pct, report, start_server  # noqa: E402


def floor_first_byte(runs, template):
    rootfs = os.path.join(os.environ.get("WARREN_CACHE_DIR", "/var/cache/warren"), "templates", template, "rootfs")
    argv = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount", "--net", "--uts", "--ipc",
            "chroot", rootfs, "python3", "-u", "-c", "print('x')"]
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        p = subprocess.Popen(argv, stdout=subprocess.PIPE)
        p.stdout.read(1)
        out.append(time.perf_counter() - t)
        p.wait()
    return out


def floor_throughput(mb):
    t = time.perf_counter()
    p = subprocess.Popen(["bash", "-c", f"yes | head -c {mb}M"], stdout=subprocess.PIPE)
    n = 0
    while chunk := p.stdout.read(1 << 16):
        n += len(chunk)
    p.wait()
    return n / (time.perf_counter() - t) / 1e6


async def measure(url, key, runs, mb, template):
    sb = await AsyncSandbox.create(template=template, base_url=url, api_key=key)
    try:
        async for _ in sb.run_code_stream("print('warm')"):
            pass
        first = []
        for _ in range(runs):
            t = time.perf_counter()
            got = None
            async for m in sb.run_code_stream("print('x')"):
                if got is None and m["type"] == "stdout":
                    got = time.perf_counter() - t
            first.append(got)
        t = time.perf_counter()
        n = 0
        async for m in sb.run_code_stream(f"yes | head -c {mb}M", language="bash", timeout=300):
            if m["type"] == "stdout":
                n += len(m["data"])
        rate = n / (time.perf_counter() - t) / 1e6
        if n != mb * 1024 * 1024:
            raise SystemExit(f"streamed {n} bytes, expected {mb * 1024 * 1024}")
        return first, rate
    finally:
        await sb.kill()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--template", default="code-interpreter")
    args = ap.parse_args()
    proc, url, key = None, os.environ.get("WARREN_URL"), os.environ.get("WARREN_API_KEY")
    if not (url and key):
        proc, url, key = start_server()
    try:
        print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {os.cpu_count()} cpus  template={args.template}", flush=True)
        report("floor: local python3 first byte", floor_first_byte(args.runs, args.template))
        first, rate = asyncio.run(measure(url, key, args.runs, args.mb, args.template))
        report("warren: /execute/stream first stdout byte", first)
        print(f"{'floor: yes | head -c %dM on a local pipe' % args.mb:<44} {floor_throughput(args.mb):8.1f} MB/s")
        print(f"{'warren: yes | head -c %dM via /execute/stream' % args.mb:<44} {rate:8.1f} MB/s", flush=True)
    finally:
        if proc:
            proc.terminate()
            proc.wait(timeout=60)


if __name__ == "__main__":
    main()
