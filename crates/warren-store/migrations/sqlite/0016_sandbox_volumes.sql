-- Which volumes each sandbox mounts, and where: what a sandbox shows of its mounts, what a copy
-- of its snapshot mounts again, and why a volume in use cannot be deleted.
CREATE TABLE sandbox_volumes (
    sandbox_id TEXT NOT NULL,
    volume_id TEXT NOT NULL,
    path TEXT NOT NULL,
    read_only BIGINT NOT NULL,
    PRIMARY KEY (sandbox_id, path)
);
CREATE INDEX sandbox_volumes_by_volume ON sandbox_volumes (volume_id);
