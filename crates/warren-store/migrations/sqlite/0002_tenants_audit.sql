-- Tenants (organizations) are names: every key, sandbox and private template belongs to one.
ALTER TABLE api_keys ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
-- 'admin' may manage keys and read the audit trail of its tenant; 'member' may not.
ALTER TABLE api_keys ADD COLUMN role TEXT NOT NULL DEFAULT 'admin';
-- 'live' or 'test', also visible in the key's prefix (wrn_live_ / wrn_test_).
ALTER TABLE api_keys ADD COLUMN environment TEXT NOT NULL DEFAULT 'live';
ALTER TABLE api_keys ADD COLUMN expires_at INTEGER;
-- A revoked_at in the future is a rotation grace period: the key works until then.

ALTER TABLE sandboxes ADD COLUMN tenant TEXT NOT NULL DEFAULT 'default';
CREATE INDEX sandboxes_tenant ON sandboxes(tenant, seq);

-- NULL: shared by every tenant (the built-in templates).
ALTER TABLE templates ADD COLUMN tenant TEXT;

CREATE TABLE audit_events (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    at           INTEGER NOT NULL,          -- unix milliseconds
    tenant       TEXT NOT NULL,
    key_id       TEXT,                       -- the key's id, never the key
    sandbox_id   TEXT,
    action       TEXT NOT NULL,              -- e.g. sandbox.create, execute, files.write, key.rotate
    input_bytes  INTEGER,
    input_sha256 TEXT,                       -- of the request body: identifies input without storing it
    outcome      TEXT NOT NULL,              -- ok | failed | denied | error, plus detail
    status_code  INTEGER,
    duration_ms  INTEGER NOT NULL,
    request_id   TEXT
);
CREATE INDEX audit_tenant_seq ON audit_events(tenant, seq);
CREATE INDEX audit_at ON audit_events(at);
