#!/usr/bin/env python3
"""Headline benchmark: create -> first result, through the official hopx-ai SDK, against the floor.

Prints p50/p95/p99 for
  * floor: a bare namespaced `python3 -c 'print(1)'` (unshare user+pid+mount+net+uts+ipc, and bwrap
    when installed) on this same machine, in this same run;
  * create -> first `run_code("print(1)")` via `Sandbox.create(...)` + `run_code` (wall time of both),
    the CPU time the SDK itself spends in this client meanwhile, and the same path in raw HTTP;
  * `commands.run("true")` round trip on a warm sandbox;
  * with --burst N, the same create -> first result for N sandboxes created at once;
  * with --pool N, all of it with N warm sandboxes kept by the server (`--pool TEMPLATE[@TIER]=N`):
    every timed create waits until the pool is full again, so each one takes a warm sandbox.

Usage (as root, after `scripts/test` has built everything and made tests/.venv):
  tests/.venv/bin/python bench/create_to_first.py [--runs 50] [--template code-interpreter]
      [--isolation namespaces|gvisor|microvm] [--burst 4] [--pool 20]
Starts its own `warren serve` on a free loopback port with a throwaway data dir, unless
WARREN_URL and WARREN_API_KEY point at a running server.
"""
import argparse
import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import requests
from hopx_ai import Sandbox

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# WARREN_BIN runs another build (e.g. a release tag's, to compare): its agent must lie beside it.
WARREN = os.environ.get("WARREN_BIN") or os.path.join(ROOT, "target", "release", "warren")


def pct(samples, p):
    s = sorted(samples)
    k = max(0, min(len(s) - 1, round(p / 100 * (len(s) - 1))))
    return s[k]


def report(label, samples_s):
    ms = [x * 1000 for x in samples_s]
    print(f"{label:<44} n={len(ms):<4} p50={pct(ms, 50):8.2f} ms  p95={pct(ms, 95):8.2f} ms  "
          f"p99={pct(ms, 99):8.2f} ms", flush=True)


def timed(argv, runs):
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        r = subprocess.run(argv, capture_output=True, text=True)
        out.append(time.perf_counter() - t)
        if r.returncode != 0 or r.stdout != "1\n":
            raise SystemExit(f"floor command failed: {argv}: {r.stderr}")
    return out


