"""Upstream hosts for the egress tests (test_egress.py, test_cluster.py): a network namespace
the test creates, on 198.19.0.0/24 (inside the 198.18.0.0/15 test range), where allowed.test
(198.19.0.2) and other.test (198.19.0.3) answer HTTP, HTTPS and UDP (egress_upstream.py) with
certificates of a CA the test makes; the server is told to trust that CA upstream
(--egress-upstream-ca) and pinned to the names (--egress-resolve, conftest.EGRESS_PINS)."""
import contextlib
import os
import shutil
import subprocess
import tempfile

HOST_ADDR, ALLOWED_ADDR, OTHER_ADDR = "198.19.0.1", "198.19.0.2", "198.19.0.3"
HERE = os.path.dirname(os.path.abspath(__file__))


def make_ca(ca_dir):
    """A CA for the upstream test servers: ca_dir/ca.pem and ca_dir/ca.key."""
    os.makedirs(ca_dir, exist_ok=True)
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=warren egress test CA",
                    "-days", "2", "-keyout", os.path.join(ca_dir, "ca.key"),
                    "-out", os.path.join(ca_dir, "ca.pem")], check=True, capture_output=True)
    return os.path.join(ca_dir, "ca.pem")


@contextlib.contextmanager
def upstream_hosts(ca_dir):
    """Runs the upstream hosts with a certificate of the CA in `ca_dir`; yields {"ca": its PEM}."""
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    assert "198.19." not in routes, "198.19.0.0/24 is in use on this machine; refusing to test against it"
    name = f"wteg{os.getpid() % 10000}"
    certs = tempfile.mkdtemp(prefix="warren-egress-")
    ca, ca_key = (os.path.join(ca_dir, f) for f in ("ca.pem", "ca.key"))
    leaf, leaf_key = (os.path.join(certs, f) for f in ("leaf.pem", "leaf.key"))
    sans = "subjectAltName=DNS:allowed.test,DNS:other.test,DNS:*.pkg.test,DNS:private.test,DNS:loop.test"
    subprocess.run(["openssl", "req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=allowed.test",
                    "-keyout", leaf_key, "-out", leaf + ".csr"], check=True, capture_output=True)
    ext = os.path.join(certs, "ext")
    with open(ext, "w") as f:
        f.write(sans + "\n")
    subprocess.run(["openssl", "x509", "-req", "-in", leaf + ".csr", "-CA", ca, "-CAkey", ca_key,
                    "-CAcreateserial", "-CAserial", os.path.join(certs, "serial"),
                    "-days", "2", "-extfile", ext, "-out", leaf], check=True, capture_output=True)
    cmds = [
        ["ip", "netns", "add", name],
        ["ip", "link", "add", f"{name}h", "type", "veth", "peer", "name", "eth0", "netns", name],
        ["ip", "addr", "add", f"{HOST_ADDR}/24", "dev", f"{name}h"],
        ["ip", "link", "set", f"{name}h", "up"],
        ["ip", "-n", name, "addr", "add", f"{ALLOWED_ADDR}/24", "dev", "eth0"],
        ["ip", "-n", name, "addr", "add", f"{OTHER_ADDR}/24", "dev", "eth0"],
        ["ip", "-n", name, "link", "set", "eth0", "up"],
        ["ip", "-n", name, "link", "set", "lo", "up"],
        ["ip", "-n", name, "route", "add", "default", "via", HOST_ADDR],
    ]
    server = None
    try:
        for c in cmds:
            subprocess.run(c, check=True)
        server = subprocess.Popen(["ip", "netns", "exec", name, "python3", os.path.join(HERE, "egress_upstream.py"),
                                   leaf, leaf_key, ALLOWED_ADDR, OTHER_ADDR],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert server.stdout.readline().strip() == "ready"
        yield {"ca": open(ca).read()}
    finally:
        if server:
            server.kill()
            server.wait()
        subprocess.run(["ip", "link", "del", f"{name}h"], capture_output=True)
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        shutil.rmtree(certs)
