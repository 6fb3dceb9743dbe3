"""Agent frameworks built on E2B's SDK, unmodified, on Warren: openai-agents' E2B sandbox client
(tests/frameworks/openai_agents_e2b.py, run from its own venv: it pins e2b 2.31.0) without a
model. Its exposed ports come from the SDK's get_host, `<port>-<id>.<domain>`, which only the
domain setup routes: so this runs in the wildcard-domain session."""
import json
import os
import subprocess

import pytest

from conftest import ROOT, WILDCARD_DOMAIN, new_key
from test_sdk_matrix import install_dir
from entries import VERSIONS  # noqa: E402 (tests/matrix, put on the path by test_sdk_matrix)

pytestmark = pytest.mark.wildcard

OPENAI_AGENTS = install_dir("python", next(e for e in VERSIONS["frameworks"] if e["package"] == "openai-agents[e2b]"))


def test_openai_agents_e2b_sandbox_client_runs_without_a_model(server):
    if not os.path.exists(os.path.join(OPENAI_AGENTS, ".complete")):
        pytest.skip(f"SKIPPED LOUDLY: openai-agents[e2b] is not installed in {OPENAI_AGENTS} (tests/matrix/install)")
    env = dict(os.environ)
    env.update({
        "E2B_API_URL": server["base_url"], "E2B_SANDBOX_URL": server["base_url"],
        "E2B_DOMAIN": WILDCARD_DOMAIN,
        # e2b 2.31 checks the key's form before it sends it: a key made in E2B's form.
        "E2B_API_KEY": new_key(server, "agents", fmt="e2b"),
    })
    done = subprocess.run([os.path.join(OPENAI_AGENTS, "bin", "python"),
                           os.path.join(ROOT, "tests", "frameworks", "openai_agents_e2b.py")],
                          env=env, capture_output=True, text=True, timeout=300)
    lines = [l for l in done.stdout.splitlines() if l.startswith("{")]
    assert lines, done.stderr[-3000:]
    out = json.loads(lines[-1])
    assert out["ok"], f"{out.get('error')}\n{out.get('trace')}"
    # Its default create (on_timeout pause, autoResume) is served; commands run as `user` in the
    # workspace it owns; files land there; the exposed port is reachable at the host it got.
    assert out["exec"].strip() == "hello from user in /workspace", out
    assert out["exit_code"] == 0 and out["read"] == "step 1" and out["owner"] == "user", out
    assert out["endpoint"]["host"] == f"8123-{out['sandbox_id']}.{WILDCARD_DOMAIN}", out
    assert out["through_endpoint"] == "step 1", out
