"""Wildcard-domain mode: `{port}-{id}.{domain}` on the main listener routes to the sandbox's agent
(port 7777, token-checked) or to any port inside the sandbox (preview URLs). DNS is not needed
here: the tests set the Host header on requests to the server's own loopback address."""
import time

import pytest
import requests

from conftest import WILDCARD_DOMAIN, raw

pytestmark = pytest.mark.wildcard


def host_get(server, host, path, token=None, **kw):
    headers = {"Host": host}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return requests.request(kw.pop("method", "GET"), server["base_url"] + path, headers=headers, timeout=30, **kw)


@pytest.fixture
def created(server):
    res = raw(server, "POST", "/v1/sandboxes", json={"template_name": "base"})
    assert res.status_code == 201, res.text
    body = res.json()
    yield body
    raw(server, "DELETE", f"/v1/sandboxes/{body['id']}")


def test_public_host_and_preview_url_use_the_domain(server, created):
    sid = created["id"]
    assert created["public_host"] == f"http://7777-{sid}.{WILDCARD_DOMAIN}"
    assert created["preview_url"] == f"http://{{port}}-{sid}.{WILDCARD_DOMAIN}"
    assert "10.213." not in str(created) and "127.0.0.1" not in str(created)


def test_agent_routed_by_host_header_and_token_checked(server, created):
    sid, token = created["id"], created["auth_token"]
    agent = f"7777-{sid}.{WILDCARD_DOMAIN}"
    assert host_get(server, agent, "/health").json()["status"] == "healthy"
    body = {"command": "bash", "args": ["-c", "echo routed; hostname"]}
    assert host_get(server, agent, "/commands/run", method="POST", json=body).status_code == 401
    other = raw(server, "POST", "/v1/sandboxes", json={"template_name": "base"}).json()
    try:
        # a token of another sandbox does not open this one
        res = host_get(server, agent, "/commands/run", token=other["auth_token"], method="POST", json=body)
        assert res.status_code == 401
    finally:
        raw(server, "DELETE", f"/v1/sandboxes/{other['id']}")
    res = host_get(server, agent, "/commands/run", token=token, method="POST", json=body)
    assert res.status_code == 200 and res.json()["stdout"].startswith("routed\n")
    # the API itself is still served for other hosts
    assert raw(server, "GET", f"/v1/sandboxes/{sid}").json()["id"] == sid


def test_preview_port_reaches_a_server_inside_the_sandbox(server, created):
    sid, token = created["id"], created["auth_token"]
    agent = f"7777-{sid}.{WILDCARD_DOMAIN}"
    start = {"command": "bash", "args": ["-c", "echo preview-ok > /workspace/index.txt; cd /workspace && exec python3 -m http.server 8080"], "timeout": 60}
    assert host_get(server, agent, "/commands/background", token=token, method="POST", json=start).status_code == 200
    preview = f"8080-{sid}.{WILDCARD_DOMAIN}"
    deadline = time.time() + 15
    while True:
        res = host_get(server, preview, "/index.txt")
        if res.status_code == 200 or time.time() > deadline:
            break
        time.sleep(0.2)
    assert res.status_code == 200 and res.text == "preview-ok\n"
    # nothing listens on 8081: a clear gateway error, not a hang
    res = host_get(server, f"8081-{sid}.{WILDCARD_DOMAIN}", "/")
    assert res.status_code == 502 and "8081" in res.json()["message"]


def test_unknown_sandbox_on_the_domain_is_404(server):
    res = host_get(server, f"7777-{'a' * 18}.{WILDCARD_DOMAIN}", "/health")
    assert res.status_code == 404
