"""Persistent volumes (issue 32): create, list, get, delete through E2B's SDK (`e2b.Volume`,
unmodified; its content API found through E2B_VOLUME_API_URL in the one-address setup) and
through Warren's `/v1/volumes`; the content API with the volume's token: files, directories,
metadata, listing with depth, and paths that try to leave the volume. Mounted into sandboxes:
E2B's `volume_mounts` and Warren's `volumes` field, shared by many sandboxes at once (namespace
and gVisor tiers), read-only mounts, owners as each sandbox's users, a delete refused while
mounted, snapshot copies mounting their source's volumes, and the refusals by name."""
import os
import subprocess
import uuid

import pytest
import requests

from conftest import WARREN, new_key, raw

pytest.importorskip("e2b", reason="SKIPPED LOUDLY: the e2b SDK is not installed (scripts/test installs it)")

from e2b import NotFoundException, Sandbox, Volume  # noqa: E402


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


def tiers(server):
    return raw(server, "GET", "/health").json().get("isolation_tiers", [])


def test_e2b_volume_mounts_share_files_between_sandboxes(volume_env):
    vol = Volume.create(f"shared-{uuid.uuid4().hex[:8]}")
    sandboxes = []
    try:
        vol.write_file("/seed.txt", "from the content API")
        a = Sandbox.create(template="base", volume_mounts={"/mnt/data": vol})
        sandboxes.append(a)
        # The SDK's default user (`user`) reads what the content API wrote and writes its own.
        assert a.files.read("/mnt/data/seed.txt") == "from the content API"
        a.files.write("/mnt/data/by-a.txt", "line 1\n")
        a.commands.run("echo line 2 >> /mnt/data/by-a.txt && mkdir /mnt/data/dir && mv /mnt/data/by-a.txt /mnt/data/dir/log.txt")
        assert a.get_info().volume_mounts == [{"name": vol.name, "path": "/mnt/data"}]
        # A second sandbox, by volume name, sees it at once; so does the content API, owned by `user`.
        b = Sandbox.create(template="base", volume_mounts={"/data": vol.name})
        sandboxes.append(b)
        assert b.files.read("/data/dir/log.txt") == "line 1\nline 2\n"
        assert b.commands.run("stat -c %U /data/dir/log.txt").stdout.strip() == "user"
        stat = vol.get_info("/dir/log.txt")
        assert (stat.uid, stat.gid, stat.size) == (1000, 1000, 14)
        # Written in b as root, seen in a as root.
        b.commands.run("echo root > /data/root.txt", user="root")
        assert a.commands.run("stat -c %U:%a /mnt/data/root.txt").stdout.strip() == "root:644"
        # Nothing of the volume is in a sandbox that does not mount it.
        c = Sandbox.create(template="base")
        sandboxes.append(c)
        assert c.commands.run("ls /mnt/data 2>&1 || true").stdout.strip().endswith("No such file or directory")
        # Mounted: the delete is refused with a 409 naming the sandboxes; once they end, it goes.
        r = raw(volume_env, "DELETE", f"/volumes/{vol.volume_id}")
        assert r.status_code == 409 and a.sandbox_id in r.text and b.sandbox_id in r.text, r.text
        a.kill()
        b.kill()
        # The files outlived both sandboxes.
        assert vol.read_file("/dir/log.txt") == "line 1\nline 2\n"
        assert Volume.destroy(vol.volume_id)
    finally:
        for s in sandboxes:
            try:
                s.kill()
            except Exception:
                pass
        Volume.destroy(vol.volume_id)


