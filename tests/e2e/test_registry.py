"""Templates from images in a real OCI registry: Debian's docker-registry on loopback, filled by the
test itself with a multi-layer image (including a whiteout), once without and once with basic-auth
credentials, built and run through the official SDK."""
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
import uuid

import pytest
import requests
from hopx_ai import Sandbox

from conftest import raw

REGISTRY = shutil.which("docker-registry")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def registries(tmp_path_factory):
    if not REGISTRY or not shutil.which("htpasswd"):
        pytest.skip("SKIPPED LOUDLY: docker-registry / htpasswd missing (apt-get install docker-registry apache2-utils)")
    procs, out = [], {}
    for name, auth in [("open", False), ("auth", True)]:
        root = tmp_path_factory.mktemp(f"registry-{name}")
        port = free_port()
        cfg = {"version": 0.1, "storage": {"filesystem": {"rootdirectory": str(root / "data")}},
               "http": {"addr": f"127.0.0.1:{port}", "secret": uuid.uuid4().hex}}
        if auth:
            subprocess.run(["htpasswd", "-Bbc", str(root / "htpasswd"), "alice", "s3cret"], check=True, capture_output=True)
            cfg["auth"] = {"htpasswd": {"realm": "warren-test", "path": str(root / "htpasswd")}}
        (root / "config.yml").write_text(json.dumps(cfg))  # JSON is YAML
        log = open(root / "log", "w")
        procs.append(subprocess.Popen([REGISTRY, "serve", str(root / "config.yml")], stdout=log, stderr=subprocess.STDOUT))
        for _ in range(100):
            try:
                requests.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except requests.RequestException:
                time.sleep(0.1)
        out[name] = f"127.0.0.1:{port}"
    yield out
    for p in procs:
        p.terminate()
        p.wait()


def tar_gz(files):
    """files: {path: bytes | None (directory) | ('link', target)}; returns gzip bytes."""
    raw_tar = io.BytesIO()
    with tarfile.open(fileobj=raw_tar, mode="w") as t:
        for path, data in files.items():
            info = tarfile.TarInfo(path)
            if data is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                t.addfile(info)
            elif isinstance(data, tuple):
                info.type, info.linkname = tarfile.SYMTYPE, data[1]
                t.addfile(info)
            else:
                info.size, info.mode = len(data), 0o755
                t.addfile(info, io.BytesIO(data))
    return gzip.compress(raw_tar.getvalue(), mtime=0), raw_tar.getvalue()


MINI_USERLAND = ["/bin/bash", "/bin/cat", "/bin/ls", "/bin/echo", "/usr/bin/env"]


def host_binaries_layer(exes=MINI_USERLAND):
    """A tiny runnable userland from the host: bash, coreutils it needs, their libraries."""
    files = {"bin": None, "etc": None, "tmp": None}
    for exe in exes:
        real = os.path.realpath(exe)
        files[exe.lstrip("/")] = open(real, "rb").read()
        libs = subprocess.run(["ldd", real], capture_output=True, text=True).stdout
        for line in libs.splitlines():
            parts = line.split()
            lib = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
            if lib.startswith("/") and os.path.exists(lib):
                files[lib.lstrip("/")] = open(os.path.realpath(lib), "rb").read()
                # keep the directory entries tar needs
    files["bin/sh"] = ("link", "bash")
    files["etc/removed-by-layer2.txt"] = b"should disappear\n"
    files["etc/kept.txt"] = b"kept\n"
    # parent directories
    for p in list(files):
        d = os.path.dirname(p)
        while d and d not in files:
            files[d] = None
            d = os.path.dirname(d)
    return dict(sorted(files.items()))


def push(registry, repo, tag, auth=None, first_layer=None):
    s = requests.Session()
    if auth:
        s.auth = auth
    base = f"http://{registry}/v2/{repo}"

    def blob(data):
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        r = s.post(f"{base}/blobs/uploads/", timeout=30)
        r.raise_for_status()
        loc = r.headers["Location"]
        loc = loc if loc.startswith("http") else f"http://{registry}{loc}"
        r = s.put(loc + ("&" if "?" in loc else "?") + f"digest={digest}", data=data,
                  headers={"Content-Type": "application/octet-stream"}, timeout=60)
        r.raise_for_status()
        return digest

    layers, diff_ids = [], []
    for files in [first_layer or host_binaries_layer(),
                  {"etc": None, "etc/layer2.txt": b"from layer two\n", "etc/.wh.removed-by-layer2.txt": b"", "data": None}]:
        gz, plain = tar_gz(files)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": blob(gz), "size": len(gz)})
        diff_ids.append("sha256:" + hashlib.sha256(plain).hexdigest())
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "config": {"Env": ["PATH=/usr/bin:/bin", "FROM_IMAGE=yes"], "WorkingDir": "/data"},
                         "rootfs": {"type": "layers", "diff_ids": diff_ids}}).encode()
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": blob(config), "size": len(config)},
                "layers": layers}
    r = s.put(f"{base}/manifests/{tag}", data=json.dumps(manifest),
              headers={"Content-Type": "application/vnd.oci.image.manifest.v1+json"}, timeout=30)
    r.raise_for_status()
    return f"{registry}/{repo}:{tag}"


def wait_build(server, tid):
    for _ in range(600):
        st = raw(server, "GET", f"/v1/templates/build/{tid}/status").json()
        if st["status"] in ("active", "failed"):
            return st
        time.sleep(0.2)
    raise AssertionError("build did not finish")


def build_and_check(server, image, creds=None):
    name = f"img-{uuid.uuid4().hex[:8]}"
    body = {"name": name, "from_image": image, "steps": [{"type": "RUN", "args": ["echo run-ok > /etc/run.txt"]}]}
    if creds:
        body["registry_credentials"] = {"type": "basic", "username": creds[0], "password": creds[1]}
    tid = raw(server, "POST", "/v1/templates/build", json=body).json()["template_id"]
    st = wait_build(server, tid)
    logs = raw(server, "GET", f"/v1/templates/build/{tid}/logs").json()["logs"]
    return name, st, logs


def test_multi_layer_image_from_a_registry(server, registries):
    image = push(registries["open"], "warren/mini", "1")
    name, st, logs = build_and_check(server, image)
    assert st["status"] == "active", logs
    assert "2 layers" in logs
    sb = Sandbox.create(template=name, base_url=server["base_url"], api_key=server["api_key"])
    try:
        r = sb.commands.run("cat /etc/layer2.txt /etc/kept.txt /etc/run.txt; ls /etc/removed-by-layer2.txt 2>&1; echo $FROM_IMAGE; pwd")
        out = r.stdout + r.stderr
        assert "from layer two\nkept\nrun-ok\n" in out
        assert "No such file" in out, "the whiteout in layer 2 must hide the file"
        assert "yes\n/data\n" in out
    finally:
        sb.kill()
    # a second template from the same image re-uses the unpacked layers
    _, st2, logs2 = build_and_check(server, image)
    assert st2["status"] == "active" and logs2.count("cached") >= 3, logs2


def test_private_registry_needs_the_credentials(server, registries):
    image = push(registries["auth"], "warren/private", "1", auth=("alice", "s3cret"))
    _, st, logs = build_and_check(server, image)
    assert st["status"] == "failed", "a private image must not be pulled without credentials"
    name, st, logs = build_and_check(server, image, creds=("alice", "s3cret"))
    assert st["status"] == "active", logs
    assert "s3cret" not in logs
