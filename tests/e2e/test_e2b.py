"""The E2B protocol with the official, unmodified E2B SDKs (PyPI `e2b`, `e2b-code-interpreter`),
pointed at Warren the way E2B's own self-hosting docs say: `E2B_API_URL` and `E2B_SANDBOX_URL`
at the `warren serve` address, a Warren key as `E2B_API_KEY`. Sandboxes are the same objects as
the Hopx API's: each test that can also checks the other side."""
import base64
import os
import threading
import time

import pytest
import requests

from conftest import new_key, raw, wait_for_status

pytest.importorskip("e2b", reason="SKIPPED LOUDLY: the e2b SDK is not installed (scripts/test installs it)")

from e2b import (CommandExitException, FilesystemEventType, NotFoundException, PtySize, Sandbox,  # noqa: E402
                 SandboxQuery, SandboxState)
from e2b_code_interpreter import Sandbox as CodeSandbox  # noqa: E402


@pytest.fixture
def sbx(e2b_env):
    sb = Sandbox.create(template="base", metadata={"suite": "e2b"})
    yield sb
    try:
        sb.kill()
    except Exception:
        pass


def test_lifecycle_metadata_timeout_pause_resume_and_hopx_view(e2b_env):
    tag = os.urandom(4).hex()
    sb = Sandbox.create(template="base", timeout=120, metadata={"run": tag}, envs={"GREETING": "hi"})
    try:
        assert sb.is_running()
        info = sb.get_info()
        assert info.metadata == {"run": tag}
        assert info.template_id
        # The same sandbox through the Hopx API, same tenant.
        hopx = raw(e2b_env, "GET", f"/v1/sandboxes/{sb.sandbox_id}").json()
        assert hopx["status"] == "running"
        # List with a metadata filter finds exactly it.
        found = Sandbox.list(query=SandboxQuery(metadata={"run": tag})).next_items()
        assert [s.sandbox_id for s in found] == [sb.sandbox_id]
        assert Sandbox.list(query=SandboxQuery(metadata={"run": "nope"})).next_items() == []
        # Timeout: end moves.
        sb.set_timeout(600)
        assert (sb.get_info().end_at - info.started_at).total_seconds() > 500
        assert sb.commands.run("echo $GREETING").stdout.strip() == "hi"
        # Pause, listed as paused, connect resumes it with its state.
        sb.commands.run("echo kept > /tmp/state")
        sb.pause()
        paused = Sandbox.list(query=SandboxQuery(metadata={"run": tag}, state=[SandboxState.PAUSED])).next_items()
        assert [s.sandbox_id for s in paused] == [sb.sandbox_id]
        again = Sandbox.connect(sb.sandbox_id)
        assert again.commands.run("cat /tmp/state").stdout.strip() == "kept"
    finally:
        sb.kill()
    assert not sb.is_running()
    with pytest.raises(NotFoundException):
        Sandbox.connect(sb.sandbox_id)


def test_commands_exit_codes_output_env_cwd_user(sbx):
    r = sbx.commands.run("echo out; echo err >&2")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "out\n", "err\n")
    with pytest.raises(CommandExitException) as e:
        sbx.commands.run("echo partial; exit 7")
    assert e.value.exit_code == 7 and e.value.stdout == "partial\n"
    assert sbx.commands.run("echo $A-$B", envs={"A": "1", "B": "2"}).stdout == "1-2\n"
    sbx.files.make_dir("/tmp/wd")
    assert sbx.commands.run("pwd", cwd="/tmp/wd").stdout == "/tmp/wd\n"
    # envd's default user, and root on request.
    assert sbx.commands.run("whoami; pwd").stdout == "user\n/home/user\n"
    assert sbx.commands.run("whoami", user="root").stdout == "root\n"
    seen = []
    sbx.commands.run("for i in 1 2 3; do echo $i; done", on_stdout=seen.append)
    assert "".join(seen) == "1\n2\n3\n"


