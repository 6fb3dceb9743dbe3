"""Egress by domain, enforced on the host: a sandbox whose policy names domains reaches exactly
those names (TLS by SNI, HTTP by every request's Host), its DNS answers only them, and a runtime
update opens and closes access and cuts open connections. Upstream hosts live in a network
namespace this test creates (198.19.0.0/24); the server pins the test names to them
(conftest.EGRESS_PINS)."""
import json
import os
import time
import uuid

import pytest
from e2b import Sandbox as E2bSandbox
from hopx_ai import Sandbox as HopxSandbox

from conftest import raw
from egress_hosts import ALLOWED_ADDR, OTHER_ADDR, upstream_hosts

POLICY = {"allow_out": ["allowed.test", "*.pkg.test", "private.test", "loop.test"], "deny_out": ["0.0.0.0/0"]}

# Runs inside the sandbox: each probe's outcome as JSON (standard library only).
PROBE = r'''
import http.client, json, socket, ssl, sys
CA = "/tmp/egress-ca.pem"
def tls_ctx():
    return ssl.create_default_context(cafile=CA)
def https(name, path="/", at=None):
    # `at`: connect to this address with `name` as the server name (a name the sandbox cannot
    # resolve, reached anyway).
    c = http.client.HTTPSConnection(at or name, 443, timeout=10, context=tls_ctx())
    if at:
        c.sock = tls_ctx().wrap_socket(socket.create_connection((at, 443), timeout=10), server_hostname=name)
    c.request("GET", path, headers={"Host": name})
    r = c.getresponse()
    return {"status": r.status, "body": r.read().decode()}
def http_(name, path="/", host=None):
    c = http.client.HTTPConnection(name, 80, timeout=10)
    c.request("GET", path, headers={"Host": host} if host else {})
    r = c.getresponse()
    return {"status": r.status, "body": r.read().decode()}
def keepalive(name, second_host):
    c = http.client.HTTPConnection(name, 80, timeout=10)
    c.request("GET", "/")
    r = c.getresponse(); first = r.status; r.read()
    c.request("GET", "/", headers={"Host": second_host})
    r = c.getresponse()
    return {"first": first, "second": r.status, "body": r.read().decode()}
def tls_no_sni(ip):
    ctx = ssl.create_default_context(cafile=CA); ctx.check_hostname = False
    s = socket.create_connection((ip, 443), timeout=10)
    t = ctx.wrap_socket(s)
    t.sendall(b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n")
    return {"status": int(t.recv(100).split()[1])}
def udp(ip):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(2)
    s.sendto(b"ping", (ip, 443))
    return {"reply": s.recvfrom(100)[0].decode()}
def dns(name):
    return {"address": socket.gethostbyname(name)}
out = []
for kind, *args in json.loads(sys.argv[1]):
    try:
        out.append({"ok": True, **globals()[kind](*args)})
    except Exception as e:
        out.append({"ok": False, "error": type(e).__name__ + ": " + str(e)})
print(json.dumps(out))
'''


def run(exec_cmd, probes):
    """Runs PROBE in the sandbox; `exec_cmd(cmd)` returns its stdout."""
    return json.loads(exec_cmd("python3 /tmp/egress-probe.py '" + json.dumps(probes) + "'").strip().splitlines()[-1])


@pytest.fixture(scope="module")
def upstream(server):
    """Two upstream hosts (allowed.test, other.test) in a netns of this test, with certificates
    of the suite's upstream CA (conftest: the server trusts it upstream)."""
    with upstream_hosts(server["upstream_ca"]) as hosts:
        yield hosts


def prepared(sb, ca):
    sb.files.write("/tmp/egress-probe.py", PROBE)
    sb.files.write("/tmp/egress-ca.pem", ca)
    return sb


def e2b_exec(sb):
    return lambda cmd: sb.commands.run(cmd, timeout=60).stdout


def tiers(server):
    return raw(server, "GET", "/health").json().get("isolation_tiers", [])


