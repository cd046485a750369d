//! The stdio front door (`mcp-gateway stdio`), for clients that launch a command.
//!
//! Only MCP messages are written to stdout; logs go to stderr (see `main.rs`). Each line the
//! client writes is checked as the HTTP front door checks a POST body (see [`Lines`]).

use std::{
    fs::File,
    os::{
        fd::{AsFd, BorrowedFd, OwnedFd},
        unix::fs::FileTypeExt,
    },
    sync::Arc,
};

use bytes::BytesMut;
use rmcp::{
    RoleServer, ServiceExt,
    model::{ClientJsonRpcMessage, ServerJsonRpcMessage},
    transport::Transport,
};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use super::{check_message, check_params};
use crate::{Gateway, handler::GatewayHandler};

/// Serves one client over this process's stdin and stdout until it disconnects.
pub async fn serve(gateway: Arc<Gateway>) -> anyhow::Result<()> {
    // A client that launches a command lists tools straight after connecting, and a one-shot
    // client never asks again: answer only once each upstream is connected or has failed an
    // attempt (or the connect timeout has passed), and serve the ones that are up. One that
    // cannot start does not hold up the others; its tools come with list_changed when it does.
    let _ = tokio::time::timeout(
        gateway.config.routing.connect_timeout,
        gateway.wait_settled(),
    )
    .await;
    let handler = GatewayHandler::stdio(gateway.clone());
    let limit = gateway.config.listen.max_body_bytes;
    let service = match handler.serve(Lines::new(reader(), writer(), limit)).await {
        Ok(service) => service,
        // The client went away before it initialized (a probe, or a client that gave up): an
        // end like any other, not a failure of the gateway.
        Err(rmcp::service::ServerInitializeError::ConnectionClosed(_)) => {
            tracing::info!("the client closed its input before it initialized");
            return Ok(());
        }
        Err(e) => return Err(e.into()),
    };
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

/// MCP as newline-delimited JSON over a reader and a writer, with each line checked before rmcp
/// sees it, as the HTTP front door checks a body: a line that is not JSON gets -32700, one that is
/// not a JSON-RPC 2.0 message -32600 (with its id when it has one), a list request whose cursor
/// is not a string -32602, and a line longer than `listen.max_body_bytes` -32600, without being
/// held in memory. The client's session goes on after each of them. rmcp's own line transport
/// answered a line that is not JSON with -32600 and a `"jsonrpc": "1.0"` request not at all.
pub struct Lines {
    reader: Reader,
    /// What has been read and not yet taken as a line.
    buf: BytesMut,
    /// How much of `buf` is known to hold no newline.
    scanned: usize,
    /// The line being read is over the limit: it is dropped up to its newline.
    discarding: bool,
    limit: usize,
    eof: bool,
    writer: Arc<tokio::sync::Mutex<Writer>>,
    /// Answers made here and not yet written, at most [`MAX_REPLIES`]: a client that sends bad
    /// lines without reading what comes back stops being read, instead of growing the memory.
    replies: Arc<tokio::sync::Semaphore>,
    /// Room for the next answer made here, taken before a line is.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// The tasks writing those answers, waited for before the writer is shut.
    writing: tokio_util::task::TaskTracker,
}

/// What [`Lines::next_line`] found in the buffer.
enum Next {
    Line(BytesMut),
    /// A line over the limit, answered here: the next line needs a new permit.
    Answered,
}

/// How many answers made by [`Lines`] may wait to be written.
const MAX_REPLIES: usize = 32;
/// How long closing waits for those answers to be written.
const REPLIES_AT_CLOSE: std::time::Duration = std::time::Duration::from_secs(5);

impl Lines {
    pub fn new(reader: Reader, writer: Writer, limit: usize) -> Self {
        Self {
            reader,
            buf: BytesMut::new(),
            scanned: 0,
            discarding: false,
            limit,
            eof: false,
            writer: Arc::new(tokio::sync::Mutex::new(writer)),
            replies: Arc::new(tokio::sync::Semaphore::new(MAX_REPLIES)),
            permit: None,
            writing: tokio_util::task::TaskTracker::new(),
        }
    }

    /// The next whole line in the buffer, without its line ending; `None` when more must be
    /// read first.
    fn next_line(&mut self) -> Option<Next> {
        loop {
            let Some(at) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') else {
                self.scanned = self.buf.len();
                // One byte more than the limit: a line's `\r` may come before its `\n`.
                if self.buf.len() > self.limit + 1 {
                    return self.too_long();
                }
                return None;
            };
            let mut line = self.buf.split_to(self.scanned + at + 1);
            self.scanned = 0;
            if std::mem::take(&mut self.discarding) {
                continue;
            }
            line.truncate(line.len() - 1);
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            if line.len() > self.limit {
                self.reply(serde_json::Value::Null, -32600, self.too_long_message());
                return Some(Next::Answered);
            }
            return Some(Next::Line(line));
        }
    }

    /// Drops the line being read, which is over the limit and has no end yet, and tells the
    /// client once.
    fn too_long(&mut self) -> Option<Next> {
        let answered = !self.discarding;
        if answered {
            self.reply(serde_json::Value::Null, -32600, self.too_long_message());
        }
        self.discarding = true;
        self.buf.clear();
        self.scanned = 0;
        answered.then_some(Next::Answered)
    }

    fn too_long_message(&self) -> String {
        format!(
            "Invalid Request: the message exceeds {} bytes (`listen.max_body_bytes`)",
            self.limit
        )
    }

    /// The message on `line`, or `None` when the line was blank or has been answered (or
    /// dropped) here.
    fn decode(&mut self, line: &[u8]) -> Option<ClientJsonRpcMessage> {
        // A byte-order mark, as rmcp's own transport allowed.
        let line = line.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(line);
        if line.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        let value: serde_json::Value = match serde_json::from_slice(line) {
            Ok(value) => value,
            Err(e) => {
                self.reply(serde_json::Value::Null, -32700, format!("Parse error: {e}"));
                return None;
            }
        };
        if let Err((id, why)) = check_message(&value) {
            self.refuse(&value, id, -32600, format!("Invalid Request: {why}"));
            return None;
        }
        if let Err((id, why)) = check_params(&value) {
            self.refuse(&value, id, -32602, why);
            return None;
        }
        // Typed from the bytes, as rmcp would: a duplicate key is refused, not resolved.
        match serde_json::from_slice(line) {
            Ok(message) => Some(message),
            Err(e) => {
                let id = value.get("id").cloned().unwrap_or(serde_json::Value::Null);
                self.refuse(&value, id, -32600, format!("Invalid Request: {e}"));
                None
            }
        }
    }

    /// Answers a message that cannot be taken, unless it is the client's response or a
    /// notification: those are never answered (JSON-RPC 2.0), and an error with a response's id
    /// would settle the client's own request of that id. They are logged and dropped.
    fn refuse(&mut self, value: &serde_json::Value, id: serde_json::Value, code: i64, why: String) {
        let object = value.as_object();
        let request = object.is_some_and(|o| o.contains_key("method") && o.contains_key("id"));
        if object.is_some() && !request {
            tracing::warn!(code, %why, "stdio: dropped a response or notification that cannot be read");
            return;
        }
        self.reply(id, code, why);
    }

    /// Answers a line that never reaches rmcp. The write runs in a task of its own, so that
    /// [`Transport::receive`] stays safe to cancel.
    fn reply(&mut self, id: serde_json::Value, code: i64, message: String) {
        tracing::debug!(code, %message, "stdio: answered a bad message");
        let mut line = serde_json::json!({
            "jsonrpc": "2.0",
            "id": id,
            "error": { "code": code, "message": message },
        })
        .to_string()
        .into_bytes();
        line.push(b'\n');
        let writer = self.writer.clone();
        let permit = self.permit.take();
        self.writing.spawn(async move {
            let _permit = permit;
            let mut writer = writer.lock().await;
            let _ = writer.write_all(&line).await;
            let _ = writer.flush().await;
        });
    }
}

