//! The registered upstreams and the one combined catalog that clients see.
//!
//! Lists are built from each upstream's cached catalog, renamed by [`Naming`], in server-name
//! order, and paged with the gateway's own cursors: a cursor is an opaque offset into the combined
//! list, never an upstream's cursor, so clients cannot tell how many upstreams there are.

use std::{collections::BTreeMap, sync::Arc};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use rmcp::{
    ErrorData as McpError,
    model::{Prompt, Resource, ResourceTemplate, Tool},
};

use crate::{
    naming::Naming,
    upstream::{Catalog, ToolTrust, Upstream},
};

/// The registered upstreams, by name.
pub struct Registry {
    upstreams: BTreeMap<String, Arc<Upstream>>,
    pub naming: Naming,
    page_size: usize,
}

/// A tool found for a call: its upstream, its upstream name, and its definition and trust state
/// in the catalog it was found in.
pub struct ToolRef<'a> {
    pub upstream: &'a Arc<Upstream>,
    pub local: &'a str,
    catalog: Arc<Catalog>,
    index: usize,
}

impl ToolRef<'_> {
    /// The definition as the upstream lists it.
    pub fn tool(&self) -> &Tool {
        // `index` was found in this very catalog, which cannot change under the Arc.
        &self.catalog.tools[self.index]
    }

    pub fn trust(&self) -> Option<&ToolTrust> {
        self.catalog.states.get(self.local)
    }
}

/// One page of a list, and the cursor of the next page.
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_cursor: Option<String>,
}

impl Registry {
    pub fn new(
        upstreams: impl IntoIterator<Item = Arc<Upstream>>,
        naming: Naming,
        page_size: usize,
    ) -> Self {
        Self {
            upstreams: upstreams
                .into_iter()
                .map(|u| (u.spec.name.clone(), u))
                .collect(),
            naming,
            page_size,
        }
    }

    pub fn upstreams(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.upstreams.values()
    }

    pub fn get(&self, server: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.get(server)
    }

    /// A client-visible tool, if it is listed and trusted, with its definition and trust state
    /// for the checks of a call. This is the call path: the server and the tool's trust state
    /// by map lookups, the definition by the position kept with that state; nothing is copied.
    /// Every listed tool has a trust state. A tool that is not trusted is unknown to clients,
    /// not forbidden: its existence is not revealed.
    pub fn lookup_tool<'a>(&'a self, name: &'a str) -> Option<ToolRef<'a>> {
        let (server, local) = self.naming.split_name(name)?;
        let upstream = self.upstreams.get(server)?;
        let catalog = upstream.catalog();
        let trust = catalog.states.get(local)?;
        let index = trust.position;
        let served =
            upstream.serves(trust) && catalog.tools.get(index).is_some_and(|t| t.name == local);
        served.then_some(ToolRef {
            upstream,
            local,
            catalog,
            index,
        })
    }

    /// The upstream definition of a client-visible tool that [`Self::lookup_tool`] finds.
    pub fn tool_definition(&self, name: &str) -> Option<Tool> {
        self.lookup_tool(name).map(|tool| tool.tool().clone())
    }

    /// The upstream and upstream prompt name behind a client-visible prompt name.
    pub fn resolve_prompt<'a>(&'a self, name: &'a str) -> Option<(&'a Arc<Upstream>, &'a str)> {
        let (server, local) = self.naming.split_name(name)?;
        let upstream = self.upstreams.get(server)?;
        upstream
            .catalog()
            .prompts
            .iter()
            .any(|p| p.name == local)
            .then_some((upstream, local))
    }

    /// The upstream and upstream URI behind a client-visible URI.
    pub fn resolve_uri<'a>(&'a self, uri: &'a str) -> Option<(&'a Arc<Upstream>, &'a str)> {
        let (server, local) = self.naming.split_uri(uri)?;
        Some((self.upstreams.get(server)?, local))
    }

    /// One page of the served tools that `visible` keeps. `visible` sees each tool under its
    /// client-visible name, with its server and trust state. Pages are cut after filtering, so
    /// a hidden tool is in no page and leaves no gap.
    pub fn tools(
        &self,
        cursor: Option<&str>,
        visible: impl Fn(&Tool, &str, Option<&ToolTrust>) -> bool,
    ) -> Result<Page<Tool>, McpError> {
        self.page(cursor, |server, catalog, out| {
            let Some(upstream) = self.upstreams.get(server) else {
                return;
            };
            out.extend(catalog.tools.iter().filter_map(|tool| {
                let trust = catalog.states.get(tool.name.as_ref())?;
                if !upstream.serves(trust) {
                    return None;
                }
                let mut tool = tool.clone();
                tool.name = self.naming.name(server, &tool.name).into();
                visible(&tool, server, Some(trust)).then_some(tool)
            }))
        })
    }

    /// One page of the prompts that `visible` keeps (called with the client-visible name and
    /// the server).
    pub fn prompts(
        &self,
        cursor: Option<&str>,
        visible: impl Fn(&str, &str) -> bool,
    ) -> Result<Page<Prompt>, McpError> {
        self.page(cursor, |server, catalog, out| {
            out.extend(catalog.prompts.iter().filter_map(|prompt| {
                let mut prompt = prompt.clone();
                prompt.name = self.naming.name(server, &prompt.name);
                visible(&prompt.name, server).then_some(prompt)
            }))
        })
    }

    /// One page of the resources that `visible` keeps (called with the client-visible URI and
    /// the server).
    pub fn resources(
        &self,
        cursor: Option<&str>,
        visible: impl Fn(&str, &str) -> bool,
    ) -> Result<Page<Resource>, McpError> {
        self.page(cursor, |server, catalog, out| {
            out.extend(catalog.resources.iter().filter_map(|resource| {
                let mut resource = resource.clone();
                resource.uri = self.naming.uri(server, &resource.uri);
                visible(&resource.uri, server).then_some(resource)
            }))
        })
    }

    pub fn templates(&self, cursor: Option<&str>) -> Result<Page<ResourceTemplate>, McpError> {
        self.page(cursor, |server, catalog, out| {
            out.extend(catalog.templates.iter().map(|template| {
                let mut template = template.clone();
                template.uri_template = self.naming.uri(server, &template.uri_template);
                template
            }))
        })
    }

    fn page<T>(
        &self,
        cursor: Option<&str>,
        collect: impl Fn(&str, &crate::upstream::Catalog, &mut Vec<T>),
    ) -> Result<Page<T>, McpError> {
        let offset = match cursor {
            None => 0,
            Some(cursor) => decode_cursor(cursor)
                .ok_or_else(|| McpError::invalid_params("invalid cursor", None))?,
        };
        let mut all = Vec::new();
        for (server, upstream) in &self.upstreams {
            collect(server, &upstream.catalog(), &mut all);
        }
        if offset > all.len() {
            return Err(McpError::invalid_params("invalid cursor", None));
        }
        let end = offset.saturating_add(self.page_size).min(all.len());
        let next_cursor = (end < all.len()).then(|| encode_cursor(end));
        let items = all.drain(offset..end).collect();
        Ok(Page { items, next_cursor })
    }
}

