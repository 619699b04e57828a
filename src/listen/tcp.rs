//! One DNS stream connection (RFC 7766), plain TCP or a DoT connection once its TLS
//! handshake is done (RFC 7858 section 3.3): queries read while earlier ones are still
//! being forwarded, answered in whatever order they finish. `accept` holds the limits
//! a connection is accepted within.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::admit::Action;
use crate::config::TcpOptions;
use crate::life::Lifecycle;
use crate::listen::Current;
use crate::transport::Transport;
use crate::wire;

/// A plain TCP connection, from its accept.
pub async fn plain(
    stream: TcpStream,
    client: SocketAddr,
    handler: Current,
    life: Lifecycle,
    opts: TcpOptions,
) {
    let _ = stream.set_nodelay(true);
    // The address the client reached: the interface's, even on a wildcard listener.
    let Ok(server) = stream.local_addr() else {
        return;
    };
    let (rd, wr) = stream.into_split();
    let peers = Peers {
        client,
        server,
        transport: Transport::Tcp,
    };
    connection(rd, wr, peers, handler, life, opts).await;
}

/// The two ends of a connection, and the transport it is (TCP, DoT).
#[derive(Debug, Clone, Copy)]
pub struct Peers {
    pub client: SocketAddr,
    /// This end: the address the client reached.
    pub server: SocketAddr,
    pub transport: Transport,
}

/// One client connection (RFC 7766): queries are read while earlier ones are still
/// being forwarded, answered in whatever order they finish, at most `pipelined` in
/// flight; idle connections close after `idle`.
pub async fn connection<R, W>(
    rd: R,
    wr: W,
    peers: Peers,
    handler: Current,
    life: Lifecycle,
    opts: TcpOptions,
) where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin,
{
    let Peers {
        client,
        server,
        transport,
    } = peers;
    let (answered, answers) = mpsc::channel::<Vec<u8>>(opts.pipelined);
    let reader = Reader {
        client,
        server,
        transport,
        handler,
        life,
        opts,
        answered,
    };
    // The reader drops its sender once its last query is answered; the writer then
    // ends.
    tokio::join!(reader.run(rd), write_answers(wr, answers, opts.idle));
}

/// Writes each answer as it comes, framed; gives up on a client that stops reading.
async fn write_answers<W: AsyncWrite + Unpin>(
    mut wr: W,
    mut answers: mpsc::Receiver<Vec<u8>>,
    idle: Duration,
) {
    while let Some(msg) = answers.recv().await {
        let frame = wire::framed(&msg);
        // A client that stops reading must not hold the task forever.
        // Flushed each time: a TLS stream holds what it was given until then.
        let written = async {
            wr.write_all(&frame).await?;
            wr.flush().await
        };
        match tokio::time::timeout(idle, written).await {
            Ok(Ok(())) => {}
            _ => return,
        }
    }
    let _ = wr.shutdown().await;
}

/// A forwarded query of this connection, running in the connection's own task.
type Answering = Pin<Box<dyn Future<Output = Vec<u8>> + Send>>;

/// What waiting for the next message came to.
enum Next {
    Message(Vec<u8>),
    /// No first byte for `tcp_idle_timeout`: idle, unless answers are still pending.
    Quiet,
    /// End of stream, an error, a slow or runt message, the lifetime, the server
    /// stopping: close.
    Close,
}

/// The reading side of a connection, and what it hands each query to.
struct Reader {
    client: SocketAddr,
    /// This end of the connection.
    server: SocketAddr,
    transport: Transport,
    handler: Current,
    life: Lifecycle,
    opts: TcpOptions,
    answered: mpsc::Sender<Vec<u8>>,
}

impl Reader {
    /// Reads queries and answers them until the client stops, the connection has lived
    /// or served its share (RFC 9210 section 4: past either, zonefwd stops reading,
    /// answers what it has, and closes), or the server stops. Forwarded queries run
    /// here, side by side in one `FuturesUnordered`, not in a task each; at most
    /// `tcp_max_pipelined` at once, past which reading waits.
    async fn run<R: AsyncRead + Unpin + Send + 'static>(self, rd: R) {
        let end_of_life = tokio::time::Instant::now() + self.opts.lifetime;
        let mut jobs: FuturesUnordered<Answering> = FuturesUnordered::new();
        let mut read = 0;
        // Kept across the loop's turns: a message half read is never dropped.
        let mut reading = Box::pin(next_message(
            rd,
            self.client,
            self.opts,
            self.life.clone(),
            end_of_life,
        ));
        let mut open = true;
        while open || !jobs.is_empty() {
            let may_read = open && jobs.len() < self.opts.pipelined;
            tokio::select! {
                Some(out) = jobs.next(), if !jobs.is_empty() => {
                    if self.answered.send(out).await.is_err() {
                        return;
                    }
                }
                (rd, next) = &mut reading, if may_read => {
                    match next {
                        Next::Message(msg) => {
                            read += 1;
                            if !self.dispatch(&msg, &mut jobs).await {
                                return;
                            }
                        }
                        Next::Quiet if !jobs.is_empty() => {}
                        Next::Quiet | Next::Close => open = false,
                    }
                    if read >= self.opts.max_queries {
                        tracing::debug!(client = %self.client, "closing a tcp connection at server.tcp_max_queries_per_connection");
                        open = false;
                    }
                    if open {
                        reading.set(next_message(rd, self.client, self.opts, self.life.clone(), end_of_life));
                    }
                }
            }
        }
    }

    /// Answers `msg` now or adds its job; `false` when the writer is gone.
    async fn dispatch(&self, msg: &[u8], jobs: &mut FuturesUnordered<Answering>) -> bool {
        match self
            .handler
            .load()
            .prepare(msg, self.client, self.server, self.transport)
        {
            Action::Drop => true,
            Action::Reply(out) => self.answered.send(out).await.is_ok(),
            Action::Forward(job) => {
                // Boxed once here, so the set moves pointers, not a forwarded query's
                // whole state.
                jobs.push(Box::pin(job.run()));
                true
            }
        }
    }
}

/// The next message on `rd`, handed back with `rd` so that the reader can keep the
/// same future across its turns.
async fn next_message<R: AsyncRead + Unpin>(
    mut rd: R,
    client: SocketAddr,
    opts: TcpOptions,
    life: Lifecycle,
    end_of_life: tokio::time::Instant,
) -> (R, Next) {
    // Waiting for the first byte of the next message is where a connection is idle.
    let mut first = [0u8; 1];
    let got = tokio::select! {
        _ = life.shutdown.cancelled() => return (rd, Next::Close),
        _ = tokio::time::sleep_until(end_of_life) => {
            tracing::debug!(%client, "closing a tcp connection at server.tcp_max_lifetime");
            return (rd, Next::Close);
        }
        r = tokio::time::timeout(opts.idle, rd.read(&mut first)) => r,
    };
    let first = match got {
        Ok(Ok(1)) => first[0],
        Ok(_) => return (rd, Next::Close), // EOF or error
        Err(_) => {
            tracing::debug!(%client, "no query on a tcp connection for server.tcp_idle_timeout");
            return (rd, Next::Quiet);
        }
    };
    // The rest of the message must follow promptly (slow-read clients).
    let msg = tokio::time::timeout(opts.idle, wire::read_framed_after(&mut rd, first)).await;
    let Ok(Ok(msg)) = msg else {
        return (rd, Next::Close);
    };
    if msg.len() < wire::HEADER_LEN {
        tracing::debug!(%client, "closing a tcp connection that sent a runt message");
        return (rd, Next::Close);
    }
    (rd, Next::Message(msg))
}
