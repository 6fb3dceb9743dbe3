"""The microVM tier, asked for per sandbox (so it runs in the main session whatever the server's
default tier): its own kernel, env, pause to a file, and guests booting side by side with a clock
that keeps the host's time. The SDK scenarios and the escape suite run again with microVMs as the
default tier in scripts/test's microVM session."""
import os
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from hopx_ai import Sandbox

from conftest import raw


@pytest.fixture
def microvm(server):
    tiers = raw(server, "GET", "/health").json().get("isolation_tiers", [])
    if "microvm" not in tiers:
        pytest.skip("SKIPPED LOUDLY: the microVM tier is not available here (run scripts/guest-kernel)")

    def create(**body):
        r = raw(server, "POST", "/v1/sandboxes", json={"template_name": "base", "isolation": "microvm", **body})
        assert r.status_code == 201, r.text
        assert r.json()["isolation"] == "microvm"
        return Sandbox.connect(r.json()["id"], base_url=server["base_url"], api_key=server["api_key"])

    return create


def test_a_sandbox_can_ask_for_a_microvm(microvm):
    sb = microvm(env_vars={"IN_VM": "yes it's here"})
    try:
        # its own kernel (Debian's cloud kernel), not the host's
        assert sb.commands.run("uname -r").stdout.strip().endswith("cloud-amd64")
        assert os.uname().release not in sb.commands.run("uname -r").stdout
        assert sb.commands.run("echo $IN_VM").stdout.strip() == "yes it's here"
        sb.files.write("/workspace/f.txt", "kept across pause")
        sb.commands.run("nohup sleep 4242 >/dev/null 2>&1 &")
        qemu = ["pgrep", "-f", f"name warren-{sb.sandbox_id}"]
        assert subprocess.run(qemu, capture_output=True).returncode == 0
        sb.pause()
        # paused = saved to a file, its QEMU gone: a paused microVM holds no memory
        assert subprocess.run(qemu, capture_output=True).returncode == 1
        sb.resume()
        assert sb.files.read("/workspace/f.txt") == "kept across pause"
        assert sb.commands.run("pgrep -f 'sleep 4242'").stdout.strip(), "processes survive pause"
        # again and again (files lost after repeated pause/resume is a known complaint elsewhere):
        # each cycle saves over the state the last resume started from
        for cycle in range(2):
            sb.files.write(f"/workspace/cycle{cycle}.txt", f"written before pause {cycle}")
            sb.pause()
            sb.resume()
        for cycle in range(2):
            assert sb.files.read(f"/workspace/cycle{cycle}.txt") == f"written before pause {cycle}"
        assert sb.files.read("/workspace/f.txt") == "kept across pause"
        assert sb.commands.run("pgrep -f 'sleep 4242'").stdout.strip()
    finally:
        sb.kill()


def clock_skew(sb):
    """The guest's clock minus the host's, read halfway through the call."""
    t0 = time.time()
    guest = float(sb.commands.run("date +%s.%N").stdout)
    return guest - (t0 + time.time()) / 2


def test_a_guest_keeps_the_hosts_time_from_boot_and_across_a_pause(microvm):
    # A guest boots from its RTC (whole seconds) and a restored guest resumes at the time it was
    # paused: Warren sets the guest's clock at both moments.
    sb = microvm()
    try:
        assert abs(clock_skew(sb)) < 0.5, clock_skew(sb)
        sb.pause()
        time.sleep(3)
        sb.resume()
        assert abs(clock_skew(sb)) < 0.5, clock_skew(sb)
    finally:
        sb.kill()


def uptime(sb):
    return float(sb.commands.run("cat /proc/uptime").stdout.split()[0])


def clock_sample(sb):
    """The guest's uptime and the host's monotonic time when it was read, with the uncertainty
    of that pairing (half the round trip of the command, which can be long on a busy host)."""
    before = time.monotonic()
    guest = uptime(sb)
    after = time.monotonic()
    return guest, (before + after) / 2, (after - before) / 2


