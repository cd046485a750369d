//! The front doors: where clients reach the gateway.
//!
//! **Architecture Invariant:** only this module listens on the host's network (the sandbox
//! runner listens only inside a sandbox).

pub mod http;
pub mod sessions;
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

/// Methods the 2026-07-28 era removed. A client of that era that sends one gets -32601 (and HTTP
/// 404), as SEP-2575 requires, whatever its params.
const REMOVED_IN_2026_07_28: &[&str] = &[
    "initialize",
    "ping",
    "logging/setLevel",
    "resources/subscribe",
    "resources/unsubscribe",
];

/// Whether `method` is a request method of the protocol in the client's era (see
/// [`CLIENT_METHODS`]); `modern` is a 2026-07-28 client.
pub fn is_client_method(method: &str, modern: bool) -> bool {
    CLIENT_METHODS.contains(&method) && !(modern && REMOVED_IN_2026_07_28.contains(&method))
}

#[cfg(test)]
mod tests {
    use super::is_client_method;

    #[test]
    fn methods_belong_to_their_era() {
        assert!(is_client_method("tools/call", false));
        assert!(is_client_method("tools/call", true));
        assert!(is_client_method("initialize", false));
        // Removed in 2026-07-28: such a client gets "method not found", as SEP-2575 says.
        for removed in [
            "initialize",
            "ping",
            "logging/setLevel",
            "resources/subscribe",
        ] {
            assert!(!is_client_method(removed, true), "{removed}");
        }
        assert!(!is_client_method("tools/teleport", false));
    }
}
