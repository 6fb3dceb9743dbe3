-- Snapshots of running sandboxes (issue 16): a layer on disk plus how to run it.
CREATE TABLE snapshots (
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    source_sandbox_id TEXT NOT NULL,
    template_id TEXT NOT NULL,
    template_name TEXT NOT NULL,
    isolation TEXT NOT NULL,
    spec TEXT NOT NULL,
    layer_dir TEXT NOT NULL,
    size_bytes BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX snapshots_tenant ON snapshots (tenant, created_at);
-- The snapshot a sandbox was created from, if any.
ALTER TABLE sandboxes ADD COLUMN snapshot_id TEXT;
