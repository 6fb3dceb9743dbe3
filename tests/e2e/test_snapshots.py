"""Snapshots and fork (issue 16, Warren extension): `POST /v1/sandboxes/{id}/snapshot` captures a
running sandbox's file system; `POST /v1/sandboxes` with `snapshot_id` starts copies (`count` of
them at once). Copies see the source's files, deletions and owners; a write in one is never seen
by another or by the source; the source keeps running; snapshots are their tenant's; deleting
one frees its layer. On the namespace tier (the sources here ask for it, whatever the suite's
default tier)."""
import os
import time

import pytest
from hopx_ai import Sandbox

from conftest import new_key, raw

pytestmark = pytest.mark.usefixtures("server")


def create(server, key=None, **body):
    headers = {"X-API-Key": key or server["api_key"]}
    r = raw(server, "POST", "/v1/sandboxes", headers=headers,
            json={"template_name": "code-interpreter", "isolation": "namespaces", **body})
    assert r.status_code == 201, r.text
    return r.json()


def connect(server, sb, key=None):
    return Sandbox.connect(sb["id"], base_url=server["base_url"], api_key=key or server["api_key"])


def kill(server, ids, key=None):
    for sid in ids:
        raw(server, "DELETE", f"/v1/sandboxes/{sid}", headers={"X-API-Key": key or server["api_key"]})


def test_copies_of_a_snapshot_see_the_source_and_never_each_other(server):
    source = connect(server, create(server))
    copies = []
    try:
        source.files.write("/workspace/kept.txt", "from the source")
        source.commands.run("rm /etc/debian_version && mkdir -p /opt/made && "
                            "su user -c 'echo mine > /tmp/user-file' && chmod 4755 /workspace/kept.txt")
        r = raw(server, "POST", f"/v1/sandboxes/{source.sandbox_id}/snapshot")
        assert r.status_code == 201, r.text
        snap = r.json()
        assert snap["id"].startswith("snap_") and snap["sandbox_id"] == source.sandbox_id
        assert snap["size_bytes"] > 0
        # The source runs on, its files as they were.
        assert source.files.read("/workspace/kept.txt") == "from the source"
        assert source.run_code("print(2 + 2)").stdout == "4\n"

        r = raw(server, "POST", "/v1/sandboxes", json={"snapshot_id": snap["id"], "count": 3})
        assert r.status_code == 201, r.text
        made = r.json()["sandboxes"]
        assert len(made) == 3 and len({m["id"] for m in made}) == 3
        assert all(m["status"] == "running" and m["auth_token"] for m in made)
        copies = [connect(server, m) for m in made]
        for i, c in enumerate(copies):
            assert c.files.read("/workspace/kept.txt") == "from the source"
            out = c.commands.run("test -e /etc/debian_version; echo $?; test -d /opt/made && echo dir; "
                                 "stat -c '%U %a' /tmp/user-file /workspace/kept.txt").stdout.split()
            assert out == ["1", "dir", "user", "644", "root", "4755"], out
            c.files.write("/workspace/own.txt", f"copy {i}")
        for i, c in enumerate(copies):
            assert c.files.read("/workspace/own.txt") == f"copy {i}"
        assert not source.files.exists("/workspace/own.txt")
        source.files.write("/workspace/later.txt", "after the snapshot")
        assert not copies[0].files.exists("/workspace/later.txt")
    finally:
        kill(server, [c.sandbox_id for c in copies] + [source.sandbox_id])


def test_snapshots_are_their_tenants_and_deleting_one_frees_its_layer(server):
    source = create(server)
    other = new_key(server, "snapshot-other")
    try:
        snap = raw(server, "POST", f"/v1/sandboxes/{source['id']}/snapshot").json()
        listed = raw(server, "GET", "/v1/snapshots").json()["data"]
        assert snap["id"] in [s["id"] for s in listed]
        assert raw(server, "GET", f"/v1/snapshots/{snap['id']}").json()["sandbox_id"] == source["id"]
        # Another tenant: no such snapshot, in every call.
        h = {"X-API-Key": other}
        assert snap["id"] not in [s["id"] for s in raw(server, "GET", "/v1/snapshots", headers=h).json()["data"]]
        assert raw(server, "GET", f"/v1/snapshots/{snap['id']}", headers=h).status_code == 404
        r = raw(server, "POST", "/v1/sandboxes", headers=h, json={"snapshot_id": snap["id"]})
        assert r.status_code == 404 and r.json()["error"]["code"] == "SNAPSHOT_NOT_FOUND", r.text
        assert raw(server, "DELETE", f"/v1/snapshots/{snap['id']}", headers=h).status_code == 404
        assert raw(server, "POST", f"/v1/sandboxes/{source['id']}/snapshot", headers=h).status_code == 404

        layer = os.path.join(server["data_dir"], "snapshots", snap["id"])
        assert os.path.isdir(layer)
        copy = raw(server, "POST", "/v1/sandboxes", json={"snapshot_id": snap["id"]}).json()
        r = raw(server, "DELETE", f"/v1/snapshots/{snap['id']}")
        assert r.status_code == 409, r.text  # a copy runs from it
        kill(server, [copy["id"]])
        r = raw(server, "DELETE", f"/v1/snapshots/{snap['id']}")
        assert r.status_code == 200, r.text
        assert not os.path.exists(layer)
        assert raw(server, "GET", f"/v1/snapshots/{snap['id']}").status_code == 404
        r = raw(server, "POST", "/v1/sandboxes", json={"snapshot_id": snap["id"]})
        assert r.status_code == 404, r.text
    finally:
        kill(server, [source["id"]])


def test_count_creates_all_or_nothing_and_is_bounded(server):
    key = new_key(server, "count-tenant")
    h = {"X-API-Key": key}
    r = raw(server, "POST", "/v1/sandboxes", headers=h, json={"template_name": "code-interpreter", "count": 2})
    assert r.status_code == 201, r.text
    kill(server, [s["id"] for s in r.json()["sandboxes"]], key)
    for bad in (0, 101):
        r = raw(server, "POST", "/v1/sandboxes", headers=h, json={"template_name": "code-interpreter", "count": bad})
        assert r.status_code == 400, r.text
    # Beyond the tenant's quota (8 here): refused, and none of the ones that started stays.
    r = raw(server, "POST", "/v1/sandboxes", headers=h, json={"template_name": "code-interpreter", "count": 9})
    assert r.status_code == 403 and r.json()["error"]["code"] == "RESOURCE_LIMIT_EXCEEDED", r.text
    deadline = time.time() + 30
    while time.time() < deadline and raw(server, "GET", "/v1/sandboxes", headers=h).json()["data"]:
        time.sleep(0.2)
    assert raw(server, "GET", "/v1/sandboxes", headers=h).json()["data"] == []


def test_snapshot_needs_a_running_sandbox_on_a_tier_that_takes_them(server):
    sb = create(server)
    kill(server, [sb["id"]])
    r = raw(server, "POST", f"/v1/sandboxes/{sb['id']}/snapshot")
    assert r.status_code == 409, r.text
    if "gvisor" in raw(server, "GET", "/health").json()["isolation_tiers"]:
        g = create(server, isolation="gvisor")
        try:
            r = raw(server, "POST", f"/v1/sandboxes/{g['id']}/snapshot")
            assert r.status_code == 400 and "namespaces and microvm tiers" in r.json()["error"]["message"], r.text
        finally:
            kill(server, [g["id"]])
