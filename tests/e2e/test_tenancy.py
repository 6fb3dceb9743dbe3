"""Multi-tenant promises through the official SDK and raw HTTP: tenants never see each other's
sandboxes, keys are roles with masked listings, rotation and revocation; every execution lands in
the audit trail; rate limits and quotas answer with the shapes the SDKs map."""
import os
import re
import threading
import time

import pytest
import requests
from hopx_ai import Sandbox
from hopx_ai.errors import NotFoundError, ResourceLimitError

from conftest import new_key, raw


def as_key(server, key, method, path, **kw):
    return requests.request(method, server["base_url"] + path, headers={"X-API-Key": key}, timeout=60, **kw)


def test_other_tenant_gets_404_and_never_sees_the_sandbox(server):
    a, b = new_key(server, "tenant-a"), new_key(server, "tenant-b")
    sb = Sandbox.create(template="base", base_url=server["base_url"], api_key=a)
    try:
        sid = sb.sandbox_id
        with pytest.raises(NotFoundError):
            Sandbox.connect(sid, base_url=server["base_url"], api_key=b)
        assert sid not in [s.sandbox_id for s in Sandbox.list(base_url=server["base_url"], api_key=b)]
        assert sid in [s.sandbox_id for s in Sandbox.list(base_url=server["base_url"], api_key=a)]
        for method, path in [("GET", f"/v1/sandboxes/{sid}"), ("DELETE", f"/v1/sandboxes/{sid}"),
                             ("POST", f"/v1/sandboxes/{sid}/pause"), ("POST", f"/v1/sandboxes/{sid}/token/refresh"),
                             ("PUT", f"/v1/sandboxes/{sid}/timeout")]:
            res = as_key(server, b, method, path, json={"timeout_seconds": 5})
            assert res.status_code == 404, (method, path, res.status_code)
            assert res.json()["message"] == "Sandbox not found"
        # still alive and untouched for its owner
        assert sb.get_info().status == "running"
        assert sb.run_code("print('mine')").stdout == "mine\n"
    finally:
        sb.kill()


def test_keys_roles_masking_rotation_and_revocation(server):
    admin = new_key(server, "tenant-keys")
    member = new_key(server, "tenant-keys", role="member", env="test")
    assert admin.startswith("wrn_live_") and member.startswith("wrn_test_")
    # members cannot manage keys or read the audit trail
    assert as_key(server, member, "GET", "/v1/admin/keys").status_code == 403
    assert as_key(server, member, "GET", "/v1/audit").status_code == 403
    listed = as_key(server, admin, "GET", "/v1/admin/keys").json()["data"]
    assert {k["name"] for k in listed} == {"tenant-keys-admin", "tenant-keys-member"}
    for k in listed:
        assert k["key"].endswith("…") and len(k["key"]) < 20
        assert admin not in str(listed) and member not in str(listed)
    # another tenant's admin cannot touch these keys
    other = new_key(server, "tenant-other")
    member_id = next(k["id"] for k in listed if k["role"] == "member")
    assert as_key(server, other, "DELETE", f"/v1/admin/keys/{member_id}").status_code == 404

    created = as_key(server, admin, "POST", "/v1/admin/keys", json={"name": "ci", "role": "member"})
    assert created.status_code == 201
    ci_key, ci_id = created.json()["key"], created.json()["id"]
    assert as_key(server, ci_key, "GET", "/v1/sandboxes").status_code == 200
    rotated = as_key(server, admin, "POST", f"/v1/admin/keys/{ci_id}/rotate", json={"grace_seconds": 2}).json()
    new = rotated["key"]
    # both work during the grace period, only the new one after it
    assert as_key(server, ci_key, "GET", "/v1/sandboxes").status_code == 200
    assert as_key(server, new, "GET", "/v1/sandboxes").status_code == 200
    time.sleep(3)
    assert as_key(server, ci_key, "GET", "/v1/sandboxes").status_code == 401
    assert as_key(server, new, "GET", "/v1/sandboxes").status_code == 200
    assert as_key(server, admin, "DELETE", f"/v1/admin/keys/{rotated['id']}").status_code == 200
    assert as_key(server, new, "GET", "/v1/sandboxes").status_code == 401


