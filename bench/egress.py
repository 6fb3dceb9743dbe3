#!/usr/bin/env python3
"""Egress benchmark: what a domain policy and a brokered secret cost a sandbox's HTTPS requests,
against a sandbox with plain internet access, all in one run on this machine.

An upstream HTTPS server runs in a network namespace this script creates (198.19.1.2, name
`up.test` pinned with --egress-resolve, certificate of a CA made here and given to the server
with --egress-upstream-ca). Three sandboxes make the same requests from inside:
  * internet: no policy (NAT straight out);
  * domains:  allow_out [up.test], deny_out [0.0.0.0/0] (the host's proxy reads the SNI and
              splices the connection to the name it dialled itself);
  * secret:   a secret bound to up.test (the proxy terminates TLS with the node CA and
              re-encrypts upstream).
Prints p50/p95/p99 of TCP connect + TLS handshake, and of one whole GET, per sandbox; then
create -> first result (raw HTTP create + run_code) with and without a domain policy.

Usage (as root, after scripts/test built everything and made tests/.venv):
  tests/.venv/bin/python bench/egress.py [--runs 200] [--creates 30]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import requests
from hopx_ai import Sandbox

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from create_to_first import floor, report, start_server  # noqa: E402

UPSTREAM = os.path.join(os.path.dirname(HERE), "tests", "e2e", "egress_upstream.py")
HOST, ADDR, NAME = "198.19.1.1", "198.19.1.2", "up.test"

# Runs in the sandbox: connect+handshake and whole-request times in seconds, as JSON.
PROBE = r'''
import json, os, socket, ssl, sys, time
ctx = ssl.create_default_context()
connect, whole = [], []
for _ in range(int(sys.argv[1])):
    t0 = time.perf_counter()
    s = ctx.wrap_socket(socket.create_connection((sys.argv[2], 443), timeout=10), server_hostname=sys.argv[3])
    t1 = time.perf_counter()
    s.sendall(("GET / HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nConnection: close\r\n\r\n"
               % (sys.argv[3], os.environ.get("TOKEN", "none"))).encode())
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    t2 = time.perf_counter()
    s.close()
    assert data.startswith(b"HTTP/1.") and b" 200 " in data[:20], data[:200]
    connect.append(t1 - t0)
    whole.append(t2 - t0)
print(json.dumps({"connect": connect, "whole": whole}))
'''


def upstream(certs):
    ca, ca_key = os.path.join(certs, "ca.pem"), os.path.join(certs, "ca.key")
    leaf, leaf_key = os.path.join(certs, "leaf.pem"), os.path.join(certs, "leaf.key")
    run = lambda *a: subprocess.run(list(a), check=True, capture_output=True)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=bench CA", "-days", "2",
        "-keyout", ca_key, "-out", ca)
    run("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={NAME}", "-keyout", leaf_key,
        "-out", leaf + ".csr")
    with open(os.path.join(certs, "ext"), "w") as f:
        f.write(f"subjectAltName=DNS:{NAME}\n")
    run("openssl", "x509", "-req", "-in", leaf + ".csr", "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-CAserial", os.path.join(certs, "serial"), "-days", "2", "-extfile", os.path.join(certs, "ext"),
        "-out", leaf)
    ns = f"wbeg{os.getpid() % 10000}"
    for c in (["ip", "netns", "add", ns],
              ["ip", "link", "add", f"{ns}h", "type", "veth", "peer", "name", "eth0", "netns", ns],
              ["ip", "addr", "add", f"{HOST}/24", "dev", f"{ns}h"], ["ip", "link", "set", f"{ns}h", "up"],
              ["ip", "-n", ns, "addr", "add", f"{ADDR}/24", "dev", "eth0"],
              ["ip", "-n", ns, "link", "set", "eth0", "up"], ["ip", "-n", ns, "link", "set", "lo", "up"]):
        subprocess.run(c, check=True)
    proc = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, UPSTREAM, leaf, leaf_key, ADDR],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"

    def stop():
        proc.kill()
        proc.wait()
        subprocess.run(["ip", "link", "del", f"{ns}h"])
        subprocess.run(["ip", "netns", "del", ns])
    return ca, stop


def create(url, key, body):
    r = requests.post(url + "/v1/sandboxes", json={"template_name": "code-interpreter", **body},
                      headers={"X-API-Key": key}, timeout=60)
    r.raise_for_status()
    return Sandbox.connect(r.json()["id"], base_url=url, api_key=key)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--creates", type=int, default=30)
    a = ap.parse_args()
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    if "198.19.1." in routes:
        raise SystemExit("198.19.1.0/24 is in use on this machine")
    certs = tempfile.mkdtemp(prefix="warren-bench-egress-")
    ca, stop_upstream = upstream(certs)
    proc, url, key = start_server(["--egress-resolve", f"{NAME}={ADDR}", "--egress-upstream-ca", ca])
    made = []
    try:
        floor(min(a.runs, 50), "code-interpreter")
        secret = requests.post(url + "/v1/secrets", headers={"X-API-Key": key}, timeout=10,
                               json={"name": "bench", "value": "v-" + os.urandom(8).hex(), "hosts": [NAME]})
        secret.raise_for_status()
        kinds = {
            "internet": {},
            "domains": {"network": {"allow_out": [NAME], "deny_out": ["0.0.0.0/0"]}},
            "secret": {"secrets": {"TOKEN": "bench"}},
        }
        ca_pem = open(ca).read()
        results = {}
        for kind, body in kinds.items():
            sb = create(url, key, body)
            made.append(sb)
            sb.files.write("/tmp/probe.py", PROBE)
            sb.files.write("/tmp/up-ca.pem", ca_pem)
            sb.commands.run("cat /tmp/up-ca.pem >> /etc/ssl/certs/ca-certificates.crt")
            out = sb.commands.run(f"python3 /tmp/probe.py {a.runs} {ADDR} {NAME}", timeout=600).stdout
            results[kind] = json.loads(out.strip().splitlines()[-1])
        for kind, r in results.items():
            report(f"HTTPS connect+handshake, {kind}", r["connect"])
            report(f"HTTPS GET (new connection), {kind}", r["whole"])
        med = lambda xs: sorted(xs)[len(xs) // 2] * 1000  # noqa: E731
        base = med(results["internet"]["connect"])
        for kind in ("domains", "secret"):
            print(f"connect p50 added by {kind}: {med(results[kind]['connect']) - base:+.2f} ms", flush=True)
        for sb in made:
            sb.kill()
        made = []
        for label, body in (("create -> first result, internet", {}),
                            ("create -> first result, domain policy", kinds["domains"])):
            samples = []
            for _ in range(a.creates):
                t0 = time.perf_counter()
                sb = create(url, key, body)
                assert sb.run_code("print(1)").stdout == "1\n"
                samples.append(time.perf_counter() - t0)
                sb.kill()
            report(label, samples)
    finally:
        for sb in made:
            try:
                sb.kill()
            except Exception:
                pass
        proc.terminate()
        proc.wait()
        stop_upstream()
        shutil.rmtree(certs, ignore_errors=True)


if __name__ == "__main__":
    main()
