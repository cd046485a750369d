//! `mcp-load`: measures `tools/call` through the gateway against a direct connection to the same
//! upstream, and serves the fast echo upstream it measures with.
//!
//! `mcp-load bench --gateway target/release/mcp-gateway` runs every scenario: an echo upstream over
//! stdio and over HTTP, each called directly and through the gateway's HTTP front door (the stdio
//! upstream also through `mcp-gateway stdio`), at concurrency 1 and 32. It prints a Markdown table
//! of throughput, p50 and p99 latency, the gateway's resident memory, and the CPU time each party
//! (this client, the gateway, the upstream with its sandbox) spent per call.
//! `mcp-load echo-server stdio|http` is the upstream itself.

use std::{
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};
use rmcp::{
    ErrorData, Peer, RoleClient, RoleServer, ServerHandler, ServiceExt,
    model::{
        CallToolRequestParams, CallToolResult, ContentBlock, Implementation, ListToolsResult,
        PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    },
    service::RequestContext,
    transport::{
        StreamableHttpClientTransport, TokioChildProcess,
        streamable_http_client::StreamableHttpClientTransportConfig,
        streamable_http_server::{
            StreamableHttpServerConfig, StreamableHttpService, session::local::LocalSessionManager,
        },
    },
};
use tokio::io::AsyncBufReadExt;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every scenario and print a Markdown table.
    Bench {
        /// The `mcp-gateway` binary to measure (build it with `--release`).
        #[arg(long)]
        gateway: PathBuf,
        /// Calls per scenario and concurrency level.
        #[arg(long, default_value_t = 5000)]
        calls: usize,
        /// Concurrency levels.
        #[arg(long, value_delimiter = ',', default_value = "1,32")]
        concurrency: Vec<usize>,
        /// TOML appended to the gateway's config (a `[sandbox]` table, say).
        #[arg(long, default_value = "")]
        config_extra: String,
        /// Clients speak the 2026-07-28 era (stateless) instead of 2025-11-25 (sessions).
        #[arg(long)]
        modern: bool,
    },
    /// Call one tool of a running server over Streamable HTTP and print one table row.
    Run {
        #[arg(long)]
        url: String,
        #[arg(long, default_value = "echo")]
        tool: String,
        #[arg(long, default_value_t = 5000)]
        calls: usize,
        #[arg(long, default_value_t = 1)]
        concurrency: usize,
        /// Send `ping` requests instead of calling the tool: what the server's transport and
        /// session cost with no tool behind them.
        #[arg(long)]
        ping: bool,
    },
    /// Serve the echo upstream.
    EchoServer {
        #[command(subcommand)]
        transport: EchoTransport,
    },
}

#[derive(Subcommand, Clone, Copy)]
enum EchoTransport {
    Stdio,
    /// Prints `http://127.0.0.1:PORT/mcp` on stdout once it accepts connections.
    Http,
    /// The same tool over Streamable HTTP written on axum without rmcp: every request answered
    /// with one JSON body, no session worker, no task per request. Not a complete MCP server
    /// (no GET stream, no resumption); it measures what a lean transport would cost.
    HttpPlain,
}

/// An upstream with one tool, `echo`, that answers as fast as rmcp can.
#[derive(Clone, Default)]
struct Echo;

