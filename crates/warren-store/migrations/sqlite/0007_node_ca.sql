-- A node's own CA certificate (PEM), when it serves HTTPS with a generated CA: control planes
-- trust it for calls to that node only.
ALTER TABLE nodes ADD COLUMN ca_pem TEXT;