def test_background_commands_wait_kill_stdin_list_connect(sbx):
    h = sbx.commands.run("sleep 0.5; echo done", background=True)
    assert h.wait().stdout == "done\n"

    cat = sbx.commands.run("cat", background=True, stdin=True)
    sbx.commands.send_stdin(cat.pid, "hello\n")
    cat.close_stdin()
    assert cat.wait().stdout == "hello\n"

    sleeper = sbx.commands.run("sleep 600", background=True)
    assert sleeper.pid in [p.pid for p in sbx.commands.list()]
    out = []
    again = sbx.commands.connect(sleeper.pid)
    assert again.pid == sleeper.pid
    assert sbx.commands.kill(sleeper.pid)
    with pytest.raises(CommandExitException):
        again.wait(on_stdout=out.append)
    assert sleeper.pid not in [p.pid for p in sbx.commands.list()]
    assert sbx.commands.kill(sleeper.pid) is False


def test_metrics_are_measured_from_outside_the_sandbox(sbx):
    """`get_metrics` answers with one sample of now (Warren keeps no history), in E2B's shape."""
    sbx.commands.run("dd if=/dev/zero of=/tmp/filled bs=1M count=16 conv=fsync 2>/dev/null")
    samples = sbx.get_metrics()
    assert len(samples) == 1, samples
    m = samples[0]
    assert m.cpu_count >= 1 and 0 <= m.cpu_used_pct <= 100
    assert 0 < m.mem_used and m.mem_total >= 256 << 20
    assert m.disk_total > 0
    assert abs(time.time() - m.timestamp.timestamp()) < 60
    # An interval that ended an hour ago holds no sample.
    import datetime
    hour_ago = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=1)
    assert sbx.get_metrics(start=hour_ago - datetime.timedelta(minutes=5), end=hour_ago) == []


def test_pty_create_send_resize_kill(sbx):
    h = sbx.pty.create(PtySize(rows=24, cols=80))
    sbx.pty.send_stdin(h.pid, b"stty size > /tmp/first; echo marker-$((6*7))\n")
    # The shell creates the file before stty writes into it: wait for the line itself.
    first = ""
    for _ in range(100):
        if sbx.files.exists("/tmp/first"):
            first = sbx.files.read("/tmp/first")
            if first.endswith("\n"):
                break
        time.sleep(0.05)
    assert first == "24 80\n"
    sbx.pty.resize(h.pid, PtySize(rows=40, cols=100))
    sbx.pty.send_stdin(h.pid, b"stty size; exit\n")
    data = bytearray()
    h.wait(on_pty=lambda d: data.extend(d))
    text = data.decode(errors="replace")
    assert "marker-42" in text and "40 100" in text, text
    h2 = sbx.pty.create(PtySize(rows=24, cols=80))
    assert sbx.pty.kill(h2.pid)


def test_files_text_binary_large_list_exists_mkdir_rename_remove(sbx):
    sbx.files.write("/tmp/e2b/hello.txt", "hello")
    assert sbx.files.read("/tmp/e2b/hello.txt") == "hello"
    blob = os.urandom(10 * 1024 * 1024)
    sbx.files.write("/tmp/e2b/blob.bin", blob)
    assert bytes(sbx.files.read("/tmp/e2b/blob.bin", format="bytes")) == blob
    names = sorted(e.name for e in sbx.files.list("/tmp/e2b"))
    assert names == ["blob.bin", "hello.txt"]
    info = sbx.files.get_info("/tmp/e2b/blob.bin")
    assert info.size == len(blob) and info.type.value == "file"
    assert sbx.files.exists("/tmp/e2b/hello.txt") and not sbx.files.exists("/tmp/e2b/none")
    assert sbx.files.make_dir("/tmp/e2b/sub") is True
    assert sbx.files.make_dir("/tmp/e2b/sub") is False
    sbx.files.rename("/tmp/e2b/hello.txt", "/tmp/e2b/sub/moved.txt")
    assert sbx.commands.run("cat /tmp/e2b/sub/moved.txt").stdout == "hello"
    sbx.files.remove("/tmp/e2b/sub")
    assert not sbx.files.exists("/tmp/e2b/sub")
    with pytest.raises(NotFoundException):
        sbx.files.read("/tmp/e2b/nothing")
    # Relative paths are the user's home, and the user owns what it writes.
    sbx.files.write("notes.txt", "mine")
    assert sbx.commands.run("stat -c %U /home/user/notes.txt").stdout == "user\n"


