//! Fuzzes canonicalization: any input either fails cleanly or yields a fixed point.

#![no_main]

use libfuzzer_sys::fuzz_target;
use verifier::canonical::canonicalize;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(once) = canonicalize(text) {
        assert_eq!(canonicalize(&once).as_deref(), Ok(once.as_str()));
    }
});
