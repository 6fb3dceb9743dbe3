-- E2B's sandbox metadata (a JSON object of strings) and the per-sandbox egress policy (JSON:
-- allow_out / deny_out CIDR lists), both set at create.
ALTER TABLE sandboxes ADD COLUMN metadata TEXT;
ALTER TABLE sandboxes ADD COLUMN egress TEXT;
