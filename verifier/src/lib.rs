//! SchemaPin verification: canonical JSON, ECDSA P-256 signatures and the verification decision.
//!
//! Nothing is implemented here yet: tool verification is tracked by its own issue, and the gateway
//! does not claim to verify anything until this crate does. The gateway's call pipeline has the
//! step where the verdict will be consulted (`gateway::pipeline`).
//!
//! **Architecture Invariant:** this crate does no I/O. It takes bytes and keys and returns a verdict.
