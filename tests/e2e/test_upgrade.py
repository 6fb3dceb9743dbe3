"""Upgrades (issue 34): what an operator does when a fix ships. The previous release's server
(and, in a cluster, its control plane and node) runs sandboxes on every tier; it is stopped and
this build is started on the same data dir and database. Every sandbox keeps running with its
files, processes and interpreter state, and answers both official SDKs; the store migrates
forward; the previous release, started again on the migrated store, refuses to run and says why.

The previous release's binaries come from `scripts/previous-release` (built once per machine
from the tag's commit), named by WARREN_PREVIOUS_RELEASE. These tests start and stop servers of
their own, so they run with the live-restore tests (marker `restore`)."""
import os
import signal
import sqlite3
import subprocess
import tempfile
import time

import pytest
import requests
from hopx_ai import Sandbox

from conftest import JS_DIR, WARREN, free_port, start_postgres
from test_restore import (Server, check_state, clock_offset, data_dir, prepare, terminal_echo,  # noqa: F401
                          tiers_announced, traces_of, wait_until)

pytestmark = pytest.mark.restore

PREVIOUS_DIR = os.environ.get("WARREN_PREVIOUS_RELEASE", "")
PREVIOUS = os.path.join(PREVIOUS_DIR, "warren")
PREVIOUS_VERSION = "0.1.0"


def version_of(binary):
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    return out.split()[1]


@pytest.fixture(autouse=True)
def previous_release():
    if not os.path.exists(PREVIOUS):
        pytest.skip("SKIPPED LOUDLY: no previous release to upgrade from (WARREN_PREVIOUS_RELEASE: "
                    "scripts/previous-release builds it)")
    assert version_of(PREVIOUS) == PREVIOUS_VERSION
    assert version_of(WARREN) != PREVIOUS_VERSION, "this build still calls itself the previous release"


