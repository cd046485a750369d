//! The security team's commands against SchemaPin's own CLIs (`schemapin==1.3.0`, installed under
//! `.tools/venv` by `scripts/install-test-deps.sh`): keys, signatures and fingerprints carry over
//! in both directions.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic in a test is a test failure"
)]

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

fn venv_bin(name: &str) -> PathBuf {
    let tools = std::env::var_os("MCP_TEST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools"));
    let path = tools.join("venv/bin").join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/install-test-deps.sh",
        path.display()
    );
    path
}

fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str], dir: &Path) -> Output {
    Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn gateway(args: &[&str], dir: &Path) -> Output {
    run(env!("CARGO_BIN_EXE_mcp-gateway"), args, dir)
}

const TOOL: &str = r#"{"name": "get_weather", "description": "Weather for a city, é 😀", "inputSchema": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer", "default": 3, "maximum": 1e1}}, "required": ["city"], "x": 12345678901234567890123456789}}"#;

#[test]
fn our_keys_and_signatures_verify_in_schemapin_verify() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = gateway(&["keys", "generate", "--output-dir", ".", "--json"], d);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let generated: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    std::fs::write(d.join("tool.json"), TOOL).unwrap();

    let out = gateway(
        &[
            "sign",
            "--key",
            "schemapin_private.pem",
            "--schema",
            "tool.json",
            "--output",
            "signed.json",
        ],
        d,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let verify = |file: &str| {
        run(
            venv_bin("schemapin-verify"),
            &[
                "--quiet",
                "--exit-code",
                "--schema",
                file,
                "--public-key",
                "schemapin_public.pem",
            ],
            d,
        )
    };
    assert!(verify("signed.json").status.success());
    let tampered = std::fs::read_to_string(d.join("signed.json"))
        .unwrap()
        .replace("Weather for", "Whether for");
    std::fs::write(d.join("tampered.json"), tampered).unwrap();
    assert!(!verify("tampered.json").status.success());

    // Our fingerprint is SchemaPin's.
    let out = run(
        venv_bin("python"),
        &[
            "-c",
            "import sys; from schemapin.crypto import KeyManager; \
             print(KeyManager.calculate_key_fingerprint_from_pem(open(sys.argv[1]).read()))",
            "schemapin_public.pem",
        ],
        d,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        generated["fingerprint"].as_str().unwrap()
    );
    let out = gateway(
        &[
            "keys",
            "fingerprint",
            "--public-key",
            "schemapin_private.pem",
        ],
        d,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        generated["fingerprint"].as_str().unwrap()
    );
}

#[test]
fn schemapin_signatures_verify_here_and_exit_codes_tell() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    assert!(
        run(
            venv_bin("schemapin-keygen"),
            &["--quiet", "--output-dir", "."],
            d
        )
        .status
        .success()
    );
    std::fs::write(d.join("tool.json"), TOOL).unwrap();
    let out = run(
        venv_bin("schemapin-sign"),
        &[
            "--quiet",
            "--no-validate",
            "--key",
            "schemapin_private.pem",
            "--schema",
            "tool.json",
            "--output",
            "signed.json",
        ],
        d,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let out = gateway(
        &[
            "verify",
            "--schema",
            "signed.json",
            "--public-key",
            "schemapin_public.pem",
            "--json",
        ],
        d,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["valid"], true);
    assert_eq!(report["scheme"], "double-hash");

    // Another key: invalid, exit status 1.
    assert!(
        gateway(&["keys", "generate", "--prefix", "other"], d)
            .status
            .success()
    );
    let out = gateway(
        &[
            "verify",
            "--schema",
            "signed.json",
            "--public-key",
            "other_public.pem",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("invalid"));

    // Malformed inputs: a clear error naming the file, exit status 1, no panic.
    std::fs::write(
        d.join("bad.pem"),
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let out = gateway(
        &[
            "verify",
            "--schema",
            "signed.json",
            "--public-key",
            "bad.pem",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("bad.pem: not a PEM-encoded P-256 public key")
    );
    std::fs::write(
        d.join("broken.json"),
        r#"{"schema": {"a": 1}, "signature": "!!!"}"#,
    )
    .unwrap();
    let out = gateway(
        &[
            "verify",
            "--schema",
            "broken.json",
            "--public-key",
            "schemapin_public.pem",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("not valid base64"));
    std::fs::write(d.join("notjson.json"), "{").unwrap();
    let out = gateway(
        &[
            "verify",
            "--schema",
            "notjson.json",
            "--public-key",
            "schemapin_public.pem",
        ],
        d,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("notjson.json: invalid JSON"));
}

#[test]
fn pins_need_a_signature_that_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("gateway.toml"), "[storage]\ndata_dir = \"state\"\n").unwrap();
    std::fs::write(d.join("tool.json"), TOOL).unwrap();
    for prefix in ["a", "b"] {
        assert!(
            gateway(&["keys", "generate", "--prefix", prefix], d)
                .status
                .success()
        );
        let out = gateway(
            &[
                "sign",
                "--key",
                &format!("{prefix}_private.pem"),
                "--schema",
                "tool.json",
                "--output",
                &format!("{prefix}.signed.json"),
            ],
            d,
        );
        assert!(out.status.success());
    }
    let pin = |verb: &str, key: &str, signed: &str| {
        gateway(
            &[
                "pins",
                verb,
                "--tool",
                "get_weather",
                "--domain",
                "example.com",
                "--public-key",
                key,
                "--signed-schema",
                signed,
                "--by",
                "alice",
                "--json",
            ],
            d,
        )
    };
    // A key that did not sign the document is not pinned.
    let out = pin("add", "a_public.pem", "b.signed.json");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("does not verify"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list = gateway(&["pins", "list", "--json"], d);
    assert_eq!(String::from_utf8_lossy(&list.stdout).trim(), "[]");

    let out = pin("add", "a_public.pem", "a.signed.json");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let added: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let out = pin("rotate", "b_public.pem", "b.signed.json");
    let rotated: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rotated["replaced"], added["fingerprint"]);

    let list: serde_json::Value =
        serde_json::from_slice(&gateway(&["pins", "list", "--json"], d).stdout).unwrap();
    assert_eq!(list[0]["fingerprint"], rotated["fingerprint"]);
    assert_eq!(list[0]["approved_by"], "alice");

    let remove = |d: &Path| {
        gateway(
            &[
                "pins",
                "remove",
                "--tool",
                "get_weather",
                "--domain",
                "example.com",
            ],
            d,
        )
    };
    assert!(remove(d).status.success());
    assert_eq!(remove(d).status.code(), Some(1));
}

#[test]
fn trust_bundles_carry_over_between_schemapin_and_the_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("gateway.toml"), "[storage]\ndata_dir = \"state\"\n").unwrap();
    assert!(
        run(
            venv_bin("schemapin-keygen"),
            &["--quiet", "--output-dir", "."],
            d
        )
        .status
        .success()
    );
    // SchemaPin's reference builds a bundle...
    let out = run(
        venv_bin("python"),
        &[
            "-c",
            "import json\n\
             from schemapin.bundle import SchemaPinTrustBundle, create_bundled_discovery\n\
             pem = open('schemapin_public.pem').read()\n\
             doc = create_bundled_discovery('tools.example', {'schema_version': '1.2', 'public_key_pem': pem, 'developer_name': 'Example'})\n\
             bundle = SchemaPinTrustBundle('1.2', '2026-11-23T00:00:00Z', [doc], [])\n\
             open('theirs.json', 'w').write(json.dumps(bundle.to_dict()))",
        ],
        d,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // ...which the gateway imports...
    let out = gateway(&["bundle", "import", "theirs.json", "--json"], d);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(d.join("state/bundles/theirs.json").exists());
    // ...and refuses a broken one, importing nothing.
    std::fs::write(
        d.join("broken.json"),
        r#"{"schemapin_bundle_version": "1.2"}"#,
    )
    .unwrap();
    let out = gateway(&["bundle", "import", "broken.json"], d);
    assert_eq!(out.status.code(), Some(1));
    assert!(!d.join("state/bundles/broken.json").exists());
    // The reference reads back a bundle in the gateway's own serialization.
    let theirs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(d.join("theirs.json")).unwrap()).unwrap();
    let ours = keys::bundle::TrustBundle::parse(theirs.to_string().as_bytes()).unwrap();
    std::fs::write(d.join("ours.json"), serde_json::to_string(&ours).unwrap()).unwrap();
    let out = run(
        venv_bin("python"),
        &[
            "-c",
            "from schemapin.bundle import SchemaPinTrustBundle\n\
             b = SchemaPinTrustBundle.from_json(open('ours.json').read())\n\
             d = b.find_discovery('tools.example')\n\
             assert d['public_key_pem'] == open('schemapin_public.pem').read(), d\n\
             print('ok')",
        ],
        d,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