def floor(runs, template):
    code = ["python3", "-c", "print(1)"]
    report("floor: bare python3 -c print(1)", timed(code, runs))
    unshare = ["unshare", "--user", "--map-root-user", "--pid", "--fork", "--mount", "--net",
               "--uts", "--ipc", "--mount-proc"]
    report("floor: unshare (6 namespaces) python3", timed(unshare + code, runs))
    if shutil.which("bwrap"):
        bwrap = ["bwrap", "--unshare-all", "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
        report("floor: bwrap --unshare-all python3", timed(bwrap + code, runs))
    else:
        print("floor: bwrap not installed (apt-get install bubblewrap) - skipped", flush=True)
    # The same interpreter the sandbox runs: the host's python3 may be a different, slower build.
    cache = os.environ.get("WARREN_CACHE_DIR", "/var/cache/warren")
    rootfs = os.path.join(cache, "templates", template, "rootfs")
    if os.path.isdir(rootfs):
        chroot = unshare[:-1] + ["chroot", rootfs]
        report("floor: unshare + chroot template python3", timed(chroot + code, runs))


def start_server(extra=(), by_demand=False):
    """A throwaway `warren serve`; without `--pool` in `extra` and unless `by_demand`, with
    `--no-pool` (what these benchmarks call cold: every create starts a sandbox)."""
    if not by_demand and "--pool" not in extra:
        extra = ["--no-pool", *extra]
    data_dir = tempfile.mkdtemp(prefix="warren-bench-")
    # Removed when the benchmark exits (after the caller has stopped the server).
    atexit.register(shutil.rmtree, data_dir, True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    key = "wrn_bench_" + os.urandom(16).hex()
    # BENCH_SERVER_LOG keeps the server's log (e.g. its debug-level phase timings) past the run.
    log = open(os.environ.get("BENCH_SERVER_LOG") or os.path.join(data_dir, "server.log"), "w")
    proc = subprocess.Popen(
        [WARREN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir, "--no-prebuild",
         "--stop-sandboxes-on-exit", *extra],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, WARREN_API_KEY=key),
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            if requests.get(url + "/health", timeout=1).status_code == 200:
                return proc, url, key
        except requests.RequestException:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit("warren serve did not come up:\n" + open(log.name).read())


POOL = 0


def wait_pool(url, key):
    """With --pool: waits (untimed) until the server's warm pool is full again (by demand: until
    it holds one)."""
    if not POOL:
        return
    want = 1 if POOL < 0 else POOL
    for _ in range(3000):
        text = requests.get(f"{url}/metrics", headers={"X-API-Key": key}).text
        ready = sum(int(float(l.split()[-1])) for l in text.splitlines() if l.startswith("warren_pool_ready{"))
        if ready >= want:
            time.sleep(0.06)  # past the filler's quiet period
            return
        time.sleep(0.01)
    raise SystemExit("the warm pool did not fill up in 30 s")


def raw_create_to_first(url, key, template, runs):
    """The same path without the SDK: one kept-alive HTTP session, POST create, POST /execute."""
    http = requests.Session()
    samples = []
    for _ in range(runs):
        wait_pool(url, key)
        t0 = time.perf_counter()
        sb = http.post(f"{url}/v1/sandboxes", json={"template_name": template}, headers={"X-API-Key": key}).json()
        out = http.post(f"{sb['public_host']}/execute", json={"code": "print(1)", "language": "python"},
                        headers={"Authorization": f"Bearer {sb['auth_token']}"}).json()
        samples.append(time.perf_counter() - t0)
        if out.get("stdout") != "1\n":
            raise SystemExit(f"unexpected /execute answer {out!r}")
        http.delete(f"{url}/v1/sandboxes/{sb['id']}", headers={"X-API-Key": key})
    return samples


def create_and_run(url, key, template):
    """Create -> first result of one sandbox; returns (its duration, when it ended)."""
    t0 = time.perf_counter()
    sb = Sandbox.create(template=template, base_url=url, api_key=key)
    try:
        if sb.run_code("print(1)").stdout != "1\n":
            raise SystemExit("unexpected output in a burst")
        done = time.perf_counter()
        return done - t0, done
    finally:
        sb.kill()


def raw_create_and_run(url, key, template):
    """Create -> first result over raw HTTP (a session per call); returns (duration, end, id)."""
    http = requests.Session()
    t0 = time.perf_counter()
    sb = http.post(f"{url}/v1/sandboxes", json={"template_name": template}, headers={"X-API-Key": key}).json()
    out = http.post(f"{sb['public_host']}/execute", json={"code": "print(1)", "language": "python"},
                    headers={"Authorization": f"Bearer {sb['auth_token']}"}).json()
    done = time.perf_counter()
    if out.get("stdout") != "1\n":
        raise SystemExit(f"unexpected /execute answer {out!r}")
    return done - t0, done, sb["id"]


def timed_bursts(size, runs, url, key, one):
    """`one()` -> (duration, end, id or None) run `size` at once, repeated to `runs` samples;
    returns (each one's duration, each burst until its last result)."""
    samples, walls = [], []
    for _ in range(max(1, runs // size)):
        wait_pool(url, key)
        start = time.perf_counter()
        with ThreadPoolExecutor(size) as pool:
            results = list(pool.map(lambda _: one(), range(size)))
        samples += [r[0] for r in results]
        walls.append(max(r[1] for r in results) - start)
        # Deleted after the burst: a delete's teardown would share the CPU with the others' creates.
        for *_, sid in results:
            if sid:
                requests.delete(f"{url}/v1/sandboxes/{sid}", headers={"X-API-Key": key})
    return samples, walls


def burst(url, key, template, size, runs):
    """N creates at once over raw HTTP (what the server costs), then through the SDK (whose
    client work, N SDK clients in one Python process, dominates on a small machine)."""
    for label, one in (("raw HTTP", lambda: raw_create_and_run(url, key, template)),
                       ("warren", lambda: (*create_and_run(url, key, template), None))):
        samples, walls = timed_bursts(size, runs, url, key, one)
        report(f"{label}: create -> first result, {size} at once", samples)
        report(f"{label}: burst of {size}, until the last result", walls)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--template", default="code-interpreter")
    ap.add_argument("--isolation", default="namespaces", help="tier of the created sandboxes (namespaces, gvisor, microvm)")
    ap.add_argument("--pool", type=int, default=0,
                    help="keep this many warm sandboxes of the template on the tier (warren serve --pool); "
                         "-1: the server's default, pools by demand; 0: none (--no-pool)")
    ap.add_argument("--burst", type=int, default=0,
                    help="also create this many sandboxes at once (repeated until --runs samples), as an agent "
                         "fanning out does, and time each one's create -> first result")
    args = ap.parse_args()
    global POOL
    POOL = args.pool

    proc = None
    url, key = os.environ.get("WARREN_URL"), os.environ.get("WARREN_API_KEY")
    if not (url and key):
        extra = ["--isolation", args.isolation]
        if args.pool > 0:
            extra += ["--pool", f"{args.template}={args.pool}"]
        proc, url, key = start_server(extra, by_demand=args.pool < 0)
    try:
        print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {os.cpu_count()} cpus  template={args.template}  "
              f"isolation={args.isolation}  pool={args.pool}", flush=True)
        floor(args.runs, args.template)
        if args.isolation == "gvisor":
            for platform in ("systrap", "ptrace"):
                argv = ["runsc", "--network=none", "--ignore-cgroups", f"--platform={platform}", "do", "true"]
                try:
                    samples = [0.0] * 0
                    for _ in range(min(args.runs, 20)):
                        t = time.perf_counter()
                        if subprocess.run(argv, capture_output=True).returncode != 0:
                            raise RuntimeError
                        samples.append(time.perf_counter() - t)
                    report(f"floor: bare runsc do true ({platform})", samples)
                except (RuntimeError, FileNotFoundError):
                    print(f"floor: runsc platform {platform} unavailable here", flush=True)

        if args.isolation == "microvm":
            # the tier's floor: a bare QEMU boot to the guest agent (no template, no network),
            # timed inside `warren doctor` from QEMU's start to the agent's ready line
            samples = []
            for _ in range(min(args.runs, 20)):
                out = subprocess.run([WARREN, "doctor", "--json", "--runs", "1"], capture_output=True, text=True)
                vm = next(t for t in json.loads(out.stdout)["tiers"] if t["tier"] == "microvm")
                if not vm.get("start_ms"):
                    raise SystemExit(f"microVM floor unavailable: {vm.get('why')}")
                samples.append(vm["start_ms"] / 1000)
            report(f"floor: bare QEMU boot to the guest agent ({vm['accel']})", samples)
            if vm["accel"] == "tcg":
                print("NOTE: microVM guests are EMULATED here (QEMU TCG, no hardware virtualisation): "
                      "these figures say nothing about microVM speed on a KVM host", flush=True)

        # One untimed create warms the template's page cache, like any server that has run before.
        Sandbox.create(template=args.template, base_url=url, api_key=key).kill()

        create, first, total, client_cpu = [], [], [], []
        for _ in range(args.runs):
            wait_pool(url, key)
            t0, cpu0 = time.perf_counter(), time.process_time()
            sb = Sandbox.create(template=args.template, base_url=url, api_key=key)
            t1 = time.perf_counter()
            res = sb.run_code("print(1)")
            t2, cpu2 = time.perf_counter(), time.process_time()
            if res.stdout != "1\n":
                raise SystemExit(f"unexpected output {res.stdout!r}")
            sb.kill()
            create.append(t1 - t0)
            first.append(t2 - t1)
            total.append(t2 - t0)
            client_cpu.append(cpu2 - cpu0)
        report("warren: Sandbox.create", create)
        report("warren: first run_code('print(1)')", first)
        report("warren: create -> first result", total)
        report("  of which CPU spent in this client (SDK)", client_cpu)
        report("raw HTTP: create -> first result", raw_create_to_first(url, key, args.template, args.runs))
        if args.burst:
            burst(url, key, args.template, args.burst, args.runs)

        sb = Sandbox.create(template=args.template, base_url=url, api_key=key)
        try:
            sb.commands.run("true")
            rtt = []
            for _ in range(max(args.runs, 100)):
                t = time.perf_counter()
                r = sb.commands.run("true")
                rtt.append(time.perf_counter() - t)
                if r.exit_code != 0:
                    raise SystemExit("commands.run('true') failed")
            report("warren: commands.run('true') warm", rtt)
            rtt = []
            for _ in range(max(args.runs, 100)):
                t = time.perf_counter()
                sb.run_code("print(1)")
                rtt.append(time.perf_counter() - t)
            report("warren: run_code('print(1)') warm", rtt)
        finally:
            sb.kill()
    finally:
        if proc:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
