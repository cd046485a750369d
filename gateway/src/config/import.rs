//! Reading the `mcpServers` JSON that Claude Desktop, Cursor and VS Code use, unchanged.
//!
//! Claude Desktop and Cursor write `{"mcpServers": {NAME: {command, args, env} | {url}}}`; VS Code
//! writes `{"servers": {NAME: {type, command, args, env} | {type, url, headers}}}`. Keys those
//! clients add for their own use (`disabled`, `autoApprove`, ...) are accepted and ignored, since
//! the point is to take the file as it is.

use std::{collections::BTreeMap, path::Path};

use serde::Deserialize;

use super::raw::RawServer;

#[derive(Debug, Deserialize)]
struct McpServersFile {
    #[serde(rename = "mcpServers", alias = "servers")]
    servers: Option<BTreeMap<String, ClientServerEntry>>,
}

#[derive(Debug, Deserialize)]
struct ClientServerEntry {
    command: Option<String>,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    cwd: Option<String>,
    url: Option<String>,
    #[serde(rename = "type")]
    transport: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    disabled: bool,
}

/// Why an `mcpServers` file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    // The error is in the message, and not also a `source` that `{:#}` would print again.
    #[error("{file}: cannot read: {error}")]
    Read { file: String, error: std::io::Error },
    #[error("{file}: {error}")]
    Parse {
        file: String,
        line: usize,
        column: usize,
        error: serde_json::Error,
    },
    #[error("{file}: no `mcpServers` (or `servers`) object, so no server to import")]
    NoServers { file: String },
    #[error("{file}: server name `{name}` cannot be turned into a valid server name")]
    BadName { file: String, name: String },
    #[error("{file}: servers `{first}` and `{second}` both become `{name}`")]
    Collision {
        file: String,
        first: String,
        second: String,
        name: String,
    },
}

/// Reads a client's `mcpServers` file into raw server entries keyed by gateway server name.
pub fn read_mcp_servers(path: &Path) -> Result<Vec<(String, RawServer)>, ImportError> {
    let file = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|error| ImportError::Read {
        file: file.clone(),
        error,
    })?;
    parse_mcp_servers(&file, &text)
}

/// Parses the text of an `mcpServers` file; `file` is used in error messages.
pub fn parse_mcp_servers(file: &str, text: &str) -> Result<Vec<(String, RawServer)>, ImportError> {
    // Windows editors start a UTF-8 file with a byte-order mark, which JSON does not allow.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let parsed: McpServersFile =
        serde_json::from_str(text).map_err(|error| ImportError::Parse {
            file: file.to_owned(),
            line: error.line(),
            column: error.column(),
            error,
        })?;
    let Some(servers) = parsed.servers else {
        return Err(ImportError::NoServers {
            file: file.to_owned(),
        });
    };
    let mut out: Vec<(String, RawServer)> = Vec::new();
    let mut origin: BTreeMap<String, String> = BTreeMap::new();
    for (original, entry) in servers {
        let name = slug(&original).ok_or_else(|| ImportError::BadName {
            file: file.to_owned(),
            name: original.clone(),
        })?;
        if let Some(first) = origin.insert(name.clone(), original.clone()) {
            return Err(ImportError::Collision {
                file: file.to_owned(),
                first,
                second: original,
                name,
            });
        }
        let transport = match entry.transport.as_deref() {
            // VS Code names the local transport explicitly; our config infers it from `command`.
            Some("stdio") | None => None,
            Some("http") => Some("streamable-http".to_owned()),
            Some(other) => Some(other.to_owned()),
        };
        out.push((
            name,
            RawServer {
                command: entry.command,
                args: entry.args,
                env: entry.env,
                cwd: entry.cwd,
                url: entry.url,
                transport,
                headers: entry.headers,
                enabled: Some(!entry.disabled),
                ..RawServer::default()
            },
        ));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Turns a client's display name ("My Server", "github_tools") into a gateway server name.
pub fn slug(name: &str) -> Option<String> {
    let mut out = String::new();
    for c in name.trim().chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    while out.ends_with('-') {
        out.pop();
    }
    while out.starts_with(|c: char| c.is_ascii_digit()) {
        out.remove(0);
    }
    out.truncate(63);
    while out.ends_with('-') {
        out.pop();
    }
    (!out.is_empty()).then_some(out)
}
