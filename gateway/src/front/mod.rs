//! The front doors: where clients reach the gateway.
//!
//! **Architecture Invariant:** only this module listens on the host's network (the sandbox
//! runner listens only inside a sandbox).

pub mod http;
pub mod stdio;

/// The requests a client may send in either era of the protocol (rmcp's `ClientRequest`). One of these whose params do
/// not fit its method reaches the handler as a custom request; it is answered -32602 (invalid
/// params), not -32601 (method not found), which would tell the client the method is missing.
const CLIENT_METHODS: &[&str] = &[
    "initialize",
    "ping",
    "server/discover",
    "completion/complete",
    "logging/setLevel",
    "prompts/get",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "resources/read",
    "resources/directory/read",
    "resources/subscribe",
    "resources/unsubscribe",
    "subscriptions/listen",
    "tools/call",
    "tools/list",
    "tasks/get",
    "tasks/update",
    "tasks/cancel",
    "skills/list",
    "skills/get",
];

/// Whether `method` is a request method of the protocol (see [`CLIENT_METHODS`]).
pub fn is_client_method(method: &str) -> bool {
    CLIENT_METHODS.contains(&method)
}
