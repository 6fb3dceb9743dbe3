CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    -- The first characters of the key, shown in listings so a user can tell keys apart.
    prefix      TEXT NOT NULL,
    -- SHA-256 of the whole key. Keys are 256-bit random strings, so a fast hash is enough:
    -- there is nothing to brute-force.
    hash        TEXT NOT NULL UNIQUE,
    created_at  INTEGER NOT NULL,
    revoked_at  INTEGER
);

CREATE TABLE templates (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    display_name  TEXT NOT NULL,
    description   TEXT,
    category      TEXT,
    language      TEXT,
    vcpu          INTEGER NOT NULL,
    memory_mb     INTEGER NOT NULL,
    disk_mb       INTEGER NOT NULL,
    status        TEXT NOT NULL,
    is_public     INTEGER NOT NULL,
    error_message TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);

CREATE TABLE sandboxes (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    template_id     TEXT NOT NULL,
    template_name   TEXT NOT NULL,
    status          TEXT NOT NULL,
    vcpu            INTEGER NOT NULL,
    memory_mb       INTEGER NOT NULL,
    disk_mb         INTEGER NOT NULL,
    internet_access INTEGER NOT NULL,
    timeout_seconds INTEGER,
    expires_at      INTEGER,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    key_id          TEXT
);

CREATE INDEX sandboxes_status ON sandboxes(status);
