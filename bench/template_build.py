#!/usr/bin/env python3
"""Template build benchmark: the same small recipe built twice (the second run must re-use every
cached step), timed by the server (build_duration_ms) and end to end through the official SDK's
Template.build (which adds its own 2-3 s polling intervals).

Usage (as root, after scripts/test): tests/.venv/bin/python bench/template_build.py
"""
import asyncio
import os
import shutil
import sys
import tempfile
import time
import uuid

import requests
from hopx_ai.template import BuildOptions, Template

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from create_to_first import start_server  # noqa: E402


def recipe():
    return (Template("code-interpreter")
            .copy("app/", "/srv/app")
            .set_env("MODE", "bench")
            .set_workdir("/srv/app")
            .run_cmd("python3 -m compileall -q /srv/app && python3 -c \"import numpy, pandas\""))


def main():
    proc, url, key = start_server()
    ctx = tempfile.mkdtemp()
    os.makedirs(os.path.join(ctx, "app"))
    for i in range(50):
        with open(os.path.join(ctx, "app", f"m{i}.py"), "w") as f:
            f.write(f"X = {i}\n" * 20)
    name = f"bench-{uuid.uuid4().hex[:6]}"
    try:
        # warm the base template (first use of code-interpreter builds it)
        requests.post(url + "/v1/sandboxes", json={"template_name": "code-interpreter"}, headers={"X-API-Key": key}, timeout=900)
        print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {os.cpu_count()} cpus")
        for run in ("first build", "unchanged rebuild"):
            opts = BuildOptions(name=name, api_key=key, base_url=url, context_path=ctx, update=True)
            t = time.perf_counter()
            result = asyncio.run(Template.build(recipe(), opts))
            sdk = time.perf_counter() - t
            st = requests.get(f"{url}/v1/templates/build/{result.template_id}/status", headers={"X-API-Key": key}, timeout=10).json()
            logs = requests.get(f"{url}/v1/templates/build/{result.template_id}/logs", headers={"X-API-Key": key}, timeout=10).json()["logs"]
            cached = logs.count("✓ cached")
            print(f"{run:<20} server {st.get('build_duration_ms', 0):6d} ms   SDK Template.build {sdk:5.1f} s   cached steps {cached}")
    finally:
        proc.terminate()
        proc.wait(timeout=60)
        shutil.rmtree(ctx, ignore_errors=True)


if __name__ == "__main__":
    main()
