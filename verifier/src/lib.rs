//! SchemaPin verification: canonical JSON, ECDSA P-256 signatures and tool-definition hashes.
//!
//! **Architecture Invariant:** this crate does no I/O. It takes bytes and keys and returns a
//! verdict; everything that reads files, fetches keys or stores pins lives in `keys` and
//! `gateway`.

pub mod canonical;
pub mod signature;

use crate::canonical::JsonError;

/// Where a tool's SchemaPin signature travels in MCP: the tool's `_meta`, under this key. The
/// signature covers the canonical JSON of the tool definition without its `_meta`.
pub const SIGNATURE_META_KEY: &str = "io.schemapin/signature";

/// The members of a tool definition that a client sees, and so that a pinned definition covers:
/// any change to one of them is a changed tool.
pub const DEFINITION_MEMBERS: [&str; 6] = [
    "name",
    "title",
    "description",
    "inputSchema",
    "outputSchema",
    "annotations",
];

/// `sha256:<hex>` over the canonical JSON of a tool definition's client-visible members. This is
/// what trust-on-first-use pins; it is distinct from the object a SchemaPin signature covers.
pub fn definition_hash(tool_json: &str) -> Result<String, JsonError> {
    let canonical = canonical::canonicalize_members(tool_json, &DEFINITION_MEMBERS)?;
    Ok(format!(
        "sha256:{}",
        signature::hex(&signature::schema_hash(&canonical))
    ))
}

#[cfg(test)]
mod tests {
    use super::definition_hash;

    #[test]
    fn definition_hash_covers_every_visible_member_and_nothing_else() {
        let base =
            r#"{"name":"add","description":"Add","inputSchema":{"type":"object"},"_meta":{"x":1}}"#;
        let hash = definition_hash(base).unwrap();
        // Key order, whitespace and members a client does not see do not matter...
        assert_eq!(
            definition_hash(
                r#"{ "_meta": {"x": 2}, "inputSchema": {"type": "object"}, "description": "Add", "name": "add" }"#
            ),
            Ok(hash.clone())
        );
        // ...while any visible change does.
        for changed in [
            r#"{"name":"add","description":"Add!","inputSchema":{"type":"object"}}"#,
            r#"{"name":"sum","description":"Add","inputSchema":{"type":"object"}}"#,
            r#"{"name":"add","description":"Add","inputSchema":{"type":"object","required":[]}}"#,
            r#"{"name":"add","description":"Add","inputSchema":{"type":"object"},"annotations":{"readOnlyHint":true}}"#,
            r#"{"name":"add","description":"Add","inputSchema":{"type":"object"},"title":"Add"}"#,
            r#"{"name":"add","description":"Add","inputSchema":{"type":"object"},"outputSchema":{}}"#,
        ] {
            assert_ne!(definition_hash(changed), Ok(hash.clone()), "{changed}");
        }
        assert!(definition_hash("[]").is_err());
    }
}
