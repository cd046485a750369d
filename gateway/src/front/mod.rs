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

/// Checks the envelope of one JSON-RPC 2.0 message; on failure returns the id to answer with.
pub(crate) fn check_message(
    value: &serde_json::Value,
) -> Result<(), (serde_json::Value, &'static str)> {
    let Some(object) = value.as_object() else {
        return Err((
            serde_json::Value::Null,
            if value.is_array() {
                "batches are not supported"
            } else {
                "a message must be a JSON object"
            },
        ));
    };
    let id = object.get("id").cloned().unwrap_or(serde_json::Value::Null);
    let id_ok = match object.get("id") {
        None => true,
        Some(id) => id.is_string() || id.is_i64(),
    };
    if object.get("jsonrpc").and_then(|v| v.as_str()) != Some("2.0") {
        return Err((id, "`jsonrpc` must be \"2.0\""));
    }
    if !id_ok {
        return Err((
            serde_json::Value::Null,
            "`id` must be a string or a 64-bit signed integer",
        ));
    }
    let (result, error) = (object.contains_key("result"), object.contains_key("error"));
    match object.get("method") {
        Some(method) if !method.is_string() => Err((id, "`method` must be a string")),
        Some(_) if result || error => Err((id, "a request carries no `result` or `error`")),
        Some(_) => match object.get("params") {
            // `null` is taken as no params, as rmcp takes it.
            Some(params) if !params.is_object() && !params.is_null() => {
                Err((id, "`params` must be an object"))
            }
            Some(params) if params.get("_meta").is_some_and(|m| !m.is_object()) => {
                Err((id, "`params._meta` must be an object"))
            }
            _ => Ok(()),
        },
        None if result && error => Err((id, "a response carries `result` or `error`, not both")),
        None if result || error => {
            if object.contains_key("id") {
                Ok(())
            } else {
                Err((id, "a response needs an `id`"))
            }
        }
        None => Err((id, "a message needs a `method`, or a `result` or `error`")),
    }
}

/// The requests whose params rmcp reads as optional `PaginatedRequestParams`.
const PAGED_METHODS: &[&str] = &[
    "tools/list",
    "prompts/list",
    "resources/list",
    "resources/templates/list",
    "skills/list",
];

/// Checks the params of a request that passed [`check_message`] where rmcp's reading of it
/// cannot: rmcp reads the optional params of a list request through a flattened `Option`, which
/// takes params that do not fit for none at all. So `"cursor": 5` would give the client the first
/// page again (and a client paging on it would never finish). Here they are read as rmcp's own
/// `PaginatedRequestParams`. On failure returns the request's id and the message of a -32602
/// answer.
pub(crate) fn check_params(value: &serde_json::Value) -> Result<(), (serde_json::Value, String)> {
    let Some(method) = value.get("method").and_then(|m| m.as_str()) else {
        return Ok(());
    };
    let Some(params) = value.get("params").filter(|p| !p.is_null()) else {
        return Ok(());
    };
    if !PAGED_METHODS.contains(&method) {
        return Ok(());
    }
    <rmcp::model::PaginatedRequestParams as serde::Deserialize>::deserialize(params)
        .map(drop)
        .map_err(|e| {
            let id = value.get("id").cloned().unwrap_or(serde_json::Value::Null);
            (id, format!("Invalid params for `{method}`: {e}"))
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{check_message, check_params, is_client_method};

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

    #[test]
    fn envelopes() {
        let ok = [
            json!({"jsonrpc": "2.0", "id": 1, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": "a", "method": "tools/list", "params": {}}),
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            json!({"jsonrpc": "2.0", "id": 3, "result": {}}),
            json!({"jsonrpc": "2.0", "id": 3, "error": {"code": 1, "message": "x"}}),
        ];
        for message in ok {
            assert!(check_message(&message).is_ok(), "{message}");
        }
        let bad = [
            json!([{"jsonrpc": "2.0", "id": 1, "method": "ping"}]),
            json!("ping"),
            json!({"id": 1, "method": "ping"}),
            json!({"jsonrpc": "1.0", "id": 1, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": 1.5, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": {}, "method": "ping"}),
            json!({"jsonrpc": "2.0", "id": 1, "method": 7}),
            json!({"jsonrpc": "2.0", "id": 1, "method": "x", "params": [1]}),
            json!({"jsonrpc": "2.0", "id": 1}),
            json!({"jsonrpc": "2.0", "result": {}}),
            json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "result": {}}),
            json!({"jsonrpc": "2.0", "id": 1, "result": {}, "error": {"code": 1, "message": "x"}}),
            json!({"jsonrpc": "2.0", "id": 1, "method": "ping", "params": {"_meta": "x"}}),
            json!({"jsonrpc": "2.0", "id": 9_223_372_036_854_775_808_u64, "method": "ping"}),
        ];
        for message in bad {
            assert!(check_message(&message).is_err(), "{message}");
        }
    }

    #[test]
    fn a_cursor_must_be_a_string() {
        for cursor in [json!(5), json!({}), json!(["a"]), json!(true)] {
            let request = json!({"jsonrpc": "2.0", "id": 4, "method": "tools/list", "params": {"cursor": cursor}});
            let (id, message) = check_params(&request).unwrap_err();
            assert_eq!(id, json!(4));
            assert!(
                message.contains("Invalid params for `tools/list`"),
                "{message}"
            );
        }
        for request in [
            json!({"jsonrpc": "2.0", "id": 1, "method": "prompts/list", "params": {"cursor": "abc"}}),
            json!({"jsonrpc": "2.0", "id": 1, "method": "resources/list", "params": {"cursor": null}}),
            json!({"jsonrpc": "2.0", "id": 1, "method": "resources/templates/list"}),
            // Only the gateway's own lists: a tool's argument may be called `cursor`.
            json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "t", "cursor": 5}}),
        ] {
            assert!(check_params(&request).is_ok(), "{request}");
        }
    }
}
