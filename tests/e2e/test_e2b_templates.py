"""E2B's template builder (`Template().from_template(...).copy(...).run_cmd(...)`, `Template.build`)
with the official, unmodified SDKs (PyPI `e2b`, npm `e2b`) against Warren: COPY contexts uploaded
by hash, RUN as E2B's default `user` (or another, made on demand), ENV, WORKDIR, USER, a start
command with a ready check, build logs, the step cache on an unchanged rebuild, a failing step's
error, and the API's refusals of what Warren does not serve."""
import os
import subprocess
import uuid

import pytest

from conftest import raw
from test_registry import MINI_USERLAND, host_binaries_layer, push, registries  # noqa: F401 (a fixture)

pytest.importorskip("e2b", reason="SKIPPED LOUDLY: the e2b SDK is not installed (scripts/test installs it)")

from e2b import Sandbox, Template, wait_for_port  # noqa: E402
from e2b.exceptions import BuildException  # noqa: E402

JS_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "js")


def recipe(ctx):
    return (Template(file_context_path=str(ctx))
            .from_template("base")
            .copy("app/", "/home/user/app/")
            .copy("tool.sh", "/opt/tool.sh", user="root", mode=0o755)
            .set_envs({"GREETING": "hello-e2b", "SECOND": "2"})
            .run_cmd("whoami > /home/user/who.txt && pwd > /home/user/where.txt")
            .run_cmd("id -un > /opt/root-who", user="root")
            .set_user("guest")
            .run_cmd("whoami > /tmp/guest-who && echo $HOME > /tmp/guest-home")
            .set_user("user")
            .set_workdir("/home/user/app")
            .run_cmd("echo built-in-workdir > made.txt")
            .set_start_cmd("python3 -m http.server 8123", wait_for_port(8123)))


def test_template_build_copy_run_users_env_workdir_start_then_create(e2b_env, tmp_path):
    (tmp_path / "app" / "lib").mkdir(parents=True)
    (tmp_path / "app" / "main.py").write_text("print('from app')\n")
    (tmp_path / "app" / "lib" / "data.txt").write_text("nested\n")
    (tmp_path / "tool.sh").write_text("#!/bin/sh\necho tool\n")
    name = f"e2b-tpl-{uuid.uuid4().hex[:8]}"
    logs = []
    info = Template.build(recipe(tmp_path), name, on_build_logs=logs.append, cpu_count=1, memory_mb=1024)
    messages = [e.message for e in logs]
    assert info.template_id and info.build_id
    assert any("RUN" in m for m in messages), messages
    assert Template.exists(name)
    assert not Template.exists(f"no-such-{uuid.uuid4().hex[:6]}")

    sb = Sandbox.create(name)
    try:
        run = lambda c, **kw: sb.commands.run(c, **kw).stdout
        assert sb.files.read("/home/user/app/main.py") == "print('from app')\n"
        assert sb.files.read("/home/user/app/lib/data.txt") == "nested\n"
        # COPY acts as the current user unless told; the home it copied into stays the user's.
        assert run("stat -c '%U %a' /home/user/app/main.py /home/user /opt/tool.sh") == \
            "user 644\nuser 755\nroot 755\n"
        assert run("/opt/tool.sh") == "tool\n"
        # RUN as E2B's default user in its home, as root when asked, as a user made on demand.
        assert sb.files.read("/home/user/who.txt") == "user\n"
        assert sb.files.read("/home/user/where.txt") == "/home/user\n"
        assert sb.files.read("/opt/root-who") == "root\n"
        assert sb.files.read("/tmp/guest-who") == "guest\n"
        assert sb.files.read("/tmp/guest-home") == "/home/guest\n"
        assert sb.files.read("/home/user/app/made.txt") == "built-in-workdir\n"
        assert run("stat -c %U /home/user/app/made.txt") == "user\n"
        assert run("echo $GREETING $SECOND") == "hello-e2b 2\n"
        # The last workdir is where commands start; the start command answers (ready check).
        assert run("pwd") == "/home/user/app\n"
        assert "main.py" in run("curl -s http://127.0.0.1:8123/")
    finally:
        sb.kill()

    # An unchanged rebuild runs no step again.
    again = []
    Template.build(recipe(tmp_path), name, on_build_logs=again.append)
    messages = [e.message for e in again]
    assert len([m for m in messages if "✓ cached" in m]) == 6, messages  # 2 COPY, 4 RUN


