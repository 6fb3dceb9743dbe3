#!/usr/bin/env python3
"""Many at once: create -> first command result by the computesdk benchmark's method, one at a time
and in bursts, through the official E2B and Hopx JS SDKs, beside the floor measured in the same run.

The method (computesdk/benchmarks, "time to interactive"): a clock in the client around
`Sandbox.create()` and the first command's result (`echo "benchmark"`); the kill after it is not
timed; a burst starts N such lifecycles at once and reports the median (and p95/p99/max) of the N.

The floor for N: N bare `python3 -c 'print(1)'` in fresh namespaces (user, pid, mount, net, uts,
ipc; chrooted into the template's root file system when it is built) started at once, each timed
from the common start to its exit. The ratio printed is the SDK median over the floor median.

Client CPU must not be the bottleneck: a burst is driven by --procs Node processes (each with its
own event loop, started before the clock), and each figure is printed with
  * client CPU: the CPU time the client processes spent, per lifecycle;
  * server held: the time the server held the lifecycle's requests until their last byte
    (`warren_http_request_seconds_sum` before and after), per lifecycle;
  * server CPU: the server process's own CPU time (all threads; not the sandboxes'), per lifecycle.

With --check, each ratio is compared with the one recorded in docs/benchmarks.md
(`<!-- burst-ratio SDK N VALUE -->`) and the run fails when one is more than 20% worse.

Usage (as root, after scripts/test built everything and made tests/.venv and tests/js):
  tests/.venv/bin/python bench/burst.py [--sizes 1,20,100] [--sdks e2b,hopx] [--runs 20]
      [--bursts 3] [--procs 4] [--template base] [--check] [-- SERVER ARGS...]
Starts its own `warren serve` (default configuration plus SERVER ARGS) on a free loopback port.
"""
import argparse
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
JS = os.path.join(ROOT, "tests", "js")
sys.path.insert(0, HERE)
from create_to_first import pct, start_server  # noqa: E402

UNSHARE = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount", "--net", "--uts",
           "--ipc", "--mount-proc"]
SLIP = 1.2  # --check fails a ratio more than 20% above the recorded one


def floor_argv(template):
    cache = os.environ.get("WARREN_CACHE_DIR", "/var/cache/warren")
    rootfs = os.path.join(cache, "templates", template, "rootfs")
    code = ["python3", "-c", "print(1)"]
    if os.path.isfile(os.path.join(rootfs, "usr", "bin", "python3")):
        return UNSHARE[:-1] + ["chroot", rootfs] + code, "template python3"
    return UNSHARE + code, "host python3"


