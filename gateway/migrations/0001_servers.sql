-- Registered upstream servers. Servers from gateway.toml are recorded on every start
-- (source 'config', secrets left out); servers registered with `mcp-gateway import-servers`
-- live only here (source 'import', the entry as the client's file wrote it).
CREATE TABLE IF NOT EXISTS servers (
    name TEXT PRIMARY KEY,
    source TEXT NOT NULL,
    spec TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
