//! The gateway as an MCP server: one [`GatewayHandler`] per client session, on either front door.
//!
//! rmcp handles the protocol itself (both eras, sessions, the HTTP transport); this handler
//! answers list requests from the combined catalog and sends everything else through
//! [`pipeline::dispatch`](crate::pipeline::dispatch) to the upstream that owns the name.

#![expect(
    deprecated,
    reason = "logging and resource subscriptions are deprecated by SEP-2577 but legacy clients still use them"
)]

use std::sync::Arc;

use rmcp::{
    ErrorData as McpError, RoleServer, ServerHandler,
    model::*,
    service::{NotificationContext, RequestContext, SubscriptionContext},
};

use crate::{
    Gateway, audit::Arguments, identity::Identity, pipeline, policy::Target, session::SessionGuard,
};

/// Serves one client session.
pub struct GatewayHandler {
    gateway: Arc<Gateway>,
    session: SessionGuard,
    /// The identity of every request, for a front door with one client (stdio). `None` on HTTP,
    /// where each request carries the identity the front door established.
    fixed_identity: Option<Identity>,
    /// The client a session belongs to, from its first request: a session id presented with
    /// another client's credentials is refused, so a leaked session id is not a way in.
    owner: std::sync::OnceLock<String>,
}

impl GatewayHandler {
    /// A handler for the HTTP front door, whose requests carry their identity.
    pub fn new(gateway: Arc<Gateway>) -> Self {
        let session = gateway.sessions.open();
        Self {
            gateway,
            session,
            fixed_identity: None,
            owner: std::sync::OnceLock::new(),
        }
    }

    /// A handler for the stdio front door: the client is the one the config names.
    pub fn stdio(gateway: Arc<Gateway>) -> Self {
        let identity = gateway.access.stdio_identity.clone();
        let mut handler = Self::new(gateway);
        handler.fixed_identity = Some(identity);
        handler
    }

    /// The identity a request acts for. Every HTTP request has one (the front door refuses
    /// requests without), so its absence is an internal error, never anonymous access.
    fn identity(&self, extensions: &rmcp::model::Extensions) -> Result<Identity, McpError> {
        let identity = match &self.fixed_identity {
            Some(identity) => identity.clone(),
            None => extensions
                .get::<http::request::Parts>()
                .and_then(|parts| parts.extensions.get::<Identity>())
                .cloned()
                .ok_or_else(|| McpError::internal_error("the request has no identity", None))?,
        };
        let owner = self.owner.get_or_init(|| identity.client.clone());
        if *owner != identity.client {
            tracing::warn!(target: "audit", session = self.session.id, owner, client = %identity.client, "session used with another client's credentials");
            return Err(McpError::invalid_request(
                "this session belongs to another client",
                None,
            ));
        }
        Ok(identity)
    }

    fn session_name(&self) -> String {
        self.session.id.to_string()
    }

    /// Whether `who` may see `target` in a list answered for `action`.
    fn visible(&self, who: &Identity, action: &str, target: &Target<'_>) -> bool {
        self.gateway
            .access
            .visible(who, &self.session_name(), action, target)
    }

    /// Counts a list request against the limits.
    async fn admit_list(&self, who: &Identity, method: &str) -> Result<(), McpError> {
        self.gateway
            .access
            .admit_list(who, method)
            .await
            .map_err(|r| r.into_error(|| unexpected(method)))
    }

    /// Records a list that left out servers that are down (not ones suspended, whose lists are
    /// kept), once per listing: on its first page.
    fn record_partial_list(&self, who: &Identity, method: &str, first_page: bool) {
        if !first_page {
            return;
        }
        let unavailable: Vec<&str> = self
            .gateway
            .registry
            .upstreams()
            .filter(|u| {
                matches!(
                    u.state(),
                    crate::upstream::UpstreamState::Connecting
                        | crate::upstream::UpstreamState::Failed(_)
                )
            })
            .map(|u| u.spec.name.as_str())
            .collect();
        if unavailable.is_empty() {
            return;
        }
        let record =
            crate::audit::partial_list_record(who, &self.session_name(), method, &unavailable);
        // The list is answered without waiting: it changes nothing.
        if let Err(e) = self.gateway.audit.log.record_nowait(&record) {
            tracing::error!(error = %e, method, "cannot record a partial list");
        }
    }

