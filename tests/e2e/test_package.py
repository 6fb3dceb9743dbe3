"""The Debian package (issue 34): installed with dpkg, its unit started the way systemd starts it,
a sandbox made through it with the official SDK, then purged. scripts/package builds it
(WARREN_DEB names it). The package's server listens where its settings file says and keeps its
store in /var/lib/warren, so this runs where no other server of the suite does (marker
`restore`), and never on a machine where Warren is installed or configured already."""
import os
import re
import shlex
import signal
import subprocess
import time

import pytest
import requests
from hopx_ai import Sandbox

from conftest import WARREN, free_port

pytestmark = pytest.mark.restore

DEB = os.environ.get("WARREN_DEB", "")
UNIT = "/usr/lib/systemd/system/warren.service"
SETTINGS = "/etc/warren/warren.env"
DATA = "/var/lib/warren"


def run(*argv, **kw):
    return subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)


@pytest.fixture
def installed():
    if not os.path.exists(DEB):
        pytest.skip("SKIPPED LOUDLY: no Debian package to install (WARREN_DEB; scripts/package builds it)")
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: installing a package needs root")
    if run("dpkg-query", "-W", "-f=${Status}", "warren").stdout.startswith("install ok"):
        pytest.skip("SKIPPED LOUDLY: a warren package is installed here already; not replacing it")
    if os.path.exists(SETTINGS) or (os.path.isdir(DATA) and os.listdir(DATA)):
        pytest.skip(f"SKIPPED LOUDLY: {SETTINGS} or {DATA} is in use here; not touching it")
    data_existed, etc_existed = os.path.isdir(DATA), os.path.isdir(os.path.dirname(SETTINGS))
    r = run("dpkg", "-i", DEB)
    assert r.returncode == 0, f"dpkg -i {DEB}:\n{r.stdout}{r.stderr}"
    try:
        yield
    finally:
        run(WARREN, "stop-sandboxes", "--data-dir", DATA)
        if os.path.exists(SETTINGS):  # the test's, as an operator's would be
            os.remove(SETTINGS)
        purged = run("dpkg", "--purge", "warren")
        if not data_existed:
            run("rm", "-rf", DATA)
        elif os.path.isdir(DATA):
            run("sh", "-c", f"rm -rf {DATA}/* {DATA}/.[!.]*")
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert not os.path.exists("/usr/bin/warren") and not os.path.exists(UNIT), "purge left the package's files"
    assert etc_existed or not os.path.exists(os.path.dirname(SETTINGS)), "purge left /etc/warren"


def start_unit(unit_text, port):
    """The unit started as systemd starts it: by systemd where it runs, else its ExecStart with the
    variables of its EnvironmentFile (what systemd would do, minus the supervision)."""
    if os.path.isdir("/run/systemd/system"):
        r = run("systemctl", "start", "warren.service")
        assert r.returncode == 0, r.stderr
        return None
    pid1 = open("/proc/1/comm").read().strip()
    print(f"NOTE LOUDLY: systemd is not running here (PID 1 is {pid1}): the unit's ExecStart runs with "
          f"the variables of its EnvironmentFile, as systemd would start it")
    env_file = re.search(r"^EnvironmentFile=-?(.+)$", unit_text, re.M).group(1)
    env = dict(os.environ)
    for line in open(env_file):
        if "=" in line and not line.lstrip().startswith("#"):
            name, value = line.strip().split("=", 1)
            env[name] = value
    argv = shlex.split(re.search(r"^ExecStart=(.+)$", unit_text, re.M).group(1))
    return subprocess.Popen(argv, env=env, stdout=open(f"/tmp/warren-package-{port}.log", "w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop_unit(proc):
    if proc is None:
        assert run("systemctl", "stop", "warren.service").returncode == 0
        return
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 0


def test_the_debian_package_installs_serves_sandboxes_and_purges(installed):
    for path in ("/usr/bin/warren", "/usr/bin/warren-agent", UNIT, "/usr/lib/systemd/system/warren-node.service",
                 "/usr/share/doc/warren/examples/warren.env.example", "/usr/share/doc/warren/SECURITY.md"):
        assert os.path.exists(path), f"the package did not install {path}"
    assert run("/usr/bin/warren", "--version").stdout == run(WARREN, "--version").stdout
    # Installing starts nothing: there is no key yet.
    assert not run("pgrep", "-f", "^/usr/bin/warren serve").stdout

    port, key = free_port(), "wrn_test_" + os.urandom(16).hex()
    os.makedirs(os.path.dirname(SETTINGS), exist_ok=True)
    with open(os.open(SETTINGS, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(f"WARREN_API_KEY={key}\nWARREN_LISTEN=127.0.0.1:{port}\n")
    proc = start_unit(open(UNIT).read(), port)
    log = f"/tmp/warren-package-{port}.log"
    try:
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                health = requests.get(base_url + "/health", timeout=1)
                if health.ok:
                    break
            except requests.RequestException:
                pass
            assert proc is None or proc.poll() is None, open(log).read()
            assert time.time() < deadline, "the packaged server did not become healthy"
            time.sleep(0.1)
        assert health.json()["version"] == run(WARREN, "--version").stdout.split()[1]
        sb = Sandbox.create(template="code-interpreter", base_url=base_url, api_key=key)
        try:
            assert sb.run_code("print(6 * 7)").stdout.strip() == "42"
            assert sb.commands.run("echo from-the-package").stdout.strip() == "from-the-package"
        finally:
            sb.kill()
        stop_unit(proc)
        proc = "stopped"
    finally:
        if proc is None:
            run("systemctl", "stop", "warren.service")
        elif proc != "stopped" and proc.poll() is None:
            proc.kill()
        if os.path.exists(log):
            os.remove(log)