# The microVM tier's table sits on the tap's host end; its guests are emulated here, so only this
# scenario runs on it.
@pytest.mark.parametrize("tier", ["namespaces", "gvisor", "microvm"])
def test_domain_policy_allows_names_and_refuses_the_rest(e2b_env, upstream, tier):
    if tier not in tiers(e2b_env):
        pytest.skip(f"SKIPPED LOUDLY: the {tier} tier is not available on this machine")
    r = raw(e2b_env, "POST", "/v1/sandboxes", json={"template_name": "base", "isolation": tier, "network": POLICY})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    try:
        sb = prepared(E2bSandbox.connect(sid), upstream["ca"])
        got = run(e2b_exec(sb), [
            ["https", "allowed.test"], ["http_", "allowed.test"], ["https", "a.pkg.test"],
            ["http_", OTHER_ADDR, "/", "other.test"], ["https", "other.test", "/", OTHER_ADDR],
            ["tls_no_sni", ALLOWED_ADDR], ["keepalive", "allowed.test", "other.test"],
            ["http_", "private.test"], ["https", "private.test"], ["http_", "loop.test"],
            ["udp", ALLOWED_ADDR], ["dns", "allowed.test"], ["dns", "other.test"],
        ])
        https_ok, http_ok, wild_ok, http_other, https_other, no_sni, keep, priv_http, priv_https, loop, udp, dns_ok, dns_other = got
        # Allowed names, over HTTPS (SNI) and HTTP (Host); the proxy dialled the name itself.
        assert https_ok["ok"] and https_ok["status"] == 200 and json.loads(https_ok["body"])["server"] == ALLOWED_ADDR, https_ok
        assert http_ok["ok"] and http_ok["status"] == 200, http_ok
        assert wild_ok["ok"] and wild_ok["status"] == 200, wild_ok
        # Another name: a 403 naming the rule on HTTP, a reset on TLS.
        assert http_other["status"] == 403 and "other.test" in http_other["body"] and "denyOut 0.0.0.0/0" in http_other["body"], http_other
        assert not https_other["ok"] and "reset" in https_other["error"].lower(), https_other
        # An address alone (no SNI) is judged by CIDR: refused, even though it is allowed.test's address.
        assert not no_sni["ok"], no_sni
        # A second Host on a kept-alive connection is judged again.
        assert keep["first"] == 200 and keep["second"] == 403, keep
        # Allowed names that resolve to private or loopback addresses are never dialled.
        assert priv_http.get("status") != 200 and not priv_https["ok"] and loop.get("status") != 200, (priv_http, priv_https, loop)
        # UDP other than DNS does not leave; DNS answers allowed names only.
        assert not udp["ok"], udp
        assert dns_ok == {"ok": True, "address": ALLOWED_ADDR}, dns_ok
        assert not dns_other["ok"], dns_other
    finally:
        raw(e2b_env, "DELETE", f"/v1/sandboxes/{sid}")


