"""Spec §8.2 scenarios with the official @hopx-ai/sdk (npm), run by node under a timeout so a
hang fails the test instead of stalling the suite."""
import os
import subprocess

import pytest

JS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "js")


@pytest.mark.parametrize("scenario", ["J1", "J5", "J7", "J8", "J9", "J11"])
def test_js_sdk(server, scenario):
    if not os.path.isdir(os.path.join(JS_DIR, "node_modules", "@hopx-ai", "sdk")):
        pytest.fail("the JS SDK is not installed: run scripts/test (it runs npm install in tests/js)")
    env = dict(os.environ, BASE_URL=server["base_url"], HOPX_API_KEY=server["api_key"])
    r = subprocess.run(["node", "scenarios.mjs", scenario], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{scenario} ok" in r.stdout