@pytest.mark.parametrize("tier", ["namespaces", "gvisor"])
def test_warren_volumes_field_read_only_and_tiers(volume_env, tier):
    """Warren's own create field, over raw HTTP: read-write and read-only mounts of one volume in
    a sandbox of each tier, shown on GET; a read-only mount refuses writes with EROFS."""
    if tier not in tiers(volume_env):
        pytest.skip(f"SKIPPED LOUDLY: the {tier} tier is not available on this machine")
    name = f"data-{tier}-{uuid.uuid4().hex[:6]}"
    assert raw(volume_env, "POST", "/v1/volumes", json={"name": name}).status_code == 201
    mounts = [{"name": name, "path": "/data", "read_only": False},
              {"name": name, "path": "/ro", "read_only": True}]
    r = raw(volume_env, "POST", "/v1/sandboxes", json={"template_name": "base", "isolation": tier, "volumes": mounts})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    try:
        shown = raw(volume_env, "GET", f"/v1/sandboxes/{sid}").json()["volumes"]
        assert shown == mounts, shown
        sb = Sandbox.connect(sid)
        out = sb.commands.run("echo hi > /data/f && cat /ro/f && ((echo no > /ro/g) 2>&1 || true)", user="root")
        assert out.stdout.splitlines()[0] == "hi", out.stdout
        assert "Read-only file system" in out.stdout, out.stdout
        # Owners as the sandbox's users, whatever the tier (python: gVisor's statx fails coreutils' stat).
        owners = sb.commands.run(
            "touch /data/by-user && python3 -c 'import os,stat; print(*[f\"{stat.filemode(os.stat(p).st_mode)}:{os.stat(p).st_uid}\" "
            "for p in (\"/data\", \"/ro\", \"/data/f\", \"/ro/by-user\")])'").stdout.split()
        assert owners == ["drwxrwxrwx:0", "drwxrwxrwx:0", "-rw-r--r--:0", "-rw-r--r--:1000"], owners
        stat = Volume.connect(raw(volume_env, "GET", f"/v1/volumes/{name}").json()["id"]).get_info("/by-user")
        assert (stat.uid, stat.gid) == (1000, 1000), stat
        # A copy of its snapshot mounts the same volume again (snapshots never copy volumes).
        if tier == "namespaces":
            snap = raw(volume_env, "POST", f"/v1/sandboxes/{sid}/snapshot")
            assert snap.status_code in (200, 201), snap.text
            copy = raw(volume_env, "POST", "/v1/sandboxes", json={"snapshot_id": snap.json()["id"]})
            assert copy.status_code == 201, copy.text
            cid = copy.json()["id"]
            try:
                assert raw(volume_env, "GET", f"/v1/sandboxes/{cid}").json()["volumes"] == mounts
                Sandbox.connect(sid).commands.run("echo later > /data/after-snapshot", user="root")
                assert Sandbox.connect(cid).files.read("/data/after-snapshot") == "later\n"
            finally:
                raw(volume_env, "DELETE", f"/v1/sandboxes/{cid}")
    finally:
        raw(volume_env, "DELETE", f"/v1/sandboxes/{sid}")
    assert raw(volume_env, "DELETE", f"/v1/volumes/{name}").status_code == 204


def test_mounts_are_refused_by_name_when_they_cannot_be_served(volume_env):
    name = f"refs-{uuid.uuid4().hex[:6]}"
    assert raw(volume_env, "POST", "/v1/volumes", json={"name": name}).status_code == 201
    try:
        def refused(body, *words):
            r = raw(volume_env, "POST", "/v1/sandboxes", json={"template_name": "base", **body})
            assert r.status_code == 400, r.text
            for w in words:
                assert w in r.json()["error"]["message"], (w, r.text)

        refused({"volumes": [{"name": "no-such-volume", "path": "/data"}]}, "no-such-volume")
        refused({"volumes": [{"name": name, "path": "data"}]}, "absolute")
        refused({"volumes": [{"name": name, "path": "/data/../etc"}]}, "clean")
        refused({"volumes": [{"name": name, "path": "/run"}]}, "/run/warren")
        refused({"volumes": [{"name": name, "path": "/proc/x"}]}, "/proc")
        refused({"volumes": [{"name": name, "path": "/a"}, {"name": name, "path": "/a"}]}, "twice")
        refused({"volumes": [{"name": name, "path": "/a", "mode": "rw"}]}, "mode")
        if "microvm" in tiers(volume_env):
            refused({"isolation": "microvm", "volumes": [{"name": name, "path": "/a"}]}, "microVM")
        # Another tenant's volume does not exist for this one.
        other = new_key(volume_env, f"vol-mnt-{uuid.uuid4().hex[:6]}")
        r = requests.post(f"{volume_env['base_url']}/v1/sandboxes", headers={"X-API-Key": other},
                          json={"template_name": "base", "volumes": [{"name": name, "path": "/data"}]})
        assert r.status_code == 400 and name in r.text, r.text
        # E2B's wire: an unknown name in volumeMounts is E2B's 400.
        r = raw(volume_env, "POST", "/sandboxes", json={"templateID": "base", "volumeMounts": [{"name": "nope", "path": "/x"}]})
        assert r.status_code == 400 and "nope" in r.json()["message"], r.text
    finally:
        raw(volume_env, "DELETE", f"/v1/volumes/{name}")


