-- What happens at a sandbox's timeout: NULL kills it, 'pause' pauses it (E2B's autoPause).
ALTER TABLE sandboxes ADD COLUMN on_timeout TEXT;
