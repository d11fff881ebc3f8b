//! A tiny warp server running on its own thread and tokio runtime.
//!
//! Why a thread of its own: the callback receiver and the mock Anthropic API must keep answering
//! whatever the test does meanwhile (a `#[tokio::test]` on the current-thread runtime that blocks,
//! a synchronous `std::process::Command::output()` running the real CLI, a panic unwinding…).
//! Serving from the test's own runtime would deadlock in those cases.

use std::net::{SocketAddr, TcpListener as StdTcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;

use tokio::sync::{oneshot, watch};
use warp::filters::BoxedFilter;

/// The one filter type both servers hand to [`BackgroundServer::start`]: a catch-all route that
/// answers every request itself (so that no warp rejection text can leak into a reply).
pub type Handler = BoxedFilter<(warp::reply::Response,)>;

/// A running server; [`BackgroundServer::stop`] (or dropping it) closes the listening socket and
/// every open connection before returning, so the port is free again afterwards.
pub struct BackgroundServer {
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl BackgroundServer {
    /// Binds `127.0.0.1:<port>` (0 = any free port) and serves `handler` until stopped.
    pub fn start(name: &str, port: u16, handler: Handler) -> std::io::Result<Self> {
        let listener = StdTcpListener::bind(("127.0.0.1", port))?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (tx, rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name(format!("{name}-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build the runtime of a test server");
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)
                        .expect("register the test server's listener with tokio");
                    let server = warp::serve(handler).incoming(listener).run();
                    // Resolves on an explicit stop and also when the owner is dropped.
                    tokio::select! {
                        _ = server => {}
                        _ = rx => {}
                    }
                });
                // Dropping the runtime here cancels the per-connection tasks and closes their sockets.
                drop(rt);
            })?;
        Ok(BackgroundServer {
            addr,
            shutdown: Some(tx),
            thread: Some(thread),
        })
    }

    /// The bound address (always 127.0.0.1).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops serving and waits until the socket is closed.
    pub fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Lets a test park incoming requests ("the server is slow") and let them go again, and wait
/// until a given number is parked — an event to wait on instead of a sleep.
pub struct Gate {
    closed: watch::Sender<bool>,
    parked: AtomicUsize,
}

impl Default for Gate {
    fn default() -> Self {
        Gate {
            closed: watch::Sender::new(false),
            parked: AtomicUsize::new(0),
        }
    }
}

impl Gate {
    /// From now on, requests wait in [`Gate::pass`] until [`Gate::open`].
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Lets every parked request (and all later ones) through.
    pub fn open(&self) {
        self.closed.send_replace(false);
    }

    /// How many requests are waiting right now.
    pub fn parked(&self) -> usize {
        self.parked.load(Ordering::SeqCst)
    }

    /// Waits while the gate is closed; `changed` is bumped so that waiters on the owner's event
    /// counter see the new parked count.
    pub async fn pass(&self, changed: &watch::Sender<u64>) {
        let mut rx = self.closed.subscribe();
        if !*rx.borrow_and_update() {
            return;
        }
        /// Keeps the parked count right even when the client hangs up while parked (the
        /// handler future is then dropped mid-wait).
        struct Parked<'a>(&'a AtomicUsize, &'a watch::Sender<u64>);
        impl Drop for Parked<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
                self.1.send_modify(|v| *v += 1);
            }
        }
        self.parked.fetch_add(1, Ordering::SeqCst);
        changed.send_modify(|v| *v += 1);
        let _guard = Parked(&self.parked, changed);
        let _ = rx.wait_for(|closed| !*closed).await;
    }
}

/// Header list in arrival order, names lower-case, values lossily decoded.
pub fn header_pairs(headers: &warp::http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// Builds a complete response with a body and content type.
pub fn response(
    status: u16,
    content_type: &str,
    body: impl Into<Vec<u8>>,
    extra_headers: &[(&str, String)],
) -> warp::reply::Response {
    let mut b = warp::http::Response::builder()
        .status(status)
        .header("content-type", content_type);
    for (k, v) in extra_headers {
        b = b.header(*k, v.as_str());
    }
    let resp: warp::http::Response<Vec<u8>> = b.body(body.into()).expect("build a response");
    warp::Reply::into_response(resp)
}

/// Waits until `check` returns `Some`, re-checking whenever `events` is bumped; `None` once
/// `timeout` has passed.
pub async fn wait_on_events<T>(
    events: &watch::Sender<u64>,
    timeout: std::time::Duration,
    mut check: impl FnMut() -> Option<T>,
) -> Option<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut rx = events.subscribe();
    loop {
        // Mark the current version as seen *before* checking, so that no event is missed.
        rx.borrow_and_update();
        if let Some(v) = check() {
            return Some(v);
        }
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) | Err(_) => return check(),
        }
    }
}
