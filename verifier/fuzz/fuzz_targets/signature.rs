//! Fuzzes the parsing of untrusted signatures and keys: never a panic, never a false accept.

#![no_main]

use libfuzzer_sys::fuzz_target;
use verifier::signature;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = signature::public_key_from_pem(text);
    let _ = signature::private_key_from_pem(text);
    // A fixed key: an arbitrary string must never verify as its signature over a fixed hash.
    let mut seed = [7u8; 32];
    seed[0] = 1;
    let Ok(key) = p256::ecdsa::SigningKey::from_slice(&seed) else {
        return;
    };
    let hash = signature::schema_hash("{}");
    let verdict = signature::verify(&hash, text, key.verifying_key(), true);
    assert!(verdict.is_err() || text.trim() == signature::sign(&hash, &key));
});
