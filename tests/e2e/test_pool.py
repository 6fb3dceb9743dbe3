"""Warm pools (issue 16): `warren serve --pool code-interpreter=N` keeps N sandboxes started ahead
of time; a create that matches takes one. Through both official SDKs a pooled create must behave
exactly like a cold one (env vars, timeout, tenant, resources, internet on/off), no warm sandbox
goes to two creates, the pool refills to its size after a burst, survives a restart, and leaves
nothing behind when it is drained at shutdown.

These tests start servers of their own (with --pool), so they run in the session of tests that do
(scripts/test: WARREN_TEST_RESTORE=1, marker `restore`), never beside the shared server."""
import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from hopx_ai import Sandbox

from conftest import NOTHING_LEFT, WARREN, leftovers
from test_restore import Server, data_dir, wait_until  # noqa: F401 (data_dir is a fixture)

pytestmark = pytest.mark.restore

TEMPLATE = "code-interpreter"
JS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "js")
# Warm sandboxes are at least this old when a test takes them: `ps -o etimes= -p 1` (seconds the
# sandbox's init has run) tells a warm sandbox from one started for the create.
WARM_AGE = 2


def pool_ready(server):
    text = server.api("GET", "/metrics").text
    return sum(int(float(l.split()[-1])) for l in text.splitlines() if l.startswith("warren_pool_ready{"))


def running_sandboxes():
    """Sandboxes of any owner on this host (each has its network namespace)."""
    return len(leftovers()["netns"])


def fill(server, size):
    wait_until(lambda: pool_ready(server) == size, 180, f"the pool to hold {size} warm sandboxes")
    time.sleep(WARM_AGE)


def agent_age(sb):
    return int(sb.commands.run("ps -o etimes= -p 1").stdout)


def key_for(server, tenant):
    out = subprocess.run([WARREN, "keys", "create", "--data-dir", server.data_dir, "--tenant", tenant,
                          "--name", tenant], capture_output=True, text=True, check=True).stdout
    return next(w for w in out.split() if w.startswith("wrn_"))


