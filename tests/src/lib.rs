//! Helpers shared by the end-to-end tests: starting the gateway and fixture servers on loopback.
