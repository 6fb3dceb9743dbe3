-- Live restore: what a restarted server needs to take a running sandbox over (the runtime's
-- handle, opaque JSON) and to keep its public_host (its listener's port), and why the server
-- ended a sandbox it could not take over.
ALTER TABLE sandboxes ADD COLUMN runtime_handle TEXT;
ALTER TABLE sandboxes ADD COLUMN listen_port INTEGER;
ALTER TABLE sandboxes ADD COLUMN status_reason TEXT;
