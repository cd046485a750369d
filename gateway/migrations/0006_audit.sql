-- The audit trail: append-only, hash-chained per writer (one gateway process), and signed per
-- group commit by a checkpoint (see gateway/src/audit/chain.rs). Nothing updates or deletes
-- these rows; retention is an explicit, audited export.
CREATE TABLE IF NOT EXISTS audit_records (
    writer TEXT NOT NULL,
    seq BIGINT NOT NULL,
    -- Unix milliseconds of the group commit.
    at BIGINT NOT NULL,
    -- The record's canonical JSON: the bytes its hash covers.
    body TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    PRIMARY KEY (writer, seq)
);
CREATE INDEX IF NOT EXISTS audit_records_at ON audit_records (at);
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    writer TEXT NOT NULL,
    seq BIGINT NOT NULL,
    hash TEXT NOT NULL,
    at BIGINT NOT NULL,
    signature TEXT NOT NULL,
    PRIMARY KEY (writer, seq)
);
