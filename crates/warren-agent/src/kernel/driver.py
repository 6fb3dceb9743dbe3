# Warren's stateful Python interpreter: one per sandbox, driven by the agent.
# It starts as plain Python (about 10 ms) and keeps one namespace for every cell: notebook
# semantics (the value of a trailing expression is the cell's result), rich outputs from the
# objects' own _repr_*_ methods and from open matplotlib figures. A cell that uses IPython syntax
# (%magic, %%cell magic, !shell, obj?) switches the interpreter to IPython's shell on the same
# namespace, paying IPython's ~200 ms import only when it is wanted.
# Protocol: one JSON request per line on stdin, one JSON reply per line on the original stdout
# (kept on a private fd; fds 1 and 2 point at per-cell capture files, so prints and child
# processes cannot corrupt the protocol).
import ast
import base64
import io
import json
import os
import re
import sys
import traceback

PROTO = os.fdopen(os.dup(1), "w", buffering=1)
CAPTURE_DIR = os.environ.get("WARREN_KERNEL_DIR", "/tmp/.warren")
os.makedirs(CAPTURE_DIR, exist_ok=True)
os.environ.setdefault("MPLBACKEND", "Agg")
NS = {"__name__": "__main__", "__builtins__": __builtins__}
IPYTHON = {"shell": None}
CELL = {}
IPY_SYNTAX = re.compile(r"^\s*(%|!)|\?\s*$", re.M)


def reply(obj):
    PROTO.write(json.dumps(obj) + "\n")
    PROTO.flush()


def mime_bundle(value):
    """The rich representations an object offers, like IPython's formatters would find them.
    Each one is tried on its own: one that fails (plotly's asks for a notebook renderer) must not
    cost the others, nor the cell."""
    bundle = {"text/plain": repr(value)}

    def attempt(make):
        try:
            data = make()
            return data[0] if isinstance(data, tuple) else data
        except Exception as e:
            print(f"warren: cannot render result: {e}", file=sys.stderr)
            return None

    # A plotly figure: its JSON, which is what clients draw (its own bundle needs a notebook).
    if hasattr(value, "to_plotly_json") and hasattr(value, "to_dict"):
        data = attempt(value.to_plotly_json)
        if data is not None:
            bundle["application/vnd.plotly.v1+json"] = json.loads(json.dumps(data, default=plotly_json))
        return bundle
    if hasattr(value, "_repr_mimebundle_"):
        data = attempt(value._repr_mimebundle_)
        bundle.update({k: v for k, v in (data or {}).items() if v is not None})
    for method, mime in (("_repr_html_", "text/html"), ("_repr_png_", "image/png"),
                         ("_repr_svg_", "image/svg+xml"), ("_repr_markdown_", "text/markdown"),
                         ("_repr_json_", "application/json")):
        if mime not in bundle and hasattr(value, method):
            data = attempt(getattr(value, method))
            if data is not None:
                bundle[mime] = base64.b64encode(data).decode() if isinstance(data, bytes) else data
    return bundle


def plotly_json(o):
    """numpy arrays and scalars inside a figure, as JSON."""
    if hasattr(o, "tolist"):
        return o.tolist()
    return str(o)


def display(*objs, **_):
    """display() inside cells, also without IPython."""
    for o in objs:
        CELL.setdefault("displays", []).append(mime_bundle(o))


NS["display"] = display


class PlotlyShow:
    """fig.show() has no browser to open in a sandbox: once plotly.io is imported, its show()
    displays the figure as the cell's output instead (as a notebook would)."""

    def find_spec(self, name, path=None, target=None):
        if name != "plotly.io":
            return None
        import importlib.util
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.loader is not None:
            load = spec.loader.exec_module

            def exec_module(module):
                load(module)
                module.show = lambda fig, *args, **kwargs: display(fig)
            spec.loader.exec_module = exec_module
        return spec


sys.meta_path.insert(0, PlotlyShow())