def test_runtime_update_opens_closes_and_cuts_open_connections(e2b_env, upstream):
    r = raw(e2b_env, "POST", "/v1/sandboxes", json={"template_name": "base", "network": POLICY})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    try:
        sb = prepared(E2bSandbox.connect(sid), upstream["ca"])
        ex = e2b_exec(sb)
        # A connection opened under the old policy, kept open in the background.
        sb.files.write("/tmp/held.py", r'''
import http.client, os, ssl, time
c = http.client.HTTPSConnection("allowed.test", 443, timeout=10, context=ssl.create_default_context(cafile="/tmp/egress-ca.pem"))
c.request("GET", "/"); r = c.getresponse(); r.read()
open("/tmp/held-ready", "w").write(str(r.status))
while not os.path.exists("/tmp/held-go"):
    time.sleep(0.05)
try:
    c.request("GET", "/"); r = c.getresponse(); r.read(); out = "open %d" % r.status
except Exception as e:
    out = "cut " + type(e).__name__
open("/tmp/held-result", "w").write(out)
''')
        sb.commands.run("python3 /tmp/held.py", background=True)
        for _ in range(100):
            if ex("cat /tmp/held-ready 2>/dev/null || true").strip() == "200":
                break
            time.sleep(0.1)
        else:
            pytest.fail("the held connection did not open")
        new = {"allow_out": ["other.test"], "deny_out": ["0.0.0.0/0"]}
        r = raw(e2b_env, "PUT", f"/v1/sandboxes/{sid}/network", json=new)
        assert r.status_code == 200 and r.json() == new, r.text
        ex("touch /tmp/held-go")
        for _ in range(100):
            held = ex("cat /tmp/held-result 2>/dev/null || true").strip()
            if held:
                break
            time.sleep(0.1)
        assert held.startswith("cut"), held
        after = run(ex, [["https", "allowed.test"], ["https", "other.test"], ["http_", "other.test"]])
        assert not after[0]["ok"] and after[1].get("status") == 200 and after[2].get("status") == 200, after
        # E2B's API: the SDK's update_network replaces the whole config (204).
        E2bSandbox.update_network(sid, {"allow_out": ["allowed.test"], "deny_out": ["0.0.0.0/0"]}) \
            if hasattr(E2bSandbox, "update_network") else pytest.fail("e2b SDK without update_network")
        again = run(ex, [["https", "allowed.test"], ["https", "other.test"]])
        assert again[0].get("status") == 200 and not again[1]["ok"], again
        # An empty policy: internet access alone decides again (the proxy lets go).
        r = raw(e2b_env, "PUT", f"/v1/sandboxes/{sid}/network", json={})
        assert r.status_code == 200 and r.json() == {}, r.text
        # Bad policies are refused with E2B's words and change nothing.
        r = raw(e2b_env, "PUT", f"/v1/sandboxes/{sid}/network", json={"allow_out": ["allowed.test"]})
        assert r.status_code == 400 and "ALL_TRAFFIC" in r.json()["message"], r.text
        # Every decision is in the audit trail.
        trail = raw(e2b_env, "GET", f"/v1/audit?sandbox_id={sid}&action=egress&limit=500").json()
        outcomes = [e["outcome"] for e in trail["data"]]
        assert any(o.startswith("refused other.test:53") for o in outcomes), outcomes
        assert any(o.startswith("refused allowed.test:443") and "cut" in o for o in outcomes), outcomes
        assert any(o.startswith("allowed allowed.test:443") for o in outcomes), outcomes
        assert any(e["action"] == "sandbox.network" for e in
                   raw(e2b_env, "GET", f"/v1/audit?sandbox_id={sid}&action=sandbox.network").json()["data"])
    finally:
        raw(e2b_env, "DELETE", f"/v1/sandboxes/{sid}")


def test_e2b_sdk_create_with_domains_and_hopx_sdk_drive_it(e2b_env, upstream):
    sb = E2bSandbox.create(template="base", network={"allow_out": ["allowed.test"], "deny_out": ["0.0.0.0/0"]})
    try:
        prepared(sb, upstream["ca"])
        got = run(e2b_exec(sb), [["https", "allowed.test"], ["https", "other.test"]])
        assert got[0].get("status") == 200 and not got[1]["ok"], got
        assert sb.get_info().network is not None
        # The same sandbox through the Hopx SDK.
        hx = HopxSandbox.connect(sb.sandbox_id, base_url=e2b_env["base_url"], api_key=e2b_env["api_key"])
        got = run(lambda cmd: hx.commands.run(cmd).stdout, [["http_", "allowed.test"], ["http_", OTHER_ADDR, "/", "other.test"]])
        assert got[0].get("status") == 200 and got[1].get("status") == 403, got
    finally:
        sb.kill()