def test_watch_dir_reports_writes_under_their_own_names(sbx):
    sbx.files.make_dir("/tmp/watched")
    handle = sbx.files.watch_dir("/tmp/watched")
    sbx.files.write("/tmp/watched/new.txt", "1")
    sbx.files.write("/tmp/watched/new.txt", "2")
    sbx.commands.run("rm /tmp/watched/new.txt")
    time.sleep(1)
    events = [(e.name, e.type) for e in handle.get_new_events()]
    handle.stop()
    assert all(".warren-" not in name for name, _ in events), events
    assert ("new.txt", FilesystemEventType.CREATE) in events, events
    assert ("new.txt", FilesystemEventType.WRITE) in events, events
    assert ("new.txt", FilesystemEventType.REMOVE) in events, events
    assert FilesystemEventType.RENAME not in [t for _, t in events], events


def test_code_interpreter_state_charts_tables_errors_streams_contexts(e2b_env):
    with CodeSandbox.create() as sb:
        assert sb.run_code("x = 41").error is None
        r = sb.run_code("x + 1")
        assert r.text == "42" and r.results[0].is_main_result
        chart = sb.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3])\nplt.show()")
        png = [res.png for res in chart.results if res.png]
        assert png and base64.b64decode(png[0]).startswith(b"\x89PNG")
        table = sb.run_code("import pandas as pd\npd.DataFrame({'a': [1, 2]})")
        assert "<table" in (table.results[0].html or "")
        err = sb.run_code("1 / 0")
        assert err.error.name == "ZeroDivisionError" and "Traceback" in err.error.traceback
        out, errs = [], []
        sb.run_code("import sys\nprint('to out')\nprint('to err', file=sys.stderr)",
                    on_stdout=lambda m: out.append(m.line), on_stderr=lambda m: errs.append(m.line))
        assert "to out" in "".join(out) and "to err" in "".join(errs)
        # Output arrives while the cell runs, not only at its end.
        stamps = []
        t0 = time.monotonic()
        sb.run_code("import time\nprint('early', flush=True)\ntime.sleep(1.5)\nprint('late')",
                    on_stdout=lambda m: stamps.append((m.line, time.monotonic() - t0)))
        assert [l for l, _ in stamps] == ["early\n", "late\n"], stamps
        assert stamps[1][1] - stamps[0][1] > 1.0, stamps
        ctx = sb.create_code_context()
        assert sb.run_code("x", context=ctx).error.name == "NameError"
        assert sb.run_code("x").text == "41"
        assert sb.run_code("x = 'ctx'", context=ctx).error is None
        assert sb.run_code("x", context=ctx).text == "'ctx'"
        # The default context is the Hopx run_code interpreter too.
        from hopx_ai import Sandbox as HopxSandbox
        hopx = HopxSandbox.connect(sb.sandbox_id, base_url=e2b_env["base_url"], api_key=e2b_env["api_key"])
        assert "41" in hopx.run_code("print(x)").stdout


def test_hopx_sandbox_through_e2b_and_back(e2b_env):
    from hopx_ai import Sandbox as HopxSandbox
    hopx = HopxSandbox.create(template="base", base_url=e2b_env["base_url"], api_key=e2b_env["api_key"])
    try:
        hopx.files.write("/tmp/from-hopx.txt", "hopx wrote this")
        e2b = Sandbox.connect(hopx.sandbox_id)
        assert e2b.files.read("/tmp/from-hopx.txt") == "hopx wrote this"
        e2b.files.write("/tmp/from-e2b.txt", "e2b wrote this")
        assert hopx.files.read("/tmp/from-e2b.txt") == "e2b wrote this"
        assert hopx.sandbox_id in [s.sandbox_id for s in Sandbox.list().next_items()]
    finally:
        hopx.kill()


