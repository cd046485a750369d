//! Arguments checked against a tool's `inputSchema` before they leave the gateway, and
//! structured results against its `outputSchema`.
//!
//! A validator is compiled once per tool definition (keyed by the definition hash the
//! verification step computed) and reused for every call until the definition changes. Schemas
//! are compiled without any way to fetch: a remote `$ref` is an error, never a request, so a
//! tool's schema cannot make the gateway reach a URL.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use jsonschema::Validator;
use serde_json::Value;

/// Above this many compiled validators the cache is emptied (tool definitions changed often,
/// or there are very many tools); they are compiled again as calls come.
const CACHE_LIMIT: usize = 10_000;

/// Why values did not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// JSON Pointer into the value (`/items/0/name`; empty for the whole value).
    pub path: String,
    /// The schema keyword that failed (`type`, `required`, `maxLength`, ...).
    pub rule: String,
    /// JSON Pointer into the schema.
    pub schema_path: String,
    pub message: String,
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let path = if self.path.is_empty() {
            "(root)"
        } else {
            &self.path
        };
        write!(f, "{path}: {} (rule `{}`)", self.message, self.rule)
    }
}

/// Compiled validators, by definition hash and which schema.
#[derive(Default)]
pub struct Validators {
    cache: Mutex<HashMap<(String, Which), Compiled>>,
}

/// A compiled validator, or why the schema cannot be compiled (remembered too, so a broken
/// schema is not compiled again on every call).
type Compiled = Result<Arc<Validator>, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Which {
    Input,
    Output,
}

impl Validators {
    /// Checks `arguments` against `schema`, the `inputSchema` of the definition with `hash`.
    pub fn check_input(
        &self,
        hash: &str,
        schema: &serde_json::Map<String, Value>,
        arguments: &Value,
    ) -> Result<(), Invalid> {
        self.check(hash, Which::Input, schema, arguments)
    }

    /// Checks a structured result against `schema`, the definition's `outputSchema`.
    pub fn check_output(
        &self,
        hash: &str,
        schema: &serde_json::Map<String, Value>,
        result: &Value,
    ) -> Result<(), Invalid> {
        self.check(hash, Which::Output, schema, result)
    }

    fn check(
        &self,
        hash: &str,
        which: Which,
        schema: &serde_json::Map<String, Value>,
        value: &Value,
    ) -> Result<(), Invalid> {
        let validator = self
            .validator(hash, which, schema)
            .map_err(|message| Invalid {
                path: String::new(),
                rule: "$schema".into(),
                schema_path: String::new(),
                message: format!("the tool's schema cannot be used: {message}"),
            })?;
        validator.validate(value).map_err(|e| Invalid {
            path: e.instance_path().to_string(),
            rule: e
                .schema_path()
                .to_string()
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned(),
            schema_path: e.schema_path().to_string(),
            message: e.to_string(),
        })
    }

    fn validator(
        &self,
        hash: &str,
        which: Which,
        schema: &serde_json::Map<String, Value>,
    ) -> Result<Arc<Validator>, String> {
        let key = (hash.to_owned(), which);
        if let Some(found) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return found.clone();
        }
        // Compiled outside the lock: a large schema must not stall other calls.
        let compiled = jsonschema::validator_for(&Value::Object(schema.clone()))
            .map(Arc::new)
            .map_err(|e| e.to_string());
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(key, compiled.clone());
        compiled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn failures_name_the_path_and_the_rule() {
        let validators = Validators::default();
        let s = schema(serde_json::json!({
            "type": "object",
            "properties": {
                "count": {"type": "integer", "maximum": 10},
                "items": {"type": "array", "items": {"type": "string"}}
            },
            "required": ["count"]
        }));
        assert!(
            validators
                .check_input("h1", &s, &serde_json::json!({"count": 3}))
                .is_ok()
        );
        let e = validators
            .check_input("h1", &s, &serde_json::json!({"count": "x"}))
            .unwrap_err();
        assert_eq!((e.path.as_str(), e.rule.as_str()), ("/count", "type"));
        let e = validators
            .check_input(
                "h1",
                &s,
                &serde_json::json!({"count": 1, "items": ["a", 2]}),
            )
            .unwrap_err();
        assert_eq!((e.path.as_str(), e.rule.as_str()), ("/items/1", "type"));
        let e = validators
            .check_input("h1", &s, &serde_json::json!({}))
            .unwrap_err();
        assert_eq!((e.path.as_str(), e.rule.as_str()), ("", "required"));
        assert!(e.to_string().contains("count"), "{e}");
        let e = validators
            .check_input("h1", &s, &serde_json::json!({"count": 11}))
            .unwrap_err();
        assert_eq!(e.rule, "maximum");
    }

    #[test]
    fn a_remote_ref_is_refused_not_fetched() {
        let validators = Validators::default();
        let s = schema(serde_json::json!({"$ref": "https://example.invalid/schema.json"}));
        let e = validators
            .check_input("h2", &s, &serde_json::json!({}))
            .unwrap_err();
        assert!(e.message.contains("cannot be used"), "{e}");
    }

    #[test]
    fn validators_are_compiled_once_per_definition() {
        let validators = Validators::default();
        let s = schema(serde_json::json!({"type": "object"}));
        for _ in 0..3 {
            validators
                .check_input("h3", &s, &serde_json::json!({}))
                .unwrap();
        }
        assert_eq!(validators.cache.lock().unwrap().len(), 1);
        // The same hash with another schema is the same definition: the cached one is used.
        let other = schema(serde_json::json!({"type": "string"}));
        assert!(
            validators
                .check_input("h3", &other, &serde_json::json!({}))
                .is_ok()
        );
    }
}
