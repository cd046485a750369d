//! The HTTP+SSE transport of protocol 2024-11-05, for remote servers that predate Streamable HTTP.
//!
//! The client opens a GET event stream; the server's first event, `endpoint`, names the URL to
//! POST messages to; every message from the server then arrives on the event stream. rmcp has no
//! client for this transport, so this is the gateway's own, as an rmcp [`Transport`].

use futures::StreamExt;
use reqwest::{
    Url,
    header::{ACCEPT, HeaderMap},
};
use rmcp::{
    RoleClient,
    model::{ClientJsonRpcMessage, ServerJsonRpcMessage},
    transport::Transport,
};
use sse_stream::SseStream;
use tokio::sync::mpsc;

/// Messages from the server waiting for the client; the event stream pauses when this is full.
const INCOMING_CAPACITY: usize = 64;

/// Why the legacy SSE transport failed.
#[derive(Debug, thiserror::Error)]
pub enum LegacySseError {
    #[error("request to {url} failed: {source}")]
    Http {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url} answered HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("the event stream ended before the server named its message endpoint")]
    NoEndpoint,
    #[error("the message endpoint `{0}` is not a URL on the same origin as the event stream")]
    BadEndpoint(String),
}

/// A connected HTTP+SSE session.
pub struct LegacySseTransport {
    client: reqwest::Client,
    endpoint: Url,
    headers: HeaderMap,
    incoming: mpsc::Receiver<ServerJsonRpcMessage>,
    reader: tokio::task::JoinHandle<()>,
}

impl LegacySseTransport {
    /// Opens the event stream at `url` and waits for the server's `endpoint` event.
    pub async fn connect(
        client: reqwest::Client,
        url: &str,
        headers: HeaderMap,
    ) -> Result<Self, LegacySseError> {
        let http = |source| LegacySseError::Http {
            url: url.to_owned(),
            source,
        };
        let base = Url::parse(url).map_err(|_| LegacySseError::BadEndpoint(url.to_owned()))?;
        let response = client
            .get(base.clone())
            .headers(headers.clone())
            .header(ACCEPT, "text/event-stream")
            .send()
            .await
            .map_err(http)?;
        if !response.status().is_success() {
            return Err(LegacySseError::Status {
                url: url.to_owned(),
                status: response.status().as_u16(),
            });
        }
        let mut events = SseStream::from_bytes_stream(response.bytes_stream());
        let endpoint = loop {
            match events.next().await {
                Some(Ok(event)) if event.event.as_deref() == Some("endpoint") => {
                    break event.data.unwrap_or_default();
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(LegacySseError::NoEndpoint),
            }
        };
        let endpoint = base
            .join(endpoint.trim())
            .map_err(|_| LegacySseError::BadEndpoint(endpoint.clone()))?;
        // The endpoint comes from the server; sending our headers (which may hold a bearer
        // token) to another origin because a server said so would leak them.
        if endpoint.origin() != base.origin() {
            return Err(LegacySseError::BadEndpoint(endpoint.to_string()));
        }
        let (tx, incoming) = mpsc::channel(INCOMING_CAPACITY);
        let server = url.to_owned();
        let reader = tokio::spawn(async move {
            while let Some(event) = events.next().await {
                let Ok(event) = event else { break };
                if !matches!(event.event.as_deref(), None | Some("message")) {
                    continue;
                }
                let Some(data) = event.data else { continue };
                match serde_json::from_str::<ServerJsonRpcMessage>(&data) {
                    Ok(message) => {
                        if tx.send(message).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(server, error = %e, "ignored an event that is not a JSON-RPC message")
                    }
                }
            }
        });
        Ok(Self {
            client,
            endpoint,
            headers,
            incoming,
            reader,
        })
    }
}

impl Drop for LegacySseTransport {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Transport<RoleClient> for LegacySseTransport {
    type Error = LegacySseError;

    fn send(
        &mut self,
        item: ClientJsonRpcMessage,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let request = self
            .client
            .post(self.endpoint.clone())
            .headers(self.headers.clone())
            .json(&item);
        let url = self.endpoint.to_string();
        async move {
            let response = request
                .send()
                .await
                .map_err(|source| LegacySseError::Http {
                    url: url.clone(),
                    source,
                })?;
            if !response.status().is_success() {
                return Err(LegacySseError::Status {
                    url,
                    status: response.status().as_u16(),
                });
            }
            Ok(())
        }
    }

    async fn receive(&mut self) -> Option<ServerJsonRpcMessage> {
        self.incoming.recv().await
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.reader.abort();
        Ok(())
    }
}