def test_secret_reaches_only_its_host_and_the_sandbox_holds_a_placeholder(e2b_env, upstream):
    value = f"ghp_{uuid.uuid4().hex}{uuid.uuid4().hex}"
    name = f"gh-{uuid.uuid4().hex[:8]}"
    r = raw(e2b_env, "POST", "/v1/secrets", json={"name": name, "value": value, "hosts": ["allowed.test"]})
    assert r.status_code == 201 and value not in r.text and r.json()["hosts"] == ["allowed.test"], r.text
    listed = raw(e2b_env, "GET", "/v1/secrets").json()["secrets"]
    assert any(s["name"] == name for s in listed) and value not in json.dumps(listed)
    for bad in ({"name": "x y", "value": "v", "hosts": ["a.test"]}, {"name": "ok", "value": "v", "hosts": []},
                {"name": "ok", "value": "v", "hosts": ["*"]}):
        assert raw(e2b_env, "POST", "/v1/secrets", json=bad).status_code == 400
    r = raw(e2b_env, "POST", "/v1/sandboxes", json={"template_name": "base", "secrets": {"GH_TOKEN": "no-such-secret"}})
    assert r.status_code == 400 and "no-such-secret" in r.json()["message"], r.text
    # Internet on, no domain rules: the sandbox goes through the proxy for its secret only.
    r = raw(e2b_env, "POST", "/v1/sandboxes", json={"template_name": "base", "secrets": {"GH_TOKEN": name}})
    assert r.status_code == 201, r.text
    sid = r.json()["id"]
    try:
        sb = prepared(E2bSandbox.connect(sid), upstream["ca"])
        ex = e2b_exec(sb)
        # The upstream's CA too, for the hosts the proxy does not terminate (as root).
        sb.commands.run("cat /tmp/egress-ca.pem >> /etc/ssl/certs/ca-certificates.crt", user="root")
        placeholder = ex("printenv GH_TOKEN").strip()
        assert placeholder.startswith("wrn_secret_") and value not in placeholder
        sb.files.write("/tmp/use.py", r'''
import json, os, ssl, sys, urllib.request
def get(url, host=None):
    headers = {"Authorization": "Bearer " + os.environ["GH_TOKEN"], "X-Other": "keep"}
    if host:
        headers["Host"] = host
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return {"status": r.status, "body": r.read().decode()}
    except urllib.error.HTTPError as e:
        return {"status": e.code, "body": e.read().decode()}
    except Exception as e:
        return {"error": type(e).__name__ + ": " + str(e)}
print(json.dumps([get("https://allowed.test/"), get("https://other.test/"), get("http://allowed.test/"),
                  get("https://allowed.test/redirect"), get("https://allowed.test/", host="other.test")]))
''')
        bound, other, plain, redirected, fronted = json.loads(ex("python3 /tmp/use.py").strip().splitlines()[-1])
        # The bound host, over HTTPS, sees the value in place of the placeholder.
        assert bound.get("status") == 200, bound
        headers = {k.lower(): v for k, v in json.loads(bound["body"])["headers"].items()}
        assert headers["authorization"] == "Bearer " + value and headers["x-other"] == "keep", headers
        # Another host, plain HTTP, and a redirect's target get the placeholder only.
        assert other.get("status") == 200 and value not in other["body"] and placeholder in other["body"], other
        assert plain.get("status") == 200 and value not in plain["body"] and placeholder in plain["body"], plain
        assert value not in json.dumps(redirected), redirected
        # A request that names another Host inside the bound host's TLS is refused.
        assert fronted.get("status") == 421, fronted
        # Nothing inside the sandbox holds the value: its environment, files, /proc.
        leak = ex(f"grep -rl {value} /etc /tmp /root /home /workspace /proc/[0-9]*/environ 2>/dev/null | head -3; true")
        assert leak.strip() == "", leak
        # Its use is in the audit trail, without the value.
        trail = raw(e2b_env, "GET", f"/v1/audit?sandbox_id={sid}&action=egress&limit=500").json()["data"]
        assert any(f"secret {name} put in header authorization" in e["outcome"] for e in trail), trail
        assert value not in json.dumps(trail)
    finally:
        raw(e2b_env, "DELETE", f"/v1/sandboxes/{sid}")
    assert raw(e2b_env, "DELETE", f"/v1/secrets/{name}").status_code == 204
    assert raw(e2b_env, "DELETE", f"/v1/secrets/{name}").status_code == 404
    assert not any(s["name"] == name for s in raw(e2b_env, "GET", "/v1/secrets").json()["secrets"])
    # Not in the server's log, the audit trail, nor in clear anywhere under its data dir (the store).
    time.sleep(0.3)
    assert value.encode() not in open(e2b_env["log"], "rb").read()
    for root, _, files in os.walk(e2b_env["data_dir"]):
        for f in files:
            path = os.path.join(root, f)
            try:
                data = open(path, "rb").read()
            except OSError:
                continue
            assert value.encode() not in data, path


# Runs inside the sandbox: one HTTPS request whose own headers try to get at the secret.
RULE_PROBE = r'''
import json, sys, urllib.request
req = urllib.request.Request(sys.argv[1], headers={"X-Api-Key": "mine", "X-Echo": sys.argv[2]})
try:
    with urllib.request.urlopen(req, timeout=10) as r:
        print(json.dumps({"status": r.status, "headers": json.loads(r.read())["headers"]}))
except Exception as e:
    print(json.dumps({"error": type(e).__name__ + ": " + str(e)}))
'''


