//! The HTTP/1.1 server: accepts connections and serves the warp routes on each with hyper,
//! with the limits warp's own `serve` lacks (it never closes an idle connection, so idle
//! sockets could use up every file descriptor and starve the probes and the agents).
//!
//! The limits, in order of escalation:
//! - **Header timeout** (`HTTP_HEADER_TIMEOUT_SECS`): a connection must deliver a complete
//!   request head this long after it opened (or after its previous answer): silent and
//!   dribbling clients are cut off.
//! - **Keep-alive timeout** (`HTTP_KEEPALIVE_TIMEOUT_SECS`): an idle kept-alive connection is
//!   closed after this long (uvicorn's default, as the original).
//! - **Soft limit** (3/4 of the cap): beyond it a new connection gets one request without
//!   keep-alive and a [`BUSY_HEADER_TIMEOUT`], so busy times recycle sockets quickly.
//! - **Hard cap** (`HTTP_MAX_CONNECTIONS`, by default the open-file limit less
//!   `HTTP_FD_RESERVE`): a new connection first closes the longest-idle one, so a probe or a
//!   POST always gets in while file descriptors stay for the agents, the spool and the
//!   callbacks; only when every connection is busy answering is the new one closed at once.
//!   An accept that fails for lack of descriptors (EMFILE) also closes the longest-idle one.
//!
//! A connection in the middle of a request (an SSE stream included) is never closed by these
//! limits. At shutdown, connections finish their answers for up to [`SHUTDOWN_DRAIN`].

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::{Body, Incoming};
use hyper::server::conn::http1;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::conn::{Conn, ConnService, Registry, STATS};

/// Header timeout of a connection accepted beyond the soft limit.
pub const BUSY_HEADER_TIMEOUT: Duration = Duration::from_secs(2);
/// Time connections get to finish their answers at shutdown before they are closed.
pub const SHUTDOWN_DRAIN: Duration = Duration::from_secs(2);
/// Smallest automatic connection cap, however low the open-file limit.
pub const MIN_CONNECTIONS: usize = 16;
/// Pause before accepting again when no descriptor could be freed (EMFILE, all busy).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Soft limit as a share of the hard cap, in percent.
const SOFT_LIMIT_PERCENT: usize = 75;

/// The connection settings (see the module doc and the README's configuration table).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// `HTTP_HEADER_TIMEOUT_SECS`.
    pub header_timeout: Duration,
    /// `HTTP_KEEPALIVE_TIMEOUT_SECS`.
    pub keepalive_timeout: Duration,
    /// `HTTP_MAX_CONNECTIONS`; 0 = the open-file limit less `fd_reserve`.
    pub max_connections: usize,
    /// `HTTP_FD_RESERVE`: descriptors kept free for everything but connections.
    pub fd_reserve: usize,
}

impl ConnLimits {
    /// (soft limit, hard cap) under an open-file limit of `nofile`.
    pub fn caps(&self, nofile: u64) -> (usize, usize) {
        let hard = if self.max_connections > 0 {
            self.max_connections
        } else {
            let nofile = usize::try_from(nofile).unwrap_or(usize::MAX);
            nofile.saturating_sub(self.fd_reserve).max(MIN_CONNECTIONS)
        };
        ((hard * SOFT_LIMIT_PERCENT / 100).max(1), hard)
    }
}

/// Raises the soft open-file limit (RLIMIT_NOFILE) to the hard one; returns the limit now in
/// force (the old one if it cannot be raised).
#[allow(clippy::unnecessary_cast)] // `rlim_t` is u64 here but not on every target
pub fn raise_fd_limit() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            tracing::info!("Open-file limit raised from {before} to {}", lim.rlim_max);
            return lim.rlim_max as u64;
        }
    }
    before as u64
}