def test_a_failing_step_fails_the_build_with_its_reason(e2b_env):
    name = f"e2b-fail-{uuid.uuid4().hex[:8]}"
    tpl = Template().from_template("base").run_cmd("echo about-to-fail; exit 3")
    with pytest.raises(BuildException) as e:
        Template.build(tpl, name)
    assert "exit code 3" in str(e.value)


def test_what_is_not_served_is_refused_by_name(e2b_env):
    def v3(body):
        return raw(e2b_env, "POST", "/v3/templates", json=body)
    r = v3({"name": "x-tags", "tags": ["v2"]})
    assert r.status_code == 400 and "tags" in r.json()["message"]
    r = v3({"name": "x-unknown", "bogus": 1})
    assert r.status_code == 400 and "bogus" in r.json()["message"]
    r = v3({"name": "base"})
    assert r.status_code == 409
    r = v3({"name": "Bad Name"})
    assert r.status_code == 400 and "name" in r.json()["message"]
    ok = v3({"name": f"x-{uuid.uuid4().hex[:6]}"})
    assert ok.status_code == 202, ok.text
    tid, bid = ok.json()["templateID"], ok.json()["buildID"]
    r = raw(e2b_env, "POST", f"/v2/templates/{tid}/builds/{bid}",
            json={"fromImage": "x", "fromImageRegistry": {"type": "aws", "awsAccessKeyId": "a"}})
    assert r.status_code == 400 and "fromImageRegistry" in r.json()["message"]
    r = raw(e2b_env, "POST", f"/v2/templates/{tid}/builds/{bid}", json={"steps": []})
    assert r.status_code == 400 and "fromImage" in r.json()["message"]
    r = raw(e2b_env, "POST", f"/v2/templates/{tid}/builds/{uuid.uuid4()}", json={"fromTemplate": "base"})
    assert r.status_code == 404
    r = raw(e2b_env, "GET", f"/templates/{tid}/builds/{bid}/status?logsOffset=0&bogus=1")
    assert r.status_code == 400 and "bogus" in r.json()["message"]
    r = raw(e2b_env, "GET", f"/templates/{tid}/builds/{bid}/status")
    assert r.status_code == 200 and r.json()["status"] == "waiting"


def test_js_sdk_template_build(e2b_env):
    if not os.path.isdir(os.path.join(JS_DIR, "node_modules", "e2b")):
        pytest.fail("the E2B JS SDK is not installed: run scripts/test (it runs npm install in tests/js)")
    r = subprocess.run(["node", "e2b.mjs", "T1"], cwd=JS_DIR, env=dict(os.environ), capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "T1 ok" in r.stdout


def test_from_an_oci_image_that_lacks_the_user(e2b_env, registries):
    """E2B's builder makes `user` in any image; so does Warren's, with the image's own tools."""
    exes = MINI_USERLAND + ["/usr/bin/id", "/usr/bin/getent", "/usr/bin/cut", "/usr/bin/mkdir",
                            "/usr/bin/chown", "/usr/sbin/useradd", "/usr/bin/setpriv", "/usr/bin/whoami"]
    layer = host_binaries_layer(exes)
    layer.update({"etc/passwd": b"root:x:0:0:root:/root:/bin/bash\n", "etc/group": b"root:x:0:\n",
                  "etc/shadow": b"root:*:19000:0:99999:7:::\n", "home": None})
    image = push(registries["open"], "warren/e2b-mini", "1", first_layer=dict(sorted(layer.items())))
    name = f"e2b-img-{uuid.uuid4().hex[:8]}"
    tpl = Template().from_image(image).run_cmd("whoami > /tmp/who && pwd > /tmp/where")
    Template.build(tpl, name)
    sb = Sandbox.create(name)
    try:
        assert sb.files.read("/tmp/who") == "user\n"
        assert sb.files.read("/tmp/where") == "/home/user\n"
    finally:
        sb.kill()
