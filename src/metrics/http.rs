//! `/metrics`, `/healthz` and `/readyz` over HTTP/1.
//!
//! `/healthz`: the process answers. `/readyz`: what `readiness` decides (serving, not
//! draining, every `ready = "required"` route has an upstream up), with the reason.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

use super::counts::Observed;
use crate::life::Lifecycle;
use crate::readiness::Readiness;

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

/// Answers one HTTP request, given its method and path.
fn route(
    method: &hyper::Method,
    path: &str,
    registry: &Registry,
    readiness: &Readiness,
    configured: &dyn Observed,
) -> Response<Full<Bytes>> {
    if method != hyper::Method::GET && method != hyper::Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match path {
        "/metrics" => {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, registry) {
                Ok(()) => respond(
                    StatusCode::OK,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    body,
                ),
                Err(_) => respond(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    "encoding failed\n".into(),
                ),
            }
        }
        "/healthz" => respond(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => match readiness.check(&configured.upstream_sets()) {
            Ok(()) => respond(StatusCode::OK, "text/plain", "ready\n".into()),
            Err(why) => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                format!("not ready: {why}\n"),
            ),
        },
        _ => respond(
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

/// Serves `/metrics`, `/healthz` and `/readyz` until the server stops.
pub async fn serve_http(
    listener: TcpListener,
    registry: Arc<Registry>,
    readiness: Arc<Readiness>,
    configured: Arc<dyn Observed>,
    life: Lifecycle,
) {
    loop {
        let (stream, _) = tokio::select! {
            _ = life.shutdown.cancelled() => return,
            r = listener.accept() => match r {
                Ok(r) => r,
                Err(e) => {
                    tracing::debug!(error = %e, "metrics accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (registry, readiness, configured) = (
            Arc::clone(&registry),
            Arc::clone(&readiness),
            Arc::clone(&configured),
        );
        let shutdown = life.shutdown.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let resp = route(
                    req.method(),
                    req.uri().path(),
                    &registry,
                    &readiness,
                    &*configured,
                );
                async move { Ok::<_, Infallible>(resp) }
            });
            // A client that never finishes its request headers is cut off.
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::UpstreamSet;
    use std::sync::atomic::Ordering;

    /// A configuration with no routes: readiness here depends on the listeners only.
    struct NoRoutes;

    impl Observed for NoRoutes {
        fn upstream_sets(&self) -> Vec<Arc<UpstreamSet>> {
            Vec::new()
        }
        fn loops_detected(&self) -> u64 {
            0
        }
        fn broken_chains(&self) -> u64 {
            0
        }
        fn certificate(&self) -> Option<crate::tls::validity::Validity> {
            None
        }
    }

    #[test]
    fn readiness_follows_the_listeners() {
        let registry = Registry::default();
        let readiness = Readiness::default();
        let get =
            |path| route(&hyper::Method::GET, path, &registry, &readiness, &NoRoutes).status();
        assert_eq!(
            get("/readyz"),
            StatusCode::SERVICE_UNAVAILABLE,
            "not serving yet"
        );
        assert_eq!(get("/healthz"), StatusCode::OK, "alive all the same");
        readiness.serving.store(true, Ordering::Relaxed);
        assert_eq!(get("/readyz"), StatusCode::OK);
        readiness.serving.store(false, Ordering::Relaxed);
        assert_eq!(get("/readyz"), StatusCode::SERVICE_UNAVAILABLE, "stopping");
        assert_eq!(
            route(
                &hyper::Method::POST,
                "/metrics",
                &registry,
                &readiness,
                &NoRoutes
            )
            .status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
