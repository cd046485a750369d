//! Discovery against local HTTP servers on loopback (plain HTTP allowed there for the test).

use std::time::Duration;

use axum::{Router, http::StatusCode, response::Redirect, routing::get};
use p256::ecdsa::SigningKey;
use verifier::signature;

use super::*;

fn pem(seed: u8) -> String {
    let mut bytes = [seed; 32];
    bytes[0] = 1;
    let key = SigningKey::from_slice(&bytes).unwrap();
    signature::public_key_to_pem(key.verifying_key()).unwrap()
}

/// Serves `router` on 127.0.0.1, bound before the test connects.
async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    format!("http://{addr}")
}

fn client() -> DiscoveryClient {
    DiscoveryClient::new(Duration::from_secs(5), true).unwrap()
}

#[tokio::test]
async fn discovers_the_key_and_every_revocation() {
    let revoked_standalone =
        signature::fingerprint(&signature::public_key_from_pem(&pem(3)).unwrap()).unwrap();
    let base = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let document = serde_json::json!({
            "schema_version": "1.2",
            "developer_name": "Example Tools",
            "public_key_pem": pem(1),
            "revoked_keys": ["sha256:old"],
            "revocation_endpoint": format!("{base}/revocations"),
        })
        .to_string();
        let revocations = serde_json::json!({
            "schemapin_version": "1.2",
            "domain": "example.com",
            "updated_at": "2026-11-01T00:00:00Z",
            "revoked_keys": [{"fingerprint": revoked_standalone, "revoked_at": "2026-10-01T00:00:00Z", "reason": "key_compromise"}],
        })
        .to_string();
        let router = Router::new()
            .route(
                "/.well-known/schemapin.json",
                get(move || async move { document }),
            )
            .route("/revocations", get(move || async move { revocations }));
        tokio::spawn(async move { axum::serve(listener, router).await });
        base
    };
    let client = client();
    let document = client.discover(&base).await.unwrap();
    assert_eq!(document.developer_name.as_deref(), Some("Example Tools"));
    assert_eq!(document.public_key_pem, pem(1));
    let revoked = client.revoked_keys(&document).await.unwrap();
    assert!(revoked.contains("sha256:old"));
    assert!(revoked.contains(&revoked_standalone));
}

#[tokio::test]
async fn an_unreadable_revocation_endpoint_fails_closed() {
    let base = serve(Router::new().route(
        "/revocations",
        get(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
    ))
    .await;
    let document = DiscoveryDocument {
        schema_version: "1.2".into(),
        public_key_pem: pem(1),
        developer_name: None,
        contact: None,
        revoked_keys: vec![],
        revocation_endpoint: Some(format!("{base}/revocations")),
    };
    assert!(matches!(
        client().revoked_keys(&document).await,
        Err(DiscoveryError::Status { status: 500, .. })
    ));
}

#[tokio::test]
async fn bad_documents_oversize_bodies_and_private_redirects_are_refused() {
    let base = serve(Router::new().route(
        "/.well-known/schemapin.json",
        get(|| async { "{\"schema_version\": \"1.2\"}" }),
    ))
    .await;
    assert!(matches!(
        client().discover(&base).await,
        Err(DiscoveryError::Invalid { .. })
    ));

    let base = serve(Router::new().route(
        "/.well-known/schemapin.json",
        get(|| async {
            serde_json::json!({"schema_version": "1.2", "public_key_pem": "garbage"}).to_string()
        }),
    ))
    .await;
    let err = client().discover(&base).await.unwrap_err();
    assert!(err.to_string().contains("public_key_pem"), "{err}");

    let base = serve(Router::new().route(
        "/.well-known/schemapin.json",
        get(|| async { "x".repeat(MAX_DOCUMENT_BYTES + 1) }),
    ))
    .await;
    assert!(matches!(
        client().discover(&base).await,
        Err(DiscoveryError::TooLarge { .. })
    ));

    // A redirect to the cloud metadata address is not followed.
    let base = serve(Router::new().route(
        "/.well-known/schemapin.json",
        get(|| async { Redirect::temporary("https://169.254.169.254/latest/meta-data") }),
    ))
    .await;
    assert!(matches!(
        client().discover(&base).await,
        Err(DiscoveryError::Http { .. })
    ));
}

#[tokio::test]
async fn plain_http_is_refused_except_to_loopback_when_enabled() {
    let strict = DiscoveryClient::new(Duration::from_secs(5), false).unwrap();
    assert!(matches!(
        strict.well_known_url("http://127.0.0.1:9"),
        Err(DiscoveryError::Insecure(_))
    ));
    assert!(matches!(
        client().well_known_url("http://example.com"),
        Err(DiscoveryError::Insecure(_))
    ));
    assert_eq!(
        client().well_known_url("example.com").unwrap().as_str(),
        "https://example.com/.well-known/schemapin.json"
    );
    assert!(matches!(
        client().well_known_url("https://"),
        Err(DiscoveryError::BadDomain(_))
    ));
}
