-- The newest retention record says where each chain now starts (`audit/retention.rs`, `bases`).
-- `audit verify` and every retention look it up; without this index each lookup read the body of
-- every record (3 s of a 1,000,000-record verify). The WHERE clause is the lookup's own, so both
-- SQLite and Postgres use the index for it. The few retention records are all it holds.
CREATE INDEX IF NOT EXISTS audit_records_retention ON audit_records (at, writer, seq)
    WHERE body LIKE '%"kind":"retention"%';
