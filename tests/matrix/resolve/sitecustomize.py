"""Stands in for wildcard DNS in the matrix's domain session (test_e2b_domain.py): with
WARREN_TEST_RESOLVE_DOMAIN set, every name under that domain resolves to 127.0.0.1, where the
test's HTTPS server listens. Loaded by Python at start-up from PYTHONPATH, before the SDK, so the
SDK's own code is unchanged; TLS still checks the certificate against the real name."""
import os
import socket

_domain = os.environ.get("WARREN_TEST_RESOLVE_DOMAIN", "").strip(".")

if _domain:
    _getaddrinfo = socket.getaddrinfo

    def _resolve(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name and (name == _domain or name.endswith("." + _domain)):
            host = "127.0.0.1"
        return _getaddrinfo(host, *args, **kwargs)

    socket.getaddrinfo = _resolve
