// Stands in for wildcard DNS in the matrix's domain session (test_e2b_domain.py): with
// WARREN_TEST_RESOLVE_DOMAIN set, every name under that domain resolves to 127.0.0.1, where the
// test's HTTPS server listens. Preloaded with `node --import`, before the SDK, so the SDK's own
// code is unchanged; TLS still checks the certificate against the real name.
import dns from "node:dns";

const domain = (process.env.WARREN_TEST_RESOLVE_DOMAIN || "").replace(/^\.+|\.+$/g, "");
if (domain) {
  const lookup = dns.lookup;
  dns.lookup = function (host, options, callback) {
    if (host === domain || String(host).endsWith(`.${domain}`)) host = "127.0.0.1";
    return lookup.call(this, host, options, callback);
  };
}
