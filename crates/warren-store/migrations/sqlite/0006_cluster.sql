-- Many machines: which node runs a sandbox (NULL: the control plane's own) and in which region,
-- the nodes that joined, and settings every control plane shares (the token signing key).
ALTER TABLE sandboxes ADD COLUMN node_id TEXT;
ALTER TABLE sandboxes ADD COLUMN region TEXT;
CREATE INDEX sandboxes_node ON sandboxes(node_id, status);

CREATE TABLE nodes (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    api_url     TEXT NOT NULL,      -- where control planes reach the node's API
    public_host TEXT NOT NULL,      -- the host in its sandboxes' public_host
    labels      TEXT NOT NULL,      -- JSON object (region, ...)
    report      TEXT NOT NULL,      -- JSON: tiers, capacity, use, templates, layers
    state       TEXT NOT NULL,      -- active | draining
    key_hash    TEXT NOT NULL,      -- SHA-256 of the node's credential
    joined_at   INTEGER NOT NULL,   -- unix seconds
    last_seen   INTEGER NOT NULL    -- unix milliseconds of the last heartbeat
);

CREATE TABLE settings (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
