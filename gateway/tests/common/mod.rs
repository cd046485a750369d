//! Starting a gateway in-process on `127.0.0.1:0`, in front of the bundled demo server.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a panic in a test is a test failure"
)]
#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::{net::SocketAddr, sync::Arc, time::Duration};

use gateway::{
    Gateway,
    config::{Config, interpolate::Vars},
    front,
    upstream::launch::RunnerLauncher,
};

pub(crate) struct TestGateway {
    pub(crate) gateway: Arc<Gateway>,
    pub(crate) addr: SocketAddr,
    pub(crate) _dir: tempfile::TempDir,
}

impl TestGateway {
    pub(crate) fn url(&self) -> String {
        format!("http://{}/mcp", self.addr)
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.gateway.shutdown();
    }
}

/// The demo server (this package's own binary) as a `[servers.NAME]` table.
pub(crate) fn demo_server(name: &str) -> String {
    format!(
        "[servers.{name}]\ncommand = \"{}\"\nargs = [\"demo-server\"]\n",
        env!("CARGO_BIN_EXE_mcp-gateway")
    )
}

/// Starts a gateway with `extra` appended to a config that keeps its state in a temporary
/// directory, and waits until every upstream is connected.
pub(crate) async fn start(extra: &str) -> TestGateway {
    start_with_timeouts("call_secs = 5\nconnect_secs = 10", extra).await
}

/// Like [`start`], with the `[timeouts]` table given.
pub(crate) async fn start_with_timeouts(timeouts: &str, extra: &str) -> TestGateway {
    start_in(tempfile::tempdir().expect("tempdir"), timeouts, extra).await
}

/// The database URL of a gateway started in `dir` by [`start_in`].
pub(crate) fn database_url(dir: &std::path::Path) -> String {
    format!("sqlite://{}", dir.join("gateway.db").display())
}

/// Like [`start_with_timeouts`], keeping its state in `dir` (which may hold state already).
pub(crate) async fn start_in(dir: tempfile::TempDir, timeouts: &str, extra: &str) -> TestGateway {
    let gw = start_serving(dir, timeouts, extra).await;
    tokio::time::timeout(Duration::from_secs(20), gw.gateway.wait_ready())
        .await
        .expect("upstreams connect within 20 s");
    gw
}

/// A gateway serving at once, whatever state its upstreams are in (some may never connect).
pub(crate) async fn start_serving(
    dir: tempfile::TempDir,
    timeouts: &str,
    extra: &str,
) -> TestGateway {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // Tests that are not about authentication connect anonymously.
    let auth = if extra.contains("[auth]") {
        ""
    } else {
        "[auth]\nanonymous = true\n"
    };
    let text = format!(
        "[storage]\ndata_dir = \"{}\"\n{auth}[timeouts]\n{timeouts}\n{extra}",
        dir.path().display()
    );
    let config = Config::parse(&dir.path().join("gateway.toml"), &text, &Vars::fixed([]))
        .expect("test config is valid");
    let store = gateway::store::Store::open(&config.storage.database_url)
        .await
        .expect("the test database opens");
    let launcher = Arc::new(RunnerLauncher::new(
        &config.sandbox,
        &config.storage.data_dir,
    ));
    let gateway = Gateway::start(config, launcher, &store)
        .await
        .expect("the test gateway starts");
    // Binding before serving means the port is known and accepting before any client connects.
    let listener = front::http::bind("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(front::http::serve(gateway.clone(), listener));
    TestGateway {
        gateway,
        addr,
        _dir: dir,
    }
}
