-- Keys a person revoked locally (`mcp-gateway revoke`): a tool signed by one is rejected, whatever
-- its publisher says.
CREATE TABLE IF NOT EXISTS revoked_keys (
    fingerprint TEXT PRIMARY KEY,
    reason TEXT NOT NULL,
    revoked_at BIGINT NOT NULL,
    revoked_by TEXT NOT NULL
);
