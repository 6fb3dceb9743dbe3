-- E2B's secrets API: each secret has an id, a version counted up by every new value, and
-- customer metadata (JSON object).
ALTER TABLE secrets ADD COLUMN id TEXT NOT NULL DEFAULT '';
ALTER TABLE secrets ADD COLUMN version BIGINT NOT NULL DEFAULT 1;
ALTER TABLE secrets ADD COLUMN metadata TEXT NOT NULL DEFAULT '{}';
UPDATE secrets SET id = md5(random()::text || tenant || name) WHERE id = '';
