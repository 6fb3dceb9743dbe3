#!/usr/bin/env python3
"""E2B protocol benchmark: create -> first `run_code` result through the official
`e2b-code-interpreter` SDK (E2B_API_URL / E2B_SANDBOX_URL at a local `warren serve`), beside the
same path through the Hopx SDK and the floor, all on this machine in one run.

Prints p50/p95/p99 for
  * floor: bare and namespaced `python3 -c 'print(1)'` (as bench/create_to_first.py);
  * e2b: `Sandbox.create()` then `run_code("print(1)")`, and `commands.run("echo 1")` on `base`;
  * hopx: `Sandbox.create(template="code-interpreter")` then `run_code("print(1)")`.

Usage (as root, after scripts/test built everything and made tests/.venv):
  tests/.venv/bin/python bench/e2b_sdk.py [--runs 30]
"""
import argparse
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from create_to_first import floor, report, start_server  # noqa: E402


def e2b_run_code(runs):
    from e2b_code_interpreter import Sandbox
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sb = Sandbox.create()
        out = sb.run_code("print(1)").logs.stdout
        samples.append(time.perf_counter() - t0)
        sb.kill()
        if out != ["1\n"]:
            raise SystemExit(f"unexpected output {out!r}")
    return samples


def e2b_command(runs):
    from e2b import Sandbox
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sb = Sandbox.create(template="base")
        out = sb.commands.run("echo 1").stdout
        samples.append(time.perf_counter() - t0)
        sb.kill()
        if out != "1\n":
            raise SystemExit(f"unexpected output {out!r}")
    return samples


def hopx_run_code(url, key, runs):
    from hopx_ai import Sandbox
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sb = Sandbox.create(template="code-interpreter", base_url=url, api_key=key)
        out = sb.run_code("print(1)").stdout
        samples.append(time.perf_counter() - t0)
        sb.kill()
        if out != "1\n":
            raise SystemExit(f"unexpected output {out!r}")
    return samples


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=30)
    args = ap.parse_args()
    proc, url, key = start_server()
    os.environ.update(E2B_API_URL=url, E2B_SANDBOX_URL=url, E2B_API_KEY=key)
    try:
        # Warm-up: the first create of a template loads its layers into the page cache.
        e2b_run_code(2)
        e2b_command(2)
        floor(args.runs, "code-interpreter")
        report("e2b SDK: create -> first run_code", e2b_run_code(args.runs))
        report("e2b SDK: create(base) -> commands.run", e2b_command(args.runs))
        report("hopx SDK: create -> first run_code", hopx_run_code(url, key, args.runs))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