impl ServerHandler for Echo {
    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(ServerCapabilities::builder().enable_tools().build())
            .with_server_info(Implementation::new("echo", "1"))
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, ErrorData> {
        let schema = serde_json::json!({
            "type": "object",
            "properties": {"text": {"type": "string"}},
        });
        let serde_json::Value::Object(schema) = schema else {
            return Err(ErrorData::internal_error("schema is an object", None));
        };
        Ok(ListToolsResult::with_all_items(vec![Tool::new(
            "echo",
            "Echo the text back",
            Arc::new(schema),
        )]))
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        _context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, ErrorData> {
        let text = request
            .arguments
            .as_ref()
            .and_then(|a| a.get("text"))
            .and_then(|t| t.as_str())
            .unwrap_or_default()
            .to_owned();
        Ok(CallToolResult::success(vec![ContentBlock::text(text)]).into())
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // reqwest is built without a default TLS provider; the workspace uses ring.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match Cli::parse().command {
        Command::EchoServer { transport } => echo_server(transport).await,
        Command::Run {
            url,
            tool,
            calls,
            concurrency,
            ping,
        } => {
            let client = ().serve(http_client(&url)?).await?;
            let tool = (!ping).then_some(tool.as_str());
            let m = measure(client.peer(), tool, calls, concurrency).await?;
            println!(
                "{concurrency} concurrent: {:.0} calls/s, p50 {:.0} µs, p99 {:.0} µs",
                m.throughput,
                m.p50.as_secs_f64() * 1e6,
                m.p99.as_secs_f64() * 1e6
            );
            Ok(())
        }
        Command::Bench {
            gateway,
            calls,
            concurrency,
            modern,
            config_extra,
        } => bench(&gateway, calls, &concurrency, modern, &config_extra).await,
    }
}

/// An MCP client over Streamable HTTP that keeps its connections, as the Python SDK (httpx) and
/// Node's `fetch` do. rmcp's own default client (`from_uri`) opens a connection for every
/// request: it turns pooling off, because a server without TCP_NODELAY made a reused connection
/// wait on delayed ACKs. Both servers measured here set TCP_NODELAY.
fn http_client(url: &str) -> anyhow::Result<StreamableHttpClientTransport<reqwest::Client>> {
    // Idle connections go before the gateway closes them (after 30 s): a row may leave its
    // client idle while other rows run.
    let client = reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(20))
        .build()?;
    Ok(StreamableHttpClientTransport::with_client(
        client,
        StreamableHttpClientTransportConfig::with_uri(url),
    ))
}

async fn echo_server(transport: EchoTransport) -> anyhow::Result<()> {
    match transport {
        EchoTransport::Stdio => {
            Echo.serve(rmcp::transport::stdio())
                .await?
                .waiting()
                .await?;
        }
        EchoTransport::Http => {
            let listener =
                tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
            let addr = listener.local_addr()?;
            let service = StreamableHttpService::new(
                || Ok(Echo),
                LocalSessionManager::default().into(),
                StreamableHttpServerConfig::default().with_json_response(true),
            );
            let router = axum::Router::new().nest_service("/mcp", service);
            println!("http://{addr}/mcp");
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, router).await?;
        }
        EchoTransport::HttpPlain => {
            let listener =
                tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
            let addr = listener.local_addr()?;
            let router = axum::Router::new().route("/mcp", axum::routing::post(plain_echo));
            println!("http://{addr}/mcp");
            use axum::serve::ListenerExt;
            let listener = listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            axum::serve(listener, router).await?;
        }
    }
    Ok(())
}

/// One message of the plain echo server: a JSON answer to a request, 202 to anything else.
async fn plain_echo(body: axum::body::Bytes) -> axum::response::Response {
    use axum::response::IntoResponse;
    let Ok(message) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return (axum::http::StatusCode::BAD_REQUEST, "not JSON").into_response();
    };
    let (Some(id), Some(method)) = (
        message.get("id"),
        message.get("method").and_then(|m| m.as_str()),
    ) else {
        return axum::http::StatusCode::ACCEPTED.into_response();
    };
    let result = match method {
        "initialize" => serde_json::json!({
            "protocolVersion": message
                .pointer("/params/protocolVersion")
                .cloned()
                .unwrap_or_else(|| "2025-11-25".into()),
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "echo", "version": "1"},
        }),
        "ping" => serde_json::json!({}),
        "tools/list" => serde_json::json!({"tools": [{
            "name": "echo",
            "description": "Echo the text back",
            "inputSchema": {"type": "object", "properties": {"text": {"type": "string"}}},
        }]}),
        "tools/call" => {
            let text = message
                .pointer("/params/arguments/text")
                .and_then(|t| t.as_str())
                .unwrap_or_default();
            serde_json::json!({"content": [{"type": "text", "text": text}], "isError": false})
        }
        _ => {
            let error = serde_json::json!({"jsonrpc": "2.0", "id": id, "error": {
                "code": -32601, "message": "Method not found"}});
            return axum::Json(error).into_response();
        }
    };
    let mut response =
        axum::Json(serde_json::json!({"jsonrpc": "2.0", "id": id, "result": result}))
            .into_response();
    if method == "initialize" {
        response.headers_mut().insert(
            "mcp-session-id",
            axum::http::HeaderValue::from_static("plain"),
        );
    }
    response
}

