#!/usr/bin/env python3
"""Desktop benchmark: create -> first screenshot of the `desktop` template through the official
Hopx Python SDK, and screenshot latency on a warm sandbox, beside the floor measured in the same
run on this machine: a bare X server (Xvfb) started on the host and one screenshot of it with the
same tool the agent uses (ImageMagick's `import`), no sandbox, no network, no SDK.

Usage (as root, after scripts/test built everything and made tests/.venv):
  tests/.venv/bin/python bench/desktop.py [--runs 20]
The floor needs Xvfb and ImageMagick on the host (apt-get install xvfb imagemagick).
"""
import argparse
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from create_to_first import report, start_server  # noqa: E402

FLOOR_DISPLAY = ":97"


def screenshot_floor(runs):
    """Xvfb start -> first PNG, and PNG of a running Xvfb; None where the host lacks the tools."""
    if not (shutil.which("Xvfb") and shutil.which("import")):
        print("floor: Xvfb or ImageMagick missing on the host (apt-get install xvfb imagemagick) - skipped", flush=True)
        return None, None
    env = dict(os.environ, DISPLAY=FLOOR_DISPLAY)
    shot = ["import", "-silent", "-window", "root", "-quality", "10", "png:-"]
    cold = []
    for _ in range(runs):
        t0 = time.perf_counter()
        x = subprocess.Popen(["Xvfb", FLOOR_DISPLAY, "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sock = f"/tmp/.X11-unix/X{FLOOR_DISPLAY[1:]}"
        while not os.path.exists(sock):
            time.sleep(0.001)
        while subprocess.run(shot, env=env, capture_output=True).returncode != 0:
            time.sleep(0.001)
        cold.append(time.perf_counter() - t0)
        x.terminate()
        x.wait()
        while os.path.exists(sock):
            time.sleep(0.001)
    x = subprocess.Popen(["Xvfb", FLOOR_DISPLAY, "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while subprocess.run(shot, env=env, capture_output=True).returncode != 0:
            time.sleep(0.01)
        warm = []
        for _ in range(runs):
            t0 = time.perf_counter()
            subprocess.run(shot, env=env, capture_output=True, check=True)
            warm.append(time.perf_counter() - t0)
    finally:
        x.terminate()
        x.wait()
    return cold, warm


def create_to_screenshot(url, key, runs):
    from hopx_ai import Sandbox
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        sb = Sandbox.create(template="desktop", base_url=url, api_key=key)
        png = sb.desktop.screenshot()
        samples.append(time.perf_counter() - t0)
        sb.kill()
        if png[:4] != b"\x89PNG":
            raise SystemExit("not a PNG")
    return samples


def warm_screenshots(url, key, runs):
    from hopx_ai import Sandbox
    sb = Sandbox.create(template="desktop", base_url=url, api_key=key)
    try:
        sb.desktop.screenshot()
        samples = []
        for _ in range(runs):
            t0 = time.perf_counter()
            sb.desktop.screenshot()
            samples.append(time.perf_counter() - t0)
        return samples
    finally:
        sb.kill()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}  {os.cpu_count()} cpus  template=desktop  runs={args.runs}", flush=True)
    cold, warm = screenshot_floor(args.runs)
    if cold:
        report("floor: Xvfb start -> first screenshot", cold)
        report("floor: screenshot of a running Xvfb", warm)
    proc, url, key = start_server()
    try:
        create_to_screenshot(url, key, 2)  # warm-up: the template's layers into the page cache
        report("warren: create(desktop) -> first screenshot", create_to_screenshot(url, key, args.runs))
        report("warren: screenshot, warm sandbox (SDK)", warm_screenshots(url, key, args.runs))
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    return 0


if __name__ == "__main__":
    sys.exit(main())
