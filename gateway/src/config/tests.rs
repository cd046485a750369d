//! Tests of configuration parsing, validation and error messages.

use std::path::Path;

use expect_test::{Expect, expect};

use super::{interpolate::Vars, *};

fn vars() -> Vars {
    Vars::fixed([
        ("API_TOKEN".to_owned(), "tok".to_owned()),
        ("MCP_GATEWAY_EXE".to_owned(), "/bin/gw".to_owned()),
    ])
}

fn check_err(text: &str, expected: Expect) {
    match Config::parse(Path::new("/etc/gw/gateway.toml"), text, &vars()) {
        Ok(_) => panic!("expected an error for:\n{text}"),
        Err(e) => expected.assert_eq(&e.to_string()),
    }
}

#[test]
fn defaults_are_closed() {
    let config = Config::parse(Path::new("/etc/gw/gateway.toml"), "", &vars()).unwrap();
    // Every stdio server runs sandboxed, with no fallback to a weaker tier.
    assert_eq!(
        config.sandbox.tier,
        sandbox_runner::protocol::Tier::Namespaces
    );
    assert_eq!(config.sandbox.fallback, None);
    assert_eq!(config.listen.bind.to_string(), "127.0.0.1:8080");
    assert_eq!(config.listen.path, "/mcp");
    assert_eq!(
        config.listen.allowed_hosts,
        ["localhost", "127.0.0.1", "::1"]
    );
    assert_eq!(
        config.listen.allowed_origins,
        ["http://localhost:*", "http://127.0.0.1:*", "http://[::1]:*"]
    );
    assert_eq!(config.listen.max_body_bytes, 4 * 1024 * 1024);
    assert_eq!(config.listen.max_sessions, 1024);
    assert_eq!(config.listen.max_sessions_per_client, 256);
    assert_eq!(config.listen.session_idle, Duration::from_secs(300));
    assert_eq!(
        config.storage.database_url,
        "sqlite:///etc/gw/data/gateway.db"
    );
    assert_eq!(config.routing.separator, "__");
    assert!(!config.routing.pass_through);
}

#[test]
fn servers_parse_and_interpolate() {
    let text = r#"
[servers.demo]
command = "${MCP_GATEWAY_EXE}"
args = ["demo-server"]
env = { KEY = "${API_TOKEN}" }

[servers.remote]
url = "https://mcp.example.com/mcp"
bearer_token = "${API_TOKEN}"
sessions = "per-client"
call_timeout_secs = 5
"#;
    let config = Config::parse(Path::new("/etc/gw/gateway.toml"), text, &vars()).unwrap();
    assert_eq!(config.servers.len(), 2);
    let TransportSpec::Stdio(stdio) = &config.servers[0].transport else {
        panic!("demo is stdio")
    };
    assert_eq!(stdio.command, "/bin/gw");
    assert_eq!(stdio.args, ["demo-server"]);
    use secrecy::ExposeSecret;
    assert_eq!(stdio.env["KEY"].expose_secret(), "tok");
    assert_eq!(config.servers[1].sessions, SessionMode::PerClient);
    assert_eq!(config.servers[1].call_timeout, Duration::from_secs(5));
    // Secrets never appear in debug output, which is what logs would show.
    assert!(!format!("{config:?}").contains("tok\""));
}