/// A child process that is killed when dropped.
struct Child(tokio::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.start_kill();
    }
}

/// Starts a command whose first stdout line is a URL, and returns the process and that line.
async fn spawn_with_url(command: &Path, args: &[&str]) -> anyhow::Result<(Child, String)> {
    let mut child = tokio::process::Command::new(command)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", command.display()))?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .context("no URL within 60 s")??
        .context("exited before printing its URL")?;
    // Keep reading so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let url = line.trim_start_matches("listening on ").to_owned();
    Ok((Child(child), url))
}

/// CPU time (user and system) of process `pid` and all its threads, in clock ticks.
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses; the fields after it do not.
    let mut fields = stat.get(stat.rfind(')')? + 2..)?.split_whitespace();
    // utime and stime are fields 14 and 15 of the line, the 12th and 13th after the name.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// The processes below `pid`: its children, theirs, and so on.
fn descendants(pid: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut next = vec![pid];
    while let Some(parent) = next.pop() {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let children =
                std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
            for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
                found.push(child);
                next.push(child);
            }
        }
    }
    found
}

/// Whose CPU time a row measures besides this client's own.
#[derive(Clone, Copy)]
enum Party {
    /// No such party in this row.
    None,
    /// One process.
    Process(u32),
    /// Every process below this one (a gateway's sandboxed upstream: runners and server).
    Below(u32),
}

impl Party {
    fn ticks(self) -> Option<u64> {
        match self {
            Party::None => None,
            Party::Process(pid) => cpu_ticks(pid),
            Party::Below(pid) => Some(descendants(pid).into_iter().filter_map(cpu_ticks).sum()),
        }
    }
}

/// CPU time per call, in microseconds, from clock ticks before and after `calls` calls.
fn per_call(before: Option<u64>, after: Option<u64>, calls: usize) -> Option<f64> {
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100)
        .max(1) as f64;
    match (before, after) {
        (Some(b), Some(a)) if a >= b => Some((a - b) as f64 / hz * 1e6 / calls as f64),
        _ => None,
    }
}

/// Microseconds for a table cell; empty when unknown.
fn micros(value: Option<f64>) -> String {
    value.map(|v| format!("{v:.0} µs")).unwrap_or_default()
}

/// The gateway-core issue's targets: added p50 at concurrency 1, and throughput against the
/// direct row at concurrency 32.
const ADDED_P50_TARGET_US: f64 = 200.0;
const THROUGHPUT_TARGET: f64 = 0.5;

/// One printed row, kept for the summary against the targets.
struct Row {
    upstream: &'static str,
    path: &'static str,
    concurrency: usize,
    m: Measurement,
    /// CPU a call of the client, the gateway and the upstream.
    cpu: [Option<f64>; 3],
}

/// Prints each gateway row against the direct row of the same upstream and concurrency.
///
/// When every core is busy, throughput is the cores divided by the CPU the parties spend on a
/// call (the "cores busy" column says whether they were). A gateway row then reaches the
/// throughput target only if its parties together spend at most `cores / (target × direct
/// calls/s)` a call; less the client's and the upstream's share, that is what the gateway may
/// spend ("gateway budget"). It cannot be met if the budget is below what the gateway's two
/// transports alone cost.
fn summary(rows: &[Row]) {
    let cores = std::thread::available_parallelism().map_or(1, usize::from) as f64;
    println!();
    println!(
        "| upstream | path | concurrency | cores busy | x direct | added p50 | target met | gateway CPU a call | gateway budget for {THROUGHPUT_TARGET}x |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let busy = |row: &Row| -> Option<f64> {
        let spent: f64 = row.cpu.iter().flatten().sum();
        (spent > 0.0).then_some(spent * 1e-6 * row.m.throughput)
    };
    for row in rows {
        let Some(direct) = rows.iter().find(|d| {
            d.path == "direct" && d.upstream == row.upstream && d.concurrency == row.concurrency
        }) else {
            continue;
        };
        let ratio = row.m.throughput / direct.m.throughput;
        let added = (row.m.p50.as_secs_f64() - direct.m.p50.as_secs_f64()) * 1e6;
        let met = match row.concurrency {
            1 => Some(added <= ADDED_P50_TARGET_US),
            32 => Some(ratio >= THROUGHPUT_TARGET),
            _ => None,
        };
        let budget = (row.path != "direct")
            .then(|| {
                let others = row.cpu[0]? + row.cpu[2]?;
                Some(cores * 1e6 / (THROUGHPUT_TARGET * direct.m.throughput) - others)
            })
            .flatten();
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.upstream,
            row.path,
            row.concurrency,
            busy(row).map_or(String::new(), |b| format!("{b:.2} of {cores:.0}")),
            if row.path == "direct" {
                String::new()
            } else {
                format!("{ratio:.2}x")
            },
            if row.path == "direct" {
                String::new()
            } else {
                format!("{added:.0} µs")
            },
            match (row.path, met) {
                ("direct", _) | (_, None) => "",
                (_, Some(true)) => "yes",
                (_, Some(false)) => "no",
            },
            micros(row.cpu[1]),
            if row.concurrency > 1 {
                micros(budget)
            } else {
                String::new()
            },
        );
    }
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

