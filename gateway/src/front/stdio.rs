//! The stdio front door (`mcp-gateway stdio`), for clients that launch a command.
//!
//! Only MCP messages are written to stdout; logs go to stderr (see `main.rs`).

use std::{
    fs::File,
    os::{
        fd::{AsFd, BorrowedFd, OwnedFd},
        unix::fs::FileTypeExt,
    },
    sync::Arc,
};

use rmcp::ServiceExt;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::{Gateway, handler::GatewayHandler};

/// Serves one client over this process's stdin and stdout until it disconnects.
pub async fn serve(gateway: Arc<Gateway>) -> anyhow::Result<()> {
    // A client that launches a command lists tools straight after connecting, and a one-shot
    // client never asks again: answer only once the upstreams are connected (or the connect
    // timeout has passed, after which the ones that are up are served).
    let _ =
        tokio::time::timeout(gateway.config.routing.connect_timeout, gateway.wait_ready()).await;
    let handler = GatewayHandler::stdio(gateway.clone());
    let service = handler.serve((reader(), writer())).await?;
    let _ = service.waiting().await;
    Ok(())
}

type Reader = Box<dyn AsyncRead + Send + Unpin>;
type Writer = Box<dyn AsyncWrite + Send + Unpin>;

/// Stdin as an async reader. A client that launches the gateway hands it a pipe (Python, Rust)
/// or a Unix socket (Node's `child_process`); either is read in non-blocking mode on the runtime
/// itself. Anything else (a terminal, a file) goes through tokio's blocking-pool stdin, which
/// costs a hand-off between threads for every read.
fn reader() -> Reader {
    on_runtime::<Reader>(
        std::io::stdin().as_fd(),
        "stdin",
        |fd| {
            Ok(Box::new(tokio::net::unix::pipe::Receiver::from_owned_fd(
                fd,
            )?))
        },
        |socket| Box::new(socket),
    )
    .unwrap_or_else(|| Box::new(tokio::io::stdin()))
}

/// Stdout as an async writer, on the same terms as [`reader`].
fn writer() -> Writer {
    on_runtime::<Writer>(
        std::io::stdout().as_fd(),
        "stdout",
        |fd| Ok(Box::new(tokio::net::unix::pipe::Sender::from_owned_fd(fd)?)),
        |socket| Box::new(socket),
    )
    .unwrap_or_else(|| Box::new(tokio::io::stdout()))
}

/// A duplicate of `fd` registered with the runtime, when it is a pipe or a socket.
fn on_runtime<T>(
    fd: BorrowedFd<'_>,
    name: &str,
    pipe: impl FnOnce(OwnedFd) -> std::io::Result<T>,
    socket: impl FnOnce(tokio::net::UnixStream) -> T,
) -> Option<T> {
    let file = File::from(fd.try_clone_to_owned().ok()?);
    let kind = file.metadata().ok()?.file_type();
    let fd = OwnedFd::from(file);
    let pollable = if kind.is_fifo() {
        pipe(fd)
    } else if kind.is_socket() {
        let stream = std::os::unix::net::UnixStream::from(fd);
        stream
            .set_nonblocking(true)
            .and_then(|()| tokio::net::UnixStream::from_std(stream))
            .map(socket)
    } else {
        return None;
    };
    pollable
        .inspect_err(|e| tracing::debug!(error = %e, "{name}: not pollable; using tokio's"))
        .ok()
}
