"""The SDK version matrix: each release of tests/matrix/versions.json (the official E2B and Hopx
SDKs, Python and JS, of the last twelve months) runs its smoke scenario (tests/matrix/smoke.py,
smoke.mjs) unmodified against the suite's server, from its own venv or npm directory (installed
by tests/matrix/install, called by scripts/test). A full run writes docs/compatibility.md."""
import datetime
import json
import os
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT, new_key

MATRIX = os.path.join(ROOT, "tests", "matrix")
sys.path.insert(0, MATRIX)
from entries import install_dir_name, sdk_releases  # noqa: E402

INSTALLED = os.environ.get("WARREN_MATRIX_DIR",
                           os.path.join(os.environ.get("WARREN_CACHE_DIR", "/var/cache/warren"), "ci", "matrix"))
ENTRIES = sdk_releases()
DOC = os.path.join(ROOT, "docs", "compatibility.md")


def install_dir(lang, entry):
    return os.path.join(INSTALLED, install_dir_name(lang, entry))


@pytest.fixture(scope="module")
def report():
    results = []
    yield results
    if len(results) == len(ENTRIES):
        write_doc(results)


@pytest.fixture(scope="module")
def sdk_env(server):
    # A key in E2B's form: releases up to 2.31 refuse any other before sending it.
    key = new_key(server, "matrix", fmt="e2b")
    env = dict(os.environ)
    env.update({
        "E2B_API_URL": server["base_url"], "E2B_SANDBOX_URL": server["base_url"], "E2B_API_KEY": key,
        "HOPX_BASE_URL": server["base_url"], "HOPX_API_KEY": key,
    })
    env.pop("E2B_DOMAIN", None)
    return env


@pytest.mark.parametrize("lang,entry", ENTRIES, ids=[f"{lang}-{e['package']}-{e['version']}" for lang, e in ENTRIES])
def test_sdk_release_runs_its_smoke_scenario(sdk_env, report, lang, entry):
    where = install_dir(lang, entry)
    row = {"lang": lang, **entry}
    if entry.get("setup") == "domain":
        report.append({**row, "result": "domain: " + entry["why_setup"]})
        pytest.skip(f"SKIPPED LOUDLY here: {entry['package']} {entry['version']} {entry['why_setup']} "
                    "(test_e2b_domain.py runs it in the wildcard session)")
    if not os.path.exists(os.path.join(where, ".complete")):
        report.append({**row, "result": "skipped (not installed)"})
        pytest.skip(f"SKIPPED LOUDLY: {entry['package']} {entry['version']} is not installed "
                    f"(tests/matrix/install {INSTALLED})")
    result, done_row = run_smoke(lang, entry, sdk_env)
    report.append(done_row)
    assert result.get("ok"), f"{result.get('error')}\n{result.get('trace', '')}"


def run_smoke(lang, entry, env):
    """Runs a release's smoke scenario from its install directory: (its JSON answer, its row)."""
    where = install_dir(lang, entry)
    if lang == "python":
        cmd = [os.path.join(where, "bin", "python"), os.path.join(MATRIX, "smoke.py"), entry["smoke"]]
    else:
        shutil.copy(os.path.join(MATRIX, "smoke.mjs"), os.path.join(where, "smoke.mjs"))
        cmd = ["node", os.path.join(where, "smoke.mjs"), entry["smoke"]]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    lines = [l for l in done.stdout.splitlines() if l.startswith("{")]
    result = json.loads(lines[-1]) if lines else {"ok": False, "error": done.stderr[-500:] or f"exit {done.returncode}"}
    if not result.get("ok"):
        result["trace"] = result.get("trace", "") + "\n" + done.stderr[-2000:]
    row = {"lang": lang, **entry, "result": "pass" if result.get("ok") else "FAIL",
           "installed": result.get("versions", {}), "error": result.get("error", "")}
    return result, row


def write_doc(results):
    lines = [
        "# SDK compatibility",
        "",
        "Written by `tests/e2e/test_sdk_matrix.py` (part of `scripts/test`) on its last full run, "
        f"{datetime.date.today().isoformat()}. Each release of `tests/matrix/versions.json` (the oldest "
        "and newest minor of each major the vendors released in the last twelve months, plus e2b "
        "2.31.0, which `openai-agents[e2b]` pins) is installed unmodified in its own venv or npm "
        "directory and runs a smoke scenario against a Warren server: create, run code or a "
        "command, write and read a file, list, kill (`tests/matrix/smoke.py`, `smoke.mjs`). The "
        "keys are Warren keys made with `warren keys create --format e2b`.",
        "",
        "| language | package | version | scenario | installed | result |",
        "|---|---|---|---|---|---|",
    ]
    lines += [row_line(r) for r in results]
    lines += ["", "Releases marked `domain` run in the suite's E2B_DOMAIN session (`test_e2b_domain.py`: HTTPS",
              "at `api.<domain>` and `<port>-<id>.<domain>`), which rewrites their rows.", ""]
    with open(DOC, "w") as f:
        f.write("\n".join(lines))


def row_key(r):
    version = r["version"] + (f" with {r['with']}" if r.get("with") else "")
    return f"| {r['lang']} | `{r['package']}` | {version} | {r['smoke']} |"


def row_line(r):
    installed = ", ".join(f"{k} {v}" for k, v in sorted(r.get("installed", {}).items()))
    result = r["result"] if not r.get("error") else f"{r['result']}: {r['error'][:120]}"
    return f"{row_key(r)} {installed} | {result} |"


def rewrite_row(r):
    """Replaces a release's row in docs/compatibility.md (the domain session's results)."""
    if not os.path.exists(DOC):
        return
    lines = open(DOC).read().split("\n")
    key = row_key(r)
    if any(l.startswith(key) for l in lines):
        with open(DOC, "w") as f:
            f.write("\n".join(row_line(r) if l.startswith(key) else l for l in lines))
