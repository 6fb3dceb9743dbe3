"""Secrets stay secret: no API key, sandbox token, env var value or webhook secret appears in the
server's logs or anywhere under its data dir; oversized bodies get a clear 413."""
import http.client
import os
import subprocess
import time
import uuid

from hopx_ai import Sandbox

from conftest import new_key, raw


def test_no_secret_in_logs_or_data_dir(server):
    key = new_key(server, "tenant-secrets")
    env_secret = f"envsecret-{uuid.uuid4().hex}"
    hook_secret = f"hooksecret-{uuid.uuid4().hex}"
    sb = Sandbox.create(template="base", base_url=server["base_url"], api_key=key, env_vars={"DB_PASSWORD": env_secret})
    try:
        token = sb.get_token()
        assert sb.run_code("import os; print(os.environ['DB_PASSWORD'])").stdout == env_secret + "\n"
        sb.env.set("API_TOKEN", env_secret + "-2")
        # the env value must not be on the agent's command line, which every host user can read
        cmdlines = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert env_secret not in cmdlines
        import requests
        requests.post(sb.get_info().public_host + "/execute/async",
                      json={"code": "print(1)", "callback_url": "http://127.0.0.1:9/", "callback_signature_secret": hook_secret},
                      headers={"Authorization": f"Bearer {token}"}, timeout=10)
    finally:
        sb.kill()
    time.sleep(0.5)
    needles = {"API key": key, "WARREN_API_KEY": server["api_key"], "sandbox token": token,
               "env value": env_secret, "webhook secret": hook_secret}
    haystacks = {"server log": open(server["log"], "rb").read()}
    for root, _, files in os.walk(server["data_dir"]):
        for f in files:
            path = os.path.join(root, f)
            if path == server["log"]:
                continue
            try:
                haystacks[path] = open(path, "rb").read()
            except OSError:
                pass
    leaks = [(what, where) for what, needle in needles.items() for where, data in haystacks.items()
             if needle.encode() in data]
    assert not leaks, f"secrets found in plaintext: {leaks}"


def test_oversized_upload_is_413_before_it_is_read(server, sandbox):
    info = raw(server, "GET", f"/v1/sandboxes/{sandbox.sandbox_id}").json()
    host, port = info["public_host"].removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    conn.putrequest("POST", "/files/upload")
    conn.putheader("Authorization", f"Bearer {sandbox.get_token()}")
    conn.putheader("Content-Type", "multipart/form-data; boundary=x")
    conn.putheader("Content-Length", str(65 * 1024 * 1024))
    conn.endheaders()
    res = conn.getresponse()
    body = res.read().decode()
    assert res.status == 413 and "exceeds this server's limit" in body
    # a body over the control plane's limit gets the envelope too
    big = raw(server, "POST", "/v1/sandboxes", data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
              headers={"X-API-Key": server["api_key"], "Content-Type": "application/json"})
    assert big.status_code == 413 and big.json()["code"] == "PAYLOAD_TOO_LARGE"
