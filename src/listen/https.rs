//! The DoH listener (RFC 8484): HTTP/2 and HTTP/1.1 over TLS (chosen by ALPN),
//! `GET /dns-query?dns=` (base64url) and `POST /dns-query` (`application/dns-message`).
//! Each request is one query through the same admission stages, cache and routes as
//! any other; its answer carries `Cache-Control: max-age` from its smallest TTL
//! (section 5.1). The client, for the ACL and the limits, is the TCP peer: no
//! `X-Forwarded-For` is believed, since anyone can write one. A connection closes when
//! idle for `tcp_idle_timeout`, past `tcp_max_lifetime` or
//! `tcp_max_queries_per_connection`, or when the server stops, each gracefully
//! (requests in flight are answered first).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderValue, ALLOW, CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::admit::Action;
use crate::config::TcpOptions;
use crate::life::Lifecycle;
use crate::listen::accept::StreamStats;
use crate::listen::tcp::Peers;
use crate::listen::tls::accept;
use crate::listen::Current;
use crate::transport::Transport;
use crate::wire;

/// The one path queries are taken on (RFC 8484 section 4.1's example, and every
/// client's default).
pub const PATH: &str = "/dns-query";
const DNS_MESSAGE: &str = "application/dns-message";

/// base64url as RFC 8484 section 4.1 writes it (no padding), and with it too.
const BASE64URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// When a connection last saw a request start or end, and what it has in hand.
struct Activity {
    started: Instant,
    last_ms: AtomicU64,
    inflight: AtomicUsize,
    served: AtomicUsize,
}

impl Activity {
    fn touch(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// Why the connection should close now, if it should.
    fn why_close(&self, opts: &TcpOptions) -> Option<&'static str> {
        let now = self.started.elapsed();
        let quiet = now.saturating_sub(Duration::from_millis(self.last_ms.load(Ordering::Relaxed)));
        let idle = self.inflight.load(Ordering::Relaxed) == 0;
        if idle && quiet >= opts.idle {
            Some("server.tcp_idle_timeout")
        } else if now >= opts.lifetime {
            Some("server.tcp_max_lifetime")
        } else if self.served.load(Ordering::Relaxed) >= opts.max_queries {
            Some("server.tcp_max_queries_per_connection")
        } else {
            None
        }
    }
}

/// One DoH connection, from its accept.
pub async fn connection(
    stream: TcpStream,
    client: SocketAddr,
    handler: Current,
    life: Lifecycle,
    opts: TcpOptions,
    stats: Arc<StreamStats>,
) {
    let Some((tls, peers)) = accept(stream, client, &handler, opts, &stats, Transport::Https).await
    else {
        return;
    };
    let activity = Arc::new(Activity {
        started: Instant::now(),
        last_ms: AtomicU64::new(0),
        inflight: AtomicUsize::new(0),
        served: AtomicUsize::new(0),
    });
    let service = {
        let activity = Arc::clone(&activity);
        hyper::service::service_fn(move |req| {
            let (handler, activity) = (Arc::clone(&handler), Arc::clone(&activity));
            async move {
                activity.inflight.fetch_add(1, Ordering::Relaxed);
                activity.touch();
                let response = answer(req, peers, &handler).await;
                activity.served.fetch_add(1, Ordering::Relaxed);
                activity.inflight.fetch_sub(1, Ordering::Relaxed);
                activity.touch();
                Ok::<_, Infallible>(response)
            }
        })
    };
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.idle);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(u32::try_from(opts.pipelined).unwrap_or(u32::MAX));
    // HTTP/2 writes a response as several frames, in several writes; gathered until
    // hyper flushes, they go out as one TLS record and one system call.
    let tls = tokio::io::BufWriter::new(tls);
    let conn = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(conn);
    let check_every = (opts.idle / 4).max(Duration::from_millis(10));
    let mut closing = false;
    loop {
        tokio::select! {
            _ = conn.as_mut() => return,
            _ = life.shutdown.cancelled(), if !closing => {
                conn.as_mut().graceful_shutdown();
                closing = true;
            }
            _ = tokio::time::sleep(check_every), if !closing => {
                if let Some(why) = activity.why_close(&opts) {
                    tracing::debug!(%client, "closing a doh connection at {why}");
                    conn.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
        }
    }
}

/// One request's answer: the DNS reply, or an HTTP error that says what was wrong.
async fn answer(req: Request<Incoming>, peers: Peers, handler: &Current) -> Response<Full<Bytes>> {
    let msg = match query_of(req).await {
        Ok(msg) => msg,
        Err(refusal) => return refusal,
    };
    let action = handler
        .load()
        .prepare(&msg, peers.client, peers.server, Transport::Https);
    let reply = match action {
        Action::Reply(out) => out,
        Action::Forward(job) => job.run().await,
        Action::Drop if !wire::is_answerable_query(&msg) => {
            return plain(StatusCode::BAD_REQUEST, "not a DNS query")
        }
        Action::Drop => return plain(StatusCode::TOO_MANY_REQUESTS, "over server.client_qps"),
    };
    dns_message(reply)
}

/// The DNS message a request carries (section 4.1), or the response that refuses it.
async fn query_of(req: Request<Incoming>) -> Result<Vec<u8>, Response<Full<Bytes>>> {
    if req.uri().path() != PATH {
        return Err(plain(StatusCode::NOT_FOUND, "DNS queries go to /dns-query"));
    }
    match *req.method() {
        Method::GET => {
            let param = req
                .uri()
                .query()
                .unwrap_or("")
                .split('&')
                .find_map(|kv| kv.strip_prefix("dns="));
            let Some(b64) = param else {
                return Err(plain(StatusCode::BAD_REQUEST, "no dns= parameter"));
            };
            BASE64URL
                .decode(b64)
                .map_err(|_| plain(StatusCode::BAD_REQUEST, "dns= is not base64url"))
        }
        Method::POST => {
            let content_type = req
                .headers()
                .get(CONTENT_TYPE)
                .and_then(|v| v.to_str().ok());
            if content_type != Some(DNS_MESSAGE) {
                return Err(plain(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "the body must be application/dns-message",
                ));
            }
            let body = Limited::new(req.into_body(), wire::MAX_TCP_MESSAGE);
            match body.collect().await {
                Ok(b) => Ok(b.to_bytes().to_vec()),
                Err(_) => Err(plain(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "a DNS message is at most 65535 octets",
                )),
            }
        }
        _ => {
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "GET or POST");
            r.headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, POST"));
            Err(r)
        }
    }
}

/// A DNS reply as the response, fresh for its smallest TTL (section 5.1).
fn dns_message(reply: Vec<u8>) -> Response<Full<Bytes>> {
    let max_age = wire::freshness(&reply).unwrap_or(0);
    let mut r = Response::new(Full::new(Bytes::from(reply)));
    let headers = r.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(DNS_MESSAGE));
    if let Ok(v) = HeaderValue::from_str(&format!("max-age={max_age}")) {
        headers.insert(CACHE_CONTROL, v);
    }
    r
}

fn plain(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}
