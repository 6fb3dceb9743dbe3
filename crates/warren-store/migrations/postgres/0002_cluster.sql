-- Many machines: which node runs a sandbox (NULL: the control plane's own) and in which region,
-- the nodes that joined, and settings every control plane shares (the token signing key).
ALTER TABLE sandboxes ADD COLUMN node_id TEXT;
ALTER TABLE sandboxes ADD COLUMN region TEXT;
CREATE INDEX sandboxes_node ON sandboxes(node_id, status);

CREATE TABLE nodes (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    api_url     TEXT NOT NULL,
    public_host TEXT NOT NULL,
    labels      TEXT NOT NULL,
    report      TEXT NOT NULL,
    state       TEXT NOT NULL,
    key_hash    TEXT NOT NULL,
    joined_at   BIGINT NOT NULL,
    last_seen   BIGINT NOT NULL
);

CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