def test_a_volume_is_as_large_as_its_size_and_a_tenant_has_a_total(volume_env):
    """The size is a file system's: past it, the sandbox's own writes fail with ENOSPC and the
    content API answers 507 (half an upload is not left behind); the organization's volumes add
    up to at most `--max-volume-mb`."""
    name = f"small-{uuid.uuid4().hex[:6]}"
    r = raw(volume_env, "POST", "/v1/volumes", json={"name": name, "size_mb": 16})
    assert r.status_code == 201 and r.json()["size_mb"] == 16, r.text
    vid = r.json()["id"]
    try:
        r = raw(volume_env, "POST", "/v1/sandboxes", json={"template_name": "base", "volumes": [{"name": name, "path": "/data"}]})
        assert r.status_code == 201, r.text
        sid = r.json()["id"]
        try:
            out = Sandbox.connect(sid).commands.run(
                "dd if=/dev/zero of=/data/big bs=1M count=32 2>&1; df -m /data | tail -1", user="root")
            assert "No space left on device" in out.stdout, out.stdout
            used = raw(volume_env, "GET", f"/v1/volumes/{name}").json()
            assert 12 <= used["used_mb"] <= 16 and used["size_mb"] == 16, used
            token = raw(volume_env, "GET", f"/volumes/{vid}").json()["token"]
            put = requests.put(f"{volume_env['base_url']}/volumecontent/{vid}/file", params={"path": "/more.bin"},
                               data=b"x" * (8 << 20), headers={"Authorization": f"Bearer {token}"})
            assert put.status_code == 507 and "full" in put.json()["message"], (put.status_code, put.text)
            # Replacing a file with an upload that does not fit keeps the old file whole.
            Sandbox.connect(sid).commands.run("rm /data/big && echo old > /data/keep.txt && "
                                              "dd if=/dev/zero of=/data/big bs=1M count=32 2>/dev/null; true", user="root")
            replace = requests.put(f"{volume_env['base_url']}/volumecontent/{vid}/file",
                                   params={"path": "/keep.txt", "force": "true"},
                                   data=b"x" * (8 << 20), headers={"Authorization": f"Bearer {token}"})
            assert replace.status_code == 507, replace.text
            kept = requests.get(f"{volume_env['base_url']}/volumecontent/{vid}/file", params={"path": "/keep.txt"},
                                headers={"Authorization": f"Bearer {token}"})
            assert kept.content == b"old\n", kept.content[:40]
            listed = requests.get(f"{volume_env['base_url']}/volumecontent/{vid}/dir", params={"path": "/"},
                                  headers={"Authorization": f"Bearer {token}"}).json()
            assert sorted(e["name"] for e in listed) == ["big", "keep.txt"], listed
            # Room again once the sandbox removes its file.
            Sandbox.connect(sid).commands.run("rm /data/big", user="root")
            again = requests.put(f"{volume_env['base_url']}/volumecontent/{vid}/file", params={"path": "/more.bin"},
                                 data=b"x" * (8 << 20), headers={"Authorization": f"Bearer {token}"})
            assert again.status_code == 201, again.text
        finally:
            raw(volume_env, "DELETE", f"/v1/sandboxes/{sid}")
    finally:
        raw(volume_env, "DELETE", f"/v1/volumes/{vid}")
    r = raw(volume_env, "POST", "/v1/volumes", json={"name": name, "size_mb": 8})
    assert r.status_code == 400 and "size_mb" in r.json()["error"]["message"], r.text
    r = raw(volume_env, "POST", "/v1/volumes", json={"name": name, "size_mb": 200_000})
    assert r.status_code == 403 and "--max-volume-mb" in r.json()["error"]["message"], r.text


