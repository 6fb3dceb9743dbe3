"""The official `hopx` CLI (PyPI hopx-cli, Python >= 3.12) pointed at Warren with HOPX_BASE_URL:
the commands that honour the base URL (spec 8.3) work. The ones that ignore it are listed in
docs/compatibility.md."""
import json
import os
import shutil
import subprocess
import tempfile
import time

import pytest

from conftest import ROOT, raw

HOPX = os.path.join(ROOT, "tests", ".venv-cli", "bin", "hopx")

pytestmark = pytest.mark.skipif(
    not os.access(HOPX, os.X_OK),
    reason="SKIPPED LOUDLY: the official hopx CLI needs Python >= 3.12 (scripts/test installs it "
           "into tests/.venv-cli from a pyenv 3.12); none here")


@pytest.fixture
def hopx(server):
    home = tempfile.mkdtemp(prefix="hopx-cli-home-")
    env = dict(os.environ, HOPX_BASE_URL=server["base_url"], HOPX_API_KEY=server["api_key"],
               HOME=home, NO_COLOR="1", COLUMNS="200")

    def run(*args, ok=True):
        out = subprocess.run([HOPX, *args], capture_output=True, text=True, env=env, timeout=120)
        if ok:
            assert out.returncode == 0, f"hopx {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}"
        return out

    def as_json(*args):
        out = run("-o", "json", *args).stdout
        # Progress lines may precede the document.
        return json.loads(out[min(i for i in (out.find("{"), out.find("[")) if i >= 0):])

    run.json = as_json
    run.env = env
    yield run
    shutil.rmtree(home, ignore_errors=True)


def test_sandbox_commands(hopx, server):
    made = hopx.json("sandbox", "create", "-t", "code-interpreter", "--env", "CLI_A=1", "--timeout", "900")
    sid = made["sandbox_id"]
    try:
        assert made["status"] == "running" and made["template_name"] == "code-interpreter"
        assert sid in [s["sandbox_id"] for s in hopx.json("sandbox", "list")]
        assert hopx.json("sandbox", "info", sid)["status"] == "running"

        hopx("sandbox", "timeout", sid, "1800")
        expiry = hopx.json("sandbox", "expiry", sid)
        assert 1700 < expiry["time_to_expiry"] <= 1800 and not expiry["is_expired"]
        assert "healthy" in hopx("sandbox", "health", sid).stdout

        hopx("sandbox", "pause", sid)
        assert raw(server, "GET", f"/v1/sandboxes/{sid}").json()["status"] == "paused"
        hopx("sandbox", "resume", sid)
        assert raw(server, "GET", f"/v1/sandboxes/{sid}").json()["status"] == "running"
        assert "API connectivity: Working" in hopx("auth", "validate").stdout
    finally:
        hopx("sandbox", "kill", sid, "--force")
    assert raw(server, "GET", f"/v1/sandboxes/{sid}").json()["status"] == "deleted"


def test_files_commands_env_and_templates(hopx, sandbox):
    sid = sandbox.sandbox_id
    hopx("files", "write", sid, "/tmp/cli/note.txt", "-d", "written by the hopx CLI")
    assert hopx("-o", "json", "files", "read", sid, "/tmp/cli/note.txt").stdout.startswith("written by the hopx CLI")
    names = [f["name"] for f in hopx.json("files", "list", sid, "/tmp/cli")]
    assert names == ["note.txt"]
    assert sandbox.files.read("/tmp/cli/note.txt") == "written by the hopx CLI"

    ran = hopx.json("cmd", "run", sid, "echo from-cli; echo err >&2")
    assert ran["stdout"] == "from-cli\n" and ran["exit_code"] == 0
    failed = hopx("-o", "json", "cmd", "run", sid, "exit 3", ok=False)
    assert failed.returncode != 0 and '"exit_code": 3' in failed.stdout

    hopx("env", "set", sid, "CLI_B", "2")
    assert hopx.json("env", "get", sid, "CLI_B") == {"CLI_B": "2"}
    assert hopx.json("env", "list", sid)["CLI_B"] == "2"
    assert sandbox.run_code("import os; print(os.environ['CLI_B'])").stdout == "2\n"

    names = [t["name"] for t in hopx.json("template", "list")]
    assert "code-interpreter" in names and "base" in names
    assert hopx.json("template", "info", "code-interpreter")["name"] == "code-interpreter"


def test_terminal_connect_runs_an_interactive_shell(hopx, sandbox):
    if not shutil.which("tmux"):
        pytest.skip("SKIPPED LOUDLY: tmux is needed to give the CLI a terminal")
    session = f"hopx{os.getpid()}"
    # tmux's server socket in the fixture's home, removed with it (not /tmp/tmux-0 for good).
    tmux_env = dict(os.environ, TMUX_TMPDIR=hopx.env["HOME"])
    env_args = [arg for k in ("HOPX_BASE_URL", "HOPX_API_KEY", "HOME", "NO_COLOR")
                for arg in ("-e", f"{k}={hopx.env[k]}")]
    subprocess.run(["tmux", "new-session", "-d", "-s", session, "-x", "120", "-y", "30", *env_args,
                    f"{HOPX} terminal connect {sandbox.sandbox_id}; sleep 30"], check=True, env=tmux_env)
    try:
        screen = ""
        for _ in range(100):
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True,
                                    env=tmux_env).stdout
            if "Terminal connected" in screen and "#" in screen.split("Terminal connected")[-1]:
                break
            time.sleep(0.2)
        subprocess.run(["tmux", "send-keys", "-t", session, "echo TERM-$((6*7))", "Enter"], check=True, env=tmux_env)
        for _ in range(50):
            screen = subprocess.run(["tmux", "capture-pane", "-p", "-t", session], capture_output=True, text=True,
                                    env=tmux_env).stdout
            if "TERM-42" in screen:
                break
            time.sleep(0.2)
        assert "TERM-42" in screen, screen
    finally:
        subprocess.run(["tmux", "kill-session", "-t", session], capture_output=True, env=tmux_env)
