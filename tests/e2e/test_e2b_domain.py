"""E2B's second addressing mode: `E2B_DOMAIN` alone, as E2B's cloud is used. The SDKs then call
`https://api.<domain>` and `https://<port>-<id>.<domain>` (port 443, HTTP/2 where offered), so
this test starts its own `warren serve --tls --wildcard-domain <domain>` on 127.0.0.1:443 and
trusts Warren's generated CA through SSL_CERT_FILE / NODE_EXTRA_CA_CERTS. Name resolution is the
one thing a user's DNS would do (`*.<domain>` → the server): /etc/hosts entries stand in for it,
added for the API host first and for each sandbox's hosts once its id is known, removed after."""
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

import pytest
import requests

from conftest import API_KEY, WARREN, new_key
from test_sdk_matrix import MATRIX, install_dir, rewrite_row, run_smoke
from entries import sdk_releases  # noqa: E402 (tests/matrix, on the path test_sdk_matrix puts it)

pytestmark = pytest.mark.wildcard

DOMAIN = "e2b.warren.test"
HOSTS = "/etc/hosts"
MARK = "# warren-test-e2b-domain"


def add_hosts(*names):
    with open(HOSTS, "a") as f:
        for n in names:
            f.write(f"127.0.0.1 {n} {MARK}\n")


def remove_hosts():
    lines = open(HOSTS).read().splitlines(keepends=True)
    with open(HOSTS, "w") as f:
        f.writelines(l for l in lines if MARK not in l)


def sandbox_hosts(sid):
    return [f"{p}-{sid}.{DOMAIN}" for p in (49983, 49999, 8123)]


@pytest.fixture(scope="module")
def domain_server():
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: needs root (port 443, /etc/hosts, namespaces)")
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", 443))
        except OSError:
            pytest.skip("SKIPPED LOUDLY: 127.0.0.1:443 is taken on this machine")
    data_dir = tempfile.mkdtemp(prefix="warren-e2b-domain-")
    log = open(os.path.join(data_dir, "server.log"), "w")
    proc = subprocess.Popen(
        [WARREN, "serve", "--no-pool", "--listen", "127.0.0.1:443", "--data-dir", data_dir, "--no-prebuild",
         "--stop-sandboxes-on-exit", "--tls", "--wildcard-domain", DOMAIN],
        stdout=log, stderr=subprocess.STDOUT, env=dict(os.environ, WARREN_API_KEY=API_KEY))
    add_hosts(f"api.{DOMAIN}")
    ca = os.path.join(data_dir, "tls", "ca.pem")
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            assert proc.poll() is None, open(log.name).read()
            if os.path.exists(ca):
                try:
                    if requests.get(f"https://api.{DOMAIN}/health", verify=ca, timeout=1).ok:
                        break
                except requests.RequestException:
                    pass
            time.sleep(0.2)
        else:
            raise RuntimeError("the E2B-domain server did not start:\n" + open(log.name).read())
        yield {"ca": ca, "log": log.name, "data_dir": data_dir}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
        remove_hosts()
        log.close()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def domain_env(domain_server, monkeypatch):
    for var in ("E2B_API_URL", "E2B_SANDBOX_URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("E2B_DOMAIN", DOMAIN)
    monkeypatch.setenv("E2B_API_KEY", API_KEY)
    for var in ("SSL_CERT_FILE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE"):
        monkeypatch.setenv(var, domain_server["ca"])
    return domain_server


# Each step runs in a fresh interpreter: the Python SDK (e2b >= 2.6x) keeps one Rust HTTP
# transport per process, whose trust roots (SSL_CERT_FILE) and resolver (hickory, /etc/hosts) are
# read once, when the first client is made. Earlier tests of this session made one without
# Warren's CA, and the sandbox's hosts must exist before the step that uses them starts.
CREATE_BY_DOMAIN = r"""
from e2b_code_interpreter import Sandbox as CodeSandbox
sb = CodeSandbox.create()
assert sb.get_info().sandbox_id == sb.sandbox_id
print(sb.sandbox_id)
"""

USE_BY_DOMAIN = r"""
import sys, time, requests
from e2b import Sandbox
from e2b_code_interpreter import Sandbox as CodeSandbox
sb = CodeSandbox.connect(sys.argv[1])
assert sb.commands.run("echo over-the-domain").stdout == "over-the-domain\n"
sb.files.write("/tmp/d.txt", "domain")
assert sb.files.read("/tmp/d.txt") == "domain"
assert sb.run_code("6 * 7").text == "42"
# A port of the sandbox at https://<port>-<id>.<domain>, as get_host() names it.
sb.commands.run("cd /tmp && python3 -m http.server 8123 >/dev/null 2>&1", background=True)
for _ in range(50):
    try:
        r = requests.get(f"https://{sb.get_host(8123)}/d.txt", timeout=5)
        if r.status_code == 200:
            break
    except requests.RequestException:
        pass
    time.sleep(0.1)
assert r.text == "domain", r.text
assert sb.sandbox_id in [s.sandbox_id for s in Sandbox.list().next_items()]
Sandbox.kill(sb.sandbox_id)
print("domain ok")
"""


def run_python(script, *args):
    import sys
    r = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                       timeout=180, env=dict(os.environ))
    assert r.returncode == 0, r.stdout + r.stderr
    return r.stdout