def rule_request(sb, url, echo):
    sb.files.write("/tmp/rule-probe.py", RULE_PROBE)
    got = json.loads(sb.commands.run(f"python3 /tmp/rule-probe.py {url} '{echo}'", timeout=60).stdout.strip().splitlines()[-1])
    got["headers"] = {k.lower(): v for k, v in got.get("headers", {}).items()}
    return got


def test_e2b_secrets_api_and_network_rules_put_a_secret_in_a_hosts_headers(e2b_env, upstream):
    from e2b import Secret
    from e2b.exceptions import SandboxException, SecretException

    name = f"k-{uuid.uuid4().hex[:8]}"
    first, value = f"v1-{uuid.uuid4().hex}", f"v2-{uuid.uuid4().hex}"
    made = Secret.create(name, first, metadata={"team": "a"})
    assert made.name == name and made.version == 1 and made.secret_id and made.metadata == {"team": "a"}
    with pytest.raises(SecretException):
        Secret.create(name, "again")
    assert Secret.exists(name) and Secret.exists(made.secret_id)
    updated = Secret.update(made.secret_id, value)
    assert updated.version == 2 and updated.metadata == {"team": "a"}
    assert Secret.get_info(name).version == 2
    pages = Secret.list(limit=1)
    listed = []
    while pages.has_next:
        listed += pages.next_items()
    assert name in [s.name for s in listed]
    assert first not in json.dumps(raw(e2b_env, "GET", "/secrets").json())

    rule = {"allowed.test": [{"transform": {"headers": {"X-Api-Key": "key=" + Secret.fill(name)}}}]}
    with pytest.raises(SandboxException) as refused:
        E2bSandbox.create(template="base", network={"rules": {"allowed.test": [
            {"transform": {"headers": {"X-Api-Key": Secret.fill("no-such-secret")}}}]}})
    assert "no-such-secret" in str(refused.value)

    sb = E2bSandbox.create(template="base", network={
        "allow_out": ["allowed.test"], "deny_out": ["0.0.0.0/0"], "rules": rule})
    late = E2bSandbox.create(template="base")
    try:
        # The rule's host gets the header with the value, replacing the sandbox's own; the same
        # placeholder written by the sandbox in another header stays as it is.
        got = rule_request(sb, "https://allowed.test/", Secret.fill(name))
        assert got.get("status") == 200, got
        assert got["headers"]["x-api-key"] == "key=" + value, got
        assert got["headers"]["x-echo"] == Secret.fill(name), got
        leak = sb.commands.run(f"grep -rl {value} /etc /tmp /root /home /proc/[0-9]*/environ 2>/dev/null | head -3; true").stdout
        assert leak.strip() == "", leak
        # A running sandbox given the rule at runtime: TLS to the host is now terminated with
        # the node's CA, which the update put in its trust store.
        late.files.write("/tmp/upstream-ca.pem", upstream["ca"])
        late.commands.run("cat /tmp/upstream-ca.pem >> /etc/ssl/certs/ca-certificates.crt", user="root")
        late.update_network({"rules": rule})
        got = rule_request(late, "https://allowed.test/", "-")
        assert got.get("status") == 200 and got["headers"]["x-api-key"] == "key=" + value, got
        late.update_network({"allow_out": ["allowed.test"], "deny_out": ["0.0.0.0/0"]})
        got = rule_request(late, "https://allowed.test/", "-")
        assert got.get("status") == 200 and got["headers"]["x-api-key"] == "mine", got
        trail = raw(e2b_env, "GET", f"/v1/audit?sandbox_id={sb.sandbox_id}&action=egress&limit=500").json()["data"]
        assert any(f"secret {name} put in header x-api-key by rule" in e["outcome"] for e in trail), trail
        assert value not in json.dumps(trail)
    finally:
        sb.kill()
        late.kill()
    assert Secret.destroy(name) and not Secret.destroy(name) and not Secret.exists(name)
    time.sleep(0.3)
    log = open(e2b_env["log"], "rb").read()
    assert value.encode() not in log and first.encode() not in log
