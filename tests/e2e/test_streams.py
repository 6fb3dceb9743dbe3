"""Issue 3 scenarios through the official hopx-ai SDK's async API: streaming (P19), terminals
(P20), file watching (P21), background work (P12) and webhooks (P13), plus the promises users rely
on: kill ends the whole tree, background output survives a disconnect and pause/resume.

Every WebSocket interaction runs under asyncio.wait_for, so a stream that never ends fails the
test instead of hanging it."""
import asyncio
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from hopx_ai import AsyncSandbox, Sandbox

from conftest import raw

LIMIT = 60  # seconds any single streaming scenario may take


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, LIMIT))


async def make(server, template="code-interpreter"):
    return await AsyncSandbox.create(template=template, base_url=server["base_url"], api_key=server["api_key"])


def test_p19_run_code_stream_ends_with_result_then_complete(server):
    async def scenario():
        sb = await make(server)
        try:
            msgs = [m async for m in sb.run_code_stream("import sys\nfor i in range(3): print(i)\nprint('oops', file=sys.stderr)")]
            types = [m["type"] for m in msgs]
            assert types[-2:] == ["result", "complete"], types
            out = "".join(m["data"] for m in msgs if m["type"] == "stdout")
            err = "".join(m["data"] for m in msgs if m["type"] == "stderr")
            assert out == "0\n1\n2\n" and err == "oops\n"
            assert msgs[-2]["exit_code"] == 0 and msgs[-1]["success"] is True

            # a failing run and a timed-out run still end with result + complete
            msgs = [m async for m in sb.run_code_stream("raise SystemExit(3)")]
            assert [m["type"] for m in msgs][-2:] == ["result", "complete"]
            assert msgs[-2]["exit_code"] == 3 and msgs[-1]["success"] is False
            t = time.time()
            msgs = [m async for m in sb.run_code_stream("import time; print('start', flush=True); time.sleep(30)", timeout=1)]
            assert time.time() - t < 10
            types = [m["type"] for m in msgs]
            assert types[0] == "stdout" and types[-3:] == ["error", "result", "complete"], types
            assert msgs[-3]["code"] == "EXECUTION_TIMEOUT" and msgs[-1]["success"] is False
        finally:
            await sb.kill()
    run(scenario())


def test_stream_output_arrives_before_the_run_ends(server):
    async def scenario():
        sb = await make(server)
        try:
            code = "import time\nprint('first', flush=True)\ntime.sleep(2)\nprint('second')"
            t0 = time.monotonic()
            first_at = None
            async for m in sb.run_code_stream(code):
                if m["type"] == "stdout" and first_at is None:
                    first_at = time.monotonic() - t0
                if m["type"] == "complete":
                    total = time.monotonic() - t0
            assert first_at is not None and first_at < 1.5 and total >= 2, (first_at, total)
        finally:
            await sb.kill()
    run(scenario())


def test_p20_terminal_input_resize_output_exit(server):
    async def scenario():
        sb = await make(server)
        try:
            await sb.env.set("GREETING", "from-env")
            ws = await sb.terminal.connect()
            await sb.terminal.resize(ws, 120, 40)
            await sb.terminal.send_input(ws, "echo hi-$GREETING; pwd; stty size\n")
            seen = ""
            async for msg in sb.terminal.iter_output(ws):
                if msg["type"] == "output":
                    seen += msg["data"]
                if "hi-from-env" in seen and "40 120" in seen:
                    break
            assert "/workspace" in seen
            await sb.terminal.send_input(ws, "exit 7\n")
            codes = [m["code"] async for m in sb.terminal.iter_output(ws) if m["type"] == "exit"]
            assert codes == [7]
        finally:
            await sb.kill()
    run(scenario())


def test_several_terminals_and_close_ends_the_shell(server):
    async def scenario():
        sb = await make(server)
        try:
            a, b = await sb.terminal.connect(), await sb.terminal.connect()
            await sb.terminal.send_input(a, "echo $$ > /tmp/a.pid; sleep 1000\n")
            await sb.terminal.send_input(b, "echo term-b\n")
            async for msg in sb.terminal.iter_output(b):
                if "term-b" in msg.get("data", "").replace("echo term-b", ""):
                    break
            for _ in range(50):
                pid = (await sb.commands.run("cat /tmp/a.pid 2>/dev/null")).stdout.strip()
                if pid:
                    break
                await asyncio.sleep(0.1)
            await a.close()
            for _ in range(50):
                alive = await sb.commands.run("pgrep -x sleep || true")
                if not alive.stdout.strip():
                    break
                await asyncio.sleep(0.1)
            assert not alive.stdout.strip(), "closing a terminal left its processes running"
            await b.close()
        finally:
            await sb.kill()
    run(scenario())


