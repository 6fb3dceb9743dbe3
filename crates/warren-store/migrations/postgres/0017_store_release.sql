-- The release that last opened this store. A release that finds the store migrated past the
-- migrations it knows (a downgrade) names this one when it refuses to start.
CREATE TABLE store_release (
    id BIGINT PRIMARY KEY,
    version TEXT NOT NULL,
    schema_version BIGINT NOT NULL,
    opened_at BIGINT NOT NULL
);