def test_pooled_creates_behave_like_cold_ones_through_both_sdks(data_dir):
    s = Server(data_dir, ["--pool", f"{TEMPLATE}=2", "--stop-sandboxes-on-exit"])
    s.start()
    try:
        memory_mb = s.api("GET", f"/v1/templates/{TEMPLATE}").json()["default_resources"]["memory_mb"]
        fill(s, 2)
        sb = Sandbox.create(template=TEMPLATE, base_url=s.base_url, api_key=s.key, env_vars={"POOL_PY": "from-py"},
                            timeout_seconds=120, internet_access=False)
        try:
            assert agent_age(sb) >= WARM_AGE, "the create did not take a warm sandbox"
            out = sb.run_code("import os; print(os.environ.get('POOL_PY'), sorted(os.listdir('/sys/class/net')))")
            assert out.stdout == "from-py ['lo']\n"
            assert sb.commands.run("echo $POOL_PY").stdout == "from-py\n"
            info = sb.get_info()
            assert info.internet_access is False
            assert info.timeout_seconds == 120
            assert info.resources.memory_mb == memory_mb
            raw = s.api("GET", f"/v1/sandboxes/{sb.sandbox_id}").json()
            # Its life starts at the create, not when it was warmed.
            created = time.mktime(time.strptime(raw["created_at"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
            assert abs(created - time.time()) < WARM_AGE, raw["created_at"]
            expires = time.mktime(time.strptime(raw["expires_at"][:19], "%Y-%m-%dT%H:%M:%S")) - time.timezone
            assert 110 < expires - time.time() <= 121, raw["expires_at"]
            # A second one with internet access, as the default asks.
            sb2 = Sandbox.create(template=TEMPLATE, base_url=s.base_url, api_key=s.key)
            try:
                assert agent_age(sb2) >= WARM_AGE
                nets = sb2.run_code("import os; print(sorted(os.listdir('/sys/class/net')))").stdout
                assert nets == "['eth0', 'lo']\n"
                assert sb2.get_info().internet_access is True
                assert "POOL_PY" not in sb2.commands.run("env").stdout, "env of one create leaked into another"
            finally:
                sb2.kill()
        finally:
            sb.kill()

        fill(s, 2)
        if not os.path.isdir(os.path.join(JS_DIR, "node_modules", "@hopx-ai", "sdk")):
            pytest.fail("the JS SDK is not installed: run scripts/test (it runs npm install in tests/js)")
        env = dict(os.environ, BASE_URL=s.base_url, HOPX_API_KEY=s.key, MIN_AGE=str(WARM_AGE),
                   MEMORY_MB=str(memory_mb))
        r = subprocess.run(["node", "scenarios.mjs", "P1"], cwd=JS_DIR, env=env, capture_output=True, text=True,
                           timeout=180)
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        s.term()
    # The warm sandboxes were stopped with the server (--stop-sandboxes-on-exit): nothing is left.
    assert leftovers() == NOTHING_LEFT, leftovers()


def test_two_tenants_never_share_a_warm_sandbox_and_the_pool_refills_to_its_size(data_dir):
    s = Server(data_dir, ["--pool", f"{TEMPLATE}=3", "--stop-sandboxes-on-exit"])
    s.start()
    try:
        keys = {"tenant-a": key_for(s, "tenant-a"), "tenant-b": key_for(s, "tenant-b")}
        fill(s, 3)
        assert running_sandboxes() == 3

        def create(tenant):
            r = requests.post(s.base_url + "/v1/sandboxes", json={"template_name": TEMPLATE},
                              headers={"X-API-Key": keys[tenant]}, timeout=120)
            assert r.status_code == 201, r.text
            return tenant, r.json()["id"]

        # A burst larger than the pool, from two tenants at once: 3 warm, 3 cold.
        with ThreadPoolExecutor(6) as pool:
            made = list(pool.map(create, ["tenant-a", "tenant-b"] * 3))
        ids = [sid for _, sid in made]
        assert len(set(ids)) == 6, f"a sandbox was handed out twice: {ids}"
        for tenant, sid in made:
            other = "tenant-b" if tenant == "tenant-a" else "tenant-a"
            assert requests.get(f"{s.base_url}/v1/sandboxes/{sid}", headers={"X-API-Key": keys[tenant]}).status_code == 200
            assert requests.get(f"{s.base_url}/v1/sandboxes/{sid}", headers={"X-API-Key": keys[other]}).status_code == 404
        for tenant in keys:
            listed = requests.get(s.base_url + "/v1/sandboxes", headers={"X-API-Key": keys[tenant]}).json()["data"]
            assert sorted(x["id"] for x in listed) == sorted(sid for t, sid in made if t == tenant)
        # The pool comes back to its size, and no further: 6 taken + 3 warm.
        fill(s, 3)
        time.sleep(2)
        assert pool_ready(s) == 3
        assert running_sandboxes() == 9
        for tenant, sid in made:
            assert requests.delete(f"{s.base_url}/v1/sandboxes/{sid}", headers={"X-API-Key": keys[tenant]}).status_code == 200
        assert running_sandboxes() == 3
    finally:
        s.term()
    assert leftovers() == NOTHING_LEFT, leftovers()


def test_warm_sandboxes_survive_a_restart_and_are_stopped_by_stop_sandboxes(data_dir):
    s = Server(data_dir, ["--pool", f"{TEMPLATE}=2"])
    s.start()
    fill(s, 2)
    before = leftovers()["netns"]
    s.kill9()
    s.start()
    # The same two warm sandboxes, taken over: none started anew, none lost.
    wait_until(lambda: pool_ready(s) == 2, 30, "the pool to be taken over")
    assert leftovers()["netns"] == before
    sb = Sandbox.create(template=TEMPLATE, base_url=s.base_url, api_key=s.key)
    assert f"warren-{sb.sandbox_id}" in before
    assert sb.run_code("print(6 * 7)").stdout == "42\n"
    fill(s, 2)
    s.proc.send_signal(signal.SIGTERM)
    s.proc.wait(timeout=120)
    # Kept for the next server (the user's and the warm ones) until stop-sandboxes.
    assert running_sandboxes() == 3
    r = subprocess.run([WARREN, "stop-sandboxes", "--data-dir", data_dir], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert leftovers() == NOTHING_LEFT, leftovers()


def test_a_gvisor_pool_hides_the_tiers_start(data_dir):
    s = Server(data_dir, ["--pool", f"{TEMPLATE}@gvisor=1", "--stop-sandboxes-on-exit"])
    s.start()
    try:
        if "gvisor" not in s.api("GET", "/health").json()["isolation_tiers"]:
            pytest.skip("SKIPPED LOUDLY: the gVisor tier (runsc) is not available on this machine")
        fill(s, 1)
        made = s.create("gvisor", env_vars={"POOL_G": "yes"})
        sb = s.connect(made["id"])
        assert made["isolation"] == "gvisor"
        assert agent_age(sb) >= WARM_AGE, "the create did not take the warm gVisor sandbox"
        assert sb.commands.run("echo $POOL_G").stdout == "yes\n"
        assert sb.run_code("x = 6 * 7\nprint(x)").stdout == "42\n"
        # Without internet a gVisor sandbox starts cold: its guest keeps the link it booted with.
        cold = s.create("gvisor", internet_access=False)
        assert agent_age(s.connect(cold["id"])) < WARM_AGE
        assert cold["internet_access"] is False
    finally:
        s.term()
    assert leftovers() == NOTHING_LEFT, leftovers()


def test_a_create_with_an_egress_policy_takes_a_warm_sandbox_and_the_policy_holds(data_dir):
    s = Server(data_dir, ["--pool", f"{TEMPLATE}=1", "--stop-sandboxes-on-exit"])
    s.start()
    try:
        fill(s, 1)
        r = s.api("POST", "/v1/secrets", json={"name": "pool-key", "value": "pool-secret-value", "hosts": ["api.test"]})
        assert r.status_code == 201, r.text
        policy = {"allow_out": ["api.test"], "deny_out": ["0.0.0.0/0"],
                  "rules": {"api.test": [{"transform": {"headers": {"X-Api-Key": "${e2b.secrets.pool-key}"}}}]}}
        made = s.api("POST", "/v1/sandboxes", json={"template_name": TEMPLATE, "network": policy})
        assert made.status_code == 201, made.text
        sb = s.connect(made.json()["id"])
        assert agent_age(sb) >= WARM_AGE, "the create did not take the warm sandbox"
        assert s.api("GET", f"/v1/sandboxes/{sb.sandbox_id}/network").json() == policy
        # Its DNS is the host's filter now: a name outside the policy does not resolve.
        out = sb.commands.run("python3 -c \"import socket\ntry:\n socket.getaddrinfo('not-allowed.test', 443)\n"
                              "except OSError:\n print('refused')\"")
        assert out.stdout == "refused\n", out.stdout + out.stderr
        # The rule terminates TLS for api.test: the CA is in the system bundle and new processes
        # are pointed at it, as a cold create's would be.
        ca = "/usr/local/share/ca-certificates/warren-egress.crt"
        env = sb.commands.run(f"echo $REQUESTS_CA_BUNDLE $NODE_EXTRA_CA_CERTS; grep -c -F -f {ca} $REQUESTS_CA_BUNDLE").stdout.split()
        assert env[:2] == ["/etc/ssl/certs/ca-certificates.crt", ca] and int(env[2]) > 3, env
        assert "pool-secret-value" not in sb.commands.run("env; cat /etc/ssl/certs/ca-certificates.crt | tail -c 4000").stdout
        tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
        assert "warren_egress_" in tables, tables
        sb.kill()
    finally:
        s.term()
    assert leftovers() == NOTHING_LEFT, leftovers()


def demand_ceiling():
    """What the server allows one template by demand here (one per 2 GB of memory, 1..16)."""
    kb = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal:"))
    return max(1, min(16, kb // 1024 // 2048))


def test_without_pool_flags_pools_follow_demand_and_no_pool_keeps_none(data_dir):
    s = Server(data_dir, ["--stop-sandboxes-on-exit"], by_demand=True)
    s.start()
    try:
        # A new server keeps one warm sandbox of the default template: its first create is warm.
        fill(s, 1)
        sb = Sandbox.create(template=TEMPLATE, base_url=s.base_url, api_key=s.key)
        try:
            assert agent_age(sb) >= WARM_AGE, "the first create did not take the warm sandbox"
            assert sb.run_code("print(6 * 7)").stdout == "42\n"
            # Timeouts still apply: the server's default lifetime.
            assert s.api("GET", f"/v1/sandboxes/{sb.sandbox_id}").json()["timeout_seconds"] == 3600
        finally:
            sb.kill()
        # Creates in the last minute size the pool (up to the machine's ceiling).
        for _ in range(3):
            Sandbox.create(template=TEMPLATE, base_url=s.base_url, api_key=s.key).kill()
        want = min(4, demand_ceiling())
        wait_until(lambda: pool_ready(s) >= want, 180, f"the pool to grow to {want} by demand")
        # A template nobody created has no pool.
        text = s.api("GET", "/metrics").text
        templates = {l.split('template="')[1].split('"')[0] for l in text.splitlines()
                     if l.startswith("warren_pool_ready{") and float(l.split()[-1]) > 0}
        assert len(templates) == 1, text
    finally:
        s.term()
    assert leftovers() == NOTHING_LEFT, leftovers()

    s = Server(data_dir, ["--stop-sandboxes-on-exit", "--no-pool"], by_demand=True)
    s.start()
    try:
        sb = Sandbox.create(template=TEMPLATE, base_url=s.base_url, api_key=s.key)
        sb.kill()
        time.sleep(3)
        assert pool_ready(s) == 0 and running_sandboxes() == 0, "--no-pool keeps no warm sandbox"
    finally:
        s.term()
    out = subprocess.run([WARREN, "serve", "--no-pool", "--pool", f"{TEMPLATE}=1"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode != 0 and "--no-pool" in out.stderr, out.stderr
