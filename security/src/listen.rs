//! Accepting connections for a tonic server, over TLS or (on loopback
//! only) plaintext, with the caller's identity read once per connection
//! and handed to every request as a [`PeerInfo`] extension.

use crate::audit::{AuditEvent, AuditSink};
use crate::error::{Result, SecurityError};
use crate::identity::Principal;
use crate::tls::ServerTls;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// Longest a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshaken connections waiting for the server to take them.
const BACKLOG: usize = 64;

/// Who is at the other end of a connection; in every request's extensions.
#[derive(Clone, Debug)]
pub struct PeerInfo {
    /// The caller's address.
    pub remote: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// What the caller's certificate names, if it presented one.
    pub principal: Option<Principal>,
}

impl PeerInfo {
    /// The connection info of a request, if it came through [`incoming`].
    pub fn of<T>(request: &tonic::Request<T>) -> Option<&PeerInfo> {
        request.extensions().get::<PeerInfo>()
    }
}

/// Whether a server may listen on `addr` without TLS: only where nothing
/// but this machine can reach it.
pub fn check_plaintext(addr: SocketAddr, what: &str) -> Result<()> {
    if addr.ip().is_loopback() {
        return Ok(());
    }
    Err(SecurityError::TlsRequired(format!(
        "refusing to serve the {what} on {addr} without TLS: anyone who can reach it could act as any worker, coordinator or user. Pass --tls-ca, --tls-cert and --tls-key (make them with `quarry certs init` and `quarry certs issue`), or listen on 127.0.0.1 for development"
    )))
}

/// One accepted connection.
pub struct Conn {
    stream: Stream,
    info: PeerInfo,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl tonic::transport::server::Connected for Conn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.info.clone()
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().stream {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match &self.stream {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Completes a TLS handshake and reads the caller's identity. A
/// certificate that verifies but names no Quarry identity counts as none.
async fn handshake(tls: &ServerTls, tcp: TcpStream, remote: SocketAddr) -> io::Result<Conn> {
    let config = tls
        .config()
        .ok_or_else(|| io::Error::other("TLS configuration unavailable"))?;
    let stream = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        tokio_rustls::TlsAcceptor::from(config).accept(tcp),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
    let principal = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(|leaf| match Principal::from_certificate(leaf) {
            Ok(principal) => Some(principal),
            Err(e) => {
                tracing::warn!(%remote, error = %e, "a caller's certificate names no identity");
                None
            }
        });
    Ok(Conn {
        stream: Stream::Tls(Box::new(stream)),
        info: PeerInfo {
            remote: Some(remote),
            tls: true,
            principal,
        },
    })
}

/// The connections a server accepts on `listener`: TLS with `tls`, else
/// plaintext. Handshakes run on tasks of their own, so a slow or hostile
/// client holds up nobody else; a failed one is logged, recorded in
/// `audit` (a certificate from another CA, a plaintext client) and dropped.
pub fn incoming(
    listener: TcpListener,
    tls: Option<Arc<ServerTls>>,
    audit: Option<Arc<dyn AuditSink>>,
) -> ReceiverStream<io::Result<Conn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(BACKLOG);
    tokio::spawn(async move {
        loop {
            let accepted = tokio::select! {
                accepted = listener.accept() => accepted,
                () = tx.closed() => return,
            };
            let (tcp, remote) = match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = tcp.set_nodelay(true);
            match &tls {
                None => {
                    let conn = Conn {
                        stream: Stream::Plain(tcp),
                        info: PeerInfo {
                            remote: Some(remote),
                            tls: false,
                            principal: None,
                        },
                    };
                    if tx.send(Ok(conn)).await.is_err() {
                        return;
                    }
                }
                Some(tls) => {
                    let (tls, tx, audit) = (tls.clone(), tx.clone(), audit.clone());
                    tokio::spawn(async move {
                        match handshake(&tls, tcp, remote).await {
                            Ok(conn) => {
                                let _ = tx.send(Ok(conn)).await;
                            }
                            Err(e) => {
                                tracing::info!(%remote, error = %e, "TLS handshake failed; connection dropped");
                                // A client that connected and left says nothing.
                                if let Some(audit) = audit
                                    && e.kind() != io::ErrorKind::UnexpectedEof
                                {
                                    audit.record(AuditEvent {
                                        principal: "unknown".to_owned(),
                                        role: String::new(),
                                        rpc: "(tls handshake)".to_owned(),
                                        target: String::new(),
                                        outcome: tonic::Code::Unauthenticated,
                                        detail: e.to_string(),
                                        remote: remote.ip().to_string(),
                                    });
                                }
                            }
                        }
                    });
                }
            }
        }
    });
    ReceiverStream::new(rx)
}