    async fn relay(
        &self,
        server: &str,
        request: ClientRequest,
        ctx: &RequestContext<RoleServer>,
    ) -> Result<ServerResult, McpError> {
        let upstream =
            self.gateway.registry.get(server).ok_or_else(|| {
                McpError::invalid_params(format!("unknown server `{server}`"), None)
            })?;
        pipeline::dispatch(
            &self.gateway.sessions,
            self.session.id,
            upstream,
            request,
            ctx,
        )
        .await
    }

    fn unknown_tool(name: &str) -> McpError {
        McpError::invalid_params(format!("Unknown tool: {name}"), None)
    }

    fn unknown_resource(uri: &str) -> McpError {
        McpError::resource_not_found(
            format!("Resource not found: {uri}"),
            Some(serde_json::json!({ "uri": uri })),
        )
    }

    /// In pass-through mode the client sees the upstream's own identity and capabilities.
    fn pass_through_info(&self) -> Option<ServerPeerInfo> {
        if !self.gateway.config.routing.pass_through {
            return None;
        }
        self.gateway
            .registry
            .upstreams()
            .next()?
            .catalog()
            .info
            .clone()
    }
}

/// How many input-required rounds the gateway drives for a legacy client before giving up.
const MAX_INPUT_ROUNDS: usize = 16;

/// How long the outcome of a call whose server went away waits for the server's sandbox to
/// report its exit (and so a limit hit or a refusal that ended it).
const SANDBOX_EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

fn too_many_rounds() -> McpError {
    McpError::internal_error(
        format!("the upstream asked for input more than {MAX_INPUT_ROUNDS} times"),
        None,
    )
}

/// Whether the client speaks the 2026-07-28 era, which asks for input with input-required
/// results instead of server-to-client requests.
fn client_is_modern(context: &RequestContext<RoleServer>) -> bool {
    context
        .protocol_version()
        .is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str())
}

/// Translates an upstream's input-required result (2026-07-28) for a legacy client: each input
/// request becomes a server-to-client request inside the client's call, and the answers become
/// the `inputResponses` of the retried upstream request.
async fn ask_legacy_client(
    context: &RequestContext<RoleServer>,
    result: InputRequiredResult,
) -> Result<(Option<InputResponses>, Option<String>), McpError> {
    let mut responses = InputResponses::new();
    for (key, input) in result.input_requests.unwrap_or_default() {
        let request = match input {
            InputRequest::CreateMessage(r) => ServerRequest::CreateMessageRequest(r),
            InputRequest::Elicitation(r) => ServerRequest::ElicitRequest(r),
            InputRequest::ListRoots(r) => ServerRequest::ListRootsRequest(r),
            _ => return Err(unexpected("an input request of an unknown kind")),
        };
        let answer = context
            .peer
            .send_request(request)
            .await
            .map_err(|e| match e {
                rmcp::service::ServiceError::McpError(e) => e,
                other => {
                    McpError::internal_error(format!("the client did not answer: {other}"), None)
                }
            })?;
        let value = match answer {
            ClientResult::CreateMessageResult(r) => serde_json::to_value(r),
            ClientResult::ElicitResult(r) => serde_json::to_value(r),
            ClientResult::ListRootsResult(r) => serde_json::to_value(r),
            _ => return Err(unexpected("an input request")),
        }
        .map_err(|e| {
            McpError::internal_error(format!("cannot encode the client's answer: {e}"), None)
        })?;
        responses.insert(key, value);
    }
    Ok((
        (!responses.is_empty()).then_some(responses),
        result.request_state,
    ))
}

/// The gateway's own `requestState` (a call suspended for input), as opposed to an upstream's.
fn gateway_state(state: &Option<String>) -> Option<&str> {
    state
        .as_deref()
        .filter(|s| s.starts_with(pipeline::GATEWAY_STATE_PREFIX))
}

fn unexpected(method: &str) -> McpError {
    McpError::internal_error(
        format!("the upstream answered {method} with an unexpected result"),
        None,
    )
}

impl ServerHandler for GatewayHandler {
    async fn on_custom_request(
        &self,
        request: CustomRequest,
        context: RequestContext<RoleServer>,
    ) -> Result<CustomResult, McpError> {
        let modern = context
            .protocol_version()
            .is_some_and(|v| v.as_str() >= ProtocolVersion::V_2026_07_28.as_str());
        if crate::front::is_client_method(&request.method, modern) {
            // rmcp hands a known method whose params do not fit on as a custom request.
            Err(McpError::invalid_params(
                format!("Invalid params for `{}`", request.method),
                None,
            ))
        } else {
            Err(McpError::new(
                ErrorCode::METHOD_NOT_FOUND,
                format!("Method not found: {}", request.method),
                None,
            ))
        }
    }

