"""Desktop calls on a sandbox whose template has no desktop: both official SDKs raise their own
`DesktopNotAvailableError` (spec §5.6), and the raw answer names what is missing."""
import os
import subprocess

import pytest
import requests

from conftest import raw

JS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "js")


def test_code_interpreter_sandbox_has_no_desktop_python(sandbox):
    from hopx_ai.errors import DesktopNotAvailableError
    with pytest.raises(DesktopNotAvailableError):
        sandbox.desktop.get_display()


def test_desktop_paths_answer_what_is_missing(server):
    sb = raw(server, "POST", "/v1/sandboxes", json={"template_name": "code-interpreter"}).json()
    try:
        r = requests.get(f"{sb['public_host']}/desktop/vnc/status",
                         headers={"Authorization": f"Bearer {sb['auth_token']}"}, timeout=30)
        assert r.status_code == 400
        body = r.json()
        assert body["code"] == "DESKTOP_NOT_AVAILABLE"
        assert "xvfb" in body["details"]["missing_dependencies"]
        assert body["missing_dependencies"] == body["details"]["missing_dependencies"]
    finally:
        raw(server, "DELETE", f"/v1/sandboxes/{sb['id']}")


def test_code_interpreter_sandbox_has_no_desktop_js(server):
    env = dict(os.environ, BASE_URL=server["base_url"], HOPX_API_KEY=server["api_key"])
    r = subprocess.run(["node", "scenarios.mjs", "D0"], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "D0 ok" in r.stdout
