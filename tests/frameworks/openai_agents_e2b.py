"""openai-agents' E2B sandbox client (agents.extensions.sandbox.e2b) driven without a model,
the way an agent's run drives it: create a session (its defaults: on_timeout pause with
autoResume, the workspace at /workspace), run commands, write and read workspace files, and
resolve an exposed port. Run by test_agent_frameworks.py from the openai-agents venv (it pins
e2b 2.31.0); settings come from the E2B_* environment. Prints one line of JSON."""
import asyncio
import io
import json
import os
import sys
import urllib.request
import traceback
from pathlib import Path

from agents.extensions.sandbox.e2b import E2BSandboxClient, E2BSandboxClientOptions


async def main():
    client = E2BSandboxClient()
    session = await client.create(options=E2BSandboxClientOptions(
        sandbox_type="e2b", template="base", timeout=300, exposed_ports=(8123,)))
    out = {}
    try:
        await session.start()
        r = await session.exec("echo hello from $(whoami) in $(pwd)")
        out["exec"] = r.stdout.decode() if isinstance(r.stdout, bytes) else r.stdout
        out["exit_code"] = r.exit_code
        await session.write(Path("notes/plan.txt"), io.BytesIO(b"step 1"))
        got = await session.read(Path("notes/plan.txt"))
        out["read"] = got.read().decode()
        owner = await session.exec("stat -c %U /workspace/notes/plan.txt")
        out["owner"] = (owner.stdout.decode() if isinstance(owner.stdout, bytes) else owner.stdout).strip()
        await session.exec("cd /workspace && (python3 -m http.server 8123 --bind 0.0.0.0 >/dev/null 2>&1 &) && sleep 1")
        endpoint = await session.resolve_exposed_port(8123)
        out["endpoint"] = {"host": endpoint.host, "port": endpoint.port, "tls": endpoint.tls}
        # What a browser or agent tool does with it: DNS sends the host to Warren; here the
        # request goes to the server's address with that Host.
        req = urllib.request.Request(os.environ["E2B_SANDBOX_URL"] + "/notes/plan.txt",
                                     headers={"Host": endpoint.host})
        out["through_endpoint"] = urllib.request.urlopen(req, timeout=30).read().decode()
        out["sandbox_id"] = session._inner.state.sandbox_id
    finally:
        await client.delete(session)
    out["ok"] = True
    return out


if __name__ == "__main__":
    try:
        print(json.dumps(asyncio.run(main())))
    except Exception as e:  # noqa: BLE001 - the test reports any failure
        print(json.dumps({"ok": False, "error": f"{type(e).__name__}: {e}"[:800],
                          "trace": traceback.format_exc()[-3000:]}))
        sys.exit(0)
