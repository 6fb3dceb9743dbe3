"""Starts one real `warren serve` for the whole test session and hands tests its URL and key.

Tests drive it with the official, unmodified SDKs (hopx-ai from PyPI, @hopx-ai/sdk from npm)
and with raw HTTP for edge cases. Needs root (namespaces, cgroups, netns) and built templates.
"""
import os
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import requests

from egress_hosts import make_ca

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WARREN = os.path.join(ROOT, "target", "release", "warren")
# The official JS SDKs' scenarios and the browser tests (playwright-core) live here.
JS_DIR = os.path.join(ROOT, "tests", "js")
API_KEY = "wrn_test_" + os.urandom(16).hex()
# scripts/test runs the suite twice: once in local mode (public_host = a loopback port per
# sandbox, what the SDKs use here) and once with this set, for the tests marked `wildcard`.
WILDCARD_DOMAIN = os.environ.get("WARREN_TEST_WILDCARD_DOMAIN")
# ... and once with this set: HTTPS with the server's generated CA, for the tests marked `tls`.
TLS = os.environ.get("WARREN_TEST_TLS") == "1"
# ... and once with this set, for the tests marked `restore`, which start and kill servers of
# their own (one server per host at a time, so never beside the shared one).
RESTORE = os.environ.get("WARREN_TEST_RESTORE") == "1"
# ... and once with this set, for the tests marked `cluster`: PostgreSQL, two control planes and
# three nodes of their own on 127.0.0.2-4.
CLUSTER = os.environ.get("WARREN_TEST_CLUSTER") == "1"
MODE = ("wildcard" if WILDCARD_DOMAIN else "tls" if TLS else "restore" if RESTORE
        else "cluster" if CLUSTER else "local")
MARKED_MODES = ("wildcard", "tls", "restore", "cluster")


def pytest_collection_modifyitems(config, items):
    """Each test runs in the mode its server was started in; the other modes' tests are skipped
    loudly, never silently passed."""
    for item in items:
        wants = next((m for m in MARKED_MODES if item.get_closest_marker(m)), "local")
        if wants != MODE:
            item.add_marker(pytest.mark.skip(
                reason=f"SKIPPED: {wants}-mode test in a {MODE}-mode run (scripts/test runs every mode)"))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ... and once with this set: the SDK suites with PostgreSQL as the store instead of SQLite.
POSTGRES = os.environ.get("WARREN_TEST_POSTGRES") == "1"