def test_p21_files_watch_reports_created_modified_deleted(server):
    """A write through the files API shows as the kernel shows a plain write of the file, under
    its own name: `created` then `modified` for a new file, `modified` for an existing one; the
    temporary file of the atomic write never shows."""
    async def scenario():
        sb = await make(server)
        try:
            events = []

            async def writer():
                # The watch starts once the server has the watch message: keep touching until seen.
                for i in range(100):
                    await sb.files.write("/workspace/sub/w.txt", f"v{i}")
                    await asyncio.sleep(0.1)
                    if any(e["event"] == "modified" for e in events):
                        break
                await sb.files.write("/workspace/sub/new.txt", "fresh")
                await asyncio.sleep(0.2)
                await sb.files.remove("/workspace/sub/w.txt")

            await sb.files.mkdir("/workspace/sub")
            task = asyncio.create_task(writer())
            async for ev in sb.files.watch("/workspace"):
                assert ev["type"] == "change"
                events.append(ev)
                if ev["event"] == "deleted" and ev["path"] == "/workspace/sub/w.txt":
                    break
            await task
            seen = [(e["event"], e["path"]) for e in events]
            assert ("modified", "/workspace/sub/w.txt") in seen, seen
            assert ("created", "/workspace/sub/new.txt") in seen, seen
            assert ("deleted", "/workspace/sub/w.txt") in seen, seen
            assert not any(".warren-" in p for _, p in seen), seen
            assert not any(kind == "renamed" for kind, _ in seen), seen
        finally:
            await sb.kill()
    run(scenario())


def test_p21_the_cookbook_watch_demo_sees_what_the_vendors_agent_sends(server):
    """Hopx's cookbook (03_file_operations.py, watch_files): four changes, and the watcher stops
    at its fifth event. The vendor's agent (inotify) reports a new file's create and then its
    write, so the demo ends; each event once, in the kernel's order."""
    async def scenario():
        sb = await make(server)
        try:
            events = []

            async def watch():
                async for ev in sb.files.watch("/workspace"):
                    if ev["type"] == "change":
                        events.append((ev["event"], ev["path"]))
                        if len(events) >= 6:
                            break

            async def make_changes():
                await asyncio.sleep(1)
                await sb.files.write("/workspace/test1.txt", "Content 1")
                await asyncio.sleep(0.5)
                await sb.files.write("/workspace/test2.txt", "Content 2")
                await asyncio.sleep(0.5)
                await sb.files.remove("/workspace/test1.txt")
                await asyncio.sleep(0.5)
                await sb.files.mkdir("/workspace/newdir")

            watcher = asyncio.create_task(watch())
            await make_changes()
            await asyncio.wait_for(watcher, 10)
            assert events == [
                ("created", "/workspace/test1.txt"), ("modified", "/workspace/test1.txt"),
                ("created", "/workspace/test2.txt"), ("modified", "/workspace/test2.txt"),
                ("deleted", "/workspace/test1.txt"), ("created", "/workspace/newdir"),
            ], events
        finally:
            await sb.kill()
    run(scenario())


def test_p12_background_list_kill_sync_and_async(server):
    sb = Sandbox.create(template="code-interpreter", base_url=server["base_url"], api_key=server["api_key"])
    try:
        started = sb.run_code_background("import time\nprint('bg', flush=True)\ntime.sleep(600)", name="x")
        pid = started["process_id"]
        procs = {p["process_id"]: p for p in sb.list_processes()}
        assert procs[pid]["name"] == "x" and procs[pid]["status"] == "running"
        assert sb.kill_process(pid)["success"] is True
        assert {p["process_id"]: p for p in sb.list_processes()}[pid]["status"] == "killed"
    finally:
        sb.kill()

    async def scenario():
        asb = await make(server)
        try:
            started = await asb.run_code_background("import time; time.sleep(600)", name="y")
            pid = started["process_id"]
            listed = [p for p in await asb.list_processes() if p.get("process_id") == pid]
            assert listed and listed[0]["name"] == "y"
            await asb.kill_process(pid)
            for _ in range(50):
                if not any(p.get("process_id") == pid for p in await asb.list_processes()):
                    break
                await asyncio.sleep(0.1)
            assert not any(p.get("process_id") == pid for p in await asb.list_processes())
        finally:
            await asb.kill()
    run(scenario())


