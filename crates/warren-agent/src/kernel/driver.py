# Warren's stateful Python interpreter: one IPython shell per sandbox, driven by the agent.
# Protocol: one JSON request per line on stdin, one JSON reply per line on the original stdout
# (kept on a private fd; fds 1 and 2 are pointed at per-cell capture files, so prints and child
# processes cannot corrupt the protocol).
import base64
import io
import json
import os
import sys

PROTO = os.fdopen(os.dup(1), "w", buffering=1)
CAPTURE_DIR = os.environ.get("WARREN_KERNEL_DIR", "/tmp/.warren")
os.makedirs(CAPTURE_DIR, exist_ok=True)
os.environ.setdefault("MPLBACKEND", "Agg")


def reply(obj):
    PROTO.write(json.dumps(obj) + "\n")
    PROTO.flush()


try:
    from IPython.core.displayhook import DisplayHook
    from IPython.core.displaypub import DisplayPublisher
    from IPython.core.interactiveshell import InteractiveShell
except Exception as e:  # the template has no IPython: the agent falls back to plain runs
    reply({"ready": False, "error": f"{type(e).__name__}: {e}"})
    sys.exit(0)

CELL = {}
RICH = ("text/plain", "text/html", "image/png", "image/svg+xml", "application/json",
        "application/vnd.plotly.v1+json", "text/markdown")


class CaptureHook(DisplayHook):
    """The value of a cell's last expression, as mime bundle, instead of an Out[] print."""

    def write_output_prompt(self):
        pass

    def write_format_data(self, format_dict, md_dict=None):
        CELL["result"] = format_dict

    def finish_displayhook(self):
        pass


class CapturePublisher(DisplayPublisher):
    """display(...) calls inside a cell."""

    def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kw):
        CELL.setdefault("displays", []).append(data)


shell = InteractiveShell.instance(displayhook_class=CaptureHook, display_pub_class=CapturePublisher, colors="NoColor")
shell.display_formatter.active_types = list(RICH)
for mime in RICH:
    if mime in shell.display_formatter.formatters:
        shell.display_formatter.formatters[mime].enabled = True


def show_traceback(etype, evalue, stb):
    print(shell.InteractiveTB.stb2text(stb), file=sys.stderr)


shell._showtraceback = show_traceback
reply({"ready": True, "pid": os.getpid()})


def figures_png():
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return None
    png = None
    for num in plt.get_fignums():
        buf = io.BytesIO()
        plt.figure(num).savefig(buf, format="png", bbox_inches="tight")
        png = base64.b64encode(buf.getvalue()).decode()
    plt.close("all")
    return png


def read_capture(path, limit):
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    text = data[:limit].decode("utf-8", "replace")
    if len(data) > limit:
        text += f"\n[output truncated at {limit} bytes]\n"
    return text


for line in sys.stdin:
    req = json.loads(line)
    CELL.clear()
    env = req.get("env") or {}
    for k in list(os.environ):
        if k not in env and not k.startswith("WARREN_"):
            del os.environ[k]
    os.environ.update(env)
    try:
        os.chdir(req.get("workdir") or "/workspace")
    except OSError as e:
        reply({"success": False, "stdout": "", "stderr": str(e), "exit_code": 1, "error": str(e)})
        continue
    out_path, err_path = os.path.join(CAPTURE_DIR, "cell.out"), os.path.join(CAPTURE_DIR, "cell.err")
    out, err = open(out_path, "w+b"), open(err_path, "w+b")
    os.dup2(out.fileno(), 1)
    os.dup2(err.fileno(), 2)
    sys.stdout = io.TextIOWrapper(os.fdopen(1, "wb", closefd=False), line_buffering=True)
    sys.stderr = io.TextIOWrapper(os.fdopen(2, "wb", closefd=False), line_buffering=True)
    result = shell.run_cell(req["code"], store_history=True)
    try:
        png = figures_png()
    except Exception as e:  # a broken figure must not lose the cell's result
        print(f"warren: cannot render figure: {e}", file=sys.stderr)
        png = None
    sys.stdout.flush()
    sys.stderr.flush()
    limit = int(req.get("limit", 8 * 1024 * 1024))
    stdout, stderr = read_capture(out_path, limit), read_capture(err_path, limit)
    out.close()
    err.close()
    error = result.error_before_exec or result.error_in_exec
    exit_code = 0
    if error is not None:
        exit_code = 1
        if isinstance(error, SystemExit):
            exit_code = error.code if isinstance(error.code, int) else (0 if error.code is None else 1)
    bundles = CELL.get("displays", []) + ([CELL["result"]] if "result" in CELL else [])
    rich = {}
    for b in bundles:
        if "image/png" in b:
            rich["png"] = b["image/png"]
        if "text/html" in b:
            rich["html"] = b["text/html"]
        if "application/vnd.plotly.v1+json" in b:
            rich["json"] = b["application/vnd.plotly.v1+json"]
        elif "application/json" in b:
            rich["json"] = b["application/json"]
        if "image/svg+xml" in b:
            rich["svg"] = b["image/svg+xml"]
        if "text/markdown" in b:
            rich["markdown"] = b["text/markdown"]
    if png:
        rich["png"] = png
    if "result" in CELL and "text/plain" in CELL["result"]:
        rich["result"] = CELL["result"]["text/plain"]
    reply({
        "success": exit_code == 0,
        "stdout": stdout,
        "stderr": stderr,
        "exit_code": exit_code,
        "error": None if error is None else f"{type(error).__name__}: {error}",
        "execution_count": shell.execution_count - 1,
        **rich,
    })
