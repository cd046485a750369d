//! Interop with SchemaPin's reference implementation (`schemapin==1.3.0` from PyPI, installed
//! under `.tools/venv` by `scripts/install-test-deps.sh`): canonical strings agree byte for byte,
//! and signatures verify in both directions.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic in a test is a test failure"
)]

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use verifier::{canonical, signature};

fn tools() -> PathBuf {
    std::env::var_os("MCP_TEST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools"))
}

fn venv_bin(name: &str) -> PathBuf {
    let path = tools().join("venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-deps.sh",
        path.display()
    );
    path
}

/// Python's canonical form of each text, computed the way SchemaPin does.
fn python_canonical(texts: &[&str]) -> Vec<String> {
    let script = "import json,sys\n\
        from schemapin.core import SchemaPinCore\n\
        texts = json.load(sys.stdin)\n\
        print(json.dumps([SchemaPinCore.canonicalize_schema(json.loads(t)) for t in texts]))";
    let mut child = Command::new(venv_bin("python"))
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let input = serde_json::to_string(texts).unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    serde_json::from_slice(&output.stdout).unwrap()
}

#[test]
fn canonical_strings_match_the_reference_byte_for_byte() {
    let corpus = [
        r#"{"b": 1, "a": 2, "c": {"z": [3, 2, 1], "y": {"x": null}}}"#,
        r#"{"é": "café", "中": "文", "😀": "emoji", "e": "plain", "~": "tilde", "ｚ": "fullwidth"}"#,
        r#"{"s": "quote \" backslash \\ slash \/ controls \b\f\n\r\t \u0001 \u001f \u007f del"}"#,
        r#"{"u": "\u00e9\u4e2d\ud83d\ude00 \u2028 \u2029 \ufeff"}"#,
        r#"[1.0, 1e2, 1.5e-7, -0.0, 1e21, 1e22, 0.1, 1e16, 1e15, 0.0001, 0.00001]"#,
        r#"[123.456, 5e-324, 1.7976931348623157e308, 2.5e0, 1E+2, 3.14159265358979, 100.0, 1e-7, 9.999999999999999e22]"#,
        r#"[0, -0, 12345678901234567890123456789, -9007199254740993, 9007199254740993]"#,
        r#"{"dup": 1, "dup": 2, "nested": {"k": "first", "k": "second"}}"#,
        r#"{"name": "get_weather", "description": "Weather for a city", "inputSchema": {"type": "object", "properties": {"city": {"type": "string", "minLength": 1}, "units": {"enum": ["metric", "imperial"], "default": "metric"}}, "required": ["city"]}}"#,
        r#"[true, false, null, [], {}, [[]], {"": ""}]"#,
        r#"[NaN, Infinity, -Infinity, -1e3444, 1e400]"#,
    ];
    let python = python_canonical(&corpus);
    for (text, expected) in corpus.iter().zip(python) {
        assert_eq!(canonical::canonicalize(text).unwrap(), expected, "{text}");
    }
}

const SCHEMA: &str = r#"{"name": "calculate_sum", "description": "Add two numbers, é 😀", "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number", "default": 1.5e-7}}, "required": ["a", "b"]}}"#;

#[test]
fn a_schema_signed_by_schemapin_sign_verifies_here() {
    let dir = tempfile::tempdir().unwrap();
    let status = Command::new(venv_bin("schemapin-keygen"))
        .args(["--type", "ecdsa", "--quiet", "--output-dir"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::write(dir.path().join("schema.json"), SCHEMA).unwrap();
    let status = Command::new(venv_bin("schemapin-sign"))
        .args(["--quiet", "--no-validate", "--key"])
        .arg(dir.path().join("schemapin_private.pem"))
        .arg("--schema")
        .arg(dir.path().join("schema.json"))
        .arg("--output")
        .arg(dir.path().join("signed.json"))
        .status()
        .unwrap();
    assert!(status.success());

    let signed: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("signed.json")).unwrap())
            .unwrap();
    let public = signature::public_key_from_pem(
        &std::fs::read_to_string(dir.path().join("schemapin_public.pem")).unwrap(),
    )
    .unwrap();
    let canonical = canonical::canonicalize(&signed["schema"].to_string()).unwrap();
    let hash = signature::schema_hash(&canonical);
    let sig = signed["signature"].as_str().unwrap();
    assert_eq!(
        signature::verify(&hash, sig, &public, false),
        Ok(signature::Scheme::DoubleHash)
    );
    // The same signature over a changed schema does not verify.
    let tampered = canonical.replace("Add two", "Add three");
    assert_eq!(
        signature::verify(&signature::schema_hash(&tampered), sig, &public, false),
        Err(signature::SignatureError::Mismatch)
    );
}

#[test]
fn a_schema_signed_here_verifies_in_schemapin_verify() {
    let dir = tempfile::tempdir().unwrap();
    let mut seed = [9u8; 32];
    seed[0] = 1;
    let key = p256::ecdsa::SigningKey::from_slice(&seed).unwrap();
    std::fs::write(
        dir.path().join("public.pem"),
        signature::public_key_to_pem(key.verifying_key()).unwrap(),
    )
    .unwrap();
    let canonical = canonical::canonicalize(SCHEMA).unwrap();
    let signed = serde_json::json!({
        "schema": serde_json::from_str::<serde_json::Value>(SCHEMA).unwrap(),
        "signature": signature::sign(&signature::schema_hash(&canonical), &key),
        "signed_at": "2026-11-23T00:00:00Z",
    });
    std::fs::write(dir.path().join("signed.json"), signed.to_string()).unwrap();
    let verify = |file: &str| {
        Command::new(venv_bin("schemapin-verify"))
            .args(["--quiet", "--exit-code", "--schema"])
            .arg(dir.path().join(file))
            .arg("--public-key")
            .arg(dir.path().join("public.pem"))
            .status()
            .unwrap()
    };
    assert!(verify("signed.json").success());
    // And a tampered copy fails there too, so the check above can fail.
    let tampered = signed.to_string().replace("Add two", "Add three");
    std::fs::write(dir.path().join("tampered.json"), tampered).unwrap();
    assert!(!verify("tampered.json").success());
}
