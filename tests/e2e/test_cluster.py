"""Warren on many machines, on one: a real PostgreSQL, two control planes (`--no-local-node`)
and three `warren node`s on 127.0.0.2-4 (regions eu, us, us), driven by the official Python and
JS SDKs through either control plane. Nodes are killed, restarted and silenced; a control plane
is killed; nothing may be lost.
"""
import concurrent.futures
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time

import pytest
import requests

from conftest import WARREN, free_port, start_postgres
from egress_hosts import make_ca, upstream_hosts

pytestmark = pytest.mark.cluster

JOIN_SECRET = "join-" + os.urandom(12).hex()
KEY = "wrn_test_" + os.urandom(16).hex()
NODES = {"127.0.0.2": "eu", "127.0.0.3": "us", "127.0.0.4": "us"}
# This node serves HTTPS with the CA it generates (the others plain HTTP, on loopback): every test
# then also runs the SDKs against a TLS node.
TLS_NODE = "127.0.0.4"
# A node that misses heartbeats for this long is unhealthy (the control plane's UNHEALTHY_AFTER),
# plus one heartbeat and the control planes' one-second refresh.
NOTICE_WITHIN = 6 + 2 + 1.5
JS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "js")


def warren_host_state():
    """Namespaces and firewall tables of any Warren process on this machine (any host slot)."""
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    return {
        "netns": sorted(l.split()[0] for l in netns.splitlines() if l.startswith("warren")),
        "nft": sorted(l.split()[-1] for l in tables.splitlines() if l.split()[-1:] and l.split()[-1].startswith("warren")),
    }


class Cluster:
    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="warren-cluster-")
        self.db, self.stop_db = start_postgres()
        self.env = dict(os.environ, WARREN_API_KEY=KEY, WARREN_NODE_JOIN_SECRET=JOIN_SECRET, RUST_LOG="info")
        self.cps = {}  # url -> Popen
        self.cp_args = {}
        self.nodes = {}  # ip -> Popen
        self.node_args = {}
        # Nodes broker secrets for the upstream hosts of egress_hosts (a CA of this cluster's).
        self.upstream_ca = os.path.join(self.root, "egress-test-ca")
        make_ca(self.upstream_ca)

    def log(self, name):
        return open(os.path.join(self.root, f"{name}.log"), "a")

    def start_cp(self, url=None):
        port = int(url.rsplit(":", 1)[1]) if url else free_port()
        url = f"http://127.0.0.1:{port}"
        data = os.path.join(self.root, f"cp-{port}")
        args = [WARREN, "serve", "--no-pool", "--database-url", self.db, "--listen", f"127.0.0.1:{port}",
                "--no-local-node", "--data-dir", data, "--no-prebuild"]
        self.cps[url] = subprocess.Popen(args, stdout=self.log(f"cp-{port}"), stderr=subprocess.STDOUT, env=self.env)
        wait_for(lambda: requests.get(url + "/health", timeout=1).ok, 60, f"control plane {url}")
        return url

    def start_node(self, ip):
        data = os.path.join(self.root, f"node-{ip}")
        # Each node talks to one control plane; either knows every node (one store).
        cp = sorted(self.cps)[int(ip.rsplit(".", 1)[1]) % len(self.cps)]
        args = [WARREN, "node", "--control-plane", cp, "--listen", f"{ip}:7070", "--data-dir", data,
                "--label", f"region={NODES[ip]}", *(["--tls"] if ip == TLS_NODE else []),
                "--egress-upstream-ca", os.path.join(self.upstream_ca, "ca.pem"),
                "--egress-resolve", "allowed.test=198.19.0.2", "--egress-resolve", "other.test=198.19.0.3"]
        self.nodes[ip] = subprocess.Popen(args, stdout=self.log(f"node-{ip}"), stderr=subprocess.STDOUT, env=self.env)

    def any_cp(self):
        return next(u for u, p in self.cps.items() if p.poll() is None)

    def node_states(self, cp=None):
        r = requests.get((cp or self.any_cp()) + "/v1/admin/nodes", headers={"X-API-Key": KEY}, timeout=10)
        r.raise_for_status()
        return {n["public_host"].split("://")[1]: n for n in r.json()["data"]}

    def wait_healthy(self, ips, within=60):
        wait_for(lambda: all(self.node_states().get(ip, {}).get("state") == "healthy" for ip in ips),
                 within, f"nodes {ips} healthy")

    def wait_idle(self, within=30):
        """Until every node reports no sandbox. Placement goes by each node's reported count, and
        a test's deletes reach the reports a heartbeat or two later (later still while a loaded
        machine tears sandboxes down), so a test that checks the spread starts from empty nodes."""
        wait_for(lambda: all(n["used"]["sandboxes"] == 0 for n in self.node_states().values()),
                 within, "every node reports no sandbox")

    def stop(self):
        # Every sandbox ends with the suite: kill what is left, then stop the processes.
        try:
            cp = self.any_cp()
            page = requests.get(cp + "/v1/sandboxes?limit=1000", headers={"X-API-Key": KEY}, timeout=30).json()
            for s in page.get("data", []):
                requests.delete(f"{cp}/v1/sandboxes/{s['id']}", headers={"X-API-Key": KEY}, timeout=60)
        except (StopIteration, requests.RequestException):
            pass
        for p in list(self.nodes.values()) + list(self.cps.values()):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in list(self.nodes.values()) + list(self.cps.values()):
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
        self.stop_db()
        shutil.rmtree(self.root, ignore_errors=True)


