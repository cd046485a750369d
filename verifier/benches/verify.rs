//! Cold verification of one tool: canonicalize its definition, hash it, check the signature.
//! `cargo bench -p mcp-gateway-verifier`; figures in docs/benchmarks.md.

#![allow(clippy::unwrap_used, reason = "a benchmark panics on broken fixtures")]

use p256::ecdsa::SigningKey;
use verifier::{canonical, definition_hash, signature};

fn main() {
    divan::main();
}

/// A realistic tool definition: a few properties, nested schema, annotations, unicode.
const TOOL: &str = r#"{"name":"search_issues","title":"Search issues","description":"Search the issue tracker by text, label and state. Returns at most `limit` issues, newest first. é 😀","inputSchema":{"type":"object","properties":{"query":{"type":"string","minLength":1},"labels":{"type":"array","items":{"type":"string"}},"state":{"enum":["open","closed","all"],"default":"open"},"limit":{"type":"integer","minimum":1,"maximum":100,"default":20}},"required":["query"]},"annotations":{"readOnlyHint":true,"openWorldHint":true}}"#;

fn key() -> SigningKey {
    let mut seed = [42u8; 32];
    seed[0] = 1;
    SigningKey::from_slice(&seed).unwrap()
}

#[divan::bench]
fn canonicalize_tool() -> String {
    canonical::canonicalize(divan::black_box(TOOL)).unwrap()
}

#[divan::bench]
fn definition_hash_of_tool() -> String {
    definition_hash(divan::black_box(TOOL)).unwrap()
}

#[divan::bench]
fn verify_tool_cold(bencher: divan::Bencher) {
    let key = key();
    let hash = signature::schema_hash(&canonical::canonicalize(TOOL).unwrap());
    let sig = signature::sign(&hash, &key);
    let public = *key.verifying_key();
    bencher.bench(|| {
        let canonical = canonical::canonicalize(divan::black_box(TOOL)).unwrap();
        let hash = signature::schema_hash(&canonical);
        // With the key's fingerprint, for the pin, as the gateway checks.
        signature::verify_proof(&hash, divan::black_box(&sig), &public, false).unwrap()
    });
}
