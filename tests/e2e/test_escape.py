"""The escape suite: each attack runs inside a sandbox the way a user's code would (through the
official SDK) and must fail. Prints "N/M attacks blocked" at the end of the run; every attack
that is not blocked fails the test with its evidence."""
import hashlib
import json
import os
import subprocess
import time
import uuid

import pytest
import requests
from hopx_ai import Sandbox

from conftest import ESCAPE_RESULTS

SYSCALL_PROBE = r'''
import ctypes, errno, json, os, socket
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sc(nr, *args):
    ctypes.set_errno(0)
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return [r, errno.errorcode.get(ctypes.get_errno(), str(ctypes.get_errno()))]
out = {
    "init_module": sc(175, 0, 0, 0),
    "finit_module": sc(313, 0, 0, 0),
    "delete_module": sc(176, 0, 0),
    "kexec_load": sc(246, 0, 0, 0, 0),
    "bpf": sc(321, 0, 0, 0),
    "perf_event_open": sc(298, 0, 0, -1, -1, 0),
    "keyctl": sc(250, 0, -3, 0, 0, 0),
    "userfaultfd": sc(323, 0),
    "open_by_handle_at": sc(304, 3, 0, 0),
    "unshare(CLONE_NEWUSER)": sc(272, 0x10000000),
    "setns": sc(308, 0, 0),
    "mount tmpfs": [libc.mount(b"none", b"/mnt", b"tmpfs", 0, None), errno.errorcode.get(ctypes.get_errno(), "")],
    "umount /proc": [libc.umount2(b"/proc", 2), errno.errorcode.get(ctypes.get_errno(), "")],
}
for name, fam, typ, proto in [("raw socket", socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
                              ("packet socket", socket.AF_PACKET, socket.SOCK_RAW, 0)]:
    try:
        socket.socket(fam, typ, proto).close(); out[name] = [0, "opened"]
    except OSError as e:
        out[name] = [-1, errno.errorcode.get(e.errno, str(e.errno))]
for dev in ["/dev/kvm", "/dev/mem", "/dev/kmsg", "/dev/sda", "/dev/vda"]:
    try:
        open(dev, "rb").close(); out["open " + dev] = [0, "opened"]
    except OSError as e:
        out["open " + dev] = [-1, errno.errorcode.get(e.errno, str(e.errno))]
for path in ["/proc/sysrq-trigger", "/proc/sys/kernel/hostname"]:
    try:
        with open(path, "w") as f: f.write("x")
        out["write " + path] = [0, "written"]
    except OSError as e:
        out["write " + path] = [-1, errno.errorcode.get(e.errno, str(e.errno))]
print(json.dumps(out))
'''
# Any of these means the attack got nowhere (gVisor answers some calls with ENODEV, ENOTSUP or
# EAFNOSUPPORT where the kernel tier says EPERM).
DENIED = {"EPERM", "EACCES", "ENOSYS", "ENOENT", "EROFS", "ENXIO", "EINVAL", "ENODEV", "ENOTSUP", "EOPNOTSUPP", "EAFNOSUPPORT"}


def record(name, blocked, evidence=""):
    ESCAPE_RESULTS.append((name, bool(blocked), evidence))


def sh(sb, cmd, timeout=60):
    return sb.commands.run(cmd, timeout=timeout)


@pytest.fixture
def host_marker():
    path = f"/tmp/warren-escape-{uuid.uuid4().hex}"
    with open(path, "w") as f:
        f.write("HOST-SECRET")
    yield path
    os.unlink(path)


def vm_attacks(sb):
    """What only a microVM has: disks shared with other sandboxes, and a VMM process on the host."""
    qemu = subprocess.run(["pgrep", "-f", f"name warren-{sb.sandbox_id}"], capture_output=True, text=True).stdout.split()
    assert qemu, "control: the sandbox's QEMU process is visible on the host"
    status = dict(l.split(":", 1) for l in open(f"/proc/{qemu[0]}/status").read().splitlines() if ":" in l)
    uid, capeff, seccomp = status["Uid"].split()[0], status["CapEff"].strip(), status["Seccomp"].strip()
    record("VMM runs as root, with capabilities or without seccomp",
           uid != "0" and int(capeff, 16) == 0 and seccomp == "2", f"uid={uid} CapEff={capeff} Seccomp={seccomp}")
    args = open(f"/proc/{qemu[0]}/cmdline").read().split("\0")
    image = next(a.split("file=", 1)[1].split(",", 1)[0] for a in args if a.startswith("id=root,"))
    before = hashlib.sha256(open(image, "rb").read()).hexdigest()
    # root of the guest can clear the kernel's read-only flag; the VMM must still refuse the write
    r = sh(sb, "for b in /sys/block/vd*; do [ \"$(cat $b/serial)\" = warren-root ] && d=/dev/${b##*/}; done; "
               "blockdev --setrw $d 2>&1; dd if=/dev/zero of=$d bs=4096 count=16 oflag=direct conv=notrunc 2>&1; "
               "echo rc=$?")
    after = hashlib.sha256(open(image, "rb").read()).hexdigest()
    record("write the template's shared root disk", before == after, r.stdout.strip()[-120:])