def use_ipython():
    if IPYTHON["shell"] is None:
        from IPython.core.displayhook import DisplayHook
        from IPython.core.displaypub import DisplayPublisher
        from IPython.core.interactiveshell import InteractiveShell

        class CaptureHook(DisplayHook):
            def write_output_prompt(self):
                pass

            def write_format_data(self, format_dict, md_dict=None):
                CELL["result"] = format_dict

            def finish_displayhook(self):
                pass

        class CapturePublisher(DisplayPublisher):
            def publish(self, data, metadata=None, source=None, *, transient=None, update=False, **kw):
                CELL.setdefault("displays", []).append(data)

        shell = InteractiveShell.instance(user_ns=NS, displayhook_class=CaptureHook,
                                          display_pub_class=CapturePublisher, colors="NoColor")
        shell.display_formatter.active_types = ["text/plain", "text/html", "image/png", "image/svg+xml",
                                                "application/json", "application/vnd.plotly.v1+json", "text/markdown"]
        for f in shell.display_formatter.formatters.values():
            f.enabled = True
        def show_traceback(etype, evalue, stb):
            CELL["exception"] = {"name": getattr(etype, "__name__", str(etype)), "value": str(evalue),
                                 "traceback": shell.InteractiveTB.stb2text(stb) + "\n"}
        shell._showtraceback = show_traceback
        IPYTHON["shell"] = shell
    return IPYTHON["shell"]


def run_plain(code):
    """exec the cell; a trailing expression's value becomes the result. Returns the error or None."""
    try:
        tree = ast.parse(code, "<cell>", "exec")
    except SyntaxError as e:
        record_exception(e, traceback.format_exception(type(e), e, None))
        return e
    last = tree.body.pop() if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    try:
        exec(compile(tree, "<cell>", "exec"), NS)
        if last is not None:
            value = eval(compile(ast.Expression(last.value), "<cell>", "eval"), NS)
            if value is not None:
                NS["_"] = value
                CELL["result"] = mime_bundle(value)
    except BaseException as e:  # SystemExit and KeyboardInterrupt are the cell's outcome too
        if not isinstance(e, SystemExit):
            tb = e.__traceback__.tb_next if e.__traceback__ else None
            record_exception(e, traceback.format_exception(type(e), e, tb))
        return e
    return None


def record_exception(e, lines):
    """The cell's error, kept apart from its stderr (E2B reports it on its own; Hopx appends it
    to stderr, as a terminal would show it)."""
    CELL["exception"] = {"name": type(e).__name__, "value": str(e), "traceback": "".join(lines)}


def run_ipython(code):
    result = use_ipython().run_cell(code, store_history=True)
    return result.error_before_exec or result.error_in_exec


def figures_png():
    """Every open matplotlib figure as a PNG bundle, in order; then closed."""
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None:
        return []
    bundles = []
    for num in plt.get_fignums():
        fig = plt.figure(num)
        buf = io.BytesIO()
        fig.savefig(buf, format="png", bbox_inches="tight")
        bundles.append({"image/png": base64.b64encode(buf.getvalue()).decode(), "text/plain": repr(fig)})
    plt.close("all")
    return bundles


def read_capture(path, limit):
    with open(path, "rb") as f:
        data = f.read(limit + 1)
    text = data[:limit].decode("utf-8", "replace")
    if len(data) > limit:
        text += f"\n[output truncated at {limit} bytes]\n"
    return text


reply({"ready": True, "pid": os.getpid()})
count = 0
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
    code = req["code"]
    wants_ipython = req.get("ipython") or IPYTHON["shell"] is not None or IPY_SYNTAX.search(code)
    try:
        error = run_ipython(code) if wants_ipython else run_plain(code)
    except ImportError as e:
        print(f"this cell needs IPython, which this template does not have: {e}", file=sys.stderr)
        error = e
    count += 1
    try:
        figures = figures_png()
    except Exception as e:
        print(f"warren: cannot render figure: {e}", file=sys.stderr)
        figures = []
    png = figures[-1]["image/png"] if figures else None
    sys.stdout.flush()
    sys.stderr.flush()
    limit = int(req.get("limit", 8 * 1024 * 1024))
    stdout, user_stderr = read_capture(out_path, limit), read_capture(err_path, limit)
    exception = CELL.get("exception")
    stderr = user_stderr + (exception["traceback"] if exception else "")
    out.close()
    err.close()
    exit_code = 0
    if error is not None:
        exit_code = 1
        if isinstance(error, SystemExit):
            exit_code = error.code if isinstance(error.code, int) else (0 if error.code is None else 1)
    bundles = CELL.get("displays", []) + ([CELL["result"]] if "result" in CELL else [])
    outputs = [dict(b, main=False) for b in CELL.get("displays", []) + figures]
    if "result" in CELL:
        outputs.append(dict(CELL["result"], main=True))
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
        "execution_count": count,
        "mode": "ipython" if IPYTHON["shell"] is not None else "python",
        "user_stderr": user_stderr,
        "exception": exception,
        "outputs": outputs,
        **rich,
    })
