-- Trust-on-first-use pins of SchemaPin keys, one per tool and publisher domain. A row is written
-- only after a signature made with the key has verified (see keys::pins).
CREATE TABLE IF NOT EXISTS key_pins (
    tool_id TEXT NOT NULL,
    domain TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    public_key_pem TEXT NOT NULL,
    first_seen BIGINT NOT NULL,
    last_verified BIGINT NOT NULL,
    approved_by TEXT,
    PRIMARY KEY (tool_id, domain)
);
