"""The deployment files (deploy/kubernetes, deploy/systemd) checked offline: the manifests parse,
and every flag and WARREN_* variable they hand to `warren` exists in that command's `--help`, so
a renamed flag cannot leave them silently broken."""
import glob
import os
import re
import shlex
import subprocess

import pytest
import yaml

from conftest import ROOT, WARREN

DEPLOY = os.path.join(ROOT, "deploy")


def help_of(command):
    r = subprocess.run([WARREN, command, "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return r.stdout


def check_invocation(args, env_names, where):
    command = args[0]
    text = help_of(command)
    flags = {a.split("=", 1)[0] for a in args[1:] if a.startswith("--")}
    assert flags, f"{where}: no flags found in {args}"
    for flag in flags:
        assert re.search(rf"(^|\s){re.escape(flag)}([\s=<,]|$)", text, re.M), f"{where}: {flag} is not an option of `warren {command}`"
    for name in env_names:
        if name.startswith("WARREN_"):
            assert name in text, f"{where}: {name} is not read by `warren {command}` (see its --help)"
    return command


def manifests():
    return sorted(glob.glob(os.path.join(DEPLOY, "kubernetes", "*.yaml")))


def test_kubernetes_manifests_parse_and_pass_only_real_flags_and_variables():
    seen = set()
    for path in manifests():
        docs = [d for d in yaml.safe_load_all(open(path)) if d]
        assert docs, f"{path} is empty"
        for d in docs:
            assert {"apiVersion", "kind", "metadata"} <= set(d), f"{path}: {d.get('kind')} lacks apiVersion/kind/metadata"
            pod = d.get("spec", {}).get("template", {}).get("spec", {})
            for c in pod.get("containers", []):
                if not c.get("image", "").startswith("warren"):
                    continue
                env = [e["name"] for e in c.get("env", [])]
                seen.add(check_invocation(c["args"], env, f"{os.path.basename(path)}:{c['name']}"))
    assert seen == {"serve", "node"}, f"manifests run {seen}"


def test_kubernetes_control_planes_are_replicated_and_nodes_privileged_with_a_host_cache():
    by_kind = {}
    for path in manifests():
        for d in yaml.safe_load_all(open(path)):
            if d:
                by_kind.setdefault(d["kind"], []).append(d)
    cp = next(d for d in by_kind["Deployment"] if d["metadata"]["name"] == "warren-control-plane")
    assert cp["spec"]["replicas"] >= 2
    assert "--no-local-node" in cp["spec"]["template"]["spec"]["containers"][0]["args"]
    assert any(s["metadata"]["name"] == "warren-control-plane" for s in by_kind["Service"])
    ds = by_kind["DaemonSet"][0]["spec"]["template"]["spec"]
    assert ds["containers"][0]["securityContext"]["privileged"] is True
    assert any(v.get("hostPath", {}).get("path") == "/var/cache/warren" for v in ds["volumes"])
    secret_keys = {k for s in by_kind["Secret"] for k in s["stringData"]}
    assert {"database-url", "node-join-secret"} <= secret_keys


def test_systemd_units_pass_only_real_flags_and_variables():
    units = sorted(glob.glob(os.path.join(DEPLOY, "systemd", "*.service")))
    assert len(units) == 3
    for unit in units:
        text = open(unit).read()
        exec_start = re.search(r"^ExecStart=(.+)$", text, re.M).group(1)
        argv = shlex.split(exec_start)
        assert argv[0].endswith("/warren")
        env_file = re.search(r"^EnvironmentFile=(.+)$", text, re.M).group(1)
        example = os.path.join(DEPLOY, "systemd", os.path.basename(env_file) + ".example")
        assert os.path.exists(example), f"{unit}: no {example}"
        names = [l.split("=", 1)[0] for l in open(example) if "=" in l and not l.startswith("#")]
        # Variables the unit itself expands must be in the example.
        for used in re.findall(r"\$\{(\w+)\}", exec_start):
            assert used in names, f"{unit}: ${{{used}}} is not in {example}"
        check_invocation(argv[1:], names, os.path.basename(unit))
