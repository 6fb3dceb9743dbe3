"""The web console at /console: served from the binary with headers that keep it to itself, its
terminal route refusing what it must, and the whole console driven in headless Chromium
(tests/js/console.mjs) as a person would use it."""
import os
import shutil
import subprocess
import time
import uuid

import pytest
import requests
from hopx_ai import Sandbox

from conftest import JS_DIR, need_a_browser, new_key, raw

# Screenshots of every page, kept for people to look at (and described in docs/console.md).
SHOTS = os.environ.get("WARREN_CONSOLE_SHOTS", os.path.join(os.path.dirname(__file__), "..", ".console-shots"))


def test_the_console_is_served_from_the_binary_and_keeps_to_itself(server):
    page = raw(server, "GET", "/console/", headers={})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["referrer-policy"] == "no-referrer"
    # its bundles, named by content, cached for good; a missing bundle is a 404 in the envelope
    bundle = page.text.split('src="')[1].split('"')[0]
    js = raw(server, "GET", bundle, headers={})
    assert js.status_code == 200 and "javascript" in js.headers["content-type"]
    assert "immutable" in js.headers["cache-control"]
    missing = raw(server, "GET", "/console/assets/nope.js", headers={})
    assert missing.status_code == 404 and missing.json()["code"] == "RESOURCE_NOT_FOUND"
    # /console without the slash lands on the page
    assert raw(server, "GET", "/console", headers={}).url.endswith("/console/")


def test_the_console_terminal_needs_the_sandboxs_own_token(server):
    sb = Sandbox.create(template="base", base_url=server["base_url"], api_key=server["api_key"])
    try:
        url = server["base_url"] + f"/console/terminal/{sb.sandbox_id}"
        upgrade = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                   "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
        # no token offered: 401 in the API's envelope
        r = requests.get(url, headers={**upgrade, "Sec-WebSocket-Protocol": "warren.console"}, timeout=10)
        assert r.status_code == 401, r.text
        assert r.json()["code"]
        # a forged token: refused by the proxy like any agent call with it
        forged = {**upgrade, "Sec-WebSocket-Protocol": "warren.console, warren.token.eyJhbGciOiJFZERTQSJ9.e30.AAAA"}
        assert requests.get(url, headers=forged, timeout=10).status_code == 401
        # the real token: the agent's terminal answers the upgrade, naming the console's protocol
        token = raw(server, "POST", f"/v1/sandboxes/{sb.sandbox_id}/token/refresh").json()["auth_token"]
        ok = {**upgrade, "Sec-WebSocket-Protocol": f"warren.console, warren.token.{token}"}
        with requests.get(url, headers=ok, timeout=10, stream=True) as r:
            assert r.status_code == 101, r.text
            assert r.headers["sec-websocket-protocol"] == "warren.console"
    finally:
        sb.kill()


def run_console_js(env):
    r = subprocess.run(["node", "console.mjs"], cwd=JS_DIR, env=dict(os.environ, **env),
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "console ok" in r.stdout, r.stdout
    print(r.stdout)


@pytest.mark.tls
def test_the_console_over_https(server):
    """The short tour over HTTPS: the page under its CSP, API calls, the terminal over wss://."""
    need_a_browser()
    assert server["base_url"].startswith("https://")
    shots = os.path.join(SHOTS, "https")
    shutil.rmtree(shots, ignore_errors=True)
    os.makedirs(shots)
    key = new_key(server, "console-tls")
    sb = Sandbox.create(template="base", base_url=server["base_url"], api_key=key)
    try:
        run_console_js({"BASE_URL": server["base_url"], "ADMIN_KEY": key, "SHOTS": shots, "SANDBOX": sb.sandbox_id})
    finally:
        sb.kill()


def test_the_console_in_a_browser(server):
    need_a_browser()
    admin = new_key(server, "console-a", role="admin")
    member = new_key(server, "console-b", role="member")
    other = Sandbox.create(template="base", base_url=server["base_url"], api_key=member)
    # a template of tenant A with a build log to show
    built = f"console-{uuid.uuid4().hex[:8]}"
    a = {"X-API-Key": admin}
    r = raw(server, "POST", "/v1/templates/build", headers=a,
            json={"name": built, "from_image": "base", "steps": [{"type": "RUN", "args": ["echo built-for-the-console"]}]})
    assert r.status_code in (200, 202), r.text
    for _ in range(300):
        status = raw(server, "GET", f"/v1/templates/build/{r.json()['template_id']}/status", headers=a).json()["status"]
        if status in ("active", "failed"):
            break
        time.sleep(0.2)
    assert status == "active"
    shutil.rmtree(SHOTS, ignore_errors=True)
    os.makedirs(SHOTS)
    try:
        run_console_js({"BASE_URL": server["base_url"], "ADMIN_KEY": admin, "MEMBER_KEY": member,
                        "OTHER_SANDBOX": other.sandbox_id, "BUILT_TEMPLATE": built, "SHOTS": SHOTS})
        # the other tenant's sandbox was only looked at, never touched
        assert raw(server, "GET", f"/v1/sandboxes/{other.sandbox_id}", headers={"X-API-Key": member}).json()["status"] == "running"
        # the keys never reached the server's log
        log = open(server["log"]).read()
        assert admin not in log and member not in log
    finally:
        other.kill()
        raw(server, "DELETE", f"/v1/templates/{built}", headers=a)