def test_audit_records_run_code_with_outcome(server):
    admin = new_key(server, "tenant-audit")
    sb = Sandbox.create(template="base", base_url=server["base_url"], api_key=admin)
    try:
        sb.run_code("print('audited')")
        sb.run_code("import sys; sys.exit(4)")
        sb.files.write("/workspace/a.txt", "x")
    finally:
        sb.kill()
    time.sleep(0.5)  # the recorder batches writes
    events = as_key(server, admin, "GET", f"/v1/audit?sandbox_id={sb.sandbox_id}").json()["data"]
    actions = [e["action"] for e in events]
    assert actions[0] == "sandbox.create" and actions[-1] == "sandbox.delete", actions
    runs = [e for e in events if e["action"] == "execute"]
    assert [r["outcome"] for r in runs] == ["ok exit_code=0", "failed exit_code=4"]
    for e in events:
        assert e["tenant"] == "tenant-audit" and re.fullmatch(r"key_[0-9a-f]{16}", e["key_id"] or "")
    assert runs[0]["input_bytes"] > 0 and re.fullmatch(r"[0-9a-f]{64}", runs[0]["input_sha256"])
    assert "audited" not in str(events), "the audit trail must not hold the code itself"
    assert any(e["action"] == "files.write" for e in events)
    # other tenants see none of it
    other = new_key(server, "tenant-audit-other")
    assert as_key(server, other, "GET", f"/v1/audit?sandbox_id={sb.sandbox_id}").json()["data"] == []
    # the CLI shows the same trail
    import subprocess
    from conftest import WARREN
    out = subprocess.run([WARREN, "audit", "--sandbox", sb.sandbox_id, "--action", "execute"],
                         env=dict(os.environ, WARREN_URL=server["base_url"], WARREN_API_KEY=admin),
                         capture_output=True, text=True, timeout=30).stdout
    assert "failed exit_code=4" in out
    # key operations by the operator, and expiries by the server, are in the trail too
    created = as_key(server, admin, "GET", "/v1/audit?action=key.create").json()["data"]
    assert created and created[0]["outcome"] == "ok (operator cli)"
    short = Sandbox.create(template="base", base_url=server["base_url"], api_key=admin, timeout_seconds=1)
    deadline = time.time() + 6
    expired = []
    while time.time() < deadline and not expired:
        time.sleep(0.3)
        expired = as_key(server, admin, "GET", f"/v1/audit?sandbox_id={short.sandbox_id}&action=sandbox.expire").json()["data"]
    assert expired and expired[0]["key_id"] is None


def test_rate_limit_is_429_with_retry_after_and_sdk_raises(server):
    # A key may make 100 requests per second (burst 100). One client in a loop may be slower
    # than that on a loaded machine with PostgreSQL behind the server, so eight clients at once
    # make the requests, until the first 429 or 20 s.
    key = new_key(server, "tenant-rate")
    statuses, limited, lock = [], [], threading.Lock()
    deadline = time.time() + 20

    def client():
        with requests.Session() as s:
            while time.time() < deadline and not limited:
                r = s.get(server["base_url"] + "/v1/sandboxes", headers={"X-API-Key": key}, timeout=10)
                with lock:
                    statuses.append(r.status_code)
                    if r.status_code == 429:
                        limited.append(r)

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert limited and statuses.count(200) >= 100, statuses[-5:]
    r = limited[0]
    details = r.json()["error"]["details"]
    assert details["retry_after_seconds"] >= 1
    assert r.headers["Retry-After"] == str(details["retry_after_seconds"])
    assert set(statuses) <= {200, 429}, set(statuses)


def test_quota_is_403_resource_limit_error(server):
    key = new_key(server, "tenant-quota")
    made = []
    try:
        for _ in range(8):
            made.append(Sandbox.create(template="base", base_url=server["base_url"], api_key=key))
        with pytest.raises(ResourceLimitError):
            Sandbox.create(template="base", base_url=server["base_url"], api_key=key)
        res = as_key(server, key, "POST", "/v1/sandboxes", json={"template_name": "base"})
        assert res.status_code == 403 and "limit" in res.json()["message"]
        details = res.json()["error"]["details"]
        assert (details["limit"], details["current"], details["available"]) == (8, 8, 0)
        # another tenant is not affected
        other = Sandbox.create(template="base", base_url=server["base_url"], api_key=new_key(server, "tenant-quota-2"))
        other.kill()
    finally:
        for sb in made:
            sb.kill()