def start_postgres():
    """A private PostgreSQL server (Debian's binaries, run as the `postgres` user in a temporary
    directory, on a loopback port) with an empty database. Returns (url, stop)."""
    import glob
    import pwd
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins:
        pytest.fail("WARREN_TEST_POSTGRES=1 but PostgreSQL is not installed (apt-get install postgresql)")
    bin_dir = os.path.dirname(bins[-1])
    pg = pwd.getpwnam("postgres")
    root = tempfile.mkdtemp(prefix="warren-pg-")
    os.chown(root, pg.pw_uid, pg.pw_gid)
    data = os.path.join(root, "data")
    as_pg = dict(user=pg.pw_uid, group=pg.pw_gid, check=True, capture_output=True)
    subprocess.run([f"{bin_dir}/initdb", "--auth=trust", "--username=postgres", "-D", data], **as_pg)
    port = free_port()
    subprocess.run([f"{bin_dir}/pg_ctl", "-D", data, "-l", os.path.join(root, "log"), "-w", "start",
                    "-o", f"-p {port} -h 127.0.0.1 -k {root} -c fsync=off"], **as_pg)
    subprocess.run([f"{bin_dir}/createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "warren"], **as_pg)

    def stop():
        subprocess.run([f"{bin_dir}/pg_ctl", "-D", data, "-m", "fast", "-w", "stop"], **as_pg)
        import shutil
        shutil.rmtree(root, ignore_errors=True)

    return f"postgres://postgres@127.0.0.1:{port}/warren", stop


def leftovers():
    """Everything of a sandbox that could outlive it on the host."""
    out = {}
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    out["netns"] = sorted(l.split()[0] for l in netns.splitlines() if l.startswith("warren-"))
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    out["veth"] = sorted(l.split(":")[1].strip().split("@")[0] for l in links.splitlines() if ": wv" in l)
    mounts = open("/proc/self/mountinfo").read()
    # A sandbox's own mounts, volumes' file systems (and gVisor's views of them), their loop devices.
    out["mounts"] = [l for l in mounts.splitlines() if "/sandboxes/" in l or "/volumes/" in l]
    loops = subprocess.run(["losetup", "-a"], capture_output=True, text=True).stdout
    out["loops"] = [l for l in loops.splitlines() if "/volumes/" in l]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True).stdout
    out["nft"] = [l for l in tables.splitlines()
                  if l.strip() == "table inet warren" or l.strip().startswith("table netdev warren_egress_")]
    out["cgroups"] = warren_cgroups()
    return out


def no_more_leftovers_than(before, timeout=10):
    """`leftovers()` once it holds nothing that `before` did not, or after `timeout` seconds: the
    kernel removes a deleted sandbox's veth pair with its network namespace, a moment after the
    delete answered (so a veth in `before` may be gone since, and one just freed may linger)."""
    deadline = time.time() + timeout
    while True:
        left = leftovers()
        if all(set(left[k]) <= set(before[k]) for k in left) or time.time() > deadline:
            return left
        time.sleep(0.1)


# What `leftovers()` finds once no server runs and every sandbox is gone.
NOTHING_LEFT = {"netns": [], "veth": [], "mounts": [], "loops": [], "nft": [], "cgroups": []}


def warren_cgroups():
    """The `warren/` cgroups a server started from here makes below its own (the test's) cgroups."""
    found = []
    for line in open("/proc/self/cgroup").read().splitlines():
        _, controllers, path = line.split(":", 2)
        mount = "/sys/fs/cgroup" if controllers == "" else f"/sys/fs/cgroup/{controllers}"
        if controllers and not os.path.isdir(mount):
            mount = f"/sys/fs/cgroup/{controllers.split(',')[0]}"
        d = os.path.join(mount, path.lstrip("/"), "warren")
        if os.path.isdir(d):
            found.append(d)
    return sorted(set(found))


@pytest.fixture(scope="session")
def server():
    """The suite's server. Its egress proxy resolves the test names of test_egress.py to the
    upstream hosts that test creates (EGRESS_PINS)."""
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: Warren's namespace driver needs root (cgroups, netns, overlay)")
    data_dir = tempfile.mkdtemp(prefix="warren-test-")
    port = free_port()
    log = open(os.path.join(data_dir, "server.log"), "w")
    env = dict(os.environ, WARREN_API_KEY=API_KEY, RUST_LOG="info")
    mode = ["--wildcard-domain", WILDCARD_DOMAIN] if WILDCARD_DOMAIN else ["--tls"] if TLS else []
    # scripts/test also runs the core scenarios and the escape suite with another default tier.
    if os.environ.get("WARREN_TEST_ISOLATION"):
        mode += ["--isolation", os.environ["WARREN_TEST_ISOLATION"]]
    stop_postgres = None
    if POSTGRES:
        url, stop_postgres = start_postgres()
        # `warren keys` (new_key) finds the store the same way as the server.
        os.environ["WARREN_DATABASE_URL"] = url
        mode += ["--database-url", url]
    # A CA of the suite's own for the upstream test servers of test_egress.py: the egress proxy
    # checks their certificates against it when it brokers secrets (--egress-upstream-ca).
    upstream_ca = os.path.join(data_dir, "egress-test-ca")
    make_ca(upstream_ca)
    proc = subprocess.Popen(
        [WARREN, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", data_dir, "--no-prebuild",
         "--egress-upstream-ca", os.path.join(upstream_ca, "ca.pem"),
         "--stop-sandboxes-on-exit",
         # No warm pools by demand on the shared server: their sandboxes would come and go
         # between the leftover checks around each test (test_pool.py tests them on servers of
         # its own).
         "--no-pool",
         # explicit quotas so tests do not depend on the machine's size
         "--max-sandboxes", "8", "--max-vcpu", "64", "--max-memory-mb", "65536", "--max-upload-mb", "64",
         *[a for name, ip in EGRESS_PINS.items() for a in ("--egress-resolve", f"{name}={ip}")], *mode],
        stdout=log, stderr=subprocess.STDOUT, env=env,
    )
    base = f"{'https' if TLS else 'http'}://127.0.0.1:{port}"
    ca = os.path.join(data_dir, "tls", "ca.pem")
    deadline = time.time() + 60
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("warren serve exited:\n" + open(log.name).read())
        try:
            if TLS and os.path.exists(ca):
                # The SDKs (httpx, websockets, node) and requests trust the generated CA this way.
                for var in ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS"):
                    os.environ[var] = ca
            if requests.get(base + "/health", timeout=1).status_code == 200:
                break
        except requests.RequestException:
            time.sleep(0.1)
    else:
        raise RuntimeError("warren serve did not become healthy:\n" + open(log.name).read())
    yield {"base_url": base, "api_key": API_KEY, "data_dir": data_dir, "log": log.name, "proc": proc,
           "upstream_ca": upstream_ca}
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    if stop_postgres:
        stop_postgres()
    left = leftovers()
    assert left == NOTHING_LEFT, f"server left traces after SIGTERM: {left}"
    runsc = subprocess.run(["pgrep", "-f", f"--root {data_dir}/runsc"], capture_output=True, text=True).stdout.split()
    assert not runsc, f"gVisor sandboxes left running after SIGTERM: {runsc}"
    import shutil
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def base_url(server):
    return server["base_url"]


@pytest.fixture
def api_key(server):
    return server["api_key"]


@pytest.fixture
def sandbox(server):
    from hopx_ai import Sandbox

    sb = Sandbox.create(template="code-interpreter", base_url=server["base_url"], api_key=server["api_key"])
    yield sb
    try:
        sb.kill()
    except Exception:
        pass


def new_key(server, tenant, role="admin", env="live", fmt="warren"):
    """A fresh key of `tenant`, made with the CLI against the server's data dir (the operator's way)."""
    out = subprocess.run([WARREN, "keys", "create", "--data-dir", server["data_dir"], "--name", f"{tenant}-{role}",
                          "--tenant", tenant, "--role", role, "--env", env, "--format", fmt],
                         capture_output=True, text=True, check=True).stdout
    return out.strip().splitlines()[-1]


def need_a_browser():
    """Debian's chromium driven by playwright-core (scripts/test installs both), or a loud skip."""
    if not os.path.exists("/usr/bin/chromium") or not os.path.isdir(os.path.join(JS_DIR, "node_modules", "playwright-core")):
        pytest.skip("SKIPPED LOUDLY: Debian's chromium or playwright-core is missing (scripts/test installs both)")


def raw(server, method, path, **kw):
    headers = kw.pop("headers", {"X-API-Key": server["api_key"]})
    return requests.request(method, server["base_url"] + path, headers=headers, timeout=120, **kw)


def wait_for_status(server, sid, status, tries=100):
    """The sandbox's Hopx status once it is `status` (polled every 0.1 s), or the last one seen."""
    for _ in range(tries):
        state = raw(server, "GET", f"/v1/sandboxes/{sid}").json()["status"]
        if state == status:
            break
        time.sleep(0.1)
    return state


@pytest.fixture
def e2b_env(server, monkeypatch):
    """The E2B SDKs pointed at the suite's server (one address for API and sandboxes)."""
    monkeypatch.setenv("E2B_API_URL", server["base_url"])
    monkeypatch.setenv("E2B_SANDBOX_URL", server["base_url"])
    monkeypatch.setenv("E2B_API_KEY", server["api_key"])
    monkeypatch.delenv("E2B_DOMAIN", raising=False)
    return server


# Names the server's egress proxy and DNS filter resolve (`--egress-resolve`): two upstream hosts
# in a netns of test_egress.py (198.19.0.0/24, inside the 198.18.0.0/15 test range), and names that
# resolve to addresses the proxy must never dial.
EGRESS_PINS = {
    "allowed.test": "198.19.0.2",
    "other.test": "198.19.0.3",
    "a.pkg.test": "198.19.0.2",
    "private.test": "10.0.0.5",
    "loop.test": "127.0.0.1",
}


@pytest.fixture
def outside_host():
    """An "outside" host the test creates: a netns on 198.18.0.0/30 (checked unused first)."""
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    assert "198.18." not in routes, "198.18.0.0/15 is in use on this machine; refusing to test against it"
    name = f"wtout{os.getpid() % 10000}"
    cmds = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", f"{name}h", "type", "veth", "peer", "name", "eth0", "netns", name],
        ["ip", "addr", "add", "198.18.0.1/30", "dev", f"{name}h"],
        ["ip", "link", "set", f"{name}h", "up"],
        ["ip", "-n", name, "addr", "add", "198.18.0.2/30", "dev", "eth0"],
        ["ip", "-n", name, "link", "set", "eth0", "up"],
        ["ip", "-n", name, "link", "set", "lo", "up"],
    ]
    for c in cmds:
        subprocess.run(c, check=True)
    server = subprocess.Popen(["ip", "netns", "exec", name, "python3", "-m", "http.server", "8000", "--bind", "198.18.0.2"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        yield "198.18.0.2"
    finally:
        server.kill()
        server.wait()
        subprocess.run(["ip", "link", "del", f"{name}h"])
        subprocess.run(["ip", "netns", "del", name])


# Filled by test_escape.py, printed at the end of the run.
ESCAPE_RESULTS = []


def pytest_terminal_summary(terminalreporter):
    if ESCAPE_RESULTS:
        blocked = sum(1 for _, ok, _ in ESCAPE_RESULTS if ok)
        terminalreporter.write_line(f"Escape suite: {blocked}/{len(ESCAPE_RESULTS)} attacks blocked")
        for name, ok, evidence in ESCAPE_RESULTS:
            if not ok:
                terminalreporter.write_line(f"  NOT BLOCKED: {name}: {evidence}")