def test_kill_process_ends_the_whole_tree(server):
    sb = Sandbox.create(template="code-interpreter", base_url=server["base_url"], api_key=server["api_key"])
    try:
        cmd = "bash -c 'sleep 1000 & sleep 1000 & setsid sleep 1000 & wait'"
        started = sb.run_code_background(cmd, language="bash")
        for _ in range(50):
            if len(sb.commands.run("pgrep -x sleep || true").stdout.split()) == 3:
                break
            time.sleep(0.1)
        assert len(sb.commands.run("pgrep -x sleep || true").stdout.split()) == 3
        sb.kill_process(started["process_id"])
        for _ in range(50):
            left = sb.commands.run("pgrep -x sleep || true").stdout.split()
            if not left:
                break
            time.sleep(0.1)
        assert left == [], "kill_process left part of the tree alive"
    finally:
        sb.kill()


def test_background_output_survives_disconnect_and_pause(server):
    sb = Sandbox.create(template="code-interpreter", base_url=server["base_url"], api_key=server["api_key"])
    try:
        code = "import time\nfor i in range(5):\n    print('line', i, flush=True)\n    time.sleep(0.1)\n"
        pid = sb.run_code_background(code)["process_id"]
        sid = sb.sandbox_id
        del sb  # the client goes away
        time.sleep(1)
        again = Sandbox.connect(sid, base_url=server["base_url"], api_key=server["api_key"])
        again.pause()
        again.resume()
        token = again.get_token()
        agent = again.get_info().public_host
        import requests
        got = requests.get(f"{agent}/execute/processes/{pid}", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
        assert got["status"] == "completed"
        assert got["stdout"] == "".join(f"line {i}\n" for i in range(5))
        # resume from an offset: only what came after it
        half = len("line 0\nline 1\n")
        tail = requests.get(f"{agent}/execute/processes/{pid}", params={"stdout_offset": half},
                            headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
        assert tail["stdout"] == "line 2\nline 3\nline 4\n" and tail["stdout_next_offset"] == got["stdout_next_offset"]
        again.kill()
    except Exception:
        raise


class _Hook(BaseHTTPRequestHandler):
    received = []

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append((self.headers, body))  # case-insensitive lookups
        # the first delivery fails: Warren must retry
        self.send_response(500 if len(_Hook.received) == 1 else 200)
        self.end_headers()

    def log_message(self, *a):
        pass


def test_p13_async_webhook_is_signed_and_retried(server):
    hook = HTTPServer(("127.0.0.1", 0), _Hook)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{hook.server_address[1]}/done"

    async def scenario():
        sb = await make(server)
        try:
            queued = await sb.run_code_async("print('async-result')", callback_url=url,
                                             callback_headers={"X-Test": "yes"},
                                             callback_signature_secret="s3cret")
            assert queued["status"] == "queued" and queued["execution_id"]
            for _ in range(100):
                if len(_Hook.received) >= 2:
                    break
                await asyncio.sleep(0.1)
            return queued
        finally:
            await sb.kill()
    try:
        queued = run(scenario())
    finally:
        hook.shutdown()
    assert len(_Hook.received) == 2, "expected one failed delivery and one retry"
    headers, body = _Hook.received[-1]
    payload = json.loads(body)
    assert payload["execution_id"] == queued["execution_id"]
    assert payload["status"] == "completed" and payload["stdout"] == "async-result\n" and payload["exit_code"] == 0
    assert headers["X-Test"] == "yes"
    ts = headers["X-HOPX-Timestamp"]
    assert abs(int(ts) - time.time()) < 60
    expected = hmac.new(b"s3cret", ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    assert headers["X-HOPX-Signature"] == f"sha256={expected}"


def test_async_webhook_rejects_a_bad_callback_url(server):
    sb = Sandbox.create(template="base", base_url=server["base_url"], api_key=server["api_key"])
    try:
        import requests
        res = requests.post(f"{sb.get_info().public_host}/execute/async", json={"code": "print(1)", "callback_url": "file:///etc/passwd"},
                            headers={"Authorization": f"Bearer {sb.get_token()}"}, timeout=10)
        assert res.status_code == 400 and "callback_url" in res.json()["message"]
    finally:
        sb.kill()


def test_command_leaving_a_background_child_returns_its_output_promptly(server):
    sb = Sandbox.create(template="base", base_url=server["base_url"], api_key=server["api_key"])
    try:
        t = time.time()
        r = sb.commands.run("echo started; sleep 30 &")
        assert r.stdout == "started\n" and r.exit_code == 0 and time.time() - t < 5
        # the child is still running (left in the background on purpose)
        assert sb.commands.run("pgrep -x sleep >/dev/null && echo yes").stdout == "yes\n"
    finally:
        sb.kill()
