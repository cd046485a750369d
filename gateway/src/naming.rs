//! How upstream names and URIs are presented to clients, and mapped back.
//!
//! Tools and prompts become `server{sep}name`; resource URIs and URI templates become
//! `server+uri`. A server name is lowercase letters, digits and `-` (see
//! [`crate::config::validate_server_name`]) and the separator is made of `_` and `.`, so the
//! server name always ends at the first separator or `+`: the mapping is reversible and two
//! upstreams can never produce the same client-visible name. In pass-through mode nothing is
//! prefixed and everything maps to the one upstream.

/// The client-visible naming scheme.
#[derive(Debug, Clone)]
pub struct Naming {
    separator: String,
    /// `Some(server)` in pass-through mode.
    pass_through: Option<String>,
}

impl Naming {
    pub fn prefixed(separator: impl Into<String>) -> Self {
        Self {
            separator: separator.into(),
            pass_through: None,
        }
    }

    pub fn pass_through(server: impl Into<String>) -> Self {
        Self {
            separator: String::new(),
            pass_through: Some(server.into()),
        }
    }

    /// The client-visible name of an upstream tool or prompt.
    pub fn name(&self, server: &str, name: &str) -> String {
        match self.pass_through {
            Some(_) => name.to_owned(),
            None => format!("{server}{}{name}", self.separator),
        }
    }

    /// Splits a client-visible tool or prompt name into (server, upstream name).
    pub fn split_name<'a>(&'a self, name: &'a str) -> Option<(&'a str, &'a str)> {
        match &self.pass_through {
            Some(server) => Some((server.as_str(), name)),
            None => {
                let (server, rest) = name.split_once(self.separator.as_str())?;
                (!server.is_empty() && !rest.is_empty()).then_some((server, rest))
            }
        }
    }

    /// The client-visible URI (or URI template) of an upstream resource.
    pub fn uri(&self, server: &str, uri: &str) -> String {
        match self.pass_through {
            Some(_) => uri.to_owned(),
            None => format!("{server}+{uri}"),
        }
    }

    /// Splits a client-visible URI into (server, upstream URI).
    pub fn split_uri<'a>(&'a self, uri: &'a str) -> Option<(&'a str, &'a str)> {
        match &self.pass_through {
            Some(server) => Some((server.as_str(), uri)),
            None => {
                let (server, rest) = uri.split_once('+')?;
                (!server.is_empty()).then_some((server, rest))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        let naming = Naming::prefixed("__");
        for (server, tool) in [
            ("time", "get_current_time"),
            ("a-b", "x__y"),
            ("s", "__leading"),
            ("s", "trailing__"),
        ] {
            let name = naming.name(server, tool);
            assert_eq!(naming.split_name(&name), Some((server, tool)), "{name}");
        }
        assert_eq!(naming.split_name("no_separator"), None);
        assert_eq!(naming.split_name("__tool"), None);
        assert_eq!(naming.split_name("server__"), None);
    }

    #[test]
    fn uris_round_trip() {
        let naming = Naming::prefixed("__");
        for (server, uri) in [
            ("fs", "file:///tmp/a+b.txt"),
            ("git", "git+ssh://host/repo"),
            ("t", "test://template/{id}/data"),
            ("x", "no-scheme"),
        ] {
            let visible = naming.uri(server, uri);
            assert_eq!(naming.split_uri(&visible), Some((server, uri)), "{visible}");
        }
    }

    proptest::proptest! {
        /// Any valid server name and any upstream name split back into exactly what they were,
        /// and two different (server, name) pairs never produce the same client-visible name.
        #[test]
        fn prefixed_names_are_reversible_and_unique(
            separator in "(__|_|\\.|_\\.)",
            a in "[a-z][a-z0-9-]{0,10}", b in "[a-z][a-z0-9-]{0,10}",
            x in "[A-Za-z0-9_.-]{1,12}", y in "[A-Za-z0-9_.-]{1,12}",
        ) {
            let naming = Naming::prefixed(separator);
            let (ax, by) = (naming.name(&a, &x), naming.name(&b, &y));
            proptest::prop_assert_eq!(naming.split_name(&ax), Some((a.as_str(), x.as_str())));
            proptest::prop_assert_eq!(naming.split_name(&by), Some((b.as_str(), y.as_str())));
            proptest::prop_assert_eq!(ax == by, (&a, &x) == (&b, &y));
            let (ua, ub) = (naming.uri(&a, &x), naming.uri(&b, &y));
            proptest::prop_assert_eq!(naming.split_uri(&ua), Some((a.as_str(), x.as_str())));
            proptest::prop_assert_eq!(ua == ub, (&a, &x) == (&b, &y));
        }
    }

    #[test]
    fn pass_through_is_identity() {
        let naming = Naming::pass_through("only");
        assert_eq!(naming.name("only", "t"), "t");
        assert_eq!(naming.split_name("a__b"), Some(("only", "a__b")));
        assert_eq!(naming.split_uri("test://x"), Some(("only", "test://x")));
    }
}
