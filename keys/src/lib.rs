//! Key material and trust: key generation and loading, fingerprints, the TOFU pin store, trust
//! bundles, revocation lists and `.well-known` discovery.
//!
//! Nothing is implemented here yet; the tool-verification issue fills this crate.
//!
//! **Architecture Invariant:** every pin change is an audited event.
