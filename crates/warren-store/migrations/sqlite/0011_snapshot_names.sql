-- E2B's snapshot calls: a snapshot may have a name, and a fork's snapshot is the fork's own,
-- removed once no copy runs from it.
ALTER TABLE snapshots ADD COLUMN name TEXT;
ALTER TABLE snapshots ADD COLUMN ephemeral INTEGER NOT NULL DEFAULT 0;
