"""Nothing a client asks for is dropped: every field of a create or update is served or refused
with a 400 naming it, on both protocols; E2B's list filters; autoResume; what E2B's agents need
in a template (git, curl, a workspace the default user owns). Driven with the official SDKs where
they send the field, raw HTTP where they do not."""
import datetime
import os
import time

import pytest

import re
import threading

from conftest import new_key, raw, wait_for_status

pytest.importorskip("e2b", reason="SKIPPED LOUDLY: the e2b SDK is not installed (scripts/test installs it)")

from e2b import Sandbox, SandboxException, SandboxQuery  # noqa: E402


def refused(server, method, path, body, *names):
    r = raw(server, method, path, json=body)
    assert r.status_code == 400, (path, body, r.status_code, r.text)
    message = r.json().get("message", "")
    for name in names:
        assert name in message, (name, message)
    return message


def test_e2b_create_fields_are_served_or_refused_by_name(e2b_env):
    # Fields E2B defines that Warren does not serve (or a volume that does not exist): a 400
    # naming each, not a sandbox without it.
    for kwargs, name in [
        ({"volume_mounts": {"/data": "no-such-volume"}}, "no-such-volume"),
        ({"mcp": {"exa": {"apiKey": "x"}}}, "mcp"),
        ({"lifecycle": {"on_timeout": {"action": "pause", "mode": "filesystem"}}}, "autoPauseMemory"),
    ]:
        with pytest.raises(SandboxException) as e:
            Sandbox.create(template="base", **kwargs)
        assert name in str(e.value), (name, str(e.value))
    # A field E2B does not define at all, and one misspelt.
    refused(e2b_env, "POST", "/sandboxes", {"templateID": "base", "colour": "red"}, "colour")
    refused(e2b_env, "POST", "/v2/sandboxes", {"templateID": "base", "timeOut": 30}, "timeOut")
    refused(e2b_env, "POST", "/sandboxes", {"templateID": "base", "network": {"allowOutt": []}}, "allowOutt")
    refused(e2b_env, "POST", "/sandboxes", {"templateID": "base", "iam": {"tokens": {"a": {}}}}, "iam")
    refused(e2b_env, "POST", "/sandboxes", {"templateID": "base", "autoResume": {"enabled": True}}, "autoPause")
    # Empty or null forms of the unserved ones ask for nothing.
    r = raw(e2b_env, "POST", "/sandboxes", json={"templateID": "base", "mcp": None, "volumeMounts": [],
                                                  "autoPauseMemory": True, "secure": True})
    assert r.status_code == 201, r.text
    sid = r.json()["sandboxID"]
    try:
        # Updates too: a connect, a pause and a network update with an unknown or unserved field.
        refused(e2b_env, "POST", f"/sandboxes/{sid}/connect", {"timeout": 30, "memory": False}, "memory")
        refused(e2b_env, "POST", f"/sandboxes/{sid}/pause", {"memory": False}, "memory")
        refused(e2b_env, "POST", f"/sandboxes/{sid}/timeout", {"timeout": 30, "extra": 1}, "extra")
        refused(e2b_env, "PUT", f"/sandboxes/{sid}/network", {"allowOut": [], "maskRequestHost": "x"}, "maskRequestHost")
        refused(e2b_env, "POST", f"/sandboxes/{sid}/refreshes", {"duration": 30, "until": 5}, "until")
        # Unknown query parameters of a list are named too (in E2B's error body).
        r = raw(e2b_env, "GET", "/v2/sandboxes?colour=red")
        assert r.status_code == 400 and "colour" in r.json()["message"], r.text
        assert raw(e2b_env, "GET", f"/v1/sandboxes/{sid}").json()["status"] == "running"
    finally:
        raw(e2b_env, "DELETE", f"/sandboxes/{sid}")


def test_hopx_create_refuses_unknown_fields_by_name(e2b_env):
    refused(e2b_env, "POST", "/v1/sandboxes", {"template_name": "base", "vcpu": 4}, "vcpu")
    refused(e2b_env, "POST", "/v1/sandboxes", {"template_name": "base", "timeout": 60}, "timeout")
    refused(e2b_env, "POST", "/v1/sandboxes", {"template_name": "base", "auto_resume": True}, "auto_pause")