fn encode_cursor(offset: usize) -> String {
    URL_SAFE_NO_PAD.encode(format!("gw1:{offset}"))
}

fn decode_cursor(cursor: &str) -> Option<usize> {
    let bytes = URL_SAFE_NO_PAD.decode(cursor).ok()?;
    std::str::from_utf8(&bytes)
        .ok()?
        .strip_prefix("gw1:")?
        .parse()
        .ok()
}

/// A registry of servers s0, s1, ... serving `catalogs[i]`, every tool pinned, for tests and
/// benchmarks of what is built on the registry. No server is started.
#[doc(hidden)]
#[allow(
    clippy::expect_used,
    reason = "the configuration is built here and always valid"
)]
pub fn test_registry(catalogs: Vec<Vec<Tool>>, page_size: usize) -> Registry {
    let text: String = (0..catalogs.len())
        .map(|i| format!("[servers.s{i}]\ncommand = \"x\"\n"))
        .collect();
    let config = crate::config::Config::parse(
        std::path::Path::new("/t/gateway.toml"),
        &text,
        &crate::config::interpolate::Vars::fixed([]),
    )
    .expect("a fixed, valid configuration");
    let upstreams: Vec<_> = config.servers.into_iter().map(Upstream::new).collect();
    for (upstream, tools) in upstreams.iter().zip(catalogs) {
        let mut catalog = Catalog::default();
        for tool in tools {
            catalog.states.insert(
                tool.name.to_string(),
                ToolTrust {
                    definition: keys::definitions::DefinitionState::Pinned,
                    signature: crate::upstream::SignatureCheck::Unsigned,
                    hash: format!("hash-of-{}", tool.name),
                    position: catalog.tools.len(),
                },
            );
            catalog.tools.push(tool);
        }
        upstream.set_catalog(catalog);
    }
    Registry::new(upstreams, Naming::prefixed("__".to_owned()), page_size)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A registry of servers s0, s1, ... with `tools[i]` tools each (t0, t1, ...).
    fn registry(tools: &[usize], page_size: usize) -> Registry {
        let catalogs = tools
            .iter()
            .map(|n| {
                (0..*n)
                    .map(|t| Tool::new(format!("t{t}"), "d", Arc::new(serde_json::Map::new())))
                    .collect()
            })
            .collect();
        test_registry(catalogs, page_size)
    }

    proptest! {
        /// Paging through the tools a client may see yields each visible tool exactly once, in
        /// order, and no hidden one, whatever the page size.
        #[test]
        fn hidden_tools_are_in_no_page(
            tools in proptest::collection::vec(0usize..8, 1..5),
            hidden in proptest::collection::hash_set((0usize..5, 0usize..8), 0..20),
            page_size in 1usize..7,
        ) {
            let registry = registry(&tools, page_size);
            let is_hidden = |name: &str| {
                let (s, t) = name.split_once("__").unwrap();
                let s: usize = s[1..].parse().unwrap();
                let t: usize = t[1..].parse().unwrap();
                hidden.contains(&(s, t))
            };
            let mut seen = Vec::new();
            let mut cursor: Option<String> = None;
            loop {
                let page = registry
                    .tools(cursor.as_deref(), |tool, _, _| !is_hidden(&tool.name))
                    .unwrap();
                prop_assert!(page.items.len() <= page_size);
                seen.extend(page.items.into_iter().map(|t| t.name.to_string()));
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            let expected: Vec<String> = tools
                .iter()
                .enumerate()
                .flat_map(|(s, n)| (0..*n).map(move |t| format!("s{s}__t{t}")))
                .filter(|name| !is_hidden(name))
                .collect();
            prop_assert_eq!(seen, expected);
        }
    }

    #[test]
    fn cursors_round_trip_and_reject_garbage() {
        for offset in [0, 1, 100, usize::MAX] {
            assert_eq!(decode_cursor(&encode_cursor(offset)), Some(offset));
        }
        for garbage in ["", "!!", "Z3cxOg", "eyJ4IjoxfQ", "Z3cxOi0x"] {
            assert_eq!(decode_cursor(garbage), None, "{garbage}");
        }
    }
}