def js_check(base_url, key, sid, tag):
    """The official JS SDK on a sandbox the previous release made."""
    env = dict(os.environ, BASE_URL=base_url, HOPX_API_KEY=key, SANDBOX_ID=sid, TAG=tag)
    r = subprocess.run(["node", "scenarios.mjs", "U1"], cwd=JS_DIR, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def e2b_check(base_url, key, sid, tag, monkeypatch):
    """E2B's official SDK on the same sandbox."""
    from e2b import Sandbox as E2BSandbox
    monkeypatch.setenv("E2B_API_URL", base_url)
    monkeypatch.setenv("E2B_SANDBOX_URL", base_url)
    monkeypatch.setenv("E2B_API_KEY", key)
    monkeypatch.delenv("E2B_DOMAIN", raising=False)
    sb = E2BSandbox.connect(sid)
    assert sb.commands.run("cat /workspace/kept.txt").stdout == f"file of {tag}"


def refused_start(argv, env, what):
    """Runs a server that must refuse to start: its exit status and what it said."""
    r = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0, f"{what} started:\n{r.stdout}{r.stderr}"
    return r.stdout + r.stderr


def migrations_of_sqlite(path):
    db = sqlite3.connect(path)
    try:
        newest = db.execute("SELECT MAX(version) FROM _sqlx_migrations").fetchone()[0]
        release = db.execute("SELECT version FROM store_release WHERE id = 1").fetchone()[0]
        return newest, release
    finally:
        db.close()


def test_an_upgrade_keeps_every_tier_s_sandboxes_running_and_a_downgrade_is_refused(data_dir, monkeypatch):
    server = Server(data_dir, binary=PREVIOUS)
    server.start()
    tiers = tiers_announced(server, f"upgrade from {PREVIOUS_VERSION}")
    sandboxes = {}  # id -> {tier, tag, paused}
    for tier in tiers:
        for i, paused in enumerate((False, True)):
            created = server.create(tier)
            tag = f"{tier}-{i}"
            prepare(server.connect(created["id"]), tag)
            sandboxes[created["id"]] = {"tier": tier, "tag": tag, "paused": paused,
                                        "public_host": created["public_host"]}
    for sid, s in sandboxes.items():
        if s["paused"]:
            server.connect(sid).pause()
    before = {sid: traces_of(sid, data_dir) for sid in sandboxes}
    offsets = {sid: clock_offset(server.connect(sid)) for sid, s in sandboxes.items() if not s["paused"]}

    # The upgrade: SIGTERM to the previous release (its sandboxes keep running), this build on the
    # same data dir, port and key.
    server.term()
    down_from = time.time()
    server.binary = WARREN
    down_to = server.start()
    health = server.api("GET", "/health").json()
    assert health["version"] == version_of(WARREN), health
    newest, release = migrations_of_sqlite(os.path.join(data_dir, "warren.db"))
    assert release == health["version"] and newest >= 17, (newest, release)

    listed = {s["id"]: s for s in server.api("GET", "/v1/sandboxes?limit=100").json()["data"]}
    for sid, s in sandboxes.items():
        assert listed[sid]["status"] == ("paused" if s["paused"] else "running"), (listed[sid], server.tail())
        assert listed[sid]["public_host"] == s["public_host"]
    for sid, s in sandboxes.items():
        sb = server.connect(sid)  # resumes the paused ones: frozen by the previous release
        if s["paused"]:
            check_state(sb, s["tag"])
        else:
            check_state(sb, s["tag"], down_from, down_to, offsets[sid])
        js_check(server.base_url, server.key, sid, s["tag"])
        e2b_check(server.base_url, server.key, sid, s["tag"], monkeypatch)
    for tier in tiers:
        sid = next(i for i, s in sandboxes.items() if s["tier"] == tier)
        assert "terminal-42" in terminal_echo(server, sid)
    # New sandboxes of this build run beside the previous release's.
    fresh = Sandbox.create(template="code-interpreter", base_url=server.base_url, api_key=server.key)
    assert fresh.run_code("print(6 * 7)").stdout.strip() == "42"
    fresh.kill()

    # A downgrade: the previous release on the migrated store refuses to start, and changes
    # nothing — this build starts again and every sandbox still runs.
    server.term()
    said = refused_start([PREVIOUS, "serve", "--listen", f"127.0.0.1:{server.port}", "--data-dir", data_dir,
                          "--no-prebuild", "--no-pool"],
                         dict(os.environ, WARREN_API_KEY=server.key), "the previous release on a migrated store")
    print(f"the previous release on the migrated store said: {said.strip()[-400:]}")
    assert "migration 17 was previously applied but is missing" in said, said
    # The same refusal from this build's side (what any later downgrade will say): a store that a
    # newer release migrated is refused by name.
    db = sqlite3.connect(os.path.join(data_dir, "warren.db"))
    db.execute("INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) "
               "VALUES (9999, 'from a later release', 1, x'00', 1)")
    db.execute("UPDATE store_release SET version = '9.9.9' WHERE id = 1")
    db.commit()
    said = refused_start([WARREN, "serve", "--listen", f"127.0.0.1:{server.port}", "--data-dir", data_dir,
                          "--no-prebuild", "--no-pool"],
                         dict(os.environ, WARREN_API_KEY=server.key), "this build on a later release's store")
    assert "last opened by Warren 9.9.9" in said and "downgrades are not supported" in said, said
    db.execute("DELETE FROM _sqlx_migrations WHERE version = 9999")
    db.commit()
    db.close()
    server.start()
    for sid, s in sandboxes.items():
        assert server.connect(sid).commands.run("cat /workspace/kept.txt").stdout == f"file of {s['tag']}"
        assert traces_of(sid, data_dir), f"{sid}: nothing of it is left on the host"

    for sid in sandboxes:
        assert server.api("DELETE", f"/v1/sandboxes/{sid}").status_code in (200, 204)
    for sid, s in sandboxes.items():
        wait_until(lambda: not traces_of(sid, data_dir), 60, f"{s['tag']} removed: {traces_of(sid, data_dir)}")
    assert all(before.values()), before  # every sandbox had host state before the upgrade
    server.term()


# --- a cluster: a control plane on PostgreSQL and a node, upgraded one after the other ----------

JOIN_SECRET = "join-" + os.urandom(12).hex()
NODE_IP = "127.0.0.2"


class Cluster:
    def __init__(self, root):
        self.root = root
        self.db, self.stop_db = start_postgres()
        self.key = "wrn_test_" + os.urandom(16).hex()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = dict(os.environ, WARREN_API_KEY=self.key, WARREN_NODE_JOIN_SECRET=JOIN_SECRET, RUST_LOG="info")
        self.cp = self.node = None

    def cp_argv(self, binary):
        return [binary, "serve", "--no-pool", "--no-prebuild", "--no-local-node", "--database-url", self.db,
                "--listen", f"127.0.0.1:{self.port}", "--data-dir", os.path.join(self.root, "cp")]

    def start_cp(self, binary):
        log = open(os.path.join(self.root, "cp.log"), "a")
        self.cp = subprocess.Popen(self.cp_argv(binary), stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                   start_new_session=True)
        wait_until(lambda: self.ok("/health"), 60, f"control plane ({binary}):\n{self.tail('cp')}")

    def start_node(self, binary):
        log = open(os.path.join(self.root, "node.log"), "a")
        self.node = subprocess.Popen(
            [binary, "node", "--control-plane", self.url, "--listen", f"{NODE_IP}:7070",
             "--data-dir", os.path.join(self.root, "node")],
            stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        wait_until(lambda: self.node_state() == "healthy", 60, f"node ({binary}) healthy:\n{self.tail('node')}")

    def ok(self, path):
        try:
            return requests.get(self.url + path, timeout=1).ok
        except requests.RequestException:
            return False

    def node_state(self):
        try:
            r = requests.get(self.url + "/v1/admin/nodes", headers={"X-API-Key": self.key}, timeout=5)
            nodes = r.json()["data"] if r.ok else []
        except requests.RequestException:
            return None
        return next((n["state"] for n in nodes if NODE_IP in n["public_host"]), None)

    def tail(self, name):
        return "".join(open(os.path.join(self.root, f"{name}.log")).readlines()[-40:])

    @staticmethod
    def term(proc):
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 0

    def stop(self):
        for p in (self.node, self.cp):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
        subprocess.run([WARREN, "stop-sandboxes", "--data-dir", os.path.join(self.root, "node")], capture_output=True)
        self.stop_db()


def test_a_cluster_upgrades_control_plane_then_node_and_its_sandboxes_keep_running(monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("SKIPPED LOUDLY: nodes need root (cgroups, netns, overlay)")
    root = tempfile.mkdtemp(prefix="warren-upgrade-")
    c = Cluster(root)
    try:
        c.start_cp(PREVIOUS)
        c.start_node(PREVIOUS)
        sb = Sandbox.create(template="code-interpreter", base_url=c.url, api_key=c.key)
        sid, tag = sb.sandbox_id, "cluster-0"
        prepare(sb, tag)
        assert NODE_IP in sb.get_info().public_host

        # The control plane first: this build, on the PostgreSQL store the previous one made,
        # with the previous release's node still running.
        c.term(c.cp)
        c.start_cp(WARREN)
        health = requests.get(c.url + "/health", timeout=5).json()
        assert health["version"] == version_of(WARREN)
        wait_until(lambda: c.node_state() == "healthy", 30, "the previous release's node healthy again")
        check_state(Sandbox.connect(sid, base_url=c.url, api_key=c.key), tag)
        fresh = Sandbox.create(template="code-interpreter", base_url=c.url, api_key=c.key)
        assert fresh.run_code("print(6 * 7)").stdout.strip() == "42", "a new sandbox on the previous release's node"
        fresh.kill()

        # Then the node: this build takes over the sandbox the previous one started.
        c.term(c.node)
        c.start_node(WARREN)
        nodes = requests.get(c.url + "/v1/admin/nodes", headers={"X-API-Key": c.key}, timeout=5).json()["data"]
        assert [n for n in nodes if NODE_IP in n["public_host"]][0]["state"] == "healthy"
        check_state(Sandbox.connect(sid, base_url=c.url, api_key=c.key), tag)
        js_check(c.url, c.key, sid, tag)
        e2b_check(c.url, c.key, sid, tag, monkeypatch)

        # The previous control plane refuses the migrated PostgreSQL store.
        said = refused_start(c.cp_argv(PREVIOUS)[:-2] + ["--data-dir", os.path.join(root, "cp-old")], c.env,
                             "the previous release's control plane on the migrated store")
        assert "migration 17 was previously applied but is missing" in said, said
        assert Sandbox.connect(sid, base_url=c.url, api_key=c.key).run_code("print(restored_variable)").stdout.strip() == tag
        Sandbox.connect(sid, base_url=c.url, api_key=c.key).kill()
    finally:
        c.stop()
        import shutil
        shutil.rmtree(root, ignore_errors=True)
    assert not traces_of(sid, os.path.join(root, "node"))
