"""The `warren` terminal client against the real server: live output and interactive shells."""
import os
import subprocess

from conftest import WARREN, raw


def cli(server, *args, stdin=None):
    env = dict(os.environ, WARREN_URL=server["base_url"], WARREN_API_KEY=server["api_key"])
    return subprocess.run([WARREN, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60)


def test_exec_stream_and_shell(server):
    created = raw(server, "POST", "/v1/sandboxes", json={"template_name": "base"}).json()
    sid = created["id"]
    try:
        r = cli(server, "exec", "--stream", sid, "echo out; echo err >&2; exit 5")
        assert (r.returncode, r.stdout, r.stderr) == (5, "out\n", "err\n")

        r = cli(server, "shell", sid, stdin="echo shell-$((6*7))\nexit 3\n")
        assert r.returncode == 3 and "shell-42" in r.stdout, r.stdout + r.stderr
    finally:
        raw(server, "DELETE", f"/v1/sandboxes/{sid}")
