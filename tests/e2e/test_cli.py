"""The `warren` terminal client against the real server: live output and interactive shells."""
import os
import subprocess

from conftest import WARREN, raw


def cli(server, *args, stdin=None):
    env = dict(os.environ, WARREN_URL=server["base_url"], WARREN_API_KEY=server["api_key"])
    return subprocess.run([WARREN, *args], input=stdin, capture_output=True, text=True, env=env, timeout=60)


def test_exec_stream_and_shell(server):
    created = raw(server, "POST", "/v1/sandboxes", json={"template_name": "base"}).json()
    sid = created["id"]
    try:
        r = cli(server, "exec", "--stream", sid, "echo out; echo err >&2; exit 5")
        assert (r.returncode, r.stdout, r.stderr) == (5, "out\n", "err\n")

        r = cli(server, "shell", sid, stdin="echo shell-$((6*7))\nexit 3\n")
        assert r.returncode == 3 and "shell-42" in r.stdout, r.stdout + r.stderr

        r = cli(server, "sandbox", "usage", sid)
        assert r.returncode == 0 and "memory" in r.stdout and "% of" in r.stdout, r.stdout + r.stderr
        r = cli(server, "sandbox", "usage", "--json", sid)
        import json
        assert json.loads(r.stdout)["sandbox_id"] == sid
        r = cli(server, "sandbox", "usage", "nosuchsandbox00000")
        assert r.returncode != 0 and "not found" in r.stderr.lower(), r.stdout + r.stderr
    finally:
        raw(server, "DELETE", f"/v1/sandboxes/{sid}")


def test_template_build_from_a_dockerfile_with_progress(server, tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "hello.txt").write_text("hi from the cli\n")
    (tmp_path / "Dockerfile").write_text(
        "FROM base\n# a comment\nCOPY site/ /srv/site\nENV WHO=cli\nWORKDIR /srv/site\n"
        "RUN echo \"built for $WHO\" > built.txt && \\\n    cat hello.txt\n")
    import uuid
    name = f"cli-{uuid.uuid4().hex[:6]}"
    r = cli(server, "template", "build", name, "-f", str(tmp_path / "Dockerfile"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Step 4/4: RUN" in r.stdout and "hi from the cli" in r.stdout and "is active" in r.stderr
    again = cli(server, "template", "build", name, "-f", str(tmp_path / "Dockerfile"), "--update")
    assert again.returncode == 0 and again.stdout.count("cached") == 2, again.stdout
    sid = raw(server, "POST", "/v1/sandboxes", json={"template_name": name}).json()["id"]
    try:
        out = cli(server, "exec", sid, "cat built.txt; pwd").stdout
        assert out == "built for cli\n/srv/site\n"
    finally:
        raw(server, "DELETE", f"/v1/sandboxes/{sid}")
    bad = cli(server, "template", "build", "bad-x", "-f", str(tmp_path / "site" / "hello.txt"))
    assert bad.returncode != 0 and "FROM" in bad.stderr + bad.stdout or "unsupported" in bad.stderr


def test_doctor_reports_every_tier_with_a_measured_start():
    import json
    out = subprocess.run([WARREN, "doctor", "--json", "--runs", "1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    tiers = {t["tier"]: t for t in report["tiers"]}
    assert set(tiers) == {"namespaces", "gvisor", "microvm"}
    for t in tiers.values():
        assert t["implemented"] is True
        # runnable with a measured start, or not runnable with a reason
        assert (t["available"] and (t.get("start_ms") or t.get("start_ms_by_platform"))) or (not t["available"] and t["why"])
    assert tiers["namespaces"]["available"]
    vm = tiers["microvm"]
    if vm["pvm"] or not vm["hardware_virtualisation"]:
        # no usable hardware virtualisation: said loudly, never KVM
        assert vm["accel"] == "tcg" and "EMULATED" in vm["acceleration"]
        # emulated guests are told the host's TSC rate where it is invariant (or they can hang at boot)
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags")).split()
        if "constant_tsc" in flags and "nonstop_tsc" in flags:
            assert 100_000 < vm["host_tsc_khz"] < 20_000_000


def test_version_and_health_name_the_release_and_its_commit(server):
    """An operator applying a security fix checks what runs: `warren --version` and `/health`
    give the version and the commit the binary was built from."""
    out = subprocess.run([WARREN, "--version"], capture_output=True, text=True, timeout=30).stdout
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    head = subprocess.run(["git", "-C", repo, "rev-parse", "--short=12", "HEAD"], capture_output=True, text=True)
    version = open(os.path.join(repo, "Cargo.toml")).read().split('version = "', 1)[1].split('"', 1)[0]
    assert out.startswith(f"warren {version} (commit "), out
    health = raw(server, "GET", "/health").json()
    assert health["version"] == version and out.strip().endswith(f"{health['commit']})"), (health, out)
    if head.returncode == 0:
        assert health["commit"] == head.stdout.strip(), "built from another commit than the checkout's"