    fn get_info(&self) -> ServerConfig {
        if let Some(info) = self.pass_through_info() {
            let mut config = ServerConfig::new(info.capabilities);
            if let Some(server_info) = info.server_info {
                config = config.with_server_info(server_info);
            }
            if let Some(instructions) = info.instructions {
                config = config.with_instructions(instructions);
            }
            return config;
        }
        let capabilities = ServerCapabilities::builder()
            .enable_tools()
            .enable_tool_list_changed()
            .enable_prompts()
            .enable_prompts_list_changed()
            .enable_resources()
            .enable_resources_list_changed()
            .enable_resources_subscribe()
            .enable_logging()
            .enable_completions()
            .build();
        ServerConfig::new(capabilities)
            .with_server_info(Implementation::new(
                "mcp-gateway",
                env!("CARGO_PKG_VERSION"),
            ))
            .with_instructions(
                "An MCP gateway: tools, prompts and resources of several servers, named \
                 `server__name` and `server+uri`.",
            )
    }

    async fn on_initialized(&self, context: NotificationContext<RoleServer>) {
        // The session's start goes into the audit trail, and so to `/admin/events`.
        match self.identity(&context.extensions) {
            Ok(who) => {
                let info = context.peer.peer_info();
                let record =
                    crate::audit::session_record(&who, &self.session_name(), info.as_deref());
                if let Err(e) = self.gateway.audit.log.record_nowait(&record) {
                    tracing::error!(error = %e, "cannot record a session's start");
                }
            }
            Err(e) => tracing::warn!(error = %e.message, "a session started without an identity"),
        }
        self.gateway
            .sessions
            .attach_peer(self.session.id, context.peer);
    }