def test_microvms_started_side_by_side_all_boot_and_keep_time(microvm):
    # Emulated guests used to calibrate their TSC against the PIT: with the host busy (other guests
    # booting), calibration failed and the guest spun for good in early boot. Concurrent boots on
    # a 2-core machine hung nearly every time before guests were told the rate.
    with ThreadPoolExecutor(4) as pool:
        creates = [pool.submit(microvm) for _ in range(4)]
    sandboxes = [c.result() for c in creates if c.exception() is None]
    try:
        assert len(sandboxes) == 4, [str(c.exception()) for c in creates if c.exception()]
        for sb in sandboxes:
            assert sb.commands.run("echo up").stdout == "up\n"
            # Keeping time by jiffies (the watchdog distrusting the TSC of an emulated guest whose
            # vCPU was descheduled) made a guest clock run 15 % slow on a busy host.
            source = sb.commands.run("cat /sys/devices/system/clocksource/clocksource0/current_clocksource").stdout
            assert "jiffies" not in source, source
        # the rate the guest was told is the right one: its clock keeps the host's pace
        sb = sandboxes[0]
        guest0, host0, err0 = clock_sample(sb)
        time.sleep(10)
        guest1, host1, err1 = clock_sample(sb)
        # within 5 % of the host's pace, beyond what reading /proc/uptime through a command blurs
        # (its round trips, and the 10 ms steps of /proc/uptime)
        drift = abs((guest1 - guest0) - (host1 - host0))
        assert drift < 0.05 * (host1 - host0) + err0 + err1 + 0.02, (guest1 - guest0, host1 - host0, err0, err1)
    finally:
        for sb in sandboxes:
            sb.kill()


def test_a_microvm_snapshot_carries_memory_into_independent_copies(microvm, server):
    """Fork with memory (issue 16): copies of a microVM snapshot resume with the source's
    interpreter variables, processes, memory-only files and files; each copy is on its own from
    then on, and so is the source. Then a copy of the paused source, and the snapshots deleted."""
    source = microvm(env_vars={"FROM": "the source"})
    made = []
    snaps = []
    try:
        assert source.run_code("x = 41").success
        source.commands.run("nohup sleep 4343 >/dev/null 2>&1 & echo in-memory > /dev/shm/m.txt")
        source.files.write("/workspace/kept.txt", "from the source")
        r = raw(server, "POST", f"/v1/sandboxes/{source.sandbox_id}/snapshot")
        assert r.status_code == 201, r.text
        snap = r.json()
        snaps.append(snap["id"])
        assert snap["with_memory"] is True and snap["isolation"] == "microvm", snap
        assert raw(server, "GET", f"/v1/snapshots/{snap['id']}").json()["with_memory"] is True
        # the source runs on, as it was
        assert source.run_code("print(x + 1)").stdout == "42\n"

        r = raw(server, "POST", "/v1/sandboxes", json={"snapshot_id": snap["id"], "count": 2, "env_vars": {"COPY": "yes"}})
        assert r.status_code == 201, r.text
        made = [m["id"] for m in r.json()["sandboxes"]]
        copies = [Sandbox.connect(m, base_url=server["base_url"], api_key=server["api_key"]) for m in made]
        for i, c in enumerate(copies):
            assert c.run_code("print(x + 1)").stdout == "42\n"
            out = c.commands.run("pgrep -x sleep >/dev/null && echo alive; cat /dev/shm/m.txt; "
                                 "cat /workspace/kept.txt; echo; echo $SANDBOX_ID $COPY; echo $FROM").stdout
            assert out.splitlines() == ["alive", "in-memory", "from the source", f"{c.sandbox_id} yes", "the source"], out
            assert c.run_code(f"x = {i}").success
            c.files.write("/workspace/own.txt", f"copy {i}")
        for i, c in enumerate(copies):
            assert c.run_code("print(x)").stdout == f"{i}\n"
            assert c.files.read("/workspace/own.txt") == f"copy {i}"
        assert source.run_code("print(x)").stdout == "41\n"
        assert not source.files.exists("/workspace/own.txt")
        # every copy is a virtual machine of its own
        for sid in made:
            assert subprocess.run(["pgrep", "-f", f"name warren-{sid}"], capture_output=True).returncode == 0

        # a paused source's saved state is a snapshot as well
        source.pause()
        r = raw(server, "POST", f"/v1/sandboxes/{source.sandbox_id}/snapshot")
        assert r.status_code == 201, r.text
        snaps.append(r.json()["id"])
        r = raw(server, "POST", "/v1/sandboxes", json={"snapshot_id": snaps[-1]})
        assert r.status_code == 201, r.text
        made.append(r.json()["id"])
        late = Sandbox.connect(made[-1], base_url=server["base_url"], api_key=server["api_key"])
        assert late.run_code("print(x * 2)").stdout == "82\n"
    finally:
        for sid in made:
            raw(server, "DELETE", f"/v1/sandboxes/{sid}")
        source.kill()
    for sid in snaps:
        r = raw(server, "DELETE", f"/v1/snapshots/{sid}")
        assert r.status_code == 200, r.text
        assert not os.path.exists(os.path.join(server["data_dir"], "snapshots", sid))
