//! The HTTP server loop, in place of `axum::serve`: that one gives hyper no timer, so a
//! client could hold a connection (a socket, a task, a buffer) forever by never finishing
//! its request headers. Here the headers must arrive within `header_read`, and a request's
//! whole body within `body_read` of its headers — a body trickled a byte a second is cut off
//! although it never goes idle long enough for a per-read timeout.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request};
use axum::middleware::{self, Next};
use axum::Router;
use futures::StreamExt as _;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt as _;

/// How long a client may take to send a request (operations.md "Timeouts").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// From the connection's first wait for a request to the end of its headers.
    pub header_read: Duration,
    /// From the end of the headers to the end of the body.
    pub body_read: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            header_read: Duration::from_secs(10),
            // 1 MiB (the body limit) at 20 KB/s.
            body_read: Duration::from_secs(60),
        }
    }
}

/// The error a body read past its deadline ends with; `json_body` answers it with 408.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive in time")]
pub struct BodyTimedOut;

/// Whether a body read failed because its deadline passed.
pub fn timed_out(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.is::<BodyTimedOut>() {
            return true;
        }
        cause = c.source();
    }
    false
}

/// Gives every request body a deadline `limit` after its headers.
pub fn with_body_deadline(router: Router, limit: Duration) -> Router {
    router.layer(middleware::from_fn(move |req: Request, next: Next| {
        let deadline = tokio::time::Instant::now() + limit;
        let req = req.map(|body| deadline_body(body, deadline));
        next.run(req)
    }))
}

fn deadline_body(body: Body, deadline: tokio::time::Instant) -> Body {
    let frames = body.into_data_stream();
    let stream = futures::stream::unfold(Some(frames), move |frames| async move {
        let mut frames = frames?;
        match tokio::time::timeout_at(deadline, frames.next()).await {
            Ok(Some(Ok(bytes))) => Some((Ok::<Bytes, axum::BoxError>(bytes), Some(frames))),
            Ok(Some(Err(e))) => Some((Err(e.into()), None)),
            Ok(None) => None,
            Err(_) => Some((Err(BodyTimedOut.into()), None)),
        }
    });
    Body::from_stream(stream)
}

/// Serves `router` on `listener` until `shutdown` completes, then waits for the requests in
/// flight. Each request carries the peer's address as `ConnectInfo` (the access records'
/// terminal), as `into_make_service_with_connect_info` gave it.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    timeouts: Timeouts,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let router = with_body_deadline(router, timeouts.body_read);
    // HTTP/1.1 only, as `axum::serve` was built here (no HTTP/2 feature).
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(timeouts.header_read);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let service = router
            .clone()
            .map_request(move |mut req: Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
                req
            });
        let service = TowerToHyperService::new(service);
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that went away or timed out: nothing to report.
            let _ = conn.await;
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
