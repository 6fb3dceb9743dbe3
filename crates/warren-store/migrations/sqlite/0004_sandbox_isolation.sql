-- The isolation tier a sandbox runs on (namespaces, gvisor, ...).
ALTER TABLE sandboxes ADD COLUMN isolation TEXT NOT NULL DEFAULT 'namespaces';
