//! The DoT listener (RFC 7858): a TLS handshake with the current configuration's
//! certificate (a reload's new pair serves the next handshake; connections already
//! open keep theirs), within `tcp_idle_timeout`, then the same RFC 7766 connection as
//! plain TCP, with the same ACL, limits, cache and routes.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use crate::config::TcpOptions;
use crate::life::Lifecycle;
use crate::listen::accept::StreamStats;
use crate::listen::tcp::{self, Peers};
use crate::listen::Current;
use crate::tls::HandshakeError;
use crate::transport::Transport;

/// One DoT connection, from its accept.
pub async fn connection(
    stream: TcpStream,
    client: SocketAddr,
    handler: Current,
    life: Lifecycle,
    opts: TcpOptions,
    stats: Arc<StreamStats>,
) {
    let Some((tls, peers)) = accept(stream, client, &handler, opts, &stats, Transport::Tls).await
    else {
        return;
    };
    let (rd, wr) = tokio::io::split(tls);
    tcp::connection(rd, wr, peers, handler, life, opts).await;
}

/// The server side of a DoT or DoH handshake with the current certificate (its
/// configuration for `transport`'s ALPN), within `tcp_idle_timeout`, counted; a
/// failure is the client's (a wrong name, an unknown CA on its side) and logged at
/// debug.
pub async fn accept(
    stream: TcpStream,
    client: SocketAddr,
    handler: &Current,
    opts: TcpOptions,
    stats: &StreamStats,
    transport: Transport,
) -> Option<(TlsStream<TcpStream>, Peers)> {
    let _ = stream.set_nodelay(true);
    let server = stream.local_addr().ok()?;
    let config = {
        let current = handler.load();
        let identity = current.certificate.as_ref()?;
        Arc::clone(if transport == Transport::Https {
            &identity.doh
        } else {
            &identity.dot
        })
    };
    let counts = &stats.of(transport).handshakes;
    let outcome =
        match tokio::time::timeout(opts.idle, TlsAcceptor::from(config).accept(stream)).await {
            Ok(Ok(tls)) => Ok(tls),
            Ok(Err(e)) => Err(HandshakeError::of(&e)),
            Err(_) => Err(HandshakeError::timeout()),
        };
    match outcome {
        Ok(tls) => {
            let resumed = tls.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            counts.record(Ok(resumed));
            let peers = Peers {
                client,
                server,
                transport,
            };
            Some((tls, peers))
        }
        Err(e) => {
            counts.record(Err(e.failure));
            tracing::debug!(%client, reason = e.failure.as_str(), error = %e, "tls handshake with a client failed");
            None
        }
    }
}