def test_escape_suite(server, host_marker, outside_host):
    url, key = server["base_url"], server["api_key"]
    a = Sandbox.create(template="base", base_url=url, api_key=key)
    tier = a.get_info().model_dump().get("isolation") if hasattr(a.get_info(), "model_dump") else None
    tier = tier or requests.get(f"{url}/v1/sandboxes/{a.sandbox_id}", headers={"X-API-Key": key}, timeout=10).json().get("isolation")
    # Under gVisor, namespaces and processes live in its user-space kernel (the Sentry): a new user
    # namespace there gives no host-kernel capability, and sandbox processes are not host processes.
    sentry = tier == "gvisor"
    # In a microVM, user code is root of its own guest kernel: kernel interfaces, privileges and
    # processes are the guest's. What must hold there is that nothing reaches the host: the host's
    # state is checked directly, plus the attacks that only a VM has (shared disks, the VMM).
    vm = tier == "microvm"
    b = Sandbox.create(template="base", base_url=url, api_key=key)
    offline = Sandbox.create(template="base", base_url=url, api_key=key, internet_access=False)
    try:
        # --- host files ---------------------------------------------------------------------
        for path in [host_marker, f"/proc/1/root{host_marker}", f"/proc/self/root/../../..{host_marker}"]:
            r = sh(a, f"cat {path} 2>&1")
            record(f"read host file via {path.replace(host_marker, '<host file>')}", "HOST-SECRET" not in r.stdout, r.stdout[:80])
        sh(a, "ln -s / /workspace/rootlink; ln -s /proc/1/root /workspace/p1")
        for path in [f"/workspace/rootlink{host_marker}", f"/workspace/p1{host_marker}", f"/workspace/../../..{host_marker}"]:
            try:
                got = a.files.read(path)
            except Exception as e:  # FileNotFoundError is the expected outcome
                got = type(e).__name__
            record(f"files API read {path.replace(host_marker, '<host file>')}", "HOST-SECRET" not in str(got), str(got)[:80])

        # --- kernel interfaces and privileges ------------------------------------------------
        host_name = open("/proc/sys/kernel/hostname").read()
        probe = json.loads(a.run_code(SYSCALL_PROBE).stdout)
        guest = " (the guest's own kernel; the host is checked separately)" if vm else ""
        for name, (ret, err) in probe.items():
            contained = (sentry and name == "unshare(CLONE_NEWUSER)") or vm
            record(name, (ret == -1 and err in DENIED) or contained,
                   f"ret={ret} errno={err}" + (" (inside gVisor's Sentry, not the host kernel)" if sentry and contained else guest))
        if vm:
            record("kernel writes reach the host's hostname", open("/proc/sys/kernel/hostname").read() == host_name,
                   "host hostname unchanged after the guest wrote its own")
        r = sh(a, "cp /usr/bin/id /tmp/suid-id && chmod 4755 /tmp/suid-id && "
                  "setpriv --reuid=1000 --regid=1000 --clear-groups /tmp/suid-id -u")
        record("setuid-root binary run by uid 1000", r.stdout.strip() == "1000" or vm, r.stdout + r.stderr + guest)
        r = sh(a, "unshare --user --map-root-user id 2>&1; echo rc=$?")
        record("unshare a new user namespace", "rc=0" not in r.stdout or sentry or vm,
               r.stdout.strip() + (" (inside gVisor's Sentry)" if sentry else guest))
        r = sh(a, "grep CapBnd /proc/self/status")
        words = r.stdout.split()
        bnd = int(words[1], 16) if len(words) > 1 else 0
        record("capability bounding set lacks SYS_ADMIN/NET_ADMIN/SYS_PTRACE/SYS_MODULE",
               not any(bnd & (1 << c) for c in (21, 12, 19, 16)) or vm, r.stdout.strip() + guest)
        r = sh(a, "grep NoNewPrivs /proc/self/status")
        record("no_new_privs set", (r.stdout.split() or ["?"])[-1] == "1" or (sentry and not r.stdout.strip()) or vm,
               (r.stdout.strip() or "not reported by gVisor; setuid is checked below") + guest)
        if vm:
            vm_attacks(a)

        # --- other sandboxes and the host network ---------------------------------------------
        sh(b, "nohup sleep 424242 >/dev/null 2>&1 &")
        time.sleep(0.3)
        host_pid = subprocess.run(["pgrep", "-f", "sleep 424242"], capture_output=True, text=True).stdout.split()
        assert host_pid or sentry or vm, "control: sandbox b's process is visible from the host"
        r = sh(a, "ps -eo args")
        record("see another sandbox's processes", "424242" not in r.stdout, "")
        target = host_pid[0] if host_pid else "2"
        ptrace = a.run_code(f"import ctypes; l=ctypes.CDLL(None, use_errno=True); print(l.ptrace(16, {target}, 0, 0), ctypes.get_errno())").stdout.split()
        record("ptrace another sandbox's process (by its host pid)", ptrace[0] == "-1" or ((sentry or vm) and not host_pid),
               " ".join(ptrace) + ("" if host_pid else " (sandbox processes are not host processes)"))
        b_ns = f"warren-{b.sandbox_id}"
        b_ip = subprocess.run(["ip", "-n", b_ns, "-4", "-o", "addr", "show", "dev", "eth0"],
                              capture_output=True, text=True).stdout.split()[3].split("/")[0]
        sh(b, "cd /tmp && nohup python3 -m http.server 8000 >/dev/null 2>&1 &")
        time.sleep(0.5)
        connect = "import socket\ns=socket.socket(); s.settimeout(2)\ntry:\n s.connect(({!r}, {})); print('REACHED')\nexcept Exception as e: print('blocked', type(e).__name__)"
        r = a.run_code(connect.format(b_ip, 8000)).stdout
        record("connect to another sandbox's address", "REACHED" not in r, r.strip())
        api_port = int(url.rsplit(":", 1)[1])
        r = a.run_code(connect.format("127.0.0.1", api_port)).stdout
        record("connect to the control plane on loopback", "REACHED" not in r, r.strip())
        # the host end of a's veth, seen from the host (a VM's own gateway is one hop short of it)
        host_ip = subprocess.run(["ip", "-n", f"warren-{a.sandbox_id}", "-4", "route", "show", "default"],
                                 capture_output=True, text=True).stdout.split()[2]
        r = a.run_code(connect.format(host_ip, api_port)).stdout
        record("connect to the control plane via the host's veth address", "REACHED" not in r, r.strip())
        r = a.run_code(connect.format("169.254.169.254", 80)).stdout
        record("connect to the link-local metadata address", "REACHED" not in r, r.strip())
        r = offline.run_code(connect.format(outside_host, 8000)).stdout
        record("egress with internet_access=false", "REACHED" not in r, r.strip())

        # --- resource exhaustion --------------------------------------------------------------
        def host_responsive():
            t = time.time()
            ok = requests.get(url + "/health", timeout=5).status_code == 200
            return ok and time.time() - t < 1.0, f"{time.time() - t:.2f}s"

        try:
            sh(a, "bash -c ':(){ :|:& };:' ; sleep 2", timeout=10)
            died = ""
        except Exception as e:
            if not (sentry or vm):
                raise
            # gVisor's tasks live in its Sentry, a VM's in its guest; a fork bomb exhausts the
            # sandbox's memory and ends (or stalls) the sandbox, not the host.
            died = f" (sandbox ended: {type(e).__name__})"
        ok, took = host_responsive()
        record("fork bomb slows the host", ok, took + died)
        victim = Sandbox.create(template="base", base_url=url, api_key=key)
        try:
            r = victim.run_code("x = bytearray(3 * 1024**3); print('allocated')", timeout=60)
            out = r.stdout
        except Exception as e:
            if not (sentry or vm):
                raise
            out = f"sandbox ended: {type(e).__name__}"
        finally:
            try:
                victim.kill()
            except Exception:
                pass
        alive = requests.get(url + "/health", timeout=5).status_code == 200
        record("memory bomb beyond the sandbox's limit", "allocated" not in out and alive, out[-80:])
        try:
            r = sh(b, "dd if=/dev/zero of=/workspace/fill bs=1M count=4096 2>&1 | tail -1; stat -c %s /workspace/fill", timeout=120)
        except Exception as e:
            if not sentry:
                raise
            # gVisor keeps the writable layer in the sandbox's memory: filling it ends the sandbox
            # at its memory limit; the host is untouched.
            alive = requests.get(url + "/health", timeout=5).status_code == 200
            record("disk fill beyond the sandbox's disk", alive, f"sandbox ended at its memory limit ({type(e).__name__}); host healthy={alive}")
            r = None
        if r is None:
            pass
        else:
            size = int(r.stdout.split()[-1]) if r.stdout.split() and r.stdout.split()[-1].isdigit() else 0
            # stopped at the quota (ENOSPC, or the writer killed when the layer's pages hit the
            # memory limit), and the sandbox itself survives and recovers once the file is gone
            sh(b, "rm -f /workspace/fill")
            recovered = sh(b, "echo alive").stdout.strip() == "alive"
            record("disk fill beyond the sandbox's disk", size <= 2048 * 1024 * 1024 and recovered,
                   f"wrote {size} bytes, recovered={recovered}")
    finally:
        for sb in (a, b, offline):
            try:
                sb.kill()
            except Exception:
                pass
    missed = [(n, e) for n, ok, e in ESCAPE_RESULTS if not ok]
    assert not missed, f"{len(missed)} attacks not blocked: {missed}"
