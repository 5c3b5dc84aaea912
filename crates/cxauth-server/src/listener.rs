//! The accept loop: HTTP/1.1 connections with a header-read timeout, an idle keep-alive
//! timeout, and a cap on connections held that sheds the idlest connection rather than refusing
//! new ones.
//!
//! `axum::serve` sets no timer, so a client that never finishes its headers held its connection
//! (and a file descriptor) for good; about a thousand of them exhausted a 1,024-descriptor limit
//! and `/healthz` stopped answering. Here every connection is watched by its own task:
//!
//! * a new connection must deliver complete request headers within `header_read_timeout`;
//! * a kept-alive connection may wait `keep_alive_timeout` for its next request; once the first
//!   byte of that request arrives its headers must be complete within `header_read_timeout`;
//! * while a handler runs none of this applies (the request timeout bounds handlers);
//! * at `max_connections` the loop closes the connection that has been idle (or reading
//!   headers) longest before it accepts another, so slow clients cannot crowd out real ones;
//!   a connection younger than 250 ms, or in a handler, is never shed (the loop waits for one
//!   to qualify or close, new clients queueing in the listen backlog);
//! * an `accept` error never stops the loop: running out of descriptors sheds an idle
//!   connection and backs off (10 ms, doubling to 1 s), so the loop neither spins nor dies.
//!
//! hyper's own `header_read_timeout` also starts while a kept-alive connection waits for its
//! next request, so it would make the keep-alive timeout no longer than the header timeout. It
//! is off: the watcher's deadlines always come first, and hyper's timer cost a boxed sleep armed
//! and disarmed per request (~3% of a `/healthz` answer's instructions).

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio::time::Instant;

mod fd_limit;
pub use fd_limit::{FD_RESERVE, default_max_connections, raise_fd_limit};

/// The limits the accept loop enforces; see the module documentation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// Longest wait for a request's complete headers.
    pub header_read_timeout: Duration,
    /// Longest wait of a kept-alive connection for its next request.
    pub keep_alive_timeout: Duration,
    /// Most connections held at once.
    pub max_connections: usize,
}

/// How long a connection is spared from shedding after it connects or finishes a request: a
/// client whose request is already on its way (its headers in the socket, not yet parsed) must
/// not lose it to a newer connection.
const SHED_GRACE: Duration = Duration::from_millis(250);

/// "No time set" in the millisecond clocks below.
const NONE: u64 = u64::MAX;

/// What the watcher of one connection knows of it. Times are milliseconds since the
/// registry's start.
#[derive(Debug)]
struct Conn {
    /// Handlers running (0 or 1: HTTP/1.1 answers one request at a time).
    in_handler: AtomicUsize,
    /// Requests answered so far: before the first, the connection is still opening.
    served: AtomicU64,
    /// When the connection was accepted or last finished a handler.
    idle_since: AtomicU64,
    /// When the first byte of the request being read arrived, or [`NONE`].
    head_started: AtomicU64,
    /// Told by the accept loop to close.
    shed: AtomicBool,
    /// Wakes the watcher when the connection is shed (deadlines never need it: see
    /// `serve_connection`).
    wake: tokio::sync::Notify,
}

/// Why a connection was closed by the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseReason {
    HeaderTimeout,
    IdleTimeout,
    Shed,
}

impl CloseReason {
    fn label(self) -> &'static str {
        match self {
            CloseReason::HeaderTimeout => "header_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Shed => "shed",
        }
    }
}

impl Conn {
    fn new(now: u64) -> Self {
        Conn {
            in_handler: AtomicUsize::new(0),
            served: AtomicU64::new(0),
            idle_since: AtomicU64::new(now),
            head_started: AtomicU64::new(NONE),
            shed: AtomicBool::new(false),
            wake: tokio::sync::Notify::new(),
        }
    }

