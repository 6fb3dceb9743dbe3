"""Schemathesis against the running server, bounded in time: the control plane with the vendor's
public spec, then one sandbox's agent with the vendor's agent spec, then the control plane with
Warren's own OpenAPI document (`/openapi.json`), where every answer must also match its schema. The run fails on any 5xx, on a
sandbox that dies during it, and on kernel objects left behind once the sandboxes it made are
deleted. Template builds are left out: they would pull images from registries beyond this machine.

Seconds per run: WARREN_FUZZ_SECONDS (default 50: the three runs are the suite's longest test;
a longer hunt sets more)."""
import os
import subprocess

import pytest
import requests
from hopx_ai import Sandbox

from conftest import ROOT, leftovers, no_more_leftovers_than, raw

# The vendor's OpenAPI documents are not ours to ship (their licence is proprietary): they are read
# from the project's workspace beside the checkout, or from WARREN_VENDOR_SPEC_DIR.
SPEC = os.environ.get("WARREN_VENDOR_SPEC_DIR", os.path.join(os.path.dirname(ROOT), "shared", "spec"))
SECONDS = os.environ.get("WARREN_FUZZ_SECONDS", "50")
SCHEMATHESIS = os.path.join(ROOT, "tests", ".venv", "bin", "schemathesis")


def spec(name):
    path = os.path.join(SPEC, name)
    if not os.path.exists(path):
        pytest.skip(f"SKIPPED LOUDLY: vendor spec {path} not found (set WARREN_VENDOR_SPEC_DIR)")
    return path


def fuzz(spec_path, url, header, *extra, checks="not_a_server_error"):
    if not os.path.exists(SCHEMATHESIS):
        pytest.skip("SKIPPED LOUDLY: schemathesis is not installed in tests/.venv (scripts/test installs it)")
    out = subprocess.run(
        [SCHEMATHESIS, "run", spec_path, "--url", url, "--header", header,
         "--checks", checks, "--max-time", SECONDS, "--workers", "2",
         "--phases", "examples,coverage,fuzzing", "--no-color", *extra],
        capture_output=True, text=True, timeout=int(SECONDS) * 4 + 120,
        env=dict(os.environ, SCHEMATHESIS_HOOKS=""),
    )
    report = out.stdout[-6000:] + out.stderr[-2000:]
    assert out.returncode == 0, f"schemathesis found failures:\n{report}"
    return report


def volumes(server):
    return {v["id"] for v in raw(server, "GET", "/v1/volumes").json()["volumes"]}


def delete_all(server, volumes_before=None):
    """The fuzzer's sandboxes, then the volumes it made (a volume's file system is mounted while
    it exists: it is the tenant's data, not a leftover, until the test that made it is done)."""
    for s in raw(server, "GET", "/v1/sandboxes?limit=1000").json()["data"]:
        raw(server, "DELETE", f"/v1/sandboxes/{s['id']}")
    if volumes_before is not None:
        for v in volumes(server) - volumes_before:
            assert raw(server, "DELETE", f"/v1/volumes/{v}").status_code == 204, v


def test_fuzzing_the_control_plane_and_an_agent_breaks_nothing(server):
    before, volumes_before = leftovers(), volumes(server)
    public, agent_spec = spec("openapi_public.json"), spec("openapi_agent.json")
    fuzz(public, server["base_url"], f"X-API-Key: {server['api_key']}",
         "--exclude-path-regex", "/v1/templates/(build|files)")
    delete_all(server)

    sb = Sandbox.create(template="code-interpreter", base_url=server["base_url"], api_key=server["api_key"])
    try:
        info = sb.get_info()
        fuzz(agent_spec, info.public_host, f"Authorization: Bearer {sb.get_token()}",
             # Removing files is the sandbox owner's right, and random paths would take away the
             # very interpreter this test checks afterwards.
             "--exclude-path", "/files/remove")
        status = raw(server, "GET", f"/v1/sandboxes/{sb.sandbox_id}").json()["status"]
        assert status == "running", f"the sandbox did not survive the fuzzing: {status}"
        health = requests.get(info.public_host + "/health", timeout=10)
        assert health.status_code == 200
        assert sb.run_code("print(1 + 1)").stdout == "2\n"
    finally:
        sb.kill()
    delete_all(server, volumes_before)
    left = no_more_leftovers_than(before)
    new = {k: sorted(set(left[k]) - set(before[k])) for k in left}
    assert not any(new.values()), f"kernel objects left behind: {new} (before: {before})"


def test_fuzzing_with_our_own_openapi_document_finds_no_errors_and_no_schema_drift(server, tmp_path):
    before, volumes_before = leftovers(), volumes(server)
    doc = requests.get(server["base_url"] + "/openapi.json", timeout=10)
    assert doc.status_code == 200 and doc.json()["openapi"].startswith("3.1")
    path = tmp_path / "openapi.json"
    path.write_text(doc.text)
    fuzz(str(path), server["base_url"], f"X-API-Key: {server['api_key']}",
         # Creates are fuzzed with the vendor's spec above (here `count` would start up to 100
         # sandboxes per call); builds would pull images from registries beyond this machine;
         # MCP is a stateful protocol of its own (test_mcp.py).
         "--exclude-operation-id", "create_sandbox",
         "--exclude-operation-id", "e2b_create",
         "--exclude-operation-id", "e2b_create_at__v2_sandboxes",
         # E2B features Warren does not serve answer 501 Not Implemented, as documented.
         "--exclude-operation-id", "e2b_network",
         "--exclude-path-regex", "/v1/templates/(build|files)|^/mcp$",
         checks="not_a_server_error,response_schema_conformance")
    delete_all(server, volumes_before)
    left = no_more_leftovers_than(before)
    new = {k: sorted(set(left[k]) - set(before[k])) for k in left}
    assert not any(new.values()), f"kernel objects left behind: {new}"
