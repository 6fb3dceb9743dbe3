-- Built templates: how to run them (layers, env, workdir, start and ready commands; JSON owned by
-- the control plane) and when their build ran.
ALTER TABLE templates ADD COLUMN spec TEXT;
ALTER TABLE templates ADD COLUMN build_started_at INTEGER;
ALTER TABLE templates ADD COLUMN build_finished_at INTEGER;
