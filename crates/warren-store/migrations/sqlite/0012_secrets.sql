-- Secrets brokered on the host: values sealed with the server's key (never stored in clear),
-- bound to hosts. A sandbox keeps which secrets it was given and their placeholders (not values).
CREATE TABLE secrets (
    tenant TEXT NOT NULL,
    name TEXT NOT NULL,
    sealed TEXT NOT NULL,
    hosts TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, name)
);
ALTER TABLE sandboxes ADD COLUMN secret_bindings TEXT;