impl Transport<RoleServer> for Lines {
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: ServerJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let writer = self.writer.clone();
        let line = serde_json::to_vec(&item);
        async move {
            let mut line = line.map_err(std::io::Error::other)?;
            line.push(b'\n');
            let mut writer = writer.lock().await;
            writer.write_all(&line).await?;
            writer.flush().await
        }
    }

    /// Cancel-safe: a line is taken from the buffer only when it is returned or answered.
    async fn receive(&mut self) -> Option<ClientJsonRpcMessage> {
        loop {
            if self.permit.is_none() {
                self.permit = Some(self.replies.clone().acquire_owned().await.ok()?);
            }
            match self.next_line() {
                Some(Next::Line(line)) => {
                    if let Some(message) = self.decode(&line) {
                        return Some(message);
                    }
                    continue;
                }
                Some(Next::Answered) => continue,
                None => {}
            }
            if self.eof {
                return None;
            }
            self.buf.reserve(8 * 1024);
            match self.reader.read_buf(&mut self.buf).await {
                Ok(0) => {
                    self.eof = true;
                    // A last message without a line ending is still a message.
                    if !self.buf.is_empty() && !self.discarding {
                        self.buf.extend_from_slice(b"\n");
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "stdio: cannot read stdin");
                    return None;
                }
            }
        }
    }

    /// Writes the answers made here first: an answer to the client's last line must not be
    /// lost to the shutdown (on a Unix socket, the shutdown ends the client's reading too).
    async fn close(&mut self) -> Result<(), Self::Error> {
        self.writing.close();
        let _ = tokio::time::timeout(REPLIES_AT_CLOSE, self.writing.wait()).await;
        self.writer.lock().await.shutdown().await
    }
}