#[test]
fn errors_name_file_line_and_key() {
    check_err(
        "[listen]\nbind = \"127.0.0.1:1\"\nalowed_hosts = []\n",
        expect![
            "/etc/gw/gateway.toml:3: unknown field `alowed_hosts`, expected one of `bind`, `path`, `allowed_hosts`, `allowed_origins`, `max_body_bytes`, `max_connections`, `max_sessions`, `max_sessions_per_client`, `session_idle_secs`"
        ],
    );
    check_err(
        "[listen]\nbind = \"0.0.0.0:8080\"\nallowed_hosts = []\n",
        expect![
            "/etc/gw/gateway.toml:3: listen.allowed_hosts: an empty list would accept requests for any Host (no DNS-rebinding protection); list the names clients use to reach the gateway, or leave the key out for the loopback names"
        ],
    );
    check_err(
        "\n[servers.demo]\ncomand = \"x\"\n",
        expect![
            "/etc/gw/gateway.toml:3: unknown field `comand`, expected one of `command`, `args`, `env`, `cwd`, `url`, `transport`, `type`, `headers`, `bearer_token`, `sessions`, `call_timeout_secs`, `max_concurrent`, `idle_suspend_secs`, `lazy`, `enabled`, `verification`, `allow_single_hash`, `public_key`, `signed_tools`, `sandbox`, `domain`"
        ],
    );
    check_err(
        "\n\n[servers.demo]\nurl = \"https://x\"\nbearer_token = \"${NOPE_NOT_SET_ANYWHERE}\"\n",
        expect![[
            r#"/etc/gw/gateway.toml:3: servers.demo.bearer_token: environment variable `NOPE_NOT_SET_ANYWHERE` is not set"#
        ]],
    );
    check_err(
        "[servers.demo]\ncommand = \"x\"\n[servers.demo.sandbox]\ntier = \"chroot\"\n",
        expect![[
            r#"/etc/gw/gateway.toml:1: servers.demo.sandbox.tier: unknown tier `chroot` (expected namespaces, gvisor or process)"#
        ]],
    );
    check_err(
        "[servers.demo]\ncommand = \"x\"\nsandbox = { allow_net = [\"example.com\"] }\n",
        expect![[
            r#"/etc/gw/gateway.toml:1: servers.demo.sandbox.allow_net: `example.com` is not a host:port endpoint"#
        ]],
    );
    check_err(
        "\n[sandbox]\nproduction = true\nfallback = \"process\"\n",
        expect![[
            r#"/etc/gw/gateway.toml:2: sandbox: the `process` tier isolates nothing and is refused with `production = true`"#
        ]],
    );
    check_err(
        "[servers.far]\nurl = \"https://x\"\nidle_suspend_secs = 60\n",
        expect![[
            r#"/etc/gw/gateway.toml:1: servers.far.idle_suspend_secs: applies only to `command` servers"#
        ]],
    );
    check_err(
        "[sandbox.limits]\nmemory = \"lots\"\n",
        expect![[
            r#"/etc/gw/gateway.toml:1: sandbox.limits.memory: `lots` is not a size (like 512M or 1GiB)"#
        ]],
    );
    check_err(
        "[servers.Bad_Name]\ncommand = \"x\"\n",
        expect![[
            r#"/etc/gw/gateway.toml:1: servers.Bad_Name: a server name is 1 to 63 lowercase letters, digits and `-`, starting with a letter"#
        ]],
    );
    check_err(
        "[servers.a]\ncommand = \"x\"\nurl = \"http://y\"\n",
        expect![[
            r#"/etc/gw/gateway.toml:1: servers.a: set either `command` (stdio) or `url` (remote), not both"#
        ]],
    );
    check_err(
        "[routing]\nseparator = \"-\"\n",
        expect![[r#"/etc/gw/gateway.toml: routing.separator: must be one or more of `_` and `.`"#]],
    );
    check_err(
        "[routing]\npass_through = true\n",
        expect![[
            r#"/etc/gw/gateway.toml: routing.pass_through: requires exactly one enabled server"#
        ]],
    );
    check_err(
        "listen = 3\n",
        expect![[
            r#"/etc/gw/gateway.toml:1: invalid type: integer `3`, expected struct RawListen"#
        ]],
    );
}

#[test]
fn imports_claude_and_vscode_files_unchanged() {
    let claude = r#"{"mcpServers": {
        "My Files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]},
        "time": {"command": "uvx", "args": ["mcp-server-time"], "env": {"TZ": "UTC"}, "disabled": true, "autoApprove": []},
        "remote": {"url": "https://example.com/mcp"}
    }}"#;
    let servers = import::parse_mcp_servers("claude.json", claude).unwrap();
    let names: Vec<_> = servers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["my-files", "remote", "time"]);
    assert_eq!(servers[2].1.enabled, Some(false));

    let vscode =
        r#"{"servers": {"gh": {"type": "http", "url": "https://x/mcp", "headers": {"A": "b"}}}}"#;
    let servers = import::parse_mcp_servers("mcp.json", vscode).unwrap();
    assert_eq!(servers[0].1.transport.as_deref(), Some("streamable-http"));

    let err =
        import::parse_mcp_servers("bad.json", "{\"mcpServers\": {\n  \"a\": 3}}").unwrap_err();
    expect![
        "bad.json: invalid type: integer `3`, expected struct ClientServerEntry at line 2 column 8"
    ]
    .assert_eq(&err.to_string());
    let err = import::parse_mcp_servers(
        "c.json",
        r#"{"mcpServers": {"a b": {"command": "x"}, "a-b": {"command": "y"}}}"#,
    )
    .unwrap_err();
    expect![[r#"c.json: servers `a b` and `a-b` both become `a-b`"#]].assert_eq(&err.to_string());

    // A byte-order mark, as Windows editors write, is read past; a file with no servers at all
    // is an error, not an import of nothing; an empty object is an import of nothing.
    let servers = import::parse_mcp_servers(
        "bom.json",
        "\u{feff}{\"mcpServers\": {\"a\": {\"command\": \"x\"}}}",
    )
    .unwrap();
    assert_eq!(servers.len(), 1);
    let err = import::parse_mcp_servers("other.json", r#"{"theme": "dark"}"#).unwrap_err();
    expect![[r#"other.json: no `mcpServers` (or `servers`) object, so no server to import"#]]
        .assert_eq(&err.to_string());
    assert!(
        import::parse_mcp_servers("empty.json", r#"{"mcpServers": {}}"#)
            .unwrap()
            .is_empty()
    );
    // The cause is said once, also through anyhow's chain.
    let err = import::read_mcp_servers(Path::new("/no/such/file.json")).unwrap_err();
    let chained = format!("{:#}", anyhow::Error::from(err));
    assert_eq!(chained.matches("No such file").count(), 1, "{chained}");
}

#[test]
fn slugs() {
    assert_eq!(import::slug("My Server").as_deref(), Some("my-server"));
    assert_eq!(
        import::slug("github_tools").as_deref(),
        Some("github-tools")
    );
    assert_eq!(import::slug("9lives").as_deref(), Some("lives"));
    assert_eq!(import::slug("___"), None);
}

#[test]
fn access_defaults_are_closed_and_errors_name_the_section() {
    let config = Config::parse(Path::new("/etc/gw/gateway.toml"), "", &vars()).unwrap();
    assert!(!config.auth.anonymous, "anonymous access is off by default");
    assert!(config.auth.issuers.is_empty());
    assert_eq!(config.auth.stdio_client, "stdio");
    assert!(config.policy.file.is_none());
    assert_eq!(config.policy.output_schema, access::OutputCheck::Warn);
    assert!(config.limits.rules.is_empty());

    check_err(
        "[auth]\nanonymus = true\n",
        expect![
            "/etc/gw/gateway.toml:2: unknown field `anonymus`, expected one of `anonymous`, `anonymous_beyond_loopback`, `jwt`, `stdio_client`, `stdio_groups`"
        ],
    );
    check_err(
        "\n[[auth.jwt]]\nissuer = \"https://idp\"\naudience = [\"gw\"]\nkeys = [\"k.pem\"]\nalgorithms = [\"HS256\"]\n",
        expect![[
            r#"/etc/gw/gateway.toml:2: auth.jwt[0].algorithms: JWT algorithm `HS256` is an HMAC algorithm; only public-key algorithms are accepted"#
        ]],
    );
    check_err(
        "[[auth.jwt]]\nissuer = \"https://idp\"\naudience = [\"gw\"]\njwks_url = \"http://idp.example/jwks\"\n",
        expect![[
            r#"/etc/gw/gateway.toml:1: auth.jwt[0].jwks_url: must be https (plain http only to loopback with allow_http_loopback)"#
        ]],
    );
    check_err(
        "[[auth.jwt]]\nissuer = \"https://idp\"\naudience = [\"gw\"]\n",
        expect![[
            r#"/etc/gw/gateway.toml:1: auth.jwt[0]: set exactly one of `jwks_url` and `keys`"#
        ]],
    );
    check_err(
        "[policy]\noutput_schema = \"ignore\"\n",
        expect![[
            r#"/etc/gw/gateway.toml:1: policy.output_schema: `ignore` is neither `warn` nor `refuse`"#
        ]],
    );
    check_err(
        "[limits]\nbackend = \"redis\"\n",
        expect![[r#"/etc/gw/gateway.toml:1: limits.redis_url: required with backend = "redis""#]],
    );
    check_err(
        "[listen]\n\n[[limits.rules]]\nscope = \"galaxy\"\nrequests = 1\nper_secs = 1\n",
        expect![[
            r#"/etc/gw/gateway.toml:3: limits.rules[0].scope: `galaxy` is not one of `global`, `server`, `client`, `client-tool`"#
        ]],
    );
    check_err(
        "[[limits.rules]]\nscope = \"client\"\nmethods = [\"tools/cal\"]\nrequests = 1\nper_secs = 1\n",
        expect![[
            r#"/etc/gw/gateway.toml:1: limits.rules[0].methods: `tools/cal` is not one of tools/call, tools/list, resources/read, resources/list, resources/templates/list, prompts/get, prompts/list"#
        ]],
    );
    check_err(
        "[[limits.rules]]\nscope = \"client\"\nrequests = 0\nper_secs = 1\n",
        expect![[r#"/etc/gw/gateway.toml:1: limits.rules[0].requests: must be at least 1"#]],
    );
    check_err(
        "[servers.a]\ncommand = \"x\"\nmax_concurrent = 0\n",
        expect![[r#"/etc/gw/gateway.toml:1: servers.a.max_concurrent: must be at least 1"#]],
    );
}

#[test]
fn a_session_outlives_the_call_timeout() {
    let parse = |text: &str| Config::parse(Path::new("/etc/gw/gateway.toml"), text, &vars());
    // Unset, the idle time grows with a longer call timeout.
    let config = parse("[timeouts]\ncall_secs = 900\n").unwrap();
    assert_eq!(config.listen.session_idle, Duration::from_secs(900));
    // Set shorter than the call timeout, it is an error that says why.
    let error = parse("[listen]\nsession_idle_secs = 30\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("listen.session_idle_secs: 30 is shorter than the call timeout (60 s"),
        "{error}"
    );
}

#[test]
fn anonymous_access_beyond_loopback_must_be_asked_for() {
    check_err(
        "[listen]\nbind = \"0.0.0.0:8080\"\n\n[auth]\nanonymous = true\n",
        expect![[
            r#"/etc/gw/gateway.toml:4: auth.anonymous: anonymous access on 0.0.0.0:8080, which is not a loopback address, would let anyone who can reach it call every tool; use API keys (`mcp-gateway clients create`) or JWTs, or, behind a proxy that authenticates every request, set auth.anonymous_beyond_loopback = true"#
        ]],
    );
    let parse = |text: &str| Config::parse(Path::new("/etc/gw/gateway.toml"), text, &vars());
    // Asked for, behind a proxy; anonymous on loopback; credentials on any address.
    parse("[listen]\nbind = \"0.0.0.0:8080\"\n[auth]\nanonymous = true\nanonymous_beyond_loopback = true\n")
        .unwrap();
    parse("[listen]\nbind = \"[::1]:8080\"\n[auth]\nanonymous = true\n").unwrap();
    let config = parse("[listen]\nbind = \"0.0.0.0:8080\"\n").unwrap();
    assert!(
        config
            .auth
            .check_bind("192.0.2.1:80".parse().unwrap())
            .is_ok()
    );
    let anonymous = parse("[auth]\nanonymous = true\n").unwrap();
    assert!(
        anonymous
            .auth
            .check_bind("192.0.2.1:80".parse().unwrap())
            .is_err()
    );
}

#[test]
fn a_relative_command_is_beside_the_config_and_a_bare_one_on_path() {
    let text = "[servers.local]\ncommand = \"./bin/server.py\"\n[servers.onpath]\ncommand = \"uvx\"\n[servers.absolute]\ncommand = \"/opt/server\"\n";
    let config = Config::parse(Path::new("/etc/gw/gateway.toml"), text, &vars()).unwrap();
    let command = |name: &str| {
        let server = config.servers.iter().find(|s| s.name == name).unwrap();
        match &server.transport {
            TransportSpec::Stdio(stdio) => stdio.command.clone(),
            TransportSpec::Http(_) => panic!("{name} is stdio"),
        }
    };
    assert_eq!(command("local"), "/etc/gw/./bin/server.py");
    assert_eq!(command("onpath"), "uvx");
    assert_eq!(command("absolute"), "/opt/server");
}