def snapshot_ids(paginator):
    found = []
    while paginator.has_next:
        found += [s.snapshot_id for s in paginator.next_items()]
    return found


def test_snapshots_and_fork_through_the_e2b_sdk(e2b_env):
    """create_snapshot, Sandbox.create(snapshot_id), list_snapshots, delete_snapshot and fork over
    Warren's snapshots (the file system on the namespace tier, docs/e2b.md); a fork's own snapshot
    goes once its copies are gone."""
    source = Sandbox.create(template="base")
    made = []
    try:
        source.files.write("/tmp/kept.txt", "from the source")
        snap = source.create_snapshot(name="e2b-named")
        assert snap.snapshot_id.startswith("snap_") and snap.names == ["e2b-named"], snap
        assert snapshot_ids(Sandbox.list_snapshots(sandbox_id=source.sandbox_id)) == [snap.snapshot_id]
        assert snapshot_ids(Sandbox.list_snapshots(name="e2b-named")) == [snap.snapshot_id]
        copy = Sandbox.create(snap.snapshot_id)
        made.append(copy)
        assert copy.files.read("/tmp/kept.txt") == "from the source"
        copy.files.write("/tmp/own.txt", "the copy's")
        assert not source.files.exists("/tmp/own.txt")
        # Not while a copy runs from it (the SDK raises on the 409), then deleted, then not found.
        with pytest.raises(Exception):
            Sandbox.delete_snapshot(snap.snapshot_id)
        copy.kill()
        made.remove(copy)
        assert Sandbox.delete_snapshot(snap.snapshot_id) is True
        assert Sandbox.delete_snapshot(snap.snapshot_id) is False

        forks = source.fork(count=2, timeout=120)
        assert len(forks) == 2 and all(isinstance(f, Sandbox) for f in forks), forks
        made += forks
        for i, f in enumerate(forks):
            assert f.files.read("/tmp/kept.txt") == "from the source"
            f.files.write("/tmp/fork.txt", f"fork {i}")
        assert [f.files.read("/tmp/fork.txt") for f in forks] == ["fork 0", "fork 1"]
        assert not source.files.exists("/tmp/fork.txt")
        fork_snaps = snapshot_ids(Sandbox.list_snapshots(sandbox_id=source.sandbox_id))
        assert len(fork_snaps) == 1, fork_snaps
        with pytest.raises(Exception):
            source.fork(count=21)
        for f in forks:
            f.kill()
        made = []
        deadline = time.time() + 40
        while time.time() < deadline and snapshot_ids(Sandbox.list_snapshots(sandbox_id=source.sandbox_id)):
            time.sleep(1)
        assert snapshot_ids(Sandbox.list_snapshots(sandbox_id=source.sandbox_id)) == [], "the fork's snapshot stayed"
        assert not os.path.exists(os.path.join(e2b_env["data_dir"], "snapshots", fork_snaps[0]))
    finally:
        for sb in made:
            sb.kill()
        source.kill()


def test_tenants_cannot_see_or_reach_each_others_sandboxes(e2b_env, sbx):
    other = new_key(e2b_env, "e2b-other-tenant")
    assert sbx.sandbox_id not in [s.sandbox_id for s in Sandbox.list(api_key=other).next_items()]
    with pytest.raises(NotFoundException):
        Sandbox.connect(sbx.sandbox_id, api_key=other)
    assert Sandbox.kill(sbx.sandbox_id, api_key=other) is False
    assert sbx.is_running()


