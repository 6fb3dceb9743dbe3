-- Persistent volumes: a tenant's named storage that outlives sandboxes (warren-api's `volumes`).
-- The files live with the volume backend; this table is the index and the quota.
CREATE TABLE volumes (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    quota_bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant, name)
);
