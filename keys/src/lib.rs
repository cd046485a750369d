//! Key material and trust: key generation and storage, fingerprints, and (to come, with the
//! tool-verification issue) the TOFU pin store, trust bundles, revocation lists and
//! `.well-known` discovery.
//!
//! **Architecture Invariant:** every pin change is an audited event.

pub mod bundle;
mod db;
pub mod definitions;
pub mod discovery;
pub mod material;
pub mod pins;
pub mod revocations;
