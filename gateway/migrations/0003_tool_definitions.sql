-- Every tool definition the gateway has seen, by server, tool and definition hash, with its
-- state: `pinned` (served), `quarantined` (a known tool whose definition changed: hidden until a
-- person approves it), `rejected`, or `superseded` (pinned once, replaced by an approval).
CREATE TABLE IF NOT EXISTS tool_definitions (
    server TEXT NOT NULL,
    tool TEXT NOT NULL,
    definition_hash TEXT NOT NULL,
    definition TEXT NOT NULL,
    state TEXT NOT NULL,
    first_seen BIGINT NOT NULL,
    decided_at BIGINT NOT NULL,
    decided_by TEXT,
    PRIMARY KEY (server, tool, definition_hash)
);
