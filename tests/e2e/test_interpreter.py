"""The code interpreter (P11 and friends): run_code in code-interpreter is a stateful IPython shell
with rich outputs in the spec's shape; crashes and timeouts are reported and recovered from."""
import base64

from hopx_ai import Sandbox

from conftest import raw


def test_p11_state_png_and_html(sandbox):
    assert sandbox.run_code("x = 41").success
    assert sandbox.run_code("x += 1\nprint(x)").stdout == "42\n"
    plot = sandbox.run_code("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [3, 1, 2])\nplt.title('t')")
    assert plot.success, plot.stderr
    assert plot.rich_outputs and getattr(plot.rich_outputs[0].type, "value", plot.rich_outputs[0].type) == "image/png"
    png = base64.b64decode(plot.rich_outputs[0].data["image/png"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n") and len(png) > 1000
    df = sandbox.run_code("import pandas as pd\npd.DataFrame({'a': [1, 2], 'b': ['x', 'y']})")
    html = [o for o in df.rich_outputs if getattr(o.type, "value", o.type) == "text/html"]
    assert html and "<table" in html[0].data["text/html"]
    # a trailing expression is not printed to stdout (it is the result), like a notebook
    assert df.stdout == ""


def test_errors_exit_codes_and_env_in_the_interpreter(sandbox):
    r = sandbox.run_code("1/0")
    assert not r.success and r.exit_code == 1 and "ZeroDivisionError" in r.stderr
    r = sandbox.run_code("import sys; sys.exit(3)")
    assert r.exit_code == 3 and not r.success
    assert sandbox.run_code("import os; print(os.environ['K'])", env={"K": "v"}).stdout == "v\n"
    sandbox.env.set("G", "global")
    assert sandbox.run_code("import os; print(os.environ.get('G'), os.environ.get('K'))").stdout == "global None\n"
    assert sandbox.run_code("import os; print(os.getcwd())", working_dir="/tmp").stdout == "/tmp\n"
    # subprocess output is captured too, not lost or mixed into the protocol
    assert sandbox.run_code("import subprocess; subprocess.run(['echo', 'child'])").stdout == "child\n"


def test_crash_and_timeout_restart_the_interpreter(server, sandbox):
    assert sandbox.run_code("kept = 1").success
    crash = sandbox.run_code("import os; os._exit(9)")
    assert not crash.success and "died" in crash.stderr
    after = sandbox.run_code("print('kept' in globals())")
    assert after.success and after.stdout == "False\n"
    slow = sandbox.run_code("import time; time.sleep(30)", timeout=2)
    assert slow.exit_code == 124 and "timed out" in slow.stderr
    assert sandbox.run_code("print('alive')").stdout == "alive\n"
    info = raw(server, "GET", f"/v1/sandboxes/{sandbox.sandbox_id}").json()
    import requests
    sessions = requests.get(info["public_host"] + "/jupyter/sessions",
                            headers={"Authorization": f"Bearer {sandbox.get_token()}"}, timeout=10).json()
    assert sessions["sessions"][0]["execution_state"] == "idle" and sessions["sessions"][0]["pid"] > 1


def test_ipython_syntax_switches_to_ipython_on_the_same_namespace(sandbox):
    assert sandbox.run_code("y = 21").success
    r = sandbox.run_code("%time z = y * 2\nprint(z)")
    assert r.success and "42" in r.stdout, r.stderr
    assert sandbox.run_code("!echo from-shell").stdout.strip() == "from-shell"
    assert sandbox.run_code("print(z + 1)").stdout == "43\n"


def test_base_template_keeps_state_and_explains_missing_ipython(server):
    sb = Sandbox.create(template="base", base_url=server["base_url"], api_key=server["api_key"])
    try:
        assert sb.run_code("x = 1").success
        assert sb.run_code("print(x + 1)").stdout == "2\n"
        r = sb.run_code("%time 1")
        assert not r.success and "needs IPython" in r.stderr
    finally:
        sb.kill()
