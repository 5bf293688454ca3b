//! The accept loop: HTTP/1.1 connections served with time limits and a cap. A client must
//! send its request headers within `header_read` (which also ends an idle kept-alive
//! connection), its body without pausing longer than `body_read`, and must keep reading the
//! answer (a write stalled for `write_stall` ends the connection). Past `max_connections`,
//! a new connection gets a short 503 and is closed. Accept errors (such as running out of
//! file descriptors) back off instead of spinning. At start-up the file limit is raised to
//! its hard maximum.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// Time limits and the cap of the accept loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; past it, a new one gets a 503 and is closed.
    pub max_connections: usize,
    /// Time for a request's headers to arrive, also the longest idle keep-alive wait.
    pub header_read: Duration,
    /// The longest pause between two pieces of a request body.
    pub body_read: Duration,
    /// How long a write to a client that does not read may stay stalled.
    pub write_stall: Duration,
    /// Peers whose connections are closed unanswered: the workers' networks, so that no
    /// sandbox reaches ccpool's API.
    pub refused_peers: Vec<crate::network::Subnet>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_read: Duration::from_secs(30),
            body_read: Duration::from_secs(30),
            write_stall: Duration::from_secs(60),
            refused_peers: Vec::new(),
        }
    }
}

/// Raises the soft limit on open files to the hard limit; returns the limit now in force.
pub fn raise_file_limit() -> io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return Err(io::Error::last_os_error());
        }
        if limit.rlim_cur < limit.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                limit = raised;
            }
        }
    }
    Ok(limit.rlim_cur)
}

/// The connection cap that fits a file limit: a quarter of the descriptors stay for the
/// Docker connections, the workers' execs and the log.
pub fn connections_for_file_limit(file_limit: u64, wanted: usize) -> usize {
    let room = (file_limit.saturating_sub(64) * 3 / 4) as usize;
    wanted.min(room).max(1)
}

/// The answer past the cap. The body has both dialects' `error.type` and `error.message`.
fn refusal() -> String {
    let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"ccpool has too many open connections; retry shortly"}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\n\
         connection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Serves `router` on `listener` until `shutdown` fires, then stops accepting and waits for
/// the open connections to finish their requests (the caller bounds that wait).
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let service = tower_http::timeout::RequestBodyTimeout::new(router, limits.body_read);
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut backoff = Duration::ZERO;
    loop {
        let accepted = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::ZERO;
                if limits.refused_peers.iter().any(|s| s.contains(peer.ip())) {
                    tracing::warn!(peer = %peer.ip(), "refused a connection to the API from the workers' network");
                    continue;
                }
                stream
            }
            Err(e) => {
                // Out of descriptors, or a connection reset before it was accepted: wait a
                // little, longer each time, rather than spin.
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                tracing::warn!(cause = %e, retry_in = ?backoff, "accepting a connection");
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => continue,
                }
            }
        };
        let _ = stream.set_nodelay(true);
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tokio::spawn(refuse(stream));
            continue;
        };
        let service = hyper_util::service::TowerToHyperService::new(service.clone());
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read)
            .max_buf_size(64 * 1024)
            .serve_connection(
                TokioIo::new(StallLimit::new(stream, limits.write_stall)),
                service,
            );
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(cause = %e, "connection ended");
            }
            drop(slot);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// Answers a connection past the cap with a 503 and closes it, without reading its request.
async fn refuse(mut stream: TcpStream) {
    tracing::warn!("refused a connection: too many open connections");
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        let _ = stream.write_all(refusal().as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

/// A stream whose writes fail once one has been pending for longer than the limit: a
/// client that stops reading its answer cannot hold the connection, or the turn behind it.
struct StallLimit<S> {
    inner: S,
    limit: Duration,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<S> StallLimit<S> {
    fn new(inner: S, limit: Duration) -> Self {
        StallLimit {
            inner,
            limit,
            stalled: None,
        }
    }

    fn on_write<T>(
        &mut self,
        cx: &mut Context<'_>,
        result: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if result.is_ready() {
            self.stalled = None;
            return result;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the client stopped reading",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for StallLimit<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for StallLimit<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write(cx, buf);
        self.on_write(cx, result)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let result = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.on_write(cx, result)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let result = Pin::new(&mut self.inner).poll_flush(cx);
        self.on_write(cx, result)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_from_the_workers_subnets_are_closed_unanswered() {
        use tokio::io::AsyncReadExt;
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let limits = Limits {
            refused_peers: vec![crate::network::Subnet::parse("127.0.0.0/8").unwrap()],
            ..Limits::default()
        };
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, router, limits, stop.clone()));
        let mut client = TcpStream::connect(addr).await.unwrap();
        client
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = Vec::new();
        // The server drops the connection: the read ends (EOF or reset) with nothing served.
        let _ = tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut answer))
            .await
            .expect("a refused connection is closed, not left open");
        assert!(answer.is_empty(), "answered a refused peer: {answer:?}");
        stop.cancel();
        server.await.unwrap();
    }

    #[test]
    fn the_refusal_is_a_whole_http_response() {
        let text = refusal();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
        let _: serde_json::Value = serde_json::from_str(body).unwrap();
    }

    #[test]
    fn the_cap_leaves_descriptors_for_docker() {
        assert_eq!(connections_for_file_limit(1024, 1024), 720);
        assert_eq!(connections_for_file_limit(1 << 20, 1024), 1024);
        assert_eq!(connections_for_file_limit(10, 1024), 1);
    }

    #[test]
    fn the_file_limit_is_raised_to_the_hard_limit() {
        let limit = raise_file_limit().unwrap();
        let mut now = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes the struct we pass.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut now) }, 0);
        assert_eq!(now.rlim_cur, now.rlim_max);
        assert_eq!(limit, now.rlim_cur);
    }
}
