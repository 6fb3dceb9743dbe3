-- The whole schema, as SQLite has it after all of its migrations. Integers are BIGINT and
-- booleans 0/1 BIGINTs, so that one query text serves both backends (see warren-store's lib.rs).

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    -- The first characters of the key, shown in listings so a user can tell keys apart.
    prefix      TEXT NOT NULL,
    -- SHA-256 of the whole key (keys are 256-bit random strings: nothing to brute-force).
    hash        TEXT NOT NULL UNIQUE,
    created_at  BIGINT NOT NULL,
    -- In the future: a rotation grace period; the key works until then.
    revoked_at  BIGINT,
    tenant      TEXT NOT NULL DEFAULT 'default',
    role        TEXT NOT NULL DEFAULT 'admin',
    environment TEXT NOT NULL DEFAULT 'live',
    expires_at  BIGINT
);

CREATE TABLE templates (
    id                TEXT PRIMARY KEY,
    name              TEXT NOT NULL UNIQUE,
    display_name      TEXT NOT NULL,
    description       TEXT,
    category          TEXT,
    language          TEXT,
    vcpu              BIGINT NOT NULL,
    memory_mb         BIGINT NOT NULL,
    disk_mb           BIGINT NOT NULL,
    status            TEXT NOT NULL,
    is_public         BIGINT NOT NULL,
    error_message     TEXT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    -- NULL: shared by every tenant (the built-in templates).
    tenant            TEXT,
    spec              TEXT,
    build_started_at  BIGINT,
    build_finished_at BIGINT
);

CREATE TABLE sandboxes (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id              TEXT NOT NULL UNIQUE,
    template_id     TEXT NOT NULL,
    template_name   TEXT NOT NULL,
    status          TEXT NOT NULL,
    vcpu            BIGINT NOT NULL,
    memory_mb       BIGINT NOT NULL,
    disk_mb         BIGINT NOT NULL,
    internet_access BIGINT NOT NULL,
    timeout_seconds BIGINT,
    expires_at      BIGINT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    key_id          TEXT,
    tenant          TEXT NOT NULL DEFAULT 'default',
    isolation       TEXT NOT NULL DEFAULT 'namespaces',
    runtime_handle  TEXT,
    listen_port     BIGINT,
    status_reason   TEXT
);
CREATE INDEX sandboxes_status ON sandboxes(status);
CREATE INDEX sandboxes_tenant ON sandboxes(tenant, seq);

CREATE TABLE audit_events (
    seq          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           BIGINT NOT NULL,          -- unix milliseconds
    tenant       TEXT NOT NULL,
    key_id       TEXT,                     -- the key's id, never the key
    sandbox_id   TEXT,
    action       TEXT NOT NULL,
    input_bytes  BIGINT,
    input_sha256 TEXT,                     -- of the request body, never the body itself
    outcome      TEXT NOT NULL,
    status_code  BIGINT,
    duration_ms  BIGINT NOT NULL,
    request_id   TEXT
);
CREATE INDEX audit_tenant_seq ON audit_events(tenant, seq);
CREATE INDEX audit_at ON audit_events(at);
