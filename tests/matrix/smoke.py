"""One SDK release's smoke scenario against Warren (the compatibility matrix: test_sdk_matrix.py).
Run by that release's own venv: `python smoke.py e2b|code-interpreter|hopx`. Prints one line of
JSON: the installed versions and, on failure, what failed. Settings come from the environment
(E2B_API_URL, E2B_SANDBOX_URL, E2B_API_KEY; HOPX_BASE_URL, HOPX_API_KEY)."""
import json
import os
import sys
import traceback
from importlib import metadata


def installed(*names):
    out = {}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            pass
    return out


def e2b():
    from e2b import Sandbox
    sb = Sandbox.create(template="base", timeout=120, metadata={"matrix": "1"})
    try:
        assert sb.commands.run("echo hi").stdout == "hi\n"
        sb.files.write("/home/user/m.txt", "matrix")
        assert sb.files.read("/home/user/m.txt") == "matrix"
        assert "m.txt" in [e.name for e in sb.files.list("/home/user")]
        assert sb.is_running()
        listed = Sandbox.list()
        found = listed.next_items() if hasattr(listed, "next_items") else listed
        assert sb.sandbox_id in [s.sandbox_id for s in found]
    finally:
        sb.kill()


def code_interpreter():
    from e2b_code_interpreter import Sandbox
    sb = Sandbox.create(timeout=120)
    try:
        ex = sb.run_code("x = 20\nx + 22")
        assert ex.text == "42", ex
        ex = sb.run_code("print(x)")
        assert "".join(ex.logs.stdout) == "20\n", ex.logs
    finally:
        sb.kill()


def hopx():
    from hopx_ai import Sandbox
    sb = Sandbox.create(template="code-interpreter", base_url=os.environ["HOPX_BASE_URL"],
                        api_key=os.environ["HOPX_API_KEY"])
    try:
        r = sb.run_code("print(6 * 7)")
        assert "42" in r.stdout, r
        sb.files.write("/workspace/m.txt", "matrix")
        assert sb.files.read("/workspace/m.txt") == "matrix"
        assert sb.commands.run("echo hi").stdout.strip() == "hi"
    finally:
        sb.kill()


if __name__ == "__main__":
    kind = sys.argv[1]
    result = {"versions": installed("e2b", "e2b-code-interpreter", "hopx-ai")}
    try:
        {"e2b": e2b, "code-interpreter": code_interpreter, "hopx": hopx}[kind]()
        result["ok"] = True
    except Exception as e:  # noqa: BLE001 - the matrix records any failure
        result["ok"] = False
        result["error"] = f"{type(e).__name__}: {e}"[:500]
        result["trace"] = traceback.format_exc()[-2000:]
    print(json.dumps(result))