    async fn list_tools(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, McpError> {
        let who = self.identity(&context.extensions)?;
        self.admit_list(&who, "tools/list").await?;
        let naming = &self.gateway.registry.naming;
        let page = self
            .gateway
            .registry
            .tools(cursor(&request), |tool, server, trust| {
                let local = naming
                    .split_name(&tool.name)
                    .map(|(_, local)| local)
                    .unwrap_or_default();
                let target = Target::tool(&tool.name, server, local, tool, trust);
                self.visible(&who, "tools/list", &target)
            })?;
        self.record_partial_list(&who, "tools/list", cursor(&request).is_none());
        let mut result = ListToolsResult::with_all_items(page.items);
        result.next_cursor = page.next_cursor;
        Ok(result)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        // The order of checks of the design: the identity was established at the front door;
        // resolving the name finds only served (verified or pinned) tools; then policy, rate
        // limits and argument validation (`Access::admit_call`); then dispatch.
        let who = self.identity(&context.extensions)?;
        let name = request.name.to_string();
        let Some(tool) = self.gateway.registry.lookup_tool(&name) else {
            return Err(Self::unknown_tool(&name));
        };
        let started = std::time::Instant::now();
        let mut request = request;
        // Read once by policy, validation and the audit records, then handed back for dispatch.
        let arguments = Arguments::new(request.arguments.take());
        let digest = arguments.digest().to_owned();
        // The sandbox of the server's shared process; a per-call sandbox replaces it.
        let mut sandbox = tool.upstream.sandbox().map(|report| {
            let mark = report.mark();
            (report, mark)
        });
        let result = self
            .call_resolved(
                &who,
                &name,
                &tool,
                request,
                arguments,
                &context,
                &mut sandbox,
            )
            .await;
        let mut outcome = outcome(&result, started);
        if let Some((report, _)) = &sandbox
            && outcome.degradation == Some("upstream-unavailable")
        {
            // The server went away: its runner says why once it reports the exit.
            report.exited_within(SANDBOX_EXIT_WAIT).await;
        }
        let sandbox = sandbox.map(|(report, mark)| crate::audit::SandboxFacts {
            id: report.id.clone(),
            notices: report.since(mark),
        });
        // A call that failed while its sandbox stopped or refused something failed for that
        // reason, though the client only saw the server go away.
        if outcome.status != "success"
            && matches!(outcome.degradation, None | Some("upstream-unavailable"))
            && let Some(degradation) = sandbox.as_ref().and_then(|s| s.degradation())
        {
            outcome.degradation = Some(degradation);
        }
        self.record_outcome(
            "tools/call",
            &who,
            &digest,
            &name,
            tool.upstream,
            tool.trust(),
            sandbox.as_ref(),
            outcome,
        )
        .await;
        result
    }

    /// The definition rmcp checks `Mcp-Param-*` headers against (declared with `x-mcp-header`
    /// in the tool's input schema), under the name the client uses.
    fn get_tool(&self, name: &str) -> Option<Tool> {
        let mut tool = self.gateway.registry.tool_definition(name)?;
        tool.name = name.to_owned().into();
        Some(tool)
    }

    async fn list_prompts(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListPromptsResult, McpError> {
        let who = self.identity(&context.extensions)?;
        self.admit_list(&who, "prompts/list").await?;
        let naming = &self.gateway.registry.naming;
        let page = self
            .gateway
            .registry
            .prompts(cursor(&request), |name, server| {
                let local = naming.split_name(name).map(|(_, l)| l).unwrap_or_default();
                let target = Target::Prompt {
                    name,
                    server,
                    local,
                };
                self.visible(&who, "prompts/list", &target)
            })?;
        self.record_partial_list(&who, "prompts/list", cursor(&request).is_none());
        let mut result = ListPromptsResult::with_all_items(page.items);
        result.next_cursor = page.next_cursor;
        Ok(result)
    }

    async fn get_prompt(
        &self,
        request: GetPromptRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let who = self.identity(&context.extensions)?;
        let name = request.name.clone();
        let Some((upstream, local)) = self.gateway.registry.resolve_prompt(&name) else {
            return Err(unknown_prompt(&name));
        };
        let started = std::time::Instant::now();
        let mut request = request;
        let arguments = Arguments::new(request.arguments.take());
        let digest = arguments.digest().to_owned();
        let result = self
            .prompt(&who, request, arguments, upstream, local, context)
            .await;
        let outcome = outcome_of(&result, started);
        self.record_outcome(
            "prompts/get",
            &who,
            &digest,
            &name,
            upstream,
            None,
            None,
            outcome,
        )
        .await;
        result
    }

    async fn list_resources(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourcesResult, McpError> {
        let who = self.identity(&context.extensions)?;
        self.admit_list(&who, "resources/list").await?;
        let page = self
            .gateway
            .registry
            .resources(cursor(&request), |uri, server| {
                self.visible(&who, "resources/list", &Target::Resource { uri, server })
            })?;
        self.record_partial_list(&who, "resources/list", cursor(&request).is_none());
        let mut result = ListResourcesResult::with_all_items(page.items);
        result.next_cursor = page.next_cursor;
        Ok(result)
    }

    async fn list_resource_templates(
        &self,
        request: Option<PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<ListResourceTemplatesResult, McpError> {
        // Templates are not resources; reading a resource made from one is decided by policy
        // (`resources/read`) on its concrete URI.
        let who = self.identity(&context.extensions)?;
        self.admit_list(&who, "resources/templates/list").await?;
        let page = self.gateway.registry.templates(cursor(&request))?;
        let mut result = ListResourceTemplatesResult::with_all_items(page.items);
        result.next_cursor = page.next_cursor;
        Ok(result)
    }

    async fn read_resource(
        &self,
        request: ReadResourceRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let who = self.identity(&context.extensions)?;
        let uri = request.uri.clone();
        let Some((upstream, local)) = self.gateway.registry.resolve_uri(&uri) else {
            return Err(Self::unknown_resource(&uri));
        };
        let started = std::time::Instant::now();
        let arguments = Arguments::new(None);
        let digest = arguments.digest().to_owned();
        let result = self
            .read(&who, request, &arguments, upstream, local, context)
            .await;
        let outcome = outcome_of(&result, started);
        self.record_outcome(
            "resources/read",
            &who,
            &digest,
            &uri,
            upstream,
            None,
            None,
            outcome,
        )
        .await;
        result
    }

    async fn subscribe(
        &self,
        request: SubscribeRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let who = self.identity(&context.extensions)?;
        let uri = request.uri;
        let Some((upstream, local)) = self.gateway.registry.resolve_uri(&uri) else {
            return Err(Self::unknown_resource(&uri));
        };
        let target = Target::Resource {
            uri: &uri,
            server: &upstream.name,
        };
        if !self.visible(&who, "resources/read", &target) {
            return Err(Self::unknown_resource(&uri));
        }
        if self.gateway.sessions.subscribe(self.session.id, &uri)
            && let Err(e) = upstream.want(local).await
        {
            self.gateway.sessions.unsubscribe(self.session.id, &uri);
            return Err(pipeline::upstream_error(e));
        }
        Ok(())
    }

    async fn unsubscribe(
        &self,
        request: UnsubscribeRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        let uri = request.uri;
        let Some((upstream, local)) = self.gateway.registry.resolve_uri(&uri) else {
            return Err(Self::unknown_resource(&uri));
        };
        if self.gateway.sessions.unsubscribe(self.session.id, &uri) {
            upstream.unwant(local).await;
        }
        Ok(())
    }

    fn accepted_subscription_filter(
        &self,
        requested: &SubscriptionFilter,
    ) -> Option<SubscriptionFilter> {
        let mut accepted = requested.clone();
        // Only resources the gateway can route are accepted; the rest are left out of the
        // acknowledgment, which tells the client they will not be delivered.
        if let Some(uris) = &mut accepted.resource_subscriptions {
            uris.retain(|uri| self.gateway.registry.resolve_uri(uri).is_some());
        }
        Some(accepted)
    }

    async fn listen(&self, context: SubscriptionContext) -> Result<(), McpError> {
        let _listener = self.gateway.sessions.add_listener(context.sink().clone());
        let uris = context
            .accepted()
            .resource_subscriptions
            .clone()
            .unwrap_or_default();
        let mut held = Vec::new();
        for uri in &uris {
            if let Some((upstream, local)) = self.gateway.registry.resolve_uri(uri) {
                match upstream.want(local).await {
                    Ok(()) => held.push((upstream.clone(), local.to_owned())),
                    Err(e) => tracing::warn!(uri, error = %e, "cannot subscribe upstream"),
                }
            }
        }
        context.cancelled().await;
        for (upstream, local) in held {
            upstream.unwant(&local).await;
        }
        Ok(())
    }

    async fn complete(
        &self,
        mut request: CompleteRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CompleteResult, McpError> {
        let who = self.identity(&context.extensions)?;
        let registry = &self.gateway.registry;
        let server = match &mut request.r#ref {
            Reference::Prompt(prompt) => {
                let unknown = || unknown_prompt(&prompt.name);
                let (server, local) = registry
                    .naming
                    .split_name(&prompt.name)
                    .map(|(s, l)| (s.to_owned(), l.to_owned()))
                    .ok_or_else(unknown)?;
                // Completing a prompt's arguments is using the prompt: a hidden one stays
                // unknown here too.
                let target = Target::Prompt {
                    name: &prompt.name,
                    server: &server,
                    local: &local,
                };
                if !self.visible(&who, "prompts/get", &target) {
                    return Err(unknown());
                }
                prompt.name = local;
                server
            }
            Reference::Resource(resource) => {
                let (server, local) = registry
                    .naming
                    .split_uri(&resource.uri)
                    .map(|(s, l)| (s.to_owned(), l.to_owned()))
                    .ok_or_else(|| Self::unknown_resource(&resource.uri))?;
                let target = Target::Resource {
                    uri: &resource.uri,
                    server: &server,
                };
                if !self.visible(&who, "resources/read", &target) {
                    return Err(Self::unknown_resource(&resource.uri));
                }
                resource.uri = local;
                server
            }
            _ => {
                return Err(McpError::invalid_params(
                    "unsupported completion reference",
                    None,
                ));
            }
        };
        match self
            .relay(
                &server,
                ClientRequest::CompleteRequest(Request::new(request)),
                &context,
            )
            .await?
        {
            ServerResult::CompleteResult(result) => Ok(result),
            _ => Err(unexpected("completion/complete")),
        }
    }

    async fn set_level(
        &self,
        request: SetLevelRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), McpError> {
        // rmcp refuses the other methods that era removed (see `front::REMOVED_IN_2026_07_28`)
        // before they reach a handler; this one it passes on.
        if client_is_modern(&context) {
            return Err(McpError::new(
                ErrorCode::METHOD_NOT_FOUND,
                "Method not found: logging/setLevel (removed in protocol version 2026-07-28)",
                None,
            ));
        }
        // The level applies to every upstream that logs; one that is down or refuses is skipped,
        // since a log level is a preference, not a transaction.
        for upstream in self.gateway.registry.upstreams() {
            let logs = upstream
                .catalog()
                .capabilities()
                .is_some_and(|c| c.logging.is_some());
            if logs {
                let server = upstream.spec.name.clone();
                if let Err(e) = self
                    .relay(
                        &server,
                        ClientRequest::SetLevelRequest(Request::new(request.clone())),
                        &context,
                    )
                    .await
                {
                    tracing::debug!(server, error = %e.message, "upstream refused logging/setLevel");
                }
            }
        }
        Ok(())
    }
}

impl Drop for GatewayHandler {
    fn drop(&mut self) {
        // A session that ends without unsubscribing still releases its upstream subscriptions,
        // and its per-client upstream sessions (and their processes) end with it.
        let uris = self.gateway.sessions.subscriptions(self.session.id);
        let gateway = self.gateway.clone();
        let session = self.session.id;
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                for uri in uris {
                    if let Some((upstream, local)) = gateway.registry.resolve_uri(&uri) {
                        upstream.unwant(local).await;
                    }
                }
                for upstream in gateway.registry.upstreams() {
                    if upstream.spec.sessions == crate::config::SessionMode::PerClient {
                        upstream.close_session(session).await;
                    }
                }
            });
        }
    }
}

fn cursor(request: &Option<PaginatedRequestParams>) -> Option<&str> {
    request.as_ref().and_then(|r| r.cursor.as_deref())
}

/// The audit outcome of a call's answer.
fn outcome(
    result: &Result<CallToolResponse, McpError>,
    started: std::time::Instant,
) -> crate::audit::Outcome {
    let duration_us = started.elapsed().as_micros() as u64;
    let mut outcome = crate::audit::Outcome {
        status: "success",
        code: None,
        message: None,
        duration_us,
        result_bytes: 0,
        degradation: None,
    };
    match result {
        Ok(CallToolResponse::Complete(result)) => {
            if result.is_error == Some(true) {
                outcome.status = "tool-error";
            }
            outcome.result_bytes = serde_json::to_vec(result).map_or(0, |v| v.len() as u64);
        }
        Ok(CallToolResponse::InputRequired(_)) => outcome.status = "input-required",
        Ok(CallToolResponse::Task(_)) => outcome.status = "task",
        Ok(_) => outcome.status = "other",
        Err(e) => {
            outcome.status = "error";
            outcome.code = Some(e.code.0);
            outcome.message = Some(e.message.to_string());
            outcome.degradation = match e.code.0 {
                crate::access::RATE_LIMITED => Some("rate-limited"),
                _ if e.message.contains("timed out") => Some("timeout"),
                _ if e.message.contains("not available") || e.message.contains("closed") => {
                    Some("upstream-unavailable")
                }
                _ => None,
            };
        }
    }
    outcome
}

impl GatewayHandler {
    /// A `tools/call` of a tool that resolved: admission, then dispatch. A per-call sandbox
    /// takes the place of `sandbox` (the server's sandbox, and a mark in its report).
    #[allow(
        clippy::too_many_arguments,
        reason = "the call, its checked parts, and where the sandbox it ran in is reported"
    )]
    async fn call_resolved(
        &self,
        who: &Identity,
        name: &str,
        tool: &crate::registry::ToolRef<'_>,
        request: CallToolRequestParams,
        arguments: Arguments,
        context: &RequestContext<RoleServer>,
        sandbox: &mut Option<(Arc<crate::upstream::launch::SandboxReport>, u64)>,
    ) -> Result<CallToolResponse, McpError> {
        let upstream = tool.upstream;
        let mut upstream_request = request;
        upstream_request.name = tool.local.to_owned().into();
        // A retry carrying the gateway's requestState continues a call admitted already.
        let mut per_call = None;
        if gateway_state(&upstream_request.request_state).is_none() {
            let conditions = self
                .gateway
                .access
                .admit_call(who, &self.session_name(), name, tool, &arguments)
                .await
                .map_err(|refusal| refusal.into_error(|| Self::unknown_tool(name)))?;
            if conditions.sandbox.as_deref() == Some(crate::access::PER_CALL) {
                let hash = tool.trust().map(|t| t.hash.as_str()).unwrap_or_default();
                // Boxed, as is `resume` below: rare paths with large futures, which every
                // call's future would otherwise make room for.
                let sandboxed = Box::pin(upstream.per_call(tool.local, hash))
                    .await
                    .map_err(|e| McpError::internal_error(e.to_string(), None))?;
                *sandbox = sandboxed.report().map(|report| (report, 0));
                per_call = Some(sandboxed);
            }
        }
        upstream_request.arguments = arguments.into_request();
        if let Some(token) = gateway_state(&upstream_request.request_state) {
            let result = Box::pin(pipeline::resume(
                &self.gateway.sessions,
                token,
                upstream_request.input_responses.as_ref(),
                context,
            ))
            .await?;
            return match result {
                ServerResult::CallToolResult(result) => Ok(CallToolResponse::Complete(result)),
                ServerResult::InputRequiredResult(result) => {
                    Ok(CallToolResponse::InputRequired(result))
                }
                _ => Err(unexpected("tools/call")),
            };
        }
        let peer = per_call.as_ref().map(crate::upstream::PerCall::peer);
        let result = self
            .call_rounds(tool, upstream_request, peer, context)
            .await;
        if let Some(per_call) = per_call {
            // The answer does not wait for the teardown; the sandbox's end is recorded when
            // its runner reports it.
            tokio::spawn(per_call.close());
        }
        result
    }

    /// Sends a call, and its rounds of input from a legacy client, to `peer` (a per-call
    /// sandbox) or to the upstream's own connection.
    async fn call_rounds(
        &self,
        tool: &crate::registry::ToolRef<'_>,
        mut upstream_request: CallToolRequestParams,
        peer: Option<rmcp::Peer<rmcp::RoleClient>>,
        context: &RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, McpError> {
        let upstream = tool.upstream;
        let legacy_client = !client_is_modern(context);
        for _round in 0..MAX_INPUT_ROUNDS {
            let result = pipeline::dispatch_to(
                &self.gateway.sessions,
                self.session.id,
                upstream,
                peer.clone(),
                ClientRequest::CallToolRequest(Request::new(upstream_request.clone())),
                context,
            )
            .await?;
            match result {
                ServerResult::CallToolResult(result) => {
                    self.gateway.access.check_output(tool, &result)?;
                    return Ok(CallToolResponse::Complete(result));
                }
                ServerResult::InputRequiredResult(result) if legacy_client => {
                    let (responses, state) = ask_legacy_client(context, result).await?;
                    upstream_request.input_responses = responses;
                    upstream_request.request_state = state;
                }
                ServerResult::InputRequiredResult(result) => {
                    return Ok(CallToolResponse::InputRequired(result));
                }
                ServerResult::CreateTaskResult(result) => {
                    return Ok(CallToolResponse::Task(result));
                }
                _ => return Err(unexpected("tools/call")),
            }
        }
        Err(too_many_rounds())
    }
}