    /// When the connection must be closed unless a handler starts first, and why; `None`
    /// while a handler runs.
    fn deadline(&self, limits: &ConnectionLimits) -> Option<(u64, CloseReason)> {
        if self.in_handler.load(Ordering::Acquire) > 0 {
            return None;
        }
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(NONE);
        let idle_since = self.idle_since.load(Ordering::Acquire);
        if self.served.load(Ordering::Acquire) == 0 {
            // Still opening: the first request's headers are due a fixed time after connect.
            return Some((
                idle_since.saturating_add(ms(limits.header_read_timeout)),
                CloseReason::HeaderTimeout,
            ));
        }
        let head = self.head_started.load(Ordering::Acquire);
        if head != NONE {
            // The next request has begun: its headers are due a fixed time after its start.
            return Some((
                head.saturating_add(ms(limits.header_read_timeout)),
                CloseReason::HeaderTimeout,
            ));
        }
        Some((
            idle_since.saturating_add(ms(limits.keep_alive_timeout)),
            CloseReason::IdleTimeout,
        ))
    }
}

/// Every open connection, for the cap and for shedding.
struct Registry {
    start: Instant,
    inner: Mutex<RegistryInner>,
    /// Wakes the accept loop when a connection closes.
    closed: tokio::sync::Notify,
}

#[derive(Default)]
struct RegistryInner {
    conns: HashMap<u64, Arc<Conn>>,
    /// Connections told to close that have not closed yet.
    shedding: usize,
}

impl Registry {
    fn now(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(NONE - 1)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RegistryInner> {
        // A panic while holding the lock leaves plain data behind: keep using it.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn insert(&self, id: u64, conn: Arc<Conn>) {
        let mut inner = self.lock();
        inner.conns.insert(id, conn);
        metrics::gauge!("cxauth_http_connections").set(inner.conns.len() as f64);
    }

    fn remove(&self, id: u64) {
        let mut inner = self.lock();
        if let Some(c) = inner.conns.remove(&id)
            && c.shed.load(Ordering::Acquire)
        {
            inner.shedding = inner.shedding.saturating_sub(1);
        }
        metrics::gauge!("cxauth_http_connections").set(inner.conns.len() as f64);
        drop(inner);
        self.closed.notify_one();
    }

    /// Connections held, and how many of them were told to close and have not yet.
    fn counts(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.conns.len(), inner.shedding)
    }

    /// Tells the connection idle (or reading headers) longest to close. False if every
    /// connection is in a handler or younger than [`SHED_GRACE`].
    fn shed_one(&self) -> bool {
        let now = self.now();
        let grace = u64::try_from(SHED_GRACE.as_millis()).unwrap_or(0);
        let mut inner = self.lock();
        let victim = inner
            .conns
            .values()
            .filter(|c| {
                c.in_handler.load(Ordering::Acquire) == 0
                    && !c.shed.load(Ordering::Acquire)
                    && c.idle_since.load(Ordering::Acquire).saturating_add(grace) <= now
            })
            .min_by_key(|c| c.idle_since.load(Ordering::Acquire))
            .cloned();
        match victim {
            Some(c) => {
                c.shed.store(true, Ordering::Release);
                c.wake.notify_one();
                inner.shedding += 1;
                true
            }
            None => false,
        }
    }
}

/// The socket, noting when the first byte of a request's headers arrives.
struct Watched {
    stream: TcpStream,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl AsyncRead for Watched {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.stream).poll_read(cx, buf);
        // No wake-up of the watcher: the deadline this sets is at least `recheck` away, and
        // the watcher never sleeps longer than that (see `serve_connection`).
        if buf.filled().len() > before
            && this.conn.in_handler.load(Ordering::Acquire) == 0
            && this.conn.head_started.load(Ordering::Acquire) == NONE
        {
            this.conn
                .head_started
                .store(this.registry.now(), Ordering::Release);
        }
        res
    }
}

impl AsyncWrite for Watched {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Keeps a connection in the registry for as long as its task lives, however the task ends
/// (an abort at the shutdown timeout included), so the cap never counts a ghost.
struct Registered {
    id: u64,
    registry: Arc<Registry>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.registry.remove(self.id);
    }
}

/// Marks a connection as in a handler for as long as it lives.
struct InHandler {
    conn: Arc<Conn>,
    registry: Arc<Registry>,
}

impl InHandler {
    fn new(conn: Arc<Conn>, registry: Arc<Registry>) -> Self {
        conn.in_handler.fetch_add(1, Ordering::AcqRel);
        conn.head_started.store(NONE, Ordering::Release);
        InHandler { conn, registry }
    }
}