def test_python_sdks_over_https_wildcard_hosts(domain_env):
    sid = run_python(CREATE_BY_DOMAIN).strip().splitlines()[-1]
    try:
        add_hosts(*sandbox_hosts(sid))
        assert "domain ok" in run_python(USE_BY_DOMAIN, sid)
    finally:
        # Gone already when the script got to its end; 404 then.
        requests.delete(f"https://api.{DOMAIN}/sandboxes/{sid}", headers={"X-API-Key": API_KEY},
                        verify=domain_env["ca"], timeout=30)
    # The Python SDK offers HTTP/2 over TLS; envd's streams were served over it.
    log = open(domain_env["log"]).read()
    assert any("process.Process/Start" in l and "HTTP/2.0" in l for l in log.splitlines()), log[-3000:]


def test_js_sdks_over_https_wildcard_hosts(domain_env):
    js = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "js")
    env = dict(os.environ, E2B_TEST_HOSTS_MARK=MARK)
    r = subprocess.run(["node", "e2b.mjs", "D1"], cwd=js, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "D1 ok" in r.stdout


DOMAIN_ONLY = [(lang, e) for lang, e in sdk_releases() if e.get("setup") == "domain"]


@pytest.mark.parametrize("lang,entry", DOMAIN_ONLY,
                         ids=[f"{lang}-{e['package']}-{e['version']}" for lang, e in DOMAIN_ONLY])
def test_domain_only_sdk_releases_run_their_smoke_scenario(domain_env, lang, entry):
    """The matrix's releases that only know E2B_DOMAIN (tests/matrix/versions.json, `setup`):
    their smoke scenario over HTTPS, every name under the domain resolved to the server by a
    preload (tests/matrix/resolve) where DNS would. Their rows of docs/compatibility.md."""
    if not os.path.exists(os.path.join(install_dir(lang, entry), ".complete")):
        pytest.skip(f"SKIPPED LOUDLY: {entry['package']} {entry['version']} is not installed")
    resolve = os.path.join(MATRIX, "resolve")
    # Releases of E2B's SDKs up to 2.31 refuse a key not shaped like E2B's before sending it.
    key = new_key(domain_env, "matrix", fmt="e2b")
    env = dict(os.environ, E2B_DOMAIN=DOMAIN, E2B_API_KEY=key, WARREN_TEST_RESOLVE_DOMAIN=DOMAIN,
               PYTHONPATH=resolve, NODE_OPTIONS=f"--import={os.path.join(resolve, 'resolve.mjs')}")
    for var in ("E2B_API_URL", "E2B_SANDBOX_URL"):
        env.pop(var, None)
    result, row = run_smoke(lang, entry, env)
    if entry.get("refused"):
        # A release Warren refuses by design: the refusal it must meet, and why.
        refused = not result.get("ok") and entry["refused"] in result.get("error", "")
        row.update(result=f"refused as it must be ({entry['why_refused']})" if refused else "FAIL", error="")
        rewrite_row(row)
        assert refused, f"expected a {entry['refused']}: {result}"
        return
    if result.get("ok"):
        row["result"] = "pass (domain setup)"
    rewrite_row(row)
    assert result.get("ok"), f"{result.get('error')}\n{result.get('trace', '')}"