def test_a_clone_copies_files_owners_and_links_and_then_goes_its_own_way(volume_env, server):
    env = dict(os.environ, WARREN_URL=server["base_url"], WARREN_API_KEY=server["api_key"])

    def cli(*args):
        return subprocess.run([WARREN, "volume", *args], env=env, capture_output=True, text=True, timeout=120)

    src = f"src-{uuid.uuid4().hex[:6]}"
    assert cli("create", src, "--size-mb", "64").returncode == 0
    r = raw(volume_env, "POST", "/v1/sandboxes", json={"template_name": "base", "volumes": [{"name": src, "path": "/v"}]})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    copies = []
    try:
        sb = Sandbox.connect(sid)
        sb.commands.run("mkdir -p /v/d && echo one > /v/d/f && ln -s /etc/passwd /v/link && ln /v/d/f /v/hard "
                        "&& dd if=/dev/zero of=/v/big bs=1M count=20 2>/dev/null")
        made = cli("clone", src, f"{src}-copy")
        assert made.returncode == 0, made.stderr
        copy_id = made.stdout.split()[0]
        copies.append(copy_id)
        assert made.stdout.split("\t")[2].strip() == "64 MB", made.stdout
        copy = Volume.connect(copy_id)
        assert copy.read_file("/d/f") == "one\n"
        f = copy.get_info("/d/f")
        assert (f.uid, f.gid) == (1000, 1000), f
        link = copy.get_info("/link")
        assert link.type.value == "symlink" and link.target == "/etc/passwd", link
        # A copy, not a view: the source changes, the copy does not.
        sb.commands.run("echo two > /v/d/f")
        assert copy.read_file("/d/f") == "one\n"
        # Files that do not fit the size asked: 507, and no half-made volume is left.
        small = raw(volume_env, "POST", f"/v1/volumes/{src}/clone", json={"name": f"{src}-small", "size_mb": 16})
        assert small.status_code == 507 and "size_mb" in small.json()["error"]["message"], small.text
        assert raw(volume_env, "GET", f"/v1/volumes/{src}-small").status_code == 404
        taken = raw(volume_env, "POST", f"/v1/volumes/{src}/clone", json={"name": f"{src}-copy"})
        assert taken.status_code == 409, taken.text
    finally:
        raw(volume_env, "DELETE", f"/v1/sandboxes/{sid}")
        for c in copies:
            raw(volume_env, "DELETE", f"/v1/volumes/{c}")
        raw(volume_env, "DELETE", f"/v1/volumes/{src}")


def test_the_js_sdk_mounts_volumes_too(volume_env):
    """npm `e2b`, unmodified: Volume.create / writeFile / readFile / destroy and volumeMounts by
    volume and by name (scenario V1 in tests/js/e2b.mjs)."""
    js = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "js")
    if not os.path.isdir(os.path.join(js, "node_modules", "e2b")):
        pytest.fail("the E2B JS SDK is not installed: run scripts/test (it runs npm install in tests/js)")
    r = subprocess.run(["node", "e2b.mjs", "V1"], cwd=js, env=dict(os.environ), capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "V1 ok" in r.stdout