impl Drop for InHandler {
    fn drop(&mut self) {
        self.conn.served.fetch_add(1, Ordering::AcqRel);
        self.conn
            .idle_since
            .store(self.registry.now(), Ordering::Release);
        // As for a request's first byte, the watcher needs no wake-up here.
        self.conn.in_handler.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Whether an `accept` error means the process (or system) is out of descriptors or memory,
/// which closing a connection relieves.
fn out_of_resources(e: &io::Error) -> bool {
    // EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux; the names are not in std.
    matches!(e.raw_os_error(), Some(24 | 23 | 105 | 12))
}

/// Serves `router` on `listener` until `shutdown` completes; then stops accepting, lets
/// requests in flight finish for at most `drain`, and closes what is left. ConnectInfo of the
/// peer address is put in every request, as `into_make_service_with_connect_info` did.
pub async fn run(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> io::Result<()> {
    let registry = Arc::new(Registry {
        start: Instant::now(),
        inner: Mutex::new(RegistryInner::default()),
        closed: tokio::sync::Notify::new(),
    });
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut next_id: u64 = 0;
    let mut backoff = Duration::from_millis(10);
    let mut errors_unreported: u64 = 0;
    let mut last_report: Option<Instant> = None;
    tokio::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        let (held, shedding) = registry.counts();
        if held >= limits.max_connections {
            // Make room before taking another: the connection idle longest goes, and the loop
            // waits until it has gone, so the cap holds. With every connection in a handler,
            // wait for one to finish (new clients queue in the listen backlog meanwhile).
            if shedding == 0 && registry.shed_one() {
                metrics::counter!("cxauth_http_connections_closed_total", "reason" => "shed")
                    .increment(1);
            }
            tokio::select! {
                () = &mut shutdown => break,
                () = registry.closed.notified() => {}
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
            continue;
        }
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(10);
                let _ = stream.set_nodelay(true);
                next_id += 1;
                let conn = Arc::new(Conn::new(registry.now()));
                registry.insert(next_id, conn.clone());
                // Made here, so that even a task aborted before it first runs gives its slot
                // back.
                let registered = Registered {
                    id: next_id,
                    registry: registry.clone(),
                };
                tasks.spawn(serve_connection(
                    stream,
                    peer,
                    router.clone(),
                    limits,
                    conn,
                    registry.clone(),
                    stop_rx.clone(),
                    registered,
                ));
            }
            Err(e) => {
                metrics::counter!("cxauth_http_accept_errors_total").increment(1);
                errors_unreported += 1;
                // One line a second at most: a flood of errors must not flood the log too.
                if last_report.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                    tracing::warn!(error = %e, errors = errors_unreported, "accept failed");
                    errors_unreported = 0;
                    last_report = Some(Instant::now());
                }
                if out_of_resources(&e) {
                    if registry.shed_one() {
                        metrics::counter!("cxauth_http_connections_closed_total", "reason" => "shed")
                            .increment(1);
                    }
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
    tracing::info!("shutting down: no new connections; finishing requests in flight");
    drop(listener);
    let _ = stop_tx.send(true);
    let drained =
        tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(
            timeout = ?drain,
            "requests still in flight at the shutdown timeout: closing their connections"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    Ok(())
}

/// Serves one connection and watches its deadlines; see the module documentation.
#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    router: Router,
    limits: ConnectionLimits,
    conn: Arc<Conn>,
    registry: Arc<Registry>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    registered: Registered,
) {
    let io = TokioIo::new(Watched {
        stream,
        conn: conn.clone(),
        registry: registry.clone(),
    });
    let (svc_conn, svc_registry) = (conn.clone(), registry.clone());
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let guard = InHandler::new(svc_conn.clone(), svc_registry.clone());
        req.extensions_mut().insert(ConnectInfo(peer));
        let router = router.clone();
        async move {
            let res = tower::ServiceExt::oneshot(router, req).await;
            drop(guard);
            res
        }
    });
    // Boxed, so that dropping it below closes the socket before the registry forgets it.
    let mut http = Box::pin(
        hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .keep_alive(true)
            // The watcher below times headers (see the module documentation).
            .header_read_timeout(None)
            .serve_connection(io, service),
    );
    let mut draining = *stop.borrow();
    if draining {
        http.as_mut().graceful_shutdown();
    }
    let mut closed_by: Option<CloseReason> = None;
    // Every change of the connection's state (a request's first byte, a handler's start or
    // end) sets a deadline at least `recheck` after the change, so a watcher that wakes at the
    // current deadline or within `recheck`, whichever is sooner, never wakes late, and requests
    // need not wake it at all: a request costs the watcher nothing, an idle connection one
    // wake-up per `recheck` (10 s by default).
    let recheck = limits.header_read_timeout.min(limits.keep_alive_timeout);
    loop {
        let now = registry.now();
        let wait = match conn.deadline(&limits) {
            Some((at, _)) => Duration::from_millis(at.saturating_sub(now)).min(recheck),
            None => recheck,
        };
        tokio::select! {
            r = http.as_mut() => {
                if let Err(e) = r {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                break;
            }
            () = tokio::time::sleep(wait) => {
                if let Some((at, why)) = conn.deadline(&limits)
                    && registry.now() >= at
                {
                    closed_by = Some(why);
                    break;
                }
            }
            () = conn.wake.notified() => {
                if conn.shed.load(Ordering::Acquire) {
                    closed_by = Some(CloseReason::Shed);
                    break;
                }
            }
            r = stop.changed(), if !draining => {
                draining = true;
                if r.is_err() || conn.served.load(Ordering::Acquire) == 0
                    && conn.in_handler.load(Ordering::Acquire) == 0
                {
                    // Never got a request through: nothing to finish.
                    break;
                }
                // hyper closes an idle connection now, a busy one after its response.
                http.as_mut().graceful_shutdown();
            }
        }
    }
    if let Some(why) = closed_by
        && why != CloseReason::Shed
    {
        metrics::counter!("cxauth_http_connections_closed_total", "reason" => why.label())
            .increment(1);
        tracing::debug!(reason = why.label(), "closed a slow or idle connection");
    }
    // Dropping the connection closes the socket; then the registry lets the slot go.
    drop(http);
    drop(registered);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cap_stays_below_the_descriptor_limit() {
        assert_eq!(default_max_connections(1024), 896);
        assert_eq!(default_max_connections(65_536), 65_408);
        assert_eq!(default_max_connections(200), 100);
        assert_eq!(default_max_connections(1), 1);
        assert!(default_max_connections(u64::MAX) < 1 << 21);
    }

    #[test]
    fn deadlines_follow_the_connection_state() {
        let limits = ConnectionLimits {
            header_read_timeout: Duration::from_secs(10),
            keep_alive_timeout: Duration::from_secs(60),
            max_connections: 10,
        };
        let c = Conn::new(1_000);
        assert_eq!(
            c.deadline(&limits),
            Some((11_000, CloseReason::HeaderTimeout))
        );
        c.in_handler.store(1, Ordering::Release);
        assert_eq!(c.deadline(&limits), None);
        c.in_handler.store(0, Ordering::Release);
        c.served.store(1, Ordering::Release);
        c.idle_since.store(20_000, Ordering::Release);
        assert_eq!(
            c.deadline(&limits),
            Some((80_000, CloseReason::IdleTimeout))
        );
        // The next request's first byte: its headers must follow within the header timeout.
        c.head_started.store(30_000, Ordering::Release);
        assert_eq!(
            c.deadline(&limits),
            Some((40_000, CloseReason::HeaderTimeout))
        );
        // Late in the keep-alive window: the request that began still gets the full time.
        c.head_started.store(75_000, Ordering::Release);
        assert_eq!(
            c.deadline(&limits),
            Some((85_000, CloseReason::HeaderTimeout))
        );
        // Before its first request, bytes do not extend the time from connect.
        let fresh = Conn::new(0);
        fresh.head_started.store(9_000, Ordering::Release);
        assert_eq!(
            fresh.deadline(&limits),
            Some((10_000, CloseReason::HeaderTimeout))
        );
    }

    #[test]
    fn descriptor_exhaustion_is_recognised() {
        assert!(out_of_resources(&io::Error::from_raw_os_error(24)));
        assert!(!out_of_resources(&io::Error::from_raw_os_error(103)));
    }
}
