-- API keys of clients. Only the SHA-256 of a key is stored: a key is 256 random bits, so a
-- fast hash is as strong as a slow one, and the key itself is shown once, when it is created.
CREATE TABLE IF NOT EXISTS api_keys (
    key_hash TEXT PRIMARY KEY,
    client TEXT NOT NULL,
    -- The client's groups, as a JSON array of strings.
    groups TEXT NOT NULL,
    -- The first characters of the key, so a person can tell keys apart in `clients list`.
    prefix TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX IF NOT EXISTS api_keys_client ON api_keys (client);