def test_envd_refuses_calls_without_the_access_token(e2b_env, sbx):
    base = e2b_env["base_url"]
    route = {"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "49983"}
    r = requests.get(f"{base}/files", params={"path": "/etc/hostname"}, headers=route, timeout=10)
    assert r.status_code == 401
    bad = dict(route, **{"X-Access-Token": "not-a-token"})
    r = requests.post(f"{base}/filesystem.Filesystem/Stat", json={"path": "/"}, headers=bad, timeout=10)
    assert r.status_code == 401
    # Health answers without a token (clients probe before they hold one).
    assert requests.get(f"{base}/health", headers=route, timeout=10).status_code == 204
    # Any other port of the sandbox is reachable the same way (a server the sandbox runs).
    sbx.commands.run("cd /tmp && python3 -m http.server 8123 >/dev/null 2>&1", background=True)
    for _ in range(50):
        r = requests.get(f"{base}/", headers={"E2b-Sandbox-Id": sbx.sandbox_id, "E2b-Sandbox-Port": "8123"}, timeout=10)
        if r.status_code == 200:
            break
        time.sleep(0.1)
    assert r.status_code == 200 and "Directory listing" in r.text


def test_e2b_docs_quickstart_runs_as_written(e2b_env):
    # https://e2b.dev/docs/quickstart, with only the environment variables set.
    from e2b_code_interpreter import Sandbox as QuickSandbox

    sbx = QuickSandbox.create()
    execution = sbx.run_code("print('hello world')")
    print(execution.logs)
    files = sbx.files.list("/")
    print(files)
    assert execution.logs.stdout == ["hello world\n"]
    assert any(f.name == "home" for f in files)
    sbx.kill()


@pytest.mark.parametrize("scenario", ["E1", "E2", "E3"])
def test_e2b_js_sdk(e2b_env, scenario):
    import subprocess
    js = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "js")
    if not os.path.isdir(os.path.join(js, "node_modules", "@e2b", "code-interpreter")):
        pytest.fail("the E2B JS SDKs are not installed: run scripts/test (it runs npm install in tests/js)")
    r = subprocess.run(["node", "e2b.mjs", scenario], cwd=js, env=dict(os.environ), capture_output=True,
                       text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{scenario} ok" in r.stdout


# An HTTP request to the outside host's server, "200" when it answers.
PROBE = ("timeout 5 bash -c 'exec 3<>/dev/tcp/{host}/8000 && printf \"GET / HTTP/1.0\\r\\n\\r\\n\" >&3 "
         "&& head -c 12 <&3' 2>/dev/null | cut -d\" \" -f2 || echo blocked")


def reaches(sb, host):
    out = sb.commands.run(PROBE.format(host=host), timeout=60).stdout.strip()
    return out == "200"


def test_egress_allow_and_deny_lists_are_enforced_on_the_host(e2b_env, outside_host):
    # A test-made "outside" host (198.18.0.2 in a netns of this test): reachable by default ...
    plain = Sandbox.create(template="base")
    denied = Sandbox.create(template="base", network={"deny_out": [f"{outside_host}/32"]})
    only = Sandbox.create(template="base", allow_internet_access=False, network={"allow_out": [outside_host]})
    none = Sandbox.create(template="base", allow_internet_access=False)
    walled = Sandbox.create(template="base", network={"allow_out": [outside_host], "deny_out": ["0.0.0.0/0"]})
    try:
        assert reaches(plain, outside_host)
        # ... not when denied, even with internet access on;
        assert not reaches(denied, outside_host)
        # reachable when allowed although internet access is off;
        assert reaches(only, outside_host)
        assert not reaches(none, outside_host)
        # an allowed address wins over "deny everything".
        assert reaches(walled, outside_host)
        # The sandbox cannot lift its own rules.
        denied.commands.run("nft flush ruleset; ip route flush table main; true", user="root")
        assert not reaches(denied, outside_host)
        # The policy is part of the sandbox's description.
        assert only.get_info().network is not None
    finally:
        for sb in (plain, denied, only, none, walled):
            sb.kill()


def test_egress_policy_on_the_hopx_api_and_bad_entries(e2b_env, outside_host):
    r = raw(e2b_env, "POST", "/v1/sandboxes",
            json={"template_name": "base", "network": {"deny_out": [outside_host]}})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    try:
        sb = Sandbox.connect(sid)
        assert not reaches(sb, outside_host)
    finally:
        raw(e2b_env, "DELETE", f"/v1/sandboxes/{sid}")
    # Network features Warren does not serve are refused, never silently dropped.
    with pytest.raises(Exception) as e:
        Sandbox.create(template="base", network={"allow_public_traffic": False})
    assert "allowPublicTraffic" in str(e.value)
    # Bad entries get E2B's own 400 messages, on both APIs.
    for bad, message in ((["example.com"], "you must include 'ALL_TRAFFIC' in deny out"),
                         (["10.0.0.0/33"], "invalid allowed domain"), (["::1"], "IPv6"),
                         (["0.0.0.0"], "invalid allowed address 0.0.0.0")):
        r = raw(e2b_env, "POST", "/v1/sandboxes", json={"template_name": "base", "network": {"allow_out": bad}})
        assert r.status_code == 400 and message in r.json()["message"], r.text
        with pytest.raises(Exception) as e:
            Sandbox.create(template="base", network={"allow_out": bad})
        assert message in str(e.value)
    r = raw(e2b_env, "POST", "/v1/sandboxes", json={"template_name": "base", "network": {"deny_out": ["example.com"]}})
    assert r.status_code == 400 and "invalid denied CIDR example.com" in r.json()["message"], r.text


@pytest.mark.parametrize("tier", ["gvisor", "microvm"])
def test_egress_lists_hold_on_every_tier(e2b_env, outside_host, tier):
    if tier not in raw(e2b_env, "GET", "/health").json().get("isolation_tiers", []):
        pytest.skip(f"SKIPPED LOUDLY: the {tier} tier is not available on this machine")
    made = []
    try:
        for policy in ({"deny_out": [outside_host]}, {}):
            r = raw(e2b_env, "POST", "/v1/sandboxes",
                    json={"template_name": "base", "isolation": tier, "network": policy})
            assert r.status_code == 201, r.text
            made.append(r.json()["id"])
        denied, plain = (Sandbox.connect(i) for i in made)
        assert reaches(plain, outside_host)
        assert not reaches(denied, outside_host)
    finally:
        for i in made:
            raw(e2b_env, "DELETE", f"/v1/sandboxes/{i}")


def test_e2b_calls_are_in_the_audit_trail(e2b_env):
    sb = Sandbox.create(template="base")
    sb.commands.run("echo audited")
    sb.files.write("/tmp/audited.txt", "x")
    sb.get_info()
    sb.kill()
    time.sleep(0.5)  # the recorder batches writes
    events = raw(e2b_env, "GET", f"/v1/audit?sandbox_id={sb.sandbox_id}").json()["data"]
    actions = [e["action"] for e in events]
    assert actions[0] == "sandbox.create" and actions[-1] == "sandbox.delete", actions
    assert "process.start" in actions and "files.upload" in actions, actions
    assert actions.count("sandbox.delete") == 1, actions


def test_auto_pause_at_the_timeout_then_connect_resumes(e2b_env):
    sb = Sandbox.create(template="base", timeout=2, lifecycle={"on_timeout": "pause"})
    try:
        sb.commands.run("echo survived > /tmp/kept")
        detail = raw(e2b_env, "GET", f"/sandboxes/{sb.sandbox_id}").json()
        assert detail["lifecycle"]["onTimeout"] == "pause", detail
        assert wait_for_status(e2b_env, sb.sandbox_id, "paused") == "paused"
        # Paused, it has no timeout left: it waits to be resumed.
        time.sleep(3)
        assert raw(e2b_env, "GET", f"/v1/sandboxes/{sb.sandbox_id}").json()["status"] == "paused"
        again = Sandbox.connect(sb.sandbox_id, timeout=60)
        assert again.commands.run("cat /tmp/kept").stdout == "survived\n"
        assert raw(e2b_env, "GET", f"/v1/sandboxes/{sb.sandbox_id}").json()["timeout_seconds"] == 60
    finally:
        sb.kill()
