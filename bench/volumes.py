#!/usr/bin/env python3
"""Volume benchmark: what a persistent volume gives a sandbox's file I/O, against the sandbox's
own disk (its overlay's writable layer), in the same sandbox and the same run.

One server per backend, one volume, one sandbox per tier (namespaces, and gVisor where runsc is
installed) with the volume at /vol. Backends: `image` (the single-machine default: an ext4 image
per volume) and `juicefs` (the cluster's shared store, `--volumes-juicefs`: JuiceFS with its
metadata in SQLite and its data in a SeaweedFS `weed mini` on loopback, both from the test venv,
seen through Warren's id-keeping view; the same path a node's sandboxes take). Inside, the same probe runs on /vol and on /workspace:
  * sequential write of --mb MB (1 MiB writes, fsync at the end), then a sequential read of it
    after dropping what the sandbox can drop (the read is of a file written in the same run: on
    the sandbox's own disk a tmpfs, so its figure is memory speed);
  * small files: --files files of 4 KiB created (open, write, close) in one directory, per second;
    then the same files stat'ed, per second.
Each figure is the median of --runs; the floor is the same probe on the host, on the directory
of the data dir (the disk volumes' images live on).

Usage (as root, after scripts/test built everything and made tests/.venv):
  tests/.venv/bin/python bench/volumes.py [--mb 256] [--files 2000] [--runs 3] [--backend image,juicefs]
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import requests

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from create_to_first import start_server  # noqa: E402

PROBE = r'''
import json, os, sys, time
d, mb, files = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = {}
block = b"w" * (1 << 20)
path = os.path.join(d, "seq.bin")
t = time.perf_counter()
with open(path, "wb") as f:
    for _ in range(mb):
        f.write(block)
    f.flush()
    os.fsync(f.fileno())
out["write_mb_s"] = mb / (time.perf_counter() - t)
try:
    fd = os.open(path, os.O_RDONLY)
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    os.close(fd)
except OSError:
    pass
t = time.perf_counter()
with open(path, "rb") as f:
    while f.read(1 << 20):
        pass
out["read_mb_s"] = mb / (time.perf_counter() - t)
os.remove(path)
small = os.path.join(d, "small")
os.mkdir(small)
data = b"s" * 4096
t = time.perf_counter()
for i in range(files):
    with open(os.path.join(small, f"f{i}"), "wb") as f:
        f.write(data)
out["create_per_s"] = files / (time.perf_counter() - t)
t = time.perf_counter()
for i in range(files):
    os.stat(os.path.join(small, f"f{i}"))
out["stat_per_s"] = files / (time.perf_counter() - t)
for i in range(files):
    os.remove(os.path.join(small, f"f{i}"))
os.rmdir(small)
print(json.dumps(out))
'''

FIGURES = [("write_mb_s", "seq write MB/s"), ("read_mb_s", "seq read MB/s"),
           ("create_per_s", "4 KiB creates/s"), ("stat_per_s", "stats/s")]


def median_of(samples):
    return {k: statistics.median(s[k] for s in samples) for k, _ in FIGURES}


def line(label, m):
    print(f"{label:<36}" + "  ".join(f"{name} {m[k]:>9.0f}" for k, name in FIGURES), flush=True)


def host_floor(data_dir, args):
    d = tempfile.mkdtemp(dir=data_dir, prefix="bench-floor-")
    runs = [json.loads(subprocess.run([sys.executable, "-c", PROBE, d, str(args.mb), str(args.files)],
                                      capture_output=True, text=True, check=True).stdout)
            for _ in range(args.runs)]
    os.rmdir(d)
    return median_of(runs)


def shared_store(root):
    """weed mini on loopback and a JuiceFS file system on it; returns (server args, stop)."""
    bin_dir = os.path.dirname(sys.executable)
    weed, juicefs = os.path.join(bin_dir, "weed"), os.path.join(bin_dir, "juicefs")
    if not (os.path.exists(weed) and os.path.exists(juicefs)):
        raise SystemExit("juicefs and weed are not in this venv (scripts/test installs them in tests/.venv)")
    def free_port():
        import socket
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]
    config = os.path.join(root, "s3.json")
    with open(config, "w") as f:
        f.write('{"identities":[{"name":"b","credentials":[{"accessKey":"bench","secretKey":"benchsecret"}],'
                '"actions":["Admin","Read","Write","List"]}]}')
    s3 = free_port()
    os.makedirs(os.path.join(root, "weed"))
    ports = [f"-{p}={free_port()}" for p in ("master.port", "volume.port", "filer.port", "admin.port",
                                             "s3.port.iceberg", "s3.port.lance")]
    weed_proc = subprocess.Popen([weed, f"-logdir={root}", "mini", f"-dir={root}/weed", "-ip=127.0.0.1",
                                  "-ip.bind=127.0.0.1", f"-s3.port={s3}", f"-s3.config={config}", "-webdav=false",
                                  f"-s3.localSocket={root}/s3.sock", f"-filer.localSocket={root}/filer.sock",
                                  *ports],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    for _ in range(300):
        try:
            requests.get(f"http://127.0.0.1:{s3}/", timeout=1)
            break
        except requests.RequestException:
            time.sleep(0.2)
    meta = f"sqlite3://{root}/meta.db"
    subprocess.run([juicefs, "format", "--no-update", "--storage", "s3", "--bucket", f"http://127.0.0.1:{s3}/bench",
                    "--access-key", "bench", "--secret-key", "benchsecret", meta, "bench"],
                   check=True, capture_output=True)

    def stop():
        weed_proc.terminate()
        weed_proc.wait(timeout=30)
        shutil.rmtree(root, ignore_errors=True)
    return ["--volumes-juicefs", meta, "--juicefs", juicefs], stop


def bench_backend(backend, args, floor_done):
    stop_store = None
    extra = []
    if backend == "juicefs":
        extra, stop_store = shared_store(tempfile.mkdtemp(prefix="warren-bench-jfs-"))
    proc, url, key = start_server(extra)
    h = {"X-API-Key": key}
    try:
        data_dir = next(a for a in proc.args if a.startswith("/tmp/warren-bench-"))
        if not floor_done:
            line("floor: host, data dir's disk", host_floor(data_dir, args))
        tiers = requests.get(url + "/health").json()["isolation_tiers"]
        size = max(1024, args.mb * 4)
        assert requests.post(url + "/v1/volumes", headers=h, json={"name": "bench", "size_mb": size}).status_code == 201
        for tier in [t for t in ("namespaces", "gvisor") if t in tiers]:
            r = requests.post(url + "/v1/sandboxes", headers=h, json={
                "template_name": "base", "isolation": tier, "volumes": [{"name": "bench", "path": "/vol"}]})
            r.raise_for_status()
            sid = r.json()["id"]
            from e2b import Sandbox
            os.environ.update(E2B_API_URL=url, E2B_SANDBOX_URL=url, E2B_API_KEY=key)
            sb = Sandbox.connect(sid)
            sb.files.write("/tmp/probe.py", PROBE)
            for where in ("/vol", "/workspace"):
                runs = []
                for _ in range(args.runs):
                    out = sb.commands.run(f"python3 /tmp/probe.py {where} {args.mb} {args.files}", user="root",
                                          timeout=600)
                    runs.append(json.loads(out.stdout))
                label = f"{tier}: {f'volume ({backend})' if where == '/vol' else 'own disk (tmpfs upper)'}"
                line(label, median_of(runs))
            requests.delete(f"{url}/v1/sandboxes/{sid}", headers=h)
        requests.delete(url + "/v1/volumes/bench", headers=h)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        if stop_store:
            stop_store()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=int, default=256)
    p.add_argument("--files", type=int, default=2000)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--backend", default="image,juicefs", help="comma-separated: image, juicefs")
    args = p.parse_args()
    for i, backend in enumerate(args.backend.split(",")):
        bench_backend(backend.strip(), args, floor_done=i > 0)


if __name__ == "__main__":
    main()