struct Measurement {
    /// Calls made, warm-up included: what the CPU time of the row was spent on.
    calls: usize,
    throughput: f64,
    p50: Duration,
    p99: Duration,
}

/// Calls made before a row's measured calls.
const WARM_UP: usize = 50;

/// Calls `echo` `calls` times from `concurrency` tasks sharing one client session.
async fn measure(
    peer: &Peer<RoleClient>,
    tool: Option<&str>,
    calls: usize,
    concurrency: usize,
) -> anyhow::Result<Measurement> {
    // Warm up: connections, caches and the upstream's first-call paths.
    for _ in 0..WARM_UP {
        call(peer, tool).await?;
    }
    let per_task = calls.div_ceil(concurrency);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let peer = peer.clone();
        let tool = tool.map(str::to_owned);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(per_task);
            for _ in 0..per_task {
                let t = Instant::now();
                call(&peer, tool.as_deref()).await?;
                latencies.push(t.elapsed());
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let at = |q: f64| latencies[((latencies.len() as f64 * q) as usize).min(latencies.len() - 1)];
    Ok(Measurement {
        calls: latencies.len() + WARM_UP,
        throughput: latencies.len() as f64 / elapsed.as_secs_f64(),
        p50: at(0.50),
        p99: at(0.99),
    })
}

/// Calls `tool` with a short text, or pings when there is no tool.
async fn call(peer: &Peer<RoleClient>, tool: Option<&str>) -> anyhow::Result<()> {
    let Some(tool) = tool else {
        peer.send_request(rmcp::model::ClientRequest::PingRequest(Default::default()))
            .await?;
        return Ok(());
    };
    let mut args = serde_json::Map::new();
    args.insert("text".into(), "hello".into());
    let result = peer
        .call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args))
        .await?;
    if result.is_error == Some(true) {
        bail!("the echo call failed: {result:?}");
    }
    Ok(())
}

/// A client of `transport` in the chosen era.
async fn client<T, E, A>(
    transport: T,
    modern: bool,
) -> anyhow::Result<rmcp::service::RunningService<RoleClient, ()>>
where
    T: rmcp::transport::IntoTransport<RoleClient, E, A>,
    E: std::error::Error + Send + Sync + 'static,
{
    use rmcp::service::{ClientLifecycleMode, ClientServiceExt};
    let lifecycle = if modern {
        ClientLifecycleMode::Discover {
            preferred_versions: vec![rmcp::model::ProtocolVersion::V_2026_07_28],
        }
    } else {
        ClientLifecycleMode::Initialize
    };
    Ok(().serve_with_lifecycle(transport, lifecycle).await?)
}