/// Serves `svc` (warp's service) on `listener` until `shutdown` resolves, then drains.
pub async fn serve<S, B>(
    listener: TcpListener,
    svc: S,
    limits: ConnLimits,
    nofile: u64,
    shutdown: impl Future<Output = ()>,
) where
    S: tower_service::Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Body<Data = bytes::Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let (soft, hard) = limits.caps(nofile);
    tracing::info!(
        "Connections: soft limit {soft}, cap {hard}, header timeout {:?}, keep-alive {:?}",
        limits.header_timeout,
        limits.keepalive_timeout
    );
    let registry = Arc::new(Registry::default());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => break,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                on_accept_error(&e, &registry).await;
                continue;
            }
        };
        let open = registry.len();
        if open >= hard && !registry.evict_longest_idle() {
            STATS.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!("connection cap {hard} reached and no idle connection: refused");
            drop(stream);
            continue;
        }
        let per_conn = PerConn {
            limits,
            crowded: open >= soft,
        };
        let (id, conn) = registry.add();
        let (svc, registry, stop) = (svc.clone(), registry.clone(), stop_rx.clone());
        tokio::spawn(async move {
            let service = ConnService::new(svc, registry.clone(), conn.clone());
            run_connection(stream, service, &registry, &conn, per_conn, stop).await;
            registry.remove(id);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = super::conn::wait_empty(&registry, SHUTDOWN_DRAIN).await;
    if !drained {
        tracing::info!(
            "{} connection(s) still answering after {SHUTDOWN_DRAIN:?}: closed",
            registry.len()
        );
        registry.close_all();
    }
}

/// EMFILE/ENFILE: free a descriptor by closing the longest-idle connection; other errors
/// (a client that reset before accept) are the client's.
async fn on_accept_error(e: &std::io::Error, registry: &Registry) {
    let out_of_fds = matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE));
    if out_of_fds {
        if registry.evict_longest_idle() {
            tokio::task::yield_now().await;
        } else {
            tracing::warn!("accept: {e} and every connection busy; retrying");
            tokio::time::sleep(ACCEPT_BACKOFF).await;
        }
    } else {
        tracing::debug!("accept: {e}");
    }
}

/// How one connection is served.
#[derive(Clone, Copy)]
struct PerConn {
    limits: ConnLimits,
    /// Accepted beyond the soft limit: one request, short header timeout.
    crowded: bool,
}

/// Drives one connection until it ends, is told to close, idles too long, or shutdown drains
/// it (a graceful close: the answer in progress finishes).
async fn run_connection<S, B>(
    stream: TcpStream,
    service: ConnService<S>,
    registry: &Registry,
    conn: &Conn,
    per: PerConn,
    mut stop: watch::Receiver<bool>,
) where
    ConnService<S>: hyper::service::Service<Request<Incoming>, Response = Response<B>>,
    <ConnService<S> as hyper::service::Service<Request<Incoming>>>::Error:
        Into<Box<dyn std::error::Error + Send + Sync>>,
    B: Body + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let header_timeout = if per.crowded {
        per.limits.header_timeout.min(BUSY_HEADER_TIMEOUT)
    } else {
        per.limits.header_timeout
    };
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(!per.crowded);
    let served = builder.serve_connection(TokioIo::new(stream), service);
    let mut served = std::pin::pin!(served);
    let mut draining = false;
    loop {
        let limit = if conn.has_served() {
            per.limits.keepalive_timeout.min(header_timeout)
        } else {
            header_timeout
        };
        let idle = registry.idle_for(conn);
        let check_in = limit.saturating_sub(idle).max(Duration::from_millis(10));
        tokio::select! {
            r = served.as_mut() => {
                if let Err(e) = r {
                    if e.is_timeout() {
                        STATS.idle_closed.fetch_add(1, Ordering::Relaxed);
                    }
                    tracing::debug!("connection ended: {e}");
                }
                return;
            }
            () = conn.closed() => return,
            _ = stop.changed(), if !draining => {
                draining = true;
                served.as_mut().graceful_shutdown();
            }
            () = tokio::time::sleep(check_in) => {
                if conn.is_idle() && registry.idle_for(conn) >= limit {
                    STATS.idle_closed.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(max_connections: usize) -> ConnLimits {
        ConnLimits {
            header_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(5),
            max_connections,
            fd_reserve: 256,
        }
    }

    #[test]
    fn the_automatic_cap_leaves_the_reserve_free() {
        assert_eq!(limits(0).caps(512), (192, 256));
        assert_eq!(limits(0).caps(100), (12, MIN_CONNECTIONS));
        assert_eq!(limits(40).caps(512), (30, 40), "an explicit cap wins");
    }
}
