//! The egress proxy: HTTP CONNECT (and absolute-form plain HTTP) to the `host:port` endpoints a
//! spec allows, and nothing else. The runner serves it on a listening socket that the sandbox's
//! init opened inside the sandbox's network namespace, so the program reaches it at
//! `127.0.0.1:3128` while every other address is unreachable.

use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UnixListener};
use tokio::sync::mpsc;

use crate::protocol::Event;

const MAX_HEAD: usize = 16 * 1024;

/// Serves the proxy on `listener` (TCP inside a namespaces sandbox, a Unix socket for a gVisor
/// sandbox's egress shim) until it fails; reports every connection allowed or denied.
pub(crate) async fn serve(
    listener: impl Listener,
    allow: Arc<Vec<String>>,
    events: mpsc::UnboundedSender<Event>,
) {
    while let Ok(stream) = listener.next().await {
        let allow = allow.clone();
        let events = events.clone();
        tokio::spawn(async move {
            let _ = handle(stream, &allow, &events).await;
        });
    }
}

/// A listening socket the proxy can serve on.
pub(crate) trait Listener {
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn next(&self) -> impl Future<Output = std::io::Result<Self::Stream>>;
}

impl Listener for TcpListener {
    type Stream = TcpStream;
    async fn next(&self) -> std::io::Result<TcpStream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

impl Listener for UnixListener {
    type Stream = tokio::net::UnixStream;
    async fn next(&self) -> std::io::Result<Self::Stream> {
        self.accept().await.map(|(stream, _)| stream)
    }
}

/// Normalises `host:port` for comparison: lower-case host, brackets kept for IPv6.
fn normalise(target: &str) -> Option<String> {
    let (host, port) = target.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    if host.is_empty() {
        return None;
    }
    Some(format!("{}:{port}", host.to_ascii_lowercase()))
}

/// The target of a request head: `CONNECT host:port`, or `METHOD http://host[:port]/...`.
fn target_of(head: &str) -> Option<(bool, String)> {
    let line = head.lines().next()?;
    let mut parts = line.split(' ');
    let method = parts.next()?;
    let uri = parts.next()?;
    if method.eq_ignore_ascii_case("CONNECT") {
        return normalise(uri).map(|t| (true, t));
    }
    let rest = uri.strip_prefix("http://")?;
    let authority = rest.split('/').next()?;
    let authority = authority.rsplit('@').next()?;
    let target = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    normalise(&target).map(|t| (false, t))
}

async fn handle(
    mut client: impl AsyncRead + AsyncWrite + Unpin,
    allow: &[String],
    events: &mpsc::UnboundedSender<Event>,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 4096];
    let end = loop {
        let n = client.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
        if head.len() > MAX_HEAD {
            client
                .write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n")
                .await?;
            return Ok(());
        }
    };
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let Some((connect, target)) = target_of(&text) else {
        client
            .write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n")
            .await?;
        return Ok(());
    };
    if !allow
        .iter()
        .any(|a| normalise(a).as_deref() == Some(target.as_str()))
    {
        let _ = events.send(Event::Denied {
            action: "connect".into(),
            target: target.clone(),
            reason: "not on the network allow-list".into(),
        });
        client
            .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            .await?;
        return Ok(());
    }
    let host = target.rsplit_once(':').map(|(h, p)| {
        (
            h.trim_start_matches('[').trim_end_matches(']').to_owned(),
            p.to_owned(),
        )
    });
    let Some((host, port)) = host else {
        return Ok(());
    };
    let mut upstream = match TcpStream::connect(format!("{host}:{port}")).await {
        Ok(s) => s,
        Err(e) => {
            let _ = events.send(Event::Denied {
                action: "connect".into(),
                target: target.clone(),
                reason: format!("unreachable: {e}"),
            });
            client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                .await?;
            return Ok(());
        }
    };
    let _ = events.send(Event::Connected { target });
    if connect {
        client
            .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
            .await?;
        // Bytes the client sent after the head belong to the tunnel.
        upstream.write_all(&head[end..]).await?;
    } else {
        upstream.write_all(&head).await?;
    }
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        assert_eq!(
            target_of("CONNECT Example.com:443 HTTP/1.1\r\n"),
            Some((true, "example.com:443".into()))
        );
        assert_eq!(
            target_of("GET http://a.b:8080/x HTTP/1.1\r\n"),
            Some((false, "a.b:8080".into()))
        );
        assert_eq!(
            target_of("GET http://a.b/x HTTP/1.1\r\n"),
            Some((false, "a.b:80".into()))
        );
        assert_eq!(target_of("GET /x HTTP/1.1\r\n"), None);
        assert_eq!(target_of("CONNECT a.b HTTP/1.1\r\n"), None);
    }
}
