"""E2B's desktop SDKs (PyPI `e2b-desktop`, npm `@e2b/desktop`), unmodified, on Warren's `desktop`
template (the Hopx desktop's template, which also carries what E2B's SDK drives: Xvfb on :0, Xfce, x11vnc, noVNC).
Its stream URL is `https://6080-<id>.<domain>/vnc.html`, which only the domain setup routes, so
this runs in the wildcard-domain session; Chromium (playwright-core) opens it with the domain
mapped to the server and sees noVNC connect and draw."""
import os
import re
import subprocess
import urllib.parse

import pytest

from conftest import JS_DIR, WILDCARD_DOMAIN, need_a_browser

pytestmark = pytest.mark.wildcard

pytest.importorskip("e2b_desktop", reason="SKIPPED LOUDLY: e2b-desktop is not installed (scripts/test installs it)")

from e2b_desktop import Sandbox as Desktop  # noqa: E402


@pytest.fixture
def desktop(server, monkeypatch, tmp_path):
    monkeypatch.setenv("E2B_API_URL", server["base_url"])
    monkeypatch.setenv("E2B_SANDBOX_URL", server["base_url"])
    monkeypatch.setenv("E2B_API_KEY", server["api_key"])
    monkeypatch.setenv("E2B_DOMAIN", WILDCARD_DOMAIN)
    sb = Desktop.create(timeout=300)
    yield sb
    sb.kill()


def test_e2b_desktop_sdk_drives_the_desktop_and_streams_it(server, desktop, tmp_path):
    # Created: Xvfb on :0 answered xdpyinfo and an Xfce session started.
    assert desktop.get_screen_size() == (1024, 768)
    shot = desktop.screenshot()
    assert shot[:8] == b"\x89PNG\r\n\x1a\n" and len(shot) > 2000
    desktop.move_mouse(100, 200)
    assert desktop.get_cursor_position() == (100, 200)
    desktop.left_click()
    desktop.launch("xfce4-terminal")
    desktop.wait(3000)
    windows = desktop.get_application_windows("xfce4-terminal")
    assert windows, "the terminal opened a window"
    desktop.write("echo typed > /tmp/typed.txt")
    desktop.press("enter")
    desktop.wait(1000)
    assert desktop.commands.run("cat /tmp/typed.txt").stdout.strip() == "typed"
    desktop.open("/tmp/typed.txt")
    # The stream: x11vnc behind noVNC's proxy on 6080, at the URL the SDK builds.
    desktop.stream.start()
    url = desktop.stream.get_url()
    host = urllib.parse.urlsplit(url).hostname
    assert re.fullmatch(rf"6080-{desktop.sandbox_id}\.{re.escape(WILDCARD_DOMAIN)}", host), url
    need_a_browser()
    # The test's server speaks plain HTTP on its own port: the same URL over it, with the domain
    # mapped to the server the way DNS would.
    port = urllib.parse.urlsplit(server["base_url"]).port
    viewer = url.replace(f"https://{host}/", f"http://{host}:{port}/")
    env = dict(os.environ, VIEWER_URL=viewer, SHOT=str(tmp_path / "stream.png"),
               HOST_RULES=f"MAP *.{WILDCARD_DOMAIN} 127.0.0.1")
    r = subprocess.run(["node", "viewer.mjs"], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    desktop.stream.stop()


def test_e2b_desktop_js_sdk_drives_the_desktop_and_streams_it(server):
    """The same with E2B's desktop SDK for JS (npm `@e2b/desktop`), unmodified: tests/js/e2b_desktop.mjs."""
    if not os.path.isdir(os.path.join(JS_DIR, "node_modules", "@e2b", "desktop")):
        pytest.fail("@e2b/desktop is not installed: run scripts/test (it runs npm ci in tests/js)")
    need_a_browser()
    port = urllib.parse.urlsplit(server["base_url"]).port
    env = dict(os.environ, E2B_API_URL=server["base_url"], E2B_SANDBOX_URL=server["base_url"],
               E2B_API_KEY=server["api_key"], E2B_DOMAIN=WILDCARD_DOMAIN, SERVER_PORT=str(port),
               HOST_RULES=f"MAP *.{WILDCARD_DOMAIN} 127.0.0.1")
    r = subprocess.run(["node", "e2b_desktop.mjs"], cwd=JS_DIR, env=env, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "desktop-js ok" in r.stdout