async fn bench(
    gateway: &Path,
    calls: usize,
    levels: &[usize],
    modern: bool,
    extra: &str,
) -> anyhow::Result<()> {
    let me = std::env::current_exe()?;
    let work = std::env::temp_dir().join(format!("mcp-load-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;
    println!(
        "| upstream | path | concurrency | calls/s | p50 | p99 | gateway RSS | CPU a call: client | gateway | upstream |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    let mut rows = Vec::new();
    for upstream in ["stdio", "http"] {
        // The echo upstream, and its direct client.
        let (_echo, direct, direct_upstream) = if upstream == "stdio" {
            let mut command = tokio::process::Command::new(&me);
            command.args(["echo-server", "stdio"]);
            let transport = TokioChildProcess::new(command)?;
            let pid = transport.id().context("echo server pid")?;
            (None, client(transport, modern).await?, pid)
        } else {
            let (child, url) = spawn_with_url(&me, &["echo-server", "http"]).await?;
            let pid = child.0.id().context("echo server pid")?;
            let direct = client(http_client(&url)?, modern).await?;
            (Some(child), direct, pid)
        };
        // The gateway in front of the same kind of upstream.
        let (gateway_echo, server) = if upstream == "stdio" {
            let server = format!(
                "command = \"{}\"\nargs = [\"echo-server\", \"stdio\"]\n",
                me.display()
            );
            (None, server)
        } else {
            let (child, url) = spawn_with_url(&me, &["echo-server", "http"]).await?;
            (Some(child), format!("url = \"{url}\"\n"))
        };
        // A gateway's upstream: the HTTP echo server it shares with nobody, or the sandbox
        // (runners and server) it starts itself.
        let upstream_of = |gateway: u32| match &gateway_echo {
            Some(child) => child.0.id().map_or(Party::None, Party::Process),
            None => Party::Below(gateway),
        };
        let config_for = |name: &str| -> anyhow::Result<String> {
            let config = work.join(format!("{name}.toml"));
            std::fs::write(
                &config,
                format!(
                    "[storage]\ndata_dir = \"{}\"\n[auth]\nanonymous = true\n[servers.echo]\n{server}\n{extra}\n",
                    work.join(name).display()
                ),
            )?;
            Ok(config.to_string_lossy().into_owned())
        };
        let config_arg = config_for(upstream)?;
        let (gateway_child, url) = spawn_with_url(
            gateway,
            &["serve", "--config", &config_arg, "--bind", "127.0.0.1:0"],
        )
        .await?;
        let gateway_pid = gateway_child.0.id().context("gateway pid")?;
        let through = client(http_client(&url)?, modern).await?;

        // A stdio upstream is also measured behind `mcp-gateway stdio`, the way a client that
        // launches its servers (Claude Desktop, Cursor) uses it: stdio on both sides, like the
        // direct connection.
        let through_stdio = if upstream == "stdio" {
            let config = config_for("stdio-front")?;
            let mut command = tokio::process::Command::new(gateway);
            command.args(["stdio", "--config", &config]);
            let transport = TokioChildProcess::new(command)?;
            let pid = transport.id().context("stdio gateway pid")?;
            Some((client(transport, modern).await?, pid))
        } else {
            None
        };
        let mut paths = vec![
            (
                "direct",
                direct.peer(),
                "echo",
                None,
                Party::Process(direct_upstream),
            ),
            (
                "gateway",
                through.peer(),
                "echo__echo",
                Some(gateway_pid),
                upstream_of(gateway_pid),
            ),
        ];
        if let Some((through_stdio, pid)) = &through_stdio {
            paths.push((
                "gateway stdio",
                through_stdio.peer(),
                "echo__echo",
                Some(*pid),
                upstream_of(*pid),
            ));
        }
        let client_pid = std::process::id();
        for &concurrency in levels {
            for &(path, peer, tool, pid, upstream_party) in &paths {
                let gateway_party = pid.map_or(Party::None, Party::Process);
                let parties = [Party::Process(client_pid), gateway_party, upstream_party];
                let before = parties.map(Party::ticks);
                let m = measure(peer, Some(tool), calls, concurrency).await?;
                let after = parties.map(Party::ticks);
                let cpu: [Option<f64>; 3] =
                    std::array::from_fn(|i| per_call(before[i], after[i], m.calls));
                let rss = pid
                    .and_then(rss_kib)
                    .map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                    .unwrap_or_default();
                println!(
                    "| {upstream} | {path} | {concurrency} | {:.0} | {:.0} µs | {:.0} µs | {rss} | {} | {} | {} |",
                    m.throughput,
                    m.p50.as_secs_f64() * 1e6,
                    m.p99.as_secs_f64() * 1e6,
                    micros(cpu[0]),
                    micros(cpu[1]),
                    micros(cpu[2]),
                );
                rows.push(Row {
                    upstream,
                    path,
                    concurrency,
                    m,
                    cpu,
                });
            }
        }
        drop(gateway_child);
    }
    let _ = std::fs::remove_dir_all(&work);
    summary(&rows);
    Ok(())
}
