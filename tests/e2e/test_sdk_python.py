"""Spec §8.1 scenarios driven by the official hopx-ai Python SDK, unmodified."""
import os
import time

import pytest
from hopx_ai import Sandbox
from hopx_ai.errors import AuthenticationError, FileNotFoundError as HopxFileNotFoundError, NotFoundError

from conftest import raw


def make(server, **kw):
    return Sandbox.create(template="code-interpreter", base_url=server["base_url"], api_key=server["api_key"], **kw)


def test_p1_create_run_files_kill(server):
    sb = make(server)
    res = sb.run_code("print(1)")
    assert res.stdout == "1\n" and res.exit_code == 0 and res.success
    sb.files.write("/workspace/hello.txt", "hi")
    assert sb.files.read("/workspace/hello.txt") == "hi"
    sb.kill()
    info = raw(server, "GET", f"/v1/sandboxes/{sb.sandbox_id}").json()
    assert info["status"] == "deleted"


def test_p2_context_manager_kills_on_exit(server):
    with make(server) as sb:
        assert sb.run_code("print(6*7)").stdout.strip() == "42"
        sid = sb.sandbox_id
    assert raw(server, "GET", f"/v1/sandboxes/{sid}").json()["status"] == "deleted"


def test_p3_info_and_expiry(server):
    sb = make(server, timeout_seconds=900)
    try:
        info = sb.get_info()
        assert info.status == "running"
        assert info.resources.vcpu == 2 and info.resources.memory_mb == 2048
        ttl = sb.get_time_to_expiry()
        assert 880 <= ttl <= 900
        assert sb.get_expiry_info().has_timeout
        assert not sb.is_expiring_soon()
        sb.set_timeout(600)
        assert 580 <= sb.get_time_to_expiry() <= 600
    finally:
        sb.kill()


def test_p5_p6_pause_resume_connect(server):
    sb = make(server)
    try:
        sb.files.write("/workspace/state.txt", "kept")
        sb.pause()
        assert sb.get_info().status == "paused"
        # connect() resumes a paused sandbox by itself
        again = Sandbox.connect(sb.sandbox_id, base_url=server["base_url"], api_key=server["api_key"])
        assert again.get_info().status == "running"
        assert again.files.read("/workspace/state.txt") == "kept"
        sb.pause()
        sb.resume()
        assert sb.run_code("print('back')").stdout == "back\n"
    finally:
        sb.kill()
    with pytest.raises(Exception):
        Sandbox.connect(sb.sandbox_id, base_url=server["base_url"], api_key=server["api_key"])


def test_p9_unknown_sandbox_and_bad_key(server):
    with pytest.raises(NotFoundError):
        Sandbox.connect("zzzzzzzzzzzzzzzzzz", base_url=server["base_url"], api_key=server["api_key"])
    with pytest.raises(AuthenticationError):
        Sandbox.create(template="code-interpreter", base_url=server["base_url"], api_key="wrn_live_wrong")


def test_p10_languages_env_workdir_failure_timeout(sandbox):
    assert sandbox.run_code("console.log(1+1)", language="javascript").stdout == "2\n"
    assert sandbox.run_code("echo $((3*3))", language="bash").stdout == "9\n"
    go = sandbox.run_code('import "fmt"\nfmt.Println("go", 7)', language="go", timeout=120)
    assert go.stdout == "go 7\n", go.stderr
    assert sandbox.run_code("import os; print(os.environ['X'])", env={"X": "from-env"}).stdout == "from-env\n"
    assert sandbox.run_code("import os; print(os.getcwd())", working_dir="/tmp").stdout == "/tmp\n"
    bad = sandbox.run_code("raise SystemExit(3)")
    assert not bad.success and bad.exit_code == 3
    t0 = time.time()
    slow = sandbox.run_code("import time; time.sleep(60)", timeout=2)
    assert time.time() - t0 < 20
    assert not slow.success and "timed out" in slow.stderr


def test_p14_commands(sandbox):
    r = sandbox.commands.run("echo hi && exit 3")
    assert r.stdout == "hi\n" and r.exit_code == 3
    r = sandbox.commands.run("echo $FOO; pwd", env={"FOO": "bar"}, working_dir="/tmp")
    assert r.stdout == "bar\n/tmp\n"
    bg = sandbox.commands.run("sleep 1; echo done > /workspace/bg.txt", background=True)
    assert "Background process started" in bg.stdout
    deadline = time.time() + 15
    while time.time() < deadline and not sandbox.files.exists("/workspace/bg.txt"):
        time.sleep(0.2)
    assert sandbox.files.read("/workspace/bg.txt") == "done\n"


def test_p15_files(sandbox, tmp_path):
    blob = os.urandom(200_000) + b"\x00\xff"
    sandbox.files.write_bytes("/workspace/bin/data.bin", blob)
    assert sandbox.files.read_bytes("/workspace/bin/data.bin") == blob
    entries = {f.name: f for f in sandbox.files.list("/workspace/bin")}
    assert entries["data.bin"].size == len(blob) and not entries["data.bin"].is_directory
    assert sandbox.files.exists("/workspace/bin/data.bin")
    assert not sandbox.files.exists("/workspace/nope")
    sandbox.files.mkdir("/workspace/a/b/c")
    assert sandbox.files.exists("/workspace/a/b/c")
    sandbox.files.remove("/workspace/a")
    assert not sandbox.files.exists("/workspace/a")
    local = tmp_path / "up.bin"
    local.write_bytes(blob)
    sandbox.files.upload(str(local), "/workspace/up/up.bin")
    out = tmp_path / "down.bin"
    sandbox.files.download("/workspace/up/up.bin", str(out))
    assert out.read_bytes() == blob
    sandbox.files.write("/workspace/empty.txt", "")
    assert sandbox.files.read("/workspace/empty.txt") == ""
    with pytest.raises(HopxFileNotFoundError):
        sandbox.files.read("/workspace/missing.txt")


def test_p16_env(sandbox):
    sandbox.env.set("A", "1")
    sandbox.env.update({"B": "2", "C": "3"})
    assert {"A": "1", "B": "2", "C": "3"}.items() <= sandbox.env.get_all().items()
    sandbox.env.delete("A")
    assert "A" not in sandbox.env.get_all()
    sandbox.env.set_all({"ONLY": "x"})
    assert sandbox.env.get_all() == {"ONLY": "x"}
    assert sandbox.run_code("import os; print(os.environ.get('ONLY'), os.environ.get('B'))").stdout == "x None\n"


def test_p17_create_with_env_vars(server):
    sb = make(server, env_vars={"X": "1"})
    try:
        assert sb.run_code("import os; print(os.environ['X'])").stdout == "1\n"
    finally:
        sb.kill()
