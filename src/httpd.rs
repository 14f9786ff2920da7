//! The small HTTP/1.1 server under the metrics endpoint and the admin API: binding, a
//! bounded accept loop, and per-connection time limits. Each caller brings its handler;
//! both run on the admin runtime, never on the latency workers.
//!
//! Connections are few and bounded: beyond `max_connections` a new connection is closed
//! right after accept; each must send its request head within `header_timeout` and is
//! closed after `connection_timeout` (keep-alive included), so a slow or idle client
//! cannot hold a slot for long. Routing and bodies belong to the callers, not here.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

/// Bounds on the connections of one server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub connection_timeout: Duration,
}

/// Binds a TCP listener on `listen` for use on `rt`.
pub fn bind(rt: &Handle, listen: SocketAddr) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(listen),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&listen.into())?;
    socket.listen(64)?;
    let _enter = rt.enter();
    TcpListener::from_std(socket.into())
}

/// Serves `listener` on `rt` with `handler` until `token` is cancelled. `what` names the
/// server in logs.
pub fn spawn<H, F>(
    rt: &Handle,
    listener: TcpListener,
    limits: Limits,
    handler: H,
    what: &'static str,
    token: CancellationToken,
    tracker: &TaskTracker,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let conns = tracker.clone();
    tracker.spawn_on(
        async move {
            loop {
                let accepted = tokio::select! {
                    biased;
                    () = token.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((stream, peer)) = accepted else {
                    // Out of descriptors or similar: pause rather than spin.
                    tokio::select! {
                        () = token.cancelled() => return,
                        () = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                };
                let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
                    debug!(%peer, "{what}: over its connection limit, connection closed");
                    drop(stream);
                    continue;
                };
                let (handler, token) = (handler.clone(), token.clone());
                conns.spawn(async move {
                    let service = service_fn(move |req| {
                        let reply = handler(req);
                        async move { Ok::<_, Infallible>(reply.await) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .timer(TokioTimer::new())
                        .header_read_timeout(limits.header_timeout)
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::select! {
                        () = token.cancelled() => {}
                        _ = tokio::time::timeout(limits.connection_timeout, conn) => {}
                    }
                    drop(permit);
                });
            }
        },
        rt,
    );
}