impl GatewayHandler {
    /// `prompts/get`: admission, then dispatch.
    async fn prompt(
        &self,
        who: &Identity,
        mut request: GetPromptRequestParams,
        arguments: Arguments,
        upstream: &crate::upstream::Upstream,
        local: &str,
        context: RequestContext<RoleServer>,
    ) -> Result<GetPromptResponse, McpError> {
        let name = &request.name;
        if gateway_state(&request.request_state).is_none() {
            let target = Target::Prompt {
                name,
                server: &upstream.name,
                local,
            };
            self.gateway
                .access
                .admit(
                    who,
                    &self.session_name(),
                    "prompts/get",
                    &target,
                    &arguments,
                )
                .await
                .map_err(|refusal| refusal.into_error(|| unknown_prompt(name)))?;
        }
        request.arguments = arguments.into_request();
        request.name = local.to_owned();
        let server = upstream.spec.name.clone();
        if let Some(token) = gateway_state(&request.request_state) {
            let result = pipeline::resume(
                &self.gateway.sessions,
                token,
                request.input_responses.as_ref(),
                &context,
            )
            .await?;
            return match result {
                ServerResult::GetPromptResult(result) => Ok(GetPromptResponse::Complete(result)),
                ServerResult::InputRequiredResult(result) => {
                    Ok(GetPromptResponse::InputRequired(result))
                }
                _ => Err(unexpected("prompts/get")),
            };
        }
        let legacy_client = !client_is_modern(&context);
        for _round in 0..MAX_INPUT_ROUNDS {
            match self
                .relay(
                    &server,
                    ClientRequest::GetPromptRequest(Request::new(request.clone())),
                    &context,
                )
                .await?
            {
                ServerResult::GetPromptResult(result) => {
                    return Ok(GetPromptResponse::Complete(result));
                }
                ServerResult::InputRequiredResult(result) if legacy_client => {
                    let (responses, state) = ask_legacy_client(&context, result).await?;
                    request.input_responses = responses;
                    request.request_state = state;
                }
                ServerResult::InputRequiredResult(result) => {
                    return Ok(GetPromptResponse::InputRequired(result));
                }
                _ => return Err(unexpected("prompts/get")),
            }
        }
        Err(too_many_rounds())
    }