def floor_at_once(n, argv, repeats):
    """Each process's time from the common start to its exit, `n` started at once, `repeats` times."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(n)]
        pending = {p.pid: p for p in procs}
        while pending:
            pid, status = os.wait()
            if pid in pending:
                end = time.perf_counter()
                p = pending.pop(pid)
                p.returncode = os.waitstatus_to_exitcode(status)
                if p.returncode != 0 or p.stdout.read() != b"1\n":
                    raise SystemExit(f"floor command failed: {argv}: {p.stderr.read().decode()}")
                p.stdout.close()
                p.stderr.close()
                samples.append(end - start)
    return samples


def scrape(url, key):
    text = requests.get(f"{url}/metrics", headers={"X-API-Key": key}, timeout=10).text
    held = 0.0
    pooled = 0
    for line in text.splitlines():
        if line.startswith("warren_http_request_seconds_sum"):
            held = float(line.split()[-1])
        elif line.startswith("warren_pool_ready{"):
            pooled += int(float(line.split()[-1]))
    return held, pooled


def server_cpu(pid):
    if not pid:
        return 0.0
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(url, key, pool_full):
    """Untimed, between figures: the sandboxes just killed are gone and a warm pool is full again."""
    deadline = time.time() + 60
    while time.time() < deadline:
        live = requests.get(f"{url}/v1/sandboxes", headers={"X-API-Key": key}, timeout=10).json()
        items = live.get("data", live.get("sandboxes", [])) if isinstance(live, dict) else live
        if not items and scrape(url, key)[1] >= pool_full:
            break
        time.sleep(0.2)
    time.sleep(0.3)


def run_clients(sdk, n, procs, template, env, seq_runs=0):
    """`n` lifecycles at once over `procs` Node processes (or `seq_runs` one after another in one).
    Returns (samples in ms, failures, client CPU ms)."""
    if seq_runs:
        counts, mode = [seq_runs], ["seq"]
    else:
        procs = max(1, min(procs, n))
        counts = [n // procs + (1 if i < n % procs else 0) for i in range(procs)]
        mode = []
    # Node and the SDK load before the clock starts; every process starts its lifecycles then.
    start_at = int(time.time() * 1000) + 1500 + 250 * len(counts)
    children = [subprocess.Popen(["node", os.path.join(HERE, "burst_client.mjs"), sdk, str(c), str(start_at),
                                  template, *mode], cwd=JS, env=env, stdout=subprocess.PIPE, text=True)
                for c in counts]
    samples, failures, cpu = [], [], 0.0
    for c in children:
        out, _ = c.communicate(timeout=600)
        if c.returncode != 0 or not out.strip():
            raise SystemExit(f"burst client ({sdk}) failed with exit {c.returncode}")
        r = json.loads(out.strip().splitlines()[-1])
        samples += r["samples"]
        failures += r["failures"]
        cpu += r["cpu_ms"]
    return samples, failures, cpu


def line(label, ms, n_asked, failures, client_cpu, held, srv_cpu, floor_ms):
    done = max(1, len(ms))
    med = statistics.median(ms) if ms else float("nan")
    ratio = med / floor_ms if floor_ms else float("nan")
    print(f"{label:<22} n={len(ms):<4} failed={len(failures):<3} median={med:8.1f}  p95={pct(ms, 95) if ms else 0:8.1f}  "
          f"p99={pct(ms, 99) if ms else 0:8.1f}  max={max(ms) if ms else 0:8.1f} ms | floor median {floor_ms:7.1f} ms, "
          f"ratio {ratio:5.2f} | per lifecycle: client CPU {client_cpu / done:6.1f} ms, server held "
          f"{held * 1000 / done:6.1f} ms, server CPU {srv_cpu * 1000 / done:5.1f} ms", flush=True)
    for f in sorted(set(failures))[:5]:
        print(f"    failure: {f}", flush=True)
    return ratio


def recorded_ratios():
    path = os.path.join(ROOT, "docs", "benchmarks.md")
    out = {}
    for sdk, n, value in re.findall(r"<!-- burst-ratio (\w+) (\d+) ([\d.]+) -->", open(path).read()):
        out[(sdk, int(n))] = float(value)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1,20,100", help="1 = one at a time (--runs of them); N = N at once")
    ap.add_argument("--sdks", default="e2b,hopx")
    ap.add_argument("--runs", type=int, default=20, help="lifecycles one at a time")
    ap.add_argument("--bursts", type=int, default=3, help="bursts of each size")
    ap.add_argument("--procs", type=int, default=4, help="client processes that share a burst")
    ap.add_argument("--template", default="base")
    ap.add_argument("--check", action="store_true",
                    help="fail when a ratio to its floor is >20%% worse than recorded in docs/benchmarks.md")
    ap.add_argument("server_args", nargs="*", help="after --: extra `warren serve` arguments")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    sdks = args.sdks.split(",")

    proc, url, key = start_server(args.server_args, by_demand=True)
    env = dict(os.environ, E2B_API_URL=url, E2B_SANDBOX_URL=url, E2B_API_KEY=key, WARREN_URL=url,
               WARREN_API_KEY=key)
    env.pop("E2B_DOMAIN", None)
    ratios = {}
    try:
        argv, what = floor_argv(args.template)
        print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {os.cpu_count()} cpus  template={args.template}  "
              f"procs={args.procs}  server args={args.server_args or 'defaults'}  floor: {what} in 6 namespaces",
              flush=True)
        # One untimed lifecycle per SDK warms the template's page cache and the pool's filler.
        for sdk in sdks:
            run_clients(sdk, 1, 1, args.template, env, seq_runs=1)
        time.sleep(2)
        pool_full = scrape(url, key)[1]
        for n in sizes:
            reps = args.runs if n == 1 else args.bursts
            floor_ms = statistics.median([x * 1000 for x in floor_at_once(n, argv, reps if n == 1 else reps)])
            for sdk in sdks:
                settle(url, key, pool_full)
                ms, failures, client_cpu = [], [], 0.0
                held0, cpu0 = scrape(url, key)[0], server_cpu(proc.pid)
                held, srv = 0.0, 0.0
                for _ in range(1 if n == 1 else reps):
                    if n > 1:
                        settle(url, key, pool_full)
                        held0, cpu0 = scrape(url, key)[0], server_cpu(proc.pid)
                    s, f, c = run_clients(sdk, n, args.procs, args.template, env, seq_runs=args.runs if n == 1 else 0)
                    ms += s
                    failures += f
                    client_cpu += c
                    held += scrape(url, key)[0] - held0
                    srv += server_cpu(proc.pid) - cpu0
                label = f"{sdk}: " + ("one at a time" if n == 1 else f"{n} at once")
                ratios[(sdk, n)] = line(label, ms, n, failures, client_cpu, held, srv, floor_ms)
                if failures:
                    ratios[(sdk, n)] = float("inf")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    if args.check:
        worse = []
        for k, was in recorded_ratios().items():
            now = ratios.get(k)
            if now is not None and now > was * SLIP:
                worse.append(f"{k[0]} {k[1]} at once: ratio {now:.2f} vs recorded {was:.2f}")
        if worse:
            print("SLIPPED more than 20% from docs/benchmarks.md:\n  " + "\n  ".join(worse), flush=True)
            return 1
        print("--check: every ratio within 20% of docs/benchmarks.md", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
