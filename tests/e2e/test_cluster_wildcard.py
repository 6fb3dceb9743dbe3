"""A cluster in wildcard mode: `{port}-{id}.<domain>` on a control plane reaches sandboxes on
whichever node runs them (one plain, one HTTPS), the agent token-checked and preview ports open.
DNS is not needed: requests go to the control plane's loopback address with the Host header set."""
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest
import requests

from conftest import WARREN, free_port, start_postgres
from test_cluster import warren_host_state, wait_for

pytestmark = pytest.mark.cluster

DOMAIN = "sb.cluster.test"
KEY = "wrn_test_" + os.urandom(16).hex()
SECRET = "join-" + os.urandom(8).hex()
NODES = ("127.0.0.2", "127.0.0.3")


@pytest.fixture(scope="module")
def wildcard_cluster():
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: nodes need root (cgroups, netns, overlay)")
    before = warren_host_state()
    root = tempfile.mkdtemp(prefix="warren-wildcard-cluster-")
    db, stop_db = start_postgres()
    env = dict(os.environ, WARREN_API_KEY=KEY, WARREN_NODE_JOIN_SECRET=SECRET, RUST_LOG="info")
    port = free_port()
    cp = f"http://127.0.0.1:{port}"
    log = lambda name: open(os.path.join(root, name + ".log"), "w")  # noqa: E731
    procs = [subprocess.Popen([WARREN, "serve", "--no-pool", "--database-url", db, "--listen", f"127.0.0.1:{port}",
                               "--no-local-node", "--data-dir", f"{root}/cp", "--no-prebuild",
                               "--wildcard-domain", DOMAIN], stdout=log("cp"), stderr=subprocess.STDOUT, env=env)]
    try:
        wait_for(lambda: requests.get(cp + "/health", timeout=1).ok, 60, "control plane")
        for ip in NODES:
            tls = ["--tls"] if ip == NODES[1] else []
            procs.append(subprocess.Popen([WARREN, "node", "--control-plane", cp, "--listen", f"{ip}:7070",
                                           "--data-dir", f"{root}/node-{ip}", "--wildcard-domain", DOMAIN, *tls],
                                          stdout=log(f"node-{ip}"), stderr=subprocess.STDOUT, env=env))

        def healthy():
            data = requests.get(cp + "/v1/admin/nodes", headers={"X-API-Key": KEY}, timeout=5).json()["data"]
            return sum(n["state"] == "healthy" for n in data) == len(NODES)

        wait_for(healthy, 60, "nodes healthy")
        yield {"cp": cp}
    finally:
        try:
            page = requests.get(cp + "/v1/sandboxes?limit=100", headers={"X-API-Key": KEY}, timeout=10).json()
            for s in page.get("data", []):
                requests.delete(f"{cp}/v1/sandboxes/{s['id']}", headers={"X-API-Key": KEY}, timeout=60)
        except requests.RequestException:
            pass
        for p in procs[1:] + procs[:1]:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait(timeout=60)
        stop_db()
        shutil.rmtree(root, ignore_errors=True)
    assert warren_host_state() == before, f"nodes left traces: {warren_host_state()}"


def via(cp, host, path, token=None, **kw):
    headers = {"Host": host}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(kw.pop("method", "GET"), cp + path, headers=headers, timeout=30, **kw)


def test_agent_and_preview_ports_through_a_control_plane_on_every_node(wildcard_cluster):
    cp = wildcard_cluster["cp"]
    made = [requests.post(cp + "/v1/sandboxes", headers={"X-API-Key": KEY}, json={"template_name": "code-interpreter"},
                          timeout=60).json() for _ in range(6)]
    try:
        assert all("id" in s for s in made), f"a create failed: {made}"
        nodes = {s["node_id"] for s in made}
        assert len(nodes) == len(NODES), f"placed on {nodes}"
        for s in made:
            sid, token = s["id"], s["auth_token"]
            assert s["public_host"] == f"http://7777-{sid}.{DOMAIN}", s
            agent = f"7777-{sid}.{DOMAIN}"
            body = {"command": "bash", "args": ["-c", "echo routed-$((40+2))"]}
            assert via(cp, agent, "/commands/run", method="POST", json=body).status_code == 401
            res = via(cp, agent, "/commands/run", token=token, method="POST", json=body)
            assert res.status_code == 200 and res.json()["stdout"] == "routed-42\n", res.text
            start = {"command": "bash", "args": ["-c", f"echo preview-{sid} > /workspace/index.txt; cd /workspace && exec python3 -m http.server 8080"], "timeout": 60}
            assert via(cp, agent, "/commands/background", token=token, method="POST", json=start).status_code == 200
            preview = f"8080-{sid}.{DOMAIN}"
            deadline = time.time() + 15
            while True:
                res = via(cp, preview, "/index.txt")
                if res.status_code == 200 or time.time() > deadline:
                    break
                time.sleep(0.2)
            assert res.status_code == 200 and res.text == f"preview-{sid}\n"
        # an unknown sandbox under the domain: a 404, not the API and not a hang
        assert via(cp, f"7777-zzzzzzzzzzzzzzzzzz.{DOMAIN}", "/health").status_code == 404
    finally:
        for s in made:
            if "id" in s:
                requests.delete(f"{cp}/v1/sandboxes/{s['id']}", headers={"X-API-Key": KEY}, timeout=60)