def test_e2b_list_filters_order_and_pages(e2b_env):
    tag = os.urandom(4).hex()
    made = []
    try:
        for template in ["base", "code-interpreter-v1", "base"]:
            made.append(Sandbox.create(template=template, metadata={"run": tag}, timeout=120))
            time.sleep(1.1)  # started_at is whole seconds
        ids = [s.sandbox_id for s in made]
        mine = SandboxQuery(metadata={"run": tag})
        newest_first = [s.sandbox_id for s in Sandbox.list(query=mine).next_items()]
        assert newest_first == ids[::-1]
        r = raw(e2b_env, "GET", f"/v2/sandboxes?metadata=run%3D{tag}&order=asc")
        assert [s["sandboxID"] for s in r.json()] == ids
        # By template, under E2B's name or Warren's.
        for name in ["code-interpreter-v1", "code-interpreter"]:
            got = Sandbox.list(query=SandboxQuery(metadata={"run": tag}, template=name)).next_items()
            assert [s.sandbox_id for s in got] == [ids[1]], name
        # Started at or after the second one.
        after = made[1].get_info().started_at
        got = Sandbox.list(query=SandboxQuery(metadata={"run": tag}, started_after=after)).next_items()
        assert sorted(s.sandbox_id for s in got) == sorted(ids[1:])
        future = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(hours=1)
        assert Sandbox.list(query=SandboxQuery(metadata={"run": tag}, started_after=future)).next_items() == []
        # Pages of one, in order, to the end.
        pager = Sandbox.list(query=mine, limit=1)
        paged = []
        while pager.has_next:
            paged += [s.sandbox_id for s in pager.next_items()]
        assert paged == ids[::-1]
        assert raw(e2b_env, "GET", "/v2/sandboxes?order=sideways").status_code == 400
        assert raw(e2b_env, "GET", "/v2/sandboxes?startedAfter=yesterday").status_code == 400
    finally:
        for s in made:
            s.kill()


def test_auto_resume_wakes_a_sandbox_paused_at_its_timeout(e2b_env):
    sb = Sandbox.create(template="base", timeout=2, lifecycle={"on_timeout": "pause", "auto_resume": True})
    try:
        sb.commands.run("echo survived > /tmp/kept")
        detail = raw(e2b_env, "GET", f"/sandboxes/{sb.sandbox_id}").json()
        assert detail["lifecycle"] == {"autoResume": True, "onTimeout": "pause"}, detail
        assert wait_for_status(e2b_env, sb.sandbox_id, "paused") == "paused"
        # The next request to it (no connect) resumes it, with its state and its own timeout.
        assert sb.commands.run("cat /tmp/kept").stdout == "survived\n"
        rec = raw(e2b_env, "GET", f"/v1/sandboxes/{sb.sandbox_id}").json()
        assert rec["status"] == "running" and rec["timeout_seconds"] == 2, rec
    finally:
        sb.kill()


def test_templates_carry_git_and_curl_and_the_user_owns_its_workspace(e2b_env):
    sb = Sandbox.create(template="base")
    try:
        out = sb.commands.run("git --version && curl --version | head -1").stdout
        assert "git version" in out and "curl" in out, out
        # `localhost` resolves (debootstrap writes no /etc/hosts; servers and proxies dial it).
        assert "127.0.0.1" in sb.commands.run("getent ahostsv4 localhost").stdout
        # E2B's commands run as `user`: it can create files in the workspace agents are pointed at.
        sb.commands.run("echo mine > /workspace/by-user && stat -c %U /workspace /workspace/by-user")
        owners = sb.commands.run("stat -c %U /workspace /workspace/by-user").stdout.split()
        assert owners == ["user", "user"], owners
        # Root (Hopx's default) still can.
        sb.commands.run("touch /workspace/by-root", user="root")
        # A repository served over HTTP on loopback, cloned with the SDK's git module.
        sb.commands.run(
            "set -e; mkdir -p /tmp/src && cd /tmp/src && git init -q -b main && "
            "git -c user.name=t -c user.email=t@t commit -q --allow-empty -m first && "
            "git update-server-info && cd /tmp && mv src/.git repo.git && "
            "cd repo.git && git update-server-info")
        sb.commands.run("cd /tmp && python3 -m http.server 8765 --bind 127.0.0.1", background=True)
        for _ in range(50):
            if sb.commands.run("curl -sf http://127.0.0.1:8765/repo.git/HEAD || true").stdout.strip():
                break
            time.sleep(0.1)
        sb.git.clone("http://127.0.0.1:8765/repo.git", path="/home/user/clone")
        log = sb.commands.run("git -C /home/user/clone log --format=%s").stdout.strip()
        assert log == "first", log
    finally:
        sb.kill()


