"""Persistent volumes, first part (issue 32): create, list, get, delete through E2B's SDK
(`e2b.Volume`, unmodified; its content API found through E2B_VOLUME_API_URL in the one-address
setup) and through Warren's `/v1/volumes`; the content API with the volume's token: files,
directories, metadata, listing with depth, and paths that try to leave the volume. Mounting
volumes into sandboxes is not served yet: `volumeMounts` is still refused by name."""
import os
import subprocess
import uuid

import pytest
import requests

from conftest import WARREN, new_key, raw

pytest.importorskip("e2b", reason="SKIPPED LOUDLY: the e2b SDK is not installed (scripts/test installs it)")

from e2b import NotFoundException, Volume  # noqa: E402


@pytest.fixture
def volume_env(e2b_env, monkeypatch):
    monkeypatch.setenv("E2B_VOLUME_API_URL", e2b_env["base_url"])
    return e2b_env


def test_volume_lifecycle_and_files_through_the_e2b_sdk(volume_env):
    name = f"vol-{uuid.uuid4().hex[:8]}"
    vol = Volume.create(name)
    try:
        assert vol.volume_id and vol.name == name
        assert name in [v.name for v in Volume.list()]
        assert Volume.get_info(vol.volume_id).name == name
        vol.make_dir("/notes/deep/er", force=True)
        info = vol.write_file("/notes/today.txt", "hello volume", mode=0o640)
        assert (info.size, info.mode, info.uid) == (12, 0o640, 0)
        assert vol.read_file("/notes/today.txt") == "hello volume"
        assert vol.read_file("/notes/today.txt", format="bytes") == b"hello volume"
        # An existing file is replaced only when asked.
        with pytest.raises(Exception):
            vol.write_file("/notes/today.txt", "again")
        vol.write_file("/notes/today.txt", "again", force=True)
        assert vol.read_file("/notes/today.txt") == "again"
        assert vol.exists("/notes/today.txt") and not vol.exists("/notes/nope.txt")
        listed = [e.path for e in vol.list("/notes", depth=3)]
        assert listed == ["/notes/deep", "/notes/deep/er", "/notes/today.txt"]
        assert [e.path for e in vol.list("/notes")] == ["/notes/deep", "/notes/today.txt"]
        updated = vol.update_metadata("/notes/today.txt", uid=1000, gid=1000, mode=0o600)
        assert (updated.uid, updated.gid, updated.mode) == (1000, 1000, 0o600)
        vol.remove("/notes/deep")
        assert not vol.exists("/notes/deep/er")
        # Another connection (a new token) sees the same files.
        again = Volume.connect(vol.volume_id)
        assert again.read_file("/notes/today.txt") == "again"
    finally:
        assert Volume.destroy(vol.volume_id)
    assert not Volume.destroy(vol.volume_id)
    with pytest.raises(NotFoundException):
        Volume.get_info(vol.volume_id)


def test_content_calls_need_the_volume_token_and_stay_inside_it(volume_env):
    base = volume_env["base_url"]
    a = Volume.create(f"a-{uuid.uuid4().hex[:8]}")
    b = Volume.create(f"b-{uuid.uuid4().hex[:8]}")
    try:
        a.write_file("/x.txt", "from a")
        url = f"{base}/volumecontent/{a.volume_id}/file"
        # No token, a key instead of a token, and another volume's token: all refused.
        assert requests.get(url, params={"path": "/x.txt"}).status_code == 401
        assert requests.get(url, params={"path": "/x.txt"},
                            headers={"Authorization": f"Bearer {volume_env['api_key']}"}).status_code == 401
        assert requests.get(url, params={"path": "/x.txt"},
                            headers={"Authorization": f"Bearer {b.token}"}).status_code == 401
        ok = requests.get(url, params={"path": "/x.txt"}, headers={"Authorization": f"Bearer {a.token}"})
        assert ok.status_code == 200 and ok.content == b"from a"
        auth = {"Authorization": f"Bearer {a.token}"}
        r = requests.get(url, params={"path": "/../../etc/passwd"}, headers=auth)
        assert r.status_code == 400 and ".." in r.json()["message"]
        r = requests.get(url, params={"path": "/x.txt", "bogus": "1"}, headers=auth)
        assert r.status_code == 400 and "bogus" in r.json()["message"]
        r = requests.delete(f"{base}/volumecontent/{a.volume_id}/path", params={"path": "/"}, headers=auth)
        assert r.status_code == 400
        r = requests.put(url, params={"path": "/x.txt", "uid": "70000"}, data=b"z", headers=auth)
        assert r.status_code == 400 and "uid" in r.json()["message"]
        r = requests.post(f"{base}/volumecontent/{a.volume_id}/dir", params={"path": "/p/q"}, headers=auth)
        assert r.status_code == 404
    finally:
        Volume.destroy(a.volume_id)
        Volume.destroy(b.volume_id)


def test_names_are_checked_and_tenants_see_only_their_own(volume_env):
    r = raw(volume_env, "POST", "/volumes", json={"name": "bad name"})
    assert r.status_code == 400 and "name" in r.json()["message"]
    r = raw(volume_env, "POST", "/volumes", json={"name": "x", "size": 5})
    assert r.status_code == 400 and "size" in r.json()["message"]
    name = f"shared-{uuid.uuid4().hex[:8]}"
    created = raw(volume_env, "POST", "/volumes", json={"name": name})
    assert created.status_code == 201, created.text
    vid = created.json()["volumeID"]
    try:
        assert raw(volume_env, "POST", "/volumes", json={"name": name}).status_code == 400
        # Warren's own API shows the same volume (a taken name is a 409 there).
        listed = raw(volume_env, "GET", "/v1/volumes").json()["volumes"]
        assert vid in [v["id"] for v in listed]
        assert raw(volume_env, "POST", "/v1/volumes", json={"name": name}).status_code == 409
        assert raw(volume_env, "GET", f"/v1/volumes/{name}").json()["id"] == vid
        # Another tenant sees nothing of it.
        other = new_key(volume_env, f"vol-other-{uuid.uuid4().hex[:6]}")
        h = {"X-API-Key": other}
        base = volume_env["base_url"]
        assert requests.get(f"{base}/volumes/{vid}", headers=h).status_code == 404
        assert vid not in [v["volumeID"] for v in requests.get(f"{base}/volumes", headers=h).json()]
        assert requests.delete(f"{base}/v1/volumes/{vid}", headers=h).status_code == 404
        # Same name in another tenant is fine.
        assert requests.post(f"{base}/v1/volumes", json={"name": name}, headers=h).status_code == 201
    finally:
        assert raw(volume_env, "DELETE", f"/v1/volumes/{vid}").status_code == 204
    assert raw(volume_env, "GET", f"/v1/volumes/{vid}").status_code == 404


def test_the_cli_creates_lists_and_deletes_volumes(server):
    env = dict(os.environ, WARREN_URL=server["base_url"], WARREN_API_KEY=server["api_key"])

    def cli(*args):
        return subprocess.run([WARREN, "volume", *args], env=env, capture_output=True, text=True, timeout=60)

    name = f"cli-{uuid.uuid4().hex[:8]}"
    made = cli("create", name)
    assert made.returncode == 0, made.stderr
    vid = made.stdout.split()[0]
    assert vid.startswith("vol_")
    assert f"{vid}\t{name}\t" in cli("list").stdout
    taken = cli("create", name)
    assert taken.returncode != 0 and "exists" in taken.stderr
    assert cli("delete", name).returncode == 0
    assert name not in cli("list").stdout
