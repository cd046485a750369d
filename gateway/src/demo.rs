//! The bundled demo MCP server (`mcp-gateway demo-server`), which the embedded default config
//! puts behind the gateway so a new user has something real to call.
//!
//! Its tools are small but genuine: text statistics, arithmetic, the time, a per-session counter,
//! and a slow countdown that reports progress and stops when cancelled. Each tool carries a
//! SchemaPin signature made with the published demo key (`deploy/examples/keys`), so the default
//! config shows verification working.

use std::time::Duration;

use rmcp::service::RequestContext;
use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler, ServiceExt,
    handler::server::{router::tool::ToolRouter, wrapper::Parameters},
    model::*,
    schemars, tool, tool_handler, tool_router,
};
use serde::Deserialize;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct TextArgs {
    /// The text to work on.
    pub text: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct AddArgs {
    /// First addend.
    pub a: f64,
    /// Second addend.
    pub b: f64,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
pub struct CountdownArgs {
    /// Seconds to count down from (at most 60).
    pub seconds: u32,
}

/// The demo server.
#[derive(Clone)]
pub struct DemoServer {
    #[expect(
        dead_code,
        reason = "read by the code the tool_handler macro generates"
    )]
    tool_router: ToolRouter<Self>,
    /// State that lives as long as this server session, for `tally`.
    counter: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The tool definitions, each signed with the demo key.
    signed: std::sync::Arc<Vec<Tool>>,
}

/// The published demo key. It signs demo tools and proves nothing else.
const DEMO_PRIVATE_KEY: &str = include_str!("../../deploy/examples/keys/demo_private.pem");

use verifier::SIGNATURE_META_KEY;

/// Signs each tool's definition (without `_meta`) and puts the signature in its `_meta`.
fn sign_tools(tools: Vec<Tool>) -> Vec<Tool> {
    let Ok(key) = verifier::signature::private_key_from_pem(DEMO_PRIVATE_KEY) else {
        return tools;
    };
    tools
        .into_iter()
        .map(|mut tool| {
            tool.meta = None;
            let signature = serde_json::to_string(&tool)
                .ok()
                .and_then(|json| verifier::canonical::canonicalize(&json).ok())
                .map(|canonical| {
                    verifier::signature::sign(&verifier::signature::schema_hash(&canonical), &key)
                });
            if let Some(signature) = signature {
                let mut meta = MetaObject::new();
                meta.0
                    .insert(SIGNATURE_META_KEY.to_owned(), signature.into());
                tool.meta = Some(meta);
            }
            tool
        })
        .collect()
}

impl Default for DemoServer {
    fn default() -> Self {
        let tool_router = Self::tool_router();
        let signed = std::sync::Arc::new(sign_tools(tool_router.list_all()));
        Self {
            tool_router,
            counter: Default::default(),
            signed,
        }
    }
}

#[tool_router]
impl DemoServer {
    #[tool(
        description = "Echo the text back unchanged.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn echo(&self, Parameters(args): Parameters<TextArgs>) -> String {
        args.text
    }

    #[tool(
        description = "Add two numbers.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn add(&self, Parameters(args): Parameters<AddArgs>) -> String {
        (args.a + args.b).to_string()
    }

    #[tool(
        description = "Count the characters, words and lines of a text.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn text_stats(&self, Parameters(args): Parameters<TextArgs>) -> String {
        serde_json::json!({
            "characters": args.text.chars().count(),
            "words": args.text.split_whitespace().count(),
            "lines": args.text.lines().count(),
        })
        .to_string()
    }

    #[tool(
        description = "Add one to this server session's counter and return it: a server that \
                       keeps state per session.",
        annotations(
            read_only_hint = false,
            idempotent_hint = false,
            open_world_hint = false
        )
    )]
    async fn tally(&self) -> String {
        let count = self
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        count.to_string()
    }

    #[tool(
        description = "The current time in UTC, as seconds since the Unix epoch and RFC 3339.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn now(&self) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        serde_json::json!({
            "unix_seconds": now.as_secs(),
            "rfc3339": crate::clock::rfc3339(now.as_secs()),
        })
        .to_string()
    }

    #[tool(
        description = "Count down from `seconds` to zero, one progress notification per second. \
                       Stops early when the call is cancelled.",
        annotations(read_only_hint = true, open_world_hint = false)
    )]
    async fn countdown(
        &self,
        Parameters(args): Parameters<CountdownArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<String, McpError> {
        let RequestContext {
            meta,
            peer: client,
            ct,
            ..
        } = context;
        if args.seconds > 60 {
            return Err(McpError::invalid_params("seconds must be at most 60", None));
        }
        let token = meta.get_progress_token();
        for done in 0..args.seconds {
            if let Some(token) = &token {
                let _ = client
                    .notify_progress(
                        ProgressNotificationParam::new(token.clone(), f64::from(done))
                            .with_total(f64::from(args.seconds))
                            .with_message(format!("{} left", args.seconds - done)),
                    )
                    .await;
            }
            tokio::select! {
                _ = ct.cancelled() => return Err(McpError::internal_error("cancelled", None)),
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
        Ok("liftoff".to_owned())
    }
}

#[tool_handler]
impl ServerHandler for DemoServer {
    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        Ok(ListToolsResult::with_all_items((*self.signed).clone()))
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new(
                "mcp-gateway-demo",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions("A demo server bundled with mcp-gateway.")
    }
}

/// Serves the demo server over stdin and stdout until the client disconnects.
pub async fn serve_stdio() -> anyhow::Result<()> {
    let service = DemoServer::default()
        .serve(rmcp::transport::stdio())
        .await?;
    service.waiting().await?;
    Ok(())
}