def test_file_metadata_and_watch_events_as_envd_0_6_4_reports_them(e2b_env):
    sb = Sandbox.create(template="base")
    try:
        assert sb._envd_version.public == "0.6.4"
        sb.files.make_dir("/home/user/w")
        handle = sb.files.watch_dir("/home/user/w", include_entry=True)
        # Metadata on upload: kept as the file's user.e2b.* xattrs, keys lowercased, shown in
        # its EntryInfo; the next upload replaces it.
        info = sb.files.write("/home/user/w/m.txt", "x", metadata={"Author": "mish", "purpose": "test"})
        assert info.metadata == {"author": "mish", "purpose": "test"}, info
        assert sb.files.get_info("/home/user/w/m.txt").metadata == {"author": "mish", "purpose": "test"}
        listed = {e.name: e.metadata for e in sb.files.list("/home/user/w")}
        assert listed["m.txt"] == {"author": "mish", "purpose": "test"}, listed
        xattr = sb.commands.run("python3 -c \"import os; print(os.getxattr('/home/user/w/m.txt', 'user.e2b.author').decode())\"")
        assert xattr.stdout.strip() == "mish"
        sb.files.write("/home/user/w/m.txt", "y", metadata={"author": "kim"})
        assert sb.files.get_info("/home/user/w/m.txt").metadata == {"author": "kim"}
        sb.files.write("/home/user/w/m.txt", "z")
        assert sb.files.get_info("/home/user/w/m.txt").metadata is None
        sb.commands.run("rm /home/user/w/m.txt")
        time.sleep(1)
        events = handle.get_new_events()
        handle.stop()
        seen = [(e.name, e.type.value) for e in events]
        # The kernel's sequence, once each: a new file is created, then written; a replaced one is
        # written; then removed. Nothing of Warren's temporary files.
        assert seen == [("m.txt", "create"), ("m.txt", "write"), ("m.txt", "write"), ("m.txt", "write"),
                        ("m.txt", "remove")], seen
        assert events[0].entry is not None and events[0].entry.name == "m.txt", events[0]
        assert events[-1].entry is None
    finally:
        sb.kill()


def test_idempotency_key_makes_one_sandbox_on_both_protocols(e2b_env):
    key = "retry-" + os.urandom(6).hex()
    first = Sandbox.create(template="base", idempotency_key=key, metadata={"k": key})
    try:
        again = Sandbox.create(template="base", idempotency_key=key, metadata={"k": key})
        assert again.sandbox_id == first.sandbox_id
        assert again.commands.run("echo same").stdout == "same\n"
        # The same key with another request is a conflict, not a second sandbox.
        r = raw(e2b_env, "POST", "/sandboxes", json={"templateID": "base", "metadata": {"k": "other"}},
                headers={"X-API-Key": e2b_env["api_key"], "Idempotency-Key": key})
        assert r.status_code == 409 and "Idempotency-Key" in r.json()["message"], r.text
        found = Sandbox.list(query=SandboxQuery(metadata={"k": key})).next_items()
        assert [s.sandbox_id for s in found] == [first.sandbox_id]
    finally:
        first.kill()
    # Once its sandbox ended, a retry of the same request is told so.
    with pytest.raises(SandboxException) as e:
        Sandbox.create(template="base", idempotency_key=key, metadata={"k": key})
    assert "ended" in str(e.value), str(e.value)

    # Hopx side, with retries racing each other: one sandbox, the later answers marked replayed.
    key = "hopx-" + os.urandom(6).hex()
    answers = []

    def create():
        answers.append(raw(e2b_env, "POST", "/v1/sandboxes", json={"template_name": "base"},
                           headers={"X-API-Key": e2b_env["api_key"], "Idempotency-Key": key}))
    threads = [threading.Thread(target=create) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert all(a.status_code == 201 for a in answers), [a.text for a in answers]
        assert len({a.json()["id"] for a in answers}) == 1, [a.json()["id"] for a in answers]
        assert sorted(a.headers.get("Idempotent-Replayed", "") for a in answers) == ["", "true", "true"]
    finally:
        raw(e2b_env, "DELETE", f"/v1/sandboxes/{answers[0].json()['id']}")
    r = raw(e2b_env, "POST", "/v1/sandboxes", json={"template_name": "base"},
            headers={"X-API-Key": e2b_env["api_key"], "Idempotency-Key": "has space"})
    assert r.status_code == 400 and "Idempotency-Key" in r.json()["message"], r.text


def test_keys_in_e2b_shape_are_accepted_by_both_protocols(e2b_env, monkeypatch):
    key = new_key(e2b_env, "shaped", fmt="e2b")
    # What older E2B SDKs check before they send a key (e2b 2.31's own pattern).
    assert re.fullmatch(r"e2b_[0-9a-f]+", key), key
    monkeypatch.setenv("E2B_API_KEY", key)
    sb = Sandbox.create(template="base")
    try:
        assert sb.commands.run("echo ok").stdout == "ok\n"
        r = raw(e2b_env, "GET", f"/v1/sandboxes/{sb.sandbox_id}", headers={"X-API-Key": key})
        assert r.status_code == 200 and r.json()["status"] == "running"
    finally:
        sb.kill()