    /// `resources/read`: admission, then dispatch.
    async fn read(
        &self,
        who: &Identity,
        mut request: ReadResourceRequestParams,
        arguments: &Arguments,
        upstream: &crate::upstream::Upstream,
        local: &str,
        context: RequestContext<RoleServer>,
    ) -> Result<ReadResourceResponse, McpError> {
        let uri = request.uri.clone();
        let target = Target::Resource {
            uri: &uri,
            server: &upstream.name,
        };
        self.gateway
            .access
            .admit(
                who,
                &self.session_name(),
                "resources/read",
                &target,
                arguments,
            )
            .await
            .map_err(|refusal| refusal.into_error(|| Self::unknown_resource(&uri)))?;
        let server = upstream.spec.name.clone();
        request.uri = local.to_owned();
        match self
            .relay(
                &server,
                ClientRequest::ReadResourceRequest(Request::new(request)),
                &context,
            )
            .await?
        {
            ServerResult::ReadResourceResult(mut result) => {
                let naming = &self.gateway.registry.naming;
                for contents in &mut result.contents {
                    match contents {
                        ResourceContents::TextResourceContents { uri, .. }
                        | ResourceContents::BlobResourceContents { uri, .. } => {
                            *uri = naming.uri(&server, uri);
                        }
                        // A kind of contents newer than this gateway keeps its URI; reading it
                        // back through the gateway then fails as unknown rather than misroutes.
                        _ => {}
                    }
                }
                Ok(ReadResourceResponse::Complete(result))
            }
            ServerResult::InputRequiredResult(result) => {
                Ok(ReadResourceResponse::InputRequired(result))
            }
            _ => Err(unexpected("resources/read")),
        }
    }