def wait_for(check, within, what):
    deadline = time.time() + within
    last = None
    while time.time() < deadline:
        try:
            if check():
                return
        except Exception as e:  # noqa: BLE001 - a starting server refuses connections
            last = e
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {within} s (last error: {last})")


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: nodes need root (cgroups, netns, overlay)")
    before = warren_host_state()
    c = Cluster()
    try:
        c.start_cp()
        c.start_cp()
        for ip in NODES:
            c.start_node(ip)
        c.wait_healthy(list(NODES))
        # The SDKs (httpx, websockets, node) and requests trust the TLS node's CA this way.
        ca = os.path.join(c.root, f"node-{TLS_NODE}", "tls", "ca.pem")
        saved = {v: os.environ.get(v) for v in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS")}
        for var in saved:
            os.environ[var] = ca
        assert c.node_states()[TLS_NODE]["public_host"] == f"https://{TLS_NODE}"
        yield c
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
    finally:
        c.stop()
    # Nodes stopped with no sandbox left remove everything they made.
    assert warren_host_state() == before, f"nodes left traces: {warren_host_state()} (before: {before})"


def sdk_create(cp, **kw):
    from hopx_ai import Sandbox
    return Sandbox.create(template="code-interpreter", api_key=KEY, base_url=cp, **kw)


def node_of(sb):
    return sb.get_info().public_host.split("://")[1].rsplit(":", 1)[0]


def test_thirty_sandboxes_spread_over_three_nodes_through_either_control_plane(cluster):
    cluster.wait_idle()
    cps = sorted(cluster.cps)
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        sbs = list(pool.map(lambda i: sdk_create(cps[i % 2]), range(30)))
    try:
        placed = {}
        for sb in sbs:
            placed.setdefault(node_of(sb), []).append(sb)
        assert set(placed) == set(NODES), f"placed on {sorted(placed)}"
        assert min(len(v) for v in placed.values()) >= 4, {k: len(v) for k, v in placed.items()}

        def use(sb):
            r = sb.run_code("import socket; print(6*7)")
            sb.files.write("/workspace/where.txt", sb.sandbox_id)
            return r.stdout.strip(), sb.files.read("/workspace/where.txt")

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            results = list(pool.map(use, sbs))
        assert results == [("42", sb.sandbox_id) for sb in sbs]
        # Every sandbox is visible, with its node and region, through both control planes.
        for cp in cps:
            page = requests.get(cp + "/v1/sandboxes?limit=100", headers={"X-API-Key": KEY}, timeout=10).json()
            listed = {s["id"]: s for s in page["data"]}
            for sb in sbs:
                s = listed[sb.sandbox_id]
                assert s["region"] == NODES[node_of(sb)]
                assert s["node_id"].startswith("node-")
        # The report follows: node use counts these sandboxes within a heartbeat or two.
        wait_for(lambda: sum(n["used"]["sandboxes"] for n in cluster.node_states().values()) >= 30, 10, "node reports")
    finally:
        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            list(pool.map(lambda sb: sb.kill(), sbs))


def test_region_places_and_filters(cluster):
    cp = sorted(cluster.cps)[1]
    eu = [sdk_create(cp, region="eu") for _ in range(3)]
    us = [sdk_create(cp, region="us") for _ in range(4)]
    try:
        assert {node_of(sb) for sb in eu} == {"127.0.0.2"}
        assert {node_of(sb) for sb in us} <= {"127.0.0.3", "127.0.0.4"}
        page = requests.get(cp + "/v1/sandboxes?region=eu", headers={"X-API-Key": KEY}, timeout=10).json()
        assert {s["id"] for s in page["data"]} == {sb.sandbox_id for sb in eu}
        # A region no node serves: a clear error, not a hang or a 500.
        r = requests.post(cp + "/v1/sandboxes", headers={"X-API-Key": KEY},
                          json={"template_name": "code-interpreter", "region": "mars"}, timeout=30)
        assert r.status_code == 503, r.text
        message = r.json()["error"]["message"]
        assert "mars" in message and "eu" in message and "us" in message, message
        from hopx_ai import HopxError
        with pytest.raises(HopxError):
            sdk_create(cp, region="mars")
    finally:
        for sb in eu + us:
            sb.kill()


def test_create_answer_names_the_node_in_raw_http(cluster):
    """What the create itself answers is usable at once (raw clients do not GET it again)."""
    cp = sorted(cluster.cps)[0]
    sb = requests.post(cp + "/v1/sandboxes", headers={"X-API-Key": KEY}, json={"template_name": "code-interpreter"}, timeout=60).json()
    try:
        host = sb["public_host"]
        assert host.split("://")[1].rsplit(":", 1)[0] in NODES, sb
        out = requests.post(host + "/execute", json={"code": "print(1)", "language": "python"},
                            headers={"Authorization": f"Bearer {sb['auth_token']}"}, timeout=60).json()
        assert out["stdout"] == "1\n"
        # Usage is measured by the node that runs it, asked through the control plane.
        u = requests.get(f"{cp}/v1/sandboxes/{sb['id']}/usage", headers={"X-API-Key": KEY}, timeout=30)
        assert u.status_code == 200, u.text
        assert u.json()["memory_used_bytes"] > 0 and u.json()["processes"] >= 1, u.text
    finally:
        requests.delete(f"{cp}/v1/sandboxes/{sb['id']}", headers={"X-API-Key": KEY}, timeout=60)


def test_e2b_sdk_through_a_control_plane_reaches_sandboxes_on_nodes(cluster, monkeypatch):
    """E2B's single-address mode on a cluster: the control plane relays each envd and interpreter
    call (routed by its E2b-Sandbox-Id header) to the node that runs the sandbox."""
    from e2b_code_interpreter import Sandbox as CodeSandbox
    cp = sorted(cluster.cps)[0]
    for var, value in (("E2B_API_URL", cp), ("E2B_SANDBOX_URL", cp), ("E2B_API_KEY", KEY)):
        monkeypatch.setenv(var, value)
    cluster.wait_idle()
    nodes = set()
    made = []
    try:
        for _ in range(4):
            sb = CodeSandbox.create()
            made.append(sb)
            assert sb.commands.run("echo relayed").stdout == "relayed\n"
            sb.files.write("/tmp/r.txt", "via the control plane")
            assert sb.files.read("/tmp/r.txt") == "via the control plane"
            assert sb.run_code("6 * 7").text == "42"
            info = requests.get(f"{cp}/v1/sandboxes/{sb.sandbox_id}", headers={"X-API-Key": KEY}, timeout=30).json()
            nodes.add(info["node_id"])
        assert len(nodes) >= 2, f"every E2B sandbox landed on one node: {nodes}"
    finally:
        for sb in made:
            sb.kill()


def test_js_sdk_code_files_and_terminal_on_every_node(cluster):
    if not os.path.isdir(os.path.join(JS_DIR, "node_modules", "@hopx-ai", "sdk")):
        pytest.fail("the JS SDK is not installed: run scripts/test (it runs npm install in tests/js)")
    cluster.wait_idle()
    seen = set()
    for cp in sorted(cluster.cps):
        env = dict(os.environ, BASE_URL=cp, HOPX_API_KEY=KEY, CLUSTER_N="6")
        r = subprocess.run(["node", "scenarios.mjs", "C1"], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        seen |= {l.split()[-1].split("://")[1].rsplit(":", 1)[0] for l in r.stdout.splitlines() if l.startswith("C1 host")}
    assert seen == set(NODES), f"the JS scenario ran on {sorted(seen)}"


def test_node_api_refuses_tenant_keys_and_sandbox_tokens(cluster):
    sb = sdk_create(sorted(cluster.cps)[0])
    try:
        token = sb.get_token() if hasattr(sb, "get_token") else None
        node = cluster.node_states()[node_of(sb)]["api_url"]
        body = {"id": "x", "template_name": "code-interpreter", "source": {"kind": "builtin", "name": "code-interpreter"},
                "vcpu": 1, "memory_mb": 512, "disk_mb": 1024, "internet_access": True, "env_vars": {},
                "tier": None, "owner": "default", "start_cmd": None, "ready": None}
        for headers in ({}, {"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"},
                        {"Authorization": f"Bearer {token}"} if token else {"Authorization": "Bearer x.y.z"}):
            r = requests.post(node + "/node/v1/sandboxes", json=body, headers=headers, timeout=10)
            assert r.status_code == 401, (headers, r.status_code, r.text)
            r = requests.delete(f"{node}/node/v1/sandboxes/{sb.sandbox_id}", headers=headers, timeout=10)
            assert r.status_code == 401, (headers, r.status_code, r.text)
        assert sb.run_code("print('still here')").stdout.strip() == "still here"
        # Nor can a node's own endpoints on the control plane be used without a node credential.
        cp = sorted(cluster.cps)[0]
        for path in ("/v1/internal/nodes/heartbeat", "/v1/internal/nodes/audit"):
            r = requests.post(cp + path, json={}, headers={"Authorization": f"Bearer {KEY}"}, timeout=10)
            assert r.status_code in (400, 401), (path, r.status_code)
        r = requests.post(cp + "/v1/internal/nodes/join", json={}, headers={"Authorization": "Bearer wrong"}, timeout=10)
        assert r.status_code in (400, 401), r.status_code
        # A node of a release whose node protocol this control plane does not speak is refused, by name.
        newer = {"node_id": "from-the-future", "name": "n", "api_url": "http://127.0.0.9:1", "public_host": "127.0.0.9",
                 "public_scheme": "http", "labels": {},
                 "report": {"tiers": ["namespaces"], "capacity": {"vcpu": 1, "memory_mb": 1024, "disk_mb": 1024, "sandboxes": 1},
                            "used": {"sandboxes": 0, "memory_mb": 0, "vcpu": 0}, "templates": [], "layers": [],
                            "sandboxes": [], "exited": []}, "protocol": 99, "version": "9.0.0 (commit abc)"}
        r = requests.post(cp + "/v1/internal/nodes/join", json=newer, headers={"Authorization": f"Bearer {JOIN_SECRET}"},
                          timeout=10)
        assert r.status_code == 409, r.text
        said = r.json()["error"]
        assert said["code"] == "NODE_PROTOCOL_UNSUPPORTED" and "protocol 99" in said["message"] \
            and "warren 9.0.0" in said["message"] and "speaks 1 to 1" in said["message"], said
        assert "from-the-future" not in requests.get(cp + "/v1/admin/nodes", headers={"X-API-Key": KEY}, timeout=10).text
    finally:
        sb.kill()


def test_agent_calls_on_nodes_reach_the_audit_trail(cluster):
    cp = sorted(cluster.cps)[0]
    sb = sdk_create(cp)
    try:
        sb.run_code("print('audited')")
        sb.files.write("/workspace/a.txt", "x")

        def audited():
            events = requests.get(f"{cp}/v1/audit?sandbox_id={sb.sandbox_id}", headers={"X-API-Key": KEY}, timeout=10).json()["data"]
            return {"execute", "files.write"} <= {e["action"] for e in events}

        wait_for(audited, 10, "audit records from the node")
    finally:
        sb.kill()


def test_prometheus_metrics_on_control_planes_and_nodes(cluster):
    cp = sorted(cluster.cps)[0]
    sb = sdk_create(cp)
    try:
        assert requests.get(cp + "/metrics", timeout=10).status_code == 401
        text = requests.get(cp + "/metrics", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).text
        for name in ("warren_http_requests_total{status=\"201\"}", "warren_sandbox_create_seconds_bucket",
                     "warren_placement_failures_total", "warren_sandboxes{state=\"running\"}"):
            assert name in text, name
        for ip in NODES:
            assert f'region="{NODES[ip]}",what="sandboxes_capacity"' in text
        node = requests.get(cluster.node_states()[node_of(sb)]["api_url"] + "/metrics", timeout=10)
        assert node.status_code == 200
        assert 'warren_node{what="sandboxes_running"}' in node.text
        assert sb.sandbox_id not in node.text and sb.sandbox_id not in text
    finally:
        sb.kill()


def test_drained_node_takes_no_new_sandboxes(cluster):
    cp = sorted(cluster.cps)[0]
    states = cluster.node_states()
    drained = states["127.0.0.4"]["id"]
    r = subprocess.run([WARREN, "node", "drain", drained, "--url", cp, "--api-key", KEY], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "draining" in r.stdout, r.stdout + r.stderr
    try:
        sbs = [sdk_create(cp, region="us") for _ in range(5)]
        try:
            assert {node_of(sb) for sb in sbs} == {"127.0.0.3"}
        finally:
            for sb in sbs:
                sb.kill()
        listed = subprocess.run([WARREN, "nodes", "list", "--url", cp, "--api-key", KEY], capture_output=True, text=True, timeout=30)
        assert listed.returncode == 0 and drained in listed.stdout and "draining" in listed.stdout, listed.stdout
    finally:
        r = subprocess.run([WARREN, "node", "activate", drained, "--url", cp, "--api-key", KEY], capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
    cluster.wait_healthy(["127.0.0.4"])


def test_node_killed_is_noticed_and_its_sandboxes_work_after_restart(cluster):
    cps = sorted(cluster.cps)
    sbs = [sdk_create(cps[0], region="eu") for _ in range(3)]
    try:
        victim = cluster.nodes["127.0.0.2"]
        victim.send_signal(signal.SIGKILL)
        victim.wait()
        killed = time.time()
        wait_for(lambda: cluster.node_states(cps[1])["127.0.0.2"]["state"] == "unhealthy", NOTICE_WITHIN, "node unhealthy")
        noticed = time.time() - killed
        # Its sandboxes say why nobody can vouch for them.
        info = requests.get(f"{cps[1]}/v1/sandboxes/{sbs[0].sandbox_id}", headers={"X-API-Key": KEY}, timeout=10).json()
        assert "has not reported" in info.get("status_reason", ""), info
        # New sandboxes go elsewhere; one asking for the dead node's region gets a clear error.
        others = [sdk_create(cps[1]) for _ in range(4)]
        try:
            assert "127.0.0.2" not in {node_of(sb) for sb in others}
            r = requests.post(cps[1] + "/v1/sandboxes", headers={"X-API-Key": KEY},
                              json={"template_name": "code-interpreter", "region": "eu"}, timeout=30)
            assert r.status_code == 503 and "eu" in r.json()["error"]["message"], r.text
        finally:
            for sb in others:
                sb.kill()
        # The node comes back (live restore): the same sandboxes answer at the same addresses.
        cluster.start_node("127.0.0.2")
        cluster.wait_healthy(["127.0.0.2"])
        for sb in sbs:
            assert sb.run_code("print('back')").stdout.strip() == "back"
            assert sb.get_info().status == "running"
        print(f"node failure noticed after {noticed:.1f} s")
    finally:
        for sb in sbs:
            sb.kill()


# Runs in the sandbox: what allowed.test saw in the Authorization header the sandbox sent.
BEARER_SEEN = r'''
import json, os, urllib.request
req = urllib.request.Request("https://allowed.test/", headers={"Authorization": "Bearer " + os.environ["TOKEN"]})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print({k.lower(): v for k, v in json.loads(r.read())["headers"].items()}.get("authorization"))
except Exception as e:
    print("error", type(e).__name__, e)
'''


def test_a_restarted_node_gets_its_sandboxes_brokered_secrets_back(cluster):
    """A node never writes a secret's value down: after a restart the control plane gives it the
    secrets of the sandboxes it took over (told by the node's heartbeat)."""
    cp = sorted(cluster.cps)[0]
    hdr = {"X-API-Key": KEY}
    value = "clu_" + os.urandom(20).hex()
    r = requests.post(cp + "/v1/secrets", headers=hdr, timeout=10,
                      json={"name": "clu-token", "value": value, "hosts": ["allowed.test"]})
    assert r.status_code == 201, r.text
    with upstream_hosts(cluster.upstream_ca):
        r = requests.post(cp + "/v1/sandboxes", headers=hdr, timeout=60, json={
            "template_name": "code-interpreter", "region": "eu", "secrets": {"TOKEN": "clu-token"},
            "network": {"allow_out": ["allowed.test"], "deny_out": ["0.0.0.0/0"]}})
        assert r.status_code == 201, r.text
        from hopx_ai import Sandbox
        sb = Sandbox.connect(r.json()["id"], base_url=cp, api_key=KEY)
        try:
            assert node_of(sb) == "127.0.0.2"
            sb.files.write("/tmp/bearer.py", BEARER_SEEN)
            seen = lambda: sb.commands.run("python3 /tmp/bearer.py", timeout=60).stdout.strip()  # noqa: E731
            assert seen() == "Bearer " + value
            victim = cluster.nodes["127.0.0.2"]
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            cluster.start_node("127.0.0.2")
            cluster.wait_healthy(["127.0.0.2"])
            # A heartbeat or two later the node has the value again; until then the placeholder
            # goes out unchanged (useless to the receiver), never anything else.
            deadline, got = time.time() + 30, None
            while time.time() < deadline:
                got = seen()
                if got == "Bearer " + value:
                    break
                assert got.startswith("Bearer wrn_secret_") or got.startswith("error"), got
                time.sleep(1)
            assert got == "Bearer " + value, got
            # Not written down on the node (its records, keys and logs; not the template trees).
            for root, _, files in os.walk(os.path.join(cluster.root, "node-127.0.0.2")):
                for f in files:
                    path = os.path.join(root, f)
                    try:
                        if os.path.islink(path) or os.path.getsize(path) > 1 << 20:
                            continue
                        data = open(path, "rb").read()
                    except OSError:
                        continue
                    assert value.encode() not in data, path
        finally:
            sb.kill()
            requests.delete(cp + "/v1/secrets/clu-token", headers=hdr, timeout=10)


def test_node_stopped_with_its_sandboxes_then_they_are_stopped_for_good(cluster):
    """A node whose daemon never comes back: unhealthy, and deleting its sandboxes meanwhile is
    recorded at once; when it does come back, it stops what the cluster deleted."""
    cps = sorted(cluster.cps)
    sb = sdk_create(cps[0], region="eu")
    victim = cluster.nodes["127.0.0.2"]
    victim.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: cluster.node_states(cps[1])["127.0.0.2"]["state"] == "unhealthy", NOTICE_WITHIN, "stopped node unhealthy")
        sb.kill()
        r = requests.get(f"{cps[1]}/v1/sandboxes/{sb.sandbox_id}", headers={"X-API-Key": KEY}, timeout=10).json()
        assert r["status"] == "deleted", r
    finally:
        victim.send_signal(signal.SIGCONT)
    cluster.wait_healthy(["127.0.0.2"])
    # Its report no longer lists the deleted sandbox once the node stopped it.
    wait_for(lambda: cluster.node_states()["127.0.0.2"]["sandboxes"] == 0, 15, "the node stopped the deleted sandbox")


def test_control_plane_killed_the_other_serves_and_nothing_is_lost(cluster):
    cps = sorted(cluster.cps)
    sbs = [sdk_create(cps[0]) for _ in range(4)]
    try:
        cluster.cps[cps[0]].send_signal(signal.SIGKILL)
        cluster.cps[cps[0]].wait()
        from hopx_ai import Sandbox
        page = requests.get(cps[1] + "/v1/sandboxes?limit=1000", headers={"X-API-Key": KEY}, timeout=10).json()
        listed = {s["id"]: s["status"] for s in page["data"]}
        for sb in sbs:
            assert listed.get(sb.sandbox_id) == "running"
            again = Sandbox.connect(sb.sandbox_id, api_key=KEY, base_url=cps[1])
            assert again.run_code("print('via the other')").stdout.strip() == "via the other"
        fresh = sdk_create(cps[1])
        assert fresh.run_code("print(1)").stdout.strip() == "1"
        # The periodic jobs move to the survivor: a short timeout still expires the sandbox.
        short = sdk_create(cps[1], timeout_seconds=3)
        wait_for(lambda: requests.get(f"{cps[1]}/v1/sandboxes/{short.sandbox_id}", headers={"X-API-Key": KEY},
                                      timeout=10).json()["status"] in ("stopped", "deleted"), 30, "expiry by the other control plane")
        fresh.kill()
    finally:
        for sb in sbs:
            requests.delete(f"{cps[1]}/v1/sandboxes/{sb.sandbox_id}", headers={"X-API-Key": KEY}, timeout=60)
        cluster.start_cp(cps[0])


def test_template_built_through_a_control_plane_runs_on_every_node(cluster, tmp_path):
    """Template.build (official SDK) through one control plane: COPY is unpacked on the control
    plane, the RUN step runs on a node; sandboxes of the template then run on all three nodes,
    each node fetching the layers it lacks."""
    import asyncio
    import uuid
    from hopx_ai.template import BuildOptions, Template

    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "main.py").write_text("print('from app')\n")
    name = f"cluster-{uuid.uuid4().hex[:8]}"
    cps = sorted(cluster.cps)
    logs = []
    recipe = (Template("code-interpreter")
              .copy("app/", "/srv/app")
              .set_env("GREETING", "built-once")
              .run_cmd("echo run-on-a-node > /srv/app/built.txt && echo step-output"))
    opts = BuildOptions(name=name, api_key=KEY, base_url=cps[0], context_path=str(tmp_path),
                        on_log=lambda e: logs.append(e["message"] if isinstance(e, dict) else str(e)))
    asyncio.run(asyncio.wait_for(Template.build(recipe, opts), 300))
    assert any("step-output" in l for l in logs), logs
    states = cluster.node_states()
    ids = {ip: states[ip]["id"] for ip in NODES}
    seen = set()
    # One sandbox per node: region eu is .2; for us, drain the other us node in turn.
    for region, drained in (("eu", None), ("us", "127.0.0.4"), ("us", "127.0.0.3")):
        if drained:
            requests.post(f"{cps[1]}/v1/admin/nodes/{ids[drained]}/drain", headers={"X-API-Key": KEY}, timeout=10).raise_for_status()
        try:
            from hopx_ai import Sandbox
            sb = Sandbox.create(template=name, api_key=KEY, base_url=cps[1], region=region)
            try:
                out = sb.commands.run("cat /srv/app/built.txt /srv/app/main.py; echo $GREETING").stdout
                assert out == "run-on-a-node\nprint('from app')\nbuilt-once\n", out
                seen.add(node_of(sb))
            finally:
                sb.kill()
        finally:
            if drained:
                requests.post(f"{cps[1]}/v1/admin/nodes/{ids[drained]}/activate", headers={"X-API-Key": KEY}, timeout=10).raise_for_status()
    assert seen == set(NODES), seen
