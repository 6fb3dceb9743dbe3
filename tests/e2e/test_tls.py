"""HTTPS: the official SDKs work unmodified against the server's generated CA once users trust it
(SSL_CERT_FILE / NODE_EXTRA_CA_CERTS), for the API, the sandbox listeners and WebSockets."""
import asyncio
import os
import subprocess

import certifi
import pytest
import requests
from hopx_ai import AsyncSandbox, Sandbox

from conftest import raw

pytestmark = pytest.mark.tls
JS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "js")


def test_python_sdk_over_https(server):
    assert server["base_url"].startswith("https://")
    sb = Sandbox.create(template="base", base_url=server["base_url"], api_key=server["api_key"])
    try:
        assert sb.get_info().public_host.startswith("https://127.0.0.1:")
        assert sb.run_code("print(6*7)").stdout == "42\n"
        sb.files.write("/workspace/t.txt", "tls")
        assert sb.files.read("/workspace/t.txt") == "tls"
    finally:
        sb.kill()


def test_websockets_over_https(server):
    async def scenario():
        sb = await AsyncSandbox.create(template="base", base_url=server["base_url"], api_key=server["api_key"])
        try:
            msgs = [m async for m in sb.run_code_stream("print('wss')")]
            assert msgs[-1]["type"] == "complete" and "".join(m.get("data", "") for m in msgs if m["type"] == "stdout") == "wss\n", msgs
        finally:
            await sb.kill()
    asyncio.run(asyncio.wait_for(scenario(), 60))


def test_js_sdk_over_https(server):
    env = dict(os.environ, BASE_URL=server["base_url"], HOPX_API_KEY=server["api_key"])
    r = subprocess.run(["node", "scenarios.mjs", "J1"], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and "J1 ok" in r.stdout, r.stdout + r.stderr


def test_plain_http_and_untrusted_clients_are_refused(server):
    port = server["base_url"].rsplit(":", 1)[1]
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=5)
    with pytest.raises(requests.exceptions.SSLError):
        # a client that trusts only the public CAs
        requests.get(server["base_url"] + "/health", timeout=5, verify=certifi.where())
    assert raw(server, "GET", "/health").status_code == 200


def test_cli_over_https(server):
    from conftest import WARREN
    env = dict(os.environ, WARREN_URL=server["base_url"], WARREN_API_KEY=server["api_key"])
    sid = raw(server, "POST", "/v1/sandboxes", json={"template_name": "base"}).json()["id"]
    try:
        r = subprocess.run([WARREN, "exec", "--stream", sid, "echo over-wss"], env=env, capture_output=True, text=True, timeout=60)
        assert (r.returncode, r.stdout) == (0, "over-wss\n"), r.stderr
        r = subprocess.run([WARREN, "exec", sid, "echo over-https"], env=env, capture_output=True, text=True, timeout=60)
        assert (r.returncode, r.stdout) == (0, "over-https\n"), r.stderr
    finally:
        raw(server, "DELETE", f"/v1/sandboxes/{sid}")
