-- Idempotency-Key of sandbox creates: a retried create with the same key (per tenant, for a day)
-- gets the sandbox the first one made. sandbox_id is NULL while that first request runs.
CREATE TABLE idempotency_keys (
    tenant TEXT NOT NULL,
    idem_key TEXT NOT NULL,
    request_sha256 TEXT NOT NULL,
    sandbox_id TEXT,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (tenant, idem_key)
);
