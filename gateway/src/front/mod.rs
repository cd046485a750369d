//! The front doors: where clients reach the gateway.
//!
//! **Architecture Invariant:** the gateway crate is the only one that listens on a socket, and
//! only here.

pub mod http;
pub mod stdio;