    /// Records the outcome of a call, read or prompt, and waits for the commit that holds it
    /// (and, before it in the chain, its decision record): the answer waits for that and for
    /// nothing else.
    #[allow(
        clippy::too_many_arguments,
        reason = "the facts of one outcome record, each used once"
    )]
    async fn record_outcome(
        &self,
        method: &str,
        who: &Identity,
        arguments_digest: &str,
        target: &str,
        upstream: &crate::upstream::Upstream,
        trust: Option<&crate::upstream::ToolTrust>,
        sandbox: Option<&crate::audit::SandboxFacts>,
        outcome: crate::audit::Outcome,
    ) {
        let session = self.session_name();
        let record = crate::audit::outcome_record(
            &crate::audit::CallFacts {
                method,
                who,
                session: &session,
                arguments_digest,
                target,
                server: &upstream.name,
                definition_hash: trust.map(|t| t.hash.as_str()).unwrap_or_default(),
                tier: upstream.tier(),
                tier_requested: upstream.tier_requested(),
                sandbox,
            },
            &outcome,
        );
        if let Err(e) = self.gateway.audit.log.record(&record).await {
            tracing::error!(error = %e, method, target, "cannot record an outcome");
        }
    }
}

fn unknown_prompt(name: &str) -> McpError {
    McpError::invalid_params(format!("Unknown prompt: {name}"), None)
}

/// The audit outcome of an answer other than a tool call's.
fn outcome_of<T>(
    result: &Result<T, McpError>,
    started: std::time::Instant,
) -> crate::audit::Outcome {
    crate::audit::Outcome {
        status: if result.is_ok() { "success" } else { "error" },
        code: result.as_ref().err().map(|e| e.code.0),
        message: result.as_ref().err().map(|e| e.message.to_string()),
        duration_us: started.elapsed().as_micros() as u64,
        result_bytes: 0,
        degradation: match result {
            Err(e) if e.code.0 == crate::access::RATE_LIMITED => Some("rate-limited"),
            _ => None,
        },
    }
}
