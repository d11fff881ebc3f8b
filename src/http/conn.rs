//! One HTTP/1.1 connection and the registry of all of them: what the accept loop in
//! [`super::server`] needs to bound connections — which ones are idle and for how long, a way
//! to close any one of them, and counts for `/metrics`.
//!
//! A connection is *busy* while a request is being answered (from the moment hyper hands it to
//! the service until the response body is fully written, so an SSE stream stays busy) and
//! *idle* otherwise: before its first request, between keep-alive requests, or while a client
//! dribbles a request head. Only idle connections are ever closed by the limits.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use tokio::sync::Notify;

/// Counters of the connection limits, rendered by `/metrics`.
#[derive(Default)]
pub struct ConnStats {
    /// Connections open now.
    pub open: AtomicU64,
    /// Idle connections closed by the header or keep-alive timeout.
    pub idle_closed: AtomicU64,
    /// Idle connections closed to make room at the hard cap (longest idle first).
    pub evicted: AtomicU64,
    /// New connections closed at once: at the hard cap with no idle connection to close.
    pub refused: AtomicU64,
}

/// The process's connection counters.
pub static STATS: ConnStats = ConnStats {
    open: AtomicU64::new(0),
    idle_closed: AtomicU64::new(0),
    evicted: AtomicU64::new(0),
    refused: AtomicU64::new(0),
};

/// What the registry knows about one connection.
pub struct Conn {
    busy: AtomicUsize,
    served: AtomicBool,
    closing: AtomicBool,
    /// Milliseconds since the registry's epoch when the connection last became idle.
    idle_since: AtomicU64,
    close: Notify,
}

impl Conn {
    /// Whether no request is being answered.
    pub fn is_idle(&self) -> bool {
        self.busy.load(Ordering::Acquire) == 0
    }

    /// Whether at least one request was answered (later idle time is keep-alive time).
    pub fn has_served(&self) -> bool {
        self.served.load(Ordering::Acquire)
    }

    /// Resolves when the connection has been told to close (eviction or shutdown).
    pub async fn closed(&self) {
        self.close.notified().await
    }
}

/// All open connections; shared by the accept loop and the connection tasks.
pub struct Registry {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    epoch: Instant,
}

impl Default for Registry {
    fn default() -> Self {
        Registry {
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl Registry {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Conn>>> {
        self.conns.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a new (idle) connection; the id is for [`Registry::remove`].
    pub fn add(&self) -> (u64, Arc<Conn>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            busy: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            idle_since: AtomicU64::new(self.now_ms()),
            close: Notify::new(),
        });
        self.map().insert(id, conn.clone());
        STATS.open.fetch_add(1, Ordering::Relaxed);
        (id, conn)
    }

    /// Forgets a connection that ended.
    pub fn remove(&self, id: u64) {
        if self.map().remove(&id).is_some() {
            STATS.open.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// How long `conn` has been idle; zero while it is busy.
    pub fn idle_for(&self, conn: &Conn) -> Duration {
        if !conn.is_idle() {
            return Duration::ZERO;
        }
        let since = conn.idle_since.load(Ordering::Acquire);
        Duration::from_millis(self.now_ms().saturating_sub(since))
    }

    /// Tells the longest-idle connection to close; false when every connection is busy.
    pub fn evict_longest_idle(&self) -> bool {
        let victim = self
            .map()
            .values()
            .filter(|c| c.is_idle() && !c.closing.load(Ordering::Acquire))
            .min_by_key(|c| c.idle_since.load(Ordering::Acquire))
            .cloned();
        match victim {
            Some(c) => {
                // Marked, so a second eviction before this one is gone picks another.
                c.closing.store(true, Ordering::Release);
                c.close.notify_one();
                STATS.evicted.fetch_add(1, Ordering::Relaxed);
                true
            }
            None => false,
        }
    }

    /// Tells every connection to close now (after the shutdown drain).
    pub fn close_all(&self) {
        for c in self.map().values() {
            c.close.notify_one();
        }
    }

    fn begin(&self, conn: &Conn) {
        conn.busy.fetch_add(1, Ordering::AcqRel);
        conn.served.store(true, Ordering::Release);
    }

    fn end(&self, conn: &Conn) {
        conn.idle_since.store(self.now_ms(), Ordering::Release);
        conn.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// How often the shutdown drain looks whether every connection has ended.
const DRAIN_POLL: Duration = Duration::from_millis(20);

/// Waits until `registry` has no connection left, for at most `within`; false if some remain.
pub async fn wait_empty(registry: &Registry, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while registry.len() > 0 {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
    true
}

/// Holds a connection busy while it lives: made when a request reaches the service, dropped
/// with the response body (hyper drops it once written, or when the client goes).
struct BusyGuard {
    registry: Arc<Registry>,
    conn: Arc<Conn>,
}

impl Drop for BusyGuard {
    fn drop(&mut self) {
        self.registry.end(&self.conn);
    }
}

/// A response body that keeps its connection busy until it is dropped.
pub struct Tracked<B> {
    inner: B,
    _guard: BusyGuard,
}

impl<B: Body + Unpin> Body for Tracked<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The warp service of one connection, marking the connection busy per request.
pub struct ConnService<S> {
    inner: S,
    registry: Arc<Registry>,
    conn: Arc<Conn>,
}

impl<S> ConnService<S> {
    /// Wraps `inner` for the connection `conn` of `registry`.
    pub fn new(inner: S, registry: Arc<Registry>, conn: Arc<Conn>) -> Self {
        ConnService {
            inner,
            registry,
            conn,
        }
    }
}

impl<S, B> hyper::service::Service<Request<Incoming>> for ConnService<S>
where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body + Unpin + Send + 'static,
{
    type Response = Response<Tracked<B>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        self.registry.begin(&self.conn);
        let guard = BusyGuard {
            registry: self.registry.clone(),
            conn: self.conn.clone(),
        };
        // warp's service is always ready (its `poll_ready` returns `Ready(Ok)`), so it is
        // called directly, as hyper-util's `TowerToHyperService` does.
        let mut svc = self.inner.clone();
        Box::pin(async move {
            let resp = tower_service::Service::call(&mut svc, req).await?;
            Ok(resp.map(|inner| Tracked {
                inner,
                _guard: guard,
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_the_longest_idle_and_never_a_busy_one() {
        let reg = Registry::default();
        let (_, first) = reg.add();
        let (_, second) = reg.add();
        reg.begin(&first);
        assert!(reg.evict_longest_idle(), "the idle one goes");
        assert!(second.closing.load(Ordering::Acquire));
        assert!(!reg.evict_longest_idle(), "the busy one is never evicted");
        assert!(!first.is_idle(), "the busy one stays busy");
        reg.end(&first);
        assert!(first.is_idle());
    }
}
